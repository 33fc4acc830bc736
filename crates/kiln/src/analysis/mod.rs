//! `kiln analyze`'s outputs and CI gates: the report
//! ([`kiln_insight::Report`]) as text for a terminal (`text.rs`) or as one
//! self-contained HTML page (`html.rs`); JSON is the report serialized.

pub mod html;
pub mod text;

use crate::flags::{FailOn, GateFlags};
use kiln_insight::{FindingKind, Report};
use miette::{miette, Result};

/// The exit code when the analysis worked but a gate failed.
pub const GATE_FAILED: u8 = 3;

/// The gates of `--fail-on`, `--max-size` and `--min-efficiency`, checked.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Gates {
    pub fail_on: Vec<FailOn>,
    pub max_size: Option<u64>,
    pub min_efficiency: Option<f64>,
}

impl Gates {
    pub fn from_flags(f: &GateFlags) -> Result<Gates> {
        let max_size = f
            .max_size
            .as_deref()
            .map(|s| parse_size(s).ok_or_else(|| miette!("--max-size {s:?}: expected a size such as 150MB, 1.5GB, 200MiB or a number of bytes")))
            .transpose()?;
        let min_efficiency = f
            .min_efficiency
            .as_deref()
            .map(|s| parse_fraction(s).ok_or_else(|| miette!("--min-efficiency {s:?}: expected a number from 0 to 1, or a percentage such as 95%")))
            .transpose()?;
        Ok(Gates {
            fail_on: f.fail_on.clone(),
            max_size,
            min_efficiency,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.fail_on.is_empty() && self.max_size.is_none() && self.min_efficiency.is_none()
    }

    /// One sentence per failed gate.
    pub fn check(&self, r: &Report) -> Vec<String> {
        let mut failed = Vec::new();
        for f in &self.fail_on {
            let kind = match f {
                FailOn::Any => None,
                FailOn::Secrets => Some(FindingKind::Secrets),
                FailOn::DevDeps => Some(FindingKind::DevDeps),
                FailOn::Sources => Some(FindingKind::Sources),
                FailOn::Toolchains => Some(FindingKind::Toolchains),
                FailOn::Caches => Some(FindingKind::Caches),
                FailOn::Root => Some(FindingKind::Root),
                FailOn::Setuid => Some(FindingKind::Setuid),
                FailOn::WorldWritable => Some(FindingKind::WorldWritable),
            };
            let n = r
                .findings
                .iter()
                .filter(|x| kind.is_none_or(|k| x.kind == k))
                .count();
            if n > 0 {
                let what = kind.map_or("any", |k| k.name());
                failed.push(format!("--fail-on {what}: {n} finding(s)"));
            }
        }
        if let Some(max) = self.max_size {
            if r.size.stored > max {
                failed.push(format!(
                    "--max-size: the image is {} bytes ({}), more than {} bytes",
                    r.size.stored,
                    crate::render::human_size(r.size.stored),
                    max
                ));
            }
        }
        if let Some(min) = self.min_efficiency {
            if r.waste.efficiency < min {
                failed.push(format!(
                    "--min-efficiency: the efficiency is {:.4}, below {min}",
                    r.waste.efficiency
                ));
            }
        }
        failed
    }
}

/// `150MB`, `1.5GB`, `200MiB`, `42` (bytes): decimal units as `kiln images`
/// shows them, binary ones with `i`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0).then_some(v.round() as u64)
}

/// `0.95` or `95%`.
pub fn parse_fraction(s: &str) -> Option<f64> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => s.parse::<f64>().ok()?,
    };
    (0.0..=1.0).contains(&v).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_fractions() {
        assert_eq!(parse_size("150MB"), Some(150_000_000));
        assert_eq!(parse_size("1.5GB"), Some(1_500_000_000));
        assert_eq!(parse_size("2MiB"), Some(2 * 1024 * 1024));
        assert_eq!(parse_size("42"), Some(42));
        assert_eq!(parse_size("12 kB"), Some(12_000));
        assert_eq!(parse_size("MB"), None);
        assert_eq!(parse_size("3 parsecs"), None);
        assert_eq!(parse_fraction("0.95"), Some(0.95));
        assert_eq!(parse_fraction("95%"), Some(0.95));
        assert_eq!(parse_fraction("1.5"), None);
    }
}
