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
//! Size limits, which BuildKit does not have: an expansion may make a word at
//! most [`MAX_WORD_GROWTH`] (1 MiB) longer than it is written, and a glob is
//! refused when matching it would need more than [`MAX_GLOB_STATES`] states.
//! Without them `ARG A=$A$A` repeated doubles memory on every line. Callers
//! add up the growth of a stage's words and hold it to [`MAX_STAGE_GROWTH`].
//!
//! Names are read as BuildKit does: a run of digits (`$123`), one special
//! parameter character (`$@ $* $# $? $- $$ $! $0`), or letters, digits and `_`.
//! Letters and digits are Unicode general categories L and Nd, as Go's
//! `unicode.IsLetter` and `unicode.IsDigit` classify them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::iter::Peekable;
use std::str::Chars;

use crate::ast::go_quote;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

/// How much longer than its written text an expanded word may be: 1 MiB.
/// A variable's value is one expanded word, so this also bounds what an
/// ARG or ENV value can grow to. (A process cannot receive a single
/// environment string over 128 KiB anyway: Linux's `MAX_ARG_STRLEN`.)
pub const MAX_WORD_GROWTH: usize = 1 << 20;

/// How much the expansions of one stage may add to its text in total: 16 MiB,
/// counting the stages it is built on (their state is its starting point).
/// A stage keeps what its ENV, ARG, LABEL, USER, WORKDIR... values expand to
/// (environment, labels, history), so this bounds that memory however many
/// lines each grow by [`MAX_WORD_GROWTH`]. The ARGs before the first FROM
/// have a budget of their own of the same size.
pub const MAX_STAGE_GROWTH: usize = 16 << 20;

/// The most (star, position) states a `${v#p}`-style glob may need against
/// one value: its memo table holds one bit per state (2 MiB at most), and
/// its recursion is at most √ of this deep. Sixteen stars against a 1 MiB
/// value fit.
pub const MAX_GLOB_STATES: usize = 1 << 24;

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

    /// The lexer BuildKit uses for the contents of an expanding heredoc
    /// (`COPY <<EOF`, `ExpandRaw`): `\` as the escape character whatever the
    /// Dockerfile's `# escape=` says, quotes literal. Escapes are still
    /// processed: `\$` gives `$` and `\\` gives `\`.
    pub fn for_heredoc_contents() -> Self {
        Lexer::new('\\').with_skip_process_quotes(true)
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
            max_len: word.len().saturating_add(MAX_WORD_GROWTH),
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
    /// The longest text any part of this word may expand to.
    max_len: usize,
    raw_escapes: bool,
    capture: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    word_buf: String,
}

type Step<T> = Result<T, String>;

/// The error for a word whose expansion outgrew [`MAX_WORD_GROWTH`].
fn too_long() -> String {
    format!(
        "expanded word is more than {} MiB longer than written",
        MAX_WORD_GROWTH >> 20
    )
}

impl Expander<'_> {
    /// Fails once `text` (a word or part of one being built) is too long.
    fn check_len(&self, text: &str) -> Step<()> {
        if text.len() > self.max_len {
            return Err(too_long());
        }
        Ok(())
    }

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
                    self.check_len(&result)?;
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
                    self.check_len(&result)?;
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
                    self.check_len(&text)?;
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
            if name.is_empty() && is_digit(ch) {
                while let Some(digit) = self.input.peek().filter(|&c| is_digit(c)) {
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
            if !is_name_char(ch) {
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
            glob.replace_all(&text, &replacement, self.max_len)
        } else {
            Ok(match glob.matcher(&text, true)?.find_from(0) {
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
                // `**` matches what `*` matches, with the same preferences.
                '*' if tokens.last() == Some(&GlobToken::Star) => continue,
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

    /// A matcher of this glob against `text`. `greedy` makes `*` prefer the
    /// longest run, otherwise the shortest. Fails when its memo table would
    /// need more than [`MAX_GLOB_STATES`] states.
    fn matcher<'g>(&'g self, text: &'g [char], greedy: bool) -> Step<GlobMatcher<'g>> {
        let mut star_ordinal = vec![usize::MAX; self.tokens.len()];
        let mut stars = 0;
        for (token, ordinal) in self.tokens.iter().zip(&mut star_ordinal) {
            if *token == GlobToken::Star {
                *ordinal = stars;
                stars += 1;
            }
        }
        let states = stars.saturating_mul(text.len() + 1);
        if states > MAX_GLOB_STATES {
            return Err(format!(
                "pattern with {stars} '*' is too complex to match against {} characters",
                text.len()
            ));
        }
        Ok(GlobMatcher {
            tokens: &self.tokens,
            text,
            greedy,
            star_ordinal,
            failed: vec![0; states.div_ceil(64)],
        })
    }

    /// Go's `Regexp.ReplaceAllString` with this glob as the expression:
    /// non-overlapping matches, an empty match right after a match is
    /// skipped, and `template` is expanded per match (see [`expand_template`]).
    /// Fails once the result is longer than `max_len`.
    fn replace_all(&self, text: &[char], template: &str, max_len: usize) -> Step<String> {
        let mut matcher = self.matcher(text, true)?;
        let mut out = String::new();
        let mut last_end = 0;
        let mut search = 0;
        while search <= text.len() {
            let Some((start, end)) = matcher.find_from(search) else {
                break;
            };
            out.extend(&text[last_end..start]);
            if end > last_end || start == 0 {
                let matched: String = text[start..end].iter().collect();
                expand_template(&mut out, template, &matched, max_len)?;
            }
            if out.len() > max_len {
                return Err(too_long());
            }
            last_end = end;
            search = if end <= search { search + 1 } else { end };
        }
        out.extend(&text[last_end.min(text.len())..]);
        if out.len() > max_len {
            return Err(too_long());
        }
        Ok(out)
    }
}

/// Matches one glob against one text, remembering the (star, position)
/// states after which no match is possible, so that each is explored once
/// however many starting positions are tried: at most stars × positions
/// states, each trying at most every run length for a `*`.
struct GlobMatcher<'g> {
    tokens: &'g [GlobToken],
    text: &'g [char],
    greedy: bool,
    /// For each token that is a `*`, its number among the stars.
    star_ordinal: Vec<usize>,
    /// One bit per (star, position): continuing after that star, which
    /// ended at that position, cannot match.
    failed: Vec<u64>,
}

impl GlobMatcher<'_> {
    /// The end of the preferred match of the whole glob starting at `start`.
    fn match_at(&mut self, start: usize) -> Option<usize> {
        self.match_from(0, start)
    }

    /// The leftmost match (start, end), searching from `from`.
    fn find_from(&mut self, from: usize) -> Option<(usize, usize)> {
        (from..=self.text.len()).find_map(|start| self.match_at(start).map(|end| (start, end)))
    }

    fn match_from(&mut self, mut token: usize, mut pos: usize) -> Option<usize> {
        let text = self.text;
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
                    return if self.greedy {
                        (0..=run)
                            .rev()
                            .find_map(|len| self.after_star(token, pos + len))
                    } else {
                        (0..=run).find_map(|len| self.after_star(token, pos + len))
                    };
                }
            }
            token += 1;
            pos += 1;
        }
    }

    /// Continues after the `*` at `star`, which ended at `pos`.
    fn after_star(&mut self, star: usize, pos: usize) -> Option<usize> {
        let state = self.star_ordinal[star] * (self.text.len() + 1) + pos;
        let (word, bit) = (state / 64, 1u64 << (state % 64));
        if self.failed[word] & bit != 0 {
            return None;
        }
        let found = self.match_from(star + 1, pos);
        if found.is_none() {
            self.failed[word] |= bit;
        }
        found
    }
}

/// Expands a Go regexp replacement template for an expression without
/// capture groups: `$$` is `$`, `$0`/`${0}` the whole match, any other
/// `$name`/`${name}` empty, and a `$` not followed by a name is literal.
/// Fails once `out` is longer than `max_len`.
fn expand_template(out: &mut String, template: &str, matched: &str, max_len: usize) -> Step<()> {
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
            .take_while(|&c| is_name_char(c))
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
            if out.len() > max_len {
                return Err(too_long());
            }
        }
        rest = remainder;
    }
    out.push_str(rest);
    Ok(())
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    let glob = Glob::parse(pattern)
        .map_err(|err| format!("invalid pattern ({pattern}) in substitution: {err}"))?;
    let text: Vec<char> = value.chars().collect();
    Ok(match glob.matcher(&text, greedy)?.match_at(0) {
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

/// Go's `unicode.IsDigit`: general category Nd.
fn is_digit(ch: char) -> bool {
    ch.is_ascii_digit()
        || (!ch.is_ascii() && ch.general_category() == GeneralCategory::DecimalNumber)
}

/// Go's `unicode.IsLetter`: general category L.
fn is_letter(ch: char) -> bool {
    ch.is_ascii_alphabetic()
        || (!ch.is_ascii() && ch.general_category_group() == GeneralCategoryGroup::Letter)
}

/// A character of a variable name after its first: letter, digit or `_`.
fn is_name_char(ch: char) -> bool {
    ch == '_' || is_letter(ch) || is_digit(ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn word(input: &str, vars: &[(&str, &str)]) -> Result<String, String> {
        Lexer::new('\\')
            .process_word(input, &env(vars))
            .map_err(|e| e.message)
    }

    fn error(input: &str, vars: &[(&str, &str)]) -> String {
        match word(input, vars) {
            Ok(result) => panic!("{input:?} expanded to {result:?}, expected an error"),
            Err(message) => message,
        }
    }

    /// BuildKit's TestProcessWithMatches: (input, env, expected result or
    /// None for an error, matched, unmatched).
    #[test]
    fn matches_and_unmatched_names() {
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            Option<&'a str>,
            &'a [&'a str],
            &'a [&'a str],
        );
        let foo_bar: &[(&str, &str)] = &[("FOO", "xxx"), ("BAR", "")];
        let cases: &[Case] = &[
            ("x", &[("DUMMY", "dummy")], Some("x"), &[], &[]),
            (
                "x ${UNUSED}",
                &[("DUMMY", "dummy")],
                Some("x "),
                &[],
                &["UNUSED"],
            ),
            ("x ${FOO}", &[("FOO", "y")], Some("x y"), &["FOO"], &[]),
            (
                "${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}",
                foo_bar,
                Some("xxx  ccc"),
                &["FOO", "BAR"],
                &["BAZ"],
            ),
            (
                "${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}",
                foo_bar,
                Some("xxx bbb ccc"),
                &["FOO", "BAR"],
                &["BAZ"],
            ),
            ("${FOO:-}", foo_bar, Some("xxx"), &["FOO"], &[]),
            ("${FOO:-}", &[], Some(""), &[], &["FOO"]),
            (
                "${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}",
                foo_bar,
                Some("aaa bbb "),
                &["FOO", "BAR"],
                &["BAZ"],
            ),
            (
                "${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}",
                foo_bar,
                Some("aaa  "),
                &["FOO", "BAR"],
                &["BAZ"],
            ),
            ("${FOO?aaa}", foo_bar, Some("xxx"), &["FOO"], &[]),
            ("${BAR?bbb}", foo_bar, Some(""), &["BAR"], &[]),
            ("${BAZ?ccc}", foo_bar, None, &[], &[]),
            ("${FOO:?aaa}", foo_bar, Some("xxx"), &["FOO"], &[]),
            ("${BAR:?bbb}", foo_bar, None, &[], &[]),
            ("${BAZ:?ccc}", foo_bar, None, &[], &[]),
            ("${BAZ:?}", foo_bar, None, &[], &[]),
            ("${FOO=aaa}", foo_bar, None, &[], &[]),
            ("${FOO=:aaa}", foo_bar, None, &[], &[]),
            ("${FOO=}", &[], None, &[], &[]),
            (
                r"${FOO#()[]{\}^$.\*\?|\\}",
                &[("FOO", r"()[]{}^$.*?|\x")],
                Some("x"),
                &["FOO"],
                &[],
            ),
            (
                r"${FOO%%\**}",
                &[("FOO", "xx**")],
                Some("xx"),
                &["FOO"],
                &[],
            ),
            ("${FOO#*x*y}", &[("FOO", "xxyy")], Some("y"), &["FOO"], &[]),
            ("${FOO#*}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            (
                "${FOO#$BAR}",
                &[("FOO", "xxyy"), ("BAR", "x")],
                Some("xyy"),
                &["FOO", "BAR"],
                &[],
            ),
            (
                "${FOO#$BAR}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("xxyy"),
                &["FOO", "BAR"],
                &[],
            ),
            ("${FOO#}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            ("${FOO##*x}", &[("FOO", "xxyy")], Some("yy"), &["FOO"], &[]),
            ("${FOO##}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            (r"${FOO#?\?}", &[("FOO", "???y")], Some("?y"), &["FOO"], &[]),
            (
                "${ABC:-.}${FOO%x}${ABC:-.}",
                &[("FOO", "xxyy")],
                Some(".xxyy."),
                &["FOO"],
                &["ABC"],
            ),
            (
                r"${FOO%%\**\*}",
                &[("FOO", "a***yy*")],
                Some("a"),
                &["FOO"],
                &[],
            ),
            ("${FOO%}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            (
                "${FOO%%$BAR}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("xxyy"),
                &["FOO", "BAR"],
                &[],
            ),
            ("${FOO:#}", &[], None, &[], &[]),
            ("${FOO:##}", &[], None, &[], &[]),
            ("${FOO:%}", &[], None, &[], &[]),
            ("${FOO:%%}", &[], None, &[], &[]),
            (
                "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
                &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", r"\*/")],
                Some("/foo.*/*.txt - /foo..*.txt"),
                &["FOO", "NEEDLE"],
                &[],
            ),
            (
                "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
                &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
                Some("/tmp/bar.txt - /bar.txt"),
                &["FOO", "NEEDLE"],
                &[],
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
                &[
                    ("FOO", "/a/foo/b/c.txt"),
                    ("NEEDLE", "/?/"),
                    ("REPLACEMENT", "/"),
                ],
                Some("/foo/b/c.txt - /foo/c.txt"),
                &["FOO", "NEEDLE", "REPLACEMENT"],
                &[],
            ),
            (
                "${FOO/$NEEDLE/$REPLACEMENT}",
                &[
                    ("FOO", "http://google.de"),
                    ("NEEDLE", "http://"),
                    ("REPLACEMENT", "https://"),
                ],
                Some("https://google.de"),
                &["FOO", "NEEDLE", "REPLACEMENT"],
                &[],
            ),
            (
                r"${FOO//\//\/}",
                &[("FOO", "/tmp/foo.txt")],
                Some(r"\/tmp\/foo.txt"),
                &["FOO"],
                &[],
            ),
            (
                "${FOO/$BAR/ww}",
                &[("FOO", "xxyy"), ("BAR", "")],
                Some("wwxxyy"),
                &["FOO", "BAR"],
                &[],
            ),
            ("${FOO//ww}", &[("FOO", "xxyy")], None, &[], &[]),
            ("${FOO//}", &[("FOO", "xxyy")], None, &[], &[]),
            ("${FOO///}", &[("FOO", "xxyy")], Some("xxyy"), &["FOO"], &[]),
            ("${FOO///}", &[], Some(""), &[], &["FOO"]),
        ];
        let lexer = Lexer::new('\\');
        for (input, vars, expected, matched, unmatched) in cases {
            let got = lexer.process_word_with_matches(input, &env(vars));
            match expected {
                None => assert!(got.is_err(), "{input:?}: expected an error, got {got:?}"),
                Some(expected) => {
                    let got = got.unwrap_or_else(|e| panic!("{input:?}: {e}"));
                    assert_eq!(got.result, *expected, "{input:?}");
                    assert_eq!(got.matched, names(matched), "{input:?} matched");
                    assert_eq!(got.unmatched, names(unmatched), "{input:?} unmatched");
                }
            }
        }
    }

    #[test]
    fn platform_release_name() {
        let release =
            "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
        let base = [("VERSION", "v1.2.3"), ("TARGETOS", "linux")];
        let with = |more: &[(&str, &str)]| {
            let vars: Vec<(&str, &str)> = base.iter().chain(more).copied().collect();
            word(release, &vars).unwrap()
        };
        assert_eq!(
            with(&[("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]),
            "something-v1.2.3.linux-arm-v7.tar.gz"
        );
        assert_eq!(
            with(&[("TARGETARCH", "arm64"), ("TARGETVARIANT", "")]),
            "something-v1.2.3.linux-arm64.tar.gz"
        );
        assert_eq!(
            with(&[("TARGETARCH", "arm64")]),
            "something-v1.2.3.linux-arm64.tar.gz"
        );
    }

    /// BuildKit's TestShellParserMandatoryEnvVars, with exact messages.
    #[test]
    fn mandatory_variables() {
        let set = [("VAR", "plain"), ("ARG", "x")];
        let empty = [("VAR", ""), ("ARG", "x")];
        let unset = [("ARG", "x")];
        let no_empty = "${VAR:?message here$ARG}";
        let no_unset = "${VAR?message here$ARG}";

        assert_eq!(word(no_empty, &set).unwrap(), "plain");
        assert_eq!(
            error(no_empty, &empty),
            r#"failed to process "${VAR:?message here$ARG}": VAR: message herex"#
        );
        assert!(error(no_empty, &unset).ends_with("VAR: message herex"));

        assert_eq!(word(no_unset, &set).unwrap(), "plain");
        assert_eq!(word(no_unset, &empty).unwrap(), "");
        assert!(error(no_unset, &unset).ends_with("VAR: message herex"));

        assert!(error("${X?}", &[]).ends_with(": X: is not allowed to be unset"));
        assert!(error("${X:?}", &[("X", "")]).ends_with(": X: is not allowed to be empty"));
        assert!(error("${X:?}", &[]).ends_with(": X: is not allowed to be unset"));
    }

    #[test]
    fn error_messages() {
        let cases: &[(&str, &str)] = &[
            ("${}", r#"failed to process "${}": syntax error: bad substitution"#),
            ("a${:-b}", r#"failed to process "a${:-b}": syntax error: bad substitution"#),
            ("${{x}", r#"failed to process "${{x}": syntax error: bad substitution"#),
            ("${", r#"failed to process "${": syntax error: missing '}'"#),
            ("${x:-b", r#"failed to process "${x:-b": syntax error: missing '}'"#),
            ("${x:-${y}", r#"failed to process "${x:-${y}": syntax error: missing '}'"#),
            (
                "${x",
                "failed to process \"${x\": unsupported modifier (\u{FFFD}) in substitution",
            ),
            ("${x/a", r#"failed to process "${x/a": syntax error: missing '/' in ${}"#),
            ("${x/a/b", r#"failed to process "${x/a/b": syntax error: missing '}'"#),
            ("${x=a}", r#"failed to process "${x=a}": unsupported modifier (=) in substitution"#),
            ("${x:=a}", r#"failed to process "${x:=a}": unsupported modifier (:=) in substitution"#),
            ("${x:#a}", r#"failed to process "${x:#a}": unsupported modifier (:#) in substitution"#),
            ("${x:YY}", r#"failed to process "${x:YY}": unsupported modifier (:Y) in substitution"#),
            (
                "'abc",
                r#"failed to process "'abc": unexpected end of statement while looking for matching single-quote"#,
            ),
            (
                "\"abc\\\"",
                r#"failed to process "\"abc\\\"": unexpected end of statement while looking for matching double-quote"#,
            ),
            (
                r"${x#\x}",
                r#"failed to process "${x#\\x}": invalid pattern (\x) in substitution: invalid escape '\x'"#,
            ),
            (
                r"${x/a\b/c}",
                r#"failed to process "${x/a\\b/c}": invalid pattern (a\b) in substitution: invalid escape '\b'"#,
            ),
            ("a\tb\n'", "failed to process \"a\\tb\\n'\": unexpected end of statement while looking for matching single-quote"),
        ];
        for (input, message) in cases {
            assert_eq!(&error(input, &[("x", "v")]), message, "{input:?}");
        }
        // The error displays as its message.
        let err = Lexer::new('\\').process_word("${}", &NoEnv).unwrap_err();
        assert_eq!(err.to_string(), err.message);
    }

    #[test]
    fn backtick_escape() {
        let lexer = Lexer::new('`');
        let vars = env(&[("PWD", "/home")]);
        let expand = |input: &str| lexer.process_word(input, &vars).unwrap();
        assert_eq!(expand("he`$PWD"), "he$PWD");
        assert_eq!(expand("he``$PWD"), "he`/home");
        assert_eq!(expand(r"C:\path\$PWD"), r"C:\path\/home");
        assert_eq!(expand(r#""a`"b""#), r#"a"b"#);
        assert_eq!(expand(r#""a\b""#), r"a\b");
        assert_eq!(expand("a` b"), "a b");
        assert_eq!(lexer.process_words("a` b c", &vars).unwrap(), ["a b", "c"]);
        assert_eq!(lexer.escape(), '`');
    }

    #[test]
    fn word_splitting() {
        let lexer = Lexer::new('\\');
        let vars = env(&[("SPACED", " a  b "), ("ONE", "x")]);
        let split = |input: &str| lexer.process_words(input, &vars).unwrap();
        assert_eq!(split("  a   b  "), ["a", "b"]);
        assert_eq!(split("$SPACED"), ["a", "b"]);
        assert_eq!(split("\"$SPACED\""), [" a  b "]);
        assert_eq!(split("x'a b'y z"), ["xa by", "z"]);
        assert_eq!(split("cat << EOF"), ["cat", "<< EOF"]);
        assert_eq!(split("cat <<-EOF > out"), ["cat", "<<-EOF", ">", "out"]);
        assert_eq!(split("a<b"), ["a<b"]);
        assert!(split("").is_empty());
        // BuildKit's shared word buffer: text before a `${v<op>…}` in the same
        // word is dropped from the split words (not from process_word).
        assert_eq!(split("a${NOPE:-b} c"), ["b", "c"]);
        assert_eq!(split("a${ONE} c"), ["ax", "c"]);
        assert_eq!(lexer.process_word("a${NOPE:-b} c", &vars).unwrap(), "ab c");
    }

    #[test]
    fn prefix_and_suffix_removal() {
        let vars = [("F", "a.b.c"), ("NL", "a\nb")];
        assert_eq!(word("${F#*.}", &vars).unwrap(), "b.c");
        assert_eq!(word("${F##*.}", &vars).unwrap(), "c");
        assert_eq!(word("${F%.*}", &vars).unwrap(), "a.b");
        assert_eq!(word("${F%%.*}", &vars).unwrap(), "a");
        assert_eq!(word("${F%?}", &vars).unwrap(), "a.b.");
        assert_eq!(word("${F#x}", &vars).unwrap(), "a.b.c");
        assert_eq!(word("${NOPE#*}", &vars).unwrap(), "");
        // `*` and `?` never match a newline (Go's `.`).
        assert_eq!(word("${NL##*}", &vars).unwrap(), "\nb");
        assert_eq!(word("${NL#a?}", &vars).unwrap(), "a\nb");
        assert_eq!(word("${NL%%*}", &vars).unwrap(), "a\n");
    }

    #[test]
    fn replacement() {
        let vars = [
            ("X", "bab"),
            ("EMPTY", ""),
            ("TEMPLATE", "<$0>"),
            ("DOLLARS", "$$"),
        ];
        assert_eq!(word("${X/a/-}", &vars).unwrap(), "b-b");
        assert_eq!(word("${X//b/-}", &vars).unwrap(), "-a-");
        assert_eq!(word("${X//*/-}", &vars).unwrap(), "-");
        assert_eq!(word("${X//$EMPTY/-}", &vars).unwrap(), "-b-a-b-");
        assert_eq!(word("${X/$EMPTY/-}", &vars).unwrap(), "-bab");
        assert_eq!(word("${X//z/-}", &vars).unwrap(), "bab");
        // Replace-all expands Go regexp templates; replace-first does not.
        assert_eq!(word("${X//a/$TEMPLATE}", &vars).unwrap(), "b<a>b");
        assert_eq!(word("${X/a/$TEMPLATE}", &vars).unwrap(), "b<$0>b");
        assert_eq!(word("${X//a/$DOLLARS}", &vars).unwrap(), "b$b");
        assert_eq!(word(r"${X//a/\$0}", &vars).unwrap(), r"b\ab");
        assert_eq!(word(r"${X/a/\$0}", &vars).unwrap(), r"b\$0b");
    }

    #[test]
    fn go_template_expansion() {
        let expand = |template: &str| {
            let mut out = String::new();
            expand_template(&mut out, template, "M", usize::MAX).unwrap();
            out
        };
        // Names run over letters, digits and `_`: `$0b` is the group "0b".
        assert_eq!(expand("a$0b"), "a");
        assert_eq!(expand("a${0}b a$0 b"), "aMb aM b");
        assert_eq!(expand("${0}x"), "Mx");
        assert_eq!(expand("$0x"), "");
        assert_eq!(expand("$1|$name|${name}|$$|$"), "|||$|$");
        assert_eq!(expand("${0"), "${0");
        assert_eq!(expand("$-"), "$-");
        assert_eq!(expand("$00"), "");
    }

    #[test]
    fn skip_unset_env_keeps_references() {
        let lexer = Lexer::new('\\').with_skip_unset_env(true);
        let vars = env(&[("SET", "v")]);
        let expand = |input: &str| lexer.process_word(input, &vars).unwrap();
        assert_eq!(expand("$SET $X"), "v $X");
        assert_eq!(expand("${SET} ${X}"), "v ${X}");
        assert_eq!(expand("${X:-a} ${X+b} ${X#c}"), "${X:-a} ${X+b} ${X#c}");
        assert_eq!(expand("${X//a/b}"), "${X/a/b}");
        assert_eq!(expand("${SET:-a}"), "v");
    }

    #[test]
    fn raw_quotes_escapes_and_skipped_quotes() {
        let vars = env(&[("A", "1")]);
        let raw_quotes = Lexer::new('\\').with_raw_quotes(true);
        assert_eq!(
            raw_quotes.process_word(r#"'$A' "$A""#, &vars).unwrap(),
            r#"'$A' "1""#
        );
        assert_eq!(
            raw_quotes.process_words(r#"x "a b" y"#, &vars).unwrap(),
            ["x", r#""a b""#, "y"]
        );

        let raw_escapes = Lexer::new('\\').with_raw_escapes(true);
        assert_eq!(
            raw_escapes.process_word(r"a\ b\$A", &vars).unwrap(),
            r"a\ b\$A"
        );
        assert_eq!(
            raw_escapes.process_words(r"a\ b c", &vars).unwrap(),
            [r"a\ b", "c"]
        );

        let heredoc = Lexer::for_heredoc_contents();
        assert_eq!(
            heredoc
                .process_word("echo \"$A\" '$A' \\$A \\\\ \\x\n", &vars)
                .unwrap(),
            "echo \"1\" '1' $A \\ x\n"
        );
        assert_eq!(heredoc.escape(), '\\');

        let no_quotes = Lexer::new('\\').with_skip_process_quotes(true);
        assert_eq!(
            no_quotes.process_word(r#"'$A' "$A""#, &vars).unwrap(),
            r#"'1' "1""#
        );
        assert_eq!(no_quotes.process_word("'", &vars).unwrap(), "'");
    }

    #[test]
    fn variable_names() {
        let vars = [("A_1", "x"), ("한국", "k"), ("1", "one"), ("@", "at")];
        assert_eq!(word("$A_1.", &vars).unwrap(), "x.");
        assert_eq!(word("$한국!", &vars).unwrap(), "k!");
        assert_eq!(word("$12", &vars).unwrap(), "");
        assert_eq!(word("$1a", &vars).unwrap(), "onea");
        assert_eq!(word("$@x ${@}", &vars).unwrap(), "atx at");
        assert_eq!(word("$ $. $", &vars).unwrap(), "$ $. $");
        assert_eq!(word("\u{FEFF}$A_1", &vars).unwrap(), "x");
        // Go's IsLetter/IsDigit: `²` (No), `Ⅻ` (Nl) and combining marks end
        // a name; `٣` (Nd) is a digit.
        let more = [("x", "1"), ("x٣", "2"), ("٣", "3")];
        assert_eq!(word("$x²", &more).unwrap(), "1²");
        assert_eq!(word("$xⅫ", &more).unwrap(), "1Ⅻ");
        assert_eq!(word("$x٣ $٣", &more).unwrap(), "2 3");
        assert_eq!(word("$x\u{301}", &more).unwrap(), "1\u{301}");
    }

    #[test]
    fn glob_parsing() {
        use GlobToken::*;
        let parse = |p: &str| Glob::parse(p).map(|g| g.tokens);
        assert_eq!(parse("*").unwrap(), [Star]);
        assert_eq!(parse("?").unwrap(), [Any]);
        assert_eq!(parse(r"\*").unwrap(), [Literal('*')]);
        assert_eq!(
            parse(r"(){\}\/[.\*\?\\").unwrap(),
            [
                Literal('('),
                Literal(')'),
                Literal('{'),
                Literal('}'),
                Literal('/'),
                Literal('['),
                Literal('.'),
                Literal('*'),
                Literal('?'),
                Literal('\\'),
            ]
        );
        assert_eq!(parse("\\").unwrap_err(), "invalid escape '\\\u{FFFD}'");
        assert_eq!(parse(r"\x").unwrap_err(), r"invalid escape '\x'");
        assert!(parse(r"\\\").is_err());
    }

    #[test]
    fn glob_matching_preferences() {
        let glob = |p: &str| Glob::parse(p).unwrap();
        let text: Vec<char> = "xxyy".chars().collect();
        let anchored = |p: &str, greedy: bool| glob(p).matcher(&text, greedy).unwrap().match_at(0);
        let find = |p: &str| glob(p).matcher(&text, true).unwrap().find_from(0);
        assert_eq!(anchored("*x*y", false), Some(3));
        assert_eq!(anchored("*x*y", true), Some(4));
        assert_eq!(anchored("*", false), Some(0));
        assert_eq!(anchored("x?", false), Some(2));
        assert_eq!(anchored("y", false), None);
        assert_eq!(find("y"), Some((2, 3)));
        assert_eq!(find("y*"), Some((2, 4)));
        assert_eq!(find("z"), None);
        // Many stars against a long text stay fast (failed states are memoised).
        let long: Vec<char> = "a".repeat(2000).chars().collect();
        assert_eq!(
            glob("*a*a*a*a*b").matcher(&long, true).unwrap().match_at(0),
            None
        );
        assert_eq!(
            glob("a*a*a*b").matcher(&long, false).unwrap().find_from(0),
            None
        );
    }

    #[test]
    fn reversed_patterns() {
        let cases = [
            (r"a\*c", r"c\*a"),
            (r"\\\ab", r"b\a\\"),
            (r"ab\", r"\ba"),
            ("👽\\🚀🖖", "🖖\\🚀👽"),
            (r"\\b", r"b\\"),
        ];
        for (pattern, reversed) in cases {
            assert_eq!(reverse_pattern(pattern), reversed, "{pattern:?}");
        }
    }

    #[test]
    fn environments() {
        let list: Vec<(String, String)> = vec![
            ("car".into(), "hat".into()),
            ("foo".into(), "bar".into()),
            ("car".into(), "bike".into()),
        ];
        assert_eq!(list.lookup("car"), Some("bike"));
        assert_eq!(list.as_slice().lookup("foo"), Some("bar"));
        assert_eq!(list.lookup("Car"), None);
        let tree: BTreeMap<String, String> = [("k".to_string(), String::new())].into();
        assert_eq!(tree.lookup("k"), Some(""));
        assert_eq!(env(&[("k", "v")]).lookup("k"), Some("v"));
        assert_eq!(NoEnv.lookup("k"), None);
        fn owned<E: Env>(env: E, name: &str) -> Option<String> {
            env.lookup(name).map(str::to_string)
        }
        assert_eq!(owned(&tree, "k").as_deref(), Some(""));
    }

    #[test]
    fn expanding_many_words() {
        let vars = env(&[("A", "1"), ("B", "2")]);
        let all = Lexer::default()
            .process_all_with_matches(&["$A", "${B}-$C", "plain"], &vars)
            .unwrap();
        assert_eq!(all.words, ["1", "2-", "plain"]);
        assert_eq!(all.matched, names(&["A", "B"]));
        assert_eq!(all.unmatched, names(&["C"]));
        assert!(Lexer::default()
            .process_all_with_matches(&["ok", "${"], &vars)
            .is_err());
    }

    /// An expansion may add at most MAX_WORD_GROWTH to a word, however it
    /// grows: repeated references, quotes, nested defaults, replacement.
    #[test]
    fn expanded_words_are_capped() {
        let half = "x".repeat(MAX_WORD_GROWTH / 2 + 16);
        let vars = [("H", half.as_str()), ("ONE", "y"), ("TWICE", "$0$0")];
        let too_long = "expanded word is more than 1 MiB longer than written";
        assert_eq!(word("$H", &vars).map(|w| w.len()), Ok(half.len()));
        for input in [
            "$H$H",
            "a${H}b$H",
            "\"$H$H\"",
            "${NOPE:-$H$H}",
            "${ONE:+$H$H}",
            "${H//x/yy}",
            "${H//?/$TWICE}",
            "${ONE/y/$H$H}",
        ] {
            let message = word(input, &vars).map(|w| w.len()).unwrap_err();
            assert!(message.ends_with(too_long), "{input}: {message}");
            assert!(message.starts_with("failed to process"), "{message}");
        }
        // Splitting caps the same way.
        let err = Lexer::default()
            .process_words("$H $H", &env(&vars))
            .unwrap_err();
        assert!(err.message.ends_with(too_long), "{}", err.message);
        // Text as written does not count: a long heredoc or word is fine.
        let long = "z".repeat(2 * MAX_WORD_GROWTH);
        assert_eq!(
            word(&format!("{long}$ONE"), &vars).map(|w| w.len()),
            Ok(long.len() + 1)
        );
        let heredoc = Lexer::for_heredoc_contents();
        let contents = format!("{long}\n$H\n");
        assert_eq!(
            heredoc
                .process_word(&contents, &env(&vars))
                .map(|w| w.len()),
            Ok(contents.len() - 2 + half.len())
        );
    }

    /// BuildKit's `ARG A=$A$A` doubling, 40 times, stops at the cap instead
    /// of reaching 2^40 bytes.
    #[test]
    fn doubling_a_variable_stops_at_the_cap() {
        let mut vars = env(&[("A", "x")]);
        let lexer = Lexer::default();
        let mut doublings = 0;
        let err = loop {
            match lexer.process_word("$A$A", &vars) {
                Ok(v) => {
                    vars.insert("A".into(), v);
                    doublings += 1;
                }
                Err(e) => break e,
            }
            assert!(doublings <= 40, "no cap after 40 doublings");
        };
        assert_eq!(doublings, 20);
        assert_eq!(vars["A"].len(), 1 << 20);
        assert!(
            err.message.contains("more than 1 MiB longer"),
            "{}",
            err.message
        );
    }

    /// A glob whose memo table would be too big is an error, not an
    /// allocation of stars × positions.
    #[test]
    fn glob_state_tables_are_bounded() {
        let text = "a".repeat(1 << 20);
        let stars = "*a".repeat(64);
        let vars = [("T", text.as_str()), ("P", stars.as_str())];
        for input in ["${T#$P}", "${T%%$P}", "${T/$P/x}", "${T//$P/x}"] {
            let message = word(input, &vars).map(|w| w.len()).unwrap_err();
            assert!(
                message.ends_with(
                    "pattern with 64 '*' is too complex to match against 1048576 characters"
                ),
                "{input}: {message}"
            );
        }
        // Runs of stars count once; a few stars against a long value are fine.
        let many = "*".repeat(1000);
        let vars = [("T", text.as_str()), ("P", many.as_str())];
        let len = |input: &str| word(input, &vars).map(|w| w.len());
        assert_eq!(len("${T##$P}"), Ok(0));
        assert_eq!(len("${T#$P}"), Ok(text.len()));
        assert_eq!(len("${T##*a*a}"), Ok(0));
        assert_eq!(len("${T%a*a}"), Ok(text.len() - 2));
        assert_eq!(len("${T//a*a/b}"), Ok(1));
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\u{1b}\u{7f}"), r#""\t\n\x1b\x7f""#);
        assert_eq!(go_quote("한국 \u{a0}"), "\"한국 \\u00a0\"");
        assert_eq!(
            go_quote("\u{200b}\u{85}🚀\u{e0001}"),
            r#""\u200b\u0085🚀\U000e0001""#
        );
    }
}
