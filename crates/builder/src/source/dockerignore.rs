//! `.dockerignore`: reading the file and matching paths, with Docker's own rules
//! (moby/patternmatcher and its `ignorefile` reader, as BuildKit uses them).
//!
//! - Reading: a UTF-8 BOM is dropped; lines starting with `#` are comments; lines are
//!   trimmed; blank lines skipped; `!` marks an exception; each pattern is cleaned
//!   with Go `filepath.Clean` and a leading `/` removed.
//! - Matching: each pattern becomes an exact, prefix (`dir/**`), suffix (`**/x`) or
//!   regular-expression matcher exactly as patternmatcher compiles it; a path is
//!   excluded when the last pattern that matches it (itself or one of its parent
//!   directories) is not an exception.

use crate::source::glob::{go_match, BadPattern};
use kiln_oci::path::clean;
use regex::Regex;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// An error in a `.dockerignore` pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("illegal exclusion pattern: \"!\"")]
    LoneExclamation,
    #[error("syntax error in pattern {0:?}")]
    Bad(String),
}

/// Reads ignore-file text into patterns (moby `ignorefile.ReadAll`).
pub fn read_patterns(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let mut out = Vec::new();
    // Go's bufio.Scanner splits on \n and drops a trailing \r.
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        out.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    out
}

/// Finds the ignore file BuildKit would use: `<Dockerfile name>.dockerignore` next to
/// the Dockerfile if it exists, else `.dockerignore` at the context root.
pub fn ignore_file_for(context_dir: &Path, dockerfile: Option<&Path>) -> Option<PathBuf> {
    if let Some(df) = dockerfile {
        if let Some(name) = df.file_name() {
            let mut specific = name.to_os_string();
            specific.push(".dockerignore");
            let candidate = df.with_file_name(specific);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let root = context_dir.join(".dockerignore");
    root.is_file().then_some(root)
}

/// Reads the applicable ignore file (see [`ignore_file_for`]); no file → no patterns.
pub fn load_patterns(
    context_dir: &Path,
    dockerfile: Option<&Path>,
) -> std::io::Result<Vec<String>> {
    match ignore_file_for(context_dir, dockerfile) {
        Some(p) => Ok(read_patterns(&String::from_utf8_lossy(&std::fs::read(p)?))),
        None => Ok(Vec::new()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchKind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

/// One compiled pattern.
#[derive(Debug)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    kind: MatchKind,
    regex_src: String,
    /// Compiled lazily, like patternmatcher; `Err` when the regex is invalid.
    regex: OnceLock<Result<Regex, ()>>,
}

impl Pattern {
    fn new(cleaned: String, exclusion: bool) -> Self {
        let (kind, regex_src) = compile(&cleaned);
        Pattern {
            cleaned,
            exclusion,
            kind,
            regex_src,
            regex: OnceLock::new(),
        }
    }

    /// The cleaned pattern text, without `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is a `!` exception.
    pub fn is_exclusion(&self) -> bool {
        self.exclusion
    }

    fn matches(&self, path: &str) -> Result<bool, PatternError> {
        Ok(match self.kind {
            MatchKind::Exact => path == self.cleaned,
            MatchKind::Prefix => path.starts_with(&self.cleaned[..self.cleaned.len() - 2]),
            MatchKind::Suffix => {
                let suffix = &self.cleaned[2..];
                path.ends_with(suffix) || (suffix.starts_with('/') && path == &suffix[1..])
            }
            MatchKind::Regex => {
                let re = self
                    .regex
                    .get_or_init(|| Regex::new(&self.regex_src).map_err(|_| ()));
                match re {
                    Ok(re) => re.is_match(path),
                    Err(()) => return Err(PatternError::Bad(self.cleaned.clone())),
                }
            }
        })
    }
}

/// patternmatcher's `compile`: classify the pattern and build its regex.
fn compile(pattern: &str) -> (MatchKind, String) {
    let mut re = String::from("^");
    let mut kind = MatchKind::Exact;
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let mut in_class = false;
    let mut index = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if ch == '*' {
            if chars.get(i) == Some(&'*') {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if kind == MatchKind::Exact {
                        kind = MatchKind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = MatchKind::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = MatchKind::Regex;
                }
                if index == 0 {
                    kind = MatchKind::Suffix;
                }
            } else {
                re.push_str("[^/]*");
                kind = MatchKind::Regex;
            }
        } else if ch == '?' {
            re.push_str("[^/]");
            kind = MatchKind::Regex;
        } else if ".+()|{}$".contains(ch) {
            re.push('\\');
            re.push(ch);
        } else if ch == '\\' {
            if i < chars.len() {
                re.push('\\');
                re.push(chars[i]);
                i += 1;
                kind = MatchKind::Regex;
            } else {
                re.push('\\');
            }
        } else if ch == '[' || ch == ']' {
            // Go's RE2 reads `[` inside a class literally; Rust's regex would nest.
            if ch == '[' && in_class {
                re.push_str("\\[");
            } else {
                re.push(ch);
                in_class = ch == '[';
            }
            kind = MatchKind::Regex;
        } else if in_class && (ch == '&' || ch == '~') {
            // Literal in RE2 classes; set operators in Rust's regex when doubled.
            re.push('\\');
            re.push(ch);
        } else {
            re.push(ch);
        }
        index += 1;
    }
    if kind == MatchKind::Regex {
        re.push('$');
    }
    (kind, re)
}

/// Per-pattern results for a directory, handed to its children
/// (patternmatcher's `MatchInfo`). The default value means "no information".
#[derive(Debug, Clone, Default)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// A list of `.dockerignore` patterns, applied in order (last match wins).
#[derive(Debug, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Compiles patterns (patternmatcher `New`): trims, cleans, checks syntax with Go
    /// `filepath.Match`, and rejects a lone `!`.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut pm = PatternMatcher::default();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean(p);
            let mut exclusion = false;
            if p.starts_with('!') {
                if p.len() == 1 {
                    return Err(PatternError::LoneExclamation);
                }
                exclusion = true;
                p.remove(0);
                pm.exclusions = true;
            }
            if let Err(BadPattern) = go_match(&p, ".") {
                return Err(PatternError::Bad(p));
            }
            pm.patterns.push(Pattern::new(p, exclusion));
        }
        Ok(pm)
    }

    /// Whether any pattern is a `!` exception.
    pub fn has_exclusions(&self) -> bool {
        self.exclusions
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `file` (slash-separated, relative) is excluded, checking the pattern
    /// against the file and each of its parent directories.
    pub fn matches_or_parent_matches(&self, file: &str) -> Result<bool, PatternError> {
        let parents = parent_prefixes(file);
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut m = pattern.matches(file)?;
            if !m {
                for parent in &parents {
                    if pattern.matches(parent).unwrap_or(false) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Like [`Self::matches_or_parent_matches`], but reuses the parent directory's
    /// per-pattern results, as a tree walk does. Pass `MatchInfo::default()` when
    /// there is no parent information.
    pub fn matches_using_parent_results(
        &self,
        file: &str,
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo), PatternError> {
        let pm = &parent.parent_matched;
        if !pm.is_empty() && pm.len() != self.patterns.len() {
            return Err(PatternError::Bad(
                "wrong number of values in parentMatched".into(),
            ));
        }
        let mut matched = false;
        let mut info = MatchInfo {
            parent_matched: vec![false; self.patterns.len()],
        };
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut m = !pm.is_empty() && pm[i];
            if !m {
                if pattern.exclusion != matched {
                    continue;
                }
                m = pattern.matches(file)?;
                if !m && pm.is_empty() {
                    for parent in parent_prefixes(file) {
                        if pattern.matches(&parent).unwrap_or(false) {
                            m = true;
                            break;
                        }
                    }
                }
            }
            info.parent_matched[i] = m;
            if m {
                matched = !pattern.exclusion;
            }
        }
        Ok((matched, info))
    }

    /// Whether an excluded directory can be skipped without looking inside: true when
    /// no exception could re-include anything below it (fsutil's walker rule: only if
    /// all exceptions are wildcard-free, and none of them lies below `dir`).
    pub fn can_skip_dir(&self, dir: &str) -> bool {
        if !self.exclusions {
            return true;
        }
        let wildcard_exceptions = self
            .patterns
            .iter()
            .any(|p| p.exclusion && p.cleaned.contains(['*', '[', ']', '?', '^', '\\']));
        if wildcard_exceptions {
            return false;
        }
        let dir_slash = format!("{dir}/");
        !self
            .patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.cleaned).starts_with(&dir_slash))
    }
}

/// `a/b/c` → `["a", "a/b"]` (Go: the prefixes of `filepath.Dir(file)` unless it is ".").
fn parent_prefixes(file: &str) -> Vec<String> {
    let dir = match file.rfind('/') {
        Some(i) => clean(&file[..i.max(1)]),
        None => return Vec::new(),
    };
    if dir == "." {
        return Vec::new();
    }
    let parts: Vec<&str> = dir.split('/').collect();
    (0..parts.len()).map(|i| parts[..=i].join("/")).collect()
}

/// patternmatcher's package-level `MatchesOrParentMatches`: cleans the file, and
/// never excludes the context root itself (its tests are ported here).
#[cfg(test)]
fn matches_or_parent_matches(file: &str, patterns: &[&str]) -> Result<bool, PatternError> {
    let pm = PatternMatcher::new(patterns)?;
    let file = clean(file);
    if file == "." {
        return Ok(false);
    }
    pm.matches_or_parent_matches(&file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// patternmatcher's TestMatches single-pattern table.
    const MATCHES: &[(&str, &str, bool)] = &[
        ("**", "file", true),
        ("**", "file/", true),
        ("**/", "file", true),
        ("**/", "file/", true),
        ("**", "/", true),
        ("**/", "/", true),
        ("**", "dir/file", true),
        ("**/", "dir/file", true),
        ("**", "dir/file/", true),
        ("**/", "dir/file/", true),
        ("**/**", "dir/file", true),
        ("**/**", "dir/file/", true),
        ("dir/**", "dir/file", true),
        ("dir/**", "dir/file/", true),
        ("dir/**", "dir/dir2/file", true),
        ("dir/**", "dir/dir2/file/", true),
        ("**/dir", "dir", true),
        ("**/dir", "dir/file", true),
        ("**/dir2/*", "dir/dir2/file", true),
        ("**/dir2/*", "dir/dir2/file/", true),
        ("**/dir2/**", "dir/dir2/dir3/file", true),
        ("**/dir2/**", "dir/dir2/dir3/file/", true),
        ("**file", "file", true),
        ("**file", "dir/file", true),
        ("**/file", "dir/file", true),
        ("**file", "dir/dir/file", true),
        ("**/file", "dir/dir/file", true),
        ("**/file*", "dir/dir/file", true),
        ("**/file*", "dir/dir/file.txt", true),
        ("**/file*txt", "dir/dir/file.txt", true),
        ("**/file*.txt", "dir/dir/file.txt", true),
        ("**/file*.txt*", "dir/dir/file.txt", true),
        ("**/**/*.txt", "dir/dir/file.txt", true),
        ("**/**/*.txt2", "dir/dir/file.txt", false),
        ("**/*.txt", "file.txt", true),
        ("**/**/*.txt", "file.txt", true),
        ("a**/*.txt", "a/file.txt", true),
        ("a**/*.txt", "a/dir/file.txt", true),
        ("a**/*.txt", "a/dir/dir/file.txt", true),
        ("a/*.txt", "a/dir/file.txt", false),
        ("a/*.txt", "a/file.txt", true),
        ("a/*.txt**", "a/file.txt", true),
        ("a[b-d]e", "ae", false),
        ("a[b-d]e", "ace", true),
        ("a[b-d]e", "aae", false),
        ("a[^b-d]e", "aze", true),
        (".*", ".foo", true),
        (".*", "foo", false),
        ("abc.def", "abcdef", false),
        ("abc.def", "abc.def", true),
        ("abc.def", "abcZdef", false),
        ("abc?def", "abcZdef", true),
        ("abc?def", "abcdef", false),
        ("a\\\\", "a\\", true),
        ("**/foo/bar", "foo/bar", true),
        ("**/foo/bar", "dir/foo/bar", true),
        ("**/foo/bar", "dir/dir2/foo/bar", true),
        ("abc/**", "abc", false),
        ("abc/**", "abc/def", true),
        ("abc/**", "abc/def/ghi", true),
        ("**/.foo", ".foo", true),
        ("**/.foo", "bar.foo", false),
        ("a(b)c/def", "a(b)c/def", true),
        ("a(b)c/def", "a(b)c/xyz", false),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        (
            "dist/*.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            true,
        ),
        ("a\\*b", "a*b", true),
    ];

    const MULTI: &[(&[&str], &str, bool)] = &[
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
        ),
        (
            &[
                "**",
                "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            ],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
        (
            &["**", "!dist/*.whl"],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
    ];

    fn all_cases() -> Vec<(Vec<&'static str>, &'static str, bool)> {
        MATCHES
            .iter()
            .map(|&(p, t, w)| (vec![p], t, w))
            .chain(MULTI.iter().map(|&(p, t, w)| (p.to_vec(), t, w)))
            .collect()
    }

    #[test]
    fn table_matches_or_parent_matches() {
        for (pats, text, want) in all_cases() {
            let pm = PatternMatcher::new(&pats).unwrap();
            assert_eq!(
                pm.matches_or_parent_matches(text).unwrap(),
                want,
                "{pats:?} {text:?}"
            );
        }
    }

    #[test]
    fn table_matches_using_parent_results_walked() {
        for (pats, text, want) in all_cases() {
            let pm = PatternMatcher::new(&pats).unwrap();
            let mut info = MatchInfo::default();
            for parent in parent_prefixes(text) {
                info = pm.matches_using_parent_results(&parent, &info).unwrap().1;
            }
            let got = pm.matches_using_parent_results(text, &info).unwrap().0;
            assert_eq!(got, want, "{pats:?} {text:?}");
        }
    }

    #[test]
    fn table_matches_using_parent_results_no_context() {
        for (pats, text, want) in all_cases() {
            let pm = PatternMatcher::new(&pats).unwrap();
            let got = pm
                .matches_using_parent_results(text, &MatchInfo::default())
                .unwrap()
                .0;
            assert_eq!(got, want, "{pats:?} {text:?}");
        }
    }

    /// patternmatcher's TestCompile table (slash flavour).
    #[test]
    fn compile_table() {
        use MatchKind::*;
        let cases: &[(&str, MatchKind, &str)] = &[
            ("*", Regex, "^[^/]*$"),
            ("file*", Regex, "^file[^/]*$"),
            ("*file", Regex, "^[^/]*file$"),
            ("a*/b", Regex, "^a[^/]*/b$"),
            ("**", Suffix, ""),
            ("**/**", Regex, "^(.*/)?.*$"),
            ("dir/**", Prefix, ""),
            ("**/dir", Suffix, ""),
            ("**/dir2/*", Regex, "^(.*/)?dir2/[^/]*$"),
            ("**/dir2/**", Regex, "^(.*/)?dir2/.*$"),
            ("**file", Suffix, ""),
            ("**/file*txt", Regex, "^(.*/)?file[^/]*txt$"),
            ("**/**/*.txt", Regex, "^(.*/)?(.*/)?[^/]*\\.txt$"),
            ("a[b-d]e", Regex, "^a[b-d]e$"),
            (".*", Regex, "^\\.[^/]*$"),
            ("abc.def", Exact, ""),
            ("abc?def", Regex, "^abc[^/]def$"),
            ("**/foo/bar", Suffix, ""),
            ("a(b)c/def", Exact, ""),
            ("a.|)$(}+{bc", Exact, ""),
            (
                "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
                Exact,
                "",
            ),
        ];
        for &(pat, kind, re) in cases {
            let (k, r) = compile(&clean(pat));
            assert_eq!(k, kind, "{pat}");
            if kind == Regex {
                assert_eq!(r, re, "{pat}");
            }
        }
    }

    /// patternmatcher's TestMatch: Go's filepath.Match table through the matcher.
    #[test]
    fn go_match_table_through_matcher() {
        let cases: &[(&str, &str, bool, bool)] = &[
            ("abc", "abc", true, false),
            ("*", "abc", true, false),
            ("*c", "abc", true, false),
            ("a*", "a", true, false),
            ("a*", "abc", true, false),
            ("a*", "ab/c", true, false),
            ("a*/b", "abc/b", true, false),
            ("a*/b", "a/c/b", false, false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true, false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true, false),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false, false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false, false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true, false),
            ("a*b?c*x", "abxbbxdbxebxczzy", false, false),
            ("ab[c]", "abc", true, false),
            ("ab[b-d]", "abc", true, false),
            ("ab[e-g]", "abc", false, false),
            ("ab[^c]", "abc", false, false),
            ("ab[^b-d]", "abc", false, false),
            ("ab[^e-g]", "abc", true, false),
            ("a\\*b", "a*b", true, false),
            ("a\\*b", "ab", false, false),
            ("a?b", "a☺b", true, false),
            ("a[^a]b", "a☺b", true, false),
            ("a???b", "a☺b", false, false),
            ("a[^a][^a][^a]b", "a☺b", false, false),
            ("[a-ζ]*", "α", true, false),
            ("*[a-ζ]", "A", false, false),
            ("a?b", "a/b", false, false),
            ("a*b", "a/b", false, false),
            ("[\\]a]", "]", true, false),
            ("[\\-]", "-", true, false),
            ("[x\\-]", "x", true, false),
            ("[x\\-]", "-", true, false),
            ("[x\\-]", "z", false, false),
            ("[\\-x]", "x", true, false),
            ("[\\-x]", "-", true, false),
            ("[\\-x]", "a", false, false),
            ("[]a]", "]", false, true),
            ("[-]", "-", false, true),
            ("[x-]", "x", false, true),
            ("[x-]", "-", false, true),
            ("[x-]", "z", false, true),
            ("[-x]", "x", false, true),
            ("[-x]", "-", false, true),
            ("[-x]", "a", false, true),
            ("\\", "a", false, true),
            ("[a-b-c]", "a", false, true),
            ("[", "a", false, true),
            ("[^", "a", false, true),
            ("[^bc", "a", false, true),
            ("a[", "a", false, true),
            ("a[", "ab", false, true),
            ("*x", "xxx", true, false),
        ];
        for &(pat, name, want, want_err) in cases {
            let got = matches_or_parent_matches(name, &[pat]);
            if want_err {
                assert!(got.is_err(), "{pat:?} {name:?}");
            } else {
                assert_eq!(got, Ok(want), "{pat:?} {name:?}");
            }
        }
    }

    #[test]
    fn basic_rules() {
        assert!(matches_or_parent_matches("fileutils.go", &["*"]).unwrap());
        assert!(matches_or_parent_matches("fileutils.go", &["*.go"]).unwrap());
        assert!(matches_or_parent_matches("fileutils.go", &["!fileutils.go", "*.go"]).unwrap());
        assert!(!matches_or_parent_matches("fileutils.go", &["*.go", "!fileutils.go"]).unwrap());
        for pats in [
            ["docs", "!docs/README.md"],
            ["docs/", "!docs/README.md"],
            ["docs/*", "!docs/README.md"],
        ] {
            assert!(!matches_or_parent_matches("docs/README.md", &pats).unwrap());
            assert!(matches_or_parent_matches("docs/other.md", &pats).unwrap());
        }
        assert!(!matches_or_parent_matches(".", &["*.go"]).unwrap());
        assert!(!matches_or_parent_matches("/any/path/there", &[]).unwrap());
        assert_eq!(
            matches_or_parent_matches("x", &["!"]),
            Err(PatternError::LoneExclamation)
        );
        assert!(matches_or_parent_matches("/any/path/there", &["["]).is_err());
    }

    #[test]
    fn malformed_regex_errors_repeatedly_without_panic() {
        let pm = PatternMatcher::new(&["[Local-Only]/"]).unwrap();
        assert!(pm.matches_or_parent_matches("x").is_err());
        assert!(pm.matches_or_parent_matches("x").is_err());
    }

    #[test]
    fn exceptions_and_double_star() {
        let pm =
            PatternMatcher::new(&["node_modules", "!node_modules/keep.js", "**/*.log"]).unwrap();
        let m = |p: &str| pm.matches_or_parent_matches(p).unwrap();
        assert!(m("node_modules"));
        assert!(m("node_modules/x/y.js"));
        assert!(!m("node_modules/keep.js"));
        assert!(m("a.log"));
        assert!(m("deep/er/b.log"));
        assert!(!m("src/main.ts"));
        assert!(!pm.can_skip_dir("node_modules"));
        assert!(pm.can_skip_dir("other"));
        let wild = PatternMatcher::new(&["vendor", "!vendor/**/*.go"]).unwrap();
        assert!(!wild.can_skip_dir("vendor"));
        let none = PatternMatcher::new(&["vendor"]).unwrap();
        assert!(none.can_skip_dir("vendor"));
    }

    #[test]
    fn read_file_rules() {
        assert!(read_patterns("").is_empty());
        let content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
        assert_eq!(
            read_patterns(content),
            [
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "!",
                "!"
            ]
        );
        assert_eq!(
            read_patterns("\u{FEFF}./a/\r\n  b/../c//  \n  # not a comment after spaces\n/\n"),
            ["a", "c", "# not a comment after spaces", "/"]
        );
        assert_eq!(read_patterns("dir/\n!dir/keep/\n"), ["dir", "!dir/keep"]);
    }

    #[test]
    fn dockerfile_specific_ignore_wins() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join(".dockerignore"), "a\n").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        let df = root.join("sub/build.Dockerfile");
        std::fs::write(&df, "FROM scratch\n").unwrap();
        assert_eq!(load_patterns(root, Some(&df)).unwrap(), ["a"]);
        std::fs::write(root.join("sub/build.Dockerfile.dockerignore"), "b\n!c\n").unwrap();
        assert_eq!(
            ignore_file_for(root, Some(&df)).unwrap(),
            root.join("sub/build.Dockerfile.dockerignore")
        );
        assert_eq!(load_patterns(root, Some(&df)).unwrap(), ["b", "!c"]);
        assert_eq!(load_patterns(root, None).unwrap(), ["a"]);
        std::fs::remove_file(root.join(".dockerignore")).unwrap();
        assert!(load_patterns(root, None).unwrap().is_empty());
    }
}
