//! Hand-built AST nodes and a stand-in expansion environment for the
//! instruction files' unit tests.

use super::{parse_node, Expand, Instruction};
use crate::ast::Node;

pub(crate) fn node(keyword: &str, flags: &[&str], args: &[&str]) -> Node {
    let mut original = keyword.to_ascii_uppercase();
    for w in flags.iter().chain(args) {
        original.push(' ');
        original.push_str(w);
    }
    Node {
        keyword: keyword.to_ascii_lowercase(),
        flags: flags.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        sub: None,
        json: false,
        heredocs: vec![],
        original,
        start_line: 3,
        end_line: 3,
        prev_comment: vec![],
    }
}

pub(crate) fn json(mut n: Node) -> Node {
    n.json = true;
    n
}

pub(crate) fn parse(n: &Node) -> Instruction {
    parse_node(n, '\\').unwrap_or_else(|e| panic!("{}: {}", n.original, e.message))
}

pub(crate) fn err(n: &Node) -> String {
    match parse_node(n, '\\') {
        Ok(i) => panic!("{} should fail, got {i:?}", n.original),
        Err(e) => e.message,
    }
}

/// Replaces `$NAME` from a fixed table (a stand-in for the stage environment).
pub(crate) struct Table(Vec<(&'static str, &'static str)>);

impl Table {
    /// `DIR=/srv U=app P="80 443" M=0640 WRONGMODE=99 SUM=sha256:abc`; `$BAD` fails.
    pub(crate) fn sample() -> Table {
        Table(vec![
            ("DIR", "/srv"),
            ("U", "app"),
            ("P", "80 443"),
            ("M", "0640"),
            ("WRONGMODE", "99"),
            ("SUM", "sha256:abc"),
        ])
    }

    fn sub(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (k, v) in &self.0 {
            out = out.replace(&format!("${k}"), v);
        }
        out
    }
}

impl Expand for Table {
    fn word(&mut self, word: &str) -> Result<String, String> {
        if word.contains("$BAD") {
            return Err("bad substitution".into());
        }
        Ok(self.sub(word))
    }
    fn words(&mut self, word: &str) -> Result<Vec<String>, String> {
        Ok(self
            .sub(word)
            .split_whitespace()
            .map(str::to_string)
            .collect())
    }
    fn raw(&mut self, text: &str) -> Result<String, String> {
        Ok(format!("raw:{}", self.sub(text)))
    }
}
