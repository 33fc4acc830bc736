//! `LABEL key=value ...`.

use super::env::{expand_key_values, key_values, KeyValue};
use super::flags::Flags;
use super::{Expand, InstrError};
use crate::ast::Node;

/// `LABEL k=v ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub labels: Vec<KeyValue>,
}

impl Label {
    pub(crate) fn parse(node: &Node) -> Result<Label, InstrError> {
        Flags::new(&node.flags).parse()?;
        Ok(Label {
            labels: key_values(&node.args, "LABEL")?,
        })
    }

    /// Keys and values expanded.
    pub fn expanded(&self, ex: &mut dyn Expand) -> Result<Label, InstrError> {
        Ok(Label {
            labels: expand_key_values(ex, &self.labels)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, node, parse, Table};
    use super::super::Kind;

    #[test]
    fn label_forms() {
        assert_eq!(
            err(&node("label", &[], &["", "v", "="])),
            "LABEL names can not be blank"
        );
        let Kind::Label(l) = parse(&node("label", &[], &["a.b", "c", "="])).kind else {
            panic!()
        };
        assert_eq!(l.labels[0].key, "a.b");
    }

    #[test]
    fn label_expansion() {
        let mut t = Table::sample();
        let Kind::Label(l) = parse(&node("label", &[], &["$U.x", "$DIR", "="]))
            .expanded(&mut t)
            .unwrap()
            .kind
        else {
            panic!()
        };
        assert_eq!(
            (l.labels[0].key.as_str(), l.labels[0].value.as_str()),
            ("app.x", "/srv")
        );
    }
}
