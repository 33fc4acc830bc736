//! The parse tree: one [`Node`] per instruction, the shape of BuildKit's
//! `parser.Node` flattened into Rust types. [`Node::dump`] prints BuildKit's
//! S-expression dump so our AST can be diffed against BuildKit's test `result` files.

/// A heredoc attached to an instruction (`RUN <<EOF`, `COPY <<EOF /dst`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word, without quotes (`EOF`).
    pub name: String,
    /// File descriptor the heredoc feeds (`RUN 3<<EOF`); 0 when not given.
    pub file_descriptor: u32,
    /// False when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): no expansion.
    pub expand: bool,
    /// True for `<<-`: leading tabs are stripped from every line.
    pub chomp: bool,
    /// The body, each line ending in `\n`, as BuildKit stores it.
    pub content: String,
}

/// A parser directive found at the top of the file (`# syntax=`, `# escape=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub value: String,
    /// 1-based line of the directive.
    pub line: usize,
}

/// One instruction of the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction keyword, lower-cased (`from`, `run`, `copy`, ...).
    pub keyword: String,
    /// `--flag[=value]` words given before the arguments, verbatim (`--from=builder`).
    pub flags: Vec<String>,
    /// The argument words, as BuildKit's `Next` chain holds them (already split
    /// per the instruction's line parser; not yet variable-expanded).
    pub args: Vec<String>,
    /// For `ONBUILD`: the nested instruction (BuildKit's `Next.Children[0]`).
    pub sub: Option<Box<Node>>,
    /// True when the arguments were given in JSON (exec) form.
    pub json: bool,
    /// Heredocs attached to this instruction, in order.
    pub heredocs: Vec<Heredoc>,
    /// The whole original instruction text (continuations joined), as BuildKit's `Original`.
    pub original: String,
    /// 1-based first and last source line of the instruction (continuations and heredocs included).
    pub start_line: usize,
    pub end_line: usize,
    /// Comment lines directly above the instruction, without the leading `#`.
    pub prev_comment: Vec<String>,
}

impl Node {
    /// BuildKit's `Node.Dump()` for one instruction, without the surrounding parens.
    pub fn dump_inner(&self) -> String {
        let mut s = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            s.push(' ');
            s.push('[');
            let quoted: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(&quoted.join(" "));
            s.push(']');
        }
        if let Some(sub) = &self.sub {
            s.push(' ');
            s.push('(');
            s.push_str(&sub.dump_inner());
            s.push(')');
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&go_quote(a));
        }
        s.trim().to_string()
    }

    /// BuildKit's dump line for this instruction: `(copy ["--from=a"] "src" "dst")`.
    pub fn dump(&self) -> String {
        format!("({})", self.dump_inner())
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub directives: Vec<Directive>,
    /// The escape character in effect (`\\` or `` ` ``).
    pub escape: char,
    pub nodes: Vec<Node>,
    /// Non-fatal findings of the parser (e.g. empty continuation lines), with their line.
    pub warnings: Vec<(usize, String)>,
}

impl Dockerfile {
    /// The whole AST in BuildKit's dump format, one line per instruction.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&n.dump());
            out.push('\n');
        }
        out
    }
}

/// Go's `strconv.Quote`: double-quoted, with Go's escapes for control
/// characters and invalid UTF-8-free printable Unicode kept as is.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.IsPrint`: the ASCII space and the general categories L, M,
/// N, P and S are printable; everything else (controls, other spaces,
/// format, private-use and unassigned code points) is escaped.
fn is_go_printable(c: char) -> bool {
    use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};
    c == ' '
        || matches!(
            c.general_category_group(),
            GeneralCategoryGroup::Letter
                | GeneralCategoryGroup::Mark
                | GeneralCategoryGroup::Number
                | GeneralCategoryGroup::Punctuation
                | GeneralCategoryGroup::Symbol
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_like_go() {
        assert_eq!(go_quote("a\"b\\"), r#""a\"b\\""#);
        assert_eq!(go_quote("\u{0}\u{8}\u{c}\n\r\t"), r#""\x00\b\f\n\r\t""#);
        assert_eq!(go_quote("♥☃"), "\"♥☃\"");
        assert_eq!(
            go_quote("a\u{a0}\u{85}\u{200b}\u{e000}é"),
            r#""a\u00a0\u0085\u200b\ue000é""#
        );
        assert_eq!(go_quote("\u{7f}\u{10ffff}"), r#""\x7f\U0010ffff""#);
    }

    #[test]
    fn dump_shapes() {
        let run = Node {
            keyword: "run".into(),
            flags: vec![],
            args: vec!["echo".into(), "test".into()],
            sub: None,
            json: true,
            heredocs: vec![],
            original: String::new(),
            start_line: 1,
            end_line: 1,
            prev_comment: vec![],
        };
        let onbuild = Node {
            keyword: "onbuild".into(),
            args: vec![],
            sub: Some(Box::new(run.clone())),
            ..run.clone()
        };
        assert_eq!(onbuild.dump(), r#"(onbuild (run "echo" "test"))"#);
        let copy = Node {
            keyword: "copy".into(),
            flags: vec!["--from=a".into()],
            args: vec!["src".into(), "dst".into()],
            ..run
        };
        assert_eq!(copy.dump(), r#"(copy ["--from=a"] "src" "dst")"#);
    }
}
