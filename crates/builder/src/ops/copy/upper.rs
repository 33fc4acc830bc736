//! Writing a step's changes into its (initially empty) upper snapshot directory,
//! with the parent filesystem seen through a [`LayeredView`].
//!
//! The upper directory ends up exactly like an overlayfs upperdir after the same
//! writes through a mount: every directory on the way to a written path is present
//! in the upper as a real directory, copied up from the parent with its mode,
//! owner, xattrs and times when it existed there (and its times restored after the
//! writes below it), so the layer records only what the COPY changed.
//!
//! Every write goes to a path whose ancestors in the upper were checked or created
//! here as real directories (never symlinks), and files are created with
//! `O_EXCL | O_NOFOLLOW` after removing what was there: nothing is written outside
//! the upper directory.

use crate::snapshot::merged_view::{LayeredView, ViewEntry};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A failed file system operation and the in-view path it was about.
#[derive(Debug)]
pub struct WriteError {
    pub path: String,
    pub source: io::Error,
}

pub type WResult<T> = Result<T, WriteError>;

pub(crate) fn werr(path: &str) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError {
        path: path.to_string(),
        source,
    }
}

pub(crate) fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Access and modification times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
}

impl Times {
    pub fn of(md: &Metadata) -> Times {
        Times {
            atime: (md.atime(), md.atime_nsec()),
            mtime: (md.mtime(), md.mtime_nsec()),
        }
    }
    pub fn now() -> Times {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let t = (d.as_secs() as i64, d.subsec_nanos() as i64);
        Times { atime: t, mtime: t }
    }
    pub fn at(secs: i64) -> Times {
        Times {
            atime: (secs, 0),
            mtime: (secs, 0),
        }
    }
}

/// What a new file, directory or link should look like.
#[derive(Debug, Clone)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits with set-id and sticky bits (ignored for symlinks).
    pub mode: u32,
    pub times: Times,
    /// Extended attributes to set (best effort, as BuildKit's copy does).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads the xattrs of `path` (not following a symlink), leaving out overlayfs'
/// own (`trusted.overlay.*`, `user.overlay.*`), which describe the layer, not the file.
pub fn read_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if names.len() < (1 << 20) => {
                names.resize(names.len() * 4, 0)
            }
            Err(_) => return Vec::new(),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            continue;
        }
        let Ok(cname) = std::ffi::CString::new(name) else {
            continue;
        };
        let mut val = vec![0u8; 4096];
        loop {
            match rustix::fs::lgetxattr(path, cname.as_c_str(), &mut val) {
                Ok(len) => {
                    val.truncate(len);
                    out.push((name.to_vec(), val));
                    break;
                }
                Err(rustix::io::Errno::RANGE) if val.len() < (1 << 20) => {
                    val.resize(val.len() * 4, 0)
                }
                Err(_) => break,
            }
        }
    }
    out
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The writer of one step's upper directory.
pub struct Upper<'a> {
    root: PathBuf,
    parent: &'a LayeredView,
    /// The parent with the upper on top: what the step's filesystem looks like now.
    state: LayeredView,
    /// In-view paths known to be real directories in the upper.
    dirs: HashSet<String>,
    /// Times to set on directories once all writes are done (later entries win).
    dir_times: HashMap<String, Times>,
}

impl<'a> Upper<'a> {
    pub fn new(root: &Path, parent: &'a LayeredView) -> Upper<'a> {
        Upper {
            root: root.to_path_buf(),
            parent,
            state: parent.with_top(root.to_path_buf()),
            dirs: HashSet::new(),
            dir_times: HashMap::new(),
        }
    }

    /// The step's filesystem as it is now (the parent with the writes so far).
    pub fn state(&self) -> &LayeredView {
        &self.state
    }

    /// The host path of an in-view path inside the upper.
    pub fn host(&self, view_path: &str) -> PathBuf {
        self.root
            .join(crate::names::path(view_path.trim_start_matches('/')))
    }

    /// What is at `view_path` now, not following a final symlink.
    pub fn lstat(&self, view_path: &str) -> WResult<Option<ViewEntry>> {
        self.state.lookup(view_path, false).map_err(werr(view_path))
    }

    /// Makes every ancestor of `view_path` (not itself) a real directory in the
    /// upper, copying it up from the parent when it exists there. The ancestors must
    /// already exist in the step's filesystem (or be created by the caller first).
    pub fn prepare_parents(&mut self, view_path: &str) -> WResult<()> {
        let comps: Vec<&str> = view_path.split('/').filter(|c| !c.is_empty()).collect();
        let mut cur = String::new();
        for c in &comps[..comps.len().saturating_sub(1)] {
            cur.push('/');
            cur.push_str(c);
            self.copy_up_dir(&cur)?;
        }
        Ok(())
    }

    /// Makes `view_path` (an existing directory of the step's filesystem, no
    /// symlinks in the path) a real directory in the upper.
    fn copy_up_dir(&mut self, view_path: &str) -> WResult<()> {
        if self.dirs.contains(view_path) {
            return Ok(());
        }
        let host = self.host(view_path);
        match fs::symlink_metadata(&host) {
            Ok(md) if md.is_dir() => {
                self.dirs.insert(view_path.to_string());
                return Ok(());
            }
            Ok(_) => {
                return Err(WriteError {
                    path: view_path.to_string(),
                    source: io::Error::from(io::ErrorKind::NotADirectory),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(werr(view_path)(e)),
        }
        let lower = self
            .parent
            .lookup(view_path, false)
            .map_err(werr(view_path))?;
        let Some(lower) = lower else {
            return Err(WriteError {
                path: view_path.to_string(),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        };
        if !lower.is_dir() {
            return Err(WriteError {
                path: view_path.to_string(),
                source: io::Error::from(io::ErrorKind::NotADirectory),
            });
        }
        let md = &lower.metadata;
        let meta = Meta {
            uid: md.uid(),
            gid: md.gid(),
            mode: md.mode() & 0o7777,
            times: Times::of(md),
            xattrs: read_xattrs(&lower.host_path),
        };
        fs::create_dir(&host).map_err(werr(view_path))?;
        self.dirs.insert(view_path.to_string());
        self.apply_meta(view_path, &meta, false)?;
        // Writes below will touch its mtime: put the parent's back at the end.
        self.dir_times.insert(view_path.to_string(), meta.times);
        Ok(())
    }

    /// BuildKit's `MkdirAll` (fsutil `copy.MkdirAll`) on the step's filesystem:
    /// creates each missing directory of the resolved path `view_path` with `mode`
    /// and `owner`; a non-directory on the way is an error.
    pub fn mkdir_all(&mut self, view_path: &str, mode: u32, owner: (u32, u32)) -> WResult<()> {
        let comps: Vec<&str> = view_path.split('/').filter(|c| !c.is_empty()).collect();
        let mut cur = String::new();
        for c in comps {
            cur.push('/');
            cur.push_str(c);
            match self.lstat(&cur)? {
                Some(e) if e.is_dir() => continue,
                Some(_) => {
                    return Err(WriteError {
                        path: cur.clone(),
                        source: io::Error::new(
                            io::ErrorKind::NotADirectory,
                            "mkdir: not a directory",
                        ),
                    })
                }
                None => {
                    self.prepare_parents(&cur)?;
                    let meta = Meta {
                        uid: owner.0,
                        gid: owner.1,
                        mode: mode & 0o777,
                        times: Times::now(),
                        xattrs: Vec::new(),
                    };
                    self.create_dir(&cur, &meta)?;
                }
            }
        }
        Ok(())
    }

    /// Creates a new directory at `view_path` (which must not exist in the step's
    /// filesystem, or exist there only in the upper as a non-directory) with `meta`;
    /// its times are set after all writes.
    pub fn create_dir(&mut self, view_path: &str, meta: &Meta) -> WResult<()> {
        self.prepare_parents(view_path)?;
        let host = self.host(view_path);
        self.remove_in_upper(view_path)?;
        fs::create_dir(&host).map_err(werr(view_path))?;
        self.dirs.insert(view_path.to_string());
        // A directory of the parent that this step replaced by a non-directory and
        // now by a directory again must not show its old contents.
        if let Some(lower) = self
            .parent
            .lookup(view_path, false)
            .map_err(werr(view_path))?
        {
            if lower.is_dir() {
                set_opaque(&host).map_err(werr(view_path))?;
            }
        }
        self.apply_meta(view_path, meta, false)?;
        self.dir_times.insert(view_path.to_string(), meta.times);
        Ok(())
    }

    /// Gives the existing directory `view_path` (no symlinks in the path) new
    /// metadata, copying it up first.
    pub fn update_dir(&mut self, view_path: &str, meta: &Meta) -> WResult<()> {
        self.prepare_parents(view_path)?;
        self.copy_up_dir(view_path)?;
        self.apply_meta(view_path, meta, false)?;
        self.dir_times.insert(view_path.to_string(), meta.times);
        Ok(())
    }

    /// Sets only the times of the existing directory `view_path` (after all writes).
    pub fn set_dir_times(&mut self, view_path: &str, times: Times) -> WResult<()> {
        self.prepare_parents(view_path)?;
        self.copy_up_dir(view_path)?;
        self.dir_times.insert(view_path.to_string(), times);
        Ok(())
    }

    /// Removes whatever the upper has at `view_path` (the parent's entry stays
    /// hidden below whatever is written next).
    /// Returns whether something was removed.
    fn remove_in_upper(&mut self, view_path: &str) -> WResult<bool> {
        let host = self.host(view_path);
        match fs::symlink_metadata(&host) {
            Ok(md) if md.is_dir() => {
                fs::remove_dir_all(&host).map_err(werr(view_path))?;
                let prefix = format!("{view_path}/");
                self.dirs
                    .retain(|d| d != view_path && !d.starts_with(&prefix));
                self.dir_times
                    .retain(|d, _| d != view_path && !d.starts_with(&prefix));
            }
            Ok(_) => fs::remove_file(&host).map_err(werr(view_path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(werr(view_path)(e)),
        }
        Ok(true)
    }

    /// Prepares `view_path` for a new non-directory: parents made real, whatever the
    /// upper had there removed. The caller has checked it is not a directory now.
    fn prepare_leaf(&mut self, view_path: &str) -> WResult<PathBuf> {
        self.prepare_parents(view_path)?;
        self.remove_in_upper(view_path)?;
        Ok(self.host(view_path))
    }

    /// Writes a regular file from `content`, returning the bytes written.
    pub fn write_file(
        &mut self,
        view_path: &str,
        content: &mut dyn io::Read,
        meta: &Meta,
    ) -> WResult<u64> {
        let host = self.prepare_leaf(view_path)?;
        let mut f = create_new(&host).map_err(werr(view_path))?;
        let n = io::copy(content, &mut f).map_err(werr(view_path))?;
        drop(f);
        self.apply_meta(view_path, meta, true)?;
        Ok(n)
    }

    /// Copies the regular file at `src` (kernel copy where possible).
    pub fn copy_file(&mut self, view_path: &str, src: &Path, meta: &Meta) -> WResult<u64> {
        let mut input = File::open(src).map_err(|e| WriteError {
            path: view_path.to_string(),
            source: io::Error::new(e.kind(), format!("opening {}: {e}", src.display())),
        })?;
        self.write_file(view_path, &mut input, meta)
    }

    pub fn symlink(&mut self, view_path: &str, target: &Path, meta: &Meta) -> WResult<()> {
        let host = self.prepare_leaf(view_path)?;
        std::os::unix::fs::symlink(target, &host).map_err(werr(view_path))?;
        self.apply_meta(view_path, meta, true)
    }

    /// A hard link at `view_path` to the in-view path `existing` (copied up first
    /// when it is only in the parent).
    pub fn hard_link(&mut self, view_path: &str, existing: &str) -> WResult<()> {
        let existing_host = self.host(existing);
        if fs::symlink_metadata(&existing_host).is_err() {
            let lower = self
                .parent
                .lookup(existing, false)
                .map_err(werr(existing))?
                .ok_or_else(|| WriteError {
                    path: existing.to_string(),
                    source: io::Error::new(io::ErrorKind::NotFound, "hard link target not found"),
                })?;
            self.copy_up_leaf(existing, &lower)?;
        }
        let host = self.prepare_leaf(view_path)?;
        fs::hard_link(&existing_host, &host).map_err(werr(view_path))
    }

    /// Copies a non-directory of the parent into the upper unchanged.
    fn copy_up_leaf(&mut self, view_path: &str, lower: &ViewEntry) -> WResult<()> {
        let md = &lower.metadata;
        let meta = Meta {
            uid: md.uid(),
            gid: md.gid(),
            mode: md.mode() & 0o7777,
            times: Times::of(md),
            xattrs: read_xattrs(&lower.host_path),
        };
        let ft = md.file_type();
        if ft.is_file() {
            self.copy_file(view_path, &lower.host_path, &meta)?;
        } else if ft.is_symlink() {
            let t = fs::read_link(&lower.host_path).map_err(werr(view_path))?;
            self.symlink(view_path, &t, &meta)?;
        } else {
            self.special(view_path, md.mode(), md.rdev(), &meta)?;
        }
        Ok(())
    }

    /// A device node, FIFO or socket with the file type bits of `st_mode`.
    pub fn special(
        &mut self,
        view_path: &str,
        st_mode: u32,
        rdev: u64,
        meta: &Meta,
    ) -> WResult<()> {
        let host = self.prepare_leaf(view_path)?;
        let ft = rustix::fs::FileType::from_raw_mode(st_mode);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &host,
            ft,
            Mode::from_raw_mode(meta.mode & 0o777),
            rdev,
        )
        .map_err(|e| werr(view_path)(errno(e)))?;
        self.apply_meta(view_path, meta, true)
    }

    /// Owner, then mode (not for symlinks), then xattrs, then (for non-directories)
    /// times: the order of fsutil's `copyFileInfo` + `copyXAttrs`, so a chown does
    /// not clear set-id bits that the mode sets.
    fn apply_meta(&self, view_path: &str, meta: &Meta, set_times: bool) -> WResult<()> {
        let host = self.host(view_path);
        let md = fs::symlink_metadata(&host).map_err(werr(view_path))?;
        let is_link = md.file_type().is_symlink();
        if md.uid() != meta.uid || md.gid() != meta.gid {
            match rustix::fs::chownat(
                rustix::fs::CWD,
                &host,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(()) => {}
                // Without privilege (rootless, outside a user namespace) the
                // caller's own ids stay.
                Err(rustix::io::Errno::PERM) if !is_root() => {}
                // Root of a user namespace (rootless kiln) can only give ids
                // that namespace maps.
                Err(rustix::io::Errno::INVAL) if !kiln_sandbox::userns::is_host_root() => {
                    return Err(werr(view_path)(io::Error::other(format!(
                        "cannot chown to {}:{}: the id is not mapped in kiln's user \
                         namespace (rootless; see /etc/subuid and /etc/subgid)",
                        meta.uid, meta.gid
                    ))))
                }
                Err(e) => return Err(werr(view_path)(errno(e))),
            }
        }
        if !is_link {
            rustix::fs::chmodat(
                rustix::fs::CWD,
                &host,
                Mode::from_raw_mode(meta.mode & 0o7777),
                AtFlags::empty(),
            )
            .map_err(|e| werr(view_path)(errno(e)))?;
        }
        for (name, value) in &meta.xattrs {
            if let Ok(cname) = std::ffi::CString::new(name.as_slice()) {
                // Best effort, like BuildKit's xattr error handler (it logs).
                let _ = rustix::fs::lsetxattr(&host, cname.as_c_str(), value, XattrFlags::empty());
            }
        }
        if set_times {
            set_times_at(&host, meta.times).map_err(werr(view_path))?;
        }
        Ok(())
    }

    /// Sets the directory times collected on the way. Call once, after all writes.
    pub fn finish(self) -> WResult<()> {
        for (path, times) in &self.dir_times {
            let host = self.host(path);
            if fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
                set_times_at(&host, *times).map_err(werr(path))?;
            }
        }
        Ok(())
    }
}

fn create_new(path: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(errno)?;
    Ok(File::from(fd))
}

/// Sets a path's access and modification times (not following a symlink).
pub fn set_times_at(path: &Path, t: Times) -> io::Result<()> {
    let ts = |(s, n): (i64, i64)| Timespec {
        tv_sec: s,
        tv_nsec: n as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &Timestamps {
            last_access: ts(t.atime),
            last_modification: ts(t.mtime),
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(errno)
}

fn set_opaque(path: &Path) -> io::Result<()> {
    kiln_oci::layer::overlay::set_opaque(path, kiln_sandbox::userns::overlay_xattr())
}
