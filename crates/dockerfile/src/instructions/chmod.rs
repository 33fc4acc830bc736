//! `--chmod` of COPY and ADD: an octal mode (`755`, `0644`, at most `07777`) or, as
//! BuildKit accepts since Dockerfile 1.14, a symbolic mode (`u+x,g-w`, `a=rX`, `go=u`)
//! with the BSD `setmode`/`getmode` meaning (BuildKit parses it with
//! tonistiigi/dchapes-mode and a zero umask: `dockerfile2llb/convert_copy.go`
//! `dispatchCopy`, fsutil `copy.Copy`). Parsed here, applied to each copied file by
//! the executor ([`Chmod::apply`]).

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// Permission bits with setuid/setgid/sticky.
    Octal(u32),
    /// Comma-separated clauses applied in order to each file's own mode.
    Symbolic(Vec<Clause>),
}

/// One `who op perms [op perms…]` clause: its operations in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    ops: Vec<Op>,
}

/// One operation (`+`, `-` or `=`) of a clause.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Op {
    op: char,
    perm: Perm,
    /// Bits the operation may touch: `u` → 0o4700, `g` → 0o2070, `o` → 0o0007,
    /// no letter → all of them (the umask is zero), plus the sticky bit when the
    /// operation names `t`.
    who: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Perm {
    /// `r`, `w`, `x`, `s`, `t` as bits, with `X` kept apart: it adds execute only
    /// to directories and to files that already have an execute bit.
    Bits { bits: u32, cond_x: bool },
    /// `u`, `g` or `o`: copy that class's current bits.
    Copy(char),
}

const WHO_U: u32 = 0o4700;
const WHO_G: u32 = 0o2070;
const WHO_O: u32 = 0o0007;
const STICKY: u32 = 0o1000;

/// BuildKit's message for a bad value (`dispatchCopy`).
fn invalid_message(value: &str) -> String {
    format!("invalid chmod parameter: '{value}'. it should be octal string and between 0 and 07777")
}

impl Chmod {
    /// Parses a `--chmod` value as BuildKit checks it. The error is BuildKit's
    /// message for a bad octal value, else a readable reason.
    pub fn parse(value: &str) -> Result<Chmod, String> {
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            // Go's strconv.ParseUint(value, 8, 32): digits 8 and 9 fail, which
            // BuildKit reports with the octal message too.
            return match u32::from_str_radix(value, 8) {
                Ok(m) if m <= 0o7777 => Ok(Chmod::Octal(m)),
                _ => Err(invalid_message(value)),
            };
        }
        if value.starts_with(|c: char| c.is_ascii_digit()) {
            // dchapes-mode tries an octal number first: a NumError, reported by
            // BuildKit with the octal message.
            return Err(invalid_message(value));
        }
        let clauses = value
            .split(',')
            .map(parse_clause)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                format!(
                    "invalid chmod parameter: '{value}'. it should be an octal mode (0 to 07777) or a symbolic mode like u+x,g-w"
                )
            })?;
        Ok(Chmod::Symbolic(clauses))
    }

    /// The octal mode, when there is one (it is also the mode of directories a COPY
    /// creates for its destination).
    pub fn octal(&self) -> Option<u32> {
        match self {
            Chmod::Octal(m) => Some(*m),
            Chmod::Symbolic(_) => None,
        }
    }

    /// The mode a copied file gets: `mode` is the source's `st_mode & 0o7777`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m & 0o7777,
            Chmod::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for c in clauses {
                    for Op { op, perm, who } in &c.ops {
                        let who = *who;
                        let bits = match perm {
                            Perm::Bits { bits, cond_x } => {
                                let mut b = *bits;
                                if *cond_x && (is_dir || m & 0o111 != 0) {
                                    b |= 0o111;
                                }
                                b
                            }
                            Perm::Copy(from) => {
                                let class = match from {
                                    'u' => (m >> 6) & 7,
                                    'g' => (m >> 3) & 7,
                                    _ => m & 7,
                                };
                                class << 6 | class << 3 | class
                            }
                        };
                        match op {
                            '+' => m |= bits & who,
                            '-' => m &= !(bits & who),
                            _ => {
                                // `=`: clear the classes named (their set-id
                                // bits too), then set.
                                m = (m & !(who & !STICKY)) | (bits & who);
                            }
                        }
                    }
                }
                m
            }
        }
    }
}

fn parse_clause(s: &str) -> Option<Clause> {
    let mut chars = s.chars().peekable();
    let mut who = 0u32;
    let mut named = false;
    while let Some(&c) = chars.peek() {
        who |= match c {
            'u' => WHO_U,
            'g' => WHO_G,
            'o' => WHO_O,
            'a' => WHO_U | WHO_G | WHO_O,
            _ => break,
        };
        named = true;
        chars.next();
    }
    if !named {
        who = WHO_U | WHO_G | WHO_O;
    }
    let mut ops = Vec::new();
    while let Some(op) = chars.next() {
        if !matches!(op, '+' | '-' | '=') {
            return None;
        }
        let mut op_who = who;
        let perm = match chars.peek() {
            Some(&c @ ('u' | 'g' | 'o')) => {
                chars.next();
                Perm::Copy(c)
            }
            _ => {
                let mut bits = 0;
                let mut cond_x = false;
                while let Some(&c) = chars.peek() {
                    match c {
                        'r' => bits |= 0o444,
                        'w' => bits |= 0o222,
                        'x' => bits |= 0o111,
                        'X' => cond_x = true,
                        // Set-id bits; `who` keeps them to u and g.
                        's' => bits |= 0o6000,
                        // Sticky, unless only "o" is named.
                        't' => {
                            if !named || who & !WHO_O != 0 {
                                bits |= STICKY;
                                op_who |= STICKY;
                            }
                        }
                        _ => break,
                    }
                    chars.next();
                }
                Perm::Bits { bits, cond_x }
            }
        };
        ops.push(Op {
            op,
            perm,
            who: op_who,
        });
    }
    if ops.is_empty() {
        return None;
    }
    Some(Clause { ops })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(s).unwrap().apply(mode, dir)
    }

    #[test]
    fn octal_values() {
        assert_eq!(Chmod::parse("755").unwrap(), Chmod::Octal(0o755));
        assert_eq!(Chmod::parse("0644").unwrap(), Chmod::Octal(0o644));
        assert_eq!(Chmod::parse("0").unwrap(), Chmod::Octal(0));
        assert_eq!(Chmod::parse("4755").unwrap().apply(0o600, false), 0o4755);
        for bad in ["10000", "64a", "8", "099"] {
            assert_eq!(
                Chmod::parse(bad).unwrap_err(),
                invalid_message(bad),
                "{bad}"
            );
        }
        assert_eq!(
            invalid_message("64a"),
            "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777"
        );
    }

    #[test]
    fn symbolic_values() {
        assert_eq!(sym("u+x", 0o644, false), 0o744);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("u+x,g-w", 0o664, false), 0o744);
        assert_eq!(sym("go-rwx", 0o755, true), 0o700);
        assert_eq!(sym("a=rX", 0o640, false), 0o444);
        assert_eq!(sym("a=rX", 0o740, false), 0o555);
        assert_eq!(sym("a=rX", 0o700, true), 0o555);
        assert_eq!(sym("go=u", 0o751, false), 0o777);
        assert_eq!(sym("u=rw,go=r", 0o777, false), 0o644);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("g+s", 0o755, true), 0o2755);
        assert_eq!(sym("+t", 0o777, true), 0o1777);
        assert_eq!(sym("o+t", 0o777, true), 0o777);
        assert_eq!(sym("u=rwx", 0o4644, false), 0o744);
        for bad in ["u+q", "z+x", "u", "", "u+x,", "rwx", "u+y"] {
            assert!(Chmod::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Chmod::parse("u+q").unwrap_err(),
            "invalid chmod parameter: 'u+q'. it should be an octal mode (0 to 07777) or a symbolic mode like u+x,g-w"
        );
        for ok in ["u=rwx,go=rx", "a-w", "g=u", "7777"] {
            assert!(Chmod::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["999", "17777", "0x1ff"] {
            assert_eq!(
                Chmod::parse(bad).unwrap_err(),
                invalid_message(bad),
                "{bad}"
            );
        }
    }
}
