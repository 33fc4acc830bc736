//! `VOLUME path ...` (or the JSON form).

use super::copy::expand_word;
use super::flags::Flags;
use super::{at_least_one, Expand, InstrError};
use crate::ast::Node;

/// `VOLUME path ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub paths: Vec<String>,
}

impl Volume {
    pub(crate) fn parse(node: &Node) -> Result<Volume, InstrError> {
        if node.args.is_empty() {
            return Err(at_least_one("VOLUME"));
        }
        Flags::new(&node.flags).parse()?;
        let mut paths = Vec::with_capacity(node.args.len());
        for v in &node.args {
            let v = v.trim();
            if v.is_empty() {
                return Err(InstrError::new(
                    "VOLUME specified can not be an empty string",
                ));
            }
            paths.push(v.to_string());
        }
        Ok(Volume { paths })
    }

    pub fn expanded(&self, ex: &mut dyn Expand) -> Result<Volume, InstrError> {
        Ok(Volume {
            paths: self
                .paths
                .iter()
                .map(|p| expand_word(ex, p))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, node, parse, Table};
    use super::super::Kind;

    #[test]
    fn volume_forms() {
        let Kind::Volume(v) = parse(&node("volume", &[], &["/data", " /logs "])).kind else {
            panic!()
        };
        assert_eq!(v.paths, vec!["/data", "/logs"]);
        assert_eq!(
            err(&node("volume", &[], &["  "])),
            "VOLUME specified can not be an empty string"
        );
        assert_eq!(
            err(&node("volume", &[], &[])),
            "VOLUME requires at least one argument"
        );
        let Kind::Volume(v) = parse(&node("volume", &[], &["$DIR/data"]))
            .expanded(&mut Table::sample())
            .unwrap()
            .kind
        else {
            panic!()
        };
        assert_eq!(v.paths, vec!["/srv/data"]);
    }
}
