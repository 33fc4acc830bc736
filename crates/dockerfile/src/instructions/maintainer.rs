//! `MAINTAINER name` (deprecated).

use super::{single_argument, InstrError};
use crate::ast::Node;

/// `MAINTAINER name` (deprecated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintainer {
    pub name: String,
}

impl Maintainer {
    pub(crate) fn parse(node: &Node) -> Result<Maintainer, InstrError> {
        Ok(Maintainer {
            name: single_argument(node, "MAINTAINER", true)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, node, parse};
    use super::super::Kind;

    #[test]
    fn maintainer_forms() {
        let Kind::Maintainer(m) = parse(&node("maintainer", &[], &["me"])).kind else {
            panic!()
        };
        assert_eq!(m.name, "me");
        assert_eq!(
            err(&node("maintainer", &["--boo"], &["joe"])),
            "unknown flag: --boo"
        );
    }
}
