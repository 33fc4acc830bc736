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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagKind {
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

/// A bool flag declared with [`Flags::bool`]: read it from the [`Parsed`] values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoolFlag(usize);

/// A string flag declared with [`Flags::string`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct StringFlag(usize);

/// A repeatable flag declared with [`Flags::list`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListFlag(usize);

/// The flags one instruction accepts. Each is declared once, by name, and the
/// handle returned is what reads its value after [`Flags::parse`] (BuildKit's
/// `AddString`/`AddBool`/`AddStrings` and `flag.Value`).
#[derive(Debug)]
pub(crate) struct Flags<'a> {
    args: &'a [String],
    defs: Vec<(&'static str, FlagKind)>,
}

impl<'a> Flags<'a> {
    /// The flag words of an instruction (`node.flags`); an instruction that
    /// declares nothing rejects every flag.
    pub(crate) fn new(args: &'a [String]) -> Self {
        Flags {
            args,
            defs: Vec::new(),
        }
    }

    fn declare(&mut self, name: &'static str, kind: FlagKind) -> usize {
        self.defs.push((name, kind));
        self.defs.len() - 1
    }

    pub(crate) fn bool(&mut self, name: &'static str) -> BoolFlag {
        BoolFlag(self.declare(name, FlagKind::Bool))
    }

    pub(crate) fn string(&mut self, name: &'static str) -> StringFlag {
        StringFlag(self.declare(name, FlagKind::String))
    }

    pub(crate) fn list(&mut self, name: &'static str) -> ListFlag {
        ListFlag(self.declare(name, FlagKind::List))
    }

    /// Checks every given flag against the declarations and records its value.
    pub(crate) fn parse(self) -> Result<Parsed, InstrError> {
        let mut values: Vec<Option<Value>> = vec![None; self.defs.len()];
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
            let Some(index) = self.defs.iter().position(|(n, _)| *n == name) else {
                let known: Vec<&str> = self.defs.iter().map(|(n, _)| *n).collect();
                let mut err = InstrError::new(format!("unknown flag: {flag_name}"));
                if let Some(s) = super::suggest(name, &known) {
                    err = err.with_help(format!("did you mean --{s}?"));
                }
                return Err(err);
            };
            let kind = self.defs[index].1;
            if values[index].is_some() && kind != FlagKind::List {
                return Err(InstrError::new(format!(
                    "duplicate flag specified: {flag_name}"
                )));
            }
            let missing = || InstrError::new(format!("missing a value on flag: {flag_name}"));
            match kind {
                FlagKind::Bool => {
                    let b = match value {
                        None => true,
                        Some("") => return Err(missing()),
                        Some(v) if v.eq_ignore_ascii_case("true") => true,
                        Some(v) if v.eq_ignore_ascii_case("false") => false,
                        Some(v) => {
                            return Err(InstrError::new(format!(
                                "expecting boolean value for flag {flag_name}, not: {v}"
                            )))
                        }
                    };
                    values[index] = Some(Value::Bool(b));
                }
                FlagKind::String => {
                    let v = value.ok_or_else(missing)?;
                    values[index] = Some(Value::String(v.to_string()));
                }
                FlagKind::List => {
                    let v = value.ok_or_else(missing)?;
                    match values[index].get_or_insert_with(|| Value::List(Vec::new())) {
                        Value::List(l) => l.push(v.to_string()),
                        _ => unreachable!("list flags only ever hold lists"),
                    }
                }
            }
        }
        Ok(Parsed {
            names: self.defs.iter().map(|(n, _)| *n).collect(),
            values,
        })
    }
}

/// Flag values after a successful parse, read through the declared handles.
#[derive(Debug)]
pub(crate) struct Parsed {
    names: Vec<&'static str>,
    values: Vec<Option<Value>>,
}

impl Parsed {
    /// `Some(b)` when the bool flag was given, `None` when it was not.
    pub(crate) fn bool_opt(&self, flag: BoolFlag) -> Option<bool> {
        match self.values[flag.0] {
            Some(Value::Bool(b)) => Some(b),
            _ => None,
        }
    }

    /// The bool flag's value, false when not given.
    pub(crate) fn bool(&self, flag: BoolFlag) -> bool {
        self.bool_opt(flag).unwrap_or(false)
    }

    /// The string flag's value when given (possibly empty: `--from=`).
    pub(crate) fn string(&self, flag: StringFlag) -> Option<&str> {
        match &self.values[flag.0] {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The string flag's value, treating an empty value like an absent one
    /// (BuildKit's `flag.Value != ""` checks).
    pub(crate) fn non_empty(&self, flag: StringFlag) -> Option<String> {
        self.string(flag)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// All values of a repeatable flag, in order.
    pub(crate) fn list(&self, flag: ListFlag) -> Vec<String> {
        match &self.values[flag.0] {
            Some(Value::List(l)) => l.clone(),
            _ => Vec::new(),
        }
    }

    /// Names of the flags that were given, sorted.
    pub(crate) fn used_names(&self) -> Vec<String> {
        let mut used: Vec<String> = self
            .names
            .iter()
            .zip(&self.values)
            .filter(|(_, v)| v.is_some())
            .map(|(n, _)| n.to_string())
            .collect();
        used.sort();
        used
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
        let mut f = Flags::new(&a);
        f.bool("link");
        f.string("from");
        f.list("exclude");
        f.parse().unwrap_err().message
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
            let mut f = Flags::new(&a);
            let link = f.bool("link");
            let p = f.parse().unwrap();
            assert_eq!(p.bool_opt(link), Some(want), "{given:?}");
        }
        let a = args(&[]);
        let mut f = Flags::new(&a);
        let link = f.bool("link");
        let p = f.parse().unwrap();
        assert_eq!(p.bool_opt(link), None);
        assert!(!p.bool(link));
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
        let mut f = Flags::new(&a);
        let from = f.string("from");
        let p = f.parse().unwrap();
        assert_eq!(p.string(from), Some(""));
        assert_eq!(p.non_empty(from), None);
        let a = args(&["--from=a=b"]);
        let mut f = Flags::new(&a);
        let from = f.string("from");
        let p = f.parse().unwrap();
        assert_eq!(p.string(from), Some("a=b"));
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
        let mut f = Flags::new(&a);
        let exclude = f.list("exclude");
        let p = f.parse().unwrap();
        assert_eq!(p.list(exclude), vec!["a", "b"]);
        assert_eq!(err(&["--exclude"]), "missing a value on flag: --exclude");
    }

    #[test]
    fn unknown_flags_and_terminator() {
        assert_eq!(err(&["--foo"]), "unknown flag: --foo");
        assert_eq!(err(&["--foo=bar"]), "unknown flag: --foo");
        assert_eq!(err(&["-x"]), "arg should start with -- : -x");
        // `--` stops flag processing: nothing after it is checked.
        let a = args(&["--link", "--", "--foo"]);
        let mut f = Flags::new(&a);
        let link = f.bool("link");
        let p = f.parse().unwrap();
        assert!(p.bool(link));
        let a = args(&["--lnk"]);
        let mut f = Flags::new(&a);
        f.bool("link");
        let e = f.parse().unwrap_err();
        assert_eq!(e.help.as_deref(), Some("did you mean --link?"));
    }

    #[test]
    fn used_names_are_sorted() {
        let a = args(&["--network=none", "--mount=a", "--device=x"]);
        let mut f = Flags::new(&a);
        f.list("mount");
        f.string("network");
        f.string("security");
        f.list("device");
        let p = f.parse().unwrap();
        assert_eq!(p.used_names(), vec!["device", "mount", "network"]);
    }
}
