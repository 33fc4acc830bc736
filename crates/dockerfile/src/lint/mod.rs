//! Build checks (`kiln check`, `kiln build --check`): BuildKit's build-check
//! rules with its names, messages, URLs and defaults ([`buildkit`]), and kiln's
//! own rules about what a multi-stage build is for ([`kiln`]).
//!
//! The checks read the Dockerfile only. What they need from outside (a stored
//! base image's config, the context's `.dockerignore`, its top-level entries)
//! they ask a [`Host`]; a rule whose input is missing is reported as skipped,
//! with the reason, never guessed.
//!
//! Configuration follows BuildKit: the `# check=skip=A,B;error=true;experimental=C`
//! directive, replaced as a whole by the `BUILDKIT_DOCKERFILE_CHECK` build arg,
//! and merged with a `# check=...` comment directly above an instruction.

// `DockerfileError` is the crate's located error type; see instructions/mod.rs.
#![allow(clippy::result_large_err)]

mod buildkit;
mod config;
mod kiln;
mod model;
mod reference;
pub mod rules;

#[cfg(test)]
mod tests;

pub use config::{parse_check_options, CheckConfig};
pub use reference::is_valid_reference;
pub use rules::{Level, Rule, RuleSet};

use crate::ast::Dockerfile;
use crate::error::{DockerfileError, Source};
use crate::stages::Platform;
use std::collections::BTreeMap;

/// The build arg that replaces the Dockerfile's `# check=` directive.
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// What a stored base image says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub platform: Platform,
    /// `KEY=value` pairs of the image config, split.
    pub env: Vec<(String, String)>,
    /// The config's `User` (empty: root).
    pub user: String,
    /// The config's `Shell` is set.
    pub has_shell: bool,
    /// The config's `WorkingDir`.
    pub workdir: String,
}

/// What the checks may ask the world outside the Dockerfile. Every method has
/// an answer meaning "not known", which skips the rules that need it.
pub trait Host {
    /// The config of base image `reference` for `platform`, when it is in the
    /// image store (nothing is pulled).
    fn base_image(&self, _reference: &str, _platform: &Platform) -> Option<ImageFacts> {
        None
    }

    /// Whether the context's `.dockerignore` excludes `path` (a cleaned
    /// context path, `.` for the root) or a parent of it. `None` when that
    /// cannot be told without the files: no ignore file, or one with `!`
    /// exclusions (BuildKit's CopyIgnoredFile gives up on those too).
    fn ignored(&self, _path: &str) -> Option<bool> {
        None
    }

    /// Of `names`, the top-level entries of the build context that exist and
    /// that `.dockerignore` does not exclude. `None` when there is no context.
    fn context_entries(&self, _names: &[&str]) -> Option<Vec<String>> {
        None
    }
}

/// A [`Host`] that knows nothing: only the Dockerfile is checked.
pub struct NoHost;

impl Host for NoHost {}

/// What a check is asked.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--build-arg`s (a `BUILDKIT_DOCKERFILE_CHECK` among them configures the checks).
    pub build_args: BTreeMap<String, String>,
    /// `--target`: check the stages it needs; default every stage (as `docker build --check`).
    pub target: Option<String>,
    /// `--platform`; default the host's.
    pub target_platform: Option<Platform>,
    /// Check every stage when no target is given (`kiln check`, as `docker build
    /// --check`); otherwise only the stages the target (default: the last) needs,
    /// as a build checks them.
    pub all_stages: bool,
}

/// Where a finding points: 1-based lines and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub start_line: usize,
    pub end_line: usize,
    /// 1-based column of the instruction's first character.
    pub column: usize,
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static Rule,
    pub message: String,
    pub location: Location,
}

/// A rule that could not be checked, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub rule: &'static str,
    pub reason: String,
}

/// The result of [`check`].
#[derive(Debug, Clone)]
pub struct Report {
    /// Findings in line order (then rule name).
    pub findings: Vec<Finding>,
    pub skipped: Vec<Skipped>,
    /// `error=true` was configured.
    pub error_on_findings: bool,
}

impl Report {
    /// Whether the check fails: a finding at error level, or any finding
    /// above info level with `error=true` (BuildKit's "lint violation found").
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| {
            f.rule.level == Level::Error || (self.error_on_findings && f.rule.level != Level::Info)
        })
    }

    /// The rules that make the check fail, sorted and unique.
    pub fn failing_rules(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self
            .findings
            .iter()
            .filter(|f| {
                f.rule.level == Level::Error
                    || (self.error_on_findings && f.rule.level != Level::Info)
            })
            .map(|f| f.rule.name)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Runs every enabled rule over `df` (whose text is `src`). Errors: the
/// Dockerfile's instructions do not parse (the located parse error), or the
/// check configuration is malformed.
pub fn check(
    df: &Dockerfile,
    src: &Source,
    opts: &Options,
    host: &dyn Host,
) -> Result<Report, DockerfileError> {
    let base_config = match opts.build_args.get(CHECK_BUILD_ARG) {
        Some(v) => parse_check_options(v).map_err(|e| {
            DockerfileError::at(src, 0, 0, format!("failed to parse {CHECK_BUILD_ARG}: {e}"))
        })?,
        None => {
            let directive = df
                .directives
                .iter()
                .find(|d| d.name.eq_ignore_ascii_case("check"));
            match directive {
                Some(d) => parse_check_options(&d.value).map_err(|e| {
                    DockerfileError::at(
                        src,
                        d.line,
                        d.line,
                        format!("failed to parse check options: {e}"),
                    )
                })?,
                None => CheckConfig::default(),
            }
        }
    };
    let model = model::Model::build(df, src, opts)?;
    let mut sink = Sink {
        config: base_config.clone(),
        findings: Vec::new(),
        skipped: Vec::new(),
        src,
    };
    buildkit::run(&model, host, &mut sink);
    kiln::run(&model, host, &mut sink);
    let mut findings = sink.findings;
    findings.sort_by(|a, b| {
        (a.location.start_line, a.rule.name).cmp(&(b.location.start_line, b.rule.name))
    });
    let mut skipped = sink.skipped;
    skipped.dedup();
    Ok(Report {
        findings,
        skipped,
        error_on_findings: base_config.error,
    })
}

/// Collects findings, honouring the configuration (and per-instruction comments).
pub(crate) struct Sink<'a> {
    config: CheckConfig,
    findings: Vec<Finding>,
    skipped: Vec<Skipped>,
    src: &'a Source,
}

impl Sink<'_> {
    /// Reports `rule` at lines `start..=end`; `comments` are the comment lines
    /// directly above the instruction (a `check=` among them is merged in).
    pub(crate) fn report(
        &mut self,
        rule: &'static Rule,
        start: usize,
        end: usize,
        comments: &[String],
        message: String,
    ) {
        let config = self.config.merged_with_comments(comments);
        if !config.enabled(rule) {
            return;
        }
        let column = self
            .src
            .text
            .lines()
            .nth(start.saturating_sub(1))
            .map(|l| l.len() - l.trim_start().len() + 1)
            .unwrap_or(1);
        self.findings.push(Finding {
            rule,
            message,
            location: Location {
                start_line: start,
                end_line: end.max(start),
                column,
            },
        });
    }

    /// Notes that `rule` (if enabled) could not be checked.
    pub(crate) fn skip(&mut self, rule: &'static Rule, reason: String) {
        if self.config.enabled(rule) {
            self.skipped.push(Skipped {
                rule: rule.name,
                reason,
            });
        }
    }
}
