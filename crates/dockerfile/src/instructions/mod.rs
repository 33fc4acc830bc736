//! Typed Dockerfile instructions: each AST [`Node`] becomes one
//! [`Instruction`] — where it is written ([`Origin`]) and what it is ([`Kind`]) —
//! with its flags checked the way BuildKit's `frontend/dockerfile/instructions`
//! package checks them.
//!
//! One file per instruction holds its typed struct, its parsing (flags declared
//! once, read through typed handles: [`flags`]), its variable expansion and its
//! unit tests: `from.rs`, `run.rs` (with `mount.rs` for `--mount`), `copy.rs`,
//! `add.rs` (with `chmod.rs` for `--chmod`), `env.rs`, `arg.rs`, `workdir.rs`,
//! `user.rs`, `label.rs`, `expose.rs`, `cmd.rs`, `entrypoint.rs`, `shell.rs`,
//! `volume.rs`, `stopsignal.rs`, `healthcheck.rs`, `onbuild.rs`, `maintainer.rs`.
//! What an instruction *does* is the build executor's (kiln-builder's dispatchers).
//!
//! Words that depend on build-time variables (paths, users, ports, mount
//! options, ...) are kept unexpanded here: their values are only known while
//! a stage is executed, with that stage's ARG/ENV values. Flag syntax,
//! argument counts and every value that contains no variable are checked now,
//! so a bad Dockerfile fails before anything runs, with the offending line.

// `DockerfileError` (with its source excerpt) is the crate's error type for
// every located error; it is returned once per failed parse, so its size is fine.
#![allow(clippy::result_large_err)]

mod add;
mod arg;
mod chmod;
mod cmd;
mod copy;
mod entrypoint;
mod env;
mod expose;
mod flags;
mod from;
mod healthcheck;
mod label;
mod maintainer;
pub mod mount;
mod onbuild;
mod run;
mod shell;
mod stopsignal;
mod user;
mod values;
mod volume;
mod workdir;

pub use add::Add;
pub use arg::{Arg, ArgDecl};
pub use chmod::Chmod;
pub use cmd::Cmd;
pub use copy::{Copy, InlineFile};
pub use entrypoint::Entrypoint;
pub use env::{Env, KeyValue};
pub use expose::Expose;
pub use from::{is_valid_stage_name, From};
pub use healthcheck::{HealthConfig, Healthcheck};
pub use label::Label;
pub use maintainer::Maintainer;
pub use mount::{CacheSharing, Mount, MountSpec, MountType};
pub use onbuild::Onbuild;
pub use run::{Device, NetworkMode, Run, Security};
pub use shell::Shell;
pub use stopsignal::StopSignal;
pub use user::User;
pub use values::parse_go_duration;
pub use volume::Volume;
pub use workdir::Workdir;

use crate::ast::{Dockerfile, Node};
use crate::error::{DockerfileError, Source};
pub(crate) use values::{levenshtein, suggest};

/// An instruction-level error before it is given its source location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrError {
    pub message: String,
    pub help: Option<String>,
}

impl InstrError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        InstrError {
            message: message.into(),
            help: None,
        }
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// This error, located at `origin` in `src`.
    pub fn at(self, src: &Source, origin: &Origin) -> DockerfileError {
        let e = DockerfileError::at(src, origin.start_line, origin.end_line, self.message);
        match self.help {
            Some(h) => e.with_help(h),
            None => e,
        }
    }
}

/// Where an instruction comes from in the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// 1-based first and last line (continuations and heredocs included).
    pub start_line: usize,
    pub end_line: usize,
    /// The instruction as written (continuations joined), trimmed.
    pub code: String,
}

impl Origin {
    /// The instruction on one line, for display: its first line (a heredoc's
    /// body left out) with whitespace runs collapsed.
    pub fn summary(&self) -> String {
        one_line(&self.code)
    }

    /// `12`, or `12-14` for an instruction over several lines.
    pub fn lines(&self) -> String {
        if self.end_line > self.start_line {
            format!("{}-{}", self.start_line, self.end_line)
        } else {
            self.start_line.to_string()
        }
    }

    fn of(node: &Node) -> Origin {
        Origin {
            start_line: node.start_line,
            end_line: node.end_line.max(node.start_line),
            code: node.original.trim().to_string(),
        }
    }
}

/// The first line of `code` with whitespace runs collapsed (joined
/// continuation lines leave runs of spaces and tabs).
pub fn one_line(code: &str) -> String {
    code.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command line of RUN, CMD, ENTRYPOINT or HEALTHCHECK CMD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Shell form: one string, run as `SHELL + [string]` (default `/bin/sh -c`).
    Shell(String),
    /// Exec (JSON) form: the argv as given.
    Exec(Vec<String>),
}

impl CommandLine {
    fn from_args(args: &[String], json: bool) -> CommandLine {
        if json {
            CommandLine::Exec(args.to_vec())
        } else {
            CommandLine::Shell(args.join(" "))
        }
    }
}

/// One typed Dockerfile instruction: where it is written and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub origin: Origin,
    pub kind: Kind,
}

/// What an instruction is, with its arguments and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    From(From),
    Run(Run),
    Cmd(Cmd),
    Entrypoint(Entrypoint),
    Shell(Shell),
    Env(Env),
    Arg(Arg),
    Label(Label),
    Expose(Expose),
    User(User),
    Workdir(Workdir),
    Volume(Volume),
    StopSignal(StopSignal),
    Healthcheck(Healthcheck),
    Onbuild(Onbuild),
    Maintainer(Maintainer),
    Copy(Copy),
    Add(Add),
}

type Parser = fn(&Node, char) -> Result<Kind, InstrError>;

/// Every instruction keyword (upper-case) and its parser.
const PARSERS: &[(&str, Parser)] = &[
    ("ADD", |n, _| Add::parse(n).map(Kind::Add)),
    ("ARG", |n, _| Arg::parse(n).map(Kind::Arg)),
    ("CMD", |n, _| Cmd::parse(n).map(Kind::Cmd)),
    ("COPY", |n, e| Copy::parse(n, e).map(Kind::Copy)),
    ("ENTRYPOINT", |n, _| {
        Entrypoint::parse(n).map(Kind::Entrypoint)
    }),
    ("ENV", |n, _| Env::parse(n).map(Kind::Env)),
    ("EXPOSE", |n, _| Expose::parse(n).map(Kind::Expose)),
    ("FROM", |n, _| From::parse(n).map(Kind::From)),
    ("HEALTHCHECK", |n, _| {
        Healthcheck::parse(n).map(Kind::Healthcheck)
    }),
    ("LABEL", |n, _| Label::parse(n).map(Kind::Label)),
    ("MAINTAINER", |n, _| {
        Maintainer::parse(n).map(Kind::Maintainer)
    }),
    ("ONBUILD", |n, e| Onbuild::parse(n, e).map(Kind::Onbuild)),
    ("RUN", |n, _| Run::parse(n).map(Kind::Run)),
    ("SHELL", |n, _| Shell::parse(n).map(Kind::Shell)),
    ("STOPSIGNAL", |n, _| {
        StopSignal::parse(n).map(Kind::StopSignal)
    }),
    ("USER", |n, _| User::parse(n).map(Kind::User)),
    ("VOLUME", |n, _| Volume::parse(n).map(Kind::Volume)),
    ("WORKDIR", |n, _| Workdir::parse(n).map(Kind::Workdir)),
];

impl Kind {
    /// The instruction keyword, upper-case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Kind::From(_) => "FROM",
            Kind::Run(_) => "RUN",
            Kind::Cmd(_) => "CMD",
            Kind::Entrypoint(_) => "ENTRYPOINT",
            Kind::Shell(_) => "SHELL",
            Kind::Env(_) => "ENV",
            Kind::Arg(_) => "ARG",
            Kind::Label(_) => "LABEL",
            Kind::Expose(_) => "EXPOSE",
            Kind::User(_) => "USER",
            Kind::Workdir(_) => "WORKDIR",
            Kind::Volume(_) => "VOLUME",
            Kind::StopSignal(_) => "STOPSIGNAL",
            Kind::Healthcheck(_) => "HEALTHCHECK",
            Kind::Onbuild(_) => "ONBUILD",
            Kind::Maintainer(_) => "MAINTAINER",
            Kind::Copy(_) => "COPY",
            Kind::Add(_) => "ADD",
        }
    }
}

impl Instruction {
    /// The instruction keyword, upper-case.
    pub fn keyword(&self) -> &'static str {
        self.kind.keyword()
    }

    /// Converts one AST node; `escape` is the Dockerfile's escape character.
    /// Errors carry the node's line range in `src`.
    pub fn parse(node: &Node, escape: char, src: &Source) -> Result<Instruction, DockerfileError> {
        parse_node(node, escape).map_err(|e| e.at(src, &Origin::of(node)))
    }

    /// This instruction with its words expanded the way BuildKit expands
    /// them when dispatching (`Expand`/`ExpandRaw` of each command); each
    /// instruction's `expanded` says what it expands (ENV, LABEL, COPY, ADD,
    /// WORKDIR, USER, STOPSIGNAL, VOLUME, EXPOSE). Everything else is returned
    /// unchanged: RUN/CMD/ENTRYPOINT commands are left to the shell, RUN
    /// mounts are expanded by [`MountSpec::resolve`], and ARG values come from
    /// `Plan::arg_value`.
    pub fn expanded(&self, ex: &mut dyn Expand) -> Result<Instruction, InstrError> {
        let kind = match &self.kind {
            Kind::Env(i) => Kind::Env(i.expanded(ex)?),
            Kind::Label(i) => Kind::Label(i.expanded(ex)?),
            Kind::Workdir(i) => Kind::Workdir(i.expanded(ex)?),
            Kind::User(i) => Kind::User(i.expanded(ex)?),
            Kind::StopSignal(i) => Kind::StopSignal(i.expanded(ex)?),
            Kind::Volume(i) => Kind::Volume(i.expanded(ex)?),
            Kind::Copy(i) => Kind::Copy(i.expanded(ex)?),
            Kind::Add(i) => Kind::Add(i.expanded(ex)?),
            Kind::Expose(i) => Kind::Expose(i.expanded(ex)?),
            other => other.clone(),
        };
        Ok(Instruction {
            origin: self.origin.clone(),
            kind,
        })
    }
}

/// Every instruction keyword, upper-case.
pub fn keywords() -> impl Iterator<Item = &'static str> {
    PARSERS.iter().map(|(k, _)| *k)
}

/// Variable substitution with a stage's current ARG/ENV values; the executor
/// implements it with the shell lexer (`crate::shell`).
pub trait Expand {
    /// One word, quotes and escapes processed (BuildKit's `ProcessWord`).
    fn word(&mut self, word: &str) -> Result<String, String>;
    /// A word that may split into several (BuildKit's `ProcessWords`, for EXPOSE).
    fn words(&mut self, word: &str) -> Result<Vec<String>, String>;
    /// Heredoc content: variables substituted, quotes and escapes left alone.
    fn raw(&mut self, text: &str) -> Result<String, String>;
}

/// [`Expand`] with BuildKit's lexers over a stage's environment (its ARG and
/// ENV values at that step): what the executor passes to [`Instruction::expanded`]
/// and, through [`Expand::word`], to [`MountSpec::resolve`].
pub struct ShellExpand<'a> {
    words: crate::shell::Lexer,
    heredoc: crate::shell::Lexer,
    env: &'a dyn crate::shell::Env,
    growth: usize,
}

impl<'a> ShellExpand<'a> {
    /// `escape` is the Dockerfile's escape character (`Dockerfile::escape`).
    pub fn new(escape: char, env: &'a dyn crate::shell::Env) -> Self {
        ShellExpand {
            words: crate::shell::Lexer::new(escape),
            heredoc: crate::shell::Lexer::for_heredoc_contents(),
            env,
            growth: 0,
        }
    }

    /// How many bytes longer than written the words expanded so far came
    /// out, in total (held to [`crate::shell::MAX_STAGE_GROWTH`] per stage).
    pub fn growth(&self) -> usize {
        self.growth
    }

    fn grew(&mut self, written: &str, expanded: usize) {
        self.growth = self
            .growth
            .saturating_add(expanded.saturating_sub(written.len()));
    }
}

impl Expand for ShellExpand<'_> {
    fn word(&mut self, word: &str) -> Result<String, String> {
        let out = self
            .words
            .process_word(word, self.env)
            .map_err(|e| e.to_string())?;
        self.grew(word, out.len());
        Ok(out)
    }

    fn words(&mut self, word: &str) -> Result<Vec<String>, String> {
        let out = self
            .words
            .process_words(word, self.env)
            .map_err(|e| e.to_string())?;
        self.grew(word, out.iter().map(String::len).sum());
        Ok(out)
    }

    fn raw(&mut self, text: &str) -> Result<String, String> {
        let out = self
            .heredoc
            .process_word(text, self.env)
            .map_err(|e| e.to_string())?;
        self.grew(text, out.len());
        Ok(out)
    }
}

/// Converts every node of `df` (in order) into a typed instruction; stops at the first error.
pub fn parse_instructions(
    df: &Dockerfile,
    src: &Source,
) -> Result<Vec<Instruction>, DockerfileError> {
    df.nodes
        .iter()
        .map(|n| Instruction::parse(n, df.escape, src))
        .collect()
}

/// Parses one node without location info (see [`Instruction::parse`]).
pub fn parse_node(node: &Node, escape: char) -> Result<Instruction, InstrError> {
    let Some((_, parse)) = PARSERS
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(&node.keyword))
    else {
        let written = keyword_as_written(node);
        let mut e = InstrError::new(format!("unknown instruction: {written}"));
        let keywords: Vec<&str> = keywords().collect();
        if let Some(s) = suggest(&written, &keywords) {
            e = e.with_help(format!("did you mean {s}?"));
        }
        return Err(e);
    };
    Ok(Instruction {
        origin: Origin::of(node),
        kind: parse(node, escape)?,
    })
}

/// The keyword as the user wrote it (for "unknown instruction: COPPY").
fn keyword_as_written(node: &Node) -> String {
    node.original
        .split_whitespace()
        .next()
        .filter(|w| w.eq_ignore_ascii_case(&node.keyword))
        .map(str::to_string)
        .unwrap_or_else(|| node.keyword.clone())
}

fn at_least_one(cmd: &str) -> InstrError {
    InstrError::new(format!("{cmd} requires at least one argument"))
}

/// The one argument of USER, WORKDIR, MAINTAINER or STOPSIGNAL; `flags`: whether
/// the instruction rejects flags (STOPSIGNAL does not look at them).
fn single_argument(node: &Node, cmd: &str, flags: bool) -> Result<String, InstrError> {
    if node.args.len() != 1 {
        return Err(InstrError::new(format!(
            "{cmd} requires exactly one argument"
        )));
    }
    if flags {
        flags::Flags::new(&node.flags).parse()?;
    }
    Ok(node.args[0].clone())
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::{err, node};
    use super::*;

    #[test]
    fn single_argument_instructions() {
        for kw in ["USER", "WORKDIR", "MAINTAINER", "STOPSIGNAL"] {
            assert_eq!(
                err(&node(kw, &[], &[])),
                format!("{kw} requires exactly one argument")
            );
            assert_eq!(
                err(&node(kw, &[], &["a", "b"])),
                format!("{kw} requires exactly one argument")
            );
        }
    }

    #[test]
    fn every_keyword_has_a_parser() {
        let k: Vec<&str> = keywords().collect();
        assert_eq!(k.len(), 18);
        let mut sorted = k.clone();
        sorted.sort();
        assert_eq!(k, sorted);
    }

    #[test]
    fn unknown_instruction_keeps_case_and_line() {
        let mut n = node("coppy", &[], &["a", "b"]);
        n.original = "COPPY a b".into();
        n.start_line = 12;
        n.end_line = 12;
        let e = parse_node(&n, '\\').unwrap_err();
        assert_eq!(e.message, "unknown instruction: COPPY");
        assert_eq!(e.help.as_deref(), Some("did you mean COPY?"));

        let text = "FROM a\n".repeat(11) + "COPPY a b\n";
        let src = Source::new("Dockerfile", text);
        let de = Instruction::parse(&n, '\\', &src).unwrap_err();
        assert_eq!(de.to_string(), "Dockerfile:12: unknown instruction: COPPY");
    }

    #[test]
    fn whole_dockerfile() {
        let df = Dockerfile {
            directives: vec![],
            escape: '\\',
            nodes: vec![node("from", &[], &["alpine"]), node("run", &[], &["true"])],
            warnings: vec![],
        };
        let src = Source::new("Dockerfile", "FROM alpine\nRUN true\n");
        let ins = parse_instructions(&df, &src).unwrap();
        assert_eq!(ins.len(), 2);
        assert_eq!(ins[1].keyword(), "RUN");
        assert_eq!(ins[1].origin.code, "RUN true");
    }

    #[test]
    fn origin_summary_and_lines() {
        let o = Origin {
            start_line: 3,
            end_line: 5,
            code: "RUN --mount=type=cache,target=/c \t   make\nmore".into(),
        };
        assert_eq!(o.summary(), "RUN --mount=type=cache,target=/c make");
        assert_eq!(o.lines(), "3-5");
        let one = Origin {
            start_line: 7,
            end_line: 7,
            code: "COPY . .".into(),
        };
        assert_eq!(one.lines(), "7");
    }
}
