//! A filesystem step's way through the cache ([`StepCtx::cached`]: a hit reuses
//! the recorded layer, a miss executes into an empty upper directory that
//! becomes the layer), and the inputs steps read from other stages or images.

use super::state::StageState;
use super::{BuildError, BuildOptions, NamedContext, Shared};
use crate::cache::explain::{explain, MissContext, StepInputs};
use crate::cache::steps::{KeyBuilder, StepRecord};
use crate::progress::Event;
use crate::snapshot::Layer;
use kiln_dockerfile::instructions::Origin;
use kiln_dockerfile::stages::{Input, Stage};
use kiln_dockerfile::{DockerfileError, Source};
use kiln_oci::digest::Digest;
use kiln_oci::image::media_type;
use kiln_oci::image::{load_image_for, ImageConfig};
use kiln_oci::layer::{layer_digest, write_layer, Compression, DiffKind, LayerOptions};
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
    /// The progress vertex of a filesystem step.
    pub vertex: Option<usize>,
    pub no_cache: bool,
    /// The stage's layers before this step.
    pub lower: Vec<Layer>,
    /// The stage's key before this step (the parent of the step's key).
    pub parent: Digest,
    /// The base image's manifest digest, for the stage's first filesystem
    /// step on an image (an input `--explain-cache` names).
    pub base: Option<Digest>,
}

impl StepCtx<'_, '_> {
    /// Runs a filesystem step through the cache: a hit reuses the recorded
    /// layer; a miss calls `execute` with an empty upper directory (and a work
    /// directory beside it), then turns the upper directory into the layer.
    pub fn cached(
        &self,
        key: Digest,
        inputs: StepInputs,
        execute: impl FnOnce(&Path, &Path) -> Result<(), BuildError>,
    ) -> Result<StepRecord, BuildError> {
        self.cached_then(key, inputs, execute, |_, _| {})
    }

    /// [`Self::cached`], calling `committed` when `execute` ran and its layer
    /// is made: with the layer and what was left out of it as unchanged
    /// ([`crate::snapshot::drop_unchanged`]'s list).
    pub fn cached_then(
        &self,
        key: Digest,
        inputs: StepInputs,
        execute: impl FnOnce(&Path, &Path) -> Result<(), BuildError>,
        committed: impl FnOnce(&Layer, &[(PathBuf, PathBuf)]),
    ) -> Result<StepRecord, BuildError> {
        let mut inputs = inputs;
        if let Some(b) = &self.base {
            inputs.insert("base".into(), b.to_string());
        }
        let result = self.lookup_or_execute(key, inputs, execute, committed);
        let sh = self.sh;
        if let Ok(rec) = &result {
            sh.cache.note_used(key, self.parent, rec);
            sh.precompress(self.stage.index, &rec.layer.blob);
        }
        sh.emit_cache_warnings();
        result
    }

    fn lookup_or_execute(
        &self,
        key: Digest,
        inputs: StepInputs,
        execute: impl FnOnce(&Path, &Path) -> Result<(), BuildError>,
        committed: impl FnOnce(&Layer, &[(PathBuf, PathBuf)]),
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
            _claim = Some(sh.cache.claim(&key).map_err(|source| BuildError::Claim {
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
        let result = self.execute_and_commit(&key, inputs, execute, committed, permit);
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
    /// needs no RUN slot, so another stage's step starts meanwhile.
    fn execute_and_commit(
        &self,
        key: &Digest,
        inputs: StepInputs,
        execute: impl FnOnce(&Path, &Path) -> Result<(), BuildError>,
        committed: impl FnOnce(&Layer, &[(PathBuf, PathBuf)]),
        permit: super::Permit<'_>,
    ) -> Result<StepRecord, BuildError> {
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
        let layer = self.commit_layer(&upper)?;
        committed(&layer, &dropped);
        let created = sh.opts.source_date_epoch.unwrap_or_else(unix_now);
        let rec = StepRecord {
            layer,
            created,
            parent: Some(self.parent),
            inputs,
        };
        sh.cache.put(key, &rec).map_err(BuildError::StepCache)?;
        Ok(rec)
    }

    /// Turns the step's upper directory into its layer: the diff_id and size of
    /// its tar (one walk, one sha256 pass, nothing compressed or written), the
    /// store's record that the snapshot holds that layer, and the snapshot. The
    /// blob is made from the snapshot when an output needs it
    /// (`kiln_oci::export::complete_image`).
    fn commit_layer(&self, upper: &Path) -> Result<Layer, BuildError> {
        let sh = self.sh;
        let sde = sh.opts.source_date_epoch;
        let digest = layer_digest(upper, DiffKind::OverlayUpper, sde).map_err(BuildError::Layer)?;
        let dest = sh.snapshots.path_of(&digest.diff_id);
        if dest.is_dir() && sh.store.local_layer(&digest.diff_id).is_none() {
            // The same layer is already there, extracted from an image's blob:
            // that snapshot was not written by this walk, so this layer gets its
            // blob now, from its own upper directory.
            return self.commit_layer_blob(upper);
        }
        sh.store
            .record_local_layer(&digest.diff_id, &dest, digest.size, sde)
            .map_err(BuildError::Store)?;
        sh.snapshots
            .install(upper, &digest.diff_id)
            .map_err(BuildError::Snapshot)?;
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
    fn commit_layer_blob(&self, upper: &Path) -> Result<Layer, BuildError> {
        let sh = self.sh;
        let mut writer = sh.store.blob_writer().map_err(BuildError::Store)?;
        let opts = LayerOptions {
            compression: Compression::default(),
            source_date_epoch: sh.opts.source_date_epoch,
        };
        let desc = write_layer(upper, DiffKind::OverlayUpper, &opts, &mut writer)
            .map_err(BuildError::Layer)?;
        let (digest, size) = writer.commit().map_err(BuildError::Store)?;
        sh.snapshots
            .install(upper, &desc.diff_id)
            .map_err(BuildError::Snapshot)?;
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
