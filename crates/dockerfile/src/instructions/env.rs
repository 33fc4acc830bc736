//! `ENV key=value ...` (and the legacy `ENV key value`), and the `key=value`
//! list LABEL shares.

use super::copy::expand_word;
use super::flags::Flags;
use super::{at_least_one, Expand, InstrError};
use crate::ast::Node;

/// `ENV k=v ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub vars: Vec<KeyValue>,
}

/// A `key=value` of ENV or LABEL, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// True for the legacy `ENV key value` form (lint: LegacyKeyValueFormat).
    pub no_delim: bool,
}

impl Env {
    pub(crate) fn parse(node: &Node) -> Result<Env, InstrError> {
        Flags::new(&node.flags).parse()?;
        Ok(Env {
            vars: key_values(&node.args, "ENV")?,
        })
    }

    /// Keys and values expanded.
    pub fn expanded(&self, ex: &mut dyn Expand) -> Result<Env, InstrError> {
        Ok(Env {
            vars: expand_key_values(ex, &self.vars)?,
        })
    }
}

/// The parser's `key, value, delimiter` triples as key/value pairs.
pub(crate) fn key_values(args: &[String], cmd: &str) -> Result<Vec<KeyValue>, InstrError> {
    if args.is_empty() {
        return Err(at_least_one(cmd));
    }
    if args.len() % 3 != 0 {
        return Err(InstrError::new(format!(
            "Bad input to {cmd}, too many arguments"
        )));
    }
    args.chunks(3)
        .map(|c| {
            if c[0].is_empty() {
                return Err(InstrError::new(format!("{cmd} names can not be blank")));
            }
            Ok(KeyValue {
                key: c[0].clone(),
                value: c[1].clone(),
                no_delim: c[2].is_empty(),
            })
        })
        .collect()
}

pub(crate) fn expand_key_values(
    ex: &mut dyn Expand,
    kvs: &[KeyValue],
) -> Result<Vec<KeyValue>, InstrError> {
    kvs.iter()
        .map(|kv| {
            Ok(KeyValue {
                key: expand_word(ex, &kv.key)?,
                value: expand_word(ex, &kv.value)?,
                no_delim: kv.no_delim,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, node, parse, Table};
    use super::super::Kind;

    #[test]
    fn env_forms() {
        let Kind::Env(e) = parse(&node("env", &[], &["PORT", "8000", "=", "A", "b c", ""])).kind
        else {
            panic!()
        };
        assert_eq!(e.vars.len(), 2);
        assert_eq!(e.vars[0].key, "PORT");
        assert_eq!(e.vars[0].value, "8000");
        assert!(!e.vars[0].no_delim);
        assert!(e.vars[1].no_delim);
        assert_eq!(
            err(&node("env", &[], &[])),
            "ENV requires at least one argument"
        );
        assert_eq!(
            err(&node("env", &[], &["a", "b"])),
            "Bad input to ENV, too many arguments"
        );
    }

    #[test]
    fn env_expansion() {
        let mut t = Table::sample();
        let Kind::Env(e) = parse(&node("env", &[], &["HOME", "$DIR", "="]))
            .expanded(&mut t)
            .unwrap()
            .kind
        else {
            panic!()
        };
        assert_eq!(e.vars[0].value, "/srv");
    }
}
