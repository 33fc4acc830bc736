//! Per-instruction argument parsers (BuildKit's `line_parsers.go` and
//! `split_command.go`): splitting a logical line into keyword, `--flags` and
//! arguments, and turning the arguments into BuildKit's `Next` chain.

use super::json::{parse_json_array, JsonArgs};

/// The parsed arguments of one instruction.
#[derive(Debug, Default)]
pub(crate) struct Args {
    pub args: Vec<String>,
    pub json: bool,
}

pub(crate) const ERR_NOT_STRING_ARRAY: &str =
    "when using JSON array syntax, arrays must be comprised of strings only";

/// Go's `unicode.IsSpace` (identical to Rust's `char::is_whitespace`).
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace()
}

/// `unicode.IsSpace(rune(b))` for a single byte, as BuildKit's byte-wise
/// loops do: besides ASCII whitespace this is true for 0x85 and 0xA0.
fn is_space_byte(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0x85 | 0xa0)
}

/// The characters of BuildKit's `reWhitespace` (`[\t\v\f\r ]+`).
fn is_re_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Go's `reWhitespace.Split(s, n)` (n = -1 for all).
pub(crate) fn split_ws(s: &str, n: isize) -> Vec<String> {
    if n == 0 {
        return vec![];
    }
    if s.is_empty() {
        return vec![String::new()];
    }
    // Runs of whitespace as (start, end) byte ranges.
    let mut matches = Vec::new();
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if is_re_ws(c) {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = it.peek() {
                if !is_re_ws(d) {
                    break;
                }
                end = j + d.len_utf8();
                it.next();
            }
            matches.push((i, end));
            if n > 0 && matches.len() as isize >= n {
                break;
            }
        }
    }
    let mut out = Vec::new();
    let (mut beg, mut end) = (0usize, 0usize);
    for (ms, me) in matches {
        if n > 0 && out.len() as isize == n - 1 {
            break;
        }
        end = ms;
        if me != 0 {
            out.push(s[beg..end].to_string());
        }
        beg = me;
    }
    if end != s.len() {
        out.push(s[beg..].to_string());
    }
    out
}

/// Go's `strings.ToLower`, character by character (simple case mapping).
pub(crate) fn go_lower(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\u{130}' {
            out.push('i');
            continue;
        }
        let mut l = c.to_lowercase();
        match (l.next(), l.next()) {
            (Some(a), None) => out.push(a),
            _ => out.push(c),
        }
    }
    out
}

/// BuildKit's `splitCommand`: keyword, `--flags` and the remaining argument text.
pub(crate) fn split_command(line: &str, escape: char) -> (String, Vec<String>, String) {
    let parts = split_ws(line.trim(), 2);
    let cmd = parts.first().cloned().unwrap_or_default();
    let (args, flags) = match parts.get(1) {
        Some(rest) => extract_builder_flags(rest, escape),
        None => (String::new(), vec![]),
    };
    (cmd, flags, args.trim().to_string())
}

/// BuildKit's `extractBuilderFlags`. It walks the text byte by byte (a byte
/// is taken as the code point of the same value), exactly like the Go code.
fn extract_builder_flags(line: &str, escape: char) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let b = line.as_bytes();
    let esc = escape as u32;
    let rest = |pos: usize| String::from_utf8_lossy(&b[pos..]).into_owned();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut pos = 0usize;
    while pos <= b.len() {
        let ch = if pos < b.len() { b[pos] } else { 0 };
        if phase == Phase::Spaces {
            if pos == b.len() {
                break;
            }
            if is_space_byte(ch) {
                pos += 1;
                continue;
            }
            if ch != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-' {
                return (rest(pos), words);
            }
            phase = Phase::Word;
        }
        if pos == b.len() {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if is_space_byte(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (rest(pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if u32::from(ch) == esc {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = b[pos];
            }
            word.push(char::from(c));
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if u32::from(ch) == esc {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = b[pos];
        }
        word.push(char::from(c));
        pos += 1;
    }
    (String::new(), words)
}

/// BuildKit's `parseWords`: space-separated words, quotes and escapes kept.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut i = 0usize;
    while i <= chars.len() {
        let at_end = i == chars.len();
        let mut ch = if at_end { '\0' } else { chars[i] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if is_space(ch) {
                i += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if is_space(ch) {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                ch = chars[i];
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            i += 1;
            word.push(ch);
            ch = chars[i];
        }
        word.push(ch);
        i += 1;
    }
    words
}

/// ENV and LABEL: `KEY=value ...` or the legacy `KEY value`.
pub(crate) fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Args, String> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else {
        return Ok(Args::default());
    };
    if !first.contains('=') {
        let parts = split_ws(rest, 2);
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        return Ok(Args {
            args: vec![parts[0].clone(), parts[1].clone(), String::new()],
            json: false,
        });
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in &words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {}. Must be of the form: name=value",
                crate::ast::go_quote(word)
            ));
        };
        args.push(k.to_string());
        args.push(v.to_string());
        args.push("=".to_string());
    }
    Ok(Args { args, json: false })
}

/// ARG: `name`, `name=`, `name=value`, several per line.
pub(crate) fn parse_name_or_name_val(rest: &str, escape: char) -> Args {
    Args {
        args: parse_words(rest, escape),
        json: false,
    }
}

/// FROM, EXPOSE and the non-JSON form of ADD/COPY/VOLUME.
pub(crate) fn parse_strings_whitespace_delimited(rest: &str) -> Args {
    if rest.is_empty() {
        return Args::default();
    }
    Args {
        args: split_ws(rest, -1),
        json: false,
    }
}

/// MAINTAINER, STOPSIGNAL, USER, WORKDIR: the whole text as one argument.
pub(crate) fn parse_string(rest: &str) -> Args {
    if rest.is_empty() {
        return Args::default();
    }
    Args {
        args: vec![rest.to_string()],
        json: false,
    }
}

/// RUN, CMD, ENTRYPOINT, SHELL: JSON exec form, else the whole text.
pub(crate) fn parse_maybe_json(rest: &str) -> Result<Args, String> {
    if rest.is_empty() {
        return Ok(Args::default());
    }
    match parse_json_array(rest) {
        JsonArgs::Strings(args) => Ok(Args { args, json: true }),
        JsonArgs::NotStrings => Err(ERR_NOT_STRING_ARRAY.to_string()),
        JsonArgs::NotJson => Ok(Args {
            args: vec![rest.to_string()],
            json: false,
        }),
    }
}

/// ADD, COPY, VOLUME: JSON form, else whitespace-separated words.
pub(crate) fn parse_maybe_json_to_list(rest: &str) -> Result<Args, String> {
    match parse_json_array(rest) {
        JsonArgs::Strings(args) => Ok(Args { args, json: true }),
        JsonArgs::NotStrings => Err(ERR_NOT_STRING_ARRAY.to_string()),
        JsonArgs::NotJson => Ok(parse_strings_whitespace_delimited(rest)),
    }
}

/// HEALTHCHECK: a type word (`CMD`, `NONE`) followed by a maybe-JSON command.
/// Scans bytes like BuildKit, so the split point is the same.
pub(crate) fn parse_health_config(rest: &str) -> Result<Args, String> {
    let b = rest.as_bytes();
    let sep = b.iter().position(|&c| is_space_byte(c)).unwrap_or(b.len());
    let next = b[sep..]
        .iter()
        .position(|&c| !is_space_byte(c))
        .map_or(b.len(), |p| sep + p);
    if sep == 0 {
        return Ok(Args::default());
    }
    let typ = String::from_utf8_lossy(&b[..sep]).into_owned();
    let cmd_text = String::from_utf8_lossy(&b[next..]);
    let cmd = parse_maybe_json(&cmd_text)?;
    let mut args = vec![typ];
    args.extend(cmd.args);
    Ok(Args {
        args,
        json: cmd.json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_like_buildkit() {
        // BuildKit's TestParseWords cases.
        let cases: &[(&str, &[&str])] = &[
            ("foo", &["foo"]),
            ("foo bar", &["foo", "bar"]),
            ("foo\\ bar", &["foo\\ bar"]),
            ("foo=bar", &["foo=bar"]),
            ("foo bar 'abc xyz'", &["foo", "bar", "'abc xyz'"]),
            ("foo bar \"abc xyz\"", &["foo", "bar", "\"abc xyz\""]),
            ("àöû", &["àöû"]),
            ("föo bàr \"âbc xÿz\"", &["föo", "bàr", "\"âbc xÿz\""]),
        ];
        for (input, expect) in cases {
            assert_eq!(parse_words(input, '\\'), *expect, "{input}");
        }
    }

    #[test]
    fn name_val_formats() {
        let old = parse_name_val("foo bar", "LABEL", '\\').unwrap();
        assert_eq!(old.args, ["foo", "bar", ""]);
        let new = parse_name_val("foo=bar thing=star", "LABEL", '\\').unwrap();
        assert_eq!(new.args, ["foo", "bar", "=", "thing", "star", "="]);
        assert_eq!(
            parse_name_val("foo", "ENV", '\\').unwrap_err(),
            "ENV must have two arguments"
        );
        assert_eq!(
            parse_name_val("a=b c", "ENV", '\\').unwrap_err(),
            "Syntax error - can't find = in \"c\". Must be of the form: name=value"
        );
    }

    #[test]
    fn go_regexp_split() {
        assert_eq!(split_ws("RUN  a b", 2), ["RUN", "a b"]);
        assert_eq!(split_ws("RUN", 2), ["RUN"]);
        assert_eq!(split_ws("", 2), [""]);
        assert_eq!(split_ws("a \t b\u{b}c", -1), ["a", "b", "c"]);
        assert_eq!(split_ws(" a", -1), ["", "a"]);
        assert_eq!(split_ws("a ", -1), ["a", ""]);
    }

    #[test]
    fn builder_flags() {
        let (args, flags) = extract_builder_flags("--from=a --chown=\"x y\" src dst", '\\');
        assert_eq!(flags, ["--from=a", "--chown=x y"]);
        assert_eq!(args, "src dst");
        let (args, flags) = extract_builder_flags("--a -- --b c", '\\');
        assert_eq!(flags, ["--a"]);
        assert_eq!(args, " --b c");
        let (args, flags) = extract_builder_flags("--", '\\');
        assert!(flags.is_empty());
        assert_eq!(args, "");
        // Bytes are taken as code points, like BuildKit's rune(line[pos]).
        let (_, flags) = extract_builder_flags("--x=é y", '\\');
        assert_eq!(flags, ["--x=\u{c3}\u{a9}"]);
    }

    #[test]
    fn healthcheck_forms() {
        assert_eq!(parse_health_config("NONE").unwrap().args, ["NONE"]);
        let h = parse_health_config("CMD [\"a\", \"b\"]").unwrap();
        assert_eq!(h.args, ["CMD", "a", "b"]);
        assert!(h.json);
        let h = parse_health_config("CMD  curl -f x").unwrap();
        assert_eq!(h.args, ["CMD", "curl -f x"]);
        assert!(!h.json);
        assert!(parse_health_config("").unwrap().args.is_empty());
    }

    #[test]
    fn lowercase_like_go() {
        assert_eq!(go_lower("RUN"), "run");
        assert_eq!(go_lower("\u{130}X"), "ix");
        assert_eq!(go_lower("ΣΑΣ"), "σασ");
    }
}
