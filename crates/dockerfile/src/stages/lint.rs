//! BuildKit lint rules that need nothing but the Dockerfile itself
//! (messages as BuildKit words them; see `conformance/buildkit/lint-rules`).
//! Rules about how a stage is built run only for stages the target needs,
//! as BuildKit only checks them while dispatching those stages.

use super::{Base, Input, Stage, Warning};
use crate::instructions::{Cmd, CommandLine, Entrypoint, Kind, Origin};

fn warn(out: &mut Vec<Warning>, o: &Origin, rule: &'static str, message: String) {
    out.push(Warning {
        line: o.start_line,
        rule,
        message,
    });
}

/// The keyword as written at the start of the instruction (`cmd`, `CMD`, `Cmd`).
fn written_keyword(o: &Origin) -> &str {
    o.code.split_whitespace().next().unwrap_or_default()
}

fn self_consistent(s: &str) -> bool {
    s == s.to_lowercase() || s == s.to_uppercase()
}

/// `(?i)(?:_|^)(?:tokens)(?:_|$)` of BuildKit's secret-name check, as word matching.
fn has_token(key: &str, tokens: &[&str]) -> bool {
    key.split('_')
        .any(|part| tokens.iter().any(|t| part.eq_ignore_ascii_case(t)))
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
    has_token(key, DENY) && !has_token(key, ALLOW)
}

/// Runs the rules over the planned stages.
pub(super) fn lint(stages: &[Stage], out: &mut Vec<Warning>) {
    // ConsistentInstructionCasing, StageNameCasing, FromAsCasing: all stages.
    let mut origins: Vec<&Origin> = Vec::new();
    for st in stages {
        origins.push(&st.from_origin);
        origins.extend(
            st.steps
                .iter()
                .filter(|s| !s.onbuild)
                .map(|s| &s.instruction.origin),
        );
    }
    let (mut lower, mut upper) = (0, 0);
    for o in &origins {
        let k = written_keyword(o);
        if self_consistent(k) {
            if k == k.to_lowercase() {
                lower += 1;
            } else {
                upper += 1;
            }
        }
    }
    let majority_lower = lower > upper;
    for o in &origins {
        let k = written_keyword(o);
        let wrong = if majority_lower && k != k.to_lowercase() {
            Some("lowercase")
        } else if !majority_lower && k != k.to_uppercase() {
            Some("uppercase")
        } else {
            None
        };
        if let Some(case) = wrong {
            warn(
                out,
                o,
                "ConsistentInstructionCasing",
                format!("Command '{k}' should match the case of the command majority ({case})"),
            );
        }
    }
    for st in stages {
        let o = &st.from_origin;
        let words: Vec<&str> = o.code.split_whitespace().collect();
        let args: Vec<&str> = words
            .iter()
            .skip(1)
            .copied()
            .skip_while(|w| w.starts_with("--"))
            .collect();
        if let [_, as_kw, name] = args.as_slice() {
            if *name != name.to_lowercase() {
                warn(
                    out,
                    o,
                    "StageNameCasing",
                    format!("Stage name '{name}' should be lowercase"),
                );
            }
            let from_kw = words[0];
            let mismatch = (from_kw == from_kw.to_lowercase() && *as_kw != as_kw.to_lowercase())
                || (from_kw == from_kw.to_uppercase()
                    && from_kw != from_kw.to_lowercase()
                    && *as_kw != as_kw.to_uppercase());
            if self_consistent(from_kw) && mismatch {
                warn(
                    out,
                    o,
                    "FromAsCasing",
                    format!("'{as_kw}' and '{from_kw}' keywords' casing do not match"),
                );
            }
        }
    }

    // Dispatch-time rules: needed stages only.
    // Per stage: whether a WORKDIR / SHELL was set in it or a base stage.
    let mut workdir_set = vec![false; stages.len()];
    let mut shells_set = vec![false; stages.len()];
    for st in stages {
        let (mut wd_set, mut shell_set) = match st.base {
            Base::Stage(b) => (workdir_set[b], shells_set[b]),
            _ => (false, false),
        };
        let mut seen_cmd: Option<&Origin> = None;
        let mut seen_entrypoint: Option<&Origin> = None;
        let mut seen_health: Option<&Origin> = None;
        for step in &st.steps {
            let i = &step.instruction.kind;
            let o = &step.instruction.origin;
            let name = written_keyword(o);
            match i {
                Kind::Shell(_) => shell_set = true,
                Kind::Cmd(Cmd { command }) | Kind::Entrypoint(Entrypoint { command })
                    if st.needed =>
                {
                    let seen = if matches!(i, Kind::Cmd(_)) {
                        &mut seen_cmd
                    } else {
                        &mut seen_entrypoint
                    };
                    if let Some(prev) = seen.replace(o) {
                        warn(
                            out,
                            prev,
                            "MultipleInstructionsDisallowed",
                            format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
                        );
                    }
                    if matches!(command, CommandLine::Shell(_)) && !shell_set {
                        warn(
                            out,
                            o,
                            "JSONArgsRecommended",
                            format!("JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"),
                        );
                    }
                }
                Kind::Healthcheck(_) if st.needed => {
                    if let Some(prev) = seen_health.replace(o) {
                        warn(
                            out,
                            prev,
                            "MultipleInstructionsDisallowed",
                            format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
                        );
                    }
                }
                Kind::Env(e) if st.needed => {
                    if e.vars.iter().any(|v| v.no_delim) {
                        warn(
                            out,
                            o,
                            "LegacyKeyValueFormat",
                            format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"),
                        );
                    }
                    for v in &e.vars {
                        if looks_secret(&v.key) {
                            warn(
                                out,
                                o,
                                "SecretsUsedInArgOrEnv",
                                format!("Do not use ARG or ENV instructions for sensitive data (ENV {:?})", v.key),
                            );
                        }
                    }
                }
                Kind::Label(l) if st.needed && l.labels.iter().any(|v| v.no_delim) => {
                    warn(
                        out,
                        o,
                        "LegacyKeyValueFormat",
                        format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"),
                    );
                }
                Kind::Arg(a) if st.needed => {
                    for d in &a.args {
                        if looks_secret(&d.key) {
                            warn(
                                out,
                                o,
                                "SecretsUsedInArgOrEnv",
                                format!("Do not use ARG or ENV instructions for sensitive data (ARG {:?})", d.key),
                            );
                        }
                    }
                }
                Kind::Workdir(w) => {
                    // Paths with variables are only known when the stage runs.
                    if st.needed && !wd_set && !w.path.starts_with('/') && !w.path.contains('$') {
                        warn(
                            out,
                            o,
                            "WorkdirRelativePath",
                            format!("Relative workdir {:?} can have unexpected results if the base image changes", w.path),
                        );
                    }
                    wd_set = true;
                }
                _ => {}
            }
        }
        workdir_set[st.index] = wd_set;
        shells_set[st.index] = shell_set;
    }
    unknown_stage_references(stages, out);
    out.sort_by_key(|w| w.line);
}

/// kiln's own check: `COPY --from=buidler` / `--mount=from=buidler` where the
/// word is no stage but close to a stage name. BuildKit would try to pull an
/// image of that name; the build would fail later with a registry error.
fn unknown_stage_references(stages: &[Stage], out: &mut Vec<Warning>) {
    let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    for st in stages.iter().filter(|s| s.needed) {
        for step in &st.steps {
            let inputs = step
                .copy_from
                .iter()
                .chain(step.mount_from.iter().flatten());
            for input in inputs {
                let Input::Image(word) = input else { continue };
                if word.contains([':', '/', '@']) {
                    continue;
                }
                if let Some(stage) = crate::instructions::suggest(word, &names) {
                    warn(
                        out,
                        &step.instruction.origin,
                        "UnknownStageReference",
                        format!("{word:?} is not a stage of this Dockerfile and will be pulled as an image (did you mean {stage:?}?)"),
                    );
                }
            }
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
}
