//! The stage graph: from typed instructions to a [`Plan`] a build executor
//! consumes, following BuildKit's `dockerfile2llb` semantics.
//!
//! - ARGs before the first FROM are *meta args*: they (and the predefined
//!   platform args) are expanded in FROM lines; inside a stage an ARG is only
//!   visible when re-declared there ([`Plan::arg_value`]).
//! - `FROM name` refers to an earlier stage of that (lower-case) name, else
//!   `scratch`, else an image. `COPY --from` takes a stage name (any case), a
//!   stage index, or else an image; `RUN --mount=from=` a stage name or image.
//! - `--target` picks the final stage (default: the last one); stages it does
//!   not need, through FROM / COPY --from / RUN --mount from, are pruned.
//! - ONBUILD triggers of a base *stage* run first in the stages built on it.
//!
//! Deliberate difference from BuildKit: duplicate stage names and the
//! reserved names `scratch` and `context` are errors here (BuildKit only
//! warns, then silently resolves to one of the stages).

// `DockerfileError` is the crate's located error type; see instructions/mod.rs.
#![allow(clippy::result_large_err)]

mod lint;
mod platform;

pub use platform::Platform;

use crate::ast::Dockerfile;
use crate::error::{DockerfileError, Source};
use crate::instructions::{self as ins, Instruction, Kind, Origin};
use crate::shell::{Lexer, ShellError, MAX_STAGE_GROWTH};
use std::collections::{BTreeMap, BTreeSet};

/// What a build asks the planner for.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// `--build-arg KEY=value`s.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (by name); default the last stage.
    pub target: Option<String>,
    /// `--platform`; default the host's.
    pub target_platform: Option<Platform>,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`: an empty filesystem.
    Scratch,
    /// An image reference, after meta-arg expansion (`node:20-alpine3.19`).
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// Where COPY --from or a RUN mount's `from=` takes its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stage(usize),
    Image(String),
}

/// One instruction of a stage, with the stages/images it reads resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub instruction: Instruction,
    /// For COPY with `--from`: where the sources come from (else the build context).
    pub copy_from: Option<Input>,
    /// For RUN: per `--mount` (same order), where a `from=` mount comes from.
    pub mount_from: Vec<Option<Input>>,
    /// True for a trigger inherited from the base stage's ONBUILD.
    pub onbuild: bool,
}

/// One build stage (`FROM ...` up to the next FROM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    /// The `AS` name, lower-case.
    pub name: Option<String>,
    /// The FROM instruction as written, and where.
    pub from: ins::From,
    pub from_origin: Origin,
    pub base: Base,
    /// `--platform` of FROM, expanded and parsed; `None` means the target platform.
    pub platform: Option<Platform>,
    pub steps: Vec<Step>,
    /// Stages this stage needs: its base stage and every COPY/mount source stage.
    pub deps: BTreeSet<usize>,
    /// Whether the target needs this stage; pruned stages are not built.
    pub needed: bool,
}

impl Stage {
    /// `name` or BuildKit's `stage-N`.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", self.index))
    }
}

/// A lint-style finding that does not stop the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line, 0 when it concerns no line.
    pub line: usize,
    /// BuildKit's rule name when it is one of its lint rules.
    pub rule: &'static str,
    pub message: String,
}

/// The planned build.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Every stage in file order (pruned ones included, with `needed == false`).
    pub stages: Vec<Stage>,
    /// Index of the stage whose result is the build's result.
    pub target: usize,
    pub build_platform: Platform,
    pub target_platform: Platform,
    /// Predefined args and meta ARG values: what FROM lines see, and what
    /// `ARG NAME` (no default) inside a stage picks up.
    pub global_args: BTreeMap<String, String>,
    /// The user's `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// Proxy build args (`HTTP_PROXY`, `no_proxy`, ...) as the variables every
    /// RUN gets without an ARG declaration, kept out of the image: each under its
    /// upper- and its lower-case name ([`proxy_env`]).
    pub proxy_env: Vec<(String, String)>,
    /// The Dockerfile's escape character, for the executor's word expansion.
    pub escape: char,
    pub warnings: Vec<Warning>,
}

/// Build args usable as RUN proxy settings without declaring them (case-insensitive).
pub const PROXY_ARGS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "all_proxy",
];

impl Plan {
    /// Puts the ONBUILD triggers of stage `index`'s base image (parsed, in
    /// order) before the stage's own steps, as BuildKit runs them, with the
    /// stages and images they read resolved like the stage's own steps; then
    /// recomputes which stages the target needs (a trigger's `COPY --from` or
    /// `RUN --mount=from=` can need one that was pruned).
    pub fn add_image_triggers(
        &mut self,
        index: usize,
        triggers: Vec<Instruction>,
        src: &Source,
    ) -> Result<(), DockerfileError> {
        let names: Vec<Option<String>> = self.stages.iter().map(|s| s.name.clone()).collect();
        let stage_by_name = |name: &str| -> Option<usize> {
            let lower = name.to_lowercase();
            names
                .iter()
                .position(|n| n.as_deref() == Some(lower.as_str()))
        };
        let mut steps = Vec::with_capacity(triggers.len());
        for t in triggers {
            steps.push(resolve_step(t, true, &stage_by_name, names.len(), src)?);
        }
        let stage = &mut self.stages[index];
        for s in &steps {
            for input in s.copy_from.iter().chain(s.mount_from.iter().flatten()) {
                if let Input::Stage(d) = input {
                    stage.deps.insert(*d);
                }
            }
        }
        stage.steps.splice(0..0, steps);
        check_cycles(&self.stages, src)?;
        mark_needed(&mut self.stages, self.target, src)
    }

    /// The stages to build, in dependency-compatible (file) order.
    pub fn needed_stages(&self) -> impl Iterator<Item = &Stage> {
        self.stages.iter().filter(|s| s.needed)
    }

    /// Number of steps of the needed stages.
    pub fn needed_steps(&self) -> usize {
        self.needed_stages().map(|s| s.steps.len()).sum()
    }

    /// The platform stage `index` is built for: a stage built on another
    /// stage inherits that stage's platform (BuildKit ignores `--platform`
    /// there); otherwise its FROM `--platform`, else the target platform.
    pub fn stage_platform(&self, index: usize) -> &Platform {
        let mut st = &self.stages[index];
        // A loop, not recursion: a chain of thousands of stages is fine.
        while let Base::Stage(b) = st.base {
            st = &self.stages[b];
        }
        st.platform.as_ref().unwrap_or(&self.target_platform)
    }

    /// The value an in-stage `ARG` declaration gives its variable (BuildKit's
    /// `dispatchArg`): the `--build-arg` if given, else its default expanded
    /// with the stage's current environment (`expand_default`), else the
    /// global (meta/predefined) value, else unset.
    pub fn arg_value<E>(
        &self,
        decl: &ins::ArgDecl,
        expand_default: impl FnOnce(&str) -> Result<String, E>,
    ) -> Result<Option<String>, E> {
        if let Some(v) = self.build_args.get(&decl.key) {
            return Ok(Some(v.clone()));
        }
        match &decl.default {
            Some(d) => expand_default(d).map(Some),
            None => Ok(self.global_args.get(&decl.key).cloned()),
        }
    }
}

fn err(src: &Source, o: &Origin, msg: impl Into<String>) -> DockerfileError {
    DockerfileError::at(src, o.start_line, o.end_line, msg)
}

fn shell_err(src: &Source, o: &Origin, e: ShellError) -> DockerfileError {
    err(src, o, e.to_string())
}

/// Go's `strconv.Atoi` acceptance: optional sign, then ASCII digits.
pub(crate) fn as_index(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The predefined args (BuildKit's `defaultArgs`), with `--build-arg` overrides.
pub(crate) fn predefined_args(
    build: &Platform,
    target: &Platform,
    target_stage: &str,
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let pairs = [
        ("BUILDPLATFORM", build.to_string()),
        ("BUILDOS", build.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", build.arch.clone()),
        ("BUILDVARIANT", build.variant.clone()),
        ("TARGETPLATFORM", target.to_string()),
        ("TARGETOS", target.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", target.arch.clone()),
        ("TARGETVARIANT", target.variant.clone()),
        ("TARGETSTAGE", target_stage.to_string()),
    ];
    pairs
        .into_iter()
        .map(|(k, v)| {
            let v = overrides.get(k).cloned().unwrap_or(v);
            (k.to_string(), v)
        })
        .collect()
}

/// Plans the build of `df` (whose text is `src`): typed instructions, stages,
/// ARG scoping, dependencies, target and pruning. Every error points at a line.
pub fn plan(df: &Dockerfile, src: &Source, opts: &PlanOptions) -> Result<Plan, DockerfileError> {
    let instructions = ins::parse_instructions(df, src)?;
    let lexer = Lexer::new(df.escape);
    let mut warnings = Vec::new();

    // Meta args, then stages.
    let mut meta_args: Vec<(Origin, ins::Arg)> = Vec::new();
    let mut raw_stages: Vec<RawStage> = Vec::new();
    for i in instructions {
        match i.kind {
            Kind::From(from) => raw_stages.push(RawStage {
                origin: i.origin,
                from,
                body: Vec::new(),
            }),
            Kind::Arg(a) if raw_stages.is_empty() => meta_args.push((i.origin, a)),
            _ => match raw_stages.last_mut() {
                Some(st) => st.body.push(i),
                None => return Err(err(src, &i.origin, "no build stage in current context")),
            },
        }
    }
    if raw_stages.is_empty() {
        return Err(DockerfileError::at(
            src,
            0,
            0,
            "dockerfile contains no stages to build",
        ));
    }

    // Stage names: valid (checked by the instruction parser), unique, not reserved.
    let mut first_by_name: BTreeMap<&str, &Origin> = BTreeMap::new();
    for RawStage {
        origin, from: f, ..
    } in &raw_stages
    {
        if let Some(name) = &f.name {
            if name == "scratch" || name == "context" {
                return Err(err(
                    src,
                    origin,
                    format!("stage name {name:?} is reserved and can't be used as a stage name"),
                )
                .with_help("reserved stage names: context, scratch"));
            }
            if let Some(prev) = first_by_name.insert(name, origin) {
                return Err(err(
                    src,
                    origin,
                    format!(
                        "duplicate stage name {name:?}, stage names should be unique (first defined on line {})",
                        prev.start_line
                    ),
                ));
            }
        }
    }
    // Names are unique now: one map lookup per reference, not a scan of
    // every stage (which made a long chain of stages O(stages²)).
    let index_by_name: BTreeMap<&str, usize> = raw_stages
        .iter()
        .enumerate()
        .filter_map(|(i, st)| Some((st.from.name.as_deref()?, i)))
        .collect();
    let stage_by_name =
        |name: &str| -> Option<usize> { index_by_name.get(name.to_lowercase().as_str()).copied() };

    // Global args: predefined, then meta ARGs (BuildKit's buildMetaArgs).
    let build_platform = Platform::host();
    let target_platform = opts
        .target_platform
        .clone()
        .unwrap_or_else(|| build_platform.clone());
    let target_stage_name = match &opts.target {
        Some(t) => t.clone(),
        None => raw_stages
            .last()
            .and_then(|st| st.from.name.clone())
            .unwrap_or_else(|| "default".to_string()),
    };
    let mut global_args = predefined_args(
        &build_platform,
        &target_platform,
        &target_stage_name,
        &opts.build_args,
    );
    let mut declared: BTreeSet<String> = BTreeSet::new();
    let mut growth = 0usize;
    for (origin, a) in &meta_args {
        for d in &a.args {
            declared.insert(d.key.clone());
            let value = match opts.build_args.get(&d.key) {
                Some(v) => Some(v.clone()),
                None => match &d.default {
                    Some(def) => {
                        let v = lexer
                            .process_word(def, &global_args)
                            .map_err(|e| shell_err(src, origin, e))?;
                        growth = growth.saturating_add(v.len().saturating_sub(def.len()));
                        if growth > MAX_STAGE_GROWTH {
                            return Err(err(
                                src,
                                origin,
                                format!(
                                    "variable expansion in the ARGs before the first FROM produced more than {} MiB",
                                    MAX_STAGE_GROWTH >> 20
                                ),
                            ));
                        }
                        Some(v)
                    }
                    None => None,
                },
            };
            if let Some(v) = value {
                global_args.insert(d.key.clone(), v);
            }
        }
    }

    // Stages: expand FROM, resolve bases.
    let mut stages: Vec<Stage> = Vec::with_capacity(raw_stages.len());
    for (index, raw) in raw_stages.iter().enumerate() {
        let (from, from_origin) = (&raw.from, &raw.origin);
        let exp = lexer
            .process_word_with_matches(&from.base, &global_args)
            .map_err(|e| shell_err(src, from_origin, e))?;
        let base_name = exp.result;
        if base_name.is_empty() {
            return Err(err(
                src,
                from_origin,
                format!("base name ({}) should not be blank", from.base),
            ));
        }
        let platform = match &from.platform {
            None => None,
            Some(p) => {
                let pexp = lexer.process_word(p, &global_args).map_err(|e| {
                    err(
                        src,
                        from_origin,
                        format!("failed to process arguments for platform {p}: {e}"),
                    )
                })?;
                if pexp.is_empty() {
                    return Err(err(
                        src,
                        from_origin,
                        format!("empty platform value from expression {p}"),
                    ));
                }
                Some(Platform::parse(&pexp).map_err(|e| {
                    err(
                        src,
                        from_origin,
                        format!("failed to parse platform {p}: {e}"),
                    )
                })?)
            }
        };
        // An earlier stage of exactly that name (names are stored lower-case,
        // and BuildKit does not lower-case the FROM word), else scratch, else an image.
        let base = match index_by_name
            .get(base_name.as_str())
            .copied()
            .filter(|&i| i < index)
        {
            Some(i) => Base::Stage(i),
            None if base_name == "scratch" => Base::Scratch,
            None => Base::Image(base_name),
        };

        let mut steps = Vec::with_capacity(raw.body.len());
        // ONBUILD triggers of a base stage run first.
        if let Base::Stage(b) = base {
            for i in &raw_stages[b].body {
                if let Kind::Onbuild(o) = &i.kind {
                    steps.push(resolve_step(
                        (*o.trigger).clone(),
                        true,
                        &stage_by_name,
                        raw_stages.len(),
                        src,
                    )?);
                }
            }
        }
        for i in &raw.body {
            if let Kind::Arg(a) = &i.kind {
                declared.extend(a.args.iter().map(|d| d.key.clone()));
            }
            steps.push(resolve_step(
                i.clone(),
                false,
                &stage_by_name,
                raw_stages.len(),
                src,
            )?);
        }
        let mut deps = BTreeSet::new();
        if let Base::Stage(b) = base {
            deps.insert(b);
        }
        for s in &steps {
            for input in s.copy_from.iter().chain(s.mount_from.iter().flatten()) {
                if let Input::Stage(d) = input {
                    deps.insert(*d);
                }
            }
        }
        stages.push(Stage {
            index,
            name: from.name.clone(),
            from: from.clone(),
            from_origin: from_origin.clone(),
            base,
            platform,
            steps,
            deps,
            needed: false,
        });
    }

    check_cycles(&stages, src)?;

    // Target and pruning.
    let target = match &opts.target {
        None => stages.len() - 1,
        Some(t) => stage_by_name(t).ok_or_else(|| {
            let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
            let mut e =
                DockerfileError::at(src, 0, 0, format!("target stage {t:?} could not be found"));
            e.help = Some(match crate::instructions::suggest(t, &names) {
                Some(s) => format!("did you mean {s}? stages: {}", names.join(", ")),
                None if names.is_empty() => "the Dockerfile has no named stages".to_string(),
                None => format!("stages: {}", names.join(", ")),
            });
            e
        })?,
    };
    mark_needed(&mut stages, target, src)?;

    // Build args nobody declared (docker's "were not consumed" warning).
    let mut unused: Vec<&str> = opts
        .build_args
        .keys()
        .filter(|k| {
            !declared.contains(k.as_str())
                && !global_args.contains_key(k.as_str())
                && !PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(k))
                && k.as_str() != "BUILDKIT_SANDBOX_HOSTNAME"
                && k.as_str() != crate::lint::CHECK_BUILD_ARG
        })
        .map(String::as_str)
        .collect();
    unused.sort();
    if !unused.is_empty() {
        warnings.push(Warning {
            line: 0,
            rule: "UnusedBuildArgs",
            message: format!(
                "one or more build-args [{}] were not consumed",
                unused.join(" ")
            ),
        });
    }
    // BuildKit's build checks over the stages this build needs (the
    // Dockerfile's `check=` configuration applies), then kiln's own.
    let checks = crate::lint::Options {
        build_args: opts.build_args.clone(),
        target: opts.target.clone(),
        target_platform: Some(target_platform.clone()),
        all_stages: false,
    };
    let report = crate::lint::check(df, src, &checks, &crate::lint::NoHost)?;
    // `check=error=true`: a BuildKit rule that fired fails the build, as in BuildKit.
    let violations: Vec<&crate::lint::Finding> = report
        .findings
        .iter()
        .filter(|f| f.rule.set == crate::lint::RuleSet::BuildKit)
        .collect();
    if report.error_on_findings && !violations.is_empty() {
        let mut names: Vec<&str> = violations.iter().map(|f| f.rule.name).collect();
        names.sort();
        names.dedup();
        let first = &violations[0].location;
        let list: Vec<String> = violations
            .iter()
            .map(|f| {
                format!(
                    "{}:{}: {} [{}]",
                    src.name, f.location.start_line, f.message, f.rule.name
                )
            })
            .collect();
        return Err(DockerfileError::at(
            src,
            first.start_line,
            first.end_line,
            format!("lint violation found for rules: {}", names.join(", ")),
        )
        .with_help(list.join("\n")));
    }
    for f in report.findings {
        if f.rule.set == crate::lint::RuleSet::BuildKit {
            warnings.push(Warning {
                line: f.location.start_line,
                rule: f.rule.name,
                message: f.message,
            });
        }
    }
    lint::unknown_stage_references(&stages, &mut warnings);
    warnings.sort_by_key(|w| w.line);
    let proxy_env = proxy_env(&opts.build_args);

    Ok(Plan {
        stages,
        target,
        build_platform,
        target_platform,
        global_args,
        build_args: opts.build_args.clone(),
        proxy_env,
        escape: df.escape,
        warnings,
    })
}

/// Marks the stages `target` needs (through FROM, COPY --from and RUN mounts)
/// and checks that each needed stage reads only stages defined before it.
fn mark_needed(stages: &mut [Stage], target: usize, src: &Source) -> Result<(), DockerfileError> {
    for st in stages.iter_mut() {
        st.needed = false;
    }
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if !stages[i].needed {
            stages[i].needed = true;
            todo.extend(stages[i].deps.iter().copied());
        }
    }

    // A needed stage may only read stages defined before it.
    for st in stages.iter().filter(|s| s.needed) {
        for step in &st.steps {
            if let Some(Input::Stage(d)) = &step.copy_from {
                if *d > st.index {
                    let from = match &step.instruction.kind {
                        Kind::Copy(c) => c.from.clone().unwrap_or_default(),
                        _ => String::new(),
                    };
                    return Err(err(
                        src,
                        &step.instruction.origin,
                        format!(
                            "cannot copy from stage {from:?}, it needs to be defined before current stage {:?}",
                            st.display_name()
                        ),
                    ));
                }
            }
            if let Kind::Run(r) = &step.instruction.kind {
                for (spec, input) in r.mounts.iter().zip(&step.mount_from) {
                    if let Some(Input::Stage(d)) = input {
                        if *d > st.index {
                            let target = spec
                                .resolve(&mut |w: &str| Ok(w.to_string()))
                                .ok()
                                .and_then(|m| m.target)
                                .unwrap_or_default();
                            return Err(err(
                                src,
                                &step.instruction.origin,
                                format!(
                                    "cannot mount from stage {:?} to {target:?}, stage needs to be defined before current command",
                                    spec.from.as_deref().unwrap_or_default()
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The environment RUN steps get from proxy build args, BuildKit's way
/// (`proxyEnvFromBuildArgs`, then the executor's `proxyEnvList`): for each of
/// [`PROXY_ARGS`] given in any case and not empty, `UPPER=value` then
/// `lower=value`. When two spellings of one are given, the last in sorted order
/// wins (`http_proxy` over `HTTP_PROXY`).
pub fn proxy_env(build_args: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in PROXY_ARGS {
        let value = build_args
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .next_back();
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.push((name.to_ascii_uppercase(), v.clone()));
            out.push((name.to_string(), v.clone()));
        }
    }
    out
}

/// A stage as written: its FROM and the instructions up to the next FROM.
struct RawStage {
    origin: Origin,
    from: ins::From,
    body: Vec<Instruction>,
}

/// Resolves what a step reads from other stages or images.
fn resolve_step(
    instruction: Instruction,
    onbuild: bool,
    stage_by_name: &dyn Fn(&str) -> Option<usize>,
    stage_count: usize,
    src: &Source,
) -> Result<Step, DockerfileError> {
    let mut copy_from = None;
    let mut mount_from = Vec::new();
    match &instruction.kind {
        Kind::Copy(c) => {
            if let Some(from) = &c.from {
                copy_from = Some(match as_index(from) {
                    Some(i) if i >= 0 && (i as u64) < stage_count as u64 => {
                        Input::Stage(i as usize)
                    }
                    Some(i) => {
                        return Err(err(
                            src,
                            &instruction.origin,
                            format!("invalid stage index {i}"),
                        ))
                    }
                    None => match stage_by_name(from) {
                        Some(s) => Input::Stage(s),
                        None => Input::Image(from.clone()),
                    },
                });
            }
        }
        Kind::Run(r) => {
            mount_from = r
                .mounts
                .iter()
                .map(|m| {
                    m.from.as_ref().map(|f| match stage_by_name(f) {
                        Some(s) => Input::Stage(s),
                        None => Input::Image(f.clone()),
                    })
                })
                .collect();
        }
        _ => {}
    }
    Ok(Step {
        instruction,
        copy_from,
        mount_from,
        onbuild,
    })
}

/// BuildKit's `validateCircularDependency` over COPY --from / mount sources;
/// the error points at the first step of the cycle.
fn check_cycles(stages: &[Stage], src: &Source) -> Result<(), DockerfileError> {
    /// Depth-first search; `on_path` marks the stages on the current path,
    /// `edges` holds the (stage, step) reads along it.
    fn visit(
        s: usize,
        stages: &[Stage],
        visited: &mut BTreeSet<usize>,
        on_path: &mut [bool],
        edges: &mut Vec<(usize, usize)>,
    ) -> Option<(usize, usize)> {
        if !visited.insert(s) {
            return None;
        }
        on_path[s] = true;
        for (si, step) in stages[s].steps.iter().enumerate() {
            let inputs = step
                .copy_from
                .iter()
                .chain(step.mount_from.iter().flatten());
            for input in inputs {
                let Input::Stage(d) = input else { continue };
                edges.push((s, si));
                if on_path[*d] {
                    return edges.first().copied();
                }
                if let Some(c) = visit(*d, stages, visited, on_path, edges) {
                    return Some(c);
                }
                edges.pop();
            }
        }
        on_path[s] = false;
        None
    }
    let mut visited = BTreeSet::new();
    let mut on_path = vec![false; stages.len()];
    for s in 0..stages.len() {
        let mut edges = Vec::new();
        if let Some((st, step)) = visit(s, stages, &mut visited, &mut on_path, &mut edges) {
            return Err(err(
                src,
                &stages[st].steps[step].instruction.origin,
                format!(
                    "circular dependency detected on stage: {}",
                    stages[s].display_name()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
