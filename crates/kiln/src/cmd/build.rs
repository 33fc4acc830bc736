//! `kiln build`: read the Dockerfile, parse it, plan the stages, check the
//! entitlements its RUN steps need against `--allow`; `--dry-run` prints the plan. Executing the plan is not implemented yet.

use crate::flags::{BuildFlags, GlobalFlags};
use kiln_build::entitlements::{self, Entitlements};
use kiln_dockerfile::instructions::Instruction;
use kiln_dockerfile::stages::{self, Base, Input, Plan, PlanOptions, Platform, Stage};
use kiln_dockerfile::Source;
use miette::{miette, IntoDiagnostic, WrapErr};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::process::ExitCode;

pub fn run(_global: &GlobalFlags, flags: BuildFlags) -> miette::Result<ExitCode> {
    let src = read_dockerfile(&flags)?;
    let df = kiln_dockerfile::parse(&src).map_err(miette::Report::new)?;
    let opts = PlanOptions {
        build_args: build_args(&flags.build_args, |k| std::env::var(k).ok())?,
        target: flags.target.clone(),
        target_platform: flags.platform.as_deref().map(parse_platform).transpose()?,
    };
    let plan = stages::plan(&df, &src, &opts).map_err(miette::Report::new)?;
    let entitlements =
        Entitlements::from_allow(&flags.allow).map_err(|e| miette!("--allow: {e}"))?;
    entitlements::check_plan(&plan, &entitlements, &src).map_err(miette::Report::new)?;
    for w in &plan.warnings {
        if w.line > 0 {
            eprintln!(
                "warning: {}:{}: {} [{}]",
                src.name, w.line, w.message, w.rule
            );
        } else {
            eprintln!("warning: {} [{}]", w.message, w.rule);
        }
    }
    if flags.dry_run {
        print!("{}", render_plan(&plan));
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "kiln build: planning succeeded ({} stages, {} steps), but the build executor is not implemented yet; use --dry-run to see the plan",
        plan.needed_stages().count(),
        plan.needed_steps()
    );
    Ok(ExitCode::from(1))
}

/// Reads `-f FILE` (`-` = standard input), default `CONTEXT/Dockerfile`.
/// Errors are reported against the file's base name, as docker does (`Dockerfile:12`).
fn read_dockerfile(flags: &BuildFlags) -> miette::Result<Source> {
    let path = match &flags.file {
        Some(p) => p.clone(),
        None => flags.context.join("Dockerfile"),
    };
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .into_diagnostic()
            .wrap_err("cannot read the Dockerfile from standard input")?;
        return Ok(Source::new("Dockerfile", text));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        miette!(
            "cannot read Dockerfile {}: {}",
            path.display(),
            e.to_string().to_lowercase()
        )
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".to_string());
    Ok(Source::new(name, text))
}

/// `--build-arg KEY=value`, or `KEY` to take the value from the environment
/// (skipped when the variable is unset, as docker does).
fn build_args(
    given: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> miette::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in given {
        match a.split_once('=') {
            Some(("", _)) => return Err(miette!("invalid --build-arg {a:?}: the name is empty")),
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None if a.is_empty() => return Err(miette!("invalid --build-arg: the name is empty")),
            None => {
                if let Some(v) = env(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

fn parse_platform(s: &str) -> miette::Result<Platform> {
    if s.contains(',') {
        return Err(miette!(
            "--platform {s:?}: building for several platforms at once is not supported; give one platform"
        ));
    }
    Platform::parse(s).map_err(|e| miette!("invalid --platform: {e}"))
}

fn stage_label(plan: &Plan, i: usize) -> String {
    let s = &plan.stages[i];
    match &s.name {
        Some(n) => format!("stage {i} ({n})"),
        None => format!("stage {i}"),
    }
}

fn lines(o: &kiln_dockerfile::instructions::Origin) -> String {
    if o.end_line > o.start_line {
        format!("{}-{}", o.start_line, o.end_line)
    } else {
        o.start_line.to_string()
    }
}

/// The first line of a (possibly heredoc) instruction with whitespace runs
/// (from joined continuation lines) collapsed, for one-line display.
fn first_line(code: &str) -> String {
    code.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn render_stage(out: &mut String, plan: &Plan, st: &Stage) {
    let name = st.name.as_deref().unwrap_or("(unnamed)");
    let mut status = if st.needed { "needed" } else { "pruned" }.to_string();
    if st.index == plan.target {
        status.push_str(", target");
    }
    let _ = writeln!(out, "stage {}  {name}  [{status}]", st.index);
    let base = match &st.base {
        Base::Scratch => "scratch".to_string(),
        Base::Image(r) => format!("image {r}"),
        Base::Stage(i) => stage_label(plan, *i),
    };
    let _ = writeln!(out, "  base:     {base}");
    if let Some(p) = &st.platform {
        let _ = writeln!(out, "  platform: {p}");
    }
    let deps: Vec<String> = st.deps.iter().map(|d| stage_label(plan, *d)).collect();
    let deps = if deps.is_empty() {
        "none".to_string()
    } else {
        deps.join(", ")
    };
    let _ = writeln!(out, "  deps:     {deps}");
    let _ = writeln!(out, "  steps:");
    let width = plan
        .stages
        .iter()
        .flat_map(|s| {
            s.steps
                .iter()
                .map(|st| lines(st.instruction.origin()).len())
        })
        .chain(std::iter::once(lines(&st.from.origin).len()))
        .max()
        .unwrap_or(1);
    let _ = writeln!(
        out,
        "    line {:>width$}  {}",
        lines(&st.from.origin),
        first_line(&st.from.origin.code)
    );
    for step in &st.steps {
        let o = step.instruction.origin();
        let mut notes = Vec::new();
        if step.onbuild {
            notes.push("ONBUILD trigger of the base stage".to_string());
        }
        match &step.copy_from {
            Some(Input::Stage(i)) => notes.push(format!("from {}", stage_label(plan, *i))),
            Some(Input::Image(r)) => notes.push(format!("from image {r}")),
            None => {}
        }
        for input in step.mount_from.iter().flatten() {
            match input {
                Input::Stage(i) => notes.push(format!("mounts {}", stage_label(plan, *i))),
                Input::Image(r) => notes.push(format!("mounts image {r}")),
            }
        }
        if let Instruction::Run(r) = &step.instruction {
            if !r.heredocs.is_empty() {
                notes.push(format!("{} heredoc(s)", r.heredocs.len()));
            }
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!("    ({})", notes.join("; "))
        };
        let _ = writeln!(
            out,
            "    line {:>width$}  {}{notes}",
            lines(o),
            first_line(&o.code)
        );
    }
}

/// The human-readable plan printed by `--dry-run`.
fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    let needed = plan.needed_stages().count();
    let _ = writeln!(
        out,
        "build plan: {} stages ({needed} needed, {} pruned), {} steps to run; target {}; platform {}",
        plan.stages.len(),
        plan.stages.len() - needed,
        plan.needed_steps(),
        stage_label(plan, plan.target),
        plan.target_platform
    );
    if !plan.build_args.is_empty() {
        let args: Vec<String> = plan
            .build_args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "build args: {}", args.join(" "));
    }
    for st in &plan.stages {
        out.push('\n');
        render_stage(&mut out, plan, st);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_arg_forms() {
        let env = |k: &str| (k == "FROM_ENV").then(|| "env-value".to_string());
        let args = build_args(
            &[
                "A=1".into(),
                "B=".into(),
                "C=x=y".into(),
                "FROM_ENV".into(),
                "UNSET".into(),
            ],
            env,
        )
        .unwrap();
        assert_eq!(args["A"], "1");
        assert_eq!(args["B"], "");
        assert_eq!(args["C"], "x=y");
        assert_eq!(args["FROM_ENV"], "env-value");
        assert!(!args.contains_key("UNSET"));
        assert!(build_args(&["=v".into()], env).is_err());
    }

    #[test]
    fn one_line_display() {
        assert_eq!(
            first_line("RUN --mount=type=cache,target=/c \t   make\nmore"),
            "RUN --mount=type=cache,target=/c make"
        );
    }

    #[test]
    fn platform_flag() {
        assert_eq!(
            parse_platform("linux/arm64").unwrap().to_string(),
            "linux/arm64"
        );
        assert!(parse_platform("linux/amd64,linux/arm64").is_err());
        assert!(parse_platform("nonsense/").is_err());
    }
}
