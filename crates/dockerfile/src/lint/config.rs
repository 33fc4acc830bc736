//! The check configuration: `skip=`, `error=`, `experimental=` as BuildKit's
//! `linter.ParseLintOptions` reads them.

use super::rules::Rule;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: BTreeSet<String>,
    pub experimental_all: bool,
    pub experimental: BTreeSet<String>,
    /// `error=true`: findings fail the check (and the build).
    pub error: bool,
}

/// Parses `skip=A,B;error=true;experimental=all` (at most three `;` parts, as
/// BuildKit splits them). Errors read like BuildKit's.
pub fn parse_check_options(s: &str) -> Result<CheckConfig, String> {
    let s = s.trim();
    let mut c = CheckConfig::default();
    if s.is_empty() {
        return Ok(c);
    }
    for part in s.splitn(3, ';') {
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!("invalid check option {part:?}"));
        };
        let list = |v: &str| -> BTreeSet<String> {
            v.trim().split(',').map(|r| r.trim().to_string()).collect()
        };
        match k.trim() {
            "skip" if v.trim() == "all" => c.skip_all = true,
            "skip" => c.skip = list(v),
            "experimental" if v.trim() == "all" => c.experimental_all = true,
            "experimental" => c.experimental = list(v),
            "error" => {
                c.error = parse_go_bool(v.trim()).ok_or_else(|| {
                    format!(
                        "failed to parse check option {part:?}: strconv.ParseBool: parsing {:?}: invalid syntax",
                        v.trim()
                    )
                })?
            }
            other => return Err(format!("invalid check option {other:?}")),
        }
    }
    Ok(c)
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

impl CheckConfig {
    /// Whether `rule` runs: an experimental rule only when enabled (skip does
    /// not apply to it, as in BuildKit), any other unless skipped.
    pub fn enabled(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.contains(rule.name)
        } else {
            !(self.skip_all || self.skip.contains(rule.name))
        }
    }

    /// This configuration with `other` merged in (BuildKit's `WithMergedConfig`:
    /// skips and experimental rules add up; `error` is not changed).
    pub fn merged(&self, other: &CheckConfig) -> CheckConfig {
        let mut c = self.clone();
        c.skip_all |= other.skip_all;
        c.experimental_all |= other.experimental_all;
        c.skip.extend(other.skip.iter().cloned());
        c.experimental.extend(other.experimental.iter().cloned());
        c
    }

    /// Merged with the first `check=` among the comment lines directly above
    /// an instruction (`# check=skip=JSONArgsRecommended`); a malformed one is
    /// ignored, as BuildKit ignores it.
    pub fn merged_with_comments(&self, comments: &[String]) -> CheckConfig {
        for c in comments {
            let Some((name, value)) = c.split_once('=') else {
                continue;
            };
            let name = name.trim();
            let valid_name = name.starts_with(|ch: char| ch.is_ascii_alphabetic())
                && name.chars().all(|ch| ch.is_ascii_alphanumeric());
            if !valid_name || !name.eq_ignore_ascii_case("check") {
                continue;
            }
            let value = value.trim();
            let value = value.split(' ').next().unwrap_or_default();
            return match parse_check_options(value) {
                Ok(other) => self.merged(&other),
                Err(_) => self.clone(),
            };
        }
        self.clone()
    }
}
