//! The Dockerfile parser: text → [`Dockerfile`] (BuildKit's `parser.Parse`).
//!
//! It follows BuildKit's parser line for line in behaviour: parser directives
//! at the top, comments, line continuations (with comment and blank lines
//! inside them), `--flag` extraction, the per-instruction argument parsers
//! (see [`line_parsers`]) and heredocs (see [`heredoc`]). Unknown instruction
//! keywords are accepted here, as in BuildKit; the typed-instruction layer
//! rejects them.

#![allow(clippy::result_large_err)] // `parse` returns the crate's one error type, once per file

mod heredoc;
mod json;
mod line_parsers;

pub use heredoc::chomp_heredoc_content;

use crate::ast::{Directive, Dockerfile, Node};
use crate::error::{DockerfileError, Source};
use line_parsers::{go_lower, split_command, Args};

/// Longest line Go's `bufio.Scanner` accepts (its default `MaxScanTokenSize`).
const MAX_LINE: usize = 64 * 1024;

/// Instructions whose argument parsing recurses (ONBUILD ONBUILD ...) are cut
/// off at this depth; BuildKit's instruction layer rejects any ONBUILD chain.
const MAX_ONBUILD_NESTING: usize = 64;

/// Parses a whole Dockerfile into its instructions, with BuildKit's AST shape
/// ([`Dockerfile::dump`] equals BuildKit's `Node.Dump()`).
///
/// Errors carry the line range of the offending instruction (or directive).
/// Known, deliberate differences from BuildKit, all on inputs BuildKit rejects
/// later or never sees in practice:
/// - more than 64 nested `ONBUILD ONBUILD ...` is a parse error here (BuildKit's
///   instruction layer rejects any chain; recursing 8000 levels deep would
///   risk the stack);
/// - heredoc markers inside words nested more than 256 `${...}`/quote levels
///   deep are not detected;
/// - a bad or repeated parser directive is reported on its own line (BuildKit
///   reports the line before it), and so is a line over 65535 bytes (BuildKit
///   reports the line before it, or "file with no instructions" when it is
///   the first);
/// - bytes BuildKit would carry through as invalid UTF-8 (its byte-wise flag
///   and HEALTHCHECK scanners can split a character) become U+FFFD.
pub fn parse(src: &Source) -> Result<Dockerfile, DockerfileError> {
    Parser::new(src).run()
}

/// The parser-directive scanner (BuildKit's `DirectiveParser`): directives
/// are only recognised until the first line that is not one.
#[derive(Default)]
struct DirectiveScanner {
    done: bool,
    seen: Vec<String>,
}

impl DirectiveScanner {
    /// Returns the directive on this (left-trimmed) line, if it is one.
    fn parse_line(&mut self, line: &str) -> Result<Option<(String, String)>, String> {
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(None);
        };
        let Some((name, value)) = match_directive(rest.trim_start()) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(None);
        }
        if self.seen.contains(&name) {
            return Err(format!("only one {name} parser directive can be used"));
        }
        self.seen.push(name.clone());
        Ok(Some((name, value)))
    }
}

/// BuildKit's `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` (Go's `\s` is ASCII
/// `[\t\n\f\r ]`) over a line without newlines, including its backtracking
/// quirk: a value made only of whitespace is its last character.
fn match_directive(s: &str) -> Option<(String, String)> {
    let is_s = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let name_end = s
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(s.len());
    let name = &s[..name_end];
    let after = s[name_end..].trim_start_matches(is_s).strip_prefix('=')?;
    let trimmed = after.trim_start_matches(is_s);
    let value = if trimmed.is_empty() {
        // Only whitespace: the greedy `\s*` gives one character back to `.+?`.
        after.chars().last()?.to_string()
    } else {
        trimmed.trim_end_matches(is_s).to_string()
    };
    Some((name.to_string(), value))
}

/// Go's `bytes.TrimRight(line, "\r\n")`.
fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

struct Parser<'a> {
    src: &'a Source,
    /// Physical lines, each with its `\n` (the last one may lack it).
    lines: Vec<&'a str>,
    /// The 1-based number of the first line too long for BuildKit's
    /// scanner: reading stops before it.
    too_long: Option<usize>,
    next_line: usize,
    escape: char,
    directive_scanner: DirectiveScanner,
    directives: Vec<Directive>,
    warnings: Vec<(usize, String)>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a Source) -> Self {
        let mut lines = Vec::new();
        let mut too_long = None;
        for l in src.text.split_inclusive('\n') {
            let limit = if l.ends_with('\n') {
                MAX_LINE
            } else {
                MAX_LINE - 1
            };
            if l.len() > limit {
                too_long = Some(lines.len() + 1);
                break;
            }
            lines.push(l);
        }
        Parser {
            src,
            lines,
            too_long,
            next_line: 0,
            escape: '\\',
            directive_scanner: DirectiveScanner::default(),
            directives: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn scan(&mut self) -> Option<&'a str> {
        let l = self.lines.get(self.next_line).copied();
        if l.is_some() {
            self.next_line += 1;
        }
        l
    }

    fn err(&self, start: usize, end: usize, msg: impl Into<String>) -> DockerfileError {
        DockerfileError::at(self.src, start, end, msg)
    }

    /// BuildKit's `processLine`: newline trimmed, optionally left-trimmed,
    /// checked for a parser directive; comment lines become empty.
    /// Returns the text and whether it was a directive.
    fn process_line(
        &mut self,
        token: &'a str,
        strip_left: bool,
        line_no: usize,
    ) -> Result<(&'a str, bool), DockerfileError> {
        let mut token = trim_newline(token);
        if strip_left {
            token = token.trim_start();
        }
        let directive = self
            .directive_scanner
            .parse_line(token)
            .map_err(|m| self.err(line_no, line_no, m))?;
        let mut is_directive = false;
        if let Some((name, value)) = directive {
            if name == "escape" {
                if value != "`" && value != "\\" {
                    return Err(self.err(
                        line_no,
                        line_no,
                        format!("invalid escape token '{value}' does not match ` or \\"),
                    ));
                }
                self.escape = value.chars().next().unwrap_or('\\');
            }
            self.directives.push(Directive {
                name,
                value,
                line: line_no,
            });
            is_directive = true;
        }
        let text = if is_comment(token) { "" } else { token };
        Ok((text, is_directive))
    }

    /// BuildKit's line-continuation regex: `([^E])E[ \t]*$|^E[ \t]*$` with E
    /// the escape character. Returns the line without the continuation and
    /// whether the logical line ends here.
    fn trim_continuation(&self, line: &'a str) -> (&'a str, bool) {
        let body = line.trim_end_matches([' ', '\t']);
        if let Some(before) = body.strip_suffix(self.escape) {
            if !before.ends_with(self.escape) {
                return (before, false);
            }
        }
        (line, true)
    }

    fn run(mut self) -> Result<Dockerfile, DockerfileError> {
        let mut current_line = 0usize;
        let mut comments: Vec<String> = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();

        while let Some(raw) = self.scan() {
            let mut raw = raw;
            if current_line == 0 {
                raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
            }
            if is_comment(raw) {
                // BuildKit drops the first byte (not necessarily the '#').
                let rest = String::from_utf8_lossy(&raw.as_bytes()[1..]);
                let comment = rest.trim();
                if comment.is_empty() {
                    comments.clear();
                } else {
                    comments.push(comment.to_string());
                }
            }
            let (text, is_directive) = self.process_line(raw, true, current_line + 1)?;
            if is_directive {
                comments.pop();
            }
            current_line += 1;
            let start_line = current_line;

            let (text, mut end_of_line) = self.trim_continuation(text);
            if end_of_line && text.is_empty() {
                continue;
            }
            let mut line = String::from(text);
            let mut has_empty_continuation = false;
            while !end_of_line {
                let Some(raw) = self.scan() else { break };
                let (text, _) = self.process_line(raw, false, current_line + 1)?;
                current_line += 1;
                if is_comment(raw) {
                    continue;
                }
                if trim_newline(text).trim_start().is_empty() {
                    has_empty_continuation = true;
                    continue;
                }
                let (text, eol) = self.trim_continuation(text);
                end_of_line = eol;
                line.push_str(text);
            }

            if has_empty_continuation {
                self.warnings.push((
                    current_line,
                    format!("Empty continuation line found in: {line}"),
                ));
            }

            let mut node = new_node_from_line(&line, self.escape, &comments, 0)
                .map_err(|m| self.err(start_line, current_line, m))?;

            if can_contain_heredoc(&node) && line.contains("<<") {
                let docs = heredoc::heredocs_from_line(&line)
                    .map_err(|e| self.err(start_line, current_line, e.0))?;
                for mut doc in docs {
                    let mut terminated = false;
                    let mut content = String::new();
                    while let Some(raw) = self.scan() {
                        current_line += 1;
                        let mut candidate = trim_newline(raw);
                        if doc.chomp {
                            candidate = candidate.trim_start_matches('\t');
                        }
                        if candidate == doc.name {
                            terminated = true;
                            break;
                        }
                        content.push_str(raw);
                    }
                    if !terminated {
                        return Err(self.err(start_line, current_line, "unterminated heredoc"));
                    }
                    doc.content = content;
                    node.heredocs.push(doc);
                }
            }

            node.start_line = start_line;
            node.end_line = current_line;
            if let Some(sub) = node.sub.as_deref_mut() {
                set_lines(sub, start_line, current_line);
            }
            nodes.push(node);
            comments.clear();
        }

        // BuildKit reports this on the last line it read, the one before the
        // long line (and, with no instruction before it, reports "file with no
        // instructions" instead); kiln names the long line itself.
        if let Some(line) = self.too_long {
            let mut e = self.err(
                line,
                line,
                format!(
                    "dockerfile line greater than max allowed size of {}",
                    MAX_LINE - 1
                ),
            );
            // No excerpt: it would print the whole over-long line.
            e.span = None;
            return Err(e);
        }
        if nodes.is_empty() {
            return Err(self.err(current_line, current_line, "file with no instructions"));
        }
        Ok(Dockerfile {
            directives: self.directives,
            escape: self.escape,
            nodes,
            warnings: self.warnings,
        })
    }
}

fn set_lines(node: &mut Node, start: usize, end: usize) {
    let mut n = Some(node);
    while let Some(cur) = n {
        cur.start_line = start;
        cur.end_line = end;
        n = cur.sub.as_deref_mut();
    }
}

/// BuildKit's `canContainHeredoc`: RUN/COPY/ADD (also behind ONBUILD), not in JSON form.
fn can_contain_heredoc(node: &Node) -> bool {
    let mut n = node;
    if n.keyword == "onbuild" {
        if let Some(sub) = n.sub.as_deref() {
            n = sub;
        }
    }
    matches!(n.keyword.as_str(), "add" | "copy" | "run") && !n.json
}

/// BuildKit's `newNodeFromLine`: keyword, flags and the instruction's own
/// argument parser.
fn new_node_from_line(
    line: &str,
    escape: char,
    comments: &[String],
    depth: usize,
) -> Result<Node, String> {
    let (cmd, flags, rest) = split_command(line, escape);
    let keyword = go_lower(&cmd);
    let mut sub = None;
    let args: Args = match keyword.as_str() {
        "add" | "copy" | "volume" => line_parsers::parse_maybe_json_to_list(&rest)?,
        "arg" => line_parsers::parse_name_or_name_val(&rest, escape),
        "cmd" | "entrypoint" | "run" | "shell" => line_parsers::parse_maybe_json(&rest)?,
        "env" => line_parsers::parse_name_val(&rest, "ENV", escape)?,
        "label" => line_parsers::parse_name_val(&rest, "LABEL", escape)?,
        "expose" | "from" => line_parsers::parse_strings_whitespace_delimited(&rest),
        "healthcheck" => line_parsers::parse_health_config(&rest)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => line_parsers::parse_string(&rest),
        "onbuild" => {
            if !rest.is_empty() {
                if depth >= MAX_ONBUILD_NESTING {
                    return Err("ONBUILD triggers nested too deeply".into());
                }
                sub = Some(Box::new(new_node_from_line(&rest, escape, &[], depth + 1)?));
            }
            Args::default()
        }
        // Unknown instructions: BuildKit keeps one empty argument node.
        _ => Args {
            args: vec![String::new()],
            json: false,
        },
    };
    Ok(Node {
        keyword,
        flags,
        args: args.args,
        sub,
        json: args.json,
        heredocs: Vec::new(),
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
        prev_comment: comments.to_vec(),
    })
}

#[cfg(test)]
mod tests;
