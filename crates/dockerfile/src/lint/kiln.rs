//! kiln's multi-stage rules: did the build keep what a multi-stage build is
//! for (a small, non-root final image without sources, dev dependencies or
//! floating bases)?

use super::model::{Model, Stage, StageBase, Step};
use super::rules::{self, Rule};
use super::{Host, Sink};
use crate::instructions::{CommandLine, Kind};

/// Entries of a context that do not belong in an image.
const UNWANTED_IN_CONTEXT: &[&str] = &["node_modules", ".git", ".env", "dist"];

pub(super) fn run(m: &Model<'_>, host: &dyn Host, out: &mut Sink<'_>) {
    let chain = m.final_chain();
    final_user(m, &chain, host, out);
    final_copies_context(&chain, out);
    dev_dependencies(&chain, out);
    oci_labels(&chain, out);
    for st in m.stages.iter().filter(|s| s.checked) {
        unpinned_base(st, out);
        for s in &st.body {
            copy_from_index(s, out);
            context_not_ignored(s, host, out);
        }
    }
}

fn report(out: &mut Sink<'_>, rule: &'static Rule, s: &Step<'_>, msg: String) {
    out.report(rule, s.start(), s.end(), s.comments(), msg);
}

/// Final-stage steps, the final stage's own last: base stages' steps first.
fn chain_steps<'c, 'a>(chain: &'c [&'c Stage<'a>]) -> impl Iterator<Item = &'c Step<'a>> {
    chain.iter().rev().flat_map(|st| st.body.iter())
}

fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or_default();
    name.is_empty() || name == "0" || name == "root"
}

/// FinalStageRunsAsRoot: the last USER of the final stage (or its base
/// stages), else its base image's user.
fn final_user(m: &Model<'_>, chain: &[&Stage<'_>], host: &dyn Host, out: &mut Sink<'_>) {
    let last_user = chain_steps(chain)
        .filter_map(|s| match &s.ins.kind {
            Kind::User(u) => Some((s, u.user.as_str())),
            _ => None,
        })
        .last();
    let final_stage = chain[0];
    match last_user {
        Some((_, user)) if user.contains('$') => {}
        Some((s, user)) => {
            if is_root(user) {
                report(
                    out,
                    &rules::FINAL_STAGE_RUNS_AS_ROOT,
                    s,
                    format!(
                        "The final stage switches to USER {user}, so the container runs as root"
                    ),
                );
            }
        }
        None => {
            let root = m.root_base(final_stage.index);
            let msg = match &root.base {
                StageBase::Image(name) => {
                    match host.base_image(name, m.stage_platform(final_stage.index)) {
                        Some(f) if !is_root(&f.user) => return,
                        Some(_) => format!(
                            "The final stage has no USER instruction and its base image {name} runs as root"
                        ),
                        None => format!(
                            "The final stage has no USER instruction, so it runs as root unless its base image {name} sets a user (the image is not in the store to tell)"
                        ),
                    }
                }
                StageBase::Scratch => {
                    "The final stage has no USER instruction, so it runs as root".to_string()
                }
                _ => return,
            };
            report(
                out,
                &rules::FINAL_STAGE_RUNS_AS_ROOT,
                &final_stage.step,
                msg,
            );
        }
    }
}

/// The context sources of a COPY/ADD without `--from`.
fn context_sources<'s>(s: &'s Step<'_>) -> Option<(&'static str, &'s [String])> {
    match &s.ins.kind {
        Kind::Copy(c) if c.from.is_none() => Some(("COPY", &c.sources)),
        Kind::Add(a) => Some(("ADD", &a.sources)),
        _ => None,
    }
}

fn is_context_root(src: &str) -> bool {
    let t = src.trim_end_matches('/');
    matches!(t, "" | "." | "./" | "/" | "./.")
}

fn final_copies_context(chain: &[&Stage<'_>], out: &mut Sink<'_>) {
    for s in chain_steps(chain) {
        let Some((kw, sources)) = context_sources(s) else {
            continue;
        };
        if let Some(src) = sources.iter().find(|x| is_context_root(x)) {
            report(
                out,
                &rules::FINAL_STAGE_COPIES_CONTEXT,
                s,
                format!("{kw} {src} copies the whole build context into the final stage"),
            );
        }
    }
}

/// The commands of a RUN (its shell string or argv, and its heredocs), split
/// into simple commands at `&&`, `||`, `;`, `|` and newlines.
fn simple_commands(s: &Step<'_>) -> Vec<Vec<String>> {
    let Kind::Run(r) = &s.ins.kind else {
        return Vec::new();
    };
    let mut text = match &r.command {
        CommandLine::Shell(c) => c.clone(),
        CommandLine::Exec(argv) => argv.join(" "),
    };
    for h in &r.heredocs {
        text.push('\n');
        text.push_str(&h.content);
    }
    let text = text.replace("\\\n", " ");
    text.split(['\n', ';', '|', '&'])
        .map(|c| {
            c.split_whitespace()
                .map(|w| w.trim_matches(['"', '\'']).to_string())
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty())
        .collect()
}

/// Why `cmd` installs development dependencies, if it does.
fn dev_install(cmd: &[String], node_env_production: bool) -> Option<String> {
    // Skip leading `VAR=value` assignments and wrappers.
    let words: Vec<&str> = cmd
        .iter()
        .map(String::as_str)
        .skip_while(|w| w.contains('=') && !w.starts_with('-') || *w == "sudo" || *w == "env")
        .collect();
    let prod_env = node_env_production
        || cmd
            .iter()
            .any(|w| w == "NODE_ENV=production" || w == "NODE_ENV=prod");
    let (tool, rest) = words.split_first()?;
    let positional = |from: usize| rest[from..].iter().any(|w| !w.starts_with('-'));
    let has = |flags: &[&str]| {
        rest.iter().any(|w| {
            flags
                .iter()
                .any(|f| w == f || w.starts_with(&format!("{f}=")))
        })
    };
    match *tool {
        "npm" => {
            let sub = *rest.first()?;
            if !matches!(sub, "install" | "i" | "ci" | "add")
                || positional(1)
                || has(&["-g", "--global"])
            {
                return None;
            }
            let omit_dev = rest.iter().any(|w| {
                *w == "--omit=dev"
                    || *w == "--production"
                    || *w == "--only=prod"
                    || *w == "--only=production"
                    || *w == "--prod"
            });
            (!omit_dev && !prod_env).then(|| format!("npm {sub} without --omit=dev"))
        }
        "yarn" => {
            let sub = rest.first().copied().unwrap_or("install");
            let is_install = sub == "install" || sub.starts_with('-');
            if !is_install {
                return None;
            }
            (!has(&["--production", "--prod"]) && !prod_env)
                .then(|| "yarn install without --production".to_string())
        }
        "pnpm" => {
            let sub = *rest.first()?;
            if !matches!(sub, "install" | "i") || positional(1) {
                return None;
            }
            (!has(&["--prod", "-P", "--production"]) && !prod_env)
                .then(|| "pnpm install without --prod".to_string())
        }
        "pip" | "pip3" | "python" | "python3" => {
            let pos = rest.iter().position(|w| *w == "install")?;
            let args = &rest[pos + 1..];
            args.iter().enumerate().find_map(|(i, w)| {
                let file = if *w == "-r" || *w == "--requirement" {
                    args.get(i + 1).copied()?
                } else {
                    w.strip_prefix("-r")
                        .or_else(|| w.strip_prefix("--requirement="))?
                };
                let base = file.rsplit('/').next().unwrap_or(file);
                (base.contains("dev") || base.contains("test") || file.contains("dev/"))
                    .then(|| format!("pip install -r {file}"))
            })
        }
        _ => None,
    }
}

fn dev_dependencies(chain: &[&Stage<'_>], out: &mut Sink<'_>) {
    let mut node_env_production = false;
    for s in chain_steps(chain) {
        if let Kind::Env(e) = &s.ins.kind {
            for v in &e.vars {
                if v.key == "NODE_ENV" {
                    node_env_production = v.value == "production" || v.value == "prod";
                }
            }
        }
        for cmd in simple_commands(s) {
            if let Some(why) = dev_install(&cmd, node_env_production) {
                report(
                    out,
                    &rules::DEV_DEPENDENCIES_IN_FINAL_STAGE,
                    s,
                    format!("The final stage runs {why}, which installs development dependencies into the image"),
                );
            }
        }
    }
}

fn copy_from_index(s: &Step<'_>, out: &mut Sink<'_>) {
    let Kind::Copy(c) = &s.ins.kind else { return };
    let Some(from) = &c.from else { return };
    if !from.is_empty() && from.bytes().all(|b| b.is_ascii_digit()) {
        report(
            out,
            &rules::COPY_FROM_STAGE_INDEX,
            s,
            format!("COPY --from={from} names a stage by its index; name the stage and copy from its name"),
        );
    }
}

fn unpinned_base(st: &Stage<'_>, out: &mut Sink<'_>) {
    let StageBase::Image(name) = &st.base else {
        return;
    };
    if name.contains('@') {
        return;
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    let msg = match last.split_once(':') {
        None => format!("The base image {name} has no tag, so it means {name}:latest"),
        Some((_, "latest")) => format!("The base image {name} uses the latest tag"),
        Some(_) => return,
    };
    report(out, &rules::BASE_IMAGE_UNPINNED, &st.step, msg);
}

fn context_not_ignored(s: &Step<'_>, host: &dyn Host, out: &mut Sink<'_>) {
    let Some((kw, sources)) = context_sources(s) else {
        return;
    };
    let Some(src) = sources.iter().find(|x| is_context_root(x)) else {
        return;
    };
    match host.context_entries(UNWANTED_IN_CONTEXT) {
        Some(found) if !found.is_empty() => report(
            out,
            &rules::CONTEXT_NOT_IGNORED,
            s,
            format!(
                "{kw} {src} copies {} from the build context; .dockerignore does not exclude {}",
                found.join(", "),
                if found.len() == 1 { "it" } else { "them" }
            ),
        ),
        Some(_) => {}
        None => out.skip(
            &rules::CONTEXT_NOT_IGNORED,
            "no build context to look at".to_string(),
        ),
    }
}

fn oci_labels(chain: &[&Stage<'_>], out: &mut Sink<'_>) {
    let has = chain_steps(chain).any(|s| match &s.ins.kind {
        Kind::Label(l) => l.labels.iter().any(|kv| {
            kv.key
                .trim_matches('"')
                .starts_with("org.opencontainers.image.")
        }),
        _ => false,
    });
    if !has {
        report(
            out,
            &rules::MISSING_OCI_LABELS,
            &chain[0].step,
            "The final stage has no org.opencontainers.image.* LABEL".to_string(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn dev_installs() {
        for bad in [
            "npm install",
            "npm ci",
            "npm i --no-audit",
            "yarn install --frozen-lockfile",
            "yarn",
            "pnpm install",
            "pip install -r requirements-dev.txt",
            "pip3 install --requirement=requirements/test.txt",
        ] {
            assert!(dev_install(&words(bad), false).is_some(), "{bad}");
        }
        for good in [
            "npm ci --omit=dev",
            "npm install --production",
            "npm install -g pm2",
            "npm install express",
            "NODE_ENV=production npm ci",
            "yarn install --production",
            "yarn build",
            "pnpm install --prod",
            "pip install -r requirements.txt",
            "npm run build",
        ] {
            assert!(dev_install(&words(good), false).is_none(), "{good}");
        }
        assert!(dev_install(&words("npm ci"), true).is_none());
    }
}
