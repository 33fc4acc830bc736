//! `FROM [--platform=P] image [AS name]`: starts a stage.

use super::flags::Flags;
use super::InstrError;
use crate::ast::Node;

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// The base as written: an image reference, a previous stage's name or
    /// `scratch`; may contain meta ARGs (`FROM node:${NODE_VERSION}`).
    pub base: String,
    /// `--platform` as written (may contain meta ARGs such as `$BUILDPLATFORM`).
    pub platform: Option<String>,
    /// Stage name after `AS`, lower-cased (stage names are case-insensitive).
    pub name: Option<String>,
}

/// BuildKit's valid stage names: `^[a-z][a-z0-9-_.]*$` (after lower-casing).
pub fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

impl From {
    pub(crate) fn parse(node: &Node) -> Result<From, InstrError> {
        let args = &node.args;
        let name = match args.len() {
            3 if args[1].eq_ignore_ascii_case("as") => {
                let name = args[2].to_lowercase();
                if !is_valid_stage_name(&name) {
                    return Err(InstrError::new(format!(
                        "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                        args[2]
                    )));
                }
                Some(name)
            }
            1 => None,
            _ => {
                return Err(InstrError::new(
                    "FROM requires either one or three arguments",
                ))
            }
        };
        let mut flags = Flags::new(&node.flags);
        let platform = flags.string("platform");
        let f = flags.parse()?;
        Ok(From {
            base: args[0].clone(),
            platform: f.string(platform).map(str::to_string),
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, node, parse};
    use super::super::Kind;
    use super::*;

    #[test]
    fn from_forms() {
        let Kind::From(f) = parse(&node("from", &[], &["alpine:3.19"])).kind else {
            panic!()
        };
        assert_eq!(f.base, "alpine:3.19");
        assert_eq!(f.name, None);
        assert_eq!(f.platform, None);
        let i = parse(&node(
            "from",
            &["--platform=$BUILDPLATFORM"],
            &["golang", "AS", "Build-Env"],
        ));
        let Kind::From(f) = i.kind else { panic!() };
        assert_eq!(f.name.as_deref(), Some("build-env"));
        assert_eq!(f.platform.as_deref(), Some("$BUILDPLATFORM"));
        assert_eq!(i.origin.start_line, 3);
    }

    #[test]
    fn from_errors() {
        assert_eq!(
            err(&node("from", &[], &["a", "b"])),
            "FROM requires either one or three arguments"
        );
        assert_eq!(
            err(&node("from", &[], &["a", "to", "b"])),
            "FROM requires either one or three arguments"
        );
        assert_eq!(
            err(&node("from", &[], &["a", "as", "1st"])),
            "invalid name for build stage: \"1st\", name can't start with a number or contain symbols"
        );
        assert_eq!(
            err(&node("from", &[], &["a", "as", "a/b"])),
            "invalid name for build stage: \"a/b\", name can't start with a number or contain symbols"
        );
        assert_eq!(
            err(&node("from", &["--plat=x"], &["a"])),
            "unknown flag: --plat"
        );
        assert_eq!(
            err(&node("from", &["--platform"], &["a"])),
            "missing a value on flag: --platform"
        );
    }

    #[test]
    fn stage_name_rule() {
        for ok in ["a", "builder", "a-b_c.d", "x1"] {
            assert!(is_valid_stage_name(ok), "{ok}");
        }
        for bad in ["", "1a", "-a", "A", "a b", "a:b"] {
            assert!(!is_valid_stage_name(bad), "{bad}");
        }
    }
}
