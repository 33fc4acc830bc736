//! Value syntaxes used by instruction flags: Go durations (HEALTHCHECK) and
//! "did you mean" suggestions. (`--chmod` modes are in `chmod.rs`.)

use crate::ast::go_quote;

/// Go's `time.ParseDuration`, in nanoseconds: `1h30m`, `1.5s`, `300ms`,
/// `-2m`, `0`. Units: ns, us, µs, μs, ms, s, m, h. Errors read like Go's.
pub fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(orig));
    let mut s = orig;
    let mut neg = false;
    if let Some(c) = s.chars().next() {
        if c == '-' || c == '+' {
            neg = c == '-';
            s = &s[1..];
        }
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // integer part
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let int_part: u128 = if int_len > 0 {
            s[..int_len].parse::<u128>().map_err(|_| invalid())?
        } else {
            0
        };
        if int_part > i64::MAX as u128 {
            return Err(invalid());
        }
        s = &s[int_len..];
        // fraction
        let mut frac_digits = "";
        let mut post = false;
        if let Some(rest) = s.strip_prefix('.') {
            let n = rest.bytes().take_while(|c| c.is_ascii_digit()).count();
            frac_digits = &rest[..n];
            post = n > 0;
            s = &rest[n..];
        }
        if int_len == 0 && !post {
            return Err(invalid());
        }
        // unit
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map(|(i, _)| i)
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(orig)));
        }
        let unit_str = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u128 = match unit_str {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(unit_str),
                    go_quote(orig)
                ))
            }
        };
        let mut v = int_part * unit;
        if !frac_digits.is_empty() {
            // Go keeps at most enough digits to not overflow; 18 is plenty here.
            let digits = &frac_digits[..frac_digits.len().min(18)];
            let f: u128 = digits.parse().map_err(|_| invalid())?;
            let scale = 10u128.pow(digits.len() as u32);
            v += f * unit / scale;
        }
        total += v;
        if total > i64::MAX as u128 + u128::from(neg) {
            return Err(invalid());
        }
    }
    let total = total as i128;
    Ok(if neg { -total } else { total } as i64)
}

/// The closest of `options` to `word` when it is close enough to be a likely typo.
pub(crate) fn suggest<'a>(word: &str, options: &[&'a str]) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    let max = if w.chars().count() < 4 { 1 } else { 2 };
    options
        .iter()
        .map(|o| (levenshtein(&w, &o.to_ascii_lowercase()), *o))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

/// The edit distance between `a` and `b` (in characters).
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;
    const S: i64 = 1_000 * MS;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("30s"), Ok(30 * S));
        assert_eq!(parse_go_duration("1m30s"), Ok(90 * S));
        assert_eq!(parse_go_duration("1.5s"), Ok(1500 * MS));
        assert_eq!(parse_go_duration(".5s"), Ok(500 * MS));
        assert_eq!(parse_go_duration("1h"), Ok(3600 * S));
        assert_eq!(parse_go_duration("300ms"), Ok(300 * MS));
        assert_eq!(parse_go_duration("50ns"), Ok(50));
        assert_eq!(parse_go_duration("2us"), Ok(2000));
        assert_eq!(parse_go_duration("2µs"), Ok(2000));
        assert_eq!(parse_go_duration("-2s"), Ok(-2 * S));
        assert_eq!(parse_go_duration("+2s"), Ok(2 * S));
    }

    #[test]
    fn go_duration_errors() {
        assert_eq!(
            parse_go_duration("5").unwrap_err(),
            r#"time: missing unit in duration "5""#
        );
        assert_eq!(
            parse_go_duration("5x").unwrap_err(),
            r#"time: unknown unit "x" in duration "5x""#
        );
        assert_eq!(
            parse_go_duration("abc").unwrap_err(),
            r#"time: invalid duration "abc""#
        );
        assert_eq!(
            parse_go_duration("").unwrap_err(),
            r#"time: invalid duration """#
        );
        assert_eq!(
            parse_go_duration(".s").unwrap_err(),
            r#"time: invalid duration ".s""#
        );
        assert!(parse_go_duration("99999999999h").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("coppy", &["copy", "run", "from"]), Some("copy"));
        assert_eq!(suggest("COPPY", &["COPY", "RUN"]), Some("COPY"));
        assert_eq!(suggest("xyzzy", &["copy", "run"]), None);
    }
}
