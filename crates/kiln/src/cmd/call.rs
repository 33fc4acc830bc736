//! `kiln build --call=outline|targets`: BuildKit's frontend subrequests
//! (`frontend/subrequests/outline`, `…/targets`), printed in their text form
//! (Go's tabwriter tables), from the parsed Dockerfile and the build plan.
//! Nothing is built.
//!
//! - outline: the target stage (its name and the description from the comment
//!   above its FROM), then the build args its stages use (every ARG of the target
//!   and of the stages it needs, and the global ARGs their FROM lines use), with
//!   their values (`--build-arg`, else the default as written) and descriptions,
//!   then the secret ids and SSH ids their `RUN --mount`s use, ordered by line.
//! - targets: every stage, the last one marked `(default)`, with its description.
//!
//! A description is BuildKit's doc comment: a comment line right above the
//! instruction that starts with the name it describes (`# build Builds the app`).

use kiln_dockerfile::ast::{Dockerfile, Node};
use kiln_dockerfile::instructions::{MountSpec, MountType};
use kiln_dockerfile::stages::Plan;

/// BuildKit's `getComment`: the comment line that starts with `name `.
fn description(node: &Node, name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    node.prev_comment
        .iter()
        .map(|c| c.trim())
        .find_map(|c| c.strip_prefix(&format!("{name} ")))
        .unwrap_or_default()
        .to_string()
}

/// Go's `text/tabwriter` with `minwidth 0, tabwidth 0, padchar ' ', flags 0`: every
/// cell ended by a tab is padded to its column's width plus `padding`; the text
/// after a line's last tab is not.
fn tabwrite(rows: &[Vec<String>], padding: usize) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                let pad = widths[i] + padding - c.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// The AST's instructions per stage (index = stage index), and the global ones.
fn split_stages(df: &Dockerfile) -> (Vec<&Node>, Vec<Vec<&Node>>) {
    let mut global = Vec::new();
    let mut stages: Vec<Vec<&Node>> = Vec::new();
    for n in &df.nodes {
        if n.keyword == "from" {
            stages.push(vec![n]);
        } else if let Some(s) = stages.last_mut() {
            s.push(n);
        } else {
            global.push(n);
        }
    }
    (global, stages)
}

/// A FROM's `AS` name, lower-cased as BuildKit keeps it.
fn stage_name(from: &Node) -> String {
    match from.args.as_slice() {
        [_, kw, name, ..] if kw.eq_ignore_ascii_case("as") => name.to_lowercase(),
        _ => String::new(),
    }
}

/// Whether `text` uses the variable `name` (`$name`, `${name…}`).
fn uses_var(text: &str, name: &str) -> bool {
    let plain = format!("${name}");
    let braced = format!("${{{name}");
    text.match_indices(&plain).any(|(i, _)| {
        !text[i + plain.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    }) || text.match_indices(&braced).any(|(i, _)| {
        !text[i + braced.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// `--call=targets`.
pub fn targets(df: &Dockerfile) -> String {
    let (_, stages) = split_stages(df);
    let mut rows = vec![vec!["TARGET".to_string(), "DESCRIPTION".to_string()]];
    for (i, st) in stages.iter().enumerate() {
        let name = stage_name(st[0]);
        let desc = description(st[0], &name);
        let default = i + 1 == stages.len();
        let shown = match (name.is_empty(), default) {
            (true, true) => "(default)".to_string(),
            (false, true) => format!("{name} (default)"),
            _ => name,
        };
        rows.push(vec![shown, desc]);
    }
    tabwrite(&rows, 1)
}

/// `--call=outline` for the plan's target.
/// A secret or SSH id a RUN step mounts: (line, id, required).
type MountUse = (usize, String, bool);

/// Adds the secret and SSH ids the `RUN --mount`s of `n` use (each id once).
fn run_mounts(n: &Node, secrets: &mut Vec<MountUse>, ssh: &mut Vec<MountUse>) {
    for f in &n.flags {
        let Some(raw) = f.strip_prefix("--mount=") else {
            continue;
        };
        let Ok(m) = MountSpec::parse(raw).and_then(|s| s.resolve(&mut |w: &str| Ok(w.to_string())))
        else {
            continue;
        };
        match m.kind {
            MountType::Secret => {
                let id = m.id.clone().filter(|i| !i.is_empty()).or_else(|| {
                    m.target
                        .as_deref()
                        .and_then(|t| t.rsplit('/').next())
                        .map(String::from)
                });
                if let Some(id) = id {
                    if !secrets.iter().any(|s| s.1 == id) {
                        secrets.push((n.start_line, id, m.required));
                    }
                }
            }
            MountType::Ssh => {
                let id =
                    m.id.clone()
                        .filter(|i| !i.is_empty())
                        .unwrap_or_else(|| "default".to_string());
                if !ssh.iter().any(|s| s.1 == id) {
                    ssh.push((n.start_line, id, m.required));
                }
            }
            _ => {}
        }
    }
}

/// Secret ids and SSH ids, each with whether it is required.
pub(crate) type MountedIds = (Vec<(String, bool)>, Vec<(String, bool)>);

/// The secret and SSH ids the stages the target needs mount, in line order:
/// (id, required). What BuildKit's provenance lists as the request's.
pub(crate) fn mounted_ids(df: &Dockerfile, plan: &Plan) -> MountedIds {
    let (_, stages) = split_stages(df);
    let (mut secrets, mut ssh) = (Vec::new(), Vec::new());
    for (i, st) in stages.iter().enumerate() {
        if !plan.stages.get(i).is_some_and(|s| s.needed) {
            continue;
        }
        for n in st[1..].iter().filter(|n| n.keyword == "run") {
            run_mounts(n, &mut secrets, &mut ssh);
        }
    }
    secrets.sort_by_key(|s| s.0);
    ssh.sort_by_key(|s| s.0);
    let ids = |v: Vec<MountUse>| v.into_iter().map(|(_, id, req)| (id, req)).collect();
    (ids(secrets), ids(ssh))
}

pub fn outline(df: &Dockerfile, plan: &Plan) -> String {
    let (global, stages) = split_stages(df);
    let mut args: Vec<(usize, String, String, String)> = Vec::new();
    let mut secrets: Vec<MountUse> = Vec::new();
    let mut ssh: Vec<MountUse> = Vec::new();
    let value = |key: &str, default: Option<&str>| {
        plan.build_args
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.unwrap_or_default().to_string())
    };
    let mut add_arg = |line: usize, node: &Node, word: &str| {
        let (key, default) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        if !args.iter().any(|a| a.1 == key) {
            args.push((
                line,
                key.to_string(),
                value(key, default),
                description(node, key),
            ));
        }
    };
    for (i, st) in stages.iter().enumerate() {
        if !plan.stages.get(i).is_some_and(|s| s.needed) {
            continue;
        }
        let from = &st[0];
        for g in global.iter().filter(|n| n.keyword == "arg") {
            for w in &g.args {
                let key = w.split_once('=').map(|(k, _)| k).unwrap_or(w);
                if uses_var(&from.original, key) {
                    add_arg(g.start_line, g, w);
                }
            }
        }
        for n in &st[1..] {
            match n.keyword.as_str() {
                "arg" => {
                    for w in &n.args {
                        add_arg(n.start_line, n, w);
                    }
                }
                "run" => run_mounts(n, &mut secrets, &mut ssh),
                _ => {}
            }
        }
    }
    args.sort_by_key(|a| a.0);
    secrets.sort_by_key(|s| s.0);
    ssh.sort_by_key(|s| s.0);

    let mut out = String::new();
    if let Some(target) = stages.get(plan.target) {
        let name = stage_name(target[0]);
        let desc = description(target[0], &name);
        if !name.is_empty() || !desc.is_empty() {
            let shown = if name.is_empty() {
                "(default)".to_string()
            } else {
                name
            };
            let mut rows = vec![vec!["TARGET:".to_string(), shown]];
            if !desc.is_empty() {
                rows.push(vec!["DESCRIPTION:".to_string(), desc]);
            }
            out.push_str(&tabwrite(&rows, 1));
            out.push('\n');
        }
    }
    if !args.is_empty() {
        let mut rows = vec![vec![
            "BUILD ARG".to_string(),
            "VALUE".to_string(),
            "DESCRIPTION".to_string(),
        ]];
        rows.extend(args.into_iter().map(|(_, k, v, d)| vec![k, v, d]));
        out.push_str(&tabwrite(&rows, 3));
        out.push('\n');
    }
    for (title, list) in [("SECRET", secrets), ("SSH", ssh)] {
        if list.is_empty() {
            continue;
        }
        let mut rows = vec![vec![title.to_string(), "REQUIRED".to_string()]];
        rows.extend(
            list.into_iter()
                .map(|(_, id, req)| vec![id, if req { "true" } else { "" }.to_string()]),
        );
        out.push_str(&tabwrite(&rows, 3));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_dockerfile::stages::{self, PlanOptions};
    use kiln_dockerfile::Source;

    const DF: &str = "\
ARG GO_VERSION=1.22
ARG UNUSED=x
# build Compiles the service
FROM golang:${GO_VERSION} AS build
# TAGS Go build tags
ARG TAGS=netgo
ARG NO_DOC
RUN --mount=type=secret,id=netrc,required=true --mount=type=ssh go build
FROM busybox AS lint
RUN --mount=type=secret,id=lintkey true
# release The image to ship
FROM busybox AS release
ARG VERSION=dev
RUN --mount=type=ssh,id=git,required true
COPY --from=build /out /
";

    fn plan(src: &Source, df: &Dockerfile, target: Option<&str>) -> Plan {
        let opts = PlanOptions {
            build_args: [("VERSION".to_string(), "1.2.3".to_string())].into(),
            target: target.map(String::from),
            target_platform: None,
        };
        stages::plan(df, src, &opts).unwrap()
    }

    #[test]
    fn targets_as_buildkit_prints_them() {
        let src = Source::new("Dockerfile", DF);
        let df = kiln_dockerfile::parse(&src).unwrap();
        assert_eq!(
            targets(&df),
            "TARGET            DESCRIPTION\n\
             build             Compiles the service\n\
             lint              \n\
             release (default) The image to ship\n"
        );
    }

    #[test]
    fn outline_as_buildkit_prints_it() {
        let src = Source::new("Dockerfile", DF);
        let df = kiln_dockerfile::parse(&src).unwrap();
        assert_eq!(
            outline(&df, &plan(&src, &df, None)),
            "TARGET:      release\n\
             DESCRIPTION: The image to ship\n\
             \n\
             BUILD ARG    VALUE   DESCRIPTION\n\
             GO_VERSION   1.22    \n\
             TAGS         netgo   Go build tags\n\
             NO_DOC               \n\
             VERSION      1.2.3   \n\
             \n\
             SECRET   REQUIRED\n\
             netrc    true\n\
             \n\
             SSH       REQUIRED\n\
             default   \n\
             git       true\n\
             \n"
        );
        // Only what the target needs: lint's secret is not listed for build.
        let o = outline(&df, &plan(&src, &df, Some("build")));
        assert!(o.starts_with("TARGET:      build\nDESCRIPTION: Compiles the service\n"));
        assert!(!o.contains("lintkey") && !o.contains("\nVERSION") && !o.contains("UNUSED"));
    }
}
