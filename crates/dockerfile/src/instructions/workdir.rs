//! `WORKDIR path`.

use super::copy::expand_word;
use super::{single_argument, Expand, InstrError};
use crate::ast::Node;

/// `WORKDIR path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workdir {
    pub path: String,
}

impl Workdir {
    pub(crate) fn parse(node: &Node) -> Result<Workdir, InstrError> {
        Ok(Workdir {
            path: single_argument(node, "WORKDIR", true)?,
        })
    }

    pub fn expanded(&self, ex: &mut dyn Expand) -> Result<Workdir, InstrError> {
        Ok(Workdir {
            path: expand_word(ex, &self.path)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, node, parse, Table};
    use super::super::{Kind, ShellExpand};

    #[test]
    fn workdir_forms() {
        let Kind::Workdir(w) = parse(&node("workdir", &[], &["/home/app"])).kind else {
            panic!()
        };
        assert_eq!(w.path, "/home/app");
        assert_eq!(
            err(&node("workdir", &["--x"], &["/a"])),
            "unknown flag: --x"
        );
    }

    #[test]
    fn workdir_expansion() {
        let mut t = Table::sample();
        let Kind::Workdir(w) = parse(&node("workdir", &[], &["$DIR/x"]))
            .expanded(&mut t)
            .unwrap()
            .kind
        else {
            panic!()
        };
        assert_eq!(w.path, "/srv/x");
        assert_eq!(
            parse(&node("workdir", &[], &["$BAD"]))
                .expanded(&mut t)
                .unwrap_err()
                .message,
            "bad substitution"
        );
        let env: std::collections::BTreeMap<String, String> =
            [("APP".to_string(), "/srv/app".to_string())].into();
        let mut ex = ShellExpand::new('\\', &env);
        let Kind::Workdir(w) = parse(&node("workdir", &[], &["${APP}/bin"]))
            .expanded(&mut ex)
            .unwrap()
            .kind
        else {
            panic!()
        };
        assert_eq!(w.path, "/srv/app/bin");
    }
}
