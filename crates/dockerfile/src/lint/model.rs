//! The Dockerfile as the checks see it: stages with their instructions as
//! written (keyword case, `AS` word, comments above), the global args, and
//! which stages are checked. Unlike the build plan it never fails on what a
//! rule reports (duplicate or reserved stage names, blank bases).

use super::Options;
use crate::ast::{Dockerfile, Node};
use crate::error::{DockerfileError, Source};
use crate::instructions::{self as ins, Instruction, Kind};
use crate::shell::Lexer;
use crate::stages::{as_index, predefined_args, Platform};
use std::collections::{BTreeMap, BTreeSet};

/// One instruction with what the checks need of how it is written.
pub(crate) struct Step<'a> {
    pub ins: Instruction,
    pub node: &'a Node,
}

impl Step<'_> {
    /// The keyword as written (`run`, `RUN`, `Run`).
    pub fn keyword(&self) -> &str {
        self.node
            .original
            .split_whitespace()
            .next()
            .unwrap_or_default()
    }

    pub fn comments(&self) -> &[String] {
        &self.node.prev_comment
    }

    pub fn start(&self) -> usize {
        self.ins.origin.start_line
    }

    pub fn end(&self) -> usize {
        self.ins.origin.end_line
    }
}

/// What a stage starts from, after meta-arg expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StageBase {
    Scratch,
    Stage(usize),
    Image(String),
    /// The FROM word did not expand (a shell error or a blank result).
    Unknown,
}

pub(crate) struct Stage<'a> {
    pub index: usize,
    pub from: ins::From,
    pub step: Step<'a>,
    pub base: StageBase,
    /// The expanded base name (`node:22`), empty when it did not expand.
    pub base_name: String,
    /// The expanded `--platform`, when given and valid.
    pub platform: Option<Platform>,
    pub body: Vec<Step<'a>>,
    /// Whether the checked target needs it (every stage without `--target`).
    pub checked: bool,
}

pub(crate) struct Model<'a> {
    pub df: &'a Dockerfile,
    pub meta_args: Vec<Step<'a>>,
    pub stages: Vec<Stage<'a>>,
    /// Predefined args and meta ARG values with the `--build-arg`s.
    pub global_args: BTreeMap<String, String>,
    /// The same with defaults only (no `--build-arg`s for meta ARGs).
    pub default_global_args: BTreeMap<String, String>,
    /// Every meta ARG name.
    pub meta_declared: BTreeSet<String>,
    pub target_platform: Platform,
    /// Index of the final stage (the target's).
    pub target: usize,
    pub lexer: Lexer,
    /// The `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
}

/// BuildKit's `buildMetaArgs`: meta ARG values from build args, else their
/// defaults expanded; an expansion error leaves the arg unset.
fn meta_args(
    lexer: &Lexer,
    mut args: BTreeMap<String, String>,
    decls: &[Step<'_>],
    build_args: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    for s in decls {
        let Kind::Arg(a) = &s.ins.kind else { continue };
        for d in &a.args {
            let value = match build_args.get(&d.key) {
                Some(v) => Some(v.clone()),
                None => d
                    .default
                    .as_ref()
                    .and_then(|def| lexer.process_word(def, &args).ok()),
            };
            if let Some(v) = value {
                args.insert(d.key.clone(), v);
            }
        }
    }
    args
}

impl<'a> Model<'a> {
    pub fn build(
        df: &'a Dockerfile,
        src: &Source,
        opts: &Options,
    ) -> Result<Model<'a>, DockerfileError> {
        let instructions = ins::parse_instructions(df, src)?;
        let lexer = Lexer::new(df.escape);
        let mut meta_args_steps = Vec::new();
        let mut stages: Vec<Stage<'a>> = Vec::new();
        for (node, i) in df.nodes.iter().zip(instructions) {
            let step = Step { ins: i, node };
            match &step.ins.kind {
                Kind::From(f) => stages.push(Stage {
                    index: stages.len(),
                    from: f.clone(),
                    step,
                    base: StageBase::Unknown,
                    base_name: String::new(),
                    platform: None,
                    body: Vec::new(),
                    checked: true,
                }),
                Kind::Arg(_) if stages.is_empty() => meta_args_steps.push(step),
                _ => match stages.last_mut() {
                    Some(st) => st.body.push(step),
                    None => {
                        return Err(DockerfileError::at(
                            src,
                            step.start(),
                            step.end(),
                            "no build stage in current context",
                        ))
                    }
                },
            }
        }
        if stages.is_empty() {
            return Err(DockerfileError::at(
                src,
                0,
                0,
                "dockerfile contains no stages to build",
            ));
        }

        let build_platform = Platform::host();
        let target_platform = opts
            .target_platform
            .clone()
            .unwrap_or_else(|| build_platform.clone());
        let target_name = match &opts.target {
            Some(t) => t.clone(),
            None => stages
                .last()
                .and_then(|s| s.from.name.clone())
                .unwrap_or_else(|| "default".into()),
        };
        let predefined = predefined_args(
            &build_platform,
            &target_platform,
            &target_name,
            &opts.build_args,
        );
        let global_args = meta_args(
            &lexer,
            predefined.clone(),
            &meta_args_steps,
            &opts.build_args,
        );
        let default_global_args = meta_args(&lexer, predefined, &meta_args_steps, &BTreeMap::new());
        let meta_declared = meta_args_steps
            .iter()
            .filter_map(|s| match &s.ins.kind {
                Kind::Arg(a) => Some(a.args.iter().map(|d| d.key.clone())),
                _ => None,
            })
            .flatten()
            .collect();

        // Bases: an earlier stage of that name, scratch, else an image.
        let mut first_by_name: BTreeMap<String, usize> = BTreeMap::new();
        for (i, st) in stages.iter_mut().enumerate() {
            let exp = lexer.process_word(&st.from.base, &global_args);
            let (base, name) = match exp {
                Ok(n) if !n.is_empty() => match first_by_name.get(&n) {
                    Some(&b) => (StageBase::Stage(b), n),
                    None if n == "scratch" => (StageBase::Scratch, n),
                    None => (StageBase::Image(n.clone()), n),
                },
                _ => (StageBase::Unknown, String::new()),
            };
            st.base = base;
            st.base_name = name;
            st.platform = st
                .from
                .platform
                .as_ref()
                .and_then(|p| lexer.process_word(p, &global_args).ok())
                .and_then(|p| Platform::parse(&p).ok());
            if let Some(n) = &st.from.name {
                first_by_name.entry(n.clone()).or_insert(i);
            }
        }

        let target = match &opts.target {
            None => stages.len() - 1,
            Some(t) => first_by_name
                .get(&t.to_lowercase())
                .copied()
                .ok_or_else(|| {
                    DockerfileError::at(src, 0, 0, format!("target stage {t:?} could not be found"))
                })?,
        };
        let mut model = Model {
            df,
            meta_args: meta_args_steps,
            stages,
            global_args,
            default_global_args,
            meta_declared,
            target_platform,
            target,
            lexer,
            build_args: opts.build_args.clone(),
        };
        if opts.target.is_some() || !opts.all_stages {
            model.mark_checked(&first_by_name);
        }
        Ok(model)
    }

    /// The stage a `COPY --from` / `--mount from=` word names, if any.
    pub fn stage_named(&self, word: &str, by_name: &BTreeMap<String, usize>) -> Option<usize> {
        match as_index(word) {
            Some(i) if i >= 0 && (i as usize) < self.stages.len() => Some(i as usize),
            Some(_) => None,
            None => by_name.get(&word.to_lowercase()).copied(),
        }
    }

    /// With `--target`: only the stages the target needs are checked.
    fn mark_checked(&mut self, by_name: &BTreeMap<String, usize>) {
        let mut needed = vec![false; self.stages.len()];
        let mut todo = vec![self.target];
        while let Some(i) = todo.pop() {
            if needed[i] {
                continue;
            }
            needed[i] = true;
            if let StageBase::Stage(b) = self.stages[i].base {
                todo.push(b);
            }
            for s in &self.stages[i].body {
                let words: Vec<&str> = match &s.ins.kind {
                    Kind::Copy(c) => c.from.iter().map(String::as_str).collect(),
                    Kind::Run(r) => r.mounts.iter().filter_map(|m| m.from.as_deref()).collect(),
                    _ => Vec::new(),
                };
                todo.extend(words.iter().filter_map(|w| self.stage_named(w, by_name)));
            }
        }
        for (st, n) in self.stages.iter_mut().zip(needed) {
            st.checked = n;
        }
    }

    /// The final stage and the stages it is built on, final first.
    pub fn final_chain(&self) -> Vec<&Stage<'a>> {
        let mut out = vec![&self.stages[self.target]];
        let mut seen = vec![false; self.stages.len()];
        seen[self.target] = true;
        while let StageBase::Stage(b) = out[out.len() - 1].base {
            if std::mem::replace(&mut seen[b], true) {
                break;
            }
            out.push(&self.stages[b]);
        }
        out
    }

    /// The image a stage ultimately starts from, following base stages.
    pub fn root_base(&self, index: usize) -> &Stage<'a> {
        let mut st = &self.stages[index];
        let mut hops = 0;
        while let StageBase::Stage(b) = st.base {
            st = &self.stages[b];
            hops += 1;
            if hops > self.stages.len() {
                break;
            }
        }
        st
    }

    /// The platform stage `index` is built for.
    pub fn stage_platform(&self, index: usize) -> &Platform {
        self.root_base(index)
            .platform
            .as_ref()
            .unwrap_or(&self.target_platform)
    }
}
