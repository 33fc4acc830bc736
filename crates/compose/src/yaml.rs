//! A YAML tree that remembers where every value and key was written, read with
//! granit-parser (the parser of serde-saphyr) and written with serde-saphyr.
//!
//! Scalars are typed by the YAML 1.2 core schema (`true`, `null`, `12` are a
//! bool, null and number only when plain); anchors and aliases are resolved,
//! `<<` merge keys applied, duplicate keys rejected, and the Compose tags
//! `!reset` and `!override` kept on the node they mark.

use crate::error::{ComposeError, Loc, SourceFile};
use granit_parser::{Event, Parser, ScalarStyle};
use std::collections::HashMap;
use std::sync::Arc;

/// A YAML value with its position.
#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    /// Where the value was written; `None` for values kiln made (defaults).
    pub at: Option<Loc>,
    pub tag: Tag,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// An integer or float as written (plain scalars only).
    Number(String),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key: always a string in Compose files.
#[derive(Clone, Debug)]
pub struct Key {
    pub name: String,
    pub at: Option<Loc>,
}

/// The Compose merge tags (`13-merge.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    None,
    /// `!reset`: the value is removed from what earlier files set.
    Reset,
    /// `!override`: the value replaces what earlier files set, without merging.
    Override,
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
        self.value == other.value
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.name == other.name
    }
}

impl Node {
    pub fn new(value: Value) -> Node {
        Node {
            value,
            at: None,
            tag: Tag::None,
        }
    }

    pub fn str(s: impl Into<String>) -> Node {
        Node::new(Value::Str(s.into()))
    }

    pub fn map() -> Node {
        Node::new(Value::Map(Vec::new()))
    }

    pub fn at(mut self, at: Option<Loc>) -> Node {
        self.at = at;
        self
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(m) => m.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match &mut self.value {
            Value::Map(m) => m.iter_mut().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The key entry of `key` (for its location).
    pub fn key(&self, key: &str) -> Option<&Key> {
        match &self.value {
            Value::Map(m) => m.iter().find(|(k, _)| k.name == key).map(|(k, _)| k),
            _ => None,
        }
    }

    /// Sets `key` in a mapping (replacing its value, or appending it).
    pub fn set(&mut self, key: &str, value: Node) {
        if let Value::Map(m) = &mut self.value {
            match m.iter_mut().find(|(k, _)| k.name == key) {
                Some((_, v)) => *v = value,
                None => m.push((
                    Key {
                        name: key.to_string(),
                        at: None,
                    },
                    value,
                )),
            }
        }
    }

    /// Removes `key` from a mapping.
    pub fn remove(&mut self, key: &str) -> Option<Node> {
        match &mut self.value {
            Value::Map(m) => {
                let i = m.iter().position(|(k, _)| k.name == key)?;
                Some(m.remove(i).1)
            }
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.value == Value::Null
    }

    /// A scalar as text (strings, numbers and booleans; `None` for null and
    /// collections), as Compose reads `KEY: 1` in `environment:` or `args:`.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) | Value::Number(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// What kind of value this is, for error messages ("a string", "a list").
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Reads every YAML document of `file` (a Compose file may hold several, which
/// are merged in order). An empty file is one empty mapping.
pub fn parse(file: &Arc<SourceFile>) -> Result<Vec<Node>, ComposeError> {
    let text = file.text.clone();
    let mut reader = Reader {
        file: file.clone(),
        parser: Parser::new_from_str(&text),
        anchors: HashMap::new(),
    };
    let mut docs = Vec::new();
    loop {
        let (event, at) = reader.next()?;
        match event {
            Event::StreamStart | Event::DocumentEnd => {}
            Event::StreamEnd => break,
            Event::DocumentStart(..) => {
                let (event, at) = reader.next()?;
                if matches!(event, Event::DocumentEnd) {
                    docs.push(Node::map().at(Some(at)));
                    continue;
                }
                docs.push(reader.node(event, at)?);
                reader.anchors.clear();
            }
            _ => return Err(ComposeError::at(Some(&at), "", "unexpected YAML event")),
        }
    }
    Ok(docs)
}

struct Reader<'a> {
    file: Arc<SourceFile>,
    parser: Parser<'a, granit_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
}

impl<'a> Reader<'a> {
    fn loc(&self, line: usize, col: usize) -> Loc {
        Loc {
            file: self.file.clone(),
            line,
            col,
        }
    }

    fn next(&mut self) -> Result<(Event<'a>, Loc), ComposeError> {
        match self.parser.next_event() {
            Some(Ok((event, span))) => Ok((event, self.loc(span.start.line(), span.start.col()))),
            Some(Err(e)) => {
                let m = e.marker();
                let at = self.loc(m.line(), m.col());
                Err(ComposeError::at(
                    Some(&at),
                    "",
                    format!("invalid YAML: {}", e.info()),
                ))
            }
            None => Err(ComposeError::at(
                Some(&self.loc(1, 0)),
                "",
                "invalid YAML: unexpected end of input",
            )),
        }
    }

    fn tag(&self, tag: Option<&granit_parser::Tag>, at: &Loc) -> Result<(Tag, bool), ComposeError> {
        // (Compose tag, forced string)
        let Some(t) = tag else {
            return Ok((Tag::None, false));
        };
        match (t.handle(), t.suffix()) {
            ("!", "reset") => Ok((Tag::Reset, false)),
            ("!", "override") => Ok((Tag::Override, false)),
            ("tag:yaml.org,2002:", "str") => Ok((Tag::None, true)),
            ("tag:yaml.org,2002:", _) => Ok((Tag::None, false)),
            _ => Err(ComposeError::at(
                Some(at),
                "",
                format!("unknown YAML tag {t} (Compose knows !reset and !override)"),
            )),
        }
    }

    fn node(&mut self, event: Event<'a>, at: Loc) -> Result<Node, ComposeError> {
        let (anchor, node) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let (tag, forced_str) = self.tag(tag.as_deref(), &at)?;
                let value = if style == ScalarStyle::Plain && !forced_str {
                    plain_scalar(&text)
                } else {
                    Value::Str(text.into_owned())
                };
                (
                    anchor,
                    Node {
                        value,
                        at: Some(at),
                        tag,
                    },
                )
            }
            Event::SequenceStart(_, anchor, tag) => {
                let (tag, _) = self.tag(tag.as_deref(), &at)?;
                let mut items = Vec::new();
                loop {
                    let (event, item_at) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(event, item_at)?);
                }
                (
                    anchor,
                    Node {
                        value: Value::Seq(items),
                        at: Some(at),
                        tag,
                    },
                )
            }
            Event::MappingStart(_, anchor, tag) => {
                let (tag, _) = self.tag(tag.as_deref(), &at)?;
                let value = self.mapping()?;
                (
                    anchor,
                    Node {
                        value,
                        at: Some(at),
                        tag,
                    },
                )
            }
            Event::Alias(id) => {
                let node =
                    self.anchors.get(&id).cloned().ok_or_else(|| {
                        ComposeError::at(Some(&at), "", "alias to an unknown anchor")
                    })?;
                return Ok(node);
            }
            _ => return Err(ComposeError::at(Some(&at), "", "unexpected YAML event")),
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    /// The entries of a mapping up to its end, with `<<` merge keys applied:
    /// keys written in the mapping win over merged ones, and earlier merged
    /// mappings over later ones.
    fn mapping(&mut self) -> Result<Value, ComposeError> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        let mut merged: Vec<Node> = Vec::new();
        loop {
            let (event, key_at) = self.next()?;
            if matches!(event, Event::MappingEnd) {
                break;
            }
            let key = self.node(event, key_at.clone())?;
            let plain_merge = matches!(&key.value, Value::Str(s) if s == "<<");
            let name = match &key.value {
                Value::Str(s) | Value::Number(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_string(),
                _ => {
                    return Err(ComposeError::at(
                        Some(&key_at),
                        "",
                        "a mapping key must be a string",
                    ))
                }
            };
            let (event, value_at) = self.next()?;
            let value = self.node(event, value_at)?;
            if plain_merge {
                match &value.value {
                    Value::Map(_) => merged.push(value),
                    Value::Seq(items) if items.iter().all(|i| i.as_map().is_some()) => {
                        merged.extend(items.iter().cloned())
                    }
                    _ => {
                        return Err(ComposeError::at(
                            value.at.as_ref(),
                            "",
                            "a << merge key takes a mapping or a list of mappings",
                        ))
                    }
                }
                continue;
            }
            if let Some((first, _)) = entries.iter().find(|(k, _)| k.name == name) {
                let first_line = first.at.as_ref().map_or(0, |l| l.line);
                return Err(ComposeError::at(
                    Some(&key_at),
                    "",
                    format!("mapping key {name:?} already defined at line {first_line}"),
                ));
            }
            entries.push((
                Key {
                    name,
                    at: Some(key_at),
                },
                value,
            ));
        }
        for m in merged {
            if let Value::Map(more) = m.value {
                for (k, v) in more {
                    if !entries.iter().any(|(e, _)| e.name == k.name) {
                        entries.push((k, v));
                    }
                }
            }
        }
        Ok(Value::Map(entries))
    }
}

/// The YAML 1.2 core schema's reading of a plain scalar.
fn plain_scalar(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return Value::Number(text.to_string()),
        _ => {}
    }
    if is_number(text) {
        Value::Number(text.to_string())
    } else {
        Value::Str(text.to_string())
    }
}

fn is_number(t: &str) -> bool {
    if let Some(h) = t.strip_prefix("0x") {
        return !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit());
    }
    if let Some(o) = t.strip_prefix("0o") {
        return !o.is_empty() && o.chars().all(|c| ('0'..='7').contains(&c));
    }
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match frac {
        None => !int.is_empty() && digits(int),
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
    };
    let exp_ok = match exp {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && digits(e)
        }
    };
    mantissa_ok && exp_ok
}

impl serde::Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match &self.value {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => {
                if let Ok(i) = n.parse::<i64>() {
                    s.serialize_i64(i)
                } else if let Ok(f) = n.parse::<f64>() {
                    s.serialize_f64(f)
                } else {
                    s.serialize_str(n)
                }
            }
            Value::Str(v) => s.serialize_str(v),
            Value::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(&k.name, v)?;
                }
                map.end()
            }
        }
    }
}

/// `node` as YAML text.
pub fn to_string(node: &Node) -> Result<String, ComposeError> {
    serde_saphyr::to_string(node).map_err(|e| ComposeError::new(format!("writing YAML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Node, ComposeError> {
        let f = Arc::new(SourceFile::new("compose.yaml", "/p/compose.yaml", text));
        parse(&f).map(|mut d| d.remove(0))
    }

    #[test]
    fn scalars_are_typed_by_the_core_schema_and_keep_their_line() {
        let n = read("a: 1\nb: '1'\nc: true\nd: yes\ne: ~\nf: 1.5e3\ng: x\nh: 0x1F\n").unwrap();
        assert_eq!(n.get("a").unwrap().value, Value::Number("1".into()));
        assert_eq!(n.get("b").unwrap().value, Value::Str("1".into()));
        assert_eq!(n.get("c").unwrap().value, Value::Bool(true));
        assert_eq!(n.get("d").unwrap().value, Value::Str("yes".into()));
        assert_eq!(n.get("e").unwrap().value, Value::Null);
        assert_eq!(n.get("f").unwrap().value, Value::Number("1.5e3".into()));
        assert_eq!(n.get("g").unwrap().value, Value::Str("x".into()));
        assert_eq!(n.get("h").unwrap().value, Value::Number("0x1F".into()));
        assert_eq!(n.get("g").unwrap().at.as_ref().unwrap().line, 7);
        assert_eq!(n.key("g").unwrap().at.as_ref().unwrap().line, 7);
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let n = read(
            "x-env: &env\n  A: 1\n  B: 2\ns:\n  e: *env\n  m:\n    <<: *env\n    B: 3\n  l:\n    <<: [{C: 1}, {C: 2, D: 4}]\n",
        )
        .unwrap();
        let s = n.get("s").unwrap();
        assert_eq!(
            s.get("e").unwrap().get("A").unwrap().value,
            Value::Number("1".into())
        );
        let m = s.get("m").unwrap();
        assert_eq!(m.get("B").unwrap().value, Value::Number("3".into()));
        assert_eq!(m.get("A").unwrap().value, Value::Number("1".into()));
        let l = s.get("l").unwrap();
        assert_eq!(l.get("C").unwrap().value, Value::Number("1".into()));
        assert_eq!(l.get("D").unwrap().value, Value::Number("4".into()));
    }

    #[test]
    fn tags_duplicates_and_syntax_errors() {
        let n = read("a: !reset null\nb: !override [1]\nc: !!str 12\n").unwrap();
        assert_eq!(n.get("a").unwrap().tag, Tag::Reset);
        assert_eq!(n.get("b").unwrap().tag, Tag::Override);
        assert_eq!(n.get("c").unwrap().value, Value::Str("12".into()));
        let e = read("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "compose.yaml:3: mapping key \"a\" already defined at line 1"
        );
        let e = read("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(e.to_string().starts_with("compose.yaml:"), "{e}");
        assert!(e.to_string().contains("invalid YAML"), "{e}");
        let e = read("a: !custom 1\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("compose.yaml:1: unknown YAML tag"),
            "{e}"
        );
    }

    #[test]
    fn written_back_as_yaml() {
        let n = read("b: '1'\na:\n  - x\n  - 2\nc: null\nd: 'true'\n").unwrap();
        let out = to_string(&n).unwrap();
        let again = read(&out).unwrap();
        assert_eq!(again, n, "{out}");
    }
}
