//! How figures look on a terminal: docker's human sizes and durations, and
//! column-aligned tables.

/// Docker's `units.HumanSize`: decimal units, three significant digits ("4.26MB").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut i = 0;
    // Also step up when three significant digits would round to 1000.
    while v >= 999.5 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", three_significant(v), UNITS[i])
}

/// Go's `%.3g` for 0 <= v < 1000.
fn three_significant(v: f64) -> String {
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    // Rounding may carry into a new digit (99.95 → "100.0"); %g then has fewer decimals.
    let s = if s.len() > 4 && s.contains('.') {
        let int_digits = s.find('.').unwrap_or(s.len());
        format!("{v:.prec$}", prec = 3usize.saturating_sub(int_digits))
    } else {
        s
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Docker's `units.HumanDuration` + " ago".
pub fn human_since(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h) = (s / 60, s / 3600);
    let d = match () {
        _ if s < 1 => "Less than a second".to_string(),
        _ if s == 1 => "1 second".to_string(),
        _ if s < 60 => format!("{s} seconds"),
        _ if m == 1 => "About a minute".to_string(),
        _ if m < 60 => format!("{m} minutes"),
        _ if h == 1 => "About an hour".to_string(),
        _ if h < 48 => format!("{h} hours"),
        _ if h < 24 * 7 * 2 => format!("{} days", h / 24),
        _ if h < 24 * 30 * 2 => format!("{} weeks", h / 24 / 7),
        _ if h < 24 * 365 * 2 => format!("{} months", h / 24 / 30),
        _ => format!("{} years", h / 24 / 365),
    };
    format!("{d} ago")
}

/// Now, in Unix seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Docker's `CreatedAt` form: `2024-05-06 07:08:09 +0000 UTC`.
pub fn created_at(unix: i64) -> String {
    let s = kiln_oci::image::format_rfc3339(unix);
    format!("{} {} +0000 UTC", &s[..10], &s[11..19])
}

/// Rows aligned like docker's tabwriter (min width 10, padding 3); the last column
/// is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths = vec![0usize; cols];
    for (i, h) in header.iter().enumerate() {
        widths[i] = h.chars().count();
    }
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            l.push_str(c);
            if i + 1 < cells.len() {
                let w = (widths[i] + 3).max(10);
                l.push_str(&" ".repeat(w - c.chars().count()));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        for (n, s) in [
            (0, "0B"),
            (999, "999B"),
            (1000, "1kB"),
            (4_260_000, "4.26MB"),
            (4_264_999, "4.26MB"),
            (12_345, "12.3kB"),
            (999_999, "1MB"),
            (99_950, "100kB"),
            (123_456_789, "123MB"),
        ] {
            assert_eq!(human_size(n), s, "{n}");
        }
    }

    #[test]
    fn durations_like_docker() {
        assert_eq!(human_since(0), "Less than a second ago");
        assert_eq!(human_since(30), "30 seconds ago");
        assert_eq!(human_since(90), "About a minute ago");
        assert_eq!(human_since(3 * 3600), "3 hours ago");
        assert_eq!(human_since(3 * 86400), "3 days ago");
        assert_eq!(human_since(20 * 86400), "2 weeks ago");
        assert_eq!(human_since(100 * 86400), "3 months ago");
        assert_eq!(human_since(56 * 365 * 86400), "56 years ago");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["REPOSITORY", "TAG", "SIZE"],
            &[vec!["app".into(), "1".into(), "2MB".into()]],
        );
        assert_eq!(
            t,
            "REPOSITORY   TAG       SIZE\napp          1         2MB\n"
        );
        assert_eq!(created_at(0), "1970-01-01 00:00:00 +0000 UTC");
    }
}
