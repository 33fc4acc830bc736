//! Healthchecks as docker runs them: the test command in the running
//! container every `interval` (`start_interval` during `start_period`, whose
//! failures do not count), `timeout` each; `retries` failures in a row make
//! the container unhealthy, one success healthy.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A healthcheck: the image's `HEALTHCHECK` or the Compose file's `healthcheck:`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Healthcheck {
    /// The command, exec form (`CMD-SHELL x` is already `["/bin/sh", "-c", x]`).
    pub test: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub start_period_ms: u64,
    pub start_interval_ms: u64,
    pub retries: u32,
}

impl Healthcheck {
    /// Docker's defaults: 30 s interval and timeout, 3 retries, 5 s start interval.
    pub fn new(test: Vec<String>) -> Healthcheck {
        Healthcheck {
            test,
            interval_ms: 30_000,
            timeout_ms: 30_000,
            start_period_ms: 0,
            start_interval_ms: 5_000,
            retries: 3,
        }
    }

    /// Docker's `test` forms: `["CMD", args…]`, `["CMD-SHELL", cmd]`, a
    /// string (shell), `["NONE"]` (disabled: None).
    pub fn test_from(form: &[String]) -> Result<Option<Vec<String>>, String> {
        match form.first().map(String::as_str) {
            None | Some("NONE") => Ok(None),
            Some("CMD") if form.len() > 1 => Ok(Some(form[1..].to_vec())),
            Some("CMD-SHELL") if form.len() == 2 => Ok(Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                form[1].clone(),
            ])),
            _ => Err(format!(
                "a healthcheck test is [\"CMD\", args...], [\"CMD-SHELL\", command] or [\"NONE\"], not {form:?}"
            )),
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.max(1))
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "health: starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// A container's health so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub failing_streak: u32,
    /// Output of the last probe.
    pub last_output: String,
}

impl Health {
    /// Takes one probe's result; `in_start_period` failures do not count.
    pub fn record(&mut self, ok: bool, output: String, in_start_period: bool, retries: u32) {
        self.last_output = output;
        if ok {
            self.status = HealthStatus::Healthy;
            self.failing_streak = 0;
        } else if !in_start_period {
            self.failing_streak += 1;
            if self.failing_streak >= retries.max(1) {
                self.status = HealthStatus::Unhealthy;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn test_forms() {
        assert_eq!(
            Healthcheck::test_from(&v(&["CMD", "wget", "-q", "x"])).unwrap(),
            Some(v(&["wget", "-q", "x"]))
        );
        assert_eq!(
            Healthcheck::test_from(&v(&["CMD-SHELL", "true || false"])).unwrap(),
            Some(v(&["/bin/sh", "-c", "true || false"]))
        );
        assert_eq!(Healthcheck::test_from(&v(&["NONE"])).unwrap(), None);
        assert!(Healthcheck::test_from(&v(&["CMD"])).is_err());
        assert!(Healthcheck::test_from(&v(&["wget"])).is_err());
    }

    #[test]
    fn retries_in_a_row_make_it_unhealthy_and_the_start_period_does_not_count() {
        let mut h = Health::default();
        h.record(false, "no".into(), true, 2);
        h.record(false, "no".into(), true, 2);
        assert_eq!(h.status, HealthStatus::Starting);
        h.record(false, "no".into(), false, 2);
        assert_eq!(h.status, HealthStatus::Starting);
        h.record(true, "yes".into(), false, 2);
        assert_eq!((h.status, h.failing_streak), (HealthStatus::Healthy, 0));
        h.record(false, "no".into(), false, 2);
        assert_eq!(h.status, HealthStatus::Healthy);
        h.record(false, "no".into(), false, 2);
        assert_eq!(h.status, HealthStatus::Unhealthy);
    }
}
