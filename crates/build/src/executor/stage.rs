//! One stage: its starting state (scratch, an image, another stage) and its
//! steps, each applied to a [`StageState`]. Metadata instructions change the
//! image config; RUN, COPY, ADD and WORKDIR produce layers through the cache.

use super::cache::{KeyBuilder, StepRecord};
use super::{run, BuildError, NamedContext, Shared};
use crate::progress::Event;
use crate::snapshots::Layer;
use kiln_dockerfile::instructions::{CommandLine, Instruction, Origin, ShellExpand};
use kiln_dockerfile::stages::{Base, Input, Stage, Step};
use kiln_oci::digest::Digest;
use kiln_oci::image::{
    format_rfc3339, load_image, ContainerConfig, EmptyObject, History, ImageConfig,
};
use kiln_oci::layer::{write_layer, DiffKind, LayerOptions};
use kiln_oci::registry::{pull_if_missing, Platform as OciPlatform, PullPolicy, Reference};
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
    /// How much variable expansion has added to this stage's words so far
    /// (a stage built on another continues its count); at most
    /// [`kiln_dockerfile::shell::MAX_STAGE_GROWTH`].
    pub expansion_growth: usize,
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

    fn cc(&mut self) -> &mut ContainerConfig {
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

    fn set_state_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// ENV: the image config and the state.
    fn set_env(&mut self, key: &str, value: &str) {
        self.set_state_env(key, value);
        let cc = self.cc();
        let entry = format!("{key}={value}");
        match cc
            .env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
        {
            Some(e) => *e = entry,
            None => cc.env.push(entry),
        }
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

    /// Counts `growth` more bytes of expansion towards
    /// [`kiln_dockerfile::shell::MAX_STAGE_GROWTH`]: an error at `origin`
    /// once they are over it.
    fn grow_expansion(
        &mut self,
        growth: usize,
        sh: &Shared<'_>,
        origin: &Origin,
    ) -> Result<(), BuildError> {
        use kiln_dockerfile::shell::MAX_STAGE_GROWTH;
        self.expansion_growth = self.expansion_growth.saturating_add(growth);
        if self.expansion_growth > MAX_STAGE_GROWTH {
            return Err(sh.located(
                origin,
                format!(
                    "variable expansion in this stage produced more than {} MiB",
                    MAX_STAGE_GROWTH >> 20
                ),
            ));
        }
        Ok(())
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
        self.config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn history(&mut self, created_by: String, layer: bool, created: i64) {
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
        step.instruction,
        Instruction::Run(_) | Instruction::Copy(_) | Instruction::Add(_) | Instruction::Workdir(_)
    )
}

/// Go's `%q` of a string slice (`["npm" "start"]`), as BuildKit's history shows.
fn go_quoted_list(args: &[String]) -> String {
    let q: Vec<String> = args
        .iter()
        .map(|a| kiln_dockerfile::ast::go_quote(a))
        .collect();
    format!("[{}]", q.join(" "))
}

/// Resolves a path against the working directory and cleans it.
pub fn resolve_path(workdir: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), path)
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Runs one stage to its final state.
pub fn build_stage(sh: &Shared<'_>, st: &Stage) -> Result<StageState, BuildError> {
    let total = 1 + st.steps.len();
    let stage_name = st.display_name();
    let mut vertex = sh.first_vertex[st.index];
    let from_name = format!("[{stage_name} 1/{total}] {}", st.from.origin.summary());
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
            step.instruction.origin().summary()
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
            expansion_growth: 0,
        },
        Base::Stage(i) => {
            let parent = sh.wait_stage(*i)?;
            let mut s = (*parent).clone();
            s.cmd_set = false;
            s
        }
        Base::Image(reference) => {
            let (layers, config, key) =
                image_source(sh, reference, Some(platform), &st.from.origin)?;
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
                expansion_growth: 0,
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
            &st.from.origin,
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
    set_origin(&mut instruction, &st.from.origin);
    if let Instruction::Copy(c) = &instruction {
        if c.from.is_some() {
            return Err(bad(
                "COPY --from in an ONBUILD trigger is not supported".into()
            ));
        }
    }
    if matches!(instruction, Instruction::From(_) | Instruction::Onbuild(_)) {
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

fn set_origin(i: &mut Instruction, origin: &Origin) {
    let code = i.origin().code.clone();
    let o = match i {
        Instruction::From(x) => &mut x.origin,
        Instruction::Run(x) => &mut x.origin,
        Instruction::Cmd(x) => &mut x.origin,
        Instruction::Entrypoint(x) => &mut x.origin,
        Instruction::Shell(x) => &mut x.origin,
        Instruction::Env(x) => &mut x.origin,
        Instruction::Arg(x) => &mut x.origin,
        Instruction::Label(x) => &mut x.origin,
        Instruction::Expose(x) => &mut x.origin,
        Instruction::User(x) => &mut x.origin,
        Instruction::Workdir(x) => &mut x.origin,
        Instruction::Volume(x) => &mut x.origin,
        Instruction::StopSignal(x) => &mut x.origin,
        Instruction::Healthcheck(x) => &mut x.origin,
        Instruction::Onbuild(x) => &mut x.origin,
        Instruction::Maintainer(x) => &mut x.origin,
        Instruction::Copy(x) => &mut x.origin,
        Instruction::Add(x) => &mut x.origin,
    };
    *o = Origin {
        code,
        ..origin.clone()
    };
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
    let mut pull = sh.opts.pull;
    match sh.opts.named_contexts.get(&reference) {
        Some(NamedContext::Image(r)) => reference = r.clone(),
        // Already in the store: pulling it (--pull) would ask a registry for
        // a name only this store has.
        Some(NamedContext::StoredImage(r)) => {
            reference = r.clone();
            pull = PullPolicy::Never;
        }
        Some(NamedContext::Pending(p)) => {
            reference = p.wait().map_err(|e| sh.located(origin, e))?;
            pull = PullPolicy::Never;
        }
        _ => {}
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
        pull,
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
        let hit = |rec: StepRecord| {
            sh.steps_cached.fetch_add(1, Ordering::SeqCst);
            sh.emit(Event::StepCached {
                at_ms: sh.clock.now_ms(),
                step: vertex,
                stage: self.stage_name.to_string(),
                name: self.name.clone(),
            });
            Ok(rec)
        };
        // On a miss, wait for whoever computes the same key (another kiln
        // process, another stage), then look again. Claimed before a job
        // permit is taken, so a waiting step holds none.
        let mut _claim = None;
        if !self.no_cache {
            if let Some(rec) = sh.cache.get(sh.store, &key) {
                return hit(rec);
            }
            _claim = Some(sh.cache.claim(&key).map_err(|e| {
                BuildError::other(format!("claiming the cache key of {}: {e}", self.name))
            })?);
            if let Some(rec) = sh.cache.get(sh.store, &key) {
                return hit(rec);
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
fn apply_record(state: &mut StageState, key: Digest, rec: StepRecord, created_by: String) {
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
    let origin = step.instruction.origin().clone();
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
    match instr {
        Instruction::From(_) => {}
        Instruction::Run(r) => {
            let (key, rec, created_by) = run::run_step(ctx, state, &r, step)?;
            apply_record(state, key, rec, created_by);
        }
        Instruction::Copy(_) | Instruction::Add(_) => {
            let (key, rec, created_by) =
                crate::executor::copy_step::copy_step(ctx, state, &instr, step)?;
            apply_record(state, key, rec, created_by);
        }
        Instruction::Workdir(w) => {
            let wd = resolve_path(&state.workdir(), &w.path);
            state.cc().working_dir = Some(wd.clone());
            if wd != "/" {
                let (key, rec) = crate::executor::copy_step::workdir_step(ctx, state, &wd)?;
                apply_record(state, key, rec, format!("WORKDIR {wd}"));
            } else {
                state.history(format!("WORKDIR {wd}"), false, at);
            }
        }
        Instruction::Env(e) => {
            let mut parts = Vec::new();
            for kv in &e.vars {
                state.set_env(&kv.key, &kv.value);
                parts.push(format!("{}={}", kv.key, kv.value));
            }
            state.history(format!("ENV {}", parts.join(" ")), false, at);
        }
        Instruction::Arg(a) => {
            let mut parts = Vec::new();
            for decl in &a.args {
                state.build_args.push(decl.key.clone());
                let value = sh.plan.arg_value(decl, |d| {
                    let env = state.expansion_env();
                    let v = kiln_dockerfile::shell::Lexer::new(sh.plan.escape)
                        .process_word(d, &env)
                        .map_err(|e| sh.located(&origin, e.to_string()))?;
                    state.grow_expansion(v.len().saturating_sub(d.len()), sh, &origin)?;
                    Ok::<_, BuildError>(v)
                })?;
                match value {
                    Some(v) => {
                        state.set_state_env(&decl.key, &v);
                        parts.push(format!("{}={v}", decl.key));
                    }
                    None => parts.push(decl.key.clone()),
                }
            }
            state.history(format!("ARG {}", parts.join(" ")), false, at);
        }
        Instruction::Label(l) => {
            let mut parts = Vec::new();
            for kv in &l.labels {
                state.cc().labels.insert(kv.key.clone(), kv.value.clone());
                parts.push(format!("{}={}", kv.key, kv.value));
            }
            state.history(format!("LABEL {}", parts.join(" ")), false, at);
        }
        Instruction::Expose(e) => {
            let mut ports = std::collections::BTreeSet::new();
            for spec in &e.ports {
                for p in expose_ports(spec).map_err(|m| sh.located(&origin, m))? {
                    state.cc().exposed_ports.insert(p.clone(), EmptyObject {});
                    ports.insert(p);
                }
            }
            let ports: Vec<String> = ports.into_iter().collect();
            state.history(format!("EXPOSE [{}]", ports.join(" ")), false, at);
        }
        Instruction::User(u) => {
            state.cc().user = Some(u.user.clone());
            state.history(format!("USER {}", u.user), false, at);
        }
        Instruction::Volume(v) => {
            for p in &v.paths {
                if p.is_empty() {
                    return Err(sh.located(&origin, "VOLUME specified can not be an empty string"));
                }
                state.cc().volumes.insert(p.clone(), EmptyObject {});
            }
            state.history(format!("VOLUME [{}]", v.paths.join(" ")), false, at);
        }
        Instruction::StopSignal(s) => {
            if !valid_signal(&s.signal) {
                return Err(sh.located(&origin, format!("invalid signal: {}", s.signal)));
            }
            state.cc().stop_signal = Some(s.signal.clone());
            state.history(format!("STOPSIGNAL {}", s.signal), false, at);
        }
        Instruction::Cmd(c) => {
            let args = command_args(state, &c.command);
            // An empty list is omitted from the config JSON (Go's omitempty).
            state.cc().cmd = (!args.is_empty()).then(|| args.clone());
            state.cc().args_escaped = Some(true);
            state.cmd_set = true;
            state.history(format!("CMD {}", go_quoted_list(&args)), false, at);
        }
        Instruction::Entrypoint(e) => {
            let args = command_args(state, &e.command);
            let cmd_set = state.cmd_set;
            let cc = state.cc();
            cc.entrypoint = (!args.is_empty()).then(|| args.clone());
            if !cmd_set {
                cc.cmd = None;
            }
            state.history(format!("ENTRYPOINT {}", go_quoted_list(&args)), false, at);
        }
        Instruction::Shell(s) => {
            state.cc().shell = Some(s.shell.clone());
            state.history(format!("SHELL [{}]", s.shell.join(" ")), false, at);
        }
        Instruction::Healthcheck(h) => {
            let hc = match &h.check {
                None => kiln_oci::image::HealthConfig {
                    test: vec!["NONE".into()],
                    ..Default::default()
                },
                Some(c) => kiln_oci::image::HealthConfig {
                    test: c.test.clone(),
                    interval: (c.interval_ns != 0).then_some(c.interval_ns),
                    timeout: (c.timeout_ns != 0).then_some(c.timeout_ns),
                    start_period: (c.start_period_ns != 0).then_some(c.start_period_ns),
                    start_interval: (c.start_interval_ns != 0).then_some(c.start_interval_ns),
                    retries: (c.retries != 0).then_some(c.retries as i64),
                },
            };
            let text = format!(
                "HEALTHCHECK {{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                hc.test.join(" "),
                go_duration(hc.interval.unwrap_or(0)),
                go_duration(hc.timeout.unwrap_or(0)),
                go_duration(hc.start_period.unwrap_or(0)),
                go_duration(hc.start_interval.unwrap_or(0)),
                hc.retries.unwrap_or(0)
            );
            state.cc().healthcheck = Some(hc);
            state.history(text, false, at);
        }
        Instruction::Onbuild(o) => {
            // BuildKit records no history entry for ONBUILD.
            state.cc().on_build.push(o.expression.clone());
        }
        Instruction::Maintainer(m) => {
            state.config.author = Some(m.name.clone());
            state.history(format!("MAINTAINER {}", m.name), false, at);
        }
    }
    Ok(())
}

/// The ports an EXPOSE word stands for (`80`, `53/udp`, `7000-7002/udp`),
/// each as `port/proto`, as Docker's `nat.ParsePortSpecs` expands them.
fn expose_ports(spec: &str) -> Result<Vec<String>, String> {
    let (range, proto) = match spec.split_once('/') {
        Some((r, p)) => (r, p.to_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    let bad = || format!("invalid containerPort: {spec}");
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let (start, end) = match range.split_once('-') {
        Some((a, b)) => (a, b),
        None => (range, range),
    };
    let start: u16 = start.parse().map_err(|_| bad())?;
    let end: u16 = end.parse().map_err(|_| bad())?;
    if end < start {
        return Err(bad());
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// Go's `time.Duration.String()` of `ns` nanoseconds (`0s`, `1.5s`, `1m30s`,
/// `250ms`), as BuildKit's history prints HEALTHCHECK times.
pub(crate) fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let trim = |whole: u64, frac: u64, digits: usize| -> String {
        let mut s = whole.to_string();
        if frac > 0 {
            let f = format!("{frac:0digits$}");
            s.push('.');
            s.push_str(f.trim_end_matches('0'));
        }
        s
    };
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", trim(u / 1_000, u % 1_000, 3))
    } else if u < 1_000_000_000 {
        format!("{}ms", trim(u / 1_000_000, u % 1_000_000, 6))
    } else {
        let (h, rest) = (u / 3_600_000_000_000, u % 3_600_000_000_000);
        let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
        let secs = trim(rest / 1_000_000_000, rest % 1_000_000_000, 9);
        if h > 0 {
            format!("{h}h{m}m{secs}s")
        } else if m > 0 {
            format!("{m}m{secs}s")
        } else {
            format!("{secs}s")
        }
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

/// CMD/ENTRYPOINT arguments: exec form as written, shell form through the SHELL.
fn command_args(state: &StageState, cmd: &CommandLine) -> Vec<String> {
    match cmd {
        CommandLine::Exec(a) => a.clone(),
        CommandLine::Shell(s) => {
            let mut a = state.shell();
            a.push(s.clone());
            a
        }
    }
}

/// A signal name (`SIGTERM`, `TERM`, `SIGRTMIN+3`) or number, as moby's
/// `signal.ParseSignal` accepts.
fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return n > 0;
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU",
        "XFSZ",
    ];
    if NAMES.contains(&name) {
        return true;
    }
    for base in ["RTMIN", "RTMAX"] {
        if let Some(rest) = name.strip_prefix(base) {
            return rest.is_empty()
                || rest
                    .strip_prefix(['+', '-'])
                    .is_some_and(|n| n.parse::<u32>().is_ok());
        }
    }
    false
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
                expansion_growth: 0,
            };
            Ok((key, Arc::new(state)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(250_000_000), "250ms");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(7), "7ns");
    }

    #[test]
    fn expose_specs() {
        assert_eq!(expose_ports("80").unwrap(), ["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(
            expose_ports("7000-7002/udp").unwrap(),
            ["7000/udp", "7001/udp", "7002/udp"]
        );
        assert!(expose_ports("80/xyz").is_err());
        assert!(expose_ports("9-1").is_err());
        assert!(expose_ports("http").is_err());
    }
}
