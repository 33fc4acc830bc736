//! One stage: its starting state (scratch, an image, another stage) and its
//! steps, each applied to a [`StageState`]. Metadata instructions change the
//! image config; RUN, COPY, ADD and WORKDIR produce layers through the cache.

use super::dispatch;
use super::{BuildError, NamedContext, Shared};
use crate::cache::steps::{KeyBuilder, StepRecord};
use crate::progress::Event;
use crate::snapshot::Layer;
use kiln_dockerfile::instructions::{Instruction, Kind, Origin, ShellExpand};
use kiln_dockerfile::stages::{Base, Input, Stage, Step};
use kiln_oci::digest::Digest;
use kiln_oci::image::{format_rfc3339, load_image, ContainerConfig, History, ImageConfig};
use kiln_oci::layer::{write_layer, DiffKind, LayerOptions};
use kiln_oci::registry::{pull_if_missing, Platform as OciPlatform, Reference};
use kiln_oci::store::BlobRef;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// BuildKit's default PATH for Linux images that set none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A stage's state between steps.
#[derive(Clone, Debug)]
pub struct StageState {
    /// The filesystem, base layer first.
    pub layers: Vec<Layer>,
    /// The image config so far (history included; rootfs filled in by
    /// [`StageState::image_config`]).
    pub config: ImageConfig,
    /// The environment steps see: the image's ENV plus the stage's ARG values,
    /// in order, later entries replacing earlier ones (BuildKit's LLB state env).
    pub env: Vec<(String, String)>,
    /// The key of the last filesystem step (or of the base).
    pub key: Digest,
    /// Unix time of the newest history entry.
    pub created: i64,
    /// CMD was set in this stage (ENTRYPOINT resets an inherited CMD only).
    pub cmd_set: bool,
    /// The ARG names declared so far, in order (BuildKit's `buildArgs`; a
    /// stage built on another continues its list). RUN history shows them.
    pub build_args: Vec<String>,
}

impl StageState {
    /// The image config with `rootfs.diff_ids` and `created` filled in.
    pub fn image_config(&self) -> ImageConfig {
        let mut c = self.config.clone();
        c.rootfs.kind = "layers".into();
        c.rootfs.diff_ids = self.layers.iter().map(|l| l.diff_id).collect();
        c.created = Some(format_rfc3339(self.created));
        c
    }

    pub(crate) fn cc(&mut self) -> &mut ContainerConfig {
        self.config
            .config
            .get_or_insert_with(ContainerConfig::default)
    }

    pub fn get_env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets a variable of the environment steps see (ARG, ENV).
    pub(crate) fn set_state_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// ENV: the image config and the state.
    fn set_env(&mut self, key: &str, value: &str) {
        self.set_state_env(key, value);
        dispatch::config::set_env(self.cc(), key, value);
    }

    /// BuildKit's `runCommandString`: `|N K=V …` for the N declared ARGs
    /// (their current value, empty when unset), then the command.
    pub fn run_command_string(&self, args: &[String]) -> String {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for k in &self.build_args {
            let v = self.get_env(k).unwrap_or_default().to_string();
            match pairs.iter_mut().find(|(pk, _)| pk == k) {
                Some(p) => p.1 = v,
                None => pairs.push((k.clone(), v)),
            }
        }
        let mut words: Vec<String> = Vec::new();
        if !pairs.is_empty() {
            words.push(format!("|{}", pairs.len()));
            words.extend(pairs.into_iter().map(|(k, v)| format!("{k}={v}")));
        }
        words.extend(args.iter().cloned());
        words.join(" ")
    }

    /// The expansion environment (ENV and ARG values).
    pub fn expansion_env(&self) -> BTreeMap<String, String> {
        self.env.iter().cloned().collect()
    }

    /// `KEY=value` list for a process.
    pub fn env_list(&self) -> Vec<String> {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    pub fn user(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_default()
    }

    pub fn workdir(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }

    pub fn shell(&self) -> Vec<String> {
        match &self.config.config {
            Some(cc) => dispatch::config::config_shell(cc),
            None => dispatch::config::config_shell(&ContainerConfig::default()),
        }
    }

    pub(crate) fn history(&mut self, created_by: String, layer: bool, created: i64) {
        self.created = self.created.max(created);
        self.config.history.push(History {
            created: Some(format_rfc3339(created)),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: !layer,
            ..History::default()
        });
    }
}

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
    let (mut state, triggers) = match initial_state(sh, st) {
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
    for text in &triggers {
        let step = trigger_step(sh, st, text)?;
        let ctx = StepCtx {
            sh,
            stage: st,
            stage_name: &stage_name,
            name: format!(
                "[{stage_name} 1/{total}] ONBUILD {}",
                kiln_dockerfile::instructions::one_line(text)
            ),
            vertex: is_fs_step(&step).then(|| sh.extra_vertices.fetch_add(1, Ordering::SeqCst)),
            no_cache,
        };
        apply_step(&ctx, &mut state, &step)?;
    }
    for (i, step) in st.steps.iter().enumerate() {
        if sh.failed.load(Ordering::SeqCst) {
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
            vertex: vertex_id,
            no_cache,
        };
        apply_step(&ctx, &mut state, step)?;
    }
    Ok(state)
}

/// The stage's starting state, and the ONBUILD triggers of its base image
/// (a base *stage*'s triggers are already steps of the plan). The new image
/// does not inherit the triggers.
fn initial_state(sh: &Shared<'_>, st: &Stage) -> Result<(StageState, Vec<String>), BuildError> {
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
        },
        Base::Stage(i) => {
            let parent = sh.wait_stage(*i)?;
            let mut s = (*parent).clone();
            s.cmd_set = false;
            s
        }
        Base::Image(reference) => {
            let (layers, config, key) =
                image_source(sh, reference, Some(platform), &st.from_origin)?;
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
                layers,
                config,
                env,
                key,
                created,
                cmd_set: false,
                build_args: Vec::new(),
            }
        }
    };
    if state.get_env("PATH").is_none() {
        state.set_env("PATH", DEFAULT_PATH);
    }
    let triggers = std::mem::take(&mut state.cc().on_build);
    let triggers = if matches!(st.base, Base::Image(_)) {
        triggers
    } else {
        Vec::new()
    };
    Ok((state, triggers))
}

/// An ONBUILD trigger of the base image as a step of this stage.
fn trigger_step(sh: &Shared<'_>, st: &Stage, text: &str) -> Result<Step, BuildError> {
    let src = kiln_dockerfile::Source::new("ONBUILD trigger", text.to_string());
    let bad = |e: String| {
        sh.located(
            &st.from_origin,
            format!("the base image's ONBUILD trigger {text:?}: {e}"),
        )
    };
    let df = kiln_dockerfile::parse(&src).map_err(|e| bad(e.message.clone()))?;
    let node = df
        .nodes
        .first()
        .ok_or_else(|| bad("empty trigger".into()))?;
    let mut instruction =
        Instruction::parse(node, df.escape, &src).map_err(|e| bad(e.message.clone()))?;
    // Report problems against the FROM line that brought the trigger in.
    instruction.origin = Origin {
        code: instruction.origin.code.clone(),
        ..st.from_origin.clone()
    };
    if let Kind::Copy(c) = &instruction.kind {
        if c.from.is_some() {
            return Err(bad(
                "COPY --from in an ONBUILD trigger is not supported".into()
            ));
        }
    }
    if matches!(instruction.kind, Kind::From(_) | Kind::Onbuild(_)) {
        return Err(bad(
            "FROM and ONBUILD are not allowed as ONBUILD triggers".into()
        ));
    }
    Ok(Step {
        instruction,
        copy_from: None,
        mount_from: Vec::new(),
        onbuild: true,
    })
}

/// An image's layers, config and cache key: from a named build context, else
/// the store, pulling it if needed.
pub(crate) fn image_source(
    sh: &Shared<'_>,
    reference: &str,
    platform: Option<&kiln_dockerfile::stages::Platform>,
    origin: &Origin,
) -> Result<(Vec<Layer>, ImageConfig, Digest), BuildError> {
    let mut reference = reference.to_string();
    if let Some(NamedContext::Image(r) | NamedContext::StoredImage(r)) =
        sh.opts.named_contexts.get(&reference)
    {
        reference = r.clone();
    }
    let parsed = Reference::parse(&reference).map_err(|e| {
        sh.located(
            origin,
            format!("invalid image reference {reference:?}: {e}"),
        )
    })?;
    let platform = platform
        .map(|p| OciPlatform::parse(&p.to_string()))
        .transpose()
        .map_err(|e| sh.located(origin, e))?;
    let target = pull_if_missing(
        sh.store,
        &parsed,
        platform.as_ref(),
        sh.opts.pull,
        &sh.opts.registry,
    )
    .map_err(|e| sh.located(origin, format!("{reference}: {e}")))?;
    let image = load_image(sh.store, &target)
        .map_err(|e| sh.located(origin, format!("{reference}: {e}")))?;
    if image.layers.len() != image.config.rootfs.diff_ids.len() {
        return Err(sh.located(
            origin,
            format!(
                "{reference}: the image has {} layers but its config lists {} diff_ids",
                image.layers.len(),
                image.config.rootfs.diff_ids.len()
            ),
        ));
    }
    let layers = image
        .layers
        .iter()
        .zip(&image.config.rootfs.diff_ids)
        .map(|(b, d)| Layer {
            blob: b.clone(),
            diff_id: *d,
        })
        .collect();
    let mut k = KeyBuilder::new("image", &Digest::of(b""));
    k.part(&image.manifest_ref.digest.to_string());
    Ok((layers, image.config, k.finish()))
}

pub(crate) struct StepCtx<'a, 'b> {
    pub sh: &'a Shared<'b>,
    pub stage: &'a Stage,
    pub stage_name: &'a str,
    /// `[builder 3/6] RUN npm install`
    pub name: String,
    /// The progress vertex of a filesystem step.
    pub vertex: Option<usize>,
    pub no_cache: bool,
}

impl StepCtx<'_, '_> {
    /// Runs a filesystem step through the cache: a hit reuses the recorded
    /// layer; a miss calls `execute` with an empty upper directory (and a work
    /// directory beside it), then turns the upper directory into the layer.
    pub fn cached(
        &self,
        key: Digest,
        execute: impl FnOnce(&Path, &Path) -> Result<(), BuildError>,
    ) -> Result<StepRecord, BuildError> {
        let sh = self.sh;
        let vertex = self.vertex.unwrap_or(0);
        if !self.no_cache {
            if let Some(rec) = sh.cache.get(sh.store, &key) {
                sh.steps_cached.fetch_add(1, Ordering::SeqCst);
                sh.emit(Event::StepCached {
                    at_ms: sh.clock.now_ms(),
                    step: vertex,
                    stage: self.stage_name.to_string(),
                    name: self.name.clone(),
                });
                return Ok(rec);
            }
        }
        let _permit = sh.jobs.acquire();
        if sh.failed.load(Ordering::SeqCst) {
            return Err(BuildError::Cancelled);
        }
        let started = sh.clock.now_ms();
        sh.emit(Event::StepStarted {
            at_ms: started,
            step: vertex,
            stage: self.stage_name.to_string(),
            name: self.name.clone(),
        });
        let result = self.execute_and_commit(&key, execute);
        let now = sh.clock.now_ms();
        match &result {
            Ok(_) => {
                sh.steps_run.fetch_add(1, Ordering::SeqCst);
                sh.emit(Event::StepFinished {
                    at_ms: now,
                    step: vertex,
                    duration_ms: now - started,
                });
            }
            Err(BuildError::Cancelled) => {}
            Err(e) => sh.emit(Event::StepFailed {
                at_ms: now,
                step: vertex,
                duration_ms: now - started,
                message: e.to_string(),
            }),
        }
        result
    }

    fn execute_and_commit(
        &self,
        key: &Digest,
        execute: impl FnOnce(&Path, &Path) -> Result<(), BuildError>,
    ) -> Result<StepRecord, BuildError> {
        let sh = self.sh;
        let work = sh.snapshots.work_dir().map_err(BuildError::other)?;
        let upper = work.path().join("upper");
        let scratch = work.path().join("work");
        for d in [&upper, &scratch] {
            std::fs::create_dir(d)
                .map_err(|e| BuildError::other(format!("{}: {e}", d.display())))?;
        }
        execute(&upper, &scratch)?;
        // Every filesystem step is a layer, an empty one too, as in BuildKit
        // (whose exporter keeps empty diffs).
        let layer = self.commit_layer(&upper)?;
        let created = sh.opts.source_date_epoch.unwrap_or_else(unix_now);
        let rec = StepRecord { layer, created };
        sh.cache.put(key, &rec).map_err(BuildError::other)?;
        Ok(rec)
    }

    fn commit_layer(&self, upper: &Path) -> Result<Layer, BuildError> {
        let sh = self.sh;
        let mut writer = sh.store.blob_writer().map_err(BuildError::other)?;
        let opts = LayerOptions {
            compression: sh.opts.compression,
            source_date_epoch: sh.opts.source_date_epoch,
        };
        let desc = write_layer(upper, DiffKind::OverlayUpper, &opts, &mut writer)
            .map_err(|e| BuildError::other(format!("writing the layer: {e}")))?;
        let (digest, size) = writer.commit().map_err(BuildError::other)?;
        sh.snapshots
            .install(upper, &desc.diff_id)
            .map_err(BuildError::other)?;
        Ok(Layer {
            blob: BlobRef {
                media_type: desc.media_type,
                digest,
                size,
                annotations: BTreeMap::new(),
            },
            diff_id: desc.diff_id,
        })
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Applies a step's record: its layer and its history entry.
pub(crate) fn apply_record(
    state: &mut StageState,
    key: Digest,
    rec: StepRecord,
    created_by: String,
) {
    state.layers.push(rec.layer);
    state.key = key;
    state.history(created_by, true, rec.created);
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
        step.instruction
            .expanded(&mut ex)
            .map_err(|e| BuildError::Dockerfile(Box::new(e.at(sh.src, &origin))))?
    };
    let at = state.created;
    match &instr.kind {
        Kind::From(_) => {}
        Kind::Run(r) => {
            let (key, rec, created_by) = dispatch::run::run_step(ctx, state, &origin, r, step)?;
            apply_record(state, key, rec, created_by);
        }
        Kind::Copy(_) | Kind::Add(_) => {
            let (key, rec, created_by) = dispatch::copy::copy_step(ctx, state, &instr, step)?;
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

/// The key part standing for what a `--from` input contributes.
pub(crate) fn input_key(
    sh: &Shared<'_>,
    input: &Input,
    origin: &Origin,
) -> Result<(Digest, Arc<StageState>), BuildError> {
    match input {
        Input::Stage(i) => {
            let st = sh.wait_stage(*i)?;
            Ok((st.key, st))
        }
        Input::Image(r) => {
            let (layers, config, key) = image_source(sh, r, None, origin)?;
            let state = StageState {
                layers,
                config,
                env: Vec::new(),
                key,
                created: 0,
                cmd_set: false,
                build_args: Vec::new(),
            };
            Ok((key, Arc::new(state)))
        }
    }
}
