//! `USER user[:group]`.

use super::copy::expand_word;
use super::{single_argument, Expand, InstrError};
use crate::ast::Node;

/// `USER user[:group]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub user: String,
}

impl User {
    pub(crate) fn parse(node: &Node) -> Result<User, InstrError> {
        Ok(User {
            user: single_argument(node, "USER", true)?,
        })
    }

    pub fn expanded(&self, ex: &mut dyn Expand) -> Result<User, InstrError> {
        Ok(User {
            user: expand_word(ex, &self.user)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{node, parse, Table};
    use super::super::Kind;

    #[test]
    fn user_forms() {
        let Kind::User(u) = parse(&node("user", &[], &["nodejs"])).kind else {
            panic!()
        };
        assert_eq!(u.user, "nodejs");
        let Kind::User(u) = parse(&node("user", &[], &["$U"]))
            .expanded(&mut Table::sample())
            .unwrap()
            .kind
        else {
            panic!()
        };
        assert_eq!(u.user, "app");
    }
}
