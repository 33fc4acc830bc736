//! Snapshots: one directory per layer, in overlayfs upperdir format, stacked as
//! overlay lowerdirs to give a step its root filesystem.
//!
//! A snapshot is keyed by the layer's diff_id (the digest of its uncompressed
//! tar), so the same layer used by several images or stages is extracted once.
//! A blob is extracted under the diff_id its image's config claims only after
//! the extracting pass has hashed its uncompressed stream to that diff_id (and
//! checked the blob's size and compression against its descriptor): an image
//! whose config names another image's diff_ids cannot replace that image's
//! snapshots.
//! A layer pulled or loaded into the store is extracted on first use with
//! whiteouts turned into overlay whiteouts (0/0 character devices, opaque
//! xattrs); a layer the build made itself (a RUN's upperdir, a COPY's output)
//! is moved into place as it is, so nothing is extracted again.
//!
//! Layout under the store root:
//!
//! ```text
//! snapshots/<diff_id hex>/   one layer's content (overlay upperdir format):
//!                            a layer extracted from a blob, or made by a step
//!                            of the copying snapshotter
//! snapshots/<diff_id hex>    (a symlink) → step-…: a layer a step made
//! snapshots/step-<unique>/   a layer a step made, stacked by the next steps
//!                            while its diff_id is computed (see [`step_layer`]);
//!                            one no diff_id names is removed by `kiln prune`
//! snapshots/empty/           an empty lower for steps on `FROM scratch`
//! snapshots/tmp/             work dirs of running steps (upper + overlay work),
//!                            claims of layers being extracted (<diff_id hex>.extracting)
//! ```

pub(crate) mod copied;
pub mod merged_view;
pub mod step_layer;

pub use step_layer::{PendingLayer, StageLayer};

use crate::claim::Claim;
use kiln_oci::digest::Digest;
use kiln_oci::layer::{apply_image_layer, ApplyOptions, WhiteoutMode};
use kiln_oci::store::{BlobRef, Store};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One layer of an image or a build: its stored blob and its diff_id.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layer {
    pub blob: BlobRef,
    pub diff_id: Digest,
}

/// The snapshot directories of a store.
#[derive(Clone, Debug)]
pub struct Snapshots {
    root: PathBuf,
    /// Where layer blobs the store lacks can come from (`--cache-from`, the
    /// registry a base image's layers were left in).
    fetcher: Option<std::sync::Arc<dyn BlobFetcher>>,
}

/// Brings a layer blob the store lacks into it, the first time its snapshot
/// is needed (a layer known from an imported cache, not downloaded until then).
pub trait BlobFetcher: Send + Sync + std::fmt::Debug {
    /// Stores `blob` if this fetcher knows where it is: `Ok(false)` if not.
    fn fetch(&self, store: &Store, blob: &BlobRef) -> Result<bool, String>;

    /// [`BlobFetcher::fetch`] of a layer's blob that may also extract the
    /// layer through `unpacker` while it streams in (the default only fetches;
    /// [`Snapshots::ensure`] extracts from the store what was not unpacked).
    fn fetch_unpacking(
        &self,
        store: &Store,
        layer: &Layer,
        unpacker: &dyn kiln_oci::registry::LayerUnpacker,
    ) -> Result<bool, String> {
        let _ = unpacker;
        self.fetch(store, &layer.blob)
    }
}

/// Fetchers tried in order: the first that knows a blob fetches it.
#[derive(Debug)]
pub struct Fetchers(pub Vec<std::sync::Arc<dyn BlobFetcher>>);

impl Fetchers {
    fn each(
        &self,
        mut f: impl FnMut(&dyn BlobFetcher) -> Result<bool, String>,
    ) -> Result<bool, String> {
        let mut last = None;
        for fetcher in &self.0 {
            match f(fetcher.as_ref()) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => last = Some(e),
            }
        }
        last.map_or(Ok(false), Err)
    }
}

impl BlobFetcher for Fetchers {
    fn fetch(&self, store: &Store, blob: &BlobRef) -> Result<bool, String> {
        self.each(|f| f.fetch(store, blob))
    }

    fn fetch_unpacking(
        &self,
        store: &Store,
        layer: &Layer,
        unpacker: &dyn kiln_oci::registry::LayerUnpacker,
    ) -> Result<bool, String> {
        self.each(|f| f.fetch_unpacking(store, layer, unpacker))
    }
}

/// Fetches a blob the store lacks from a registry repository kiln knows to
/// hold it (`kiln_oci::registry::sources`): the layers of an image that
/// `kiln build --push` left in the registry, as only a build cache had them.
#[derive(Debug)]
pub struct SourcesFetcher {
    pub registry: kiln_oci::registry::RegistryContext,
}

impl SourcesFetcher {
    /// `download` from each repository known to hold `blob` until one works.
    fn download_from_sources(
        &self,
        store: &Store,
        blob: &BlobRef,
        download: impl Fn(&kiln_oci::registry::Repo) -> Result<(), String>,
    ) -> Result<bool, String> {
        let mut last = None;
        for (registry, repository) in kiln_oci::registry::sources::all(store, &blob.digest) {
            let repo = kiln_oci::registry::Reference::parse(&format!("{registry}/{repository}"))
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    kiln_oci::registry::Repo::open(&self.registry, &r).map_err(|e| e.to_string())
                });
            match repo.and_then(|r| download(&r)) {
                Ok(()) => return Ok(true),
                Err(e) => last = Some(format!("{registry}/{repository}: {e}")),
            }
        }
        match last {
            Some(e) => Err(format!("fetching layer {}: {e}", blob.digest)),
            None => Ok(false),
        }
    }
}

impl BlobFetcher for SourcesFetcher {
    fn fetch(&self, store: &Store, blob: &BlobRef) -> Result<bool, String> {
        self.download_from_sources(store, blob, |r| {
            r.download(store, blob).map_err(|e| e.to_string())
        })
    }

    fn fetch_unpacking(
        &self,
        store: &Store,
        layer: &Layer,
        unpacker: &dyn kiln_oci::registry::LayerUnpacker,
    ) -> Result<bool, String> {
        self.download_from_sources(store, &layer.blob, |r| {
            r.download_unpacking(store, &layer.blob, &layer.diff_id, unpacker)
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot extract layer {diff_id}: {message}")]
    Extract { diff_id: Digest, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A directory under `snapshots/tmp/` removed when dropped (unless kept).
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// Removes a directory tree, making read-only directories writable first
/// (a step may leave `chmod 0555` directories behind).
pub(crate) fn remove_tree(path: &Path) {
    let removed = match fs::symlink_metadata(path) {
        Err(_) => return,
        Ok(md) if !md.is_dir() => fs::remove_file(path).is_ok(),
        Ok(_) => fs::remove_dir_all(path).is_ok(),
    };
    if removed {
        return;
    }
    fn make_writable(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(md) = fs::symlink_metadata(p) {
            if md.is_dir() {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                if let Ok(rd) = fs::read_dir(p) {
                    for e in rd.flatten() {
                        make_writable(&e.path());
                    }
                }
            }
        }
    }
    make_writable(path);
    let _ = fs::remove_dir_all(path);
}

impl Snapshots {
    /// The snapshots of the store rooted at `store_root`.
    pub fn open(store_root: &Path) -> Result<Snapshots, SnapshotError> {
        let root = store_root.join("snapshots");
        for d in [root.clone(), root.join("tmp"), root.join("empty")] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        Ok(Snapshots {
            root,
            fetcher: None,
        })
    }

    /// What a pull into `store` unpacks its layers into (see
    /// [`kiln_oci::registry::pull_with`]): the store's snapshots, when this
    /// process extracts layers as a build would (as root, or as root of kiln's
    /// user namespace); otherwise `None`, and layers are extracted on first use.
    /// `KILN_PULL_UNPACK=0` turns it off (a pull only to push elsewhere needs no
    /// snapshots; and it is the benchmarks' "before").
    pub fn for_pull(store: &Store) -> Option<Snapshots> {
        if !rustix::process::geteuid().is_root()
            || std::env::var_os("KILN_PULL_UNPACK").is_some_and(|v| v == "0")
        {
            return None;
        }
        Snapshots::open(store.root()).ok()
    }

    /// Fetches missing layer blobs through `fetcher` before extracting them.
    pub fn with_fetcher(mut self, fetcher: Option<std::sync::Arc<dyn BlobFetcher>>) -> Snapshots {
        self.fetcher = fetcher;
        self
    }

    /// Where the snapshot of the layer with this diff_id lives (whether or not
    /// it exists yet).
    pub fn path_of(&self, diff_id: &Digest) -> PathBuf {
        self.root.join(diff_id.hex())
    }

    /// The directory holding the snapshot of `diff_id`: [`Snapshots::path_of`],
    /// or the `step-…` directory that name is a symlink to (readers of a
    /// snapshot open it as a directory, not through a symlink).
    pub fn dir_of(&self, diff_id: &Digest) -> PathBuf {
        let path = self.path_of(diff_id);
        match fs::read_link(&path) {
            Ok(target) => self.root.join(target),
            Err(_) => path,
        }
    }

    /// The claim a layer's extraction holds (by [`Snapshots::ensure`] or a pull).
    fn claim_path(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{}.extracting", diff_id.hex()))
    }

    /// An empty directory to use as the only lower of a step on `FROM scratch`.
    pub fn empty(&self) -> PathBuf {
        self.root.join("empty")
    }

    /// A fresh work directory on the snapshots' filesystem (for an upperdir and
    /// overlay's workdir, or a scratch tree), removed when dropped.
    pub fn work_dir(&self) -> Result<WorkDir, SnapshotError> {
        let tmp = self.root.join("tmp");
        let dir = unique_dir(&tmp, "")?;
        Ok(WorkDir { path: dir })
    }

    /// The snapshot of `layer`, extracting the blob from `store` if this is the
    /// first time it is needed.
    ///
    /// Two stages or builds needing the same layer at once extract it once: the
    /// second waits for the first's claim, then finds the snapshot.
    pub fn ensure(&self, store: &Store, layer: &Layer) -> Result<PathBuf, SnapshotError> {
        let dest = self.path_of(&layer.diff_id);
        if dest.is_dir() {
            return Ok(self.dir_of(&layer.diff_id));
        }
        let claim_path = self.claim_path(&layer.diff_id);
        let _claim = Claim::acquire(&claim_path).map_err(io_err(&claim_path))?;
        if dest.is_dir() {
            return Ok(self.dir_of(&layer.diff_id));
        }
        if let Some(f) = self
            .fetcher
            .as_ref()
            .filter(|_| !store.has_blob(&layer.blob.digest))
        {
            // Extracted as it downloads where the fetcher can (under the
            // claim this holds); else from the stored blob below.
            let unpacker = Claimed(self);
            f.fetch_unpacking(store, layer, &unpacker)
                .map_err(|message| SnapshotError::Extract {
                    diff_id: layer.diff_id,
                    message,
                })?;
            if dest.is_dir() {
                return Ok(self.dir_of(&layer.diff_id));
            }
        }
        tracing::debug!(diff_id = %layer.diff_id, "extracting layer from the store");
        let work = self.work_dir()?;
        let tree = work.path().join("tree");
        fs::create_dir(&tree).map_err(io_err(&tree))?;
        // The snapshot is named by the diff_id the image claims: the content is
        // checked against it in the extracting pass, and a layer that is not what
        // its image says is never installed (the work dir is removed on drop).
        apply_image_layer(
            store,
            &layer.blob,
            &layer.diff_id,
            &tree,
            &extract_options(),
        )
        .map_err(|e| SnapshotError::Extract {
            diff_id: layer.diff_id,
            message: e.to_string(),
        })?;
        self.install(&tree, &layer.diff_id)?;
        Ok(self.dir_of(&layer.diff_id))
    }

    /// Moves a finished tree (a step's upperdir) into place as the snapshot of
    /// `diff_id`. If another build installed the same layer meanwhile, that one
    /// is kept and `tree` is removed.
    pub fn install(&self, tree: &Path, diff_id: &Digest) -> Result<PathBuf, SnapshotError> {
        let dest = self.path_of(diff_id);
        step_layer::remove_dangling(&dest).map_err(io_err(&dest))?;
        match fs::rename(tree, &dest) {
            Ok(()) => Ok(dest),
            Err(_) if dest.is_dir() => {
                remove_tree(tree);
                Ok(dest)
            }
            Err(e) => Err(SnapshotError::Io {
                path: dest,
                source: e,
            }),
        }
    }

    /// The lowerdirs for a filesystem made of `layers` (base first), top first
    /// as overlay wants them; layers are extracted as needed (in parallel).
    /// No layers gives the empty snapshot.
    ///
    /// A layer that occurs more than once (three `RUN true` give three empty
    /// layers; BuildKit gives every no-op RUN the same one) is stacked once, at
    /// its topmost place: overlay refuses a directory given twice, and the
    /// lower copy could not show anything anyway (see [`distinct_topmost`]).
    pub fn stack(&self, store: &Store, layers: &[Layer]) -> Result<Vec<PathBuf>, SnapshotError> {
        let layers: Vec<StageLayer> = layers.iter().cloned().map(StageLayer::Done).collect();
        self.stack_stage(store, &layers)
    }

    /// [`Snapshots::stack`] of a stage's layers: a layer still being hashed
    /// is its step's directory (once hashed, its snapshot by diff_id).
    pub fn stack_stage(
        &self,
        store: &Store,
        layers: &[StageLayer],
    ) -> Result<Vec<PathBuf>, SnapshotError> {
        enum Lower {
            Layer(Layer),
            Dir(PathBuf),
        }
        let resolved: Vec<Lower> = layers
            .iter()
            .rev()
            .map(|l| match l {
                StageLayer::Done(l) => Lower::Layer(l.clone()),
                StageLayer::Pending(p) => match l.done() {
                    Some(done) if self.path_of(&done.diff_id).is_dir() => Lower::Layer(done),
                    _ => Lower::Dir(p.dir().to_path_buf()),
                },
            })
            .collect();
        let top_first: Vec<&Lower> = resolved.iter().collect();
        let lowers = distinct_topmost(&top_first, |l| match l {
            Lower::Layer(l) => self.path_of(&l.diff_id),
            Lower::Dir(d) => d.clone(),
        });
        let missing: Vec<&Layer> = lowers
            .iter()
            .filter_map(|l| match l {
                Lower::Layer(l) if !self.path_of(&l.diff_id).is_dir() => Some(l),
                _ => None,
            })
            .collect();
        if missing.len() > 1 {
            let results: Vec<Result<PathBuf, SnapshotError>> = std::thread::scope(|s| {
                let handles: Vec<_> = missing
                    .iter()
                    .map(|l| s.spawn(move || self.ensure(store, l)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(SnapshotError::Extract {
                                diff_id: Digest::of(b""),
                                message: "extraction thread panicked".into(),
                            })
                        })
                    })
                    .collect()
            });
            for r in results {
                r?;
            }
        }
        let mut out = Vec::with_capacity(lowers.len().max(1));
        for l in lowers {
            out.push(match l {
                Lower::Layer(l) => self.ensure(store, l)?,
                Lower::Dir(d) => d.clone(),
            });
        }
        if out.is_empty() {
            out.push(self.empty());
        }
        Ok(out)
    }
}

/// A pull unpacks the layers it downloads straight into snapshots: each layer
/// under the same extraction claim [`Snapshots::ensure`] takes, so a build
/// that needs the layer meanwhile waits for it instead of extracting it again,
/// and a layer that fails either digest is never installed.
impl kiln_oci::registry::LayerUnpacker for Snapshots {
    fn options(&self) -> ApplyOptions {
        extract_options()
    }

    fn begin(
        &self,
        diff_id: &Digest,
    ) -> Result<Option<Box<dyn kiln_oci::registry::UnpackTarget>>, String> {
        if self.path_of(diff_id).is_dir() {
            return Ok(None);
        }
        let claim_path = self.claim_path(diff_id);
        let claim =
            Claim::acquire(&claim_path).map_err(|e| format!("{}: {e}", claim_path.display()))?;
        if self.path_of(diff_id).is_dir() {
            return Ok(None);
        }
        self.unpack_target(diff_id, Some(claim)).map(Some)
    }
}

impl Snapshots {
    /// A fresh tree (in its own work dir) that a layer is unpacked into while
    /// it downloads, installed as the snapshot of `diff_id` when committed;
    /// `claim`, when the unpacker does not hold the layer's claim already.
    fn unpack_target(
        &self,
        diff_id: &Digest,
        claim: Option<Claim>,
    ) -> Result<Box<dyn kiln_oci::registry::UnpackTarget>, String> {
        let work = self.work_dir().map_err(|e| e.to_string())?;
        let tree = work.path().join("tree");
        fs::create_dir(&tree).map_err(|e| format!("{}: {e}", tree.display()))?;
        Ok(Box::new(PulledLayer {
            snapshots: self.clone(),
            diff_id: *diff_id,
            tree,
            _work: work,
            _claim: claim,
        }))
    }
}

/// The unpacker [`Snapshots::ensure`] hands a fetcher: the layer's claim is
/// held by `ensure` already.
struct Claimed<'a>(&'a Snapshots);

impl kiln_oci::registry::LayerUnpacker for Claimed<'_> {
    fn options(&self) -> ApplyOptions {
        extract_options()
    }

    fn begin(
        &self,
        diff_id: &Digest,
    ) -> Result<Option<Box<dyn kiln_oci::registry::UnpackTarget>>, String> {
        if self.0.path_of(diff_id).is_dir() {
            return Ok(None);
        }
        self.0.unpack_target(diff_id, None).map(Some)
    }
}

/// A layer being unpacked while it downloads: its tree is removed (with its
/// work dir) unless it is committed, and its claim (none when the unpacker's
/// caller holds it, as in [`Claimed`]) is held until then.
struct PulledLayer {
    snapshots: Snapshots,
    diff_id: Digest,
    tree: PathBuf,
    _work: WorkDir,
    _claim: Option<Claim>,
}

impl kiln_oci::registry::UnpackTarget for PulledLayer {
    fn dir(&self) -> &Path {
        &self.tree
    }

    fn commit(self: Box<Self>) -> Result<(), String> {
        tracing::debug!(diff_id = %self.diff_id, "layer unpacked while it downloaded");
        self.snapshots
            .install(&self.tree, &self.diff_id)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// `items` (top first) without the lower occurrences of an item that occurs
/// again above them.
///
/// Why the merged view stays the same: everything a layer holds, its upper
/// copy holds at the same path, and the upper copy is found first. Layers in
/// between can only hide the lower copy (a file or whiteout over one of its
/// directories stops the lookup there), never show it. Keeping the lower copy
/// instead would be wrong: in A, B, A (base first) the top A must shadow B.
fn distinct_topmost<T, K: Eq + std::hash::Hash>(items: &[T], key: impl Fn(&T) -> K) -> Vec<T>
where
    T: Copy,
{
    let mut seen = std::collections::HashSet::new();
    items
        .iter()
        .copied()
        .filter(|i| seen.insert(key(i)))
        .collect()
}

/// How a layer becomes a snapshot: whiteouts as the overlay mounts of this
/// process read them (`trusted.*` xattrs only for host root, `user.*` in a
/// user namespace), owners restored wherever they can be: as host root, and as
/// root of a user namespace that maps more than one id (rootless kiln maps the
/// user's subordinate ids; with only id 0 mapped, files stay the caller's).
fn extract_options() -> ApplyOptions {
    let xattr = kiln_sandbox::userns::overlay_xattr();
    let chown = rustix::process::geteuid().is_root()
        && !kiln_sandbox::IdMap::for_current_user().is_single_id();
    ApplyOptions {
        whiteouts: WhiteoutMode::Overlay(xattr),
        chown,
    }
}

/// Creates a uniquely named directory in `parent`, its name starting with `prefix`.
fn unique_dir(parent: &Path, prefix: &str) -> Result<PathBuf, SnapshotError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = parent.join(format!("{prefix}{pid}-{nanos:x}-{n}"));
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(SnapshotError::Io { path: p, source: e }),
        }
    }
}

/// Removes from a step's upper directory (overlay upperdir format) every entry
/// that is the same as the one below it in `lower` (the stage's filesystem
/// before the step), so the step's layer holds only what changed, as BuildKit's
/// overlay differ writes it (`util/overlay` `Changes` with `sameDirent`): a
/// COPY that rewrites identical content, or a RUN that only copied a file or
/// directory up, adds nothing to the layer.
///
/// Same means BuildKit's `sameDirent`: equal mode (type and permission bits),
/// owner, device number and `security.capability`; for a non-directory also
/// size and mtime seconds, and then equal nanoseconds, or, when both have none
/// (a time from a tar), equal symlink targets or contents. A directory's mtime
/// does not count; it is removed only when nothing below it stayed. Whiteouts
/// and opaque directories are kept as they are, and entries below a directory
/// the lower filesystem does not have as a directory are all new, so they are
/// not compared.
///
/// Returns what it removed (paths relative to `upper`, each directory after
/// what was removed below it), with the file below each.
pub fn drop_unchanged(
    upper: &Path,
    lower: &crate::snapshot::merged_view::LayeredView,
) -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let mut dropped = Vec::new();
    if !lower.layers().is_empty() {
        drop_unchanged_in(upper, "", lower, &mut dropped)?;
    }
    Ok(dropped)
}

fn drop_unchanged_in(
    upper: &Path,
    rel: &str,
    lower: &crate::snapshot::merged_view::LayeredView,
    dropped: &mut Vec<(PathBuf, PathBuf)>,
) -> io::Result<()> {
    use kiln_oci::layer::overlay::{is_opaque_dir, is_whiteout_at};
    let dir = upper.join(rel);
    let mut names: Vec<std::ffi::OsString> = fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let Some(name) = name.to_str().map(str::to_string) else {
            continue;
        };
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let host = upper.join(&child);
        let md = fs::symlink_metadata(&host)?;
        if is_whiteout_at(&host, &md) {
            continue;
        }
        let Some(below) = lower.lookup(&format!("/{child}"), false)? else {
            continue;
        };
        if md.is_dir() {
            if is_opaque_dir(&host)? {
                continue;
            }
            if below.is_dir() {
                drop_unchanged_in(upper, &child, lower, dropped)?;
            }
            if same_dirent(&below.metadata, &below.host_path, &md, &host)?
                && fs::read_dir(&host)?.next().is_none()
            {
                fs::remove_dir(&host)?;
                dropped.push((PathBuf::from(child), below.host_path));
            }
        } else if same_dirent(&below.metadata, &below.host_path, &md, &host)? {
            fs::remove_file(&host)?;
            dropped.push((PathBuf::from(child), below.host_path));
        }
    }
    Ok(())
}

/// BuildKit's `sameDirent` (see [`drop_unchanged`]) of the lower file `a` at
/// `a_path` and the upper file `b` at `b_path`.
fn same_dirent(
    a: &fs::Metadata,
    a_path: &Path,
    b: &fs::Metadata,
    b_path: &Path,
) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt as _;
    if a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid() || a.rdev() != b.rdev() {
        return Ok(false);
    }
    if capability(a_path)? != capability(b_path)? {
        return Ok(false);
    }
    if b.is_dir() {
        return Ok(true);
    }
    if a.size() != b.size() || a.mtime() != b.mtime() {
        return Ok(false);
    }
    if a.mtime_nsec() != 0 || b.mtime_nsec() != 0 {
        return Ok(a.mtime_nsec() == b.mtime_nsec());
    }
    if b.file_type().is_symlink() {
        return Ok(fs::read_link(a_path)? == fs::read_link(b_path)?);
    }
    if a.size() == 0 || !b.is_file() {
        return Ok(true);
    }
    same_content(a_path, b_path)
}

fn capability(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, "security.capability", &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(buf)
        }
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(Vec::new()),
        Err(e) => Err(io::Error::from_raw_os_error(e.raw_os_error())),
    }
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    use std::io::Read as _;
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(fb.read(&mut bb[..1])? == 0);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod drop_unchanged_tests {
    use super::*;
    use crate::snapshot::merged_view::LayeredView;

    fn set_mtime(p: &Path, secs: i64, nsecs: i64) {
        let t = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: secs,
                tv_nsec: nsecs as _,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: secs,
                tv_nsec: nsecs as _,
            },
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            p,
            &t,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    /// Writes `content` at `root/rel` with the given mtime.
    fn file(root: &Path, rel: &str, content: &str, secs: i64, nsecs: i64) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        set_mtime(&p, secs, nsecs);
    }

    fn listing(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(root: &Path, rel: &str, out: &mut Vec<String>) {
            for e in fs::read_dir(root.join(rel)).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                out.push(child.clone());
                if fs::symlink_metadata(root.join(&child)).unwrap().is_dir() {
                    walk(root, &child, out);
                }
            }
        }
        walk(root, "", &mut out);
        out.sort();
        out
    }

    #[test]
    fn only_what_differs_from_below_stays() {
        let tmp = tempfile::tempdir().unwrap();
        let (lower, upper) = (tmp.path().join("lower"), tmp.path().join("upper"));
        for root in [&lower, &upper] {
            // Same content and time (with nanoseconds): unchanged.
            file(root, "same/copied", "data", 1_700_000_000, 5);
            // A directory with nothing changed below it goes too.
            file(root, "quiet/f", "q", 1_700_000_000, 5);
            // Times from a tar (no nanoseconds): decided by content.
            file(root, "tar/same", "abc", 1_600_000_000, 0);
            file(root, "tar/empty", "", 1_600_000_000, 0);
            std::os::unix::fs::symlink("target", root.join("tar/link")).unwrap();
            set_mtime(&root.join("tar/link"), 1_600_000_000, 0);
        }
        file(&lower, "tar/edited", "abc", 1_600_000_000, 0);
        file(&upper, "tar/edited", "abd", 1_600_000_000, 0);
        // Same content, touched: changed.
        file(&lower, "touched", "x", 1_700_000_000, 5);
        file(&upper, "touched", "x", 1_700_000_000, 6);
        // A new file in an existing directory keeps the directory.
        file(&upper, "same/new", "n", 1, 0);
        // A new directory is new with all below it.
        file(&upper, "fresh/deep/file", "f", 1_700_000_000, 5);
        // A changed mode is a change.
        file(&lower, "moded", "m", 1_700_000_000, 5);
        file(&upper, "moded", "m", 1_700_000_000, 5);
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(upper.join("moded"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::set_permissions(lower.join("moded"), fs::Permissions::from_mode(0o644)).unwrap();
        // Directories with the same mode, their times aside.
        for d in ["same", "tar", "fresh", "quiet"] {
            if lower.join(d).exists() {
                let mode = fs::metadata(lower.join(d)).unwrap().permissions();
                fs::set_permissions(upper.join(d), mode).unwrap();
            }
        }

        let dropped = drop_unchanged(&upper, &LayeredView::new(vec![lower.clone()])).unwrap();
        // What was removed, with the file below each (for the copying
        // snapshotter's tree, which gets those back).
        let want: Vec<(PathBuf, PathBuf)> = [
            "quiet/f",
            "quiet",
            "same/copied",
            "tar/empty",
            "tar/link",
            "tar/same",
        ]
        .iter()
        .map(|p| (PathBuf::from(p), lower.join(p)))
        .collect();
        assert_eq!(dropped, want);
        assert_eq!(
            listing(&upper),
            [
                "fresh",
                "fresh/deep",
                "fresh/deep/file",
                "moded",
                "same",
                "same/new",
                "tar",
                "tar/edited",
                "touched"
            ]
        );

        // Nothing below: everything is new.
        let only = tmp.path().join("only");
        file(&only, "a/b", "x", 1, 0);
        assert!(drop_unchanged(&only, &LayeredView::new(Vec::new()))
            .unwrap()
            .is_empty());
        assert_eq!(listing(&only), ["a", "a/b"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::image::media_type;
    use std::collections::BTreeMap;
    use std::io::Write;

    fn tar_with(name: &str, content: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, name, content).unwrap();
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn stored_layer(store: &Store, media: &str, blob: &[u8], diff_id: Digest) -> Layer {
        Layer {
            blob: BlobRef {
                media_type: media.into(),
                digest: store.put_blob(blob).unwrap(),
                size: blob.len() as u64,
                annotations: BTreeMap::new(),
            },
            diff_id,
        }
    }

    fn setup() -> (tempfile::TempDir, Store, Snapshots) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let snaps = Snapshots::open(store.root()).unwrap();
        (dir, store, snaps)
    }

    /// Nothing but what `ensure` left behind under `snapshots/` (work dirs are
    /// removed; `empty` and `tmp` always exist).
    fn snapshot_names(snaps: &Snapshots) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&snaps.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "tmp" && n != "empty")
            .collect();
        names.sort();
        assert_eq!(fs::read_dir(snaps.root.join("tmp")).unwrap().count(), 0);
        names
    }

    #[test]
    fn a_layer_is_extracted_under_its_verified_diff_id() {
        let (_d, store, snaps) = setup();
        let tar = tar_with("etc/os-release", b"genuine\n");
        let layer = stored_layer(
            &store,
            media_type::OCI_LAYER_GZIP,
            &gzip(&tar),
            Digest::of(&tar),
        );
        let path = snaps.ensure(&store, &layer).unwrap();
        assert_eq!(fs::read(path.join("etc/os-release")).unwrap(), b"genuine\n");
        assert_eq!(snapshot_names(&snaps), [Digest::of(&tar).hex()]);
    }

    /// While another stage or build extracts a layer, a second `ensure` of it
    /// waits and then uses that snapshot instead of extracting it again (the
    /// blob here is not even in the store: a second extraction would fail).
    #[test]
    fn a_layer_being_extracted_elsewhere_is_waited_for_not_extracted_again() {
        let (_d, store, snaps) = setup();
        let tar = tar_with("etc/os-release", b"genuine\n");
        let diff_id = Digest::of(&tar);
        let gz = gzip(&tar);
        let layer = Layer {
            blob: BlobRef {
                media_type: media_type::OCI_LAYER_GZIP.into(),
                digest: Digest::of(&gz),
                size: gz.len() as u64,
                annotations: BTreeMap::new(),
            },
            diff_id,
        };
        let elsewhere = snaps
            .root
            .join("tmp")
            .join(format!("{}.extracting", diff_id.hex()));
        let held = Claim::acquire(&elsewhere).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| snaps.ensure(&store, &layer));
            std::thread::sleep(std::time::Duration::from_millis(200));
            assert!(!waiter.is_finished(), "ensure did not wait for the claim");
            // The other extractor installs its tree, then lets go.
            let tree = snaps.work_dir().unwrap();
            fs::create_dir_all(tree.path().join("t/etc")).unwrap();
            fs::write(tree.path().join("t/etc/os-release"), b"genuine\n").unwrap();
            snaps.install(&tree.path().join("t"), &diff_id).unwrap();
            drop(held);
            let path = waiter.join().unwrap().unwrap();
            assert_eq!(path, snaps.path_of(&diff_id));
        });
        assert_eq!(snapshot_names(&snaps), [diff_id.hex()]);
    }

    /// An image whose config claims another image's diff_id for its own layer
    /// must not become that layer's snapshot (every later build on the genuine
    /// image would see the attacker's files).
    #[test]
    fn a_layer_whose_content_is_not_its_claimed_diff_id_is_refused() {
        let (_d, store, snaps) = setup();
        let genuine = tar_with("etc/os-release", b"genuine\n");
        let evil = tar_with("etc/os-release", b"attacker\n");
        let layer = stored_layer(
            &store,
            media_type::OCI_LAYER_GZIP,
            &gzip(&evil),
            Digest::of(&genuine),
        );
        let err = snaps.ensure(&store, &layer).unwrap_err().to_string();
        assert!(err.contains(&layer.blob.digest.to_string()), "{err}");
        assert!(err.contains(&Digest::of(&genuine).to_string()), "{err}");
        assert!(err.contains(&Digest::of(&evil).to_string()), "{err}");
        assert!(snapshot_names(&snaps).is_empty());
        assert!(!snaps.path_of(&Digest::of(&genuine)).exists());
    }

    #[test]
    fn an_empty_blob_is_not_a_gzip_layer() {
        let (_d, store, snaps) = setup();
        let layer = stored_layer(&store, media_type::DOCKER_LAYER_GZIP, b"", Digest::of(b""));
        let err = snaps.ensure(&store, &layer).unwrap_err().to_string();
        assert!(err.contains("gzip"), "{err}");
        assert!(snapshot_names(&snaps).is_empty());
    }

    #[test]
    fn a_truncated_compressed_layer_is_refused() {
        let (_d, store, snaps) = setup();
        // A tar with the zero padding GNU tar writes up to its record size (and
        // more): cutting the end cuts only padding and the compression trailer,
        // which the tar reader never needs to see.
        let mut tar = tar_with("bin/tool", &[7u8; 3000]);
        tar.resize(tar.len() + (1 << 20), 0);
        let gz = gzip(&tar);
        let cut = &gz[..gz.len() - 20];
        let layer = stored_layer(&store, media_type::OCI_LAYER_GZIP, cut, Digest::of(&tar));
        let err = snaps.ensure(&store, &layer).unwrap_err().to_string();
        assert!(err.contains(&Digest::of(&tar).to_string()), "{err}");
        assert!(snapshot_names(&snaps).is_empty());

        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        let cut = &zst[..zst.len() - 8];
        let layer = stored_layer(&store, media_type::OCI_LAYER_ZSTD, cut, Digest::of(&tar));
        let err = snaps.ensure(&store, &layer).unwrap_err().to_string();
        assert!(err.contains("incomplete") || err.contains("end"), "{err}");
        assert!(snapshot_names(&snaps).is_empty());
    }

    #[test]
    fn a_descriptor_size_that_is_not_the_blob_size_is_refused() {
        let (_d, store, snaps) = setup();
        let tar = tar_with("a", b"x");
        let mut layer = stored_layer(&store, media_type::OCI_LAYER, &tar, Digest::of(&tar));
        layer.blob.size = 1 << 62;
        let err = snaps.ensure(&store, &layer).unwrap_err().to_string();
        assert!(err.contains(&(1u64 << 62).to_string()), "{err}");
        assert!(snapshot_names(&snaps).is_empty());
    }

    #[test]
    fn repeated_layers_keep_their_topmost_place() {
        // Top first: A over B over A over base.
        assert_eq!(
            distinct_topmost(&["A", "B", "A", "base"], |s| *s),
            ["A", "B", "base"]
        );
        assert_eq!(
            distinct_topmost(&["E", "E", "E", "base"], |s| *s),
            ["E", "base"]
        );
        assert_eq!(distinct_topmost(&["B", "A", "B", "A"], |s| *s), ["B", "A"]);
        assert!(distinct_topmost::<&str, &str>(&[], |s| *s).is_empty());
    }
}
