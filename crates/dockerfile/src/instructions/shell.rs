//! `SHELL ["executable", "param"...]`: the shell of later shell-form commands.

use super::flags::Flags;
use super::{at_least_one, InstrError};
use crate::ast::Node;

/// `SHELL ["executable", "param"...]` (JSON form only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shell {
    pub shell: Vec<String>,
}

impl Shell {
    pub(crate) fn parse(node: &Node) -> Result<Shell, InstrError> {
        Flags::new(&node.flags).parse()?;
        if node.args.is_empty() {
            return Err(at_least_one("SHELL"));
        }
        if !node.json {
            return Err(InstrError::new(
                "SHELL requires the arguments to be in JSON form",
            ));
        }
        Ok(Shell {
            shell: node.args.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, json, node, parse};
    use super::super::Kind;

    #[test]
    fn shell_forms() {
        let Kind::Shell(s) = parse(&json(node("shell", &[], &["/bin/bash", "-c"]))).kind else {
            panic!()
        };
        assert_eq!(s.shell, vec!["/bin/bash", "-c"]);
        assert_eq!(
            err(&node("shell", &[], &["/bin/bash -c"])),
            "SHELL requires the arguments to be in JSON form"
        );
        assert_eq!(
            err(&json(node("shell", &[], &[]))),
            "SHELL requires at least one argument"
        );
    }
}
