//! `HEALTHCHECK NONE` or `HEALTHCHECK [--interval=] [--timeout=] [--start-period=]
//! [--start-interval=] [--retries=] CMD command`.

use super::flags::Flags;
use super::values::parse_go_duration;
use super::{at_least_one, InstrError};
use crate::ast::Node;

/// `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `None` for `HEALTHCHECK NONE` (disable the base image's check).
    pub check: Option<HealthConfig>,
}

/// The health check settings of `HEALTHCHECK CMD`; durations in nanoseconds,
/// 0 meaning "not set, use the runtime's default".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// `["CMD", argv...]` (exec form) or `["CMD-SHELL", "command"]`, as in the image config.
    pub test: Vec<String>,
    pub interval_ns: i64,
    pub timeout_ns: i64,
    pub start_period_ns: i64,
    pub start_interval_ns: i64,
    pub retries: u32,
}

impl Healthcheck {
    pub(crate) fn parse(node: &Node) -> Result<Healthcheck, InstrError> {
        let Some(typ) = node.args.first() else {
            return Err(at_least_one("HEALTHCHECK"));
        };
        let typ = typ.to_ascii_uppercase();
        let rest = &node.args[1..];
        if typ == "NONE" {
            // BuildKit does not look at flags for NONE.
            if !rest.is_empty() {
                return Err(InstrError::new("HEALTHCHECK NONE takes no arguments"));
            }
            return Ok(Healthcheck { check: None });
        }
        let mut flags = Flags::new(&node.flags);
        let interval = flags.string("interval");
        let timeout = flags.string("timeout");
        let start_period = flags.string("start-period");
        let start_interval = flags.string("start-interval");
        let retries = flags.string("retries");
        let f = flags.parse()?;
        if typ != "CMD" {
            return Err(InstrError::new(format!(
                "Unknown type {typ:?} in HEALTHCHECK (try CMD)"
            )));
        }
        if rest.is_empty() {
            return Err(InstrError::new("Missing command after HEALTHCHECK CMD"));
        }
        let test = if node.json {
            std::iter::once("CMD".to_string())
                .chain(rest.iter().cloned())
                .collect()
        } else {
            vec!["CMD-SHELL".to_string(), rest.join(" ")]
        };
        let duration = |flag, name: &str| -> Result<i64, InstrError> {
            let Some(v) = f.non_empty(flag) else {
                return Ok(0);
            };
            let d = parse_go_duration(&v).map_err(InstrError::new)?;
            if d == 0 {
                return Ok(0);
            }
            if d < 1_000_000 {
                return Err(InstrError::new(format!(
                    "Interval {name:?} cannot be less than 1ms"
                )));
            }
            Ok(d)
        };
        let retries = match f.non_empty(retries) {
            None => 0,
            Some(v) => {
                let n: i64 = v
                    .parse()
                    .ok()
                    .filter(|n| i32::try_from(*n).is_ok())
                    .ok_or_else(|| {
                        InstrError::new(format!(
                            "strconv.ParseInt: parsing {}: invalid syntax",
                            crate::ast::go_quote(&v)
                        ))
                    })?;
                if n < 0 {
                    return Err(InstrError::new(format!(
                        "--retries cannot be negative ({n})"
                    )));
                }
                n as u32
            }
        };
        Ok(Healthcheck {
            check: Some(HealthConfig {
                test,
                interval_ns: duration(interval, "interval")?,
                timeout_ns: duration(timeout, "timeout")?,
                start_period_ns: duration(start_period, "start-period")?,
                start_interval_ns: duration(start_interval, "start-interval")?,
                retries,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, json, node, parse};
    use super::super::Kind;

    #[test]
    fn healthcheck() {
        let Kind::Healthcheck(h) = parse(&node(
            "healthcheck",
            &[
                "--interval=30s",
                "--timeout=3s",
                "--start-period=1m",
                "--start-interval=500ms",
                "--retries=3",
            ],
            &["CMD", "curl -f http://localhost/"],
        ))
        .kind
        else {
            panic!()
        };
        let c = h.check.unwrap();
        assert_eq!(c.test, vec!["CMD-SHELL", "curl -f http://localhost/"]);
        assert_eq!(c.interval_ns, 30_000_000_000);
        assert_eq!(c.timeout_ns, 3_000_000_000);
        assert_eq!(c.start_period_ns, 60_000_000_000);
        assert_eq!(c.start_interval_ns, 500_000_000);
        assert_eq!(c.retries, 3);

        let Kind::Healthcheck(h) =
            parse(&json(node("healthcheck", &[], &["cmd", "curl", "-f"]))).kind
        else {
            panic!()
        };
        assert_eq!(h.check.unwrap().test, vec!["CMD", "curl", "-f"]);
        let Kind::Healthcheck(h) = parse(&node("healthcheck", &[], &["NONE"])).kind else {
            panic!()
        };
        assert_eq!(h.check, None);
        let Kind::Healthcheck(h) =
            parse(&node("healthcheck", &["--interval=0s"], &["CMD", "x"])).kind
        else {
            panic!()
        };
        assert_eq!(h.check.unwrap().interval_ns, 0);
    }

    #[test]
    fn healthcheck_errors() {
        assert_eq!(
            err(&node("healthcheck", &[], &[])),
            "HEALTHCHECK requires at least one argument"
        );
        assert_eq!(
            err(&node("healthcheck", &[], &["NONE", "x"])),
            "HEALTHCHECK NONE takes no arguments"
        );
        assert_eq!(
            err(&node("healthcheck", &[], &["CMD"])),
            "Missing command after HEALTHCHECK CMD"
        );
        assert_eq!(
            err(&node("healthcheck", &[], &["RUN", "x"])),
            "Unknown type \"RUN\" in HEALTHCHECK (try CMD)"
        );
        assert_eq!(
            err(&node("healthcheck", &["--interval=50ns"], &["CMD", "x"])),
            "Interval \"interval\" cannot be less than 1ms"
        );
        assert_eq!(
            err(&node("healthcheck", &["--timeout=-1s"], &["CMD", "x"])),
            "Interval \"timeout\" cannot be less than 1ms"
        );
        assert_eq!(
            err(&node("healthcheck", &["--interval=5"], &["CMD", "x"])),
            "time: missing unit in duration \"5\""
        );
        assert_eq!(
            err(&node(
                "healthcheck",
                &["--start-period=soon"],
                &["CMD", "x"]
            )),
            "time: invalid duration \"soon\""
        );
        assert_eq!(
            err(&node("healthcheck", &["--retries=-1"], &["CMD", "x"])),
            "--retries cannot be negative (-1)"
        );
        assert_eq!(
            err(&node("healthcheck", &["--retries=many"], &["CMD", "x"])),
            "strconv.ParseInt: parsing \"many\": invalid syntax"
        );
        assert_eq!(
            err(&node("healthcheck", &["--interval"], &["CMD", "x"])),
            "missing a value on flag: --interval"
        );
        assert_eq!(
            err(&node("healthcheck", &["--every=1s"], &["CMD", "x"])),
            "unknown flag: --every"
        );
    }
}
