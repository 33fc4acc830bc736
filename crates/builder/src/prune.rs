//! Pruning what builds leave in a store: unreferenced blobs, snapshots and, on
//! request, the build cache.
//!
//! Blobs the step cache points at are kept, so `kiln prune` keeps the build cache
//! working (as `docker image prune` keeps BuildKit's); `build_cache: true` drops
//! the step records and the `RUN --mount=type=cache` directories first, so their
//! layers go too (`docker builder prune`). A snapshot directory stays only while
//! a stored image or a cache record still has its layer (a step's `step-…`
//! snapshot, while the symlink naming it by its diff_id stays). Everything runs under
//! the store's exclusive lock, so no build is running meanwhile.

use crate::cache::steps::StepCache;
use kiln_oci::digest::Digest;
use kiln_oci::store::{GcReport, Store, StoreError};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// What [`prune`] removed beyond [`GcReport`]'s blobs.
#[derive(Debug, Default)]
pub struct PruneReport {
    pub gc: GcReport,
    pub removed_snapshots: u64,
    pub removed_cache_records: u64,
    pub removed_cache_mounts: u64,
    /// Bytes of snapshot, cache-record and cache-mount files removed.
    pub reclaimed_bytes: u64,
}

/// Why pruning stopped.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("{0}")]
    Store(#[source] StoreError),
    /// The build cache's records could not be read or removed.
    #[error("{0}")]
    StepCache(#[source] std::io::Error),
    #[error("cannot remove {}", .0.display())]
    Remove(PathBuf),
}

/// Removes what no stored image (and, unless `build_cache`, no build cache
/// record) uses, under the store's exclusive lock.
pub fn prune(store: &mut Store, build_cache: bool) -> Result<PruneReport, PruneError> {
    store
        .with_exclusive(|store| prune_locked(store, build_cache))
        .map_err(PruneError::Store)?
}

fn prune_locked(store: &Store, build_cache: bool) -> Result<PruneReport, PruneError> {
    let root = store.root().to_path_buf();
    let mut report = PruneReport::default();
    let cache = StepCache::open(&root).map_err(PruneError::StepCache)?;
    if build_cache {
        let (n, bytes) = cache.clear().map_err(PruneError::StepCache)?;
        report.removed_cache_records = n;
        report.reclaimed_bytes += bytes;
        let mounts = root.join("cache").join("mounts");
        if let Ok(rd) = fs::read_dir(&mounts) {
            for e in rd.flatten() {
                report.reclaimed_bytes += tree_size(&e.path());
                remove(&e.path())?;
                report.removed_cache_mounts += 1;
            }
        }
    }
    let records = cache.records();
    let blobs: BTreeSet<Digest> = records.iter().map(|r| r.layer.blob.digest).collect();
    report.gc = store.gc_keeping(&blobs).map_err(PruneError::Store)?;

    // Snapshots still in use: the layers of stored images and of cache records.
    let mut diff_ids: BTreeSet<String> = records.iter().map(|r| r.layer.diff_id.hex()).collect();
    for image in store.images().map_err(PruneError::Store)? {
        // Every platform's image of a multi-platform one.
        for img in kiln_oci::image::load_all_images(store, &image.target).unwrap_or_default() {
            diff_ids.extend(img.config.rootfs.diff_ids.iter().map(|d| d.hex()));
        }
    }
    // And the layers of the stages their build records name (`kiln analyze`).
    diff_ids.extend(
        store
            .build_record_layers()
            .map_err(PruneError::Store)?
            .iter()
            .map(|d| d.hex()),
    );
    let snapshots = root.join("snapshots");
    // A layer a step made is a `step-…` directory, named by its diff_id
    // through a symlink: it stays while that name does. One no name points
    // at is what a killed build left before hashing it.
    let mut kept_targets: BTreeSet<String> = BTreeSet::new();
    for id in &diff_ids {
        if let Ok(target) = fs::read_link(snapshots.join(id)) {
            kept_targets.insert(target.to_string_lossy().into_owned());
        }
    }
    if let Ok(rd) = fs::read_dir(&snapshots) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = match name.as_str() {
                "empty" => false,
                // Work dirs of builds: none runs while we hold the lock.
                "tmp" => {
                    if let Ok(tmp) = fs::read_dir(e.path()) {
                        for t in tmp.flatten() {
                            report.reclaimed_bytes += tree_size(&t.path());
                            remove(&t.path())?;
                        }
                    }
                    false
                }
                n => !diff_ids.contains(n) && !kept_targets.contains(n),
            };
            if stale {
                report.reclaimed_bytes += tree_size(&e.path());
                remove(&e.path())?;
                report.removed_snapshots += 1;
            }
        }
    }
    Ok(report)
}

fn tree_size(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = fs::symlink_metadata(p) else {
        return 0;
    };
    let mut n = md.blocks() * 512;
    if md.is_dir() {
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                n += tree_size(&e.path());
            }
        }
    }
    n
}

fn remove(p: &Path) -> Result<(), PruneError> {
    crate::snapshot::remove_tree(p);
    if fs::symlink_metadata(p).is_ok() {
        return Err(PruneError::Remove(p.to_path_buf()));
    }
    Ok(())
}
