//! `EXPOSE port[/proto] ...`.

use super::flags::Flags;
use super::{at_least_one, Expand, InstrError};
use crate::ast::Node;

/// `EXPOSE port[/proto] ...`; ports sorted as BuildKit sorts them, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expose {
    pub ports: Vec<String>,
}

impl Expose {
    pub(crate) fn parse(node: &Node) -> Result<Expose, InstrError> {
        if node.args.is_empty() {
            return Err(at_least_one("EXPOSE"));
        }
        Flags::new(&node.flags).parse()?;
        let mut ports = node.args.clone();
        ports.sort();
        Ok(Expose { ports })
    }

    /// Each port expanded; one word may become several (`EXPOSE $PORTS`).
    pub fn expanded(&self, ex: &mut dyn Expand) -> Result<Expose, InstrError> {
        let mut ports = Vec::with_capacity(self.ports.len());
        for p in &self.ports {
            ports.extend(ex.words(p).map_err(InstrError::new)?);
        }
        Ok(Expose { ports })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, node, parse, Table};
    use super::super::{Kind, ShellExpand};

    #[test]
    fn expose_forms() {
        let Kind::Expose(e) = parse(&node("expose", &[], &["8080/tcp", "443", "8000"])).kind else {
            panic!()
        };
        assert_eq!(e.ports, vec!["443", "8000", "8080/tcp"]);
        assert_eq!(
            err(&node("expose", &[], &[])),
            "EXPOSE requires at least one argument"
        );
    }

    #[test]
    fn expose_expansion_splits_words() {
        let Kind::Expose(e) = parse(&node("expose", &[], &["$P"]))
            .expanded(&mut Table::sample())
            .unwrap()
            .kind
        else {
            panic!()
        };
        assert_eq!(e.ports, vec!["80", "443"]);
        let env: std::collections::BTreeMap<String, String> =
            [("PORTS".to_string(), "80 443".to_string())].into();
        let mut ex = ShellExpand::new('\\', &env);
        let Kind::Expose(e) = parse(&node("expose", &[], &["$PORTS"]))
            .expanded(&mut ex)
            .unwrap()
            .kind
        else {
            panic!()
        };
        assert_eq!(e.ports, vec!["80", "443"]);
    }
}
