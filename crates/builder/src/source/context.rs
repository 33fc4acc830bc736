//! The build context: a directory walked with the `.dockerignore` rules applied,
//! giving a sorted list of entries with the metadata a COPY and the cache need.
//! Names that are not UTF-8 are carried as [`crate::names`] encodes them.

use crate::source::dockerignore::{MatchInfo, PatternError, PatternMatcher};
use crate::source::glob::{go_match, has_wildcards};
use kiln_oci::path::clean;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Errors while loading a context or selecting from it.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("reading build context {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("invalid .dockerignore: {0}")]
    Ignore(#[from] PatternError),
    /// BuildKit's wording for a COPY source that does not exist.
    #[error("failed to compute cache key: \"/{}\": not found", crate::names::display(.0))]
    NotFound(String),
    #[error("invalid source pattern {0:?}: syntax error in pattern")]
    BadSourcePattern(String),
    /// Reading the files to hash them, or the hash cache.
    #[error(transparent)]
    Hash(io::Error),
}

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    /// FIFOs, sockets and device nodes.
    Other,
}

/// One file in the context, with `path` relative to the root, `/`-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Encoded as [`crate::names::encode`] does (the name itself when UTF-8).
    pub path: String,
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    /// A symlink's target, encoded as `path` is.
    pub link_target: Option<String>,
}

impl Entry {
    fn from_metadata(abs: &Path, path: String, md: &fs::Metadata) -> Result<Entry, ContextError> {
        let ft = md.file_type();
        let kind = if ft.is_file() {
            FileKind::File
        } else if ft.is_dir() {
            FileKind::Dir
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else {
            // FIFOs, sockets and device nodes.
            FileKind::Other
        };
        let link_target = if kind == FileKind::Symlink {
            let t = fs::read_link(abs).map_err(|source| ContextError::Io {
                path: abs.to_path_buf(),
                source,
            })?;
            Some(crate::names::encode_os(t.as_os_str()).into_owned())
        } else {
            None
        };
        Ok(Entry {
            path,
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if kind == FileKind::File { md.size() } else { 0 },
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            dev: md.dev(),
            ino: md.ino(),
            nlink: md.nlink(),
            link_target,
        })
    }
}

/// A loaded build context: the root directory and its included entries, sorted by path.
#[derive(Debug, Clone)]
pub struct Context {
    pub root: PathBuf,
    pub entries: Vec<Entry>,
}

impl Context {
    /// Walks `root`, applying `ignore`. Excluded directories are skipped wholesale
    /// unless an exception could re-include something below them; an excluded
    /// directory holding re-included files is listed itself (as BuildKit sends the
    /// parents of every file it sends).
    pub fn load(root: &Path, ignore: &PatternMatcher) -> Result<Context, ContextError> {
        let mut entries = Vec::new();
        walk(root, "", ignore, &MatchInfo::default(), &mut entries)?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Context {
            root: root.to_path_buf(),
            entries,
        })
    }

    /// Loads `root` with the ignore file BuildKit would use for `dockerfile`.
    pub fn load_with_ignore_file(
        root: &Path,
        dockerfile: Option<&Path>,
    ) -> Result<Context, ContextError> {
        let patterns =
            crate::source::dockerignore::load_patterns(root, dockerfile).map_err(|source| {
                ContextError::Io {
                    path: root.to_path_buf(),
                    source,
                }
            })?;
        Context::load(root, &PatternMatcher::new(&patterns)?)
    }

    /// The absolute path of an entry.
    pub fn abs_path(&self, entry: &Entry) -> PathBuf {
        self.root.join(crate::names::path(&entry.path))
    }

    /// `path` (from the context root, `/` or not) with every symlink on the
    /// way resolved inside the context, the last one only when `follow_last`:
    /// BuildKit resolves paths in the context it was sent the same way
    /// (continuity `fs.RootPath`): an absolute link target starts again at
    /// the context root, `..` stops there, and nothing outside the context is
    /// ever looked at (links are read from the listing). Components not in
    /// the context are kept as written. The result is relative to the root
    /// (`""` for the root itself).
    pub fn resolve(&self, path: &str, follow_last: bool) -> std::io::Result<String> {
        let comps = crate::snapshot::merged_view::resolve_with(path, follow_last, |comps| {
            let rel = comps.join("/");
            Ok(self.entry(&rel).and_then(|e| e.link_target.clone()))
        })?;
        Ok(comps.join("/"))
    }

    /// The entry at `rel` (relative to the root, no symlinks followed).
    pub fn entry(&self, rel: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(rel))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Indices of the entries a COPY source selects (`src` relative to the context
    /// root, variables already expanded). Without wildcards the path must exist
    /// (else BuildKit's "not found" error); with wildcards (Go `filepath.Match`, `**`
    /// acting as `*`) every matching entry is selected and an empty match is allowed,
    /// as BuildKit's COPY sets `AllowEmptyWildcard`. A selected directory brings
    /// everything below it.
    pub fn select(&self, src: &str) -> Result<Vec<usize>, ContextError> {
        let cleaned = clean(&format!("/{src}"));
        let pattern = cleaned.trim_start_matches('/');
        if pattern.is_empty() {
            return Ok((0..self.entries.len()).collect());
        }
        let mut out = Vec::new();
        if has_wildcards(pattern) {
            for (i, e) in self.entries.iter().enumerate() {
                let m = go_match(pattern, &e.path)
                    .map_err(|_| ContextError::BadSourcePattern(src.to_string()))?;
                if m {
                    out.push(i);
                    out.extend(self.below(i));
                }
            }
            // A match inside a matched directory is already in.
            out.sort_unstable();
            out.dedup();
        } else {
            let i = self
                .entries
                .binary_search_by(|e| e.path.as_str().cmp(pattern))
                .map_err(|_| ContextError::NotFound(pattern.to_string()))?;
            out.push(i);
            out.extend(self.below(i));
        }
        Ok(out)
    }

    /// The entries below entry `i`. Sorted by path they are contiguous, but not
    /// always right after `i`: `a.b` sorts between `a` and `a/x`.
    fn below(&self, i: usize) -> std::ops::Range<usize> {
        let e = &self.entries[i];
        if e.kind != FileKind::Dir {
            return i + 1..i + 1;
        }
        let prefix = format!("{}/", e.path);
        let start =
            i + 1 + self.entries[i + 1..].partition_point(|x| x.path.as_str() < prefix.as_str());
        let end = start + self.entries[start..].partition_point(|x| x.path.starts_with(&prefix));
        start..end
    }
}

fn walk(
    dir: &Path,
    rel: &str,
    ignore: &PatternMatcher,
    parent_info: &MatchInfo,
    out: &mut Vec<Entry>,
) -> Result<(), ContextError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContextError::Io { path, source }
    };
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|d| d.map(|d| d.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    names.sort();
    for name in names {
        let name_str = crate::names::encode_os(&name);
        let path = if rel.is_empty() {
            name_str.to_string()
        } else {
            format!("{rel}/{name_str}")
        };
        let abs = dir.join(&name);
        let md = fs::symlink_metadata(&abs).map_err(io_err(&abs))?;
        let is_dir = md.is_dir();
        let (excluded, info) = if ignore.is_empty() {
            (false, MatchInfo::default())
        } else {
            ignore.matches_using_parent_results(&path, parent_info)?
        };
        if !excluded {
            out.push(Entry::from_metadata(&abs, path.clone(), &md)?);
            if is_dir {
                walk(&abs, &path, ignore, &info, out)?;
            }
        } else if is_dir && !ignore.can_skip_dir(&path) {
            let mut below = Vec::new();
            walk(&abs, &path, ignore, &info, &mut below)?;
            if !below.is_empty() {
                out.push(Entry::from_metadata(&abs, path, &md)?);
                out.append(&mut below);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_testkit::tree::write;
    use std::os::unix::fs::symlink;

    fn sample() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "Dockerfile", "FROM scratch\n");
        write(r, "package.json", "{}");
        write(r, "package-lock.json", "{}");
        write(r, "src/index.ts", "x");
        write(r, "src/lib/util.ts", "y");
        write(r, "src/debug.log", "log");
        write(r, "logs/deep/a.log", "log");
        write(r, "node_modules/dep/index.js", "z");
        write(r, "node_modules/keep.js", "k");
        write(r, "secret/key", "s");
        symlink("src/index.ts", r.join("link")).unwrap();
        write(
            r,
            ".dockerignore",
            "# comment\nnode_modules\n!node_modules/keep.js\n**/*.log\n/secret/\n",
        );
        dir
    }

    #[test]
    fn resolve_follows_symlinks_inside_the_context() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, "a/file", "x");
        write(r, "secret/key", "s");
        write(r, ".dockerignore", "secret\n");
        symlink("/a", r.join("abs")).unwrap();
        symlink("../../../../a/file", r.join("climb")).unwrap();
        symlink("/etc/passwd", r.join("host")).unwrap();
        symlink("secret/key", r.join("ignored")).unwrap();
        let ctx = Context::load_with_ignore_file(r, None).unwrap();
        assert_eq!(ctx.resolve("abs/file", true).unwrap(), "a/file");
        assert_eq!(ctx.resolve("/climb", true).unwrap(), "a/file");
        assert_eq!(ctx.resolve("abs/../abs", true).unwrap(), "a");
        assert_eq!(ctx.resolve("abs", false).unwrap(), "abs");
        // Targets outside the context are paths inside it, here missing.
        assert_eq!(ctx.resolve("host", true).unwrap(), "etc/passwd");
        assert!(ctx.entry("etc/passwd").is_none());
        // What .dockerignore excludes is not there either.
        assert_eq!(ctx.resolve("ignored", true).unwrap(), "secret/key");
        assert!(ctx.entry("secret/key").is_none());
        assert_eq!(ctx.resolve("/", true).unwrap(), "");
    }

    #[test]
    fn loads_with_ignore_rules() {
        let dir = sample();
        let ctx = Context::load_with_ignore_file(dir.path(), None).unwrap();
        let paths: Vec<&str> = ctx.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                ".dockerignore",
                "Dockerfile",
                "link",
                "logs",
                "logs/deep",
                "node_modules",
                "node_modules/keep.js",
                "package-lock.json",
                "package.json",
                "src",
                "src/index.ts",
                "src/lib",
                "src/lib/util.ts",
            ]
        );
        let link = &ctx.entries[2];
        assert_eq!(link.kind, FileKind::Symlink);
        assert_eq!(link.link_target.as_deref(), Some("src/index.ts"));
        let pj = ctx
            .entries
            .iter()
            .find(|e| e.path == "package.json")
            .unwrap();
        assert_eq!((pj.kind, pj.size), (FileKind::File, 2));
        assert_eq!(ctx.entries[3].kind, FileKind::Dir);
    }

    #[test]
    fn no_ignore_file_lists_everything() {
        let dir = sample();
        fs::remove_file(dir.path().join(".dockerignore")).unwrap();
        let ctx = Context::load_with_ignore_file(dir.path(), None).unwrap();
        assert_eq!(ctx.entries.len(), 18);
    }

    #[test]
    fn select_sources() {
        let dir = sample();
        let ctx = Context::load_with_ignore_file(dir.path(), None).unwrap();
        let names = |sel: Vec<usize>| -> Vec<String> {
            sel.into_iter()
                .map(|i| ctx.entries[i].path.clone())
                .collect()
        };
        assert_eq!(
            names(ctx.select("package*.json").unwrap()),
            ["package-lock.json", "package.json"]
        );
        assert_eq!(
            names(ctx.select("./src/").unwrap()),
            ["src", "src/index.ts", "src/lib", "src/lib/util.ts"]
        );
        assert_eq!(names(ctx.select("src/*.ts").unwrap()), ["src/index.ts"]);
        assert_eq!(
            names(ctx.select("src/**/*.ts").unwrap()),
            ["src/lib/util.ts"]
        );
        assert!(ctx.select("nomatch*").unwrap().is_empty());
        assert_eq!(ctx.select(".").unwrap().len(), ctx.entries.len());
        let err = ctx.select("missing.txt").unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to compute cache key: \"/missing.txt\": not found"
        );
        // Ignored files cannot be copied.
        assert!(matches!(
            ctx.select("secret/key"),
            Err(ContextError::NotFound(_))
        ));
        assert!(matches!(
            ctx.select("a["),
            Err(ContextError::BadSourcePattern(_))
        ));
    }

    #[test]
    fn select_does_not_take_siblings_that_sort_inside_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a/x", "1");
        write(dir.path(), "a.b", "2");
        write(dir.path(), "a-c/y", "3");
        let ctx = Context::load(dir.path(), &PatternMatcher::default()).unwrap();
        let names = |sel: Vec<usize>| -> Vec<String> {
            sel.into_iter()
                .map(|i| ctx.entries[i].path.clone())
                .collect()
        };
        assert_eq!(names(ctx.select("a").unwrap()), ["a", "a/x"]);
        assert_eq!(names(ctx.select("?").unwrap()), ["a", "a/x"]);
        assert_eq!(
            names(ctx.select("a*").unwrap()),
            ["a", "a-c", "a-c/y", "a.b", "a/x"]
        );
    }

    /// A name that is not UTF-8 is listed with its bytes carried (globs see
    /// each odd byte as one character); one that `.dockerignore` excludes,
    /// file or directory, is skipped like any other.
    #[test]
    fn names_that_are_not_utf8() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let raw = |b: &[u8]| r.join(OsStr::from_bytes(b));
        fs::write(raw(b"caf\xe9.txt"), "latin-1").unwrap();
        fs::create_dir(raw(b"d\xfe")).unwrap();
        fs::write(raw(b"d\xfe/x"), "x").unwrap();
        fs::write(raw(b"skip\xff"), "excluded").unwrap();
        fs::create_dir(raw(b"junk\xff")).unwrap();
        fs::write(raw(b"junk\xff/\xfa"), "excluded").unwrap();
        symlink(OsStr::from_bytes(b"caf\xe9.txt"), r.join("link")).unwrap();
        write(r, ".dockerignore", "skip*\njunk*\n");

        let ctx = Context::load_with_ignore_file(r, None).unwrap();
        let bytes: Vec<Vec<u8>> = ctx
            .entries
            .iter()
            .map(|e| crate::names::decode(&e.path).into_owned())
            .collect();
        let want: [&[u8]; 5] = [
            b".dockerignore",
            b"caf\xe9.txt",
            b"d\xfe",
            b"d\xfe/x",
            b"link",
        ];
        assert_eq!(bytes, want);
        let cafe = &ctx.entries[1];
        assert_eq!(fs::read_to_string(ctx.abs_path(cafe)).unwrap(), "latin-1");
        assert_eq!(
            crate::names::decode(ctx.entries[4].link_target.as_deref().unwrap()).as_ref(),
            b"caf\xe9.txt"
        );
        let names = |sel: Vec<usize>| -> Vec<&str> {
            sel.into_iter()
                .map(|i| ctx.entries[i].path.as_str())
                .collect()
        };
        assert_eq!(names(ctx.select("caf?.txt").unwrap()), [cafe.path.as_str()]);
        assert_eq!(names(ctx.select("d*").unwrap()).len(), 2);
    }

    #[test]
    fn bad_ignore_pattern_is_an_error() {
        let dir = sample();
        write(dir.path(), ".dockerignore", "[\n");
        let err = Context::load_with_ignore_file(dir.path(), None).unwrap_err();
        assert!(err.to_string().contains("invalid .dockerignore"), "{err}");
    }
}
