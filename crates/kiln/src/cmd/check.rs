//! `kiln check` and `kiln build --check`: run the build checks
//! (`kiln_dockerfile::lint`) over a Dockerfile and print the findings as
//! BuildKit does (text) or as a JSON array. Base images are looked up in the
//! store only (never pulled); the context is read for `.dockerignore` and its
//! top-level entries. Exit code: 0 unless a finding is an error, `error=true`
//! is configured and a rule fired, or the Dockerfile does not parse or plan.

use crate::flags::{BuildFlags, CheckFlags, CheckFormat, GlobalFlags};
use kiln_builder::PatternMatcher;
use kiln_dockerfile::lint::{self, Finding, Host, ImageFacts, Level, Report};
use kiln_dockerfile::stages::{self, PlanOptions, Platform};
use kiln_dockerfile::Source;
use kiln_oci::image::load_image;
use kiln_oci::registry::Reference;
use kiln_oci::Store;
use miette::miette;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: &CheckFlags) -> miette::Result<ExitCode> {
    check(
        global,
        &Request {
            file: flags.file.clone(),
            context: flags.context.clone(),
            build_args: &flags.build_args,
            target: flags.target.clone(),
            platform: flags.platform.as_deref(),
            format: flags.format,
        },
    )
}

/// `kiln build --check`: the same check, text output.
pub fn for_build(global: &GlobalFlags, flags: &BuildFlags) -> miette::Result<ExitCode> {
    if flags.file.as_ref().is_some_and(|f| f.as_os_str() == "-") || !flags.context.is_dir() {
        return Err(miette!(
            "--check needs the Dockerfile as a file and the build context as a directory"
        ));
    }
    check(
        global,
        &Request {
            file: flags.file.clone(),
            context: flags.context.clone(),
            build_args: &flags.build_args,
            target: flags.target.clone(),
            platform: flags.platform.as_deref(),
            format: CheckFormat::Text,
        },
    )
}

struct Request<'a> {
    file: Option<PathBuf>,
    context: PathBuf,
    build_args: &'a [String],
    target: Option<String>,
    platform: Option<&'a str>,
    format: CheckFormat,
}

fn check(global: &GlobalFlags, req: &Request<'_>) -> miette::Result<ExitCode> {
    let src = super::build::read_dockerfile_at(req.file.as_deref(), &req.context)?;
    let df = kiln_dockerfile::parse(&src).map_err(miette::Report::new)?;
    let build_args = super::build::build_args(req.build_args, |k| std::env::var(k).ok())?;
    let target_platform = req.platform.map(super::build::parse_platform).transpose()?;
    let opts = lint::Options {
        build_args: build_args.clone(),
        target: req.target.clone(),
        target_platform: target_platform.clone(),
        all_stages: true,
    };
    let dockerfile_path = req
        .file
        .clone()
        .unwrap_or_else(|| req.context.join("Dockerfile"));
    let host = StoreHost::new(global, &req.context, &dockerfile_path)?;
    let report = lint::check(&df, &src, &opts, &host).map_err(miette::Report::new)?;
    match req.format {
        CheckFormat::Text => print!("{}", render_text(&report, &src)),
        CheckFormat::Json => println!("{}", render_json(&report, &src)),
    }
    for s in &report.skipped {
        eprintln!("note: {} not checked: {}", s.rule, s.reason);
    }
    if report.failed() {
        eprintln!(
            "ERROR: lint violation found for rules: {}",
            report.failing_rules().join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    // What the build itself would reject (kiln's plan is stricter than the
    // checks: duplicate or reserved stage names are errors there).
    let plan_opts = PlanOptions {
        build_args,
        target: req.target.clone(),
        target_platform,
    };
    stages::plan(&df, &src, &plan_opts).map_err(miette::Report::new)?;
    Ok(ExitCode::SUCCESS)
}

/// The check's view of the world: the image store (read only, never pulled
/// from) and the build context directory.
struct StoreHost {
    store: Option<Store>,
    context: PathBuf,
    /// `.dockerignore` (the Dockerfile's own `<name>.dockerignore` first), if any.
    ignore: Option<PatternMatcher>,
}

impl StoreHost {
    fn new(global: &GlobalFlags, context: &Path, dockerfile: &Path) -> miette::Result<Self> {
        let root = global
            .root
            .clone()
            .unwrap_or_else(kiln_oci::store::default_root);
        // An absent store is not created just to be found empty.
        let store = if root.is_dir() {
            Store::open(&root).ok()
        } else {
            None
        };
        let patterns = kiln_builder::load_ignore_patterns(context, Some(dockerfile))
            .map_err(|e| miette!("reading the .dockerignore of {}: {e}", context.display()))?;
        let ignore = if patterns.is_empty() {
            None
        } else {
            Some(
                PatternMatcher::new(&patterns)
                    .map_err(|e| miette!("{}: .dockerignore: {e}", context.display()))?,
            )
        };
        Ok(StoreHost {
            store,
            context: context.to_path_buf(),
            ignore,
        })
    }

    fn excluded(&self, path: &str) -> bool {
        self.ignore
            .as_ref()
            .is_some_and(|m| m.matches_or_parent_matches(path).unwrap_or(false))
    }
}

impl Host for StoreHost {
    fn base_image(&self, reference: &str, _platform: &Platform) -> Option<ImageFacts> {
        let store = self.store.as_ref()?;
        let r = Reference::parse(reference).ok()?;
        let target = store.resolve(&r.store_name()?).ok()?;
        if r.digest.is_some_and(|d| d != target.digest) {
            return None;
        }
        let image = load_image(store, &target).ok()?;
        let c = &image.config;
        let cc = c.config.clone().unwrap_or_default();
        Some(ImageFacts {
            platform: Platform::parse(&match &c.variant {
                Some(v) if !v.is_empty() => format!("{}/{}/{v}", c.os, c.architecture),
                _ => format!("{}/{}", c.os, c.architecture),
            })
            .ok()?,
            env: cc
                .env
                .iter()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                    (k.to_string(), v.to_string())
                })
                .collect(),
            user: cc.user.unwrap_or_default(),
            has_shell: cc.shell.is_some_and(|s| !s.is_empty()),
            workdir: cc.working_dir.unwrap_or_default(),
        })
    }

    fn ignored(&self, path: &str) -> Option<bool> {
        let m = self.ignore.as_ref()?;
        if m.has_exclusions() {
            return None;
        }
        let path = path.trim_start_matches('/');
        if path.is_empty() || path == "." {
            // The context root is only "ignored" by patterns that exclude everything.
            return Some(
                m.patterns()
                    .iter()
                    .any(|p| !p.is_exclusion() && matches!(p.as_str(), "*" | "**" | "**/*")),
            );
        }
        Some(m.matches_or_parent_matches(path).unwrap_or(false))
    }

    fn context_entries(&self, names: &[&str]) -> Option<Vec<String>> {
        if !self.context.is_dir() {
            return None;
        }
        Some(
            names
                .iter()
                .filter(|n| self.context.join(n).symlink_metadata().is_ok() && !self.excluded(n))
                .map(|n| n.to_string())
                .collect(),
        )
    }
}

/// BuildKit's source excerpt (`errdefs.Source.Print`): the lines of the
/// finding marked `>>>`, with up to four lines of context for a one-line range
/// (two otherwise), between dashed rules.
fn excerpt(out: &mut String, src: &Source, start: usize, end: usize) {
    let lines: Vec<&str> = src.text.split('\n').collect();
    if start < 1 || start > lines.len() {
        return;
    }
    let (mut s, mut e) = (start, end.max(start).min(lines.len()));
    let pad = if e == s { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if s > 1 {
            s -= 1;
            p += 1;
        }
        if e != lines.len() {
            e += 1;
            p += 1;
        }
        p += 1;
    }
    let _ = writeln!(out, "{}:{start}\n--------------------", src.name);
    for (i, line) in lines.iter().enumerate().take(e).skip(s - 1) {
        let n = i + 1;
        let mark = if n >= start && n <= end.max(start) {
            ">>>"
        } else {
            "   "
        };
        let _ = writeln!(out, " {n:>3} | {mark} {line}");
    }
    out.push_str("--------------------\n");
}

/// The text report: per finding `LEVEL: Rule - URL`, the message, the
/// excerpt (and for kiln's rules why and a hint), then a summary line.
fn render_text(report: &Report, src: &Source) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let level = f.rule.level.as_str().to_uppercase();
        let _ = write!(out, "\n{level}: {}", f.rule.name);
        if let Some(url) = f.rule.url {
            let _ = write!(out, " - {url}");
        }
        let _ = writeln!(out, "\n{}", f.message);
        excerpt(&mut out, src, f.location.start_line, f.location.end_line);
        if let Some(hint) = f.rule.hint {
            let _ = writeln!(out, "why: {}\nhint: {hint}", f.rule.description);
        }
    }
    let count = |l: Level| report.findings.iter().filter(|f| f.rule.level == l).count();
    let warnings = count(Level::Warning) + count(Level::Error);
    out.push('\n');
    match warnings {
        0 => out.push_str("Check complete, no warnings found."),
        1 => out.push_str("Check complete, 1 warning has been found!"),
        n => {
            let _ = write!(out, "Check complete, {n} warnings have been found!");
        }
    }
    match count(Level::Info) {
        0 => {}
        1 => out.push_str(" (1 info finding)"),
        n => {
            let _ = write!(out, " ({n} info findings)");
        }
    }
    out.push('\n');
    out
}

fn finding_json(f: &Finding, src: &Source) -> serde_json::Value {
    serde_json::json!({
        "rule": f.rule.name,
        "level": f.rule.level.as_str(),
        "description": f.rule.description,
        "url": f.rule.url,
        "message": f.message,
        "hint": f.rule.hint,
        "location": {
            "file": src.name,
            "line": f.location.start_line,
            "end_line": f.location.end_line,
            "column": f.location.column,
        },
    })
}

/// The JSON report: an array of findings in line order.
fn render_json(report: &Report, src: &Source) -> String {
    let list: Vec<serde_json::Value> = report
        .findings
        .iter()
        .map(|f| finding_json(f, src))
        .collect();
    serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_dockerfile::lint::NoHost;
    use std::collections::BTreeMap;

    fn report(text: &str) -> (Report, Source) {
        let src = Source::new("Dockerfile", text.to_string());
        let df = kiln_dockerfile::parse(&src).unwrap();
        let opts = lint::Options {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: Some(Platform::parse("linux/amd64").unwrap()),
            all_stages: true,
        };
        (lint::check(&df, &src, &opts, &NoHost).unwrap(), src)
    }

    #[test]
    fn text_like_buildkit() {
        let (r, src) = report(
            "# check=skip=MissingOciLabels,FinalStageRunsAsRoot\nFROM alpine:3 as base\nRUN true\nRUN true\nRUN true\nRUN true\n",
        );
        assert_eq!(
            render_text(&r, &src),
            "\nWARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n\
             'as' and 'FROM' keywords' casing do not match\n\
             Dockerfile:2\n\
             --------------------\n   \
             1 |     # check=skip=MissingOciLabels,FinalStageRunsAsRoot\n   \
             2 | >>> FROM alpine:3 as base\n   \
             3 |     RUN true\n   \
             4 |     RUN true\n\
             --------------------\n\
             \nCheck complete, 1 warning has been found!\n"
        );
        let (r, src) = report("FROM alpine:3\nUSER app\nLABEL org.opencontainers.image.source=x\n");
        assert_eq!(
            render_text(&r, &src),
            "\nCheck complete, no warnings found.\n"
        );
    }

    #[test]
    fn kiln_findings_have_why_and_hint() {
        let (r, src) = report("FROM alpine:3\nUSER root\n");
        let text = render_text(&r, &src);
        assert!(text.contains("\nWARNING: FinalStageRunsAsRoot\nThe final stage switches to USER root, so the container runs as root\nDockerfile:2\n"), "{text}");
        assert!(
            text.contains("\nwhy: The final stage runs as root"),
            "{text}"
        );
        assert!(text.contains("\nhint: Add a non-root user"), "{text}");
        assert!(text.contains("\nINFO: MissingOciLabels\n"), "{text}");
        assert!(
            text.ends_with("Check complete, 1 warning has been found! (1 info finding)\n"),
            "{text}"
        );
    }

    #[test]
    fn excerpt_of_a_range_at_the_end() {
        let src = Source::new("Dockerfile", "FROM a\nRUN b \\\n  c\n".to_string());
        let mut out = String::new();
        excerpt(&mut out, &src, 2, 3);
        assert_eq!(
            out,
            "Dockerfile:2\n--------------------\n   1 |     FROM a\n   2 | >>> RUN b \\\n   3 | >>>   c\n   4 |     \n--------------------\n"
        );
    }

    #[test]
    fn json_fields() {
        let (r, src) =
            report("FROM alpine:3 AS Build\nUSER app\nLABEL org.opencontainers.image.source=x\n");
        let v: serde_json::Value = serde_json::from_str(&render_json(&r, &src)).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{
                "rule": "StageNameCasing",
                "level": "warning",
                "description": "Stage names should be lowercase",
                "url": "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/",
                "message": "Stage name 'Build' should be lowercase",
                "hint": null,
                "location": {"file": "Dockerfile", "line": 1, "end_line": 1, "column": 1},
            }])
        );
    }
}
