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
//! it is never used as a path: only its digest is.
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
        }
    }

    /// The request of a `type=cache` mount (`None` for other mount types):
    /// the id defaults to the target path, sharing to `shared`, and
    /// uid/gid/mode to 0/0/0755, as in BuildKit.
    pub fn from_mount(m: &Mount) -> Option<Self> {
        if m.kind != MountType::Cache {
            return None;
        }
        let id = m.id.clone().or_else(|| m.target.clone())?;
        Some(CacheMountRequest {
            id,
            sharing: m.sharing.unwrap_or(CacheSharing::Shared),
            uid: m.uid.unwrap_or(DEFAULT_UID),
            gid: m.gid.unwrap_or(DEFAULT_GID),
            mode: m.mode.unwrap_or(DEFAULT_MODE),
        })
    }
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

    /// Takes the cache directory for `req`, waiting while a `locked` (or,
    /// for `locked`, any) user holds it.
    pub fn acquire(&self, req: &CacheMountRequest) -> Result<CacheMountLease> {
        self.lease(req, true)
            .map(|l| l.expect("a blocking acquire always yields a lease or an error"))
    }

    /// Like [`CacheMounts::acquire`] but never waits: `None` when a
    /// `shared`/`locked` request would have to wait. `private` never waits.
    pub fn try_acquire(&self, req: &CacheMountRequest) -> Result<Option<CacheMountLease>> {
        self.lease(req, false)
    }

    fn lease(&self, req: &CacheMountRequest, wait: bool) -> Result<Option<CacheMountLease>> {
        let entry = self.entry_dir(&req.id);
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
            return Ok(Some(lease));
        }
        let data = entry.join("data");
        ensure_data_dir(&entry, &data, req).map_err(io("creating", &data))?;
        Ok(Some(CacheMountLease {
            dir: data,
            _lock: Some(lock),
            temporary: false,
        }))
    }
}

fn set_owner_mode(dir: &Path, req: &CacheMountRequest) -> std::io::Result<()> {
    std::os::unix::fs::chown(dir, Some(req.uid), Some(req.gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(req.mode & 0o7777))
}

/// Creates `data` with the request's owner and mode if it does not exist yet.
/// It is prepared under a temporary name and renamed into place without
/// replacing, so a concurrent user never sees a half-prepared directory.
fn ensure_data_dir(entry: &Path, data: &Path, req: &CacheMountRequest) -> std::io::Result<()> {
    if data.is_dir() {
        return Ok(());
    }
    let n = PRIVATE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = entry.join(format!("new-{}-{n}", std::process::id()));
    std::fs::create_dir(&tmp)?;
    let placed = set_owner_mode(&tmp, req).and_then(|()| {
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
            let _ = std::fs::remove_dir(&tmp);
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
