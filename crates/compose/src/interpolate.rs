//! `${VAR}` interpolation (`12-interpolation.md`, with compose-go's behaviour):
//! `$VAR`, `${VAR}`, `${VAR:-default}` / `${VAR-default}`, `${VAR:?error}` /
//! `${VAR?error}`, `${VAR:+replacement}` / `${VAR+replacement}`, defaults and
//! messages interpolated in turn (nesting), `$$` for a literal `$`. A `$` that
//! starts no variable stays as it is; a `${` that starts no valid one is an
//! error. Values are interpolated, keys are not.

use crate::error::ComposeError;
use crate::yaml::{Node, Value};

/// Why a template could not be interpolated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateError {
    /// `${` not followed by a valid name and operator.
    Invalid(String),
    /// `${VAR:?message}` or `${VAR?message}` with the variable missing.
    Required { name: String, message: String },
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::Invalid(t) => write!(f, "invalid interpolation format: {t:?}"),
            TemplateError::Required { name, message } if message.is_empty() => {
                write!(f, "required variable {name} is missing a value")
            }
            TemplateError::Required { name, message } => {
                write!(f, "required variable {name} is missing a value: {message}")
            }
        }
    }
}

/// The variables interpolation reads, and the names of those it found unset.
pub struct Interpolator<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Variables used without a value and without a default, in order of first use.
    pub unset: Vec<String>,
}

impl<'a> Interpolator<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Interpolator<'a> {
        Interpolator {
            lookup,
            unset: Vec::new(),
        }
    }

    /// `template` with its variables replaced.
    pub fn substitute(&mut self, template: &str) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut rest = template;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
            } else if let Some(body) = after.strip_prefix('{') {
                let end = closing_brace(body)
                    .ok_or_else(|| TemplateError::Invalid(template.to_string()))?;
                out.push_str(&self.braced(&body[..end], template)?);
                rest = &body[end + 1..];
            } else {
                let n = name_len(after);
                if n == 0 {
                    out.push('$');
                    rest = after;
                } else {
                    out.push_str(&self.value(&after[..n]));
                    rest = &after[n..];
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A variable's value; unset is empty, and noted.
    fn value(&mut self, name: &str) -> String {
        match (self.lookup)(name) {
            Some(v) => v,
            None => {
                if !self.unset.iter().any(|u| u == name) {
                    self.unset.push(name.to_string());
                }
                String::new()
            }
        }
    }

    /// The inside of `${…}`.
    fn braced(&mut self, body: &str, template: &str) -> Result<String, TemplateError> {
        let n = name_len(body);
        if n == 0 {
            return Err(TemplateError::Invalid(template.to_string()));
        }
        let (name, op) = body.split_at(n);
        if op.is_empty() {
            return Ok(self.value(name));
        }
        let (colon, op) = match op.strip_prefix(':') {
            Some(o) => (true, o),
            None => (false, op),
        };
        let (kind, arg) = match op.chars().next() {
            Some(c @ ('-' | '+' | '?')) => (c, &op[1..]),
            _ => return Err(TemplateError::Invalid(template.to_string())),
        };
        let value = (self.lookup)(name);
        // "Set" for the colon forms means set and not empty.
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        match kind {
            '-' if set => Ok(value.unwrap_or_default()),
            '-' => self.substitute(arg),
            '+' if set => self.substitute(arg),
            '+' => Ok(value.unwrap_or_default()),
            _ if set => Ok(value.unwrap_or_default()),
            _ => Err(TemplateError::Required {
                name: name.to_string(),
                message: self.substitute(arg)?,
            }),
        }
    }

    /// Interpolates every string value in `node` (keys are left alone);
    /// errors are located at the value, `path` naming it.
    pub fn node(&mut self, node: &mut Node, path: &str) -> Result<(), ComposeError> {
        match &mut node.value {
            Value::Str(s) if s.contains('$') => {
                let t = s.clone();
                *s = self
                    .substitute(&t)
                    .map_err(|e| ComposeError::at(node.at.as_ref(), path, e.to_string()))?;
            }
            Value::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.node(item, &format!("{path}[{i}]"))?;
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries.iter_mut() {
                    let p = if path.is_empty() {
                        k.name.clone()
                    } else {
                        format!("{path}.{}", k.name)
                    };
                    self.node(v, &p)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Length of the variable name at the start of `s` (`[_a-zA-Z][_a-zA-Z0-9]*`).
fn name_len(s: &str) -> usize {
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(*c == '_' || c.is_ascii_alphanumeric()))
        .map(|(i, _)| i)
        .unwrap_or(s.len())
}

/// Index in `body` (the text after `${`) of the `}` that closes it, nested
/// braces counted.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 1;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "FOO" => Some("foo".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("8000".into()),
            _ => None,
        }
    }

    fn sub(t: &str) -> Result<String, TemplateError> {
        Interpolator::new(&env).substitute(t)
    }

    #[test]
    fn the_interpolation_table() {
        let ok = [
            ("plain text", "plain text"),
            ("$FOO", "foo"),
            ("${FOO}", "foo"),
            ("x${FOO}y$FOO.z", "xfooyfoo.z"),
            ("${UNSET}", ""),
            ("$UNSET", ""),
            ("${UNSET:-def}", "def"),
            ("${UNSET-def}", "def"),
            ("${EMPTY:-def}", "def"),
            ("${EMPTY-def}", ""),
            ("${FOO:-def}", "foo"),
            ("${FOO-def}", "foo"),
            ("${FOO:?msg}", "foo"),
            ("${EMPTY?msg}", ""),
            ("${FOO:+alt}", "alt"),
            ("${FOO+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${UNSET+alt}", ""),
            ("${UNSET:-${FOO}}", "foo"),
            ("${UNSET:-${UNSET2:-deep}}", "deep"),
            ("${UNSET:-a-b:c}", "a-b:c"),
            ("${UNSET:-{x}}", "{x}"),
            ("$$FOO", "$FOO"),
            ("$${FOO}", "${FOO}"),
            ("cost: 5$", "cost: 5$"),
            ("$1 and $-", "$1 and $-"),
            ("http://127.0.0.1:${PORT}/", "http://127.0.0.1:8000/"),
            ("${foo_bar:-x}", "x"),
        ];
        for (t, want) in ok {
            assert_eq!(sub(t).as_deref(), Ok(want), "{t}");
        }
        assert_eq!(
            sub("${UNSET:?set UNSET in .env}").unwrap_err().to_string(),
            "required variable UNSET is missing a value: set UNSET in .env"
        );
        assert_eq!(
            sub("${EMPTY:?}").unwrap_err().to_string(),
            "required variable EMPTY is missing a value"
        );
        assert_eq!(
            sub("${UNSET:?need $FOO}").unwrap_err(),
            TemplateError::Required {
                name: "UNSET".into(),
                message: "need foo".into()
            }
        );
        for bad in ["${}", "${ FOO}", "${FOO", "${1A}", "${FOO/a/b}", "${FOO:x}"] {
            assert!(
                matches!(sub(bad), Err(TemplateError::Invalid(_))),
                "{bad}: {:?}",
                sub(bad)
            );
        }
    }

    #[test]
    fn unset_variables_are_noted_once_and_defaults_are_not_unset() {
        let mut i = Interpolator::new(&env);
        i.substitute("$A ${A} ${B:-x} ${C-y}").unwrap();
        assert_eq!(i.unset, ["A"]);
    }
}
