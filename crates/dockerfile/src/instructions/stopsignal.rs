//! `STOPSIGNAL signal`.

use super::copy::expand_word;
use super::{single_argument, Expand, InstrError};
use crate::ast::Node;

/// `STOPSIGNAL signal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSignal {
    pub signal: String,
}

impl StopSignal {
    pub(crate) fn parse(node: &Node) -> Result<StopSignal, InstrError> {
        // Like BuildKit, STOPSIGNAL does not look at flags.
        Ok(StopSignal {
            signal: single_argument(node, "STOPSIGNAL", false)?,
        })
    }

    pub fn expanded(&self, ex: &mut dyn Expand) -> Result<StopSignal, InstrError> {
        Ok(StopSignal {
            signal: expand_word(ex, &self.signal)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{node, parse, Table};
    use super::super::Kind;

    #[test]
    fn stopsignal_forms() {
        let Kind::StopSignal(s) = parse(&node("stopsignal", &[], &["SIGTERM"])).kind else {
            panic!()
        };
        assert_eq!(s.signal, "SIGTERM");
        // Flags are not looked at.
        let Kind::StopSignal(s) = parse(&node("stopsignal", &["--x"], &["9"])).kind else {
            panic!()
        };
        assert_eq!(s.signal, "9");
        let Kind::StopSignal(s) = parse(&node("stopsignal", &[], &["$U"]))
            .expanded(&mut Table::sample())
            .unwrap()
            .kind
        else {
            panic!()
        };
        assert_eq!(s.signal, "app");
    }
}
