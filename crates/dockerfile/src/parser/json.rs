//! The JSON (exec) form of an instruction: `["a", "b"]`, decoded the way Go's
//! `encoding/json` decodes into `[]any` — which is what decides, in BuildKit,
//! between "exec form", "string form fallback" and "error".
//!
//! Written as an iterative validator plus a top-level element walker, so deep
//! nesting cannot overflow the stack (Go's limit of 10000 levels is kept).

/// Outcome of trying to read `rest` as a JSON array of strings.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JsonArgs {
    /// A valid JSON array whose elements are all strings.
    Strings(Vec<String>),
    /// Valid JSON array, but some element is not a string: an error in BuildKit.
    NotStrings,
    /// Not a JSON array at all (or invalid JSON): BuildKit falls back to the string form.
    NotJson,
}

/// Go's `encoding/json` nesting limit.
const MAX_DEPTH: usize = 10_000;

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// BuildKit's `parseJSON`: leading Unicode whitespace is skipped, the text must
/// start with `[`, and the whole text must be one JSON value (trailing JSON
/// whitespace allowed).
pub(crate) fn parse_json_array(rest: &str) -> JsonArgs {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return JsonArgs::NotJson;
    }
    let b = rest.as_bytes();
    let mut p = Parser { b, i: 0 };
    match p.top_level_array() {
        Ok(v) => v,
        Err(()) => JsonArgs::NotJson,
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

type Res<T> = Result<T, ()>;

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.i += 1;
        }
    }

    /// `[ elem, ... ]` followed only by whitespace. Elements that are strings
    /// are decoded; any other element makes the result `NotStrings` — unless
    /// decoding fails somewhere (a number out of float64 range), which Go
    /// reports as an error of its own, i.e. `NotJson` here.
    fn top_level_array(&mut self) -> Res<JsonArgs> {
        self.i += 1; // '['
        let mut out = Vec::new();
        let mut all_strings = true;
        let mut number_overflow = false;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
        } else {
            loop {
                self.skip_ws();
                if self.peek() == Some(b'"') {
                    out.push(self.string()?);
                } else {
                    all_strings = false;
                    if !self.value(&mut number_overflow)? {
                        return Err(());
                    }
                }
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b']') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(()),
                }
            }
        }
        self.skip_ws();
        if self.i != self.b.len() || number_overflow {
            return Err(());
        }
        Ok(if all_strings {
            JsonArgs::Strings(out)
        } else {
            JsonArgs::NotStrings
        })
    }

    /// Validates one JSON value of any kind without recursion. Returns
    /// `Ok(false)` on a syntax error at the value's start (the caller errors).
    fn value(&mut self, number_overflow: &mut bool) -> Res<bool> {
        // Stack of open containers: true = object, false = array.
        let mut stack: Vec<bool> = Vec::new();
        loop {
            // Expect a value here.
            self.skip_ws();
            match self.peek() {
                Some(b'{') => {
                    self.i += 1;
                    if stack.len() + 2 > MAX_DEPTH {
                        return Err(());
                    }
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                    } else {
                        stack.push(true);
                        self.object_key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    if stack.len() + 2 > MAX_DEPTH {
                        return Err(());
                    }
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                    } else {
                        stack.push(false);
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => {
                    if self.number()? {
                        *number_overflow = true;
                    }
                }
                _ => return Err(()),
            }
            // After a value: close containers or move to the next element.
            loop {
                let Some(&is_obj) = stack.last() else {
                    return Ok(true);
                };
                self.skip_ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if is_obj {
                            self.skip_ws();
                            self.object_key()?;
                        }
                        break;
                    }
                    Some(b'}') if is_obj => {
                        self.i += 1;
                        stack.pop();
                    }
                    Some(b']') if !is_obj => {
                        self.i += 1;
                        stack.pop();
                    }
                    _ => return Err(()),
                }
            }
        }
    }

    /// `"key" :` inside an object.
    fn object_key(&mut self) -> Res<()> {
        self.skip_ws();
        if self.peek() != Some(b'"') {
            return Err(());
        }
        self.string()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(());
        }
        self.i += 1;
        Ok(())
    }

    fn literal(&mut self, lit: &[u8]) -> Res<()> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(())
        }
    }

    /// A JSON number; returns true when it does not fit a float64 (Go's
    /// decoder reports that as an error after decoding everything else).
    fn number(&mut self) -> Res<bool> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                }
            }
            _ => return Err(()),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(());
            }
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(());
            }
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
            }
        }
        let text = std::str::from_utf8(&self.b[start..self.i]).map_err(|_| ())?;
        let v: f64 = text.parse().map_err(|_| ())?;
        Ok(v.is_infinite())
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let s = self.b.get(at..at + 4)?;
        let mut v = 0u32;
        for &c in s {
            v = v * 16 + (c as char).to_digit(16)?;
        }
        Some(v)
    }

    /// A JSON string, decoded as Go does (invalid surrogates become U+FFFD).
    fn string(&mut self) -> Res<String> {
        self.i += 1; // opening quote
        let mut out = String::new();
        let mut run_start = self.i;
        loop {
            let Some(c) = self.peek() else {
                return Err(());
            };
            match c {
                b'"' => {
                    out.push_str(std::str::from_utf8(&self.b[run_start..self.i]).map_err(|_| ())?);
                    self.i += 1;
                    return Ok(out);
                }
                0..=0x1f => return Err(()),
                b'\\' => {
                    out.push_str(std::str::from_utf8(&self.b[run_start..self.i]).map_err(|_| ())?);
                    self.i += 1;
                    let e = self.peek().ok_or(())?;
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let r = self.hex4(self.i).ok_or(())?;
                            self.i += 4;
                            if (0xd800..0xe000).contains(&r) {
                                // A surrogate: valid only as a high+low pair.
                                let pair = if self.b.get(self.i..self.i + 2) == Some(b"\\u") {
                                    self.hex4(self.i + 2)
                                } else {
                                    None
                                };
                                match pair {
                                    Some(r2)
                                        if (0xd800..0xdc00).contains(&r)
                                            && (0xdc00..0xe000).contains(&r2) =>
                                    {
                                        let cp = 0x10000 + ((r - 0xd800) << 10) + (r2 - 0xdc00);
                                        out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                                        self.i += 6;
                                    }
                                    _ => out.push('\u{fffd}'),
                                }
                            } else {
                                out.push(char::from_u32(r).unwrap_or('\u{fffd}'));
                            }
                        }
                        _ => return Err(()),
                    }
                    run_start = self.i;
                }
                _ => self.i += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> JsonArgs {
        JsonArgs::Strings(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn valid_arrays_of_strings() {
        // BuildKit's json_test.go cases.
        assert_eq!(parse_json_array("[]"), strings(&[]));
        assert_eq!(parse_json_array(r#"[""]"#), strings(&[""]));
        assert_eq!(parse_json_array(r#"["a"]"#), strings(&["a"]));
        assert_eq!(parse_json_array(r#"["a","b"]"#), strings(&["a", "b"]));
        assert_eq!(parse_json_array(r#"[ "a", "b" ]"#), strings(&["a", "b"]));
        assert_eq!(
            parse_json_array("[\t\"a\",\t\"b\"\t]"),
            strings(&["a", "b"])
        );
        assert_eq!(
            parse_json_array("\t[\t\"a\",\t\"b\"\t]\t"),
            strings(&["a", "b"])
        );
        assert_eq!(
            parse_json_array(r#"["abc 123", "♥", "☃", "\" \\ \/ \b \f \n \r \t \u0000"]"#),
            strings(&["abc 123", "♥", "☃", "\" \\ / \u{8} \u{c} \n \r \t \u{0}"])
        );
        assert_eq!(
            parse_json_array(r#"["\ud83d\ude00", "\ud800x"]"#),
            strings(&["😀", "\u{fffd}x"])
        );
    }

    #[test]
    fn arrays_with_non_strings() {
        for j in [
            r#"["a",42,"b"]"#,
            r#"["a",123.456,"b"]"#,
            r#"["a",{},"b"]"#,
            r#"["a",{"c": "d"},"b"]"#,
            r#"["a",["c"],"b"]"#,
            r#"["a",true,"b"]"#,
            r#"["a",false,"b"]"#,
            r#"["a",null,"b"]"#,
        ] {
            assert_eq!(parse_json_array(j), JsonArgs::NotStrings, "{j}");
        }
    }

    #[test]
    fn not_json() {
        for j in [
            "",
            "echo [",
            "['a']",
            r#"["a""#,
            r#"["a"] x"#,
            r#"["a", 1e999]"#,
            r#"["a",]"#,
            r#"["\x"]"#,
            "[01]",
            "[\"a\nb\"]",
        ] {
            assert_eq!(parse_json_array(j), JsonArgs::NotJson, "{j}");
        }
    }

    #[test]
    fn deep_nesting_is_not_a_stack_overflow() {
        let deep = format!("[{}{}]", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(parse_json_array(&deep), JsonArgs::NotStrings);
        let too_deep = format!("[{}{}]", "[".repeat(20000), "]".repeat(20000));
        assert_eq!(parse_json_array(&too_deep), JsonArgs::NotJson);
    }
}
