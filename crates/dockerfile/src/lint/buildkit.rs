//! BuildKit's build-check rules, run where BuildKit runs them: while parsing
//! (casing, MAINTAINER, descriptions), over all stages (names, casing, default
//! args), per stage's FROM (args, platform), and while dispatching each
//! checked stage's instructions with its environment (variables, ENV/ARG/LABEL,
//! CMD/ENTRYPOINT/HEALTHCHECK, WORKDIR, EXPOSE, COPY/ADD).

use super::model::{Model, Stage, StageBase, Step};
use super::rules::{self, Rule};
use super::{Host, Sink};
use crate::instructions::{levenshtein, CommandLine, Kind};
use crate::shell::Lexer;
use crate::stages::Platform;
use std::collections::{BTreeMap, BTreeSet};

const NO_COMMENTS: &[String] = &[];

pub(super) fn run(m: &Model<'_>, host: &dyn Host, out: &mut Sink<'_>) {
    for (line, msg) in &m.df.warnings {
        if msg.starts_with("Empty continuation line") {
            out.report(
                &rules::NO_EMPTY_CONTINUATION,
                *line,
                *line,
                NO_COMMENTS,
                "Empty continuation line".into(),
            );
        }
    }
    parse_time(m, out);
    stage_names(m, out);
    command_casing(m, out);
    default_args_in_from(m, out);
    for st in &m.stages {
        from_args(m, st, out);
    }
    for st in m.stages.iter().filter(|s| s.checked) {
        base_image_platform(m, st, host, out);
    }
    dispatch(m, host, out);
}

/// Rules BuildKit runs while parsing each instruction.
fn parse_time(m: &Model<'_>, out: &mut Sink<'_>) {
    let steps = m.meta_args.iter().chain(
        m.stages
            .iter()
            .flat_map(|s| std::iter::once(&s.step).chain(&s.body)),
    );
    for s in steps {
        match &s.ins.kind {
            Kind::Maintainer(_) => out.report(
                &rules::MAINTAINER_DEPRECATED,
                s.start(),
                s.end(),
                s.comments(),
                "Maintainer instruction is deprecated in favor of using label".into(),
            ),
            Kind::From(f) => {
                let args = &s.node.args;
                if args.len() == 3 && args[2] != args[2].to_lowercase() {
                    out.report(
                        &rules::STAGE_NAME_CASING,
                        s.start(),
                        s.end(),
                        s.comments(),
                        format!("Stage name '{}' should be lowercase", args[2]),
                    );
                }
                if args.len() >= 3 {
                    let from = s.keyword();
                    let as_kw = &args[1];
                    let lower = from == from.to_lowercase();
                    let upper = from == from.to_uppercase();
                    let matches = if lower {
                        *as_kw == as_kw.to_lowercase()
                    } else if upper {
                        *as_kw == as_kw.to_uppercase()
                    } else {
                        true
                    };
                    if !matches {
                        out.report(
                            &rules::FROM_AS_CASING,
                            s.start(),
                            s.end(),
                            s.comments(),
                            format!("'{as_kw}' and '{from}' keywords' casing do not match"),
                        );
                    }
                }
                if let Some(name) = &f.name {
                    definition_description(s, "FROM", &[name.as_str()], out);
                }
            }
            Kind::Arg(a) => {
                let keys: Vec<&str> = a.args.iter().map(|d| d.key.as_str()).collect();
                definition_description(s, "ARG", &keys, out);
            }
            _ => {}
        }
    }
}

/// InvalidDefinitionDescription (experimental): the comment right above a
/// named FROM or an ARG should start with the name it describes.
fn definition_description(s: &Step<'_>, instruction: &str, keys: &[&str], out: &mut Sink<'_>) {
    let Some(last) = s.comments().last() else {
        return;
    };
    if keys.is_empty() {
        return;
    }
    let first = last.split(' ').next().unwrap_or_default();
    if keys.contains(&first) {
        return;
    }
    let example = if keys.len() > 1 { "<arg_key>" } else { keys[0] };
    out.report(
        &rules::INVALID_DEFINITION_DESCRIPTION,
        s.start(),
        s.end(),
        s.comments(),
        format!("Comment for {instruction} should follow the format: `# {example} <description>`"),
    );
}

fn stage_names(m: &Model<'_>, out: &mut Sink<'_>) {
    let mut seen = BTreeSet::new();
    for st in &m.stages {
        let Some(name) = &st.from.name else { continue };
        if name == "context" || name == "scratch" {
            out.report(
                &rules::RESERVED_STAGE_NAME,
                st.step.start(),
                st.step.end(),
                NO_COMMENTS,
                format!("Stage name should not use the same name as reserved stage {name:?}"),
            );
        }
        if !seen.insert(name.as_str()) {
            out.report(
                &rules::DUPLICATE_STAGE_NAME,
                st.step.start(),
                st.step.end(),
                NO_COMMENTS,
                format!("Duplicate stage name {name:?}, stage names should be unique"),
            );
        }
    }
}

fn self_consistent(s: &str) -> bool {
    s == s.to_lowercase() || s == s.to_uppercase()
}

fn command_casing(m: &Model<'_>, out: &mut Sink<'_>) {
    let steps: Vec<&Step<'_>> = m
        .stages
        .iter()
        .flat_map(|s| std::iter::once(&s.step).chain(&s.body))
        .collect();
    let (mut lower, mut upper) = (0, 0);
    for s in &steps {
        let k = s.keyword();
        if self_consistent(k) {
            if k == k.to_lowercase() {
                lower += 1;
            } else {
                upper += 1;
            }
        }
    }
    let majority_lower = lower > upper;
    for s in steps {
        let k = s.keyword();
        let wrong = if majority_lower && k != k.to_lowercase() {
            "lowercase"
        } else if !majority_lower && k != k.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        out.report(
            &rules::CONSISTENT_INSTRUCTION_CASING,
            s.start(),
            s.end(),
            NO_COMMENTS,
            format!("Command '{k}' should match the case of the command majority ({wrong})"),
        );
    }
}

/// InvalidDefaultArgInFrom: with no `--build-arg`, every FROM must still name
/// a valid image.
fn default_args_in_from(m: &Model<'_>, out: &mut Sink<'_>) {
    for st in &m.stages {
        let Ok(name) = m.lexer.process_word(&st.from.base, &m.default_global_args) else {
            return;
        };
        if !super::is_valid_reference(&name) {
            out.report(
                &rules::INVALID_DEFAULT_ARG_IN_FROM,
                st.step.start(),
                st.step.end(),
                NO_COMMENTS,
                format!(
                    "Default value for ARG {} results in empty or invalid base image name",
                    st.from.base
                ),
            );
        }
    }
}

/// BuildKit's `suggest.Search`: the closest option at edit distance < 3, none
/// on an exact match.
pub(super) fn suggest(word: &str, options: &[&str], case_sensitive: bool) -> Option<String> {
    let val = if case_sensitive {
        word.to_string()
    } else {
        word.to_lowercase()
    };
    let mut best: Option<String> = None;
    let mut min = 3;
    for o in options {
        let opt = if case_sensitive {
            o.to_string()
        } else {
            o.to_lowercase()
        };
        if opt == val {
            return None;
        }
        let d = levenshtein(&val, &opt);
        if d < min {
            min = d;
            best = Some(if case_sensitive {
                opt
            } else if word == word.to_lowercase() {
                opt.to_lowercase()
            } else if word == word.to_uppercase() {
                opt.to_uppercase()
            } else {
                opt
            });
        }
    }
    best
}

/// UndefinedArgInFrom, RedundantTargetPlatform, FromPlatformFlagConstDisallowed.
fn from_args(m: &Model<'_>, st: &Stage<'_>, out: &mut Sink<'_>) {
    let keys: BTreeSet<&str> = m
        .meta_declared
        .iter()
        .map(String::as_str)
        .chain(m.global_args.keys().map(String::as_str))
        .collect();
    let key_list: Vec<&str> = keys.iter().copied().collect();
    let undefined = |unmatched: &BTreeSet<String>, out: &mut Sink<'_>| {
        for name in unmatched {
            if keys.contains(name.as_str()) {
                continue;
            }
            let mut msg = format!("FROM argument '{name}' is not declared");
            if let Some(s) = suggest(name, &key_list, true) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            out.report(
                &rules::UNDEFINED_ARG_IN_FROM,
                st.step.start(),
                st.step.end(),
                st.step.comments(),
                msg,
            );
        }
    };
    if let Ok(exp) = m
        .lexer
        .process_word_with_matches(&st.from.base, &m.global_args)
    {
        undefined(&exp.unmatched, out);
    }
    let Some(p) = &st.from.platform else { return };
    let Ok(exp) = m.lexer.process_word_with_matches(p, &m.global_args) else {
        return;
    };
    undefined(&exp.unmatched, out);
    if exp.matched.len() == 1
        && exp.unmatched.is_empty()
        && exp.matched.contains("TARGETPLATFORM")
        && m.global_args.get("TARGETPLATFORM") == Some(&exp.result)
    {
        out.report(
            &rules::REDUNDANT_TARGET_PLATFORM,
            st.step.start(),
            st.step.end(),
            st.step.comments(),
            format!(
                "Setting platform to predefined {p} in FROM is redundant as this is the default behavior"
            ),
        );
    }
    if exp.matched.is_empty() && exp.unmatched.is_empty() {
        if let Ok(plat) = Platform::parse(&exp.result) {
            let name = st.from.name.as_deref().unwrap_or_default();
            if !name.contains(&plat.os) && !name.contains(&plat.arch) {
                out.report(
                    &rules::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                    st.step.start(),
                    st.step.end(),
                    st.step.comments(),
                    format!(
                        "FROM --platform flag should not use constant value {:?}",
                        exp.result
                    ),
                );
            }
        }
    }
}

fn base_image_platform(m: &Model<'_>, st: &Stage<'_>, host: &dyn Host, out: &mut Sink<'_>) {
    let StageBase::Image(name) = &st.base else {
        return;
    };
    let expected = st.platform.clone().unwrap_or(m.target_platform.clone());
    match host.base_image(name, &expected) {
        Some(facts) => {
            let actual = facts.platform;
            if actual.os != expected.os || actual.arch != expected.arch {
                out.report(
                    &rules::INVALID_BASE_IMAGE_PLATFORM,
                    st.step.start(),
                    st.step.end(),
                    NO_COMMENTS,
                    format!(
                        "Base image {name} was pulled with platform \"{actual}\", expected \"{expected}\" for current build"
                    ),
                );
            }
        }
        None => out.skip(
            &rules::INVALID_BASE_IMAGE_PLATFORM,
            format!("base image {name} is not in the image store (pull it to check its platform)"),
        ),
    }
}

/// A stage's state while its instructions are dispatched.
#[derive(Clone, Default)]
struct State {
    /// The environment (base image env, PATH, ENV, ARGs with values), in order.
    env: Vec<(String, String)>,
    /// Whether the environment is complete (the base image's is known).
    env_known: bool,
    /// Names declared by ARG in the stage (and its base stages).
    declared: BTreeSet<String>,
    workdir_set: bool,
    shell_set: bool,
}

impl State {
    fn set(&mut self, k: &str, v: String) {
        match self.env.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => self.env.push((k.to_string(), v)),
        }
    }
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

fn dispatch(m: &Model<'_>, host: &dyn Host, out: &mut Sink<'_>) {
    // A stage's final state is kept only until the last stage built on it
    // takes it (moved, not copied: a chain of stages stays linear).
    let mut children = vec![0usize; m.stages.len()];
    for st in m.stages.iter().filter(|s| s.checked) {
        if let StageBase::Stage(b) = st.base {
            children[b] += 1;
        }
    }
    let mut states: Vec<Option<State>> = vec![None; m.stages.len()];
    let mut skipped_env: Vec<String> = Vec::new();
    for st in m.stages.iter().filter(|s| s.checked) {
        let mut state = match &st.base {
            StageBase::Stage(b) => {
                children[*b] -= 1;
                if children[*b] == 0 {
                    states[*b].take().unwrap_or_default()
                } else {
                    states[*b].clone().unwrap_or_default()
                }
            }
            StageBase::Scratch => State {
                env_known: true,
                ..State::default()
            },
            StageBase::Image(name) => {
                let platform = m.stage_platform(st.index).clone();
                match host.base_image(name, &platform) {
                    Some(f) => State {
                        env: f.env.clone(),
                        env_known: true,
                        shell_set: f.has_shell,
                        ..State::default()
                    },
                    None => {
                        skipped_env.push(name.clone());
                        State::default()
                    }
                }
            }
            StageBase::Unknown => State::default(),
        };
        if !state.env.iter().any(|(k, _)| k == "PATH") {
            state.set("PATH", DEFAULT_PATH.into());
        }
        let mut seen: BTreeMap<&str, &Step<'_>> = BTreeMap::new();
        for s in &st.body {
            dispatch_step(m, s, &mut state, &mut seen, host, out);
        }
        if children[st.index] > 0 {
            states[st.index] = Some(state);
        }
    }
    skipped_env.sort();
    skipped_env.dedup();
    for name in skipped_env {
        out.skip(
            &rules::UNDEFINED_VAR,
            format!("stages on {name} start from an image that is not in the image store, so their environment is unknown (pull it to check)"),
        );
    }
}

/// Expands `word` (raw: heredoc content) with the stage's environment,
/// reporting undefined variables; `None` when it does not expand.
fn expand(
    lexer: &Lexer,
    word: &str,
    s: &Step<'_>,
    state: &State,
    out: &mut Sink<'_>,
) -> Option<String> {
    let exp = lexer.process_word_with_matches(word, &state.env).ok()?;
    undefined_vars(&exp.unmatched, s, state, out);
    Some(exp.result)
}

fn undefined_vars(unmatched: &BTreeSet<String>, s: &Step<'_>, state: &State, out: &mut Sink<'_>) {
    if !state.env_known || unmatched.is_empty() {
        return;
    }
    let keys: Vec<&str> = state.env.iter().map(|(k, _)| k.as_str()).collect();
    for name in unmatched {
        if state.declared.contains(name) || NON_ENV_ARGS.contains(&name.as_str()) {
            continue;
        }
        let mut msg = format!("Usage of undefined variable '${name}'");
        if let Some(sug) = suggest(name, &keys, true) {
            msg.push_str(&format!(" (did you mean ${sug}?)"));
        }
        out.report(&rules::UNDEFINED_VAR, s.start(), s.end(), s.comments(), msg);
    }
}

fn report(out: &mut Sink<'_>, rule: &'static Rule, s: &Step<'_>, msg: String) {
    out.report(rule, s.start(), s.end(), s.comments(), msg);
}

fn looks_secret(key: &str) -> bool {
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    const ALLOW: &[&str] = &["public", "file", "version"];
    // `(?i)(?:_|^)(?:tokens)(?:_|$)`: the whole key, or its first or last
    // `_`-separated word... or any inner one, as the regexp also matches there.
    let has = |tokens: &[&str]| {
        key.split('_')
            .any(|part| tokens.iter().any(|t| part.eq_ignore_ascii_case(t)))
    };
    has(DENY) && !has(ALLOW)
}

fn is_abs(p: &str) -> bool {
    p.starts_with('/')
}

fn clean_path(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !abs {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (abs, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

fn is_remote(src: &str) -> bool {
    src.contains("://") || src.starts_with("git@")
}

fn dispatch_step<'s>(
    m: &Model<'_>,
    s: &'s Step<'_>,
    state: &mut State,
    seen: &mut BTreeMap<&'static str, &'s Step<'s>>,
    host: &dyn Host,
    out: &mut Sink<'_>,
) {
    let lexer = &m.lexer;
    let raw = Lexer::for_heredoc_contents();
    let name = s.keyword();
    let used_once = |kw: &'static str,
                     seen: &mut BTreeMap<&'static str, &'s Step<'s>>,
                     out: &mut Sink<'_>| {
        if let Some(prev) = seen.insert(kw, s) {
            out.report(
                &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED,
                prev.start(),
                prev.end(),
                prev.comments(),
                format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
            );
        }
    };
    match &s.ins.kind {
        Kind::Env(e) => {
            let mut values = Vec::new();
            for v in &e.vars {
                let k = expand(lexer, &v.key, s, state, out).unwrap_or_else(|| v.key.clone());
                let val = expand(lexer, &v.value, s, state, out).unwrap_or_default();
                values.push((k, val));
            }
            for v in &e.vars {
                if v.no_delim {
                    report(out, &rules::LEGACY_KEY_VALUE_FORMAT, s, format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"));
                }
                if looks_secret(&v.key) {
                    report(
                        out,
                        &rules::SECRETS_USED_IN_ARG_OR_ENV,
                        s,
                        format!(
                            "Do not use ARG or ENV instructions for sensitive data (ENV {:?})",
                            v.key
                        ),
                    );
                }
            }
            for (k, v) in values {
                state.set(&k, v);
            }
        }
        Kind::Label(l) => {
            for v in &l.labels {
                expand(lexer, &v.key, s, state, out);
                expand(lexer, &v.value, s, state, out);
            }
            for v in &l.labels {
                if v.no_delim {
                    report(out, &rules::LEGACY_KEY_VALUE_FORMAT, s, format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"));
                }
            }
        }
        Kind::Arg(a) => {
            for d in &a.args {
                if looks_secret(&d.key) {
                    report(
                        out,
                        &rules::SECRETS_USED_IN_ARG_OR_ENV,
                        s,
                        format!(
                            "Do not use ARG or ENV instructions for sensitive data (ARG {:?})",
                            d.key
                        ),
                    );
                }
                let value = if let Some(v) = m.build_args.get(&d.key).cloned() {
                    Some(v)
                } else if let Some(def) = &d.default {
                    expand(lexer, def, s, state, out)
                } else {
                    m.global_args.get(&d.key).cloned()
                };
                if let Some(v) = value {
                    if !NON_ENV_ARGS.contains(&d.key.as_str()) {
                        state.set(&d.key, v);
                    }
                }
                state.declared.insert(d.key.clone());
            }
        }
        Kind::Cmd(c) => {
            used_once("CMD", seen, out);
            json_args(&c.command, s, state, name, out);
        }
        Kind::Entrypoint(e) => {
            used_once("ENTRYPOINT", seen, out);
            json_args(&e.command, s, state, name, out);
        }
        Kind::Healthcheck(_) => used_once("HEALTHCHECK", seen, out),
        Kind::Shell(_) => state.shell_set = true,
        Kind::Workdir(w) => {
            let path = expand(lexer, &w.path, s, state, out).unwrap_or_else(|| w.path.clone());
            if !state.workdir_set && !is_abs(&path) {
                report(out, &rules::WORKDIR_RELATIVE_PATH, s, format!("Relative workdir {path:?} can have unexpected results if the base image changes"));
            }
            state.workdir_set = true;
        }
        Kind::User(u) => {
            expand(lexer, &u.user, s, state, out);
        }
        Kind::StopSignal(sig) => {
            expand(lexer, &sig.signal, s, state, out);
        }
        Kind::Volume(v) => {
            for p in &v.paths {
                expand(lexer, p, s, state, out);
            }
        }
        Kind::Expose(e) => {
            for p in &e.ports {
                let Ok(exp) = lexer.process_word_with_matches(p, &state.env) else {
                    continue;
                };
                undefined_vars(&exp.unmatched, s, state, out);
                let Ok(words) = lexer.process_words(p, &state.env) else {
                    continue;
                };
                for raw_port in words {
                    expose_port(&raw_port, s, out);
                }
            }
        }
        Kind::Copy(c) => {
            let mut sources = Vec::new();
            for w in c
                .sources
                .iter()
                .chain(std::iter::once(&c.dest))
                .chain(&c.chown)
                .chain(&c.chmod)
            {
                sources.push(expand(lexer, w, s, state, out));
            }
            for f in c.inline.iter().filter(|f| f.expand) {
                if let Ok(exp) = raw.process_word_with_matches(&f.content, &state.env) {
                    undefined_vars(&exp.unmatched, s, state, out);
                }
            }
            if c.from.is_none() {
                let srcs: Vec<String> = sources
                    .into_iter()
                    .take(c.sources.len())
                    .flatten()
                    .collect();
                ignored_sources("Copy", &srcs, s, host, out);
            }
        }
        Kind::Add(a) => {
            let mut sources = Vec::new();
            for w in a
                .sources
                .iter()
                .chain(std::iter::once(&a.dest))
                .chain(&a.chown)
                .chain(&a.chmod)
            {
                sources.push(expand(lexer, w, s, state, out));
            }
            for f in a.inline.iter().filter(|f| f.expand) {
                if let Ok(exp) = raw.process_word_with_matches(&f.content, &state.env) {
                    undefined_vars(&exp.unmatched, s, state, out);
                }
            }
            let srcs: Vec<String> = sources
                .into_iter()
                .take(a.sources.len())
                .flatten()
                .collect();
            ignored_sources("Add", &srcs, s, host, out);
        }
        _ => {}
    }
}

fn json_args(c: &CommandLine, s: &Step<'_>, state: &State, name: &str, out: &mut Sink<'_>) {
    if matches!(c, CommandLine::Shell(_)) && !state.shell_set {
        report(out, &rules::JSON_ARGS_RECOMMENDED, s, format!("JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"));
    }
}

/// ExposeProtoCasing and ExposeInvalidFormat for one `[ip:][host:]port[/proto]`.
fn expose_port(raw_port: &str, s: &Step<'_>, out: &mut Sink<'_>) {
    let parts: Vec<&str> = raw_port.split(':').collect();
    let (ip, host_port, container) = match parts.len() {
        1 => (String::new(), "", parts[0]),
        2 => (String::new(), parts[0], parts[1]),
        n => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
    };
    let proto = container.split_once('/').map(|(_, p)| p).unwrap_or("");
    if proto != proto.to_lowercase() {
        report(
            out,
            &rules::EXPOSE_PROTO_CASING,
            s,
            format!("Defined protocol '{raw_port}' in EXPOSE instruction should be lowercase"),
        );
    }
    if !ip.is_empty() || !host_port.is_empty() {
        report(out, &rules::EXPOSE_INVALID_FORMAT, s, format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{raw_port}'"));
    }
}

/// CopyIgnoredFile for the context sources of a COPY/ADD.
fn ignored_sources(
    cmd: &str,
    sources: &[String],
    s: &Step<'_>,
    host: &dyn Host,
    out: &mut Sink<'_>,
) {
    for src in sources {
        if is_remote(src) {
            continue;
        }
        let cleaned = clean_path(src);
        if host.ignored(&cleaned) == Some(true) {
            report(
                out,
                &rules::COPY_IGNORED_FILE,
                s,
                format!("Attempting to {cmd} file {cleaned:?} that is excluded by .dockerignore"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        for k in [
            "GITHUB_TOKEN",
            "api_key",
            "DB_PASSWORD",
            "secret",
            "AUTH",
            "aws_secret_access_key",
        ] {
            assert!(looks_secret(k), "{k}");
        }
        for k in [
            "PUBLIC_KEY",
            "KEY_FILE",
            "NODE_VERSION",
            "TOKENIZER",
            "keyboard",
            "PORT",
        ] {
            assert!(!looks_secret(k), "{k}");
        }
    }

    #[test]
    fn suggestions_like_buildkit() {
        assert_eq!(
            suggest("PAHT", &["HOME", "PATH"], true).as_deref(),
            Some("PATH")
        );
        assert_eq!(suggest("PATH", &["PATH"], true), None);
        assert_eq!(suggest("xyzzyq", &["PATH"], true), None);
        assert_eq!(
            suggest("BUILDPLATFROM", &["BUILDPLATFORM"], true).as_deref(),
            Some("BUILDPLATFORM")
        );
    }

    #[test]
    fn paths_cleaned_like_go() {
        assert_eq!(clean_path("./tmp/x"), "tmp/x");
        assert_eq!(clean_path("."), ".");
        assert_eq!(clean_path("./"), ".");
        assert_eq!(clean_path("/a/../b/"), "/b");
        assert_eq!(clean_path("a/../../b"), "../b");
    }
}
