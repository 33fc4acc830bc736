//! The step cache: a cache key → the layer the step produced.
//!
//! Only steps that change the filesystem (RUN, COPY, ADD, WORKDIR) have keys.
//! A key is the digest of the previous filesystem step's key and everything that
//! decides the step's result: the instruction after expansion, the environment,
//! user and working directory it runs with, its mounts, and the digests of the
//! files it reads (context files by content and mode, a stage by its final key).
//! Metadata instructions (ENV, LABEL, …) only matter through what a later step
//! sees, so changing a LABEL does not invalidate the RUN after it — as in BuildKit.
//!
//! Records live in `<store>/cache/steps/<key hex>.json`; a hit needs no layer I/O:
//! the record points at a stored layer (a layer a build made is its snapshot,
//! named by diff_id; its blob is made only when an output needs it). A record
//! whose layer was garbage-collected is a miss.
//!
//! A step that misses first [claims](StepCache::claim) its key: an exclusive
//! `flock` on `<key hex>.lock`. A second build (another kiln process on the same
//! store, or another stage of the same build) computing the same key waits for
//! the claim and then finds the record, so the step runs once — as BuildKit's
//! solver merges identical steps in flight. The kernel releases the lock when
//! its holder exits or is killed; the next waiter then runs the step itself.
//!
//! With `--cache-from`, a key the store has no record of is looked up in the
//! imported caches ([`super::remote::RemoteCache`]); its layer blob stays
//! where it is until something needs it. Every record and memo a build uses is
//! noted ([`StepCache::usage`]) for `--cache-to`.

use super::explain::StepInputs;
use super::remote::{CacheUsage, RemoteCache, UsedStep};
use crate::claim::Claim;
use crate::snapshot::Layer;
use kiln_oci::digest::{Digest, Hasher};
use kiln_oci::store::Store;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What a step produced.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepRecord {
    /// The step's layer (an empty diff too is a layer, as in BuildKit).
    pub layer: Layer,
    /// When the step first ran (Unix seconds): its history entry's `created`.
    pub created: i64,
    /// The key of the filesystem step before it (or of the stage's base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
    /// What went into the key, compactly ([`super::explain`]); empty in
    /// records of an older kiln.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub inputs: StepInputs,
}

pub struct StepCache {
    dir: PathBuf,
    /// The store's records as `(key, parent, inputs)`, read once, when the
    /// first miss is explained.
    local_index: std::sync::OnceLock<Vec<(Digest, Digest, StepInputs)>>,
    /// The caches of `--cache-from`.
    remote: Option<Arc<RemoteCache>>,
    /// What this build used (see [`StepCache::usage`]).
    used: Mutex<CacheUsage>,
}

/// Computes a key from its parts, each length-prefixed so parts can't run together.
pub struct KeyBuilder(Hasher);

impl KeyBuilder {
    pub fn new(kind: &str, parent: &Digest) -> KeyBuilder {
        let mut k = KeyBuilder(Hasher::new());
        k.part("kiln-step-v1");
        k.part(kind);
        k.part(&parent.to_string());
        k
    }

    pub fn part(&mut self, s: &str) -> &mut Self {
        self.0.update(&(s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
        self
    }

    pub fn json<T: Serialize>(&mut self, v: &T) -> &mut Self {
        let s = serde_json::to_string(v).unwrap_or_default();
        self.part(&s)
    }

    pub fn finish(self) -> Digest {
        self.0.finish()
    }
}

impl StepCache {
    pub fn open(store_root: &Path) -> std::io::Result<StepCache> {
        let dir = store_root.join("cache").join("steps");
        fs::create_dir_all(&dir)?;
        Ok(StepCache {
            dir,
            local_index: std::sync::OnceLock::new(),
            remote: None,
            used: Mutex::default(),
        })
    }

    /// Looks keys the store lacks up in `remote` too.
    pub fn with_remote(mut self, remote: Option<Arc<RemoteCache>>) -> StepCache {
        self.remote = remote;
        self
    }

    /// Notes that the step `key` (after `parent`) produced `rec` in this build.
    pub fn note_used(&self, key: Digest, parent: Digest, rec: &StepRecord) {
        self.lock_used().steps.insert(
            key,
            UsedStep {
                parent,
                record: rec.clone(),
            },
        );
    }

    /// The records and memos this build used, with `final_key` as the key the
    /// target's image ends with.
    pub fn usage(&self, final_key: Digest) -> CacheUsage {
        let mut u = self.lock_used().clone();
        u.final_key = Some(final_key);
        u
    }

    fn lock_used(&self) -> std::sync::MutexGuard<'_, CacheUsage> {
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, key: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// The record for `key`, if its layer is still stored: its blob whole (the
    /// size is checked: records and blobs of a build are written without fsync,
    /// see [`StepCache::put`]), or, for a layer a build made (named by its
    /// diff_id, uncompressed), the snapshot the store records for it.
    /// Else the record an imported cache has for it (see the module doc).
    /// An imported record is also written to the store's records, so once
    /// its blob is fetched, a build without `--cache-from` finds it too.
    pub fn get(&self, store: &Store, key: &Digest) -> Option<StepRecord> {
        if let Some(rec) = self.get_local(store, key) {
            return Some(rec);
        }
        let rec = self.remote.as_ref()?.record(store, key)?;
        // Losing it only costs a later miss.
        let _ = self.put(key, &rec);
        Some(rec)
    }

    fn get_local(&self, store: &Store, key: &Digest) -> Option<StepRecord> {
        let data = fs::read(self.path(key)).ok()?;
        let rec: StepRecord = serde_json::from_slice(&data).ok()?;
        let blob = &rec.layer.blob;
        let stored = store.blob_size(&blob.digest).ok() == Some(blob.size)
            || (blob.digest == rec.layer.diff_id
                && store
                    .local_layer(&blob.digest)
                    .is_some_and(|l| l.size == blob.size));
        stored.then_some(rec)
    }

    /// A remembered digest (e.g. of the files a `COPY --from` reads from a stage
    /// result with this key), so it is computed once per stage result.
    /// An imported cache's memo when the store has none.
    pub fn memo(&self, key: &Digest) -> Option<Digest> {
        let local = fs::read_to_string(self.dir.join(format!("{}.memo", key.hex())))
            .ok()
            .and_then(|text| text.trim().parse().ok());
        let found = match local {
            Some(d) => d,
            None => {
                let d = self.remote.as_ref()?.memo(key)?;
                let _ = self.write(&format!("{}.memo", key.hex()), d.to_string().as_bytes());
                d
            }
        };
        self.lock_used().memos.insert(*key, found);
        Some(found)
    }

    pub fn put_memo(&self, key: &Digest, value: &Digest) -> std::io::Result<()> {
        self.lock_used().memos.insert(*key, *value);
        self.write(&format!("{}.memo", key.hex()), value.to_string().as_bytes())
    }

    /// Whether the store or an imported cache has a record for `key` at all
    /// (whether or not its layer is still there).
    pub fn has_entry(&self, key: &Digest) -> bool {
        self.path(key).is_file() || self.remote.as_ref().is_some_and(|r| r.has_key(key))
    }

    /// The inputs of the records (the store's, then the imported caches')
    /// whose parent is `parent`, or, with `parent` `None`, of every record.
    pub fn inputs_after(&self, parent: Option<&Digest>) -> Vec<StepInputs> {
        let local = self.local_index.get_or_init(|| {
            let Ok(rd) = fs::read_dir(&self.dir) else {
                return Vec::new();
            };
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let key: Digest = format!("sha256:{}", name.strip_suffix(".json")?)
                        .parse()
                        .ok()?;
                    let rec: StepRecord = serde_json::from_slice(&fs::read(e.path()).ok()?).ok()?;
                    Some((key, rec.parent?, rec.inputs))
                })
                .collect()
        });
        let mut out: Vec<StepInputs> = local
            .iter()
            .filter(|(_, p, _)| parent.is_none_or(|want| p == want))
            .map(|(_, _, i)| i.clone())
            .collect();
        if let Some(r) = &self.remote {
            out.extend(r.inputs_after(parent));
        }
        out
    }

    /// Every readable record.
    pub fn records(&self) -> Vec<StepRecord> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|d| serde_json::from_slice(&d).ok())
            .collect()
    }

    /// Removes every record; returns how many and their bytes.
    pub fn clear(&self) -> std::io::Result<(u64, u64)> {
        let (mut n, mut bytes) = (0, 0);
        for e in fs::read_dir(&self.dir)?.flatten() {
            bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(e.path())?;
            n += 1;
        }
        Ok((n, bytes))
    }

    /// Waits until nobody else computes `key` (see the module doc), then claims
    /// it until the returned claim is dropped.
    pub fn claim(&self, key: &Digest) -> std::io::Result<Claim> {
        Claim::acquire(&self.dir.join(format!("{}.lock", key.hex())))
    }

    /// Records `rec` under `key` atomically (temp file, rename). Not fsynced: a
    /// record lost or torn by a power loss only costs a cache miss (an unreadable
    /// record is one), so a step does not pay for durability it doesn't need.
    pub fn put(&self, key: &Digest, rec: &StepRecord) -> std::io::Result<()> {
        let data = serde_json::to_vec(rec).unwrap_or_default();
        self.write(&format!("{}.json", key.hex()), &data)
    }

    /// Replaces the file `name` atomically (temp file, rename). The temp name is
    /// unique per write, so two stages of one build writing the same key (same
    /// step on the same base) do not trip over each other.
    fn write(&self, name: &str, data: &[u8]) -> std::io::Result<()> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let res = fs::write(&tmp, data).and_then(|()| fs::rename(&tmp, self.dir.join(name)));
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }
}
