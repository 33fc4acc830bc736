//! A filesystem step's way through the cache ([`StepCtx::cached`]: a hit reuses
//! the recorded layer, a miss executes into an empty upper directory that
//! becomes the layer), and the inputs steps read from other stages or images.

use super::state::StageState;
use super::{BuildError, BuildOptions, NamedContext, Shared};
use crate::cache::explain::{explain, MissContext, StepInputs};
use crate::cache::steps::{KeyBuilder, StepRecord};
use crate::claim::Claim;
use crate::progress::Event;
use crate::snapshot::{Layer, PendingLayer, StageLayer};
use kiln_dockerfile::instructions::Origin;
use kiln_dockerfile::stages::{Input, Stage};
use kiln_dockerfile::{DockerfileError, Source};
use kiln_oci::digest::Digest;
use kiln_oci::image::media_type;
use kiln_oci::image::{load_image_for, ImageConfig};
use kiln_oci::layer::{layer_digest, write_layer, Compression, DiffKind, LayerError, LayerOptions};
use kiln_oci::registry::{
    pull_metadata_if_missing, Platform as OciPlatform, PullPolicy, Reference,
};
use kiln_oci::store::{BlobRef, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// An image's layers, config and cache key: from a named build context, else
/// the store, pulling it if needed.
pub(crate) fn image_source(
    store: &Store,
    opts: &BuildOptions,
    src: &Source,
    reference: &str,
    platform: Option<&kiln_dockerfile::stages::Platform>,
    origin: &Origin,
) -> Result<(Vec<Layer>, ImageConfig, Digest, Digest), BuildError> {
    let located = |msg: String| {
        BuildError::Dockerfile(Box::new(DockerfileError::at(
            src,
            origin.start_line,
            origin.end_line,
            msg,
        )))
    };
    let mut reference = reference.to_string();
    let mut pull = opts.pull;
    match opts.named_contexts.get(&reference) {
        Some(NamedContext::Image(r)) => reference = r.clone(),
        // Already in the store: pulling it (--pull) would ask a registry for
        // a name only this store has.
        Some(NamedContext::StoredImage(r)) => {
            reference = r.clone();
            pull = PullPolicy::Never;
        }
        Some(NamedContext::Pending(p)) => {
            reference = p.wait().map_err(located)?;
            pull = PullPolicy::Never;
        }
        _ => {}
    }
    let parsed = Reference::parse(&reference)
        .map_err(|e| located(format!("invalid image reference {reference:?}: {e}")))?;
    let platform = platform
        .map(|p| OciPlatform::parse(&p.to_string()))
        .transpose()
        .map_err(located)?;
    // The manifest and config only: the layers are fetched (and unpacked
    // as they download) when a snapshot of them is needed, or when an output
    // needs their blobs; a push to their registry mounts them.
    let target = pull_metadata_if_missing(store, &parsed, platform.as_ref(), pull, &opts.registry)
        .map_err(|e| located(format!("{reference}: {e}")))?;
    let image = load_image_for(store, &target, platform.as_ref())
        .map_err(|e| located(format!("{reference}: {e}")))?;
    if image.layers.len() != image.config.rootfs.diff_ids.len() {
        return Err(located(format!(
            "{reference}: the image has {} layers but its config lists {} diff_ids",
            image.layers.len(),
            image.config.rootfs.diff_ids.len()
        )));
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
    Ok((layers, image.config, k.finish(), image.manifest_ref.digest))
}

pub(crate) struct StepCtx<'a, 'b> {
    pub sh: &'a Shared<'b>,
    pub stage: &'a Stage,
    pub stage_name: &'a str,
    /// `[builder 3/6] RUN npm install`
    pub name: String,
    /// Where the step is in the Dockerfile.
    pub origin: &'a Origin,
    /// The progress vertex of a filesystem step.
    pub vertex: Option<usize>,
    pub no_cache: bool,
    /// The stage's layers before this step.
    pub lower: Vec<StageLayer>,
    /// The stage's key before this step (the parent of the step's key).
    pub parent: Digest,
    /// The base image's manifest digest, for the stage's first filesystem
    /// step on an image (an input `--explain-cache` names).
    pub base: Option<Digest>,
}

impl StepCtx<'_, '_> {
    /// Runs a filesystem step through the cache: a hit reuses the recorded
    /// layer; a miss calls `execute` with an empty upper directory (and a work
    /// directory beside it), then turns the upper directory into the layer
    /// (hashed in the background where that is safe, see [`StepDone`]).
    pub fn cached(
        &self,
        key: Digest,
        inputs: StepInputs,
        execute: impl FnOnce(&Path, &Path) -> Result<(), BuildError>,
    ) -> Result<StepDone, BuildError> {
        self.cached_then(key, inputs, execute, |_, _| {})
    }

    /// [`Self::cached`], calling `committed` when `execute` ran and its layer
    /// is made: with the layer and what was left out of it as unchanged
    /// ([`crate::snapshot::drop_unchanged`]'s list). A step given such a
    /// callback under the copying snapshotter (the only one that needs it)
    /// is hashed before it returns.
    pub fn cached_then(
        &self,
        key: Digest,
        inputs: StepInputs,
        execute: impl FnOnce(&Path, &Path) -> Result<(), BuildError>,
        committed: impl FnOnce(&Layer, &[(PathBuf, PathBuf)]),
    ) -> Result<StepDone, BuildError> {
        let mut inputs = inputs;
        if let Some(b) = &self.base {
            inputs.insert("base".into(), b.to_string());
        }
        let result = self.lookup_or_execute(key, inputs, execute, committed);
        self.sh.emit_cache_warnings();
        result
    }

    fn lookup_or_execute(
        &self,
        key: Digest,
        inputs: StepInputs,
        execute: impl FnOnce(&Path, &Path) -> Result<(), BuildError>,
        committed: impl FnOnce(&Layer, &[(PathBuf, PathBuf)]),
    ) -> Result<StepDone, BuildError> {
        let sh = self.sh;
        let vertex = self.vertex.unwrap_or(0);
        let hit = |rec: StepRecord| {
            used(sh, self.stage.index, key, self.parent, &rec);
            sh.steps_cached.fetch_add(1, Ordering::SeqCst);
            sh.emit(Event::StepCached {
                at_ms: sh.clock.now_ms(),
                step: vertex,
                stage: self.stage_name.to_string(),
                name: self.name.clone(),
            });
            Ok(StepDone {
                layer: StageLayer::Done(rec.layer),
                created: rec.created,
            })
        };
        // On a miss, wait for whoever computes the same key (another kiln
        // process, another stage), then look again. Claimed before a job
        // permit is taken, so a waiting step holds none.
        let mut claim = None;
        if !self.no_cache {
            if let Some(rec) = sh.cache.get(sh.store, &key) {
                return hit(rec);
            }
            claim = Some(sh.cache.claim(&key).map_err(|source| BuildError::Claim {
                step: self.name.clone(),
                source,
            })?);
            if let Some(rec) = sh.cache.get(sh.store, &key) {
                return hit(rec);
            }
        }
        let reason = self.note_miss(&key, &inputs);
        let permit = sh.jobs.acquire();
        if sh.cancelled() {
            return Err(BuildError::Cancelled);
        }
        let started = sh.clock.now_ms();
        sh.emit(Event::StepStarted {
            at_ms: started,
            step: vertex,
            stage: self.stage_name.to_string(),
            name: self.name.clone(),
        });
        if let Some(reason) = reason {
            sh.emit(Event::CacheMiss {
                at_ms: sh.clock.now_ms(),
                step: vertex,
                name: self.name.clone(),
                reason,
            });
        }
        let result = self.execute_and_commit(&key, inputs, execute, committed, permit, claim);
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
            Err(BuildError::Cancelled) => sh.emit(Event::StepCancelled {
                at_ms: now,
                step: vertex,
                duration_ms: now - started,
            }),
            Err(e) => sh.emit(Event::StepFailed {
                at_ms: now,
                step: vertex,
                duration_ms: now - started,
                message: e.to_string(),
            }),
        }
        result
    }

    /// Notes that the step `key` missed (for the cascades of the steps after
    /// it) and, when the build explains its misses, says why it did.
    fn note_miss(&self, key: &Digest, inputs: &StepInputs) -> Option<String> {
        let sh = self.sh;
        let cascade_from = {
            let mut missed = sh.missed.lock().unwrap_or_else(|e| e.into_inner());
            let first = missed.get(&self.parent).cloned();
            missed.insert(*key, first.clone().unwrap_or_else(|| self.name.clone()));
            first
        };
        if !sh.opts.explain_cache {
            return None;
        }
        let no_cache = self.no_cache.then(|| {
            if sh.opts.no_cache {
                "--no-cache".to_string()
            } else {
                format!("--no-cache-filter {}", self.stage_name)
            }
        });
        let other_bases = if inputs.contains_key("base") {
            sh.cache
                .inputs_after(None)
                .into_iter()
                .filter(|i| {
                    i.contains_key("base") && i.get("instruction") == inputs.get("instruction")
                })
                .collect()
        } else {
            Vec::new()
        };
        let cx = MissContext {
            entry_without_layer: no_cache.is_none() && sh.cache.has_entry(key),
            no_cache,
            cascade_from: cascade_from.as_deref(),
            same_parent: sh.cache.inputs_after(Some(&self.parent)),
            other_bases,
        };
        Some(explain(inputs, &cx))
    }

    /// Runs the step with a job permit, then gives the permit back before
    /// turning its upper directory into a layer (diff, walk, sha256): that
    /// needs no RUN slot, so another stage's step starts meanwhile. Where it
    /// can, the step ends once the differ is done: its directory becomes a
    /// `step-…` snapshot the next steps stack, and the walk and sha256 run in
    /// the background ([`Shared::layer_diff_later`]), which writes the cache
    /// record and then lets go of the step's `claim`.
    fn execute_and_commit(
        &self,
        key: &Digest,
        inputs: StepInputs,
        execute: impl FnOnce(&Path, &Path) -> Result<(), BuildError>,
        committed: impl FnOnce(&Layer, &[(PathBuf, PathBuf)]),
        permit: super::Permit<'_>,
        claim: Option<Claim>,
    ) -> Result<StepDone, BuildError> {
        let sh = self.sh;
        let work = sh.snapshots.work_dir().map_err(BuildError::Snapshot)?;
        let upper = work.path().join("upper");
        let scratch = work.path().join("work");
        for d in [&upper, &scratch] {
            std::fs::create_dir(d).map_err(|source| BuildError::WorkDir {
                path: d.clone(),
                source,
            })?;
        }
        execute(&upper, &scratch)?;
        drop(permit);
        // The layer holds what differs from the filesystem below, as BuildKit's
        // differ writes it. Every filesystem step is a layer, an empty one too,
        // as in BuildKit (whose exporter keeps empty diffs).
        let dropped = crate::snapshot::drop_unchanged(&upper, &sh.view(&self.lower)?)
            .map_err(BuildError::Differ)?;
        let created = sh.opts.source_date_epoch.unwrap_or_else(unix_now);
        if sh.layer_diff_in_background() {
            let dir = sh
                .snapshots
                .keep_step(&upper)
                .map_err(BuildError::Snapshot)?;
            let pending = Arc::new(PendingLayer::new(dir));
            sh.layer_diff_later(LayerDiff {
                pending: pending.clone(),
                key: *key,
                parent: self.parent,
                inputs,
                created,
                stage: self.stage.index,
                name: self.name.clone(),
                origin: self.origin.clone(),
                claim,
            })?;
            return Ok(StepDone {
                layer: StageLayer::Pending(pending),
                created,
            });
        }
        let layer = commit_layer(sh, self.origin, &upper, |diff_id| {
            sh.snapshots
                .install(&upper, diff_id)
                .map_err(BuildError::Snapshot)
        })?;
        committed(&layer, &dropped);
        let rec = StepRecord {
            layer,
            created,
            parent: Some(self.parent),
            inputs,
        };
        sh.cache.put(key, &rec).map_err(BuildError::StepCache)?;
        used(sh, self.stage.index, *key, self.parent, &rec);
        drop(claim);
        Ok(StepDone {
            layer: StageLayer::Done(rec.layer),
            created,
        })
    }
}

/// What a filesystem step gives its stage: its layer (still being hashed, on
/// a miss that could go on without waiting for it) and its history time.
pub(crate) struct StepDone {
    pub layer: StageLayer,
    pub created: i64,
}

/// Notes a step's record as used by this build (for `--cache-to`) and queues
/// its blob for the background writers when an output will need it.
fn used(sh: &Shared<'_>, stage: usize, key: Digest, parent: Digest, rec: &StepRecord) {
    sh.cache.note_used(key, parent, rec);
    sh.precompress(stage, &rec.layer.blob);
}

/// A step's layer to hash in the background: its directory (in `pending`)
/// and what its cache record needs.
pub(crate) struct LayerDiff {
    pending: Arc<PendingLayer>,
    key: Digest,
    parent: Digest,
    inputs: StepInputs,
    created: i64,
    stage: usize,
    /// The step's display name.
    name: String,
    /// Where the step is in the Dockerfile (for an error writing its layer).
    origin: Origin,
    /// The step's claim on its cache key: held until its record is written.
    claim: Option<Claim>,
}

impl LayerDiff {
    /// Hashes the step's directory into its layer (the same walk and digest
    /// as a step hashed at once), names it by its diff_id, publishes the
    /// layer to the steps waiting for it, and writes the step's cache record.
    /// Shown as a phase, "layer diff of [stage n/m] …".
    pub(crate) fn run(mut self, sh: &Shared<'_>) -> Result<(), BuildError> {
        let (key, parent, created, stage) = (self.key, self.parent, self.created, self.stage);
        let inputs = std::mem::take(&mut self.inputs);
        let claim = self.claim.take();
        let pending = self.pending.clone();
        let name = &self.name;
        let phase = format!("layer diff of {name}");
        let started = sh.clock.now_ms();
        sh.emit(Event::Phase {
            at_ms: started,
            name: phase.clone(),
            duration_ms: None,
        });
        // Tests: a hash that takes this long, to see what goes on meanwhile.
        if let Some(ms) = std::env::var("KILN_TEST_LAYER_DIFF_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let dir = pending.dir().to_path_buf();
        let result = if sh.cancelled() {
            Err(BuildError::Cancelled)
        } else {
            commit_layer(sh, &self.origin, &dir, |diff_id| {
                let named = sh
                    .snapshots
                    .name_step(&dir, diff_id)
                    .map_err(BuildError::Snapshot)?;
                if named {
                    return Ok(dir.clone());
                }
                // The layer's snapshot was there already: this copy goes
                // once no step of the build stacks it.
                sh.remove_at_end(dir.clone());
                Ok(sh.snapshots.path_of(diff_id))
            })
        };
        let result = match result {
            Ok(layer) => {
                pending.finish(Ok(layer.clone()));
                let rec = StepRecord {
                    layer,
                    created,
                    parent: Some(parent),
                    inputs,
                };
                used(sh, stage, key, parent, &rec);
                sh.cache.put(&key, &rec).map_err(BuildError::StepCache)
            }
            Err(e) => {
                // Waiters see the build fail (the error is reported once, by
                // the build); the directory goes at the build's end.
                pending.finish(Err(()));
                sh.remove_at_end(dir);
                Err(e)
            }
        };
        drop(claim);
        let now = sh.clock.now_ms();
        sh.emit(Event::Phase {
            at_ms: now,
            name: phase,
            duration_ms: Some(now - started),
        });
        result
    }
}

impl Drop for LayerDiff {
    /// A job that ends without a layer (its thread panicked, or it was
    /// never run) fails its waiters rather than leaving them waiting.
    fn drop(&mut self) {
        if self.pending.get().is_none() {
            self.pending.finish(Err(()));
        }
    }
}

/// Turns a step's finished directory into its layer: the diff_id and size of
/// its tar (one walk, one sha256 pass, nothing compressed or written), the
/// snapshot (made by `name`, given the diff_id: it returns where the layer is
/// now) and the store's record of that directory (not of a symlink to it: a
/// layer is written from a directory). The blob
/// is made from the snapshot when an output needs it
/// (`kiln_oci::export::complete_image`).
fn commit_layer(
    sh: &Shared<'_>,
    origin: &Origin,
    dir: &Path,
    name: impl FnOnce(&Digest) -> Result<PathBuf, BuildError>,
) -> Result<Layer, BuildError> {
    let sde = sh.opts.source_date_epoch;
    let digest = layer_digest(dir, DiffKind::OverlayUpper, sde)
        .map_err(|e| layer_error(sh, origin, dir, e))?;
    let dest = sh.snapshots.path_of(&digest.diff_id);
    if dest.is_dir() && sh.store.local_layer(&digest.diff_id).is_none() {
        // The same layer is already there, extracted from an image's blob:
        // that snapshot was not written by this walk, so this layer gets its
        // blob now, from its own directory.
        return commit_layer_blob(sh, origin, dir, name);
    }
    let holder = name(&digest.diff_id)?;
    let holder = match std::fs::read_link(&holder) {
        Ok(target) => holder.parent().unwrap_or(Path::new("")).join(target),
        Err(_) => holder,
    };
    sh.store
        .record_local_layer(&digest.diff_id, &holder, digest.size, sde)
        .map_err(BuildError::Store)?;
    Ok(Layer {
        blob: BlobRef {
            media_type: media_type::OCI_LAYER.to_string(),
            digest: digest.diff_id,
            size: digest.size,
            annotations: BTreeMap::new(),
        },
        diff_id: digest.diff_id,
    })
}

/// A layer written as a compressed blob at once (gzip).
fn commit_layer_blob(
    sh: &Shared<'_>,
    origin: &Origin,
    dir: &Path,
    name: impl FnOnce(&Digest) -> Result<PathBuf, BuildError>,
) -> Result<Layer, BuildError> {
    let mut writer = sh.store.blob_writer().map_err(BuildError::Store)?;
    let opts = LayerOptions {
        compression: Compression::default(),
        source_date_epoch: sh.opts.source_date_epoch,
    };
    let desc = write_layer(dir, DiffKind::OverlayUpper, &opts, &mut writer)
        .map_err(|e| layer_error(sh, origin, dir, e))?;
    let (digest, size) = writer.commit().map_err(BuildError::Store)?;
    name(&desc.diff_id)?;
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

/// A step's changes (in `dir`) that cannot be written as a layer: a user
/// error at the step's line (a file named `.wh.…`, a file it left unreadable),
/// naming the file as the image sees it.
fn layer_error(sh: &Shared<'_>, origin: &Origin, dir: &Path, e: LayerError) -> BuildError {
    sh.located(
        origin,
        format!(
            "{}: its changes cannot be written as a layer: {}",
            origin.summary(),
            e.rooted_at(dir)
        ),
    )
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Applies a step's result: its layer and its history entry.
pub(crate) fn apply_record(state: &mut StageState, key: Digest, rec: StepDone, created_by: String) {
    state.layers.push(rec.layer);
    state.key = key;
    state.history(created_by, true, rec.created);
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
            let (layers, config, key, _) =
                image_source(sh.store, sh.opts, sh.src, r, None, origin)?;
            let state = StageState {
                layers: layers.into_iter().map(StageLayer::Done).collect(),
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
