//! Persistent directories for `RUN --mount=type=cache`, shared between
//! builds (and kiln processes) by cache id, as BuildKit does.
//!
//! Layout under `<store root>/cache/mounts/`:
//!
//! ```text
//! <sha256(id) hex>/data      the directory bind-mounted read-write into RUN
//! <sha256(id) hex>/lock      flock: who is using `data`
//! <sha256(id) hex>/private-* fresh directories for `sharing=private` users
//!                            while `data` is busy; removed when released
//! ```
//!
//! The id is user input (`id=` or, by default, the mount's target path), so
//! it is never used as a path: only its digest is. As in BuildKit, a cache is
//! keyed by its id *and* what it starts from ([`CacheMountRequest::base`]): the
//! same id with `uid`/`gid`/`mode`, or seeded `from=` a stage, is another
//! directory.
//!
//! Sharing modes, through the lock file:
//! - `shared`: a shared flock; any number of users get `data` at once.
//! - `locked`: an exclusive flock; a second user waits until the first one
//!   releases (also across processes). It also waits for `shared` users.
//! - `private`: tries the exclusive flock; if `data` is in use, the user gets
//!   a fresh empty directory of its own instead (BuildKit creates a new cache
//!   ref), which is deleted when the lease is dropped.

use kiln_dockerfile::instructions::{CacheSharing, Mount, MountType};
use rustix::fs::FlockOperation;
use sha2::{Digest as _, Sha256};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// BuildKit's defaults for a cache mount's directory.
pub const DEFAULT_MODE: u32 = 0o755;
pub const DEFAULT_UID: u32 = 0;
pub const DEFAULT_GID: u32 = 0;

#[derive(Debug, thiserror::Error)]
pub enum CacheMountError {
    #[error("cache mount {id:?}: {what} {}: {source}", path.display())]
    Io {
        id: String,
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, CacheMountError>;

/// What a RUN step asks for: one cache mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheMountRequest {
    /// The cache id (`id=`, default the target path).
    pub id: String,
    pub sharing: CacheSharing,
    /// Owner and permission bits of the directory when it is first created,
    /// as host ids (the caller maps container ids through the sandbox's id
    /// map first). Later uses do not change an existing directory.
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// What the cache starts from besides an empty directory, part of its key
    /// with the id (BuildKit's cache key is the id plus the ref it starts
    /// from): empty for a plain cache; the owner and mode when the mount gives
    /// `uid`, `gid` or `mode` (BuildKit starts those from a directory made with
    /// them, so a new combination is a new cache); a stage and path for `from=`
    /// (set by the caller, which seeds the directory).
    pub base: String,
}

impl CacheMountRequest {
    /// A request with BuildKit's defaults: shared, 0:0, 0755.
    pub fn new(id: impl Into<String>) -> Self {
        CacheMountRequest {
            id: id.into(),
            sharing: CacheSharing::Shared,
            uid: DEFAULT_UID,
            gid: DEFAULT_GID,
            mode: DEFAULT_MODE,
            base: String::new(),
        }
    }

    /// The request of a `type=cache` mount (`None` for other mount types):
    /// the id defaults to the target path, sharing to `shared`, and
    /// uid/gid/mode to 0/0/0755, as in BuildKit (`dispatchRunMounts`). Given
    /// `uid`, `gid` or `mode` make the cache one of its own ([`Self::base`]),
    /// unless `source=` names a subdirectory: BuildKit then ignores them.
    pub fn from_mount(m: &Mount) -> Option<Self> {
        if m.kind != MountType::Cache {
            return None;
        }
        let id = m.id.clone().or_else(|| m.target.clone())?;
        let mut req = CacheMountRequest {
            sharing: m.sharing.unwrap_or(CacheSharing::Shared),
            ..CacheMountRequest::new(id)
        };
        let owned = m.uid.is_some() || m.gid.is_some() || m.mode.is_some();
        if owned && source_subdir(m).is_none() {
            req.uid = m.uid.unwrap_or(DEFAULT_UID);
            req.gid = m.gid.unwrap_or(DEFAULT_GID);
            req.mode = m.mode.unwrap_or(DEFAULT_MODE);
            req.base = format!("owner {}:{} mode {:o}", req.uid, req.gid, req.mode);
        }
        Some(req)
    }
}

/// The subdirectory of the cache a mount shows (`source=`, cleaned, without the
/// leading `/`); `None` for the whole cache.
pub fn source_subdir(m: &Mount) -> Option<String> {
    let cleaned = kiln_oci::path::clean(&format!("/{}", m.source.as_deref().unwrap_or("")));
    let rel = cleaned.trim_start_matches('/');
    (!rel.is_empty()).then(|| rel.to_string())
}

/// The cache mount directories of one store.
#[derive(Debug, Clone)]
pub struct CacheMounts {
    root: PathBuf,
}

/// One user's hold on a cache directory; released when dropped.
#[derive(Debug)]
pub struct CacheMountLease {
    dir: PathBuf,
    /// Holds the flock (none for a private fresh directory).
    _lock: Option<File>,
    /// True when `dir` is a fresh private directory to delete on release.
    temporary: bool,
}

impl CacheMountLease {
    /// The host directory to bind-mount read-write at the mount's target.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when this is a separate fresh directory (a `private` user while
    /// the persistent one was busy); its content is discarded on release.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }
}

impl CacheMountLease {
    /// The host path of `rel` (a [`source_subdir`]) inside the cache directory,
    /// symlinks resolved inside it as if it were `/` (a link to `/etc` names the
    /// cache's `etc`), as BuildKit resolves a cache mount's `source=`. An error
    /// when nothing is there.
    pub fn subdir(&self, rel: &str) -> std::io::Result<PathBuf> {
        let view = crate::snapshot::merged_view::LayeredView::new(vec![self.dir.clone()]);
        match view.lookup(rel, true)? {
            Some(e) if e.host_path.starts_with(&self.dir) => Ok(e.host_path),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{rel}: no such file or directory in the cache"),
            )),
        }
    }
}

/// A [`Seed`] copying the directory `path` of a stage's filesystem into a new
/// cache directory, which takes that directory's owner and mode (`RUN
/// --mount=type=cache,from=STAGE,source=PATH`).
pub fn seed_from_stage<'a>(
    view: &'a crate::snapshot::merged_view::LayeredView,
    path: &'a str,
) -> impl Fn(&Path) -> std::io::Result<()> + 'a {
    move |dir: &Path| {
        use std::os::unix::fs::MetadataExt as _;
        let other = |e: crate::ops::copy::CopyError| std::io::Error::other(e.to_string());
        let Some(top) = view.lookup(path, true)? else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{path}: not found in the stage"),
            ));
        };
        if !top.is_dir() {
            return Err(std::io::Error::other(format!("{path}: not a directory")));
        }
        let op = crate::ops::copy::CopyOp {
            sources: vec![path.to_string()],
            dest: "/".into(),
            workdir: "/".into(),
            ..Default::default()
        };
        let empty = tempfile::tempdir()?;
        let parent =
            crate::snapshot::merged_view::LayeredView::new(vec![empty.path().to_path_buf()]);
        crate::ops::copy::copy(&op, crate::ops::copy::CopySource::View(view), &parent, dir)
            .map_err(other)?;
        let md = &top.metadata;
        std::os::unix::fs::chown(dir, Some(md.uid()), Some(md.gid()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(md.mode() & 0o7777))
    }
}

impl Drop for CacheMountLease {
    fn drop(&mut self) {
        if self.temporary {
            // Best effort: a leftover is only disk space, found by prune.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        // The lock file closes with `_lock`, which releases the flock.
    }
}

static PRIVATE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl CacheMounts {
    /// The cache mounts of the store rooted at `store_root`
    /// (`<store_root>/cache/mounts`). Nothing is created until first use.
    pub fn new(store_root: &Path) -> Self {
        CacheMounts {
            root: store_root.join("cache").join("mounts"),
        }
    }

    /// `<store root>/cache/mounts`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding everything of cache `id` (a digest of the id,
    /// so any id stays directly under [`CacheMounts::root`]).
    pub fn entry_dir(&self, id: &str) -> PathBuf {
        self.root.join(hex::encode(Sha256::digest(id.as_bytes())))
    }

    /// The directory of the cache `req` asks for: [`Self::entry_dir`] of its id
    /// for a plain cache, else of its id and [`CacheMountRequest::base`].
    pub fn entry_dir_of(&self, req: &CacheMountRequest) -> PathBuf {
        if req.base.is_empty() {
            return self.entry_dir(&req.id);
        }
        let mut h = Sha256::new();
        h.update(req.id.as_bytes());
        h.update([0u8]);
        h.update(req.base.as_bytes());
        self.root.join(hex::encode(h.finalize()))
    }

    /// Takes the cache directory for `req`, waiting while a `locked` (or,
    /// for `locked`, any) user holds it.
    pub fn acquire(&self, req: &CacheMountRequest) -> Result<CacheMountLease> {
        self.acquire_seeded(req, None)
    }

    /// [`Self::acquire`], filling a directory it creates with `seed` (called
    /// on the new directory after its owner and mode are set, before anyone
    /// sees it): a cache seeded `from=` a stage.
    pub fn acquire_seeded(
        &self,
        req: &CacheMountRequest,
        seed: Option<&Seed<'_>>,
    ) -> Result<CacheMountLease> {
        self.lease(req, true, seed)
            .map(|l| l.expect("a blocking acquire always yields a lease or an error"))
    }

    /// Like [`CacheMounts::acquire`] but never waits: `None` when a
    /// `shared`/`locked` request would have to wait. `private` never waits.
    pub fn try_acquire(&self, req: &CacheMountRequest) -> Result<Option<CacheMountLease>> {
        self.lease(req, false, None)
    }

    fn lease(
        &self,
        req: &CacheMountRequest,
        wait: bool,
        seed: Option<&Seed<'_>>,
    ) -> Result<Option<CacheMountLease>> {
        let entry = self.entry_dir_of(req);
        let io = |what: &'static str, path: &Path| {
            let id = req.id.clone();
            let path = path.to_path_buf();
            move |source: std::io::Error| CacheMountError::Io {
                id,
                what,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&entry).map_err(io("creating", &entry))?;
        let lock_path = entry.join("lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io("opening lock file", &lock_path))?;
        let (op, nonblocking_op) = match req.sharing {
            CacheSharing::Shared => (
                FlockOperation::LockShared,
                FlockOperation::NonBlockingLockShared,
            ),
            CacheSharing::Locked | CacheSharing::Private => (
                FlockOperation::LockExclusive,
                FlockOperation::NonBlockingLockExclusive,
            ),
        };
        let got = if wait && req.sharing != CacheSharing::Private {
            flock(&lock, op).map_err(io("locking", &lock_path))?;
            true
        } else {
            flock_nonblocking(&lock, nonblocking_op).map_err(io("locking", &lock_path))?
        };
        if !got {
            if req.sharing != CacheSharing::Private {
                return Ok(None);
            }
            // Private and busy: a fresh directory of its own.
            let dir = loop {
                let n = PRIVATE_COUNTER.fetch_add(1, Ordering::Relaxed);
                let dir = entry.join(format!("private-{}-{n}", std::process::id()));
                match std::fs::create_dir(&dir) {
                    Ok(()) => break dir,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(io("creating", &dir)(e)),
                }
            };
            let lease = CacheMountLease {
                dir,
                _lock: None,
                temporary: true,
            };
            set_owner_mode(&lease.dir, req).map_err(io("setting owner of", &lease.dir))?;
            if let Some(seed) = seed {
                seed(&lease.dir).map_err(io("seeding", &lease.dir))?;
            }
            return Ok(Some(lease));
        }
        let data = entry.join("data");
        ensure_data_dir(&entry, &data, req, seed).map_err(io("creating", &data))?;
        Ok(Some(CacheMountLease {
            dir: data,
            _lock: Some(lock),
            temporary: false,
        }))
    }
}

/// Fills a new cache directory (see [`CacheMounts::acquire_seeded`]).
pub type Seed<'a> = dyn Fn(&Path) -> std::io::Result<()> + 'a;

fn set_owner_mode(dir: &Path, req: &CacheMountRequest) -> std::io::Result<()> {
    std::os::unix::fs::chown(dir, Some(req.uid), Some(req.gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(req.mode & 0o7777))
}

/// Creates `data` with the request's owner and mode if it does not exist yet.
/// It is prepared under a temporary name and renamed into place without
/// replacing, so a concurrent user never sees a half-prepared directory.
fn ensure_data_dir(
    entry: &Path,
    data: &Path,
    req: &CacheMountRequest,
    seed: Option<&Seed<'_>>,
) -> std::io::Result<()> {
    if data.is_dir() {
        return Ok(());
    }
    let n = PRIVATE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = entry.join(format!("new-{}-{n}", std::process::id()));
    std::fs::create_dir(&tmp)?;
    let prepared = set_owner_mode(&tmp, req).and_then(|()| seed.map_or(Ok(()), |f| f(&tmp)));
    let placed = prepared.and_then(|()| {
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &tmp,
            rustix::fs::CWD,
            data,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(std::io::Error::from)
    });
    match placed {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            if data.is_dir() {
                // Someone else created it first.
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

fn flock(file: &File, op: FlockOperation) -> std::io::Result<()> {
    loop {
        match rustix::fs::flock(file, op) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `Ok(false)` when the lock is held by someone else.
fn flock_nonblocking(file: &File, op: FlockOperation) -> std::io::Result<bool> {
    loop {
        match rustix::fs::flock(file, op) {
            Ok(()) => return Ok(true),
            Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
