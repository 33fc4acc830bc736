//! One stage: its starting state (scratch, an image, another stage) and its
//! steps, each handed to its instruction's dispatcher ([`super::dispatch`]).
//! Metadata instructions change the image config; RUN, COPY, ADD and WORKDIR
//! produce layers through the cache ([`super::step`]).

use super::dispatch;
use super::state::{StageState, DEFAULT_PATH};
use super::step::{apply_record, image_source, StepCtx};
use super::{BuildError, BuildOptions, Shared};
use crate::progress::{Clock, Event, ProgressSink};
use crate::snapshot::{Layer, StageLayer};
use kiln_dockerfile::instructions::{Instruction, Kind, Origin, ShellExpand};
use kiln_dockerfile::stages::{Base, Input, Plan, Stage, Step};
use kiln_dockerfile::{DockerfileError, Source};
use kiln_oci::digest::Digest;
use kiln_oci::image::{ContainerConfig, ImageConfig};
use kiln_oci::store::{LayerRecord, StageRecord, StepRecord, StepResult, Store};
use std::collections::BTreeMap;

/// RUN, COPY, ADD and WORKDIR change the filesystem; they are the steps shown
/// in progress and cached.
pub fn is_fs_step(step: &Step) -> bool {
    matches!(
        step.instruction.kind,
        Kind::Run(_) | Kind::Copy(_) | Kind::Add(_) | Kind::Workdir(_)
    )
}

/// Runs one stage to its final state.
pub fn build_stage(sh: &Shared<'_>, st: &Stage) -> Result<StageState, BuildError> {
    let total = 1 + st.steps.len();
    let stage_name = st.display_name();
    let mut vertex = sh.first_vertex[st.index];
    let from_name = format!("[{stage_name} 1/{total}] {}", st.from_origin.summary());
    // A stage built on another shows its FROM once that stage is done.
    if let Base::Stage(i) = &st.base {
        sh.wait_stage(*i)?;
    }
    let started = sh.clock.now_ms();
    sh.emit(Event::StepStarted {
        at_ms: started,
        step: vertex,
        stage: stage_name.clone(),
        name: from_name,
    });
    let mut state = match initial_state(sh, st) {
        Ok(s) => s,
        Err(BuildError::Cancelled) => return Err(BuildError::Cancelled),
        Err(e) => {
            let now = sh.clock.now_ms();
            sh.emit(Event::StepFailed {
                at_ms: now,
                step: vertex,
                duration_ms: now - started,
                message: e.to_string(),
            });
            return Err(e);
        }
    };
    let now = sh.clock.now_ms();
    sh.emit(Event::StepFinished {
        at_ms: now,
        step: vertex,
        duration_ms: now - started,
    });
    let no_cache = sh.opts.no_cache
        || st.name.as_ref().is_some_and(|n| {
            sh.opts
                .no_cache_stages
                .iter()
                .any(|f| f.eq_ignore_ascii_case(n))
        });
    // Layers still being hashed: filled in at the build's end.
    let mut pending: Vec<(usize, StageLayer)> = Vec::new();
    let mut layer_record = |record: &mut StageRecord, l: &StageLayer, step: Option<usize>| {
        let done = l.done();
        if done.is_none() {
            pending.push((record.layers.len(), l.clone()));
        }
        // A placeholder until then.
        let Layer { blob, diff_id } = done.unwrap_or_else(|| Layer {
            blob: kiln_oci::store::BlobRef {
                media_type: kiln_oci::image::media_type::OCI_LAYER.into(),
                digest: Digest::of(b""),
                size: 0,
                annotations: BTreeMap::new(),
            },
            diff_id: Digest::of(b""),
        });
        record.layers.push(LayerRecord {
            blob,
            diff_id,
            step,
        });
    };
    let mut record = StageRecord {
        index: st.index,
        name: stage_name.clone(),
        from: st.from_origin.summary(),
        from_line: st.from_origin.start_line,
        base_stage: match &st.base {
            Base::Stage(i) => Some(*i),
            _ => None,
        },
        layers: Vec::new(),
        steps: Vec::new(),
        user: String::new(),
        config_size: 0,
    };
    for l in &state.layers {
        layer_record(&mut record, l, None);
    }
    for (i, step) in st.steps.iter().enumerate() {
        if sh.cancelled() {
            return Err(BuildError::Cancelled);
        }
        let name = format!(
            "[{stage_name} {}/{total}] {}",
            i + 2,
            step.instruction.origin.summary()
        );
        let vertex_id = if is_fs_step(step) {
            vertex += 1;
            Some(vertex)
        } else {
            None
        };
        let ctx = StepCtx {
            sh,
            stage: st,
            stage_name: &stage_name,
            name,
            origin: &step.instruction.origin,
            vertex: vertex_id,
            no_cache,
            lower: state.layers.clone(),
            parent: state.key,
            base: sh
                .bases
                .get(&st.index)
                .filter(|b| b.key == state.key)
                .map(|b| b.manifest),
        };
        let layers_before = state.layers.len();
        apply_step(&ctx, &mut state, step)?;
        let (result, duration_ms) = match vertex_id {
            Some(v) => sh.step_result(v),
            None => (StepResult::Config, 0),
        };
        let origin = &step.instruction.origin;
        record.steps.push(StepRecord {
            instruction: origin.summary(),
            line: origin.start_line,
            end_line: origin.end_line,
            result,
            duration_ms,
            from_stage: match &step.copy_from {
                Some(Input::Stage(s)) => Some(*s),
                _ => None,
            },
        });
        for l in state.layers.iter().skip(layers_before) {
            layer_record(&mut record, l, Some(i));
        }
    }
    record.user = state.user();
    record.config_size = state.config_size();
    sh.record_stage(record, pending);
    Ok(state)
}

/// The stage's starting state. Its base's ONBUILD triggers are already steps
/// of the plan (a base stage's from the planner, a base image's from
/// [`resolve_base_images`]); the new image does not inherit them.
fn initial_state(sh: &Shared<'_>, st: &Stage) -> Result<StageState, BuildError> {
    let platform = sh.plan.stage_platform(st.index);
    let mut state = match &st.base {
        // BuildKit's `emptyImage`: WorkingDir "/" and the default PATH.
        Base::Scratch => StageState {
            layers: Vec::new(),
            config: ImageConfig {
                variant: (!platform.variant.is_empty()).then(|| platform.variant.clone()),
                config: Some(ContainerConfig {
                    working_dir: Some("/".into()),
                    ..ContainerConfig::default()
                }),
                ..ImageConfig::new(&platform.os, &platform.arch)
            },
            env: Vec::new(),
            key: super::scratch_key(&platform.to_string()),
            created: sh.opts.source_date_epoch.unwrap_or(0),
            cmd_set: false,
            build_args: Vec::new(),
            expansion_growth: 0,
        },
        Base::Stage(i) => {
            let parent = sh.wait_stage(*i)?;
            let mut s = (*parent).clone();
            s.cmd_set = false;
            s
        }
        Base::Image(reference) => {
            let BaseImage {
                layers,
                config,
                key,
                ..
            } = sh.bases.get(&st.index).cloned().ok_or_else(|| {
                sh.located(
                    &st.from_origin,
                    format!("the base image {reference} was not resolved"),
                )
            })?;
            let created = config
                .created
                .as_deref()
                .and_then(kiln_oci::image::parse_rfc3339)
                .unwrap_or(0);
            let env = config
                .config
                .as_ref()
                .map(|c| {
                    c.env
                        .iter()
                        .map(|e| match e.split_once('=') {
                            Some((k, v)) => (k.to_string(), v.to_string()),
                            None => (e.clone(), String::new()),
                        })
                        .collect()
                })
                .unwrap_or_default();
            StageState {
                layers: layers.into_iter().map(StageLayer::Done).collect(),
                config,
                env,
                key,
                created,
                cmd_set: false,
                build_args: Vec::new(),
                expansion_growth: 0,
            }
        }
    };
    if state.get_env("PATH").is_none() {
        state.set_env("PATH", DEFAULT_PATH);
    }
    state.cc().on_build.clear();
    Ok(state)
}

/// A stage's base image, resolved before the stages run.
#[derive(Clone)]
pub(crate) struct BaseImage {
    pub layers: Vec<Layer>,
    pub config: ImageConfig,
    pub key: Digest,
    /// The image's manifest digest.
    pub manifest: Digest,
}

/// Resolves (pulling as needed) the base image of every stage the target
/// needs, and makes each image's ONBUILD triggers the first steps of its stage
/// (BuildKit resolves base images before it converts the stages, for the same
/// reason): a trigger's `COPY --from` or `RUN --mount=from=` may need a stage
/// the plan had pruned, whose base is then resolved in turn. Images resolve in
/// parallel, each shown as a phase like BuildKit's "load metadata" vertex.
pub(crate) fn resolve_base_images(
    plan: &mut Plan,
    src: &Source,
    opts: &BuildOptions,
    store: &Store,
    progress: &dyn ProgressSink,
    clock: &Clock,
) -> Result<BTreeMap<usize, BaseImage>, BuildError> {
    let mut bases = BTreeMap::new();
    loop {
        let todo: Vec<(usize, String)> = plan
            .needed_stages()
            .filter_map(|st| match &st.base {
                Base::Image(r) if !bases.contains_key(&st.index) => Some((st.index, r.clone())),
                _ => None,
            })
            .collect();
        if todo.is_empty() {
            return Ok(bases);
        }
        let planned = &*plan;
        // Each image (and platform) once: stages on the same image share its
        // resolution (two pulls of one image into one store at once would
        // race for its blobs' partial downloads).
        let mut groups: Vec<(usize, String, Vec<usize>)> = Vec::new();
        for (index, reference) in &todo {
            let platform = planned.stage_platform(*index).to_string();
            match groups.iter_mut().find(|(first, r, _)| {
                r == reference && planned.stage_platform(*first).to_string() == platform
            }) {
                Some((_, _, more)) => more.push(*index),
                None => groups.push((*index, reference.clone(), Vec::new())),
            }
        }
        let resolved: Vec<(usize, Result<BaseImage, BuildError>)> = std::thread::scope(|s| {
            let handles: Vec<_> = groups
                .iter()
                .map(|(index, reference, _)| {
                    s.spawn(move || {
                        let name = format!("[internal] load metadata for {reference}");
                        let started = clock.now_ms();
                        progress.emit(Event::Phase {
                            at_ms: started,
                            name: name.clone(),
                            duration_ms: None,
                        });
                        let st = &planned.stages[*index];
                        let platform = planned.stage_platform(*index);
                        let res = image_source(
                            store,
                            opts,
                            src,
                            reference,
                            Some(platform),
                            &st.from_origin,
                        )
                        .map(|(layers, config, key, manifest)| BaseImage {
                            layers,
                            config,
                            key,
                            manifest,
                        });
                        let now = clock.now_ms();
                        progress.emit(Event::Phase {
                            at_ms: now,
                            name,
                            duration_ms: Some(now - started),
                        });
                        (*index, res)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let resolved = resolved.into_iter().flat_map(|(index, res)| {
            let same: &[usize] = groups
                .iter()
                .find(|(first, _, _)| *first == index)
                .map(|(_, _, more)| more.as_slice())
                .unwrap_or_default();
            let copies: Vec<_> = same
                .iter()
                .map(|i| {
                    (
                        *i,
                        res.as_ref()
                            .map(Clone::clone)
                            .map_err(|_| BuildError::Cancelled),
                    )
                })
                .collect();
            std::iter::once((index, res)).chain(copies)
        });
        for (index, res) in resolved {
            let base = res?;
            let texts = base
                .config
                .config
                .as_ref()
                .map(|c| c.on_build.clone())
                .unwrap_or_default();
            if !texts.is_empty() {
                let from = plan.stages[index].from_origin.clone();
                let triggers = texts
                    .iter()
                    .map(|t| parse_trigger(src, &from, t))
                    .collect::<Result<Vec<_>, _>>()?;
                plan.add_image_triggers(index, triggers, src)
                    .map_err(|e| BuildError::Dockerfile(Box::new(e)))?;
            }
            bases.insert(index, base);
        }
    }
}

/// An ONBUILD trigger of a base image as an instruction, located at the FROM
/// line (`from`) that brought it in.
fn parse_trigger(src: &Source, from: &Origin, text: &str) -> Result<Instruction, BuildError> {
    let tsrc = Source::new("ONBUILD trigger", text.to_string());
    let bad = |e: String| {
        BuildError::Dockerfile(Box::new(DockerfileError::at(
            src,
            from.start_line,
            from.end_line,
            format!("the base image's ONBUILD trigger {text:?}: {e}"),
        )))
    };
    let df = kiln_dockerfile::parse(&tsrc).map_err(|e| bad(e.message.clone()))?;
    let node = df
        .nodes
        .first()
        .ok_or_else(|| bad("empty trigger".into()))?;
    let mut instruction =
        Instruction::parse(node, df.escape, &tsrc).map_err(|e| bad(e.message.clone()))?;
    if matches!(instruction.kind, Kind::From(_) | Kind::Onbuild(_)) {
        return Err(bad(
            "FROM and ONBUILD are not allowed as ONBUILD triggers".into()
        ));
    }
    // Report problems against the FROM line that brought the trigger in.
    instruction.origin = Origin {
        code: instruction.origin.code.clone(),
        ..from.clone()
    };
    Ok(instruction)
}

fn apply_step(
    ctx: &StepCtx<'_, '_>,
    state: &mut StageState,
    step: &Step,
) -> Result<(), BuildError> {
    let sh = ctx.sh;
    let origin = step.instruction.origin.clone();
    let env = state.expansion_env();
    let instr = {
        let mut ex = ShellExpand::new(sh.plan.escape, &env);
        let instr = step
            .instruction
            .expanded(&mut ex)
            .map_err(|e| BuildError::Dockerfile(Box::new(e.at(sh.src, &origin))))?;
        state.grow_expansion(ex.growth(), sh, &origin)?;
        instr
    };
    let at = state.created;
    match &instr.kind {
        Kind::From(_) => {}
        Kind::Run(r) => {
            let (key, rec, created_by) = dispatch::run::run_step(ctx, state, &origin, r, step)?;
            apply_record(state, key, rec, created_by);
        }
        Kind::Copy(c) => {
            let copy = dispatch::copy::CopyInstr::Copy(c);
            let (key, rec, created_by) =
                dispatch::copy::copy_step(ctx, state, &origin, copy, step)?;
            apply_record(state, key, rec, created_by);
        }
        Kind::Add(a) => {
            let add = dispatch::copy::CopyInstr::Add(a);
            let (key, rec, created_by) = dispatch::copy::copy_step(ctx, state, &origin, add, step)?;
            apply_record(state, key, rec, created_by);
        }
        Kind::Workdir(w) => dispatch::workdir::workdir(ctx, state, w)?,
        Kind::Arg(a) => {
            let created_by = dispatch::config::arg(sh, state, &origin, a)?;
            state.history(created_by, false, at);
        }
        kind => {
            let created_by = dispatch::config::apply(&mut state.config, &mut state.cmd_set, kind)
                .map_err(|e| sh.located(&origin, e.to_string()))?;
            match kind {
                Kind::Env(e) => {
                    for kv in &e.vars {
                        state.set_state_env(&kv.key, &kv.value);
                    }
                }
                // BuildKit's frontend marks CMD's arguments escaped (a Windows
                // leftover it keeps for compatibility); `docker import` does not.
                Kind::Cmd(_) => state.cc().args_escaped = Some(true),
                _ => {}
            }
            if let Some(created_by) = created_by {
                state.history(created_by, false, at);
            }
        }
    }
    Ok(())
}
