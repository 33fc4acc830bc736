//! The local content-addressed store.
//!
//! Layout under the store root (the root is itself a valid OCI image layout):
//!
//! ```text
//! oci-layout            {"imageLayoutVersion":"1.0.0"}
//! index.json            OCI image index: one descriptor per stored image, named by the
//!                       `org.opencontainers.image.ref.name` annotation (absent = untagged)
//! blobs/sha256/<hex>    every blob, named by the sha256 of its bytes
//! tmp/                  blobs being written (same filesystem, so commit is a rename);
//!                       `partial-<hex>`: an unfinished download of that blob, continued
//!                       by the next one
//! lock                  flock: shared while a process uses the store, exclusive for gc
//! index.lock            flock: exclusive while index.json is read-modified-written
//! ```
//!
//! Every write is atomic: data goes to a file in `tmp/`, is fsynced, renamed under its
//! digest name and the directory is fsynced, so a killed writer never leaves a partial
//! blob under a digest name. Whatever a dead writer left in `tmp/` is removed by [`Store::gc`].

use crate::digest::{Digest, Hasher};
use crate::json::canonical_json;
use crate::reference::ImageName;
use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The annotation that names an image in an OCI image layout's index.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd and Docker use for the full image name in an index.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Reading what was to be stored failed (the source, not the store).
    #[error("reading: {0}")]
    Input(#[source] io::Error),
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    #[error("no such image: {0}")]
    ImageNotFound(String),
    #[error("image reference {0:?} matches more than one image; use more digits of the id")]
    Ambiguous(String),
    #[error("malformed {what} {digest}: {message}")]
    Malformed {
        what: &'static str,
        digest: Digest,
        message: String,
    },
    #[error("malformed store index {path}: {source}")]
    Index {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// A descriptor of something stored: what the index records for each image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobRef {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One entry of the store's image index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredImage {
    /// `None` for an image that was loaded without a name (docker shows `<none>`).
    pub name: Option<ImageName>,
    /// The manifest (or index) of the image.
    pub target: BlobRef,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexFile {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<BlobRef>,
}

/// What [`Store::gc`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub removed_blobs: Vec<Digest>,
    pub reclaimed_bytes: u64,
    pub removed_temp_files: usize,
}

/// What [`Store::verify`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: usize,
    /// Blobs whose content does not hash to their name.
    pub corrupt: Vec<Digest>,
    /// Blobs referenced by a stored image but absent.
    pub missing: Vec<Digest>,
    /// Files under `blobs/sha256/` whose name is not a digest.
    pub stray_files: Vec<PathBuf>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty() && self.stray_files.is_empty()
    }
}

/// An open store. Holds a shared lock on the store for its whole life, so that no
/// garbage collection in another process can remove blobs this process is writing
/// or about to tag.
pub struct Store {
    root: PathBuf,
    lock: File,
    /// Blob writes skip their own fsyncs ([`Store::defer_sync`]); one `syncfs`
    /// before the index next changes makes them durable together.
    deferred: std::sync::atomic::AtomicBool,
    /// Blobs were written without fsync since the last [`Store::sync`].
    unsynced: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

/// The store root when none is given: `$KILN_ROOT`, else `/var/lib/kiln` for root,
/// else `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`.
pub fn default_root() -> PathBuf {
    if let Some(r) = std::env::var_os("KILN_ROOT").filter(|v| !v.is_empty()) {
        return PathBuf::from(r);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/kiln");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("kiln");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/kiln")
}

fn flock(file: &File, op: FlockOperation, path: &Path) -> Result<()> {
    loop {
        match rustix::fs::flock(file, op) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io_err("locking", path)(e.into())),
        }
    }
}

/// fsync a directory so a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Create a fresh, exclusively created file in `dir` (used for every write into the store).
pub(crate) fn create_temp(dir: &Path, prefix: &str) -> Result<(File, PathBuf)> {
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("creating", &path)(e)),
        }
    }
}

impl Store {
    /// Open (creating if needed) the store at `root` and take its shared lock.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for dir in [root.join("blobs/sha256"), root.join("tmp")] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err("opening", &lock_path))?;
        flock(&lock, FlockOperation::LockShared, &lock_path)?;
        let store = Store {
            root,
            lock,
            deferred: std::sync::atomic::AtomicBool::new(false),
            unsynced: std::sync::atomic::AtomicBool::new(false),
        };
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            store.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// From now on, committing a blob renames it into place without the two
    /// fsyncs (file and directory) each commit otherwise costs; [`Store::sync`]
    /// makes all of them durable with one `syncfs`, and the index is never
    /// written before that. For a build, which commits a blob per step. A
    /// killed process still never leaves a partial blob under a digest name
    /// (the data is complete before the rename); only a power loss before the
    /// sync can lose the newest blobs, and then no image names them.
    pub fn defer_sync(&self) {
        self.deferred
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes every blob written since the last sync durable (one `syncfs` of
    /// the store's filesystem); nothing to do when none was deferred.
    pub fn sync(&self) -> Result<()> {
        if self
            .unsynced
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            rustix::fs::syncfs(&self.lock)
                .map_err(|e| io_err("syncing the filesystem of", &self.root)(io::Error::from(e)))?;
        }
        Ok(())
    }

    fn sync_deferred(&self) -> bool {
        let d = self.deferred.load(std::sync::atomic::Ordering::SeqCst);
        if d {
            self.unsynced
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        d
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    /// Where the blob named `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Size in bytes of a stored blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound(*digest)),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    /// Atomically replace `path` (inside the store root) with `data`.
    pub(crate) fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<()> {
        let (mut f, tmp) = create_temp(&self.tmp_dir(), "file")?;
        let res = f
            .write_all(data)
            .and_then(|_| f.sync_all())
            .map_err(io_err("writing", &tmp))
            .and_then(|_| fs::rename(&tmp, path).map_err(io_err("renaming into", path)));
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res?;
        sync_dir(path.parent().unwrap_or(&self.root))
    }

    /// Start writing a blob; its name is its digest, known when it is committed.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>> {
        let (file, path) = create_temp(&self.tmp_dir(), "blob")?;
        Ok(BlobWriter {
            store: self,
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            temp_path: path,
            hasher: Hasher::new(),
            size: 0,
            expected: None,
            resumable: false,
        })
    }

    /// Where an unfinished download of the blob `digest` is kept: in `tmp/`, named
    /// by the digest, so that the next download of that blob continues it.
    pub fn partial_blob_path(&self, digest: &Digest) -> PathBuf {
        self.tmp_dir().join(format!("partial-{}", digest.hex()))
    }

    /// A writer for the blob `digest` (of `size` bytes) that continues what an
    /// earlier download left at [`Store::partial_blob_path`], in this process or
    /// in one that was killed: the bytes already there are read back through the
    /// hasher ([`BlobWriter::size`] says how many; more than `size` are dropped),
    /// and [`BlobWriter::commit`] checks the whole content against `digest`,
    /// removing the file if it does not match. Dropped without a commit, the
    /// writer keeps what it wrote there for the next attempt ([`Store::gc`]
    /// removes it). While one writer has the file, another (a concurrent pull
    /// of the same blob) gets a fresh temporary file instead.
    pub fn resumable_blob_writer(&self, digest: &Digest, size: u64) -> Result<BlobWriter<'_>> {
        use std::io::{Seek, SeekFrom};
        let path = self.partial_blob_path(digest);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut w = self.blob_writer()?;
                w.expect(*digest);
                return Ok(w);
            }
            Err(e) => return Err(io_err("locking", &path)(e.into())),
        }
        let mut hasher = Hasher::new();
        let have = file.metadata().map_err(io_err("reading", &path))?.len();
        let have = if have > size {
            file.set_len(0).map_err(io_err("truncating", &path))?;
            0
        } else {
            let copied = io::copy(&mut (&mut file).take(have), &mut hasher)
                .map_err(io_err("reading", &path))?;
            if copied != have {
                file.set_len(0).map_err(io_err("truncating", &path))?;
                hasher = Hasher::new();
                0
            } else {
                have
            }
        };
        file.seek(SeekFrom::Start(have))
            .map_err(io_err("reading", &path))?;
        Ok(BlobWriter {
            store: self,
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            temp_path: path,
            hasher,
            size: have,
            expected: Some(*digest),
            resumable: true,
        })
    }

    /// Store `data` as a blob and return its digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest> {
        let mut w = self.blob_writer()?;
        w.write_all(data).map_err(io_err("writing", &w.temp_path))?;
        Ok(w.commit()?.0)
    }

    /// Copy everything from `reader` into a blob, checking it against `expected` if
    /// given. A failure to read is [`StoreError::Input`].
    pub fn put_blob_from(
        &self,
        mut reader: impl Read,
        expected: Option<Digest>,
    ) -> Result<(Digest, u64)> {
        let mut w = self.blob_writer()?;
        w.expected = expected;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::Input(e)),
            };
            w.write_all(&buf[..n])
                .map_err(io_err("writing", &w.temp_path))?;
        }
        w.commit()
    }

    /// Open a blob without checking its content (use for large blobs whose digest a
    /// consumer checks itself, or after [`Store::verify_blob`]).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound(*digest)
            } else {
                io_err("opening", &path)(e)
            }
        })
    }

    /// Open a blob for streaming; reading it to the end fails with
    /// [`io::ErrorKind::InvalidData`] if the content does not match the digest.
    pub fn open_blob_verified(&self, digest: &Digest) -> Result<VerifiedReader<File>> {
        Ok(VerifiedReader::new(self.open_blob(digest)?, *digest))
    }

    /// Read a whole blob, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let data = fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound(*digest)
            } else {
                io_err("reading", &path)(e)
            }
        })?;
        let actual = Digest::of(&data);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(data)
    }

    /// Re-hash one blob and compare with its name.
    pub fn verify_blob(&self, digest: &Digest) -> Result<()> {
        let mut r = self.open_blob(digest)?;
        let mut h = Hasher::new();
        io::copy(&mut r, &mut h).map_err(io_err("reading", &self.blob_path(digest)))?;
        let actual = h.finish();
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(())
    }

    /// Re-hash every blob and check that every stored image's blobs are present.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for entry in self.list_blob_files()? {
            match entry {
                Ok((digest, _)) => {
                    report.checked += 1;
                    match self.verify_blob(&digest) {
                        Ok(()) => {}
                        Err(StoreError::DigestMismatch { .. }) => report.corrupt.push(digest),
                        Err(e) => return Err(e),
                    }
                }
                Err(path) => report.stray_files.push(path),
            }
        }
        let mut missing = BTreeSet::new();
        for image in self.images()? {
            self.walk_reachable(&image.target, &mut BTreeSet::new(), &mut missing)?;
        }
        report.missing = missing.into_iter().collect();
        Ok(report)
    }

    /// Every file under `blobs/sha256`: `Ok((digest, size))`, or `Err(path)` for a stray name.
    fn list_blob_files(&self) -> Result<Vec<Result<(Digest, u64), PathBuf>>> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let name = entry.file_name();
            let parsed = name
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok());
            match parsed {
                Some(d) => {
                    let len = entry
                        .metadata()
                        .map_err(io_err("reading", &entry.path()))?
                        .len();
                    out.push(Ok((d, len)));
                }
                None => out.push(Err(entry.path())),
            }
        }
        out.sort_by(|a, b| match (a, b) {
            (Ok(x), Ok(y)) => x.0.cmp(&y.0),
            (Err(x), Err(y)) => x.cmp(y),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        });
        Ok(out)
    }

    // ----- the image index -----

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// All stored images, in index order (sorted by name; untagged last by digest).
    pub fn images(&self) -> Result<Vec<StoredImage>> {
        let path = self.index_path();
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        let index: IndexFile =
            serde_json::from_slice(&data).map_err(|source| StoreError::Index { path, source })?;
        Ok(index
            .manifests
            .into_iter()
            .map(|mut target| {
                let name = target
                    .annotations
                    .remove(REF_NAME_ANNOTATION)
                    .and_then(|n| n.parse::<ImageName>().ok());
                StoredImage { name, target }
            })
            .collect())
    }

    /// Read-modify-write the index under the index lock, atomically.
    fn update_index<T>(&self, f: impl FnOnce(&mut Vec<StoredImage>) -> Result<T>) -> Result<T> {
        let lock_path = self.root.join("index.lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err("opening", &lock_path))?;
        flock(&lock, FlockOperation::LockExclusive, &lock_path)?;
        // The index must never name a blob that is not durable yet.
        self.sync()?;
        let mut images = self.images()?;
        let out = f(&mut images)?;
        images.sort_by(|a, b| match (&a.name, &b.name) {
            (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.target.digest.cmp(&b.target.digest),
        });
        let manifests = images
            .into_iter()
            .map(|img| {
                let mut t = img.target;
                if let Some(n) = img.name {
                    t.annotations
                        .insert(REF_NAME_ANNOTATION.to_string(), n.to_string());
                }
                t
            })
            .collect();
        let index = IndexFile {
            schema_version: 2,
            media_type: Some(crate::image::media_type::OCI_INDEX.to_string()),
            manifests,
        };
        self.write_atomic(&self.index_path(), &canonical_json(&index))?;
        drop(lock);
        Ok(out)
    }

    /// Point `name` at `target` (replacing what it named before). The target's blobs
    /// must already be stored.
    pub fn tag(&self, name: &ImageName, target: BlobRef) -> Result<()> {
        if !self.has_blob(&target.digest) {
            return Err(StoreError::BlobNotFound(target.digest));
        }
        self.update_index(|images| {
            images.retain(|i| i.name.as_ref() != Some(name));
            // A dangling entry of the same image is now named.
            images.retain(|i| !(i.name.is_none() && i.target.digest == target.digest));
            let mut target = target;
            target.annotations.remove(REF_NAME_ANNOTATION);
            images.push(StoredImage {
                name: Some(name.clone()),
                target,
            });
            Ok(())
        })
    }

    /// Record an image without a name (kept until removed by digest).
    pub fn add_untagged(&self, target: BlobRef) -> Result<()> {
        if !self.has_blob(&target.digest) {
            return Err(StoreError::BlobNotFound(target.digest));
        }
        self.update_index(|images| {
            if !images.iter().any(|i| i.target.digest == target.digest) {
                images.push(StoredImage { name: None, target });
            }
            Ok(())
        })
    }

    /// Remove the name `name`; returns what it pointed at.
    pub fn untag(&self, name: &ImageName) -> Result<BlobRef> {
        self.update_index(|images| {
            let pos = images
                .iter()
                .position(|i| i.name.as_ref() == Some(name))
                .ok_or_else(|| StoreError::ImageNotFound(name.to_string()))?;
            Ok(images.remove(pos).target)
        })
    }

    /// Remove every index entry whose target is `digest` (all its names); returns
    /// the names removed.
    pub fn remove_image(&self, digest: &Digest) -> Result<Vec<Option<ImageName>>> {
        self.update_index(|images| {
            let mut removed = Vec::new();
            images.retain(|i| {
                if i.target.digest == *digest {
                    removed.push(i.name.clone());
                    false
                } else {
                    true
                }
            });
            if removed.is_empty() {
                return Err(StoreError::ImageNotFound(digest.to_string()));
            }
            Ok(removed)
        })
    }

    /// The image named `name`.
    pub fn resolve(&self, name: &ImageName) -> Result<BlobRef> {
        self.images()?
            .into_iter()
            .find(|i| i.name.as_ref() == Some(name))
            .map(|i| i.target)
            .ok_or_else(|| StoreError::ImageNotFound(name.to_string()))
    }

    // ----- garbage collection -----

    /// Add `target` and every blob it references (manifest → config + layers,
    /// index → manifests) to `seen`; referenced blobs that are absent go to `missing`.
    fn walk_reachable(
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
        if !crate::image::media_type::is_manifest_or_index(&target.media_type) {
            return Ok(());
        }
        let data = self.read_blob(&target.digest)?;
        for child in crate::image::referenced_blobs(&data, &target.digest)? {
            if crate::image::media_type::is_manifest_or_index(&child.media_type) {
                self.walk_reachable(&child, seen, missing)?;
            } else {
                seen.insert(child.digest);
                if !self.has_blob(&child.digest) {
                    missing.insert(child.digest);
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
        keep.extend(extra.iter().copied());
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

    /// A private scratch directory under `tmp/` (same filesystem as the blobs),
    /// removed when the returned guard drops.
    pub fn scratch_dir(&self) -> Result<ScratchDir> {
        let (f, path) = create_temp(&self.tmp_dir(), "scratch")?;
        drop(f);
        fs::remove_file(&path).map_err(io_err("creating", &path))?;
        fs::create_dir(&path).map_err(io_err("creating", &path))?;
        Ok(ScratchDir(path))
    }
}

/// A directory removed (recursively) on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Streams a new blob into the store, hashing as it writes. Nothing is visible under
/// a digest name until [`BlobWriter::commit`]; dropping the writer discards the data.
pub struct BlobWriter<'a> {
    store: &'a Store,
    file: Option<io::BufWriter<File>>,
    temp_path: PathBuf,
    hasher: Hasher,
    size: u64,
    expected: Option<Digest>,
    /// Keep the file when dropped uncommitted ([`Store::resumable_blob_writer`]).
    resumable: bool,
}

impl BlobWriter<'_> {
    /// Drops what was written so far and starts the blob again from nothing.
    pub fn restart(&mut self) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        let path = self.temp_path.clone();
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io_err("writing", &path)(io::Error::other("already committed")))?;
        file.flush().map_err(io_err("writing", &path))?;
        let f = file.get_mut();
        f.set_len(0).map_err(io_err("truncating", &path))?;
        f.seek(SeekFrom::Start(0))
            .map_err(io_err("truncating", &path))?;
        self.hasher = Hasher::new();
        self.size = 0;
        Ok(())
    }

    /// Refuse to commit unless the content hashes to `digest`.
    pub fn expect(&mut self, digest: Digest) -> &mut Self {
        self.expected = Some(digest);
        self
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Make the blob durable and visible under its digest; returns (digest, size).
    /// If the blob already exists the new copy is discarded.
    pub fn commit(mut self) -> Result<(Digest, u64)> {
        let file = self.file.take().expect("commit consumes the writer");
        let file = file
            .into_inner()
            .map_err(|e| io_err("writing", &self.temp_path)(e.into_error()))?;
        let deferred = self.store.sync_deferred();
        if !deferred {
            file.sync_all()
                .map_err(io_err("syncing", &self.temp_path))?;
        }
        drop(file);
        let digest = std::mem::take(&mut self.hasher).finish();
        if let Some(expected) = self.expected {
            if expected != digest {
                let _ = fs::remove_file(&self.temp_path);
                return Err(StoreError::DigestMismatch {
                    expected,
                    actual: digest,
                });
            }
        }
        let dest = self.store.blob_path(&digest);
        if dest.is_file() {
            fs::remove_file(&self.temp_path).map_err(io_err("removing", &self.temp_path))?;
        } else {
            fs::rename(&self.temp_path, &dest).map_err(io_err("renaming into", &dest))?;
            if !deferred {
                sync_dir(&self.store.blobs_dir())?;
            }
        }
        Ok((digest, self.size))
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if let Some(mut file) = self.file.take() {
            if self.resumable {
                // What was written stays for the next attempt to continue.
                let _ = file.flush();
            } else {
                let _ = fs::remove_file(&self.temp_path);
            }
        }
    }
}

/// A reader that hashes what passes through it and fails at end of stream if the
/// content does not match the expected digest.
pub struct VerifiedReader<R> {
    inner: R,
    hasher: Option<Hasher>,
    expected: Digest,
}

impl<R: Read> VerifiedReader<R> {
    pub fn new(inner: R, expected: Digest) -> Self {
        VerifiedReader {
            inner,
            hasher: Some(Hasher::new()),
            expected,
        }
    }
}

impl<R: Read> Read for VerifiedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(h) = self.hasher.take() {
                let actual = h.finish();
                if actual != self.expected {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "content does not match its digest: expected {}, got {actual}",
                            self.expected
                        ),
                    ));
                }
            }
        } else if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("root")).unwrap();
        (dir, s)
    }

    #[test]
    fn put_and_read_blob() {
        let (_d, s) = store();
        let d = s.put_blob(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(s.read_blob(&d).unwrap(), b"hello");
        assert_eq!(s.blob_size(&d).unwrap(), 5);
        // Writing the same content again is a no-op.
        assert_eq!(s.put_blob(b"hello").unwrap(), d);
        assert!(s.root().join("oci-layout").is_file());
    }

    #[test]
    fn deferred_sync_blobs_are_synced_before_the_index_names_them() {
        let (_d, s) = store();
        s.defer_sync();
        let d = s.put_blob(b"layer of a build step").unwrap();
        assert!(s.has_blob(&d), "the blob is in place at once");
        assert!(s.unsynced.load(std::sync::atomic::Ordering::SeqCst));
        let target = BlobRef {
            media_type: "application/octet-stream".into(),
            digest: d,
            size: 21,
            annotations: BTreeMap::new(),
        };
        s.add_untagged(target).unwrap();
        assert!(
            !s.unsynced.load(std::sync::atomic::Ordering::SeqCst),
            "writing the index synced the deferred blobs first"
        );
        assert!(s.verify().unwrap().is_ok());
    }

    #[test]
    fn writer_is_invisible_until_commit_and_cleans_up_on_drop() {
        let (_d, s) = store();
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"partial data").unwrap();
        let digest = Digest::of(b"partial data");
        assert!(!s.has_blob(&digest));
        drop(w);
        assert!(!s.has_blob(&digest));
        assert_eq!(fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(s.blobs_dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_resumable_writer_continues_what_an_earlier_one_left() {
        let (_d, s) = store();
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
        let digest = Digest::of(&data);
        let size = data.len() as u64;
        let mut w = s.resumable_blob_writer(&digest, size).unwrap();
        assert_eq!(w.size(), 0);
        w.write_all(&data[..300_000]).unwrap();
        // A concurrent writer of the same blob gets a file of its own.
        let other = s.resumable_blob_writer(&digest, size).unwrap();
        assert_eq!(other.size(), 0);
        assert_ne!(other.temp_path, w.temp_path);
        drop(other);
        drop(w); // a failed download: the part stays
        assert_eq!(
            fs::metadata(s.partial_blob_path(&digest)).unwrap().len(),
            300_000
        );
        let mut w = s.resumable_blob_writer(&digest, size).unwrap();
        assert_eq!(w.size(), 300_000);
        w.write_all(&data[300_000..]).unwrap();
        assert_eq!(w.commit().unwrap(), (digest, size));
        assert_eq!(s.read_blob(&digest).unwrap(), data);
        assert_eq!(fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_resumable_writer_drops_a_wrong_or_oversized_part() {
        let (_d, s) = store();
        let data = b"the real content of the blob".to_vec();
        let digest = Digest::of(&data);
        let size = data.len() as u64;
        // Longer than the blob: not a part of it.
        fs::write(s.partial_blob_path(&digest), vec![1u8; 100]).unwrap();
        let w = s.resumable_blob_writer(&digest, size).unwrap();
        assert_eq!(w.size(), 0);
        drop(w);
        // A wrong start: the commit fails and removes it.
        fs::write(s.partial_blob_path(&digest), b"THE").unwrap();
        let mut w = s.resumable_blob_writer(&digest, size).unwrap();
        assert_eq!(w.size(), 3);
        w.write_all(&data[3..]).unwrap();
        assert!(matches!(w.commit(), Err(StoreError::DigestMismatch { .. })));
        assert!(!s.partial_blob_path(&digest).exists());
        // restart() starts from nothing.
        fs::write(s.partial_blob_path(&digest), b"THE").unwrap();
        let mut w = s.resumable_blob_writer(&digest, size).unwrap();
        w.restart().unwrap();
        assert_eq!(w.size(), 0);
        w.write_all(&data).unwrap();
        assert_eq!(w.commit().unwrap(), (digest, size));
    }

    #[test]
    fn expected_digest_is_enforced() {
        let (_d, s) = store();
        let mut w = s.blob_writer().unwrap();
        w.expect(Digest::of(b"something else"));
        w.write_all(b"data").unwrap();
        assert!(matches!(w.commit(), Err(StoreError::DigestMismatch { .. })));
        assert!(!s.has_blob(&Digest::of(b"data")));
        assert_eq!(fs::read_dir(s.root().join("tmp")).unwrap().count(), 0);
        let ok = s.put_blob_from(&b"data"[..], Some(Digest::of(b"data")));
        assert_eq!(ok.unwrap(), (Digest::of(b"data"), 4));
    }

    #[test]
    fn corrupted_blob_fails_verification() {
        let (_d, s) = store();
        let d = s.put_blob(b"original content").unwrap();
        fs::write(s.blob_path(&d), b"tampered content").unwrap();
        assert!(matches!(
            s.read_blob(&d),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(s.verify_blob(&d).is_err());
        let mut r = s.open_blob_verified(&d).unwrap();
        let err = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let report = s.verify().unwrap();
        assert_eq!(report.corrupt, vec![d]);
        assert!(!report.is_ok());
    }

    #[test]
    fn verified_reader_accepts_good_content() {
        let (_d, s) = store();
        let d = s.put_blob(b"fine").unwrap();
        let mut out = Vec::new();
        s.open_blob_verified(&d)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"fine");
        assert!(s.verify().unwrap().is_ok());
    }

    fn manifest_with(s: &Store, config: &[u8], layers: &[&[u8]]) -> BlobRef {
        let c = s.put_blob(config).unwrap();
        let layer_json: Vec<String> = layers
            .iter()
            .map(|l| {
                let d = s.put_blob(l).unwrap();
                format!(
                    r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{}}}"#,
                    l.len()
                )
            })
            .collect();
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":{}}},"layers":[{}]}}"#,
            config.len(),
            layer_json.join(",")
        );
        let d = s.put_blob(m.as_bytes()).unwrap();
        BlobRef {
            media_type: crate::image::media_type::OCI_MANIFEST.into(),
            digest: d,
            size: m.len() as u64,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn tag_resolve_untag() {
        let (_d, s) = store();
        let m = manifest_with(&s, b"{}", &[b"layer"]);
        let name: ImageName = "app:1".parse().unwrap();
        s.tag(&name, m.clone()).unwrap();
        assert_eq!(s.resolve(&name).unwrap(), m);
        let images = s.images().unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].name.as_ref(), Some(&name));
        assert_eq!(s.untag(&name).unwrap(), m);
        assert!(matches!(
            s.resolve(&name),
            Err(StoreError::ImageNotFound(_))
        ));
        // Tagging a manifest that is not stored is refused.
        let mut missing = m.clone();
        missing.digest = Digest::of(b"nope");
        assert!(s.tag(&name, missing).is_err());
    }

    #[test]
    fn gc_keeps_reachable_and_removes_unreachable() {
        let (_d, mut s) = store();
        let kept = manifest_with(&s, b"{\"kept\":1}", &[b"kept layer", b"shared layer"]);
        let dropped = manifest_with(&s, b"{\"dropped\":1}", &[b"dropped layer", b"shared layer"]);
        let loose = s.put_blob(b"loose blob").unwrap();
        s.tag(&"kept:latest".parse().unwrap(), kept.clone())
            .unwrap();
        // A leftover from a writer that died.
        fs::write(s.root().join("tmp/blob-999-0-0"), b"half a blob").unwrap();

        let report = s.gc().unwrap();
        assert_eq!(report.removed_temp_files, 1);
        let mut removed = report.removed_blobs.clone();
        removed.sort();
        let mut expected = vec![
            dropped.digest,
            Digest::of(b"{\"dropped\":1}"),
            Digest::of(b"dropped layer"),
            loose,
        ];
        expected.sort();
        assert_eq!(removed, expected);
        for d in [
            kept.digest,
            Digest::of(b"{\"kept\":1}"),
            Digest::of(b"kept layer"),
            Digest::of(b"shared layer"),
        ] {
            assert!(s.has_blob(&d), "{d} should be kept");
        }
        assert!(s.verify().unwrap().is_ok());
        // Nothing left to collect.
        assert_eq!(s.gc().unwrap(), GcReport::default());
    }

    #[test]
    fn gc_follows_indexes() {
        let (_d, mut s) = store();
        let inner = manifest_with(&s, b"{\"inner\":1}", &[b"inner layer"]);
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"{}","digest":"{}","size":{}}}]}}"#,
            inner.media_type, inner.digest, inner.size
        );
        let d = s.put_blob(idx.as_bytes()).unwrap();
        let target = BlobRef {
            media_type: crate::image::media_type::OCI_INDEX.into(),
            digest: d,
            size: idx.len() as u64,
            annotations: BTreeMap::new(),
        };
        s.add_untagged(target).unwrap();
        let report = s.gc().unwrap();
        assert!(report.removed_blobs.is_empty(), "{report:?}");
        assert!(s.has_blob(&Digest::of(b"inner layer")));
        s.remove_image(&d).unwrap();
        assert_eq!(s.gc().unwrap().removed_blobs.len(), 4);
    }

    #[test]
    fn gc_waits_for_other_users_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let other = Store::open(&root).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let root2 = root.clone();
        let t = std::thread::spawn(move || {
            let mut s = Store::open(&root2).unwrap();
            let r = s.gc().unwrap();
            tx.send(r).unwrap();
        });
        // While `other` holds its shared lock, gc cannot take the exclusive lock.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err());
        drop(other);
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("gc proceeds once the other user is gone");
        assert_eq!(r, GcReport::default());
        t.join().unwrap();
    }

    #[test]
    fn index_survives_concurrent_taggers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let s = Store::open(&root).unwrap();
        let m = manifest_with(&s, b"{}", &[]);
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let root = root.clone();
                let m = m.clone();
                std::thread::spawn(move || {
                    let s = Store::open(&root).unwrap();
                    for j in 0..10 {
                        let name: ImageName = format!("img{i}:{j}").parse().unwrap();
                        s.tag(&name, m.clone()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.images().unwrap().len(), 80);
    }
}
