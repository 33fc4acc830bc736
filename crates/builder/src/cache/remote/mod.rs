//! The build cache in a registry or an OCI layout directory, shared by machines
//! that start empty (`--cache-from`, `--cache-to`).
//!
//! Import is lazy: [`RemoteCache::import`] reads each cache's manifest and
//! config only. The step cache ([`super::steps::StepCache::get`]) finds a key
//! there when the store has no record of it, and a hit costs one HEAD of its
//! layer blob (a blob the cache names but no longer has is a miss, with a
//! warning). A layer blob is fetched only through [`BlobFetcher::fetch`]: when
//! a snapshot of it must be extracted (a step that runs needs the filesystem
//! below it, a `COPY --from` reads it), and at the end of the build for the
//! target's layers that the store lacks (see `solver::build`).
//!
//! Export ([`export`]) merges: it reads what the tag holds, adds this build's
//! records (newer use wins), prunes by age and count, writes the config and
//! the manifest, and — a registry has no compare-and-swap — reads the tag again
//! after a short pause and merges once more if another runner's write replaced
//! its records meanwhile.

pub mod backend;
pub mod format;
pub mod spec;

use crate::cache::steps::StepRecord;
use crate::snapshot::{BlobFetcher, Layer};
use backend::Backend;
use format::{CacheConfig, CacheEntry, LayerEntry, MemoEntry};
use kiln_oci::digest::Digest;
use kiln_oci::registry::RegistryContext;
use kiln_oci::store::{BlobRef, Store};
pub use spec::{CacheExport, CacheLocation, CacheMode};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The caches of `--cache-from`, read: records and memos by key (the first
/// cache to have a key wins, as the flags are tried in order), and which cache
/// holds each layer blob.
#[derive(Debug, Default)]
pub struct RemoteCache {
    backends: Vec<(String, Box<dyn Backend>)>,
    records: HashMap<Digest, (CacheEntry, usize)>,
    memos: HashMap<Digest, Digest>,
    blobs: HashMap<Digest, usize>,
    /// Layer blobs checked with HEAD: present or not.
    available: Mutex<HashMap<Digest, bool>>,
    /// One fetch per blob at a time (stages extract in parallel).
    fetching: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
    warnings: Mutex<Vec<String>>,
}

impl RemoteCache {
    /// Reads the manifest and config of each cache; one that is missing,
    /// corrupt or not a kiln cache is a warning (`warn`) and adds nothing.
    pub fn import(
        locations: &[CacheLocation],
        ctx: &RegistryContext,
        warn: &mut dyn FnMut(String),
    ) -> RemoteCache {
        let mut rc = RemoteCache::default();
        for loc in locations {
            let name = loc.to_string();
            let backend = match backend::open(loc, ctx) {
                Ok(b) => b,
                Err(e) => {
                    warn(format!("cache {name}: {e}; building without it"));
                    continue;
                }
            };
            let config = match read_config(backend.as_ref()) {
                Ok(Some((c, _))) => c,
                Ok(None) => {
                    warn(format!("cache {name}: not found; building without it"));
                    continue;
                }
                Err(e) => {
                    warn(format!("cache {name}: {e}; building without it"));
                    continue;
                }
            };
            let index = rc.backends.len();
            for (k, e) in config.records {
                rc.blobs.entry(e.layer.digest).or_insert(index);
                rc.records.entry(k).or_insert((e, index));
            }
            for (k, m) in config.memos {
                rc.memos.entry(k).or_insert(m.digest);
            }
            rc.backends.push((name, backend));
        }
        rc
    }

    /// How many step records the caches hold.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The record for `key`, if a cache has it and its layer blob is in the
    /// store or still in that cache (checked once, without downloading it).
    pub fn record(&self, store: &Store, key: &Digest) -> Option<StepRecord> {
        let (entry, index) = self.records.get(key)?;
        let blob = entry.layer.blob();
        if store.blob_size(&blob.digest).ok() != Some(blob.size) {
            let known = self.lock_available().get(&blob.digest).copied();
            let present = match known {
                Some(p) => p,
                None => {
                    let (name, backend) = &self.backends[*index];
                    let p = match backend.has_blob(&blob) {
                        Ok(p) => p,
                        Err(e) => {
                            self.warn(format!("cache {name}: layer {}: {e}", blob.digest));
                            false
                        }
                    };
                    if !p {
                        self.warn(format!(
                            "cache {name}: layer {} of step {} is missing; the step runs",
                            blob.digest,
                            key.short()
                        ));
                    }
                    self.lock_available().insert(blob.digest, p);
                    p
                }
            };
            if !present {
                return None;
            }
            // A push to this registry can have the blob mounted from here.
            if let Some(repo) = self.backends[*index].1.registry_repo() {
                kiln_oci::registry::sources::record(
                    store,
                    repo.registry(),
                    repo.repository(),
                    &blob.digest,
                );
            }
        }
        Some(StepRecord {
            layer: Layer {
                blob,
                diff_id: entry.layer.diff_id,
            },
            created: entry.created,
            parent: entry.parent,
            inputs: entry.inputs.clone().unwrap_or_default(),
        })
    }

    /// Whether a cache has a record for `key` (its layer there or not).
    pub fn has_key(&self, key: &Digest) -> bool {
        self.records.contains_key(key)
    }

    /// The recorded inputs of the caches' records after `parent` (of every
    /// record when `None`).
    pub fn inputs_after(&self, parent: Option<&Digest>) -> Vec<super::explain::StepInputs> {
        self.records
            .values()
            .filter(|(e, _)| parent.is_none_or(|p| e.parent.as_ref() == Some(p)))
            .filter_map(|(e, _)| e.inputs.clone())
            .collect()
    }

    /// A memo a cache holds.
    pub fn memo(&self, key: &Digest) -> Option<Digest> {
        self.memos.get(key).copied()
    }

    /// The warnings since the last call.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn backend_of(&self, digest: &Digest) -> Option<&(String, Box<dyn Backend>)> {
        self.blobs.get(digest).map(|i| &self.backends[*i])
    }

    fn warn(&self, w: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w);
    }

    fn lock_available(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, bool>> {
        self.available.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RemoteCache {
    /// Fetches `blob` from the cache that holds it with `fetch`, one fetch
    /// per blob at a time; `Ok(false)` if no cache has it.
    fn fetch_with(
        &self,
        store: &Store,
        blob: &BlobRef,
        fetch: impl FnOnce(&dyn Backend) -> Result<(), String>,
    ) -> Result<bool, String> {
        let Some((name, backend)) = self.backend_of(&blob.digest) else {
            return Ok(false);
        };
        let lock = self
            .fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(blob.digest)
            .or_default()
            .clone();
        let _one = lock.lock().unwrap_or_else(|e| e.into_inner());
        if store.has_blob(&blob.digest) {
            return Ok(true);
        }
        fetch(backend.as_ref())
            .map_err(|e| format!("fetching layer {} from cache {name}: {e}", blob.digest))?;
        Ok(true)
    }
}

impl BlobFetcher for RemoteCache {
    fn fetch(&self, store: &Store, blob: &BlobRef) -> Result<bool, String> {
        self.fetch_with(store, blob, |b| b.fetch(store, blob))
    }

    /// From a registry, the layer is extracted as it downloads (as a base
    /// image's is); from a directory, fetched, then extracted by the caller.
    fn fetch_unpacking(
        &self,
        store: &Store,
        layer: &Layer,
        unpacker: &dyn kiln_oci::registry::LayerUnpacker,
    ) -> Result<bool, String> {
        let blob = &layer.blob;
        self.fetch_with(store, blob, |b| match b.registry_repo() {
            Some(repo) => repo
                .download_unpacking(store, blob, &layer.diff_id, unpacker)
                .map(drop)
                .map_err(|e| e.to_string()),
            None => b.fetch(store, blob),
        })
    }
}

/// The cache config and its manifest's digest under a backend's tag; `None`
/// when the tag does not exist; an error when it is not a readable kiln cache.
fn read_config(b: &dyn Backend) -> Result<Option<(CacheConfig, Digest)>, String> {
    let Some((bytes, digest)) = b.read_manifest()? else {
        return Ok(None);
    };
    let desc = format::parse_manifest(&bytes)?;
    let config = b
        .read_blob(&desc)
        .map_err(|e| format!("its config {}: {e}", desc.digest))?;
    Ok(Some((format::parse_config(&config)?, digest)))
}

/// A step a build ran or found cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedStep {
    /// The key of the filesystem step before it (or the stage's base).
    pub parent: Digest,
    pub record: StepRecord,
}

/// What a build used of the step cache: what `--cache-to` exports.
#[derive(Clone, Debug, Default)]
pub struct CacheUsage {
    pub steps: BTreeMap<Digest, UsedStep>,
    pub memos: BTreeMap<Digest, Digest>,
    /// The key of the target stage's last filesystem step (or its base).
    pub final_key: Option<Digest>,
}

impl CacheUsage {
    /// The records `mode` exports, all used `now`: every step (max), or the
    /// chain of steps the final image's layers came from (min).
    pub fn config(&self, mode: CacheMode, now: i64) -> CacheConfig {
        let entry = |u: &UsedStep| CacheEntry {
            layer: LayerEntry {
                media_type: u.record.layer.blob.media_type.clone(),
                digest: u.record.layer.blob.digest,
                size: u.record.layer.blob.size,
                diff_id: u.record.layer.diff_id,
            },
            created: u.record.created,
            parent: Some(u.parent),
            config: None,
            inputs: (!u.record.inputs.is_empty()).then(|| u.record.inputs.clone()),
            last_used: now,
        };
        let mut c = CacheConfig::new();
        match mode {
            CacheMode::Max => {
                for (k, u) in &self.steps {
                    c.records.insert(*k, entry(u));
                }
            }
            CacheMode::Min => {
                let mut key = self.final_key.unwrap_or_else(|| Digest::of(b""));
                while let Some(u) = self.steps.get(&key) {
                    if c.records.insert(key, entry(u)).is_some() {
                        break;
                    }
                    key = u.parent;
                }
            }
        }
        for (k, d) in &self.memos {
            c.memos.insert(
                *k,
                MemoEntry {
                    digest: *d,
                    last_used: now,
                },
            );
        }
        c
    }
}

/// What an export did.
#[derive(Clone, Debug, Default)]
pub struct ExportReport {
    /// Records this build exported.
    pub exported: usize,
    /// Records the cache holds now.
    pub total: usize,
    /// Writes of the manifest (more than one: another runner wrote meanwhile).
    pub writes: u32,
}

/// How many times an export merges again after another writer replaced it.
const EXPORT_ATTEMPTS: u32 = 5;

/// Exports `usage` to `spec`'s cache, merging with what it holds. Layer blobs
/// the store lacks (hits from `--cache-from` never fetched) are mounted from or
/// fetched out of the cache they came from. Warnings go to `warn`.
pub fn export(
    store: &Store,
    spec: &CacheExport,
    usage: &CacheUsage,
    from: Option<&RemoteCache>,
    ctx: &RegistryContext,
    warn: &mut dyn FnMut(String),
) -> Result<ExportReport, String> {
    let target = backend::open(&spec.location, ctx)?;
    export_to(store, target.as_ref(), spec, usage, from, warn)
}

fn export_to(
    store: &Store,
    target: &dyn Backend,
    spec: &CacheExport,
    usage: &CacheUsage,
    from: Option<&RemoteCache>,
    warn: &mut dyn FnMut(String),
) -> Result<ExportReport, String> {
    let now = crate::solver::unix_now();
    let mut mine = usage.config(spec.mode, now);
    // A layer this build made is a snapshot until something needs its blob:
    // the cache does (gzip, made once and kept, as for an image output; the
    // build wrote most while it ran, see `BuildOptions::precompress`), a few
    // at a time.
    let mut pending: Vec<LayerEntry> = mine
        .records
        .values()
        .map(|e| e.layer.clone())
        .filter(|l| !store.has_blob(&l.digest) && store.local_layer(&l.digest).is_some())
        .collect();
    pending.sort_by_key(|l| l.digest);
    pending.dedup_by_key(|l| l.digest);
    let made = Mutex::new(HashMap::new());
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    kiln_oci::parallel::try_for_each(
        &pending,
        workers,
        |l| {
            let b = kiln_oci::export::layer_with_blob(
                store,
                &l.blob(),
                kiln_oci::layer::Compression::default(),
            )
            .map_err(|err| format!("layer {}: {err}", l.diff_id))?;
            made.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(l.digest, b);
            Ok(())
        },
        || "a compressing thread panicked".to_string(),
    )?;
    let made = made.into_inner().unwrap_or_else(|e| e.into_inner());
    for e in mine.records.values_mut() {
        if let Some(b) = made.get(&e.layer.digest) {
            e.layer.media_type = b.media_type.clone();
            e.layer.digest = b.digest;
            e.layer.size = b.size;
        }
    }
    push_layers(store, target, &mine.layers(), from)?;
    let _lock = target.lock()?;
    let mut report = ExportReport {
        exported: mine.records.len(),
        ..ExportReport::default()
    };
    for _ in 0..EXPORT_ATTEMPTS {
        let current = match read_config(target) {
            Ok(Some((c, _))) => c,
            Ok(None) => CacheConfig::new(),
            Err(e) => {
                warn(format!(
                    "cache {}: {e}; replacing it with this build's cache",
                    spec.location
                ));
                CacheConfig::new()
            }
        };
        let mut merged = current;
        merged.merge(&mine);
        merged.prune(now, spec.max_age, spec.max_entries);
        // What of this build's survived pruning is what must be there after.
        let mut kept = mine.clone();
        kept.records.retain(|k, _| merged.records.contains_key(k));
        kept.memos.retain(|k, _| merged.memos.contains_key(k));
        let config = merged.to_bytes();
        let config_desc = BlobRef {
            media_type: format::CONFIG_MEDIA_TYPE.into(),
            digest: store.put_blob(&config).map_err(|e| e.to_string())?,
            size: config.len() as u64,
            annotations: Default::default(),
        };
        target.push_blob(store, &config_desc)?;
        target.write_manifest(format::manifest(&config_desc, &merged.layers()))?;
        report.writes += 1;
        report.total = merged.records.len();
        if !target.racy() {
            return Ok(report);
        }
        // Another runner that read the tag before this write may write its
        // merge after it: look again once such a write has had time to land.
        std::thread::sleep(settle_time());
        match read_config(target) {
            Ok(Some((now_there, _))) if now_there.contains_all(&kept) => return Ok(report),
            Ok(_) | Err(_) => warn(format!(
                "cache {}: another build replaced it meanwhile; merging again",
                spec.location
            )),
        }
    }
    Err(format!(
        "cache {}: other builds kept replacing it ({EXPORT_ATTEMPTS} merges)",
        spec.location
    ))
}

/// A pause of 150–400 ms, different per process, before reading the tag again.
fn settle_time() -> std::time::Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0) as u64;
    let jitter = (nanos ^ (std::process::id() as u64).wrapping_mul(0x9e37_79b9)) % 250;
    std::time::Duration::from_millis(150 + jitter)
}

/// Makes every blob of `layers` present in `target`: from the store, else
/// straight from the cache it came from (a mount), else through the store.
fn push_layers(
    store: &Store,
    target: &dyn Backend,
    layers: &[BlobRef],
    from: Option<&RemoteCache>,
) -> Result<(), String> {
    kiln_oci::parallel::try_for_each(
        layers,
        4,
        |b| push_layer(store, target, b, from),
        || "an upload thread panicked".into(),
    )
}

fn push_layer(
    store: &Store,
    target: &dyn Backend,
    blob: &BlobRef,
    from: Option<&RemoteCache>,
) -> Result<(), String> {
    if store.has_blob(&blob.digest) {
        return target.push_blob(store, blob);
    }
    let source = from.and_then(|r| r.backend_of(&blob.digest).map(|b| (r, b)));
    let Some((remote, (_, backend))) = source else {
        return Err(format!(
            "layer {} is neither in the store nor in a --cache-from cache",
            blob.digest
        ));
    };
    if target.copy_from(backend.as_ref(), blob)? || target.has_blob(blob)? {
        return Ok(());
    }
    remote.fetch(store, blob)?;
    target.push_blob(store, blob)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Layer;
    use kiln_oci::image::media_type;

    /// A registry tag in memory; `intruder`'s config replaces the tag right
    /// after the next write, as another runner's write of its own merge
    /// (made from what it read before ours) would.
    #[derive(Debug, Default)]
    struct FakeRegistry {
        manifest: Mutex<Option<Vec<u8>>>,
        blobs: Mutex<HashMap<Digest, Vec<u8>>>,
        intruder: Mutex<Option<CacheConfig>>,
        writes: Mutex<u32>,
    }

    impl FakeRegistry {
        fn put(&self, bytes: Vec<u8>) -> BlobRef {
            let desc = BlobRef {
                media_type: format::CONFIG_MEDIA_TYPE.into(),
                digest: Digest::of(&bytes),
                size: bytes.len() as u64,
                annotations: Default::default(),
            };
            self.blobs.lock().unwrap().insert(desc.digest, bytes);
            desc
        }

        fn config(&self) -> CacheConfig {
            read_config(self).unwrap().unwrap().0
        }
    }

    impl Backend for FakeRegistry {
        fn read_manifest(&self) -> Result<Option<(Vec<u8>, Digest)>, String> {
            Ok(self
                .manifest
                .lock()
                .unwrap()
                .clone()
                .map(|m| (m.clone(), Digest::of(&m))))
        }
        fn read_blob(&self, desc: &BlobRef) -> Result<Vec<u8>, String> {
            self.blobs
                .lock()
                .unwrap()
                .get(&desc.digest)
                .cloned()
                .ok_or_else(|| "no such blob".to_string())
        }
        fn has_blob(&self, desc: &BlobRef) -> Result<bool, String> {
            Ok(self.blobs.lock().unwrap().contains_key(&desc.digest))
        }
        fn fetch(&self, _: &Store, _: &BlobRef) -> Result<(), String> {
            Err("not used".into())
        }
        fn push_blob(&self, store: &Store, desc: &BlobRef) -> Result<(), String> {
            let data = store.read_blob(&desc.digest).map_err(|e| e.to_string())?;
            self.blobs.lock().unwrap().insert(desc.digest, data);
            Ok(())
        }
        fn write_manifest(&self, bytes: Vec<u8>) -> Result<(), String> {
            *self.writes.lock().unwrap() += 1;
            *self.manifest.lock().unwrap() = Some(bytes);
            if let Some(other) = self.intruder.lock().unwrap().take() {
                let desc = self.put(other.to_bytes());
                *self.manifest.lock().unwrap() = Some(format::manifest(&desc, &other.layers()));
            }
            Ok(())
        }
        fn racy(&self) -> bool {
            true
        }
    }

    fn usage(store: &Store, steps: &[&str]) -> CacheUsage {
        let mut u = CacheUsage::default();
        let mut parent = Digest::of(b"base");
        for s in steps {
            let data = s.as_bytes();
            let digest = store.put_blob(data).unwrap();
            let key = Digest::of(format!("key {s}").as_bytes());
            u.steps.insert(
                key,
                UsedStep {
                    parent,
                    record: StepRecord {
                        layer: Layer {
                            blob: BlobRef {
                                media_type: media_type::OCI_LAYER.into(),
                                digest,
                                size: data.len() as u64,
                                annotations: Default::default(),
                            },
                            diff_id: digest,
                        },
                        created: 7,
                        parent: None,
                        inputs: Default::default(),
                    },
                },
            );
            parent = key;
        }
        u.final_key = Some(parent);
        u
    }

    fn spec(mode: CacheMode) -> CacheExport {
        CacheExport {
            location: CacheLocation::Registry("fake/cache:1".into()),
            mode,
            max_age: None,
            max_entries: None,
            ignore_error: false,
        }
    }

    /// Another runner's write lands right after ours and lacks our records:
    /// the export reads the tag again, merges once more, and both stay.
    #[test]
    fn an_export_replaced_by_another_writer_merges_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let fake = FakeRegistry::default();
        let theirs = usage(&store, &["their step"]).config(CacheMode::Max, 1);
        for l in theirs.layers() {
            fake.push_blob(&store, &l).unwrap();
        }
        *fake.intruder.lock().unwrap() = Some(theirs.clone());
        let mine = usage(&store, &["my step 1", "my step 2"]);
        let mut warnings = Vec::new();
        let report = export_to(
            &store,
            &fake,
            &spec(CacheMode::Max),
            &mine,
            None,
            &mut |w| warnings.push(w),
        )
        .unwrap();
        assert_eq!(report.writes, 2, "{warnings:?}");
        assert!(
            warnings.iter().any(|w| w.contains("merging again")),
            "{warnings:?}"
        );
        let now = fake.config();
        assert_eq!(now.records.len(), 3);
        assert!(now.contains_all(&theirs));
        for l in now.layers() {
            assert!(fake.has_blob(&l).unwrap(), "layer {} uploaded", l.digest);
        }
    }

    /// Exports add to what is there; mode=min exports the final chain only;
    /// max-entries keeps the newest.
    #[test]
    fn exports_add_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let fake = FakeRegistry::default();
        let mut first = usage(&store, &["a1", "a2"]);
        // A step of another stage, not in the final chain.
        let side = usage(&store, &["side"]);
        first.steps.extend(side.steps);
        let mut ignore = |_: String| {};
        export_to(
            &store,
            &fake,
            &spec(CacheMode::Min),
            &first,
            None,
            &mut ignore,
        )
        .unwrap();
        assert_eq!(fake.config().records.len(), 2, "min: the final chain");
        export_to(
            &store,
            &fake,
            &spec(CacheMode::Max),
            &first,
            None,
            &mut ignore,
        )
        .unwrap();
        assert_eq!(fake.config().records.len(), 3, "max: every step");
        let second = usage(&store, &["b1"]);
        let mut s = spec(CacheMode::Max);
        s.max_entries = Some(2);
        // Older entries: pruned first.
        let mut old = fake.config();
        for e in old.records.values_mut() {
            e.last_used -= 100;
        }
        let desc = fake.put(old.to_bytes());
        *fake.manifest.lock().unwrap() = Some(format::manifest(&desc, &old.layers()));
        export_to(&store, &fake, &s, &second, None, &mut ignore).unwrap();
        let now = fake.config();
        assert_eq!(now.records.len(), 2);
        assert!(now.contains_all(&second.config(CacheMode::Max, 0)));
    }
}
