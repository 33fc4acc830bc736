//! Finding heredoc markers (`<<EOF`, `<<-"EOF"`, `3<<EOF`) on an instruction
//! line, as BuildKit does: the line is split into shell words by BuildKit's
//! shell lexer (always with `\` as escape, no variables set and unset ones
//! kept verbatim), and every word matching `^(\d*)<<(-?)\s*([^<]*)$` is a
//! heredoc whose name is the rest, unquoted.
//!
//! The lexer here is a private, reduced copy of BuildKit's `shell.Lex`
//! behaviour for that one use (empty environment, `SkipUnsetEnv`); variable
//! expansion proper lives in the shell-word module.

use crate::ast::Heredoc;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

const ESCAPE: char = '\\';

/// Nesting of `${...}` / quotes the lexer follows before giving up. BuildKit
/// (Go, growable stacks) has no limit; a word nested this deep is treated as
/// a lexing error, which for heredoc detection means "no heredoc here".
const MAX_NESTING: usize = 256;

/// Text of a lexing error (only ever shown for heredoc names that fail the
/// second, unquoting pass).
#[derive(Debug)]
pub(crate) struct LexError(pub String);

/// Words of the current command, sharing one word buffer across nested
/// calls exactly like BuildKit's `shellWord.wordsBuffer` (a nested `${...}`
/// resets the word being built — kept for identical heredoc names).
#[derive(Default)]
struct Words {
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, buf: &mut String, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !buf.is_empty() {
                self.words.push(std::mem::take(buf));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(buf, ch);
        }
    }

    fn add_raw_char(&mut self, buf: &mut String, ch: char) {
        buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, buf: &mut String, s: &str) {
        for c in s.chars() {
            self.add_char(buf, c);
        }
    }

    fn add_raw_string(&mut self, buf: &mut String, s: &str) {
        buf.push_str(s);
        self.in_word = true;
    }

    fn get_words(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.words.push(std::mem::take(buf));
        }
        self.words
    }
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    raw_quotes: bool,
    raw_escapes: bool,
    words_buf: String,
    depth: usize,
}

impl Lexer {
    fn new(text: &str, raw_quotes: bool, raw_escapes: bool) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        // Go's text/scanner skips a byte-order mark at the very start.
        if chars.first() == Some(&'\u{feff}') {
            chars.remove(0);
        }
        Lexer {
            chars,
            pos: 0,
            raw_quotes,
            raw_escapes,
            words_buf: String::new(),
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn process_words(mut self) -> Result<Vec<String>, LexError> {
        let raw = self.raw_escapes;
        self.process_stop_on(None, raw).map(|(_, w)| w)
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), LexError> {
        if self.depth >= MAX_NESTING {
            return Err(LexError("word nested too deeply".into()));
        }
        self.depth += 1;
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), LexError> {
        let mut result = String::new();
        self.words_buf.clear();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                let w = words.get_words(&mut self.words_buf);
                return Ok((result, w));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&mut self.words_buf, &tmp);
                }
                '<' | '\'' | '"' => {
                    let tmp = match ch {
                        '<' => self.process_possible_heredoc(),
                        '\'' => self.process_single_quote()?,
                        _ => self.process_double_quote()?,
                    };
                    result.push_str(&tmp);
                    words.add_raw_string(&mut self.words_buf, &tmp);
                }
                _ => {
                    let mut ch = ch;
                    self.next();
                    if ch == ESCAPE {
                        if self.raw_escapes {
                            words.add_raw_char(&mut self.words_buf, ch);
                            result.push(ch);
                        }
                        match self.next() {
                            None => break,
                            Some(c) => ch = c,
                        }
                        words.add_raw_char(&mut self.words_buf, ch);
                    } else {
                        words.add_char(&mut self.words_buf, ch);
                    }
                    result.push(ch);
                }
            }
        }
        if let Some(stop) = stop {
            return Err(LexError(format!(
                "unexpected end of statement while looking for matching {stop}"
            )));
        }
        let w = words.get_words(&mut self.words_buf);
        Ok((result, w))
    }

    fn process_single_quote(&mut self) -> Result<String, LexError> {
        let mut result = String::new();
        let open = self.next();
        if self.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return Err(LexError(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    ))
                }
                Some('\'') => {
                    if self.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, LexError> {
        let mut result = String::new();
        let open = self.next();
        if self.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(LexError(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    ))
                }
                Some('"') => {
                    self.next();
                    if self.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(mut ch) => {
                    self.next();
                    if ch == ESCAPE {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == ESCAPE => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, LexError> {
        self.next(); // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            // No variable is ever set here, and unset ones stay verbatim.
            return Ok(format!("${name}"));
        }
        self.next(); // '{'
        match self.peek() {
            None => return Err(LexError("syntax error: missing '}'".into())),
            Some('{' | '}' | ':') => return Err(LexError("syntax error: bad substitution".into())),
            _ => {}
        }
        let name = self.process_name();
        let first = self.next();
        // Go's string(scanner.EOF) is the replacement character.
        let mut chs: String = first.unwrap_or('\u{fffd}').to_string();
        let mut ch = first;
        let mut null_is_unset = false;
        if ch == Some(':') {
            null_is_unset = true;
            ch = self.next();
            chs.push(ch.unwrap_or('\u{fffd}'));
        }
        match ch {
            Some('}') if !null_is_unset => Ok(format!("${{{name}}}")),
            _ if null_is_unset || matches!(ch, Some('+' | '-' | '?' | '#' | '%')) => {
                let raw_escapes = matches!(ch, Some('#' | '%'));
                if null_is_unset && raw_escapes {
                    return Err(LexError(format!(
                        "unsupported modifier ({chs}) in substitution"
                    )));
                }
                let word = match self.process_stop_on(Some('}'), raw_escapes) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(LexError("syntax error: missing '}'".into()));
                        }
                        return Err(e);
                    }
                };
                Ok(format!("${{{name}{chs}{word}}}"))
            }
            Some('/') => {
                if self.peek() == Some('/') {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(LexError("syntax error: missing '/' in ${}".into()));
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(LexError("syntax error: missing '}'".into()));
                        }
                        return Err(e);
                    }
                };
                Ok(format!("${{{name}/{pattern}/{replacement}}}"))
            }
            _ => Err(LexError(format!(
                "unsupported modifier ({chs}) in substitution"
            ))),
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_go_digit(ch) {
                while let Some(d) = self.peek().filter(|&c| is_go_digit(c)) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !is_go_letter(ch) && !is_go_digit(ch) && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.next();
        let mut result = String::from("<<");
        while let Some(c) = self.peek().filter(|c| matches!(c, '\t' | '\r' | ' ')) {
            result.push(c);
            self.next();
        }
        result
    }
}

/// Go's `unicode.IsDigit`: general category Nd.
fn is_go_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.general_category() == GeneralCategory::DecimalNumber)
}

/// Go's `unicode.IsLetter`: general category L.
fn is_go_letter(c: char) -> bool {
    c.is_ascii_alphabetic()
        || (!c.is_ascii() && c.general_category_group() == GeneralCategoryGroup::Letter)
}

/// BuildKit's `ParseHeredoc`: a heredoc if `word` is a heredoc marker.
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, LexError> {
    // ^(\d*)<<(-?)\s*([^<]*)$  (\d ASCII, \s = [\t\n\f\r ])
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(a) => (true, a),
        None => (false, after),
    };
    let rest = after.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if rest.contains('<') {
        return Ok(None);
    }
    if rest.is_empty() {
        return Ok(None);
    }
    // Go ignores the ParseUint error: empty -> 0, overflow -> max.
    let fd = if digits == 0 {
        0
    } else {
        word[..digits].parse::<u32>().unwrap_or(u32::MAX)
    };

    let words = Lexer::new(rest, false, false).process_words()?;
    if words.len() != 1 {
        return Ok(None);
    }
    let words_raw = Lexer::new(rest, true, false).process_words()?;
    if words_raw.len() != words.len() {
        return Err(LexError(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        )));
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let expand = quotes(&words[0]) == quotes(&words_raw[0]);
    Ok(Some(Heredoc {
        name: words[0].clone(),
        file_descriptor: fd,
        expand,
        chomp,
        content: String::new(),
    }))
}

/// BuildKit's `heredocsFromLine`: every heredoc marker on the line, in order.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, LexError> {
    // Lexing errors here mean "no words" in BuildKit (the error is dropped).
    let words = Lexer::new(line, true, true)
        .process_words()
        .unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(h) = parse_heredoc(&word)? {
            docs.push(h);
        }
    }
    Ok(docs)
}

/// Strips leading tabs from every line of a `<<-` heredoc body (BuildKit's
/// `ChompHeredocContent`; the parser itself stores the body unchanged).
pub fn chomp_heredoc_content(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<String> {
        heredocs_from_line(line)
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect()
    }

    #[test]
    fn heredoc_helpers_like_buildkit() {
        for src in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"] {
            assert!(parse_heredoc(src).unwrap().is_none(), "{src:?}");
        }
        for src in [
            "<<EOF",
            "<<'EOF'",
            "<<\"EOF\"",
            "<<-EOF",
            "<<-'EOF'",
            "<<-\"EOF\"",
            "<<EO\"F\"",
            "<< EOF",
            "<<- EOF",
        ] {
            assert_eq!(parse_heredoc(src).unwrap().unwrap().name, "EOF", "{src:?}");
        }
        for src in ["<<'EOF", "<<\"EOF", "<<EOF'", "<<EOF\""] {
            assert!(parse_heredoc(src).is_err(), "{src:?}");
        }
    }

    #[test]
    fn heredocs_from_lines() {
        assert_eq!(names("RUN <<EOF"), ["EOF"]);
        assert_eq!(names("RUN <<-EOF"), ["EOF"]);
        // `<<-` then a space splits into two words: no heredoc (BuildKit's own
        // test for this line only checks the names it gets, which are none).
        assert!(names("RUN <<- EOF").is_empty());
        assert_eq!(names("RUN << -EOF"), ["-EOF"]);
        assert_eq!(names("RUN <<'EOF'"), ["EOF"]);
        assert_eq!(names("RUN 4<<EOF"), ["EOF"]);
        assert_eq!(names("RUN <<EOF <<EOF2"), ["EOF", "EOF2"]);
        assert!(names("RUN '<<EOF'").is_empty());
        assert!(names("RUN \"<<EOF\"").is_empty());
        let h = heredocs_from_line("RUN 3<<-'X'").unwrap();
        assert_eq!(
            (h[0].file_descriptor, h[0].chomp, h[0].expand),
            (3, true, false)
        );
    }

    #[test]
    fn quoting_decides_expansion() {
        let one = |w: &str| parse_heredoc(w).unwrap().unwrap();
        assert!(!one("<<eo'f'").expand);
        assert_eq!(one("<<eo'f'").name, "eof");
        assert!(one("<<eo\\'f").expand);
        assert_eq!(one("<<eo\\'f").name, "eo'f");
        assert!(!one("<<'e'o\\'f").expand);
        assert_eq!(one("<<$EOF").name, "$EOF");
    }

    #[test]
    fn deep_nesting_is_no_heredoc_and_no_overflow() {
        let line = format!("RUN <<EOF {}", "${a:-".repeat(10_000));
        assert!(heredocs_from_line(&line).unwrap().is_empty());
    }

    #[test]
    fn chomp() {
        assert_eq!(
            chomp_heredoc_content("\thello\n\t\tworld\n"),
            "hello\nworld\n"
        );
    }
}
