//! `ENTRYPOINT` (shell or exec form). `ENTRYPOINT []` clears it.

use super::flags::Flags;
use super::{CommandLine, InstrError};
use crate::ast::Node;

/// `ENTRYPOINT`. `ENTRYPOINT []` clears it (`Exec(vec![])`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entrypoint {
    pub command: CommandLine,
}

impl Entrypoint {
    pub(crate) fn parse(node: &Node) -> Result<Entrypoint, InstrError> {
        Flags::new(&node.flags).parse()?;
        Ok(Entrypoint {
            command: CommandLine::from_args(&node.args, node.json),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, json, node, parse};
    use super::super::{CommandLine, Kind};

    #[test]
    fn entrypoint_forms() {
        let Kind::Entrypoint(e) = parse(&json(node("entrypoint", &[], &[]))).kind else {
            panic!()
        };
        assert_eq!(e.command, CommandLine::Exec(vec![]));
        let Kind::Entrypoint(e) = parse(&node("entrypoint", &[], &["/bin/tini --"])).kind else {
            panic!()
        };
        assert_eq!(e.command, CommandLine::Shell("/bin/tini --".into()));
        assert_eq!(
            err(&node("entrypoint", &["--x"], &["a"])),
            "unknown flag: --x"
        );
    }
}
