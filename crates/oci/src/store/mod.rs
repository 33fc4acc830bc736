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
//! builds/<manifest hex>.json  what the build of that image did: stages, steps, layers
//!                       (`builds.rs`; removed by gc with the image)
//! layers/<diff_id hex>/  layers a build made, held as directories until an output
//!                       needs their blobs, and the blobs made from them (`layers.rs`)
//! ```
//!
//! An image a build made names its new layers uncompressed, by diff_id; their
//! blobs exist only once an output asked for them (see `layers.rs`). Everything
//! else the index names is in `blobs/`.
//!
//! Every write is atomic: data goes to a file in `tmp/`, is fsynced, renamed under its
//! digest name and the directory is fsynced, so a killed writer never leaves a partial
//! blob under a digest name. Whatever a dead writer left in `tmp/` is removed by [`Store::gc`].
//!
//! The store's parts: blobs (`blobs.rs`: writing, reading, verifying), the image
//! index of names (`names.rs`), layers held as directories (`layers.rs`) and
//! garbage collection (`gc.rs`).

mod blobs;
mod builds;
mod gc;
mod layers;
mod names;

pub use crate::descriptor::BlobRef;
pub use blobs::{BlobWriter, VerifiedReader, VerifyReport};
pub use builds::{
    BuildRecord, LayerRecord, StageRecord, StepRecord, StepResult, BUILD_RECORD_VERSION,
};
pub use gc::GcReport;
pub use layers::LocalLayer;
pub use names::{StoredImage, CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION};

use crate::digest::Digest;
use rustix::fs::FlockOperation;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

impl From<crate::descriptor::MalformedManifest> for StoreError {
    fn from(e: crate::descriptor::MalformedManifest) -> Self {
        StoreError::Malformed {
            what: "manifest",
            digest: e.digest,
            message: e.message,
        }
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

    /// Whether syncs are deferred, without recording that anything was written
    /// (for a writer that may find its blob already stored and write nothing).
    fn syncs_deferred(&self) -> bool {
        self.deferred.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a blob or record was written without fsync since the last sync.
    #[cfg(test)]
    fn has_unsynced(&self) -> bool {
        self.unsynced.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ImageName;
    use std::collections::BTreeMap;
    use std::io::Read;

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
            media_type: crate::descriptor::media_type::OCI_MANIFEST.into(),
            digest: d,
            size: m.len() as u64,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn a_blob_already_stored_leaves_nothing_to_sync() {
        let (_d, s) = store();
        s.defer_sync();
        s.put_blob(b"new").unwrap();
        assert!(s.has_unsynced());
        s.sync().unwrap();
        assert!(!s.has_unsynced());
        // The same content again (a no-op rebuild writes its config and manifest
        // again): the copy is discarded, so no syncfs is owed for it.
        s.put_blob(b"new").unwrap();
        assert!(!s.has_unsynced());
        s.put_blob(b"other").unwrap();
        assert!(s.has_unsynced());
    }

    #[test]
    fn tagging_again_to_the_same_target_leaves_the_index_file_alone() {
        use std::os::unix::fs::MetadataExt;
        let (_d, s) = store();
        let m = manifest_with(&s, b"{}", &[b"layer"]);
        let name: ImageName = "app:1".parse().unwrap();
        s.tag(&name, m.clone()).unwrap();
        let index = s.root().join("index.json");
        let before = fs::metadata(&index).unwrap().ino();
        s.tag(&name, m.clone()).unwrap();
        assert_eq!(fs::metadata(&index).unwrap().ino(), before);
        assert_eq!(s.resolve(&name).unwrap(), m);
        // A change is still written.
        let other = manifest_with(&s, b"{\"b\":1}", &[b"layer 2"]);
        s.tag(&name, other.clone()).unwrap();
        assert_ne!(fs::metadata(&index).unwrap().ino(), before);
        assert_eq!(s.resolve(&name).unwrap(), other);
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
            media_type: crate::descriptor::media_type::OCI_INDEX.into(),
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
