//! The build cache in a registry or an OCI layout directory, shared by machines
//! that start empty (`--cache-from`, `--cache-to`).
//!
//! Import is lazy: [`RemoteCache::import`] reads each cache's manifest and
//! config only. The step cache ([`super::steps::StepCache::get`]) finds a key
//! there when the store has no record of it, and a hit needs its layer blob to
//! be in the store or still in the cache: a HEAD, made together with those of
//! the blobs of the records after it, 8 at a time, so the steps after it find
//! their answer waiting ([`presence`]; a blob the cache names but no longer has
//! is a miss, with a warning). A layer blob is fetched only through [`BlobFetcher::fetch`]: when
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
mod presence;
pub mod spec;

use crate::cache::steps::StepRecord;
use crate::snapshot::{BlobFetcher, Layer};
use backend::Backend;
use format::{CacheConfig, CacheEntry, LayerEntry, MemoEntry};
use kiln_oci::digest::Digest;
use kiln_oci::registry::RegistryContext;
use kiln_oci::store::{BlobRef, Store};
pub use spec::{CacheExport, CacheLocation, CacheMode};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// The caches of `--cache-from`, read: records and memos by key (the first
/// cache to have a key wins, as the flags are tried in order), and which cache
/// holds each layer blob.
#[derive(Debug, Default)]
pub struct RemoteCache {
    backends: Vec<(String, Arc<dyn Backend>)>,
    records: HashMap<Digest, (CacheEntry, usize)>,
    memos: HashMap<Digest, Digest>,
    blobs: HashMap<Digest, usize>,
    /// The records after each key (whose parent it is).
    children: HashMap<Digest, Vec<Digest>>,
    /// Every record's key, the most recently used first.
    by_recency: Vec<Digest>,
    /// Which layer blobs the caches still have (HEAD, nothing downloaded).
    presence: Arc<presence::Presence>,
    /// One fetch per blob at a time (stages extract in parallel).
    fetching: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
    warnings: Mutex<Vec<String>>,
}

/// The most records [`RemoteCache::neighbours`] looks at for one lookup.
const NEIGHBOUR_SCAN: usize = 1024;

impl RemoteCache {
    /// Reads the manifest and config of each cache; one that is missing,
    /// corrupt or not a kiln cache is a warning (`warn`) and adds nothing.
    pub fn import(
        locations: &[CacheLocation],
        ctx: &RegistryContext,
        warn: &mut dyn FnMut(String),
    ) -> RemoteCache {
        let mut backends = Vec::new();
        for loc in locations {
            let name = loc.to_string();
            match backend::open(loc, ctx) {
                Ok(b) => backends.push((name, Arc::from(b))),
                Err(e) => warn(format!("cache {name}: {e}; building without it")),
            }
        }
        RemoteCache::read(backends, warn)
    }

    /// [`RemoteCache::import`] of opened backends.
    fn read(
        backends: Vec<(String, Arc<dyn Backend>)>,
        warn: &mut dyn FnMut(String),
    ) -> RemoteCache {
        let mut rc = RemoteCache::default();
        for (name, backend) in backends {
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
        for (k, (e, _)) in &rc.records {
            if let Some(p) = e.parent {
                rc.children.entry(p).or_default().push(*k);
            }
        }
        for c in rc.children.values_mut() {
            c.sort();
        }
        rc.by_recency = rc.records.keys().copied().collect();
        rc.by_recency
            .sort_by_key(|k| (std::cmp::Reverse(rc.records[k].0.last_used), *k));
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
    /// store or still in that cache (checked once, without downloading it,
    /// along with the blobs of the records after it: see [`presence`]).
    pub fn record(&self, store: &Store, key: &Digest) -> Option<StepRecord> {
        let (entry, index) = self.records.get(key)?;
        let blob = entry.layer.blob();
        if store.blob_size(&blob.digest).ok() != Some(blob.size) {
            let (name, backend) = &self.backends[*index];
            let found = self.presence.check(&blob, backend.as_ref(), |unknown, n| {
                self.neighbours(store, key, unknown, n)
            });
            let missing = || {
                format!(
                    "cache {name}: layer {} of step {} is missing; the step runs",
                    blob.digest,
                    key.short()
                )
            };
            match found {
                presence::Found::Present => {}
                presence::Found::Missing { first } => {
                    if first {
                        self.warn(missing());
                    }
                    return None;
                }
                presence::Found::Failed(e) => {
                    self.warn(format!("cache {name}: layer {}: {e}", blob.digest));
                    self.warn(missing());
                    return None;
                }
            }
            // A push to this registry can have the blob mounted from here.
            if let Some(repo) = backend.registry_repo() {
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

    /// Up to `n` layer blobs worth checking along with `key`'s: those of the
    /// records after it (nearest first: the steps a build looks up next),
    /// then of the other records (the most recently used first), that the
    /// store lacks and for which `unknown` holds.
    fn neighbours(
        &self,
        store: &Store,
        key: &Digest,
        unknown: &dyn Fn(&Digest) -> bool,
        n: usize,
    ) -> Vec<presence::Check> {
        let mut below = VecDeque::from([*key]);
        let mut visited = HashSet::from([*key]);
        let descendants = std::iter::from_fn(|| {
            let k = below.pop_front()?;
            for c in self.children.get(&k).into_iter().flatten() {
                if visited.insert(*c) {
                    below.push_back(*c);
                }
            }
            Some(k)
        })
        .skip(1);
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for k in descendants
            .chain(self.by_recency.iter().copied())
            .take(NEIGHBOUR_SCAN)
        {
            if out.len() >= n {
                break;
            }
            let Some((e, index)) = self.records.get(&k) else {
                continue;
            };
            let d = e.layer.digest;
            if !seen.insert(d) || !unknown(&d) || store.blob_size(&d).ok() == Some(e.layer.size) {
                continue;
            }
            out.push((e.layer.blob(), Arc::clone(&self.backends[*index].1)));
        }
        out
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

    fn backend_of(&self, digest: &Digest) -> Option<&(String, Arc<dyn Backend>)> {
        self.blobs.get(digest).map(|i| &self.backends[*i])
    }

    fn warn(&self, w: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w);
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

    /// A registry whose HEADs are watched: how many are in flight at most,
    /// and how many each blob got. Until `gate` HEADs have been in flight at
    /// once, each waits (5 s at most, then the test fails on the maximum).
    /// A HEAD of `fail_speculative` from a background checking thread fails.
    #[derive(Debug)]
    struct Watched {
        fake: FakeRegistry,
        gate: usize,
        fail_speculative: Option<Digest>,
        heads: Mutex<Heads>,
        changed: std::sync::Condvar,
    }

    #[derive(Debug, Default)]
    struct Heads {
        in_flight: usize,
        max: usize,
        open: bool,
        calls: HashMap<Digest, u32>,
    }

    impl Watched {
        fn new(fake: FakeRegistry, gate: usize, fail_speculative: Option<Digest>) -> Watched {
            Watched {
                fake,
                gate,
                fail_speculative,
                heads: Mutex::default(),
                changed: std::sync::Condvar::new(),
            }
        }

        fn heads(&self) -> std::sync::MutexGuard<'_, Heads> {
            self.heads.lock().unwrap()
        }

        /// Waits (5 s at most) until `digest` has had a HEAD.
        fn wait_for_head(&self, digest: &Digest) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let mut h = self.heads();
            while !h.calls.contains_key(digest) {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                assert!(!left.is_zero(), "no HEAD of {digest}");
                h = self.changed.wait_timeout(h, left).unwrap().0;
            }
        }
    }

    impl Backend for Watched {
        fn read_manifest(&self) -> Result<Option<(Vec<u8>, Digest)>, String> {
            self.fake.read_manifest()
        }
        fn read_blob(&self, desc: &BlobRef) -> Result<Vec<u8>, String> {
            self.fake.read_blob(desc)
        }
        fn has_blob(&self, desc: &BlobRef) -> Result<bool, String> {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            {
                let mut h = self.heads();
                *h.calls.entry(desc.digest).or_default() += 1;
                h.in_flight += 1;
                h.max = h.max.max(h.in_flight);
                if h.in_flight >= self.gate {
                    h.open = true;
                }
                self.changed.notify_all();
                while !h.open {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        h.open = true;
                        break;
                    }
                    h = self.changed.wait_timeout(h, left).unwrap().0;
                }
            }
            let speculative = std::thread::current().name() == Some("kiln-cache-head");
            let r = if speculative && self.fail_speculative == Some(desc.digest) {
                Err("connection reset".into())
            } else {
                self.fake.has_blob(desc)
            };
            self.heads().in_flight -= 1;
            r
        }
        fn fetch(&self, store: &Store, desc: &BlobRef) -> Result<(), String> {
            self.fake.fetch(store, desc)
        }
        fn push_blob(&self, store: &Store, desc: &BlobRef) -> Result<(), String> {
            self.fake.push_blob(store, desc)
        }
        fn write_manifest(&self, bytes: Vec<u8>) -> Result<(), String> {
            self.fake.write_manifest(bytes)
        }
        fn racy(&self) -> bool {
            true
        }
    }

    /// A cache of a chain of `n` steps (keys in build order) and a side step
    /// on another branch below the fourth, exported from another store; the
    /// blobs of the steps in `absent` (indexes; `n` is the side step) are not
    /// in the registry.
    fn chain_cache(n: usize, absent: &[usize]) -> (FakeRegistry, Vec<Digest>, Vec<Digest>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let names: Vec<String> = (0..n).map(|i| format!("step {i}")).collect();
        let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let mut u = usage(&store, &names);
        let keys: Vec<Digest> = names
            .iter()
            .map(|s| Digest::of(format!("key {s}").as_bytes()))
            .collect();
        let side = usage(&store, &["side step"]);
        let (side_key, mut side_step) = side.steps.into_iter().next().unwrap();
        side_step.parent = keys[3];
        u.steps.insert(side_key, side_step);
        let config = u.config(CacheMode::Max, 5);
        let fake = FakeRegistry::default();
        let all: Vec<Digest> = keys.iter().chain([&side_key]).copied().collect();
        let blobs: Vec<Digest> = all.iter().map(|k| config.records[k].layer.digest).collect();
        for (i, k) in all.iter().enumerate() {
            if !absent.contains(&i) {
                fake.push_blob(&store, &config.records[k].layer.blob())
                    .unwrap();
            }
        }
        let desc = fake.put(config.to_bytes());
        *fake.manifest.lock().unwrap() = Some(format::manifest(&desc, &config.layers()));
        (fake, keys, blobs)
    }

    fn read(backend: Arc<dyn Backend>) -> RemoteCache {
        RemoteCache::read(vec![("fake/cache:1".into(), backend)], &mut |w| {
            panic!("{w}")
        })
    }

    /// The first hit's lookup has the blobs of the steps after it checked
    /// too, 8 HEADs in flight at once, each blob once; a blob the cache lacks
    /// is still a miss with one warning, given when its step is looked up;
    /// the side step's missing blob, checked but never asked for, warns
    /// nobody.
    #[test]
    fn hits_check_the_blobs_after_them_in_parallel() {
        let (fake, keys, blobs) = chain_cache(20, &[12, 20]);
        let watched = Arc::new(Watched::new(fake, presence::AT_ONCE, None));
        let rc = read(watched.clone());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (i, k) in keys.iter().enumerate() {
            let rec = rc.record(&store, k);
            assert_eq!(rec.is_none(), i == 12, "step {i}");
            if i == 12 {
                let w = rc.take_warnings();
                assert_eq!(w.len(), 1, "{w:?}");
                assert!(
                    w[0].contains(&format!("layer {} of step", blobs[12])),
                    "{w:?}"
                );
                assert!(w[0].contains("is missing; the step runs"), "{w:?}");
            }
        }
        assert!(rc.record(&store, &keys[12]).is_none());
        assert_eq!(rc.take_warnings(), Vec::<String>::new());
        let h = watched.heads();
        assert_eq!(h.max, presence::AT_ONCE, "HEADs in flight at once");
        for (i, d) in blobs.iter().enumerate() {
            assert_eq!(h.calls.get(d), Some(&1), "HEADs of step {i}'s blob");
        }
    }

    /// A speculative check that fails fails nothing: the step that needs
    /// the blob checks it again and hits; no warning.
    #[test]
    fn a_failed_speculative_check_is_checked_again_by_its_step() {
        let (fake, keys, blobs) = chain_cache(10, &[]);
        let watched = Arc::new(Watched::new(fake, 1, Some(blobs[5])));
        let rc = read(watched.clone());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(rc.record(&store, &keys[0]).is_some());
        watched.wait_for_head(&blobs[5]);
        for (i, k) in keys.iter().enumerate().skip(1) {
            assert!(rc.record(&store, k).is_some(), "step {i}");
        }
        assert_eq!(rc.take_warnings(), Vec::<String>::new());
        // The failed check, then the step's own.
        assert_eq!(watched.heads().calls.get(&blobs[5]), Some(&2));
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
