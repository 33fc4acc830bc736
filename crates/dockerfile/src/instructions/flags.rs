//! BuildKit's instruction flag parser (`BFlags`): the `--name[=value]` words
//! that precede an instruction's arguments.
//!
//! Semantics, as BuildKit has them:
//! - a bool flag is `--link`, `--link=true` or `--link=false` (case-insensitive);
//!   `--link=` is an error;
//! - a string flag needs `=`: `--from=builder`; `--from` alone is an error and
//!   `--from=` sets the empty string. `--from builder` is never accepted (the
//!   parser hands `builder` over as an argument, not as the flag's value);
//! - only list flags (`--mount`, `--exclude`, ...) may be repeated;
//! - a lone `--` ends flag processing.

use super::InstrError;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagKind {
    Bool,
    String,
    List,
}

/// The value a flag ended up with after parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Bool(bool),
    String(String),
    List(Vec<String>),
}

/// The flags one instruction accepts, and after [`Flags::parse`] the values given.
#[derive(Debug)]
pub(crate) struct Flags<'a> {
    args: &'a [String],
    defs: Vec<(&'static str, FlagKind)>,
    used: BTreeMap<&'static str, Value>,
}

impl<'a> Flags<'a> {
    pub(crate) fn new(args: &'a [String]) -> Self {
        Flags {
            args,
            defs: Vec::new(),
            used: BTreeMap::new(),
        }
    }

    pub(crate) fn bool(mut self, name: &'static str) -> Self {
        self.defs.push((name, FlagKind::Bool));
        self
    }

    pub(crate) fn string(mut self, name: &'static str) -> Self {
        self.defs.push((name, FlagKind::String));
        self
    }

    pub(crate) fn list(mut self, name: &'static str) -> Self {
        self.defs.push((name, FlagKind::List));
        self
    }

    /// Checks every given flag against the definitions and records its value.
    pub(crate) fn parse(mut self) -> Result<Parsed, InstrError> {
        for arg in self.args {
            if arg == "--" {
                break;
            }
            let Some(body) = arg.strip_prefix("--") else {
                return Err(InstrError::new(format!("arg should start with -- : {arg}")));
            };
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let flag_name = format!("--{name}");
            let Some(&(def_name, kind)) = self.defs.iter().find(|(n, _)| *n == name) else {
                let known: Vec<&str> = self.defs.iter().map(|(n, _)| *n).collect();
                let mut err = InstrError::new(format!("unknown flag: {flag_name}"));
                if let Some(s) = super::suggest(name, &known) {
                    err = err.with_help(format!("did you mean --{s}?"));
                }
                return Err(err);
            };
            if self.used.contains_key(def_name) && kind != FlagKind::List {
                return Err(InstrError::new(format!(
                    "duplicate flag specified: {flag_name}"
                )));
            }
            match kind {
                FlagKind::Bool => {
                    let b = match value {
                        None => true,
                        Some("") => {
                            return Err(InstrError::new(format!(
                                "missing a value on flag: {flag_name}"
                            )))
                        }
                        Some(v) if v.eq_ignore_ascii_case("true") => true,
                        Some(v) if v.eq_ignore_ascii_case("false") => false,
                        Some(v) => {
                            return Err(InstrError::new(format!(
                                "expecting boolean value for flag {flag_name}, not: {v}"
                            )))
                        }
                    };
                    self.used.insert(def_name, Value::Bool(b));
                }
                FlagKind::String => {
                    let Some(v) = value else {
                        return Err(InstrError::new(format!(
                            "missing a value on flag: {flag_name}"
                        )));
                    };
                    self.used.insert(def_name, Value::String(v.to_string()));
                }
                FlagKind::List => {
                    let Some(v) = value else {
                        return Err(InstrError::new(format!(
                            "missing a value on flag: {flag_name}"
                        )));
                    };
                    match self
                        .used
                        .entry(def_name)
                        .or_insert_with(|| Value::List(Vec::new()))
                    {
                        Value::List(l) => l.push(v.to_string()),
                        _ => unreachable!("list flags only ever hold lists"),
                    }
                }
            }
        }
        Ok(Parsed { used: self.used })
    }
}

/// Flag values after a successful parse.
#[derive(Debug)]
pub(crate) struct Parsed {
    used: BTreeMap<&'static str, Value>,
}

impl Parsed {
    /// `Some(b)` when the bool flag was given, `None` when it was not.
    pub(crate) fn bool_opt(&self, name: &str) -> Option<bool> {
        match self.used.get(name) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// The bool flag's value, false when not given.
    pub(crate) fn bool(&self, name: &str) -> bool {
        self.bool_opt(name).unwrap_or(false)
    }

    /// The string flag's value when given (possibly empty: `--from=`).
    pub(crate) fn string(&self, name: &str) -> Option<&str> {
        match self.used.get(name) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The string flag's value, treating an empty value like an absent one
    /// (BuildKit's `flag.Value != ""` checks).
    pub(crate) fn non_empty(&self, name: &str) -> Option<String> {
        self.string(name)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// All values of a repeatable flag, in order.
    pub(crate) fn list(&self, name: &str) -> Vec<String> {
        match self.used.get(name) {
            Some(Value::List(l)) => l.clone(),
            _ => Vec::new(),
        }
    }

    /// Names of the flags that were given, sorted.
    pub(crate) fn used_names(&self) -> Vec<String> {
        self.used.keys().map(|k| k.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn err(a: &[&str]) -> String {
        let a = args(a);
        Flags::new(&a)
            .bool("link")
            .string("from")
            .list("exclude")
            .parse()
            .unwrap_err()
            .message
    }

    #[test]
    fn bool_forms() {
        for (given, want) in [
            (vec!["--link"], true),
            (vec!["--link=true"], true),
            (vec!["--link=TRUE"], true),
            (vec!["--link=false"], false),
            (vec!["--link=False"], false),
        ] {
            let a = args(&given);
            let p = Flags::new(&a).bool("link").parse().unwrap();
            assert_eq!(p.bool_opt("link"), Some(want), "{given:?}");
        }
        let a = args(&[]);
        let p = Flags::new(&a).bool("link").parse().unwrap();
        assert_eq!(p.bool_opt("link"), None);
        assert!(!p.bool("link"));
    }

    #[test]
    fn bool_errors() {
        assert_eq!(err(&["--link="]), "missing a value on flag: --link");
        assert_eq!(
            err(&["--link=yes"]),
            "expecting boolean value for flag --link, not: yes"
        );
    }

    #[test]
    fn string_flags_need_equals() {
        assert_eq!(err(&["--from"]), "missing a value on flag: --from");
        let a = args(&["--from="]);
        let p = Flags::new(&a).string("from").parse().unwrap();
        assert_eq!(p.string("from"), Some(""));
        assert_eq!(p.non_empty("from"), None);
        let a = args(&["--from=a=b"]);
        let p = Flags::new(&a).string("from").parse().unwrap();
        assert_eq!(p.string("from"), Some("a=b"));
    }

    #[test]
    fn duplicates_and_lists() {
        assert_eq!(
            err(&["--from=a", "--from=b"]),
            "duplicate flag specified: --from"
        );
        assert_eq!(
            err(&["--link", "--link"]),
            "duplicate flag specified: --link"
        );
        let a = args(&["--exclude=a", "--exclude=b"]);
        let p = Flags::new(&a).list("exclude").parse().unwrap();
        assert_eq!(p.list("exclude"), vec!["a", "b"]);
        assert_eq!(err(&["--exclude"]), "missing a value on flag: --exclude");
    }

    #[test]
    fn unknown_flags_and_terminator() {
        assert_eq!(err(&["--foo"]), "unknown flag: --foo");
        assert_eq!(err(&["--foo=bar"]), "unknown flag: --foo");
        assert_eq!(err(&["-x"]), "arg should start with -- : -x");
        // `--` stops flag processing: nothing after it is checked.
        let a = args(&["--link", "--", "--foo"]);
        let p = Flags::new(&a).bool("link").parse().unwrap();
        assert!(p.bool("link"));
        let a = args(&["--lnk"]);
        let e = Flags::new(&a).bool("link").parse().unwrap_err();
        assert_eq!(e.help.as_deref(), Some("did you mean --link?"));
    }
}
