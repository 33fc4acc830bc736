//! Garbage collection: every blob no stored image (or caller-named blob)
//! reaches is removed, with leftovers of interrupted writes, under the store's
//! exclusive lock.

use super::{flock, io_err, sync_dir, BlobRef, Result, Store};
use crate::descriptor::{media_type, referenced_blobs};
use crate::digest::Digest;
use rustix::fs::FlockOperation;
use std::collections::BTreeSet;
use std::fs;

/// What [`Store::gc`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub removed_blobs: Vec<Digest>,
    pub reclaimed_bytes: u64,
    pub removed_temp_files: usize,
}

impl Store {
    /// Add `target` and every blob it references (manifest → config + layers,
    /// index → manifests) to `seen`; referenced blobs that are absent go to `missing`.
    pub(super) fn walk_reachable(
        &self,
        target: &BlobRef,
        seen: &mut BTreeSet<Digest>,
        missing: &mut BTreeSet<Digest>,
    ) -> Result<()> {
        if !seen.insert(target.digest) {
            return Ok(());
        }
        if !self.has_blob(&target.digest) {
            missing.insert(target.digest);
            return Ok(());
        }
        if !media_type::is_manifest_or_index(&target.media_type) {
            return Ok(());
        }
        let data = self.read_blob(&target.digest)?;
        for child in referenced_blobs(&data, &target.digest)? {
            if media_type::is_manifest_or_index(&child.media_type) {
                self.walk_reachable(&child, seen, missing)?;
            } else {
                seen.insert(child.digest);
                if !self.has_blob(&child.digest) {
                    // A layer held as a directory: its blob is made on demand,
                    // and the ones made so far are kept with it.
                    if self.local_layer(&child.digest).is_some() {
                        seen.extend(self.layer_variant_blobs(&child.digest));
                    } else {
                        missing.insert(child.digest);
                    }
                }
            }
        }
        Ok(())
    }

    /// Every blob reachable from a stored image.
    pub fn reachable_blobs(&self) -> Result<BTreeSet<Digest>> {
        let mut seen = BTreeSet::new();
        let mut missing = BTreeSet::new();
        for image in self.images()? {
            self.walk_reachable(&image.target, &mut seen, &mut missing)?;
            // A build record keeps the layers of the build's stages with the image.
            if let Some(rec) = self.build_record(&image.target.digest) {
                for layer in rec.stages.iter().flat_map(|s| &s.layers) {
                    seen.insert(layer.blob.digest);
                    if !self.has_blob(&layer.blob.digest) {
                        seen.extend(self.layer_variant_blobs(&layer.blob.digest));
                    }
                }
            }
        }
        Ok(seen)
    }

    /// Remove every blob not reachable from a stored image, and every temp file left
    /// by a writer that died. Takes the store's exclusive lock for the duration (so it
    /// waits for other kiln processes using this store, and for other `Store` handles
    /// of this process: call it only from a process holding just this one), then
    /// returns to shared.
    pub fn gc(&mut self) -> Result<GcReport> {
        let lock_path = self.root.join("lock");
        flock(&self.lock, FlockOperation::LockExclusive, &lock_path)?;
        let res = self.gc_locked();
        flock(&self.lock, FlockOperation::LockShared, &lock_path)?;
        res
    }

    /// Runs `f` with the store's exclusive lock held (no other kiln process uses
    /// the store meanwhile), then returns to shared. For maintenance of what lives
    /// beside the blobs (build cache, snapshots) together with [`Store::gc_keeping`].
    pub fn with_exclusive<T>(&mut self, f: impl FnOnce(&Store) -> T) -> Result<T> {
        let lock_path = self.root.join("lock");
        flock(&self.lock, FlockOperation::LockExclusive, &lock_path)?;
        let res = f(self);
        flock(&self.lock, FlockOperation::LockShared, &lock_path)?;
        Ok(res)
    }

    /// [`Store::gc`] that also keeps `extra` blobs (and what they reference); only
    /// inside [`Store::with_exclusive`].
    pub fn gc_keeping(&self, extra: &BTreeSet<Digest>) -> Result<GcReport> {
        self.gc_locked_keeping(extra)
    }

    fn gc_locked(&self) -> Result<GcReport> {
        self.gc_locked_keeping(&BTreeSet::new())
    }

    fn gc_locked_keeping(&self, extra: &BTreeSet<Digest>) -> Result<GcReport> {
        let mut keep = self.reachable_blobs()?;
        for d in extra {
            keep.insert(*d);
            keep.extend(self.layer_variant_blobs(d));
        }
        self.remove_layer_records_except(&keep)?;
        self.remove_build_records_except(&keep)?;
        let mut report = GcReport::default();
        for (digest, size) in self.list_blob_files()?.into_iter().flatten() {
            if keep.contains(&digest) {
                continue;
            }
            let path = self.blob_path(&digest);
            fs::remove_file(&path).map_err(io_err("removing", &path))?;
            report.removed_blobs.push(digest);
            report.reclaimed_bytes += size;
        }
        // With the exclusive lock held no other process is writing, and `&mut self`
        // means no BlobWriter of ours is alive: everything in tmp/ is stale.
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(io_err("listing", &tmp))? {
            let entry = entry.map_err(io_err("listing", &tmp))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(io_err("reading", &path))?;
            let res = if meta.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            res.map_err(io_err("removing", &path))?;
            report.reclaimed_bytes += meta.len();
            report.removed_temp_files += 1;
        }
        sync_dir(&self.blobs_dir())?;
        Ok(report)
    }
}
