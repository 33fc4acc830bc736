//! The differential corpus in `tests/buildkit-corpus/`: one directory per case
//! (`NN-name/`, a Dockerfile, its context, an optional `args` file and `http/`
//! directory, BuildKit's `expected.json` and `history.json`; its README says more).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The registry the corpus Dockerfiles name their base image on
/// (`FROM 127.0.0.1:5000/kiln-corpus/busybox:1`).
pub const REGISTRY: &str = "127.0.0.1:5000";
/// The base image's repository, on [`REGISTRY`] in the Dockerfiles and on the test
/// registry in fact (`tests/buildkit-corpus/make-base` pushes it there).
pub const BASE_REPOSITORY: &str = "kiln-corpus/busybox";

/// `tests/buildkit-corpus/`.
pub fn dir() -> PathBuf {
    crate::repo_root().join("tests/buildkit-corpus")
}

/// One case of the corpus.
#[derive(Clone, Debug)]
pub struct Case {
    /// The directory's name (`06-chmod`).
    pub name: String,
    /// The test's name in the `corpus` module: the directory's name without its
    /// number (`chmod`, so `cargo test corpus::chmod` selects it), or with the number
    /// after it (`chmod-06`) where two cases would get the same name.
    pub test_name: String,
    pub dir: PathBuf,
}

/// Every case in `corpus` (directories whose names start with a digit), in order.
pub fn cases_in(corpus: &Path) -> std::io::Result<Vec<Case>> {
    let mut dirs: Vec<(String, PathBuf)> = fs::read_dir(corpus)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .filter(|(name, _)| name.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    dirs.sort();
    let mut uses: BTreeMap<String, usize> = BTreeMap::new();
    for (name, _) in &dirs {
        *uses.entry(without_number(name).to_string()).or_default() += 1;
    }
    Ok(dirs
        .into_iter()
        .map(|(name, dir)| {
            let short = without_number(&name);
            let test_name = if short.is_empty() {
                name.clone()
            } else if uses[short] > 1 {
                let number = &name[..name.len() - short.len()];
                format!("{short}-{}", number.trim_end_matches('-'))
            } else {
                short.to_string()
            };
            Case {
                name,
                test_name,
                dir,
            }
        })
        .collect())
}

/// `chmod` for `06-chmod`.
fn without_number(name: &str) -> &str {
    name.trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start_matches('-')
}

/// The `kiln build` options a case's `args` file asks for, one option a line:
/// `build-arg NAME=VALUE`, `target STAGE`, `build-context NAME=docker-image://REF`
/// or `build-context NAME=DIR`, `secret id=NAME,src=FILE`, `file DOCKERFILE`, `allow ENTITLEMENT`,
/// `label K=V` (`expect-error` is read by [`expected_error`]) (DIR,
/// FILE and DOCKERFILE relative to the case); blank lines and `#` comments are
/// skipped. `-f` comes first, with the case's `Dockerfile` unless a `file` line
/// names another. (`scripts/compare-buildkit` reads the same file in shell.)
pub fn build_options(dir: &Path) -> Result<Vec<String>, String> {
    let file = dir.join("args");
    let text = match fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("reading {}: {e}", file.display())),
    };
    let dockerfile = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("file "))
        .map(str::trim)
        .unwrap_or("Dockerfile");
    let mut out = vec!["-f".to_string(), dir.join(dockerfile).display().to_string()];
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(' ') {
            Some(("build-arg", v)) => out.extend(["--build-arg".to_string(), v.trim().into()]),
            Some(("file" | "expect-error", _)) => {}
            Some(("allow", v)) => out.extend(["--allow".to_string(), v.trim().into()]),
            Some(("label", v)) => out.extend(["--label".to_string(), v.trim().into()]),
            Some(("target", v)) => out.extend(["--target".to_string(), v.trim().into()]),
            Some(("secret", v)) => {
                let v = v.trim();
                let value = match v.split_once(",src=") {
                    Some((id, src)) => format!("{id},src={}", dir.join(src).display()),
                    None => v.to_string(),
                };
                out.extend(["--secret".to_string(), value]);
            }
            Some(("build-context", v)) => {
                let v = v.trim();
                let value = match v.split_once('=') {
                    Some((name, src)) if !src.contains("://") => {
                        format!("{name}={}", dir.join(src).display())
                    }
                    _ => v.to_string(),
                };
                out.extend(["--build-context".to_string(), value]);
            }
            _ => return Err(format!("{}: unknown option line {line:?}", file.display())),
        }
    }
    Ok(out)
}

/// The error text a case expects (`expect-error TEXT` in its `args`): BuildKit
/// fails the case with that message (kept whole in the case's `error.txt`).
pub fn expected_error(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join("args")).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("expect-error "))
        .map(|t| t.trim().to_string())
}

/// Error output made comparable: miette's frame characters removed, runs of
/// white space (line wrapping included) as one space.
pub fn normalize_error(text: &str) -> String {
    text.replace(['│', '×'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// kiln's config file (`KILN_CONFIG`) for building the corpus against the test
/// registry at `registry`: where that is not [`REGISTRY`], pulls of
/// `127.0.0.1:5000/…` go to it as a mirror, so the cases' Dockerfiles stay as
/// BuildKit built them.
pub fn kiln_config(registry: &str) -> String {
    if registry == REGISTRY {
        return "{}\n".to_string();
    }
    format!("{{\"registry\": {{\"{REGISTRY}\": {{\"mirrors\": [\"{registry}\"]}}}}}}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_drop_the_number_unless_two_cases_share_a_name() {
        let corpus = tempfile::tempdir().unwrap();
        for d in [
            "06-chmod",
            "10-workdir",
            "95-workdir",
            "07",
            "make-base-dir",
        ] {
            fs::create_dir(corpus.path().join(d)).unwrap();
        }
        fs::write(corpus.path().join("01-a-file-not-a-case"), "").unwrap();
        let names: Vec<(String, String)> = cases_in(corpus.path())
            .unwrap()
            .into_iter()
            .map(|c| (c.name, c.test_name))
            .collect();
        let pairs: Vec<(&str, &str)> = names.iter().map(|(a, b)| (&**a, &**b)).collect();
        assert_eq!(
            pairs,
            [
                ("06-chmod", "chmod"),
                ("07", "07"),
                ("10-workdir", "workdir-10"),
                ("95-workdir", "workdir-95"),
            ]
        );
    }

    #[test]
    fn args_become_kiln_options_with_paths_from_the_case() {
        let case = tempfile::tempdir().unwrap();
        let d = case.path();
        assert_eq!(
            build_options(d).unwrap(),
            ["-f", &d.join("Dockerfile").display().to_string()]
        );
        fs::write(
            d.join("args"),
            "# options\nfile sub/Dockerfile.alt\n\nbuild-arg A=1 2\ntarget final\n\
             secret id=tok,src=secret.txt\nbuild-context base=docker-image://127.0.0.1:5000/x:1\n\
             build-context extra=more\n",
        )
        .unwrap();
        let p = |rel: &str| d.join(rel).display().to_string();
        assert_eq!(
            build_options(d).unwrap(),
            [
                "-f".to_string(),
                p("sub/Dockerfile.alt"),
                "--build-arg".into(),
                "A=1 2".into(),
                "--target".into(),
                "final".into(),
                "--secret".into(),
                format!("id=tok,src={}", p("secret.txt")),
                "--build-context".into(),
                "base=docker-image://127.0.0.1:5000/x:1".into(),
                "--build-context".into(),
                format!("extra={}", p("more")),
            ]
        );
        fs::write(d.join("args"), "platform linux/arm64\n").unwrap();
        let err = build_options(d).unwrap_err();
        assert!(
            err.contains("unknown option line \"platform linux/arm64\""),
            "{err}"
        );
    }

    #[test]
    fn the_corpus_registry_is_mirrored_only_when_the_test_registry_is_elsewhere() {
        assert_eq!(kiln_config("127.0.0.1:5000"), "{}\n");
        assert_eq!(
            kiln_config("127.0.0.1:41234"),
            "{\"registry\": {\"127.0.0.1:5000\": {\"mirrors\": [\"127.0.0.1:41234\"]}}}\n"
        );
    }

    #[test]
    fn expected_errors_match_across_line_wrapping_and_frames() {
        let kiln_output = "  × Dockerfile:2: invalid chmod parameter: '64a'. it should be octal string\n  │ and between 0 and 07777\n";
        let want =
            "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777";
        assert!(normalize_error(kiln_output).contains(&normalize_error(want)));
        assert!(!normalize_error(kiln_output)
            .contains(&normalize_error("invalid chmod parameter: '10000'")));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(expected_error(dir.path()), None);
        fs::write(
            dir.path().join("args"),
            "target t\nexpect-error dockerfile contains no stages to build\nallow security.insecure\nlabel a=b\n",
        )
        .unwrap();
        assert_eq!(
            expected_error(dir.path()).as_deref(),
            Some("dockerfile contains no stages to build")
        );
        let opts = build_options(dir.path()).unwrap();
        assert!(
            opts.windows(2)
                .any(|w| w == ["--allow", "security.insecure"]),
            "{opts:?}"
        );
        assert!(opts.windows(2).any(|w| w == ["--label", "a=b"]), "{opts:?}");
        assert!(!opts.iter().any(|o| o.contains("no stages")), "{opts:?}");
    }
}
