//! `ARG name[=default] ...`. Values are not expanded here: the plan decides
//! what an ARG holds (`Plan::arg_value`).

use super::{at_least_one, InstrError};
use crate::ast::Node;

/// `ARG name[=default] ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub args: Vec<ArgDecl>,
}

/// One name of an `ARG` instruction, with its default (unexpanded) if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub key: String,
    pub default: Option<String>,
}

impl Arg {
    pub(crate) fn parse(node: &Node) -> Result<Arg, InstrError> {
        // BuildKit never parses ARG's flags: they are ignored, not rejected.
        if node.args.is_empty() {
            return Err(at_least_one("ARG"));
        }
        let args = node
            .args
            .iter()
            .map(|a| match a.split_once('=') {
                Some(("", _)) => Err(InstrError::new("ARG names can not be blank")),
                Some((k, v)) => Ok(ArgDecl {
                    key: k.to_string(),
                    default: Some(v.to_string()),
                }),
                None => Ok(ArgDecl {
                    key: a.clone(),
                    default: None,
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Arg { args })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, node, parse, Table};
    use super::super::Kind;
    use super::*;

    #[test]
    fn arg_forms() {
        let Kind::Arg(a) = parse(&node("arg", &[], &["A", "B=2", "C="])).kind else {
            panic!()
        };
        assert_eq!(
            a.args,
            vec![
                ArgDecl {
                    key: "A".into(),
                    default: None
                },
                ArgDecl {
                    key: "B".into(),
                    default: Some("2".into())
                },
                ArgDecl {
                    key: "C".into(),
                    default: Some("".into())
                },
            ]
        );
        assert_eq!(
            err(&node("arg", &[], &["=x"])),
            "ARG names can not be blank"
        );
        assert_eq!(
            err(&node("arg", &[], &[])),
            "ARG requires at least one argument"
        );
    }

    #[test]
    fn arg_is_not_expanded() {
        let mut t = Table::sample();
        let arg = parse(&node("arg", &[], &["X=$DIR"]));
        assert_eq!(arg.expanded(&mut t).unwrap(), arg);
    }
}
