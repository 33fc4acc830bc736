//! `.env` files as Compose reads them (compose-go's `dotenv`): `KEY=value` or
//! `KEY: value`, an optional `export `, `#` comments (inline after ` #` on
//! unquoted values), single quotes literal, double quotes with `\n`, `\t`,
//! `\\`, `\"`, `\$` escapes, `${VAR}` interpolation in unquoted and
//! double-quoted values (from the environment first, then the file so far),
//! and a bare `KEY` taking the environment's value if it has one.

use crate::error::{ComposeError, Loc, SourceFile};
use crate::interpolate::Interpolator;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Reads `file` into `out` (later keys replace earlier ones); `env` is the
/// environment the values may refer to.
pub fn parse(
    file: &Arc<SourceFile>,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut BTreeMap<String, String>,
) -> Result<(), ComposeError> {
    let text: &str = &file.text;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut line = 1;
    let mut rest = text;
    let err = |line: usize, msg: String| {
        let at = Loc {
            file: file.clone(),
            line,
            col: 0,
        };
        ComposeError::at(Some(&at), "", msg)
    };
    loop {
        // Skip blank space and comment lines.
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace());
        line += rest[..rest.len() - trimmed.len()].matches('\n').count();
        rest = trimmed;
        if rest.is_empty() {
            break;
        }
        if rest.starts_with('#') {
            rest = rest.find('\n').map_or("", |i| &rest[i..]);
            continue;
        }
        if let Some(r) = rest.strip_prefix("export") {
            if r.starts_with([' ', '\t']) {
                rest = r.trim_start_matches([' ', '\t']);
            }
        }
        let end = rest.find(['=', ':', '\n']).unwrap_or(rest.len());
        let key = rest[..end].trim_end();
        if let Some(bad) = key
            .chars()
            .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '[' | ']')))
        {
            return Err(err(
                line,
                format!(
                    "unexpected character {bad:?} in variable name {:?}",
                    rest.lines().next().unwrap_or("")
                ),
            ));
        }
        if key.is_empty() {
            return Err(err(line, "a line starts without a variable name".into()));
        }
        let key = key.to_string();
        let sep = rest[end..].chars().next();
        if sep != Some('=') && sep != Some(':') {
            // `KEY` alone: the environment's value, if set.
            if let Some(v) = env(&key).or_else(|| out.get(&key).cloned()) {
                out.insert(key, v);
            }
            rest = &rest[end..];
            continue;
        }
        rest = rest[end + 1..].trim_start_matches([' ', '\t']);
        let value_line = line;
        let lookup = |name: &str| env(name).or_else(|| out.get(name).cloned());
        let mut interp = Interpolator::new(&lookup);
        let value = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let (raw, len) = quoted(&rest[1..], q).ok_or_else(|| {
                    err(
                        value_line,
                        format!(
                            "unterminated quoted value {}",
                            rest.lines().next().unwrap_or("")
                        ),
                    )
                })?;
                line += rest[..len + 1].matches('\n').count();
                rest = &rest[len + 1..];
                // Nothing but a comment may follow on the line.
                let tail_end = rest.find('\n').unwrap_or(rest.len());
                let tail = rest[..tail_end].trim();
                if !tail.is_empty() && !tail.starts_with('#') {
                    return Err(err(
                        line,
                        format!("unexpected {tail:?} after a quoted value"),
                    ));
                }
                rest = &rest[tail_end..];
                if q == '"' {
                    interp
                        .substitute(&unescape(&raw))
                        .map_err(|e| err(value_line, format!("{key}: {e}")))?
                } else {
                    raw
                }
            }
            _ => {
                let end = rest.find('\n').unwrap_or(rest.len());
                let mut v = &rest[..end];
                if let Some(i) = v.find(" #") {
                    v = &v[..i];
                }
                let v = v.trim_end().to_string();
                rest = &rest[end..];
                interp
                    .substitute(&v)
                    .map_err(|e| err(value_line, format!("{key}: {e}")))?
            }
        };
        out.insert(key, value);
    }
    Ok(())
}

/// The content of a quoted value up to the closing `quote` (backslash-escaped
/// quotes kept as the quote, other backslashes kept for [`unescape`]), and the
/// byte length consumed including the closing quote.
fn quoted(s: &str, quote: char) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            if c != quote {
                out.push('\\');
            }
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == quote {
            return Some((out, i + c.len_utf8()));
        } else {
            out.push(c);
        }
    }
    None
}

/// Shell escapes of a double-quoted value; `\$` becomes `$$` (a literal `$`
/// for the interpolation that follows).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('a') => out.push('\u{7}'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('v') => out.push('\u{b}'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('$') => out.push_str("$$"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<BTreeMap<String, String>, ComposeError> {
        let f = Arc::new(SourceFile::new(".env", "/p/.env", text));
        let env = |k: &str| (k == "HOME_DIR").then(|| "/home/me".to_string());
        let mut out = BTreeMap::new();
        parse(&f, &env, &mut out).map(|()| out)
    }

    #[test]
    fn forms_of_a_line() {
        let m = read(concat!(
            "# comment\n",
            "\n",
            "A=1\n",
            "export B = two words # a comment\n",
            "C: yaml-style\n",
            "D='single $A \\n'\n",
            "E=\"double $A\\tx \\$A \\\"q\\\"\"\n",
            "F=${A}-${UNSET:-dflt}\n",
            "G=\"multi\nline\"\n",
            "HOME_DIR\n",
            "NOT_SET\n",
            "H=$HOME_DIR/x\n",
            "I=\n",
            "J=a#b\n",
        ))
        .unwrap();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "two words");
        assert_eq!(m["C"], "yaml-style");
        assert_eq!(m["D"], "single $A \\n");
        assert_eq!(m["E"], "double 1\tx $A \"q\"");
        assert_eq!(m["F"], "1-dflt");
        assert_eq!(m["G"], "multi\nline");
        assert_eq!(m["HOME_DIR"], "/home/me");
        assert!(!m.contains_key("NOT_SET"));
        assert_eq!(m["H"], "/home/me/x");
        assert_eq!(m["I"], "");
        assert_eq!(m["J"], "a#b");
    }

    #[test]
    fn mistakes_name_the_line() {
        let e = read("A=1\nB C=2\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with(".env:2: unexpected character ' '"),
            "{e}"
        );
        let e = read("A=1\n\nB=\"open\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with(".env:3: unterminated quoted value"),
            "{e}"
        );
        let e = read("A=${NOPE:?is required}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            ".env:1: A: required variable NOPE is missing a value: is required"
        );
    }
}
