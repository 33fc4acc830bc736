//! Typed Dockerfile instructions: each AST [`Node`] becomes one
//! [`Instruction`] with its flags checked the way BuildKit's
//! `frontend/dockerfile/instructions` package checks them.
//!
//! Words that depend on build-time variables (paths, users, ports, mount
//! options, ...) are kept unexpanded here: their values are only known while
//! a stage is executed, with that stage's ARG/ENV values. Flag syntax,
//! argument counts and every value that contains no variable are checked now,
//! so a bad Dockerfile fails before anything runs, with the offending line.

// `DockerfileError` (with its source excerpt) is the crate's error type for
// every located error; it is returned once per failed parse, so its size is fine.
#![allow(clippy::result_large_err)]

mod flags;
pub mod mount;
mod values;

pub use mount::{CacheSharing, Mount, MountSpec, MountType};
pub use values::{parse_go_duration, Chmod};

use crate::ast::{Dockerfile, Heredoc, Node};
use crate::error::{DockerfileError, Source};
use flags::Flags;
pub(crate) use values::suggest;

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

/// `FROM [--platform=P] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    pub origin: Origin,
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

/// `--network=` of RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    #[default]
    Default,
    None,
    Host,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Default => "default",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
    }
}

/// `--security=` of RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    #[default]
    Sandbox,
    Insecure,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Sandbox => "sandbox",
            Security::Insecure => "insecure",
        }
    }
}

/// `--device=name[,required]` of RUN (a CDI device request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub required: bool,
}

impl Device {
    /// BuildKit's `ParseDevice`.
    pub fn parse(val: &str) -> Result<Device, InstrError> {
        let fields = mount::csv_fields(val)
            .map_err(|e| InstrError::new(e.message.replace("csv mounts", "csv devices")))?;
        let mut name = String::new();
        let mut required = false;
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                if field.eq_ignore_ascii_case("required") {
                    required = true;
                } else if name.is_empty() {
                    name = field;
                } else {
                    return Err(InstrError::new(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )));
                }
                continue;
            };
            match key.to_ascii_lowercase().as_str() {
                "name" => {
                    if !name.is_empty() {
                        return Err(InstrError::new(format!(
                            "device name already set to {name}"
                        )));
                    }
                    name = value.to_string();
                }
                "required" => {
                    required = mount::go_parse_bool(value).ok_or_else(|| {
                        InstrError::new(format!("invalid value for required: {value}"))
                    })?;
                }
                other => {
                    if name.is_empty() {
                        name = field.clone();
                    } else {
                        return Err(InstrError::new(format!(
                            "unexpected key '{other}' in '{field}'"
                        )));
                    }
                }
            }
        }
        Ok(Device { name, required })
    }
}

/// `RUN [--mount=...]... [--network=...] [--security=...] [--device=...] cmd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub origin: Origin,
    pub command: CommandLine,
    /// Heredocs of the command (`RUN <<EOF ...`), in order.
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<MountSpec>,
    pub network: NetworkMode,
    pub security: Security,
    pub devices: Vec<Device>,
    /// Names of the flags given (BuildKit's `FlagsUsed`), sorted.
    pub flags_used: Vec<String>,
}

/// `CMD`: the image's default command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub origin: Origin,
    pub command: CommandLine,
}

/// `ENTRYPOINT`. `ENTRYPOINT []` clears it (`Exec(vec![])`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entrypoint {
    pub origin: Origin,
    pub command: CommandLine,
}

/// `SHELL ["executable", "param"...]` (JSON form only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shell {
    pub origin: Origin,
    pub shell: Vec<String>,
}

/// A `key=value` of ENV or LABEL, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// True for the legacy `ENV key value` form (lint: LegacyKeyValueFormat).
    pub no_delim: bool,
}

/// `ENV k=v ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub origin: Origin,
    pub vars: Vec<KeyValue>,
}

/// One name of an `ARG` instruction, with its default (unexpanded) if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub key: String,
    pub default: Option<String>,
}

/// `ARG name[=default] ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub origin: Origin,
    pub args: Vec<ArgDecl>,
}

/// `LABEL k=v ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub origin: Origin,
    pub labels: Vec<KeyValue>,
}

/// `EXPOSE port[/proto] ...`; ports sorted as BuildKit sorts them, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expose {
    pub origin: Origin,
    pub ports: Vec<String>,
}

/// `USER user[:group]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub origin: Origin,
    pub user: String,
}

/// `WORKDIR path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workdir {
    pub origin: Origin,
    pub path: String,
}

/// `VOLUME path ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub origin: Origin,
    pub paths: Vec<String>,
}

/// `STOPSIGNAL signal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSignal {
    pub origin: Origin,
    pub signal: String,
}

/// The health check settings of `HEALTHCHECK CMD`; durations in nanoseconds,
/// 0 meaning "not set, use the runtime's default".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// `["CMD", argv...]` (exec form) or `["CMD-SHELL", "command"]`, as in the image config.
    pub test: Vec<String>,
    pub interval_ns: i64,
    pub timeout_ns: i64,
    pub start_period_ns: i64,
    pub start_interval_ns: i64,
    pub retries: u32,
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [options] CMD command`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    pub origin: Origin,
    /// `None` for `HEALTHCHECK NONE` (disable the base image's check).
    pub check: Option<HealthConfig>,
}

/// `ONBUILD instruction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Onbuild {
    pub origin: Origin,
    /// The trigger as stored in the image config (`ONBUILD` stripped, heredocs appended).
    pub expression: String,
    /// The trigger, parsed and checked now (BuildKit only checks it when a
    /// later build uses the image; kiln reports mistakes where they are written).
    pub trigger: Box<Instruction>,
}

/// `MAINTAINER name` (deprecated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintainer {
    pub origin: Origin,
    pub name: String,
}

/// A heredoc used as a COPY/ADD source: a file with inline content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// The heredoc's name, used as the file name.
    pub name: String,
    /// Content, with leading tabs already removed for `<<-`.
    pub content: String,
    /// Whether variables in the content are expanded (unquoted delimiter).
    pub expand: bool,
}

/// `COPY [--from=] [--chown=] [--chmod=] [--link] [--parents] [--exclude=]... src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub origin: Origin,
    /// Source paths as written (unexpanded), heredocs excluded.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub inline: Vec<InlineFile>,
    pub dest: String,
    /// `--from`: a stage name, a stage index or an image (never expanded).
    pub from: Option<String>,
    pub chown: Option<String>,
    /// `--chmod` as written; check/convert after expansion with [`Chmod::parse`].
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
}

/// `ADD [--checksum=] [--keep-git-dir] [--chown=] [--chmod=] [--link] [--exclude=]... [--unpack] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub origin: Origin,
    pub sources: Vec<String>,
    pub inline: Vec<InlineFile>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub excludes: Vec<String>,
    /// `--keep-git-dir` when given (only meaningful for git sources).
    pub keep_git_dir: Option<bool>,
    pub checksum: Option<String>,
    /// `--unpack` when given; by default local archives are unpacked and URLs are not.
    pub unpack: Option<bool>,
}

/// One typed Dockerfile instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
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

/// Every instruction keyword, upper-case.
pub const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

impl Instruction {
    /// Where the instruction is written.
    pub fn origin(&self) -> &Origin {
        match self {
            Instruction::From(i) => &i.origin,
            Instruction::Run(i) => &i.origin,
            Instruction::Cmd(i) => &i.origin,
            Instruction::Entrypoint(i) => &i.origin,
            Instruction::Shell(i) => &i.origin,
            Instruction::Env(i) => &i.origin,
            Instruction::Arg(i) => &i.origin,
            Instruction::Label(i) => &i.origin,
            Instruction::Expose(i) => &i.origin,
            Instruction::User(i) => &i.origin,
            Instruction::Workdir(i) => &i.origin,
            Instruction::Volume(i) => &i.origin,
            Instruction::StopSignal(i) => &i.origin,
            Instruction::Healthcheck(i) => &i.origin,
            Instruction::Onbuild(i) => &i.origin,
            Instruction::Maintainer(i) => &i.origin,
            Instruction::Copy(i) => &i.origin,
            Instruction::Add(i) => &i.origin,
        }
    }

    /// The upper-case keyword (`COPY`).
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Env(_) => "ENV",
            Instruction::Arg(_) => "ARG",
            Instruction::Label(_) => "LABEL",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Volume(_) => "VOLUME",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
        }
    }

    /// Converts one AST node; `escape` is the Dockerfile's escape character.
    /// Errors carry the node's line range in `src`.
    pub fn parse(node: &Node, escape: char, src: &Source) -> Result<Instruction, DockerfileError> {
        parse_node(node, escape).map_err(|e| e.at(src, &origin_of(node)))
    }
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

impl Instruction {
    /// This instruction with its words expanded the way BuildKit expands
    /// them when dispatching (`Expand`/`ExpandRaw` of each command):
    ///
    /// | instruction | expanded |
    /// |---|---|
    /// | ENV, LABEL | keys and values |
    /// | COPY | sources, dest, `--chown`, `--chmod`; expandable heredoc contents |
    /// | ADD | as COPY, plus `--checksum` |
    /// | WORKDIR, USER, STOPSIGNAL, VOLUME | their argument(s) |
    /// | EXPOSE | each port (may split into several) |
    ///
    /// Everything else is returned unchanged: RUN/CMD/ENTRYPOINT commands are
    /// left to the shell, RUN mounts are expanded by [`MountSpec::resolve`],
    /// and ARG values come from `Plan::arg_value`. An expanded `--chmod` is
    /// checked here.
    pub fn expanded(&self, ex: &mut dyn Expand) -> Result<Instruction, InstrError> {
        let mut w = |s: &str| ex.word(s).map_err(InstrError::new);
        let mut out = self.clone();
        match &mut out {
            Instruction::Env(e) => {
                for kv in &mut e.vars {
                    kv.key = w(&kv.key)?;
                    kv.value = w(&kv.value)?;
                }
            }
            Instruction::Label(l) => {
                for kv in &mut l.labels {
                    kv.key = w(&kv.key)?;
                    kv.value = w(&kv.value)?;
                }
            }
            Instruction::Workdir(i) => i.path = w(&i.path)?,
            Instruction::User(i) => i.user = w(&i.user)?,
            Instruction::StopSignal(i) => i.signal = w(&i.signal)?,
            Instruction::Volume(i) => {
                for p in &mut i.paths {
                    *p = w(p)?;
                }
            }
            Instruction::Copy(c) => {
                c.chown = c.chown.as_deref().map(&mut w).transpose()?;
                c.chmod = c.chmod.as_deref().map(&mut w).transpose()?;
                for p in &mut c.sources {
                    *p = w(p)?;
                }
                c.dest = w(&c.dest)?;
            }
            Instruction::Add(a) => {
                a.chown = a.chown.as_deref().map(&mut w).transpose()?;
                a.chmod = a.chmod.as_deref().map(&mut w).transpose()?;
                a.checksum = a.checksum.as_deref().map(&mut w).transpose()?;
                for p in &mut a.sources {
                    *p = w(p)?;
                }
                a.dest = w(&a.dest)?;
            }
            Instruction::Expose(e) => {
                let mut ports = Vec::with_capacity(e.ports.len());
                for p in &e.ports {
                    ports.extend(ex.words(p).map_err(InstrError::new)?);
                }
                e.ports = ports;
            }
            _ => {}
        }
        let (inline, chmod) = match &mut out {
            Instruction::Copy(c) => (&mut c.inline, c.chmod.as_deref()),
            Instruction::Add(a) => (&mut a.inline, a.chmod.as_deref()),
            _ => return Ok(out),
        };
        if let Some(m) = chmod {
            Chmod::parse(m).map_err(InstrError::new)?;
        }
        for f in inline.iter_mut().filter(|f| f.expand) {
            f.content = ex.raw(&f.content).map_err(InstrError::new)?;
        }
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

fn origin_of(node: &Node) -> Origin {
    Origin {
        start_line: node.start_line,
        end_line: node.end_line.max(node.start_line),
        code: node.original.trim().to_string(),
    }
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

fn exactly_one(cmd: &str) -> InstrError {
    InstrError::new(format!("{cmd} requires exactly one argument"))
}

/// Parses one node without location info (see [`Instruction::parse`]).
pub fn parse_node(node: &Node, escape: char) -> Result<Instruction, InstrError> {
    let origin = origin_of(node);
    let args = &node.args[..];
    let fl = &node.flags[..];
    let ins = match node.keyword.to_ascii_lowercase().as_str() {
        "from" => {
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
            let f = Flags::new(fl).string("platform").parse()?;
            Instruction::From(From {
                origin,
                base: args[0].clone(),
                platform: f.string("platform").map(str::to_string),
                name,
            })
        }
        "run" => {
            let f = Flags::new(fl)
                .list("mount")
                .string("network")
                .string("security")
                .list("device")
                .parse()?;
            let devices = f
                .list("device")
                .iter()
                .map(|d| Device::parse(d))
                .collect::<Result<Vec<_>, _>>()?;
            let mounts = f
                .list("mount")
                .iter()
                .map(|m| MountSpec::parse(m))
                .collect::<Result<Vec<_>, _>>()?;
            let network = match f.string("network").unwrap_or("default") {
                "default" => NetworkMode::Default,
                "none" => NetworkMode::None,
                "host" => NetworkMode::Host,
                other => return Err(InstrError::new(format!("invalid network mode {other:?}"))),
            };
            let security = match f.string("security").unwrap_or("sandbox") {
                "sandbox" => Security::Sandbox,
                "insecure" => Security::Insecure,
                other => return Err(InstrError::new(format!("security {other:?} is not valid"))),
            };
            Instruction::Run(Run {
                origin,
                command: CommandLine::from_args(args, node.json),
                heredocs: node.heredocs.clone(),
                mounts,
                network,
                security,
                devices,
                flags_used: f.used_names(),
            })
        }
        "cmd" => {
            Flags::new(fl).parse()?;
            Instruction::Cmd(Cmd {
                origin,
                command: CommandLine::from_args(args, node.json),
            })
        }
        "entrypoint" => {
            Flags::new(fl).parse()?;
            Instruction::Entrypoint(Entrypoint {
                origin,
                command: CommandLine::from_args(args, node.json),
            })
        }
        "shell" => {
            Flags::new(fl).parse()?;
            if args.is_empty() {
                return Err(at_least_one("SHELL"));
            }
            if !node.json {
                return Err(InstrError::new(
                    "SHELL requires the arguments to be in JSON form",
                ));
            }
            Instruction::Shell(Shell {
                origin,
                shell: args.to_vec(),
            })
        }
        "env" => {
            Flags::new(fl).parse()?;
            Instruction::Env(Env {
                origin,
                vars: key_values(args, "ENV")?,
            })
        }
        "label" => {
            Flags::new(fl).parse()?;
            Instruction::Label(Label {
                origin,
                labels: key_values(args, "LABEL")?,
            })
        }
        "arg" => {
            // BuildKit never parses ARG's flags: they are ignored, not rejected.
            if args.is_empty() {
                return Err(at_least_one("ARG"));
            }
            let mut decls = Vec::with_capacity(args.len());
            for a in args {
                let decl = match a.split_once('=') {
                    Some(("", _)) => return Err(InstrError::new("ARG names can not be blank")),
                    Some((k, v)) => ArgDecl {
                        key: k.to_string(),
                        default: Some(v.to_string()),
                    },
                    None => ArgDecl {
                        key: a.clone(),
                        default: None,
                    },
                };
                decls.push(decl);
            }
            Instruction::Arg(Arg {
                origin,
                args: decls,
            })
        }
        "expose" => {
            if args.is_empty() {
                return Err(at_least_one("EXPOSE"));
            }
            Flags::new(fl).parse()?;
            let mut ports = args.to_vec();
            ports.sort();
            Instruction::Expose(Expose { origin, ports })
        }
        "user" => {
            if args.len() != 1 {
                return Err(exactly_one("USER"));
            }
            Flags::new(fl).parse()?;
            Instruction::User(User {
                origin,
                user: args[0].clone(),
            })
        }
        "workdir" => {
            if args.len() != 1 {
                return Err(exactly_one("WORKDIR"));
            }
            Flags::new(fl).parse()?;
            Instruction::Workdir(Workdir {
                origin,
                path: args[0].clone(),
            })
        }
        "maintainer" => {
            if args.len() != 1 {
                return Err(exactly_one("MAINTAINER"));
            }
            Flags::new(fl).parse()?;
            Instruction::Maintainer(Maintainer {
                origin,
                name: args[0].clone(),
            })
        }
        "stopsignal" => {
            // Like BuildKit, STOPSIGNAL does not look at flags.
            if args.len() != 1 {
                return Err(exactly_one("STOPSIGNAL"));
            }
            Instruction::StopSignal(StopSignal {
                origin,
                signal: args[0].clone(),
            })
        }
        "volume" => {
            if args.is_empty() {
                return Err(at_least_one("VOLUME"));
            }
            Flags::new(fl).parse()?;
            let mut paths = Vec::with_capacity(args.len());
            for v in args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(InstrError::new(
                        "VOLUME specified can not be an empty string",
                    ));
                }
                paths.push(v.to_string());
            }
            Instruction::Volume(Volume { origin, paths })
        }
        "healthcheck" => Instruction::Healthcheck(parse_healthcheck(node, origin)?),
        "onbuild" => {
            let Some(sub) = node.sub.as_deref() else {
                return Err(at_least_one("ONBUILD"));
            };
            Flags::new(fl).parse()?;
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
            Instruction::Onbuild(Onbuild {
                origin,
                expression,
                trigger: Box::new(trigger),
            })
        }
        "copy" => {
            if args.len() < 2 {
                return Err(no_destination("COPY"));
            }
            let f = Flags::new(fl)
                .string("chown")
                .string("from")
                .string("chmod")
                .bool("link")
                .list("exclude")
                .bool("parents")
                .parse()?;
            let (sources, inline, dest) = sources_and_dest(node, "COPY")?;
            let from = f.non_empty("from");
            if let Some(from) = &from {
                if needs_expansion(from, escape) {
                    return Err(InstrError::new(
                        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                    ));
                }
            }
            if sources
                .iter()
                .any(|s| s.starts_with("http://") || s.starts_with("https://"))
            {
                return Err(InstrError::new("source can't be a URL for COPY"));
            }
            let chmod = checked_chmod(&f)?;
            Instruction::Copy(Copy {
                origin,
                sources,
                inline,
                dest,
                from,
                chown: f.non_empty("chown"),
                chmod,
                link: f.bool("link"),
                parents: f.bool("parents"),
                excludes: f.list("exclude"),
            })
        }
        "add" => {
            if args.len() < 2 {
                return Err(no_destination("ADD"));
            }
            let f = Flags::new(fl)
                .string("chown")
                .string("chmod")
                .bool("link")
                .bool("keep-git-dir")
                .string("checksum")
                .bool("unpack")
                .list("exclude")
                .parse()?;
            let (sources, inline, dest) = sources_and_dest(node, "ADD")?;
            let checksum = f.non_empty("checksum");
            if checksum.is_some() && sources.len() + inline.len() != 1 {
                return Err(InstrError::new(
                    "checksum can't be specified for multiple sources",
                ));
            }
            let chmod = checked_chmod(&f)?;
            Instruction::Add(Add {
                origin,
                sources,
                inline,
                dest,
                chown: f.non_empty("chown"),
                chmod,
                link: f.bool("link"),
                excludes: f.list("exclude"),
                keep_git_dir: f.bool_opt("keep-git-dir"),
                checksum,
                unpack: f.bool_opt("unpack"),
            })
        }
        _ => {
            let written = keyword_as_written(node);
            let mut e = InstrError::new(format!("unknown instruction: {written}"));
            if let Some(s) = suggest(&written, KEYWORDS) {
                e = e.with_help(format!("did you mean {s}?"));
            }
            return Err(e);
        }
    };
    Ok(ins)
}

fn no_destination(cmd: &str) -> InstrError {
    InstrError::new(format!(
        "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
    ))
}

/// Whether shell processing would change `word` (variables, quotes, escapes):
/// such `--from` values are rejected like BuildKit rejects them.
fn needs_expansion(word: &str, escape: char) -> bool {
    let bytes: Vec<char> = word.chars().collect();
    bytes
        .iter()
        .enumerate()
        .any(|(i, &c)| c == '\'' || c == '"' || c == escape || (c == '$' && i + 1 < bytes.len()))
}

fn checked_chmod(f: &flags::Parsed) -> Result<Option<String>, InstrError> {
    let chmod = f.non_empty("chmod");
    if let Some(c) = &chmod {
        if !c.contains('$') {
            Chmod::parse(c).map_err(InstrError::new)?;
        }
    }
    Ok(chmod)
}

fn key_values(args: &[String], cmd: &str) -> Result<Vec<KeyValue>, InstrError> {
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

/// If `word` is a heredoc marker (`<<EOF`, `<<-"EOF"`, `3<<EOF`): its name and chomp flag.
fn heredoc_marker(word: &str) -> Option<(String, bool)> {
    let digits = word.bytes().take_while(|b| b.is_ascii_digit()).count();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start();
    if rest.contains('<') || rest.is_empty() {
        return None;
    }
    let name: String = rest.chars().filter(|c| *c != '\'' && *c != '"').collect();
    Some((name, chomp))
}

/// Removes leading tabs from every line (`<<-`).
fn chomp_tabs(s: &str) -> String {
    s.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

type SourcesAndDest = (Vec<String>, Vec<InlineFile>, String);

fn sources_and_dest(node: &Node, cmd: &str) -> Result<SourcesAndDest, InstrError> {
    let (dest, srcs) = node.args.split_last().ok_or_else(|| no_destination(cmd))?;
    if heredoc_marker(dest).is_some() {
        return Err(InstrError::new(format!(
            "{cmd} cannot accept a heredoc as a destination"
        )));
    }
    let mut sources = Vec::new();
    let mut inline = Vec::new();
    for s in srcs {
        match heredoc_marker(s) {
            Some((name, chomp)) => {
                let doc = node.heredocs.iter().find(|h| h.name == name);
                let content = doc.map(|h| h.content.clone()).unwrap_or_default();
                inline.push(InlineFile {
                    content: if chomp { chomp_tabs(&content) } else { content },
                    expand: doc.is_none_or(|h| h.expand),
                    name,
                });
            }
            None => sources.push(s.clone()),
        }
    }
    Ok((sources, inline, dest.clone()))
}

fn parse_healthcheck(node: &Node, origin: Origin) -> Result<Healthcheck, InstrError> {
    let Some(typ) = node.args.first() else {
        return Err(at_least_one("HEALTHCHECK"));
    };
    let typ = typ.to_ascii_uppercase();
    let rest = &node.args[1..];
    if typ == "NONE" {
        // BuildKit does not look at flags for NONE.
        if !rest.is_empty() {
            return Err(InstrError::new("HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(Healthcheck {
            origin,
            check: None,
        });
    }
    let f = Flags::new(&node.flags)
        .string("interval")
        .string("timeout")
        .string("start-period")
        .string("start-interval")
        .string("retries")
        .parse()?;
    if typ != "CMD" {
        return Err(InstrError::new(format!(
            "Unknown type {typ:?} in HEALTHCHECK (try CMD)"
        )));
    }
    if rest.is_empty() {
        return Err(InstrError::new("Missing command after HEALTHCHECK CMD"));
    }
    let test = if node.json {
        std::iter::once("CMD".to_string())
            .chain(rest.iter().cloned())
            .collect()
    } else {
        vec!["CMD-SHELL".to_string(), rest.join(" ")]
    };
    let interval = |name: &str| -> Result<i64, InstrError> {
        let Some(v) = f.non_empty(name) else {
            return Ok(0);
        };
        let d = parse_go_duration(&v).map_err(InstrError::new)?;
        if d == 0 {
            return Ok(0);
        }
        if d < 1_000_000 {
            return Err(InstrError::new(format!(
                "Interval {name:?} cannot be less than 1ms"
            )));
        }
        Ok(d)
    };
    let retries = match f.non_empty("retries") {
        None => 0,
        Some(v) => {
            let n: i64 = v
                .parse()
                .ok()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(|| {
                    InstrError::new(format!(
                        "strconv.ParseInt: parsing {}: invalid syntax",
                        crate::ast::go_quote(&v)
                    ))
                })?;
            if n < 0 {
                return Err(InstrError::new(format!(
                    "--retries cannot be negative ({n})"
                )));
            }
            n as u32
        }
    };
    Ok(Healthcheck {
        origin,
        check: Some(HealthConfig {
            test,
            interval_ns: interval("interval")?,
            timeout_ns: interval("timeout")?,
            start_period_ns: interval("start-period")?,
            start_interval_ns: interval("start-interval")?,
            retries,
        }),
    })
}

#[cfg(test)]
mod tests;
