//! `CMD`: the image's default command (shell or exec form).

use super::flags::Flags;
use super::{CommandLine, InstrError};
use crate::ast::Node;

/// `CMD`: the image's default command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub command: CommandLine,
}

impl Cmd {
    pub(crate) fn parse(node: &Node) -> Result<Cmd, InstrError> {
        Flags::new(&node.flags).parse()?;
        Ok(Cmd {
            command: CommandLine::from_args(&node.args, node.json),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, json, node, parse};
    use super::super::{CommandLine, Kind};

    #[test]
    fn cmd_forms() {
        let Kind::Cmd(c) = parse(&json(node("cmd", &[], &["npm", "start"]))).kind else {
            panic!()
        };
        assert_eq!(
            c.command,
            CommandLine::Exec(vec!["npm".into(), "start".into()])
        );
        let Kind::Cmd(c) = parse(&node("cmd", &[], &["npm start"])).kind else {
            panic!()
        };
        assert_eq!(c.command, CommandLine::Shell("npm start".into()));
        assert_eq!(err(&node("cmd", &["--x"], &["a"])), "unknown flag: --x");
    }
}
