//! Shell-word expansion as BuildKit's Dockerfile frontend does it
//! (`frontend/dockerfile/shell`, `shell.Lex`).
//!
//! This is not a shell: it removes quotes, applies escapes and expands
//! `$name`, `${name}` and the `${name<modifier>word}` forms below, nothing else
//! (no command substitution, no arithmetic, no globbing of file names).
//!
//! | form | result |
//! |---|---|
//! | `${v:-w}` / `${v-w}` | `w` if `v` is unset or empty / unset, else `$v` |
//! | `${v:+w}` / `${v+w}` | `w` if `v` is set and non-empty / set, else empty |
//! | `${v:?m}` / `${v?m}` | error `v: m` if `v` is unset or empty / unset |
//! | `${v#p}` / `${v##p}` | `$v` without its shortest / longest prefix matching `p` |
//! | `${v%p}` / `${v%%p}` | `$v` without its shortest / longest suffix matching `p` |
//! | `${v/p/r}` / `${v//p/r}` | first / every match of `p` in `$v` replaced by `r` |
//!
//! Patterns `p` are BuildKit's shell globs: `*` (any run of characters),
//! `?` (one character), `\*`, `\?`, `\\` for the literal characters, and `\}`
//! and `\/` for a literal `}` and `/` inside `${}`. Bracket expressions are not
//! supported (they are literal characters), and — as in BuildKit, whose globs
//! are Go regular expressions — `*` and `?` never match a newline.
//!
//! Quirks of BuildKit that are reproduced on purpose because Dockerfile
//! results depend on them:
//! - `${v` (no modifier before the end) reports
//!   `unsupported modifier (\u{FFFD}) in substitution`, not a missing brace;
//! - in word splitting ([`Lexer::process_words`]) a `${v<modifier>word}` form
//!   discards the unsplit text accumulated before it in the same word
//!   (`a${x:-b}` splits to `["b"]`), because BuildKit shares one word buffer
//!   between nested expansions;
//! - in `${v//p/r}` the replacement `r` is a Go regexp template: `$$` is `$`,
//!   `$0`/`${0}` is the matched text and any other `$name` is empty.
//!   `${v/p/r}` (first match only) inserts `r` literally.
//!
//! Names are read as BuildKit does: a run of digits (`$123`), one special
//! parameter character (`$@ $* $# $? $- $$ $! $0`), or letters, digits and `_`.
//! Non-ASCII letters and digits are classified with Rust's `char::is_alphabetic`
//! and `char::is_numeric`, which accept a few more code points than Go's
//! `unicode.IsLetter`/`IsDigit` (letter numbers such as `Ⅻ`, fractions).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::iter::Peekable;
use std::str::Chars;

/// Variables visible to an expansion.
pub trait Env {
    /// The value of `name`, or `None` when it is not set. Names are
    /// case-sensitive (BuildKit on Unix).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Env for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// An ordered list of assignments; a name assigned more than once has its
/// last value, as in BuildKit's environment lists.
impl Env for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl<T: Env + ?Sized> Env for &T {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

/// An environment in which no variable is set.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl Env for NoEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// A failed expansion. The message is BuildKit's, including its
/// `failed to process "<word>": ` prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ShellError {
    pub message: String,
}

/// The result of [`Lexer::process_word_with_matches`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word, quotes removed.
    pub result: String,
    /// Names that were looked up and set (possibly to the empty string).
    pub matched: BTreeSet<String>,
    /// Names that were looked up and not set.
    pub unmatched: BTreeSet<String>,
}

/// Expands shell words: BuildKit's `shell.Lex`.
///
/// The public fields are BuildKit's options of the same names; all are off
/// for [`Lexer::new`], which is what Dockerfile instructions use.
#[derive(Debug, Clone)]
pub struct Lexer {
    escape: char,
    /// Keep the quote characters of `'…'` and `"…"` in the result
    /// (BuildKit `RawQuotes`).
    pub raw_quotes: bool,
    /// Keep escape characters in the result (BuildKit `RawEscapes`).
    pub raw_escapes: bool,
    /// Treat `'` and `"` as ordinary characters (BuildKit `SkipProcessQuotes`).
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written, e.g. `$X`, `${X}`,
    /// `${X:-w}` (BuildKit `SkipUnsetEnv`).
    pub skip_unset_env: bool,
}

impl Lexer {
    /// A lexer using `escape` (`\` or `` ` ``, from the `# escape=` directive)
    /// as its escape character.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Builder form of [`Lexer::raw_quotes`].
    pub fn with_raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Builder form of [`Lexer::raw_escapes`].
    pub fn with_raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Builder form of [`Lexer::skip_process_quotes`].
    pub fn with_skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// Builder form of [`Lexer::skip_unset_env`].
    pub fn with_skip_unset_env(mut self, on: bool) -> Self {
        self.skip_unset_env = on;
        self
    }

    /// ProcessWord: expand one word (quotes removed), no splitting.
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ShellError> {
        self.run(word, env, true).map(|done| done.result)
    }

    /// ProcessWords: expand and split into words as BuildKit does. Splitting
    /// happens after expansion, on whitespace that is neither quoted nor
    /// escaped, and on whitespace produced by `$` expansions outside quotes.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ShellError> {
        self.run(word, env, false).map(|done| done.words)
    }

    /// Like process_word, also reporting which variable names were referenced and found
    /// (`matched`) and referenced but unset (`unmatched`) — used for cache keys (which build
    /// args a step uses) and the UndefinedVar lint.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &dyn Env,
    ) -> Result<Expansion, ShellError> {
        let done = self.run(word, env, true)?;
        Ok(Expansion {
            result: done.result,
            matched: done.matched,
            unmatched: done.unmatched,
        })
    }

    /// Expands every word of `words` with [`Lexer::process_word_with_matches`],
    /// collecting the names used by any of them. Stops at the first error.
    pub fn process_all_with_matches<S: AsRef<str>>(
        &self,
        words: &[S],
        env: &dyn Env,
    ) -> Result<ExpandedWords, ShellError> {
        let mut all = ExpandedWords::default();
        for word in words {
            let one = self.process_word_with_matches(word.as_ref(), env)?;
            all.words.push(one.result);
            all.matched.extend(one.matched);
            all.unmatched.extend(one.unmatched);
        }
        Ok(all)
    }

    fn run(&self, word: &str, env: &dyn Env, capture: bool) -> Result<Finished, ShellError> {
        let mut expander = Expander {
            lexer: self,
            env,
            input: Input::new(word),
            raw_escapes: self.raw_escapes,
            capture,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            word_buf: String::new(),
        };
        match expander.process_until(None, self.raw_escapes) {
            Ok((result, words)) => Ok(Finished {
                result,
                words,
                matched: expander.matched,
                unmatched: expander.unmatched,
            }),
            Err(cause) => Err(ShellError {
                message: format!("failed to process {}: {cause}", go_quote(word)),
            }),
        }
    }
}

impl Default for Lexer {
    /// A lexer with the default escape character `\`.
    fn default() -> Self {
        Lexer::new('\\')
    }
}

/// The result of [`Lexer::process_all_with_matches`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpandedWords {
    /// Each input word expanded, in order.
    pub words: Vec<String>,
    /// Names found set by any of the words.
    pub matched: BTreeSet<String>,
    /// Names found unset by any of the words.
    pub unmatched: BTreeSet<String>,
}

struct Finished {
    result: String,
    words: Vec<String>,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

/// Character input with one character of look-ahead. Like Go's
/// `text/scanner`, a byte-order mark at the very start is skipped.
struct Input<'a> {
    chars: Peekable<Chars<'a>>,
}

impl<'a> Input<'a> {
    fn new(text: &'a str) -> Self {
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        Input {
            chars: text.chars().peekable(),
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn next(&mut self) -> Option<char> {
        self.chars.next()
    }

    fn at_end(&mut self) -> bool {
        self.chars.peek().is_none()
    }
}

/// How Go prints the end-of-input "character" (`string(rune(-1))`).
const END_CHAR: char = '\u{FFFD}';

/// Word splitting state for one level of processing. The text of the word
/// being built lives in [`Expander::word_buf`], shared between levels (see
/// the module documentation).
#[derive(Default)]
struct Words {
    done: Vec<String>,
    in_word: bool,
}

impl Words {
    /// Adds a character that splits words when it is whitespace.
    fn add_char(&mut self, buf: &mut String, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !buf.is_empty() {
                self.done.push(std::mem::take(buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(buf, ch);
        }
    }

    fn add_raw_char(&mut self, buf: &mut String, ch: char) {
        buf.push(ch);
        self.in_word = true;
    }

    fn add_str(&mut self, buf: &mut String, text: &str) {
        for ch in text.chars() {
            self.add_char(buf, ch);
        }
    }

    fn add_raw_str(&mut self, buf: &mut String, text: &str) {
        buf.push_str(text);
        self.in_word = true;
    }

    fn finish(mut self, buf: &mut String) -> Vec<String> {
        if !buf.is_empty() {
            self.done.push(std::mem::take(buf));
        }
        self.done
    }
}

struct Expander<'a> {
    lexer: &'a Lexer,
    env: &'a dyn Env,
    input: Input<'a>,
    raw_escapes: bool,
    capture: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    word_buf: String,
}

type Step<T> = Result<T, String>;

impl Expander<'_> {
    /// Processes input up to `stop` (consumed) or, for `None`, to the end.
    /// Returns the expanded text and its split words.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Step<(String, Vec<String>)> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw_escapes);
        let outcome = self.process_until_inner(stop);
        self.raw_escapes = saved;
        outcome
    }

    fn process_until_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        self.word_buf.clear();
        let mut words = Words::default();
        let quotes = !self.lexer.skip_process_quotes;

        while let Some(ch) = self.input.peek() {
            if Some(ch) == stop {
                self.input.next();
                return Ok((result, words.finish(&mut self.word_buf)));
            }
            match ch {
                '$' => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                    words.add_str(&mut self.word_buf, &value);
                }
                '<' => {
                    let text = self.possible_heredoc();
                    result.push_str(&text);
                    words.add_raw_str(&mut self.word_buf, &text);
                }
                '\'' if quotes => {
                    let text = self.single_quoted()?;
                    result.push_str(&text);
                    words.add_raw_str(&mut self.word_buf, &text);
                }
                '"' if quotes => {
                    let text = self.double_quoted()?;
                    result.push_str(&text);
                    words.add_raw_str(&mut self.word_buf, &text);
                }
                _ => {
                    self.input.next();
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            words.add_raw_char(&mut self.word_buf, ch);
                            result.push(ch);
                        }
                        // The escape escapes anything, except the end of input.
                        let Some(escaped) = self.input.next() else {
                            break;
                        };
                        words.add_raw_char(&mut self.word_buf, escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(&mut self.word_buf, ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish(&mut self.word_buf)))
    }

    /// `'…'`: every character literal, no escapes.
    fn single_quoted(&mut self) -> Step<String> {
        let mut text = String::new();
        let open = self.input.next();
        if self.lexer.raw_quotes {
            text.extend(open);
        }
        loop {
            match self.input.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    )
                }
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        text.push('\'');
                    }
                    return Ok(text);
                }
                Some(ch) => text.push(ch),
            }
        }
    }

    /// `"…"`: `$` expands; the escape character escapes only `"`, `$` and
    /// itself and is otherwise literal.
    fn double_quoted(&mut self) -> Step<String> {
        let mut text = String::new();
        let open = self.input.next();
        if self.lexer.raw_quotes {
            text.extend(open);
        }
        loop {
            match self.input.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_string(),
                    )
                }
                Some('"') => {
                    self.input.next();
                    if self.lexer.raw_quotes {
                        text.push('"');
                    }
                    return Ok(text);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    text.push_str(&value);
                }
                Some(_) => {
                    let Some(mut ch) = self.input.next() else {
                        continue;
                    };
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            text.push(ch);
                        }
                        match self.input.peek() {
                            // An escape before the end: the loop reports the
                            // missing quote.
                            None => continue,
                            Some(next)
                                if next == '"' || next == '$' || next == self.lexer.escape =>
                            {
                                self.input.next();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    text.push(ch);
                }
            }
        }
    }

    /// `<<` (and the blanks after it) is kept as one unsplittable piece so
    /// that heredoc markers survive word splitting.
    fn possible_heredoc(&mut self) -> String {
        self.input.next();
        if self.input.peek() != Some('<') {
            return "<".to_string();
        }
        self.input.next();
        let mut text = "<<".to_string();
        while let Some(ch @ ('\t' | '\r' | ' ')) = self.input.peek() {
            text.push(ch);
            self.input.next();
        }
        text
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        let found = self.env.lookup(name).map(str::to_string);
        if self.capture {
            let set = if found.is_some() {
                &mut self.matched
            } else {
                &mut self.unmatched
            };
            set.insert(name.to_string());
        }
        found
    }

    /// A name after `$` or `${`: digits, one special parameter, or letters,
    /// digits and underscores. Empty when none is there.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.input.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(digit) = self.input.peek().filter(|c| c.is_numeric()) {
                    name.push(digit);
                    self.input.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.input.next();
                name.push(ch);
                return name;
            }
            if !(ch.is_alphabetic() || ch.is_numeric() || ch == '_') {
                break;
            }
            self.input.next();
            name.push(ch);
        }
        name
    }

    /// Expands a `$…` starting at the `$`.
    fn dollar(&mut self) -> Step<String> {
        self.input.next();

        if self.input.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }

        self.input.next();
        match self.input.peek() {
            None => return Err("syntax error: missing '}'".to_string()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_string()),
            Some(_) => {}
        }
        let name = self.name();
        let modifier = self.input.next();
        match modifier {
            Some('}') => Ok(match self.lookup(&name) {
                Some(value) => value,
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':') => {
                let op = self.input.next();
                let spelled = format!(":{}", op.unwrap_or(END_CHAR));
                if matches!(op, Some('#' | '%')) {
                    return Err(format!("unsupported modifier ({spelled}) in substitution"));
                }
                self.modified(&name, op, &spelled, true)
            }
            Some(op @ ('+' | '-' | '?' | '#' | '%')) => {
                self.modified(&name, Some(op), &op.to_string(), false)
            }
            Some('/') => self.replaced(&name),
            other => Err(format!(
                "unsupported modifier ({}) in substitution",
                other.unwrap_or(END_CHAR)
            )),
        }
    }

    /// `${name<op>word}` after the operator; `spelled` is the operator as
    /// written (with its `:` if any), `empty_is_unset` whether it had one.
    fn modified(
        &mut self,
        name: &str,
        op: Option<char>,
        spelled: &str,
        empty_is_unset: bool,
    ) -> Step<String> {
        let pattern_word = matches!(op, Some('#' | '%'));
        let word = match self.process_until(Some('}'), pattern_word) {
            Ok((word, _)) => word,
            Err(_) if self.input.at_end() => return Err("syntax error: missing '}'".to_string()),
            Err(err) => return Err(err),
        };

        let value = match self.lookup(name) {
            Some(value) => Some(value),
            None if self.lexer.skip_unset_env => return Ok(format!("${{{name}{spelled}{word}}}")),
            None => None,
        };
        let set = value.is_some();
        let value = value.unwrap_or_default();
        let unset_or_empty = !set || (empty_is_unset && value.is_empty());

        match op {
            Some('-') => Ok(if unset_or_empty { word } else { value }),
            Some('+') => Ok(if unset_or_empty { String::new() } else { word }),
            Some('?') => {
                if !set {
                    let message = if word.is_empty() {
                        "is not allowed to be unset"
                    } else {
                        &word
                    };
                    return Err(format!("{name}: {message}"));
                }
                if empty_is_unset && value.is_empty() {
                    let message = if word.is_empty() {
                        "is not allowed to be empty"
                    } else {
                        &word
                    };
                    return Err(format!("{name}: {message}"));
                }
                Ok(value)
            }
            Some(op @ ('#' | '%')) => {
                // `##`/`%%` remove the longest match, `#`/`%` the shortest.
                let (greedy, pattern) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                if op == '%' {
                    trim_suffix(pattern, &value, greedy)
                } else {
                    trim_prefix(pattern, &value, greedy)
                }
            }
            _ => Err(format!("unsupported modifier ({spelled}) in substitution")),
        }
    }

    /// `${name/pattern/replacement}` and `${name//pattern/replacement}`,
    /// after the first `/`.
    fn replaced(&mut self, name: &str) -> Step<String> {
        let all = self.input.peek() == Some('/');
        if all {
            self.input.next();
        }
        let pattern = match self.process_until(Some('/'), true) {
            Ok((pattern, _)) => pattern,
            Err(_) if self.input.at_end() => {
                return Err("syntax error: missing '/' in ${}".to_string())
            }
            Err(err) => return Err(err),
        };
        let replacement = match self.process_until(Some('}'), true) {
            Ok((replacement, _)) => replacement,
            Err(_) if self.input.at_end() => return Err("syntax error: missing '}'".to_string()),
            Err(err) => return Err(err),
        };

        let value = match self.lookup(name) {
            Some(value) => value,
            None if self.lexer.skip_unset_env => {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"))
            }
            None => String::new(),
        };
        let glob = Glob::parse(&pattern)
            .map_err(|err| format!("invalid pattern ({pattern}) in substitution: {err}"))?;
        let text: Vec<char> = value.chars().collect();
        if all {
            Ok(glob.replace_all(&text, &replacement))
        } else {
            Ok(match glob.find(&text, true) {
                Some((start, end)) => {
                    let mut out: String = text[..start].iter().collect();
                    out.push_str(&replacement);
                    out.extend(&text[end..]);
                    out
                }
                None => value,
            })
        }
    }
}

/// One element of a shell glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobToken {
    /// `*`: any run of characters other than newline.
    Star,
    /// `?`: one character other than newline.
    Any,
    Literal(char),
}

/// A shell glob, matched with the preferences of the Go regular expression
/// BuildKit builds from it (leftmost match; among matches starting there,
/// the one a backtracking matcher finds first).
#[derive(Debug, Clone)]
struct Glob {
    tokens: Vec<GlobToken>,
}

impl Glob {
    fn parse(pattern: &str) -> Result<Glob, String> {
        let pattern = pattern.strip_prefix('\u{FEFF}').unwrap_or(pattern);
        let mut chars = pattern.chars().peekable();
        let mut tokens = Vec::new();
        while let Some(ch) = chars.next() {
            tokens.push(match ch {
                '*' => GlobToken::Star,
                '?' => GlobToken::Any,
                '\\' => {
                    // `\}` and `\/` only protect the character from ending
                    // the `${}`; the backslash is not part of the pattern.
                    if matches!(chars.peek(), Some('}' | '/')) {
                        continue;
                    }
                    match chars.next() {
                        Some(escaped @ ('*' | '?' | '\\')) => GlobToken::Literal(escaped),
                        other => {
                            return Err(format!("invalid escape '\\{}'", other.unwrap_or(END_CHAR)))
                        }
                    }
                }
                other => GlobToken::Literal(other),
            });
        }
        Ok(Glob { tokens })
    }

    /// The end of the preferred match of the whole glob starting at `start`.
    /// `greedy` makes `*` prefer the longest run, otherwise the shortest.
    fn match_at(&self, text: &[char], start: usize, greedy: bool) -> Option<usize> {
        let mut failed = vec![false; (self.tokens.len() + 1) * (text.len() + 1)];
        self.match_from(text, 0, start, greedy, &mut failed)
    }

    fn match_from(
        &self,
        text: &[char],
        mut token: usize,
        mut pos: usize,
        greedy: bool,
        failed: &mut [bool],
    ) -> Option<usize> {
        let width = text.len() + 1;
        loop {
            match self.tokens.get(token) {
                None => return Some(pos),
                Some(GlobToken::Literal(want)) => {
                    if text.get(pos) != Some(want) {
                        return None;
                    }
                }
                Some(GlobToken::Any) => {
                    if matches!(text.get(pos), None | Some('\n')) {
                        return None;
                    }
                }
                Some(GlobToken::Star) => {
                    let run = text[pos..].iter().take_while(|&&c| c != '\n').count();
                    let mut try_len = |len: usize| {
                        let state = (token + 1) * width + pos + len;
                        if failed[state] {
                            return None;
                        }
                        let found = self.match_from(text, token + 1, pos + len, greedy, failed);
                        if found.is_none() {
                            failed[state] = true;
                        }
                        found
                    };
                    return if greedy {
                        (0..=run).rev().find_map(&mut try_len)
                    } else {
                        (0..=run).find_map(&mut try_len)
                    };
                }
            }
            token += 1;
            pos += 1;
        }
    }

    /// The leftmost match (start, end) in `text`, searching from `from`.
    fn find_from(&self, text: &[char], from: usize, greedy: bool) -> Option<(usize, usize)> {
        (from..=text.len())
            .find_map(|start| self.match_at(text, start, greedy).map(|end| (start, end)))
    }

    fn find(&self, text: &[char], greedy: bool) -> Option<(usize, usize)> {
        self.find_from(text, 0, greedy)
    }

    /// Go's `Regexp.ReplaceAllString` with this glob as the expression:
    /// non-overlapping matches, an empty match right after a match is
    /// skipped, and `template` is expanded per match (see [`expand_template`]).
    fn replace_all(&self, text: &[char], template: &str) -> String {
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= text.len() {
            let Some((start, end)) = self.find_from(text, search, true) else {
                break;
            };
            out.extend(&text[last_end..start]);
            if end > last_end || start == 0 {
                let matched: String = text[start..end].iter().collect();
                expand_template(&mut out, template, &matched);
            }
            last_end = end;
            search = if end <= search { search + 1 } else { end };
        }
        out.extend(&text[last_end.min(text.len())..]);
        out
    }
}

/// Expands a Go regexp replacement template for an expression without
/// capture groups: `$$` is `$`, `$0`/`${0}` the whole match, any other
/// `$name`/`${name}` empty, and a `$` not followed by a name is literal.
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let (braced, body) = match rest.strip_prefix('{') {
            Some(body) => (true, body),
            None => (false, rest),
        };
        let name_len: usize = body
            .chars()
            .take_while(|c| c.is_alphabetic() || c.is_numeric() || *c == '_')
            .map(char::len_utf8)
            .sum();
        let name = &body[..name_len];
        let after_name = &body[name_len..];
        let remainder = if name.is_empty() {
            None
        } else if braced {
            after_name.strip_prefix('}')
        } else {
            Some(after_name)
        };
        let Some(remainder) = remainder else {
            // Malformed reference: the `$` is literal text.
            out.push('$');
            continue;
        };
        if name == "0" {
            out.push_str(matched);
        }
        rest = remainder;
    }
    out.push_str(rest);
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    let glob = Glob::parse(pattern)
        .map_err(|err| format!("invalid pattern ({pattern}) in substitution: {err}"))?;
    let text: Vec<char> = value.chars().collect();
    Ok(match glob.match_at(&text, 0, greedy) {
        Some(end) => text[end..].iter().collect(),
        None => value.to_string(),
    })
}

/// Removes a suffix by matching the reversed pattern against the reversed
/// value, as BuildKit does (a leftmost match is what regexps find).
fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    let reversed_value: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed_value, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern, keeping each `\x` escape pair in order (`a\*c` →
/// `c\*a`). A trailing lone backslash moves to the front.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut pieces: Vec<&[char]> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            pieces.push(&chars[i..i + 2]);
            i += 2;
        } else {
            pieces.push(&chars[i..i + 1]);
            i += 1;
        }
    }
    pieces.iter().rev().flat_map(|piece| piece.iter()).collect()
}

/// Quotes `text` as Go's `%q` does, for error messages.
fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            ' ' => out.push(' '),
            c if c.is_control()
                || c.is_whitespace()
                || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}') =>
            {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
