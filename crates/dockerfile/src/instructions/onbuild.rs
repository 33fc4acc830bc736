//! `ONBUILD instruction`: a trigger stored in the image for later builds.

use super::flags::Flags;
use super::{at_least_one, parse_node, InstrError, Instruction};
use crate::ast::Node;

/// `ONBUILD instruction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Onbuild {
    /// The trigger as stored in the image config (`ONBUILD` stripped, heredocs appended).
    pub expression: String,
    /// The trigger, parsed and checked now (BuildKit only checks it when a
    /// later build uses the image; kiln reports mistakes where they are written).
    pub trigger: Box<Instruction>,
}

impl Onbuild {
    pub(crate) fn parse(node: &Node, escape: char) -> Result<Onbuild, InstrError> {
        let Some(sub) = node.sub.as_deref() else {
            return Err(at_least_one("ONBUILD"));
        };
        Flags::new(&node.flags).parse()?;
        let trigger_kw = sub.keyword.to_ascii_uppercase();
        match trigger_kw.as_str() {
            "ONBUILD" => {
                return Err(InstrError::new(
                    "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                ))
            }
            "MAINTAINER" | "FROM" => {
                return Err(InstrError::new(format!(
                    "{trigger_kw} isn't allowed as an ONBUILD trigger"
                )))
            }
            _ => {}
        }
        let trimmed = node.original.trim_start();
        let mut expression = if trimmed
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("onbuild"))
        {
            trimmed[7..].trim_start().to_string()
        } else {
            trimmed.to_string()
        };
        for h in &node.heredocs {
            expression.push('\n');
            expression.push_str(&h.content);
            expression.push_str(&h.name);
        }
        let trigger = parse_node(sub, escape)?;
        Ok(Onbuild {
            expression,
            trigger: Box::new(trigger),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, node, parse};
    use super::super::Kind;
    use crate::ast::Node;

    fn onbuild(sub: Node) -> Node {
        let mut n = node("onbuild", &[], &[]);
        n.original = format!("ONBUILD {}", sub.original);
        n.sub = Some(Box::new(sub));
        n
    }

    #[test]
    fn onbuild_triggers() {
        let Kind::Onbuild(o) = parse(&onbuild(node("run", &[], &["make"]))).kind else {
            panic!()
        };
        assert_eq!(o.expression, "RUN make");
        assert!(matches!(o.trigger.kind, Kind::Run(_)));
        assert_eq!(
            err(&onbuild(onbuild(node("run", &[], &["x"])))),
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        );
        assert_eq!(
            err(&onbuild(node("from", &[], &["scratch"]))),
            "FROM isn't allowed as an ONBUILD trigger"
        );
        assert_eq!(
            err(&onbuild(node("maintainer", &[], &["me"]))),
            "MAINTAINER isn't allowed as an ONBUILD trigger"
        );
        assert_eq!(
            err(&node("onbuild", &[], &[])),
            "ONBUILD requires at least one argument"
        );
        assert_eq!(
            err(&onbuild(node("copy", &["--bad"], &["a", "b"]))),
            "unknown flag: --bad"
        );
    }
}
