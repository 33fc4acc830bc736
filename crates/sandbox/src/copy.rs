//! The copying snapshotter, for where overlay cannot be mounted: the merged
//! view of the lower snapshots is copied into a plain directory, the step runs
//! on it ([`Rootfs::Dir`]), and the changes are then written out as an
//! overlay-style upperdir — new and changed entries copied, deleted ones as
//! 0/0 character-device whiteouts, replaced directories opaque, parents of
//! changes included — so the layer made from it is the one overlay would give.
//!
//! The next step of a stage need not copy again: [`CopySnapshot::settle`]
//! makes the tree a step ran on what a fresh copy of the layers including the
//! step's own gives, and [`CopySnapshot::resume_with`] applies only the
//! layers made since onto it (the builder keeps the trees:
//! `kiln_builder::snapshot::copied`). The diff reads no file's content: an
//! entry is changed when its inode, birth time, type or ctime (and for a
//! directory mode, owner or mtime) differ from what was recorded before the
//! step; only changed entries are copied into the upper directory.
//!
//! Lower snapshots are overlay upperdirs themselves (whiteouts and opaque
//! xattrs in either the `trusted.` or the `user.` namespace). Ownership is
//! copied as is, so this runs as root (or inside the sandbox's user namespace).

use crate::spec::Rootfs;
use kiln_oci::layer::overlay;
use std::collections::{BTreeSet, HashMap};
use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The state of one entry before the step, to tell what it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Before {
    ino: u64,
    /// Birth time (statx), where the filesystem records one: a file removed
    /// and made again may get the same inode number back, never the same birth.
    born: Option<std::time::SystemTime>,
    kind: Kind,
    ctime: (i64, i64),
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

fn kind_of(m: &std::fs::Metadata) -> Kind {
    let t = m.file_type();
    if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File
    } else if t.is_symlink() {
        Kind::Symlink
    } else {
        Kind::Other
    }
}

impl Before {
    fn of(m: &std::fs::Metadata) -> Before {
        Before {
            ino: m.ino(),
            born: m.created().ok(),
            kind: kind_of(m),
            ctime: (m.ctime(), m.ctime_nsec()),
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }
}

/// A copied rootfs and what it looked like before the step.
pub struct CopySnapshot {
    merged: PathBuf,
    before: HashMap<PathBuf, Before>,
    children: HashMap<PathBuf, BTreeSet<OsString>>,
    /// Directories [`Self::diff_into`] found with only their ctime changed.
    touched: std::cell::RefCell<Vec<PathBuf>>,
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn errno<T>(r: libc::c_int, ok: T) -> io::Result<T> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ok)
    }
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let cp = cpath(p).ok()?;
    let cn = CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and buffer.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

fn is_opaque(p: &Path) -> bool {
    overlay::is_opaque_dir(p).unwrap_or(false)
}

/// Extended attributes of `src` copied to `dst`, except overlay's own.
fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let cs = cpath(src)?;
    let cd = cpath(dst)?;
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(cs.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTSUP) {
            Ok(())
        } else {
            Err(e)
        };
    }
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let name_s = String::from_utf8_lossy(name);
        if overlay::is_overlay_xattr(name) {
            continue;
        }
        let Some(value) = get_xattr(src, &name_s) else {
            continue;
        };
        let cn = CString::new(name).map_err(|_| io::Error::other("NUL in xattr name"))?;
        // SAFETY: valid C strings and buffer.
        let r = unsafe {
            libc::lsetxattr(
                cd.as_ptr(),
                cn.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        errno(r, ())?;
    }
    Ok(())
}

fn set_opaque(dir: &Path) -> io::Result<()> {
    overlay::set_opaque(dir, crate::userns::overlay_xattr())
}

/// Owner, mode (after chown, which clears setuid bits) and mtime of `m` onto `dst`.
fn apply_metadata(dst: &Path, m: &std::fs::Metadata) -> io::Result<()> {
    let c = cpath(dst)?;
    // SAFETY: valid C string.
    errno(unsafe { libc::lchown(c.as_ptr(), m.uid(), m.gid()) }, ())?;
    if !m.file_type().is_symlink() {
        // SAFETY: valid C string.
        errno(unsafe { libc::chmod(c.as_ptr(), m.mode() & 0o7777) }, ())?;
    }
    restore_times(dst, m)
}

fn remove_any(p: &Path) -> io::Result<()> {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets `dst`'s access and modification times to `m`'s.
fn restore_times(dst: &Path, m: &std::fs::Metadata) -> io::Result<()> {
    let c = cpath(dst)?;
    let times = [
        libc::timespec {
            tv_sec: m.atime() as _,
            tv_nsec: m.atime_nsec() as _,
        },
        libc::timespec {
            tv_sec: m.mtime() as _,
            tv_nsec: m.mtime_nsec() as _,
        },
    ];
    // SAFETY: valid C string and two timespecs.
    errno(
        unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        },
        (),
    )
}

/// The names of `p`'s extended attributes, overlay's own left out.
fn xattr_names(p: &Path) -> io::Result<Vec<Vec<u8>>> {
    let c = cpath(p)?;
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTSUP) {
            Ok(Vec::new())
        } else {
            Err(e)
        };
    }
    Ok(names[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty() && !overlay::is_overlay_xattr(n))
        .map(<[u8]>::to_vec)
        .collect())
}

/// `dst`'s extended attributes made `src`'s (overlay's own aside).
fn sync_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let keep = xattr_names(src)?;
    let cd = cpath(dst)?;
    for name in xattr_names(dst)? {
        if keep.contains(&name) {
            continue;
        }
        let cn = CString::new(name).map_err(|_| io::Error::other("NUL in xattr name"))?;
        // SAFETY: valid C strings.
        errno(unsafe { libc::lremovexattr(cd.as_ptr(), cn.as_ptr()) }, ())?;
    }
    copy_xattrs(src, dst)
}

/// Gives the file `p` (one of several names of its inode) an inode of its
/// own: a copy, renamed over it. Its directory's times are the caller's to
/// restore.
fn break_link(p: &Path, m: &std::fs::Metadata) -> io::Result<()> {
    let parent = p.parent().unwrap_or(Path::new("/"));
    let mut n = 0u32;
    let tmp = loop {
        let t = parent.join(format!(".kiln-unlink-{}-{n}", m.ino()));
        match t.symlink_metadata() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => break t,
            Err(e) => return Err(e),
            Ok(_) => n += 1,
        }
    };
    let mut links = Links {
        join: false,
        first: HashMap::new(),
    };
    if let Err(e) = copy_leaf(p, &tmp, m, &mut links) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, p)
}

/// Hard links among copied files: (dev, ino) of the source → first copy;
/// `join` false copies every name on its own.
struct Links {
    join: bool,
    first: HashMap<(u64, u64), PathBuf>,
}

impl Links {
    fn new() -> Links {
        Links {
            join: true,
            first: HashMap::new(),
        }
    }
}

/// Copies one non-directory entry (file, symlink, device, fifo) with metadata.
fn copy_leaf(src: &Path, dst: &Path, m: &std::fs::Metadata, links: &mut Links) -> io::Result<()> {
    let t = m.file_type();
    if t.is_file() && m.nlink() > 1 && links.join {
        if let Some(first) = links.first.get(&(m.dev(), m.ino())) {
            return std::fs::hard_link(first, dst);
        }
        links.first.insert((m.dev(), m.ino()), dst.to_path_buf());
    }
    if t.is_file() {
        std::fs::copy(src, dst)?;
    } else if t.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else {
        let c = cpath(dst)?;
        let kind = if t.is_char_device() {
            libc::S_IFCHR
        } else if t.is_block_device() {
            libc::S_IFBLK
        } else if t.is_fifo() {
            libc::S_IFIFO
        } else {
            libc::S_IFSOCK
        };
        // SAFETY: valid C string.
        errno(
            unsafe { libc::mknod(c.as_ptr(), kind | (m.mode() & 0o7777), m.rdev()) },
            (),
        )?;
    }
    copy_xattrs(src, dst)?;
    apply_metadata(dst, m)
}

/// Copies the tree at `src` to `dst` (which must not exist), leaving out
/// whiteouts when `skip_whiteouts`.
fn copy_tree(src: &Path, dst: &Path, links: &mut Links, skip_whiteouts: bool) -> io::Result<()> {
    let m = src.symlink_metadata()?;
    if !m.is_dir() {
        return copy_leaf(src, dst, &m, links);
    }
    std::fs::create_dir(dst)?;
    let mut names: Vec<OsString> = std::fs::read_dir(src)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let s = src.join(&name);
        if skip_whiteouts
            && s.symlink_metadata()
                .map(|m| overlay::is_whiteout_at(&s, &m))
                .unwrap_or(false)
        {
            continue;
        }
        copy_tree(&s, &dst.join(&name), links, skip_whiteouts)?;
    }
    copy_xattrs(src, dst)?;
    apply_metadata(dst, &m)
}

/// Threads that copy a layer into an empty directory.
const COPIERS: usize = 8;

/// What [`apply_layer`] does to an empty `dst` (every entry of `layer` but
/// its whiteouts copied, no hard links shared), with the entries two levels
/// down copied by several threads: creating files is bound by the
/// filesystem's latency, not by the CPU.
fn copy_into_empty(layer: &Path, dst: &Path) -> io::Result<()> {
    let whiteout = |p: &Path| {
        p.symlink_metadata()
            .map(|m| overlay::is_whiteout_at(p, &m))
            .unwrap_or(false)
    };
    let sorted = |d: &Path| -> io::Result<Vec<OsString>> {
        let mut names: Vec<OsString> = std::fs::read_dir(d)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        Ok(names)
    };
    let mut dirs = Vec::new();
    let mut work = Vec::new();
    for name in sorted(layer)? {
        let s = layer.join(&name);
        let d = dst.join(&name);
        let m = s.symlink_metadata()?;
        if overlay::is_whiteout_at(&s, &m) {
            continue;
        }
        if !m.is_dir() {
            let mut links = Links {
                join: false,
                first: HashMap::new(),
            };
            copy_leaf(&s, &d, &m, &mut links)?;
            continue;
        }
        std::fs::create_dir(&d)?;
        for child in sorted(&s)? {
            let sc = s.join(&child);
            if !whiteout(&sc) {
                work.push((sc, d.join(&child)));
            }
        }
        dirs.push((s, d, m));
    }
    let work = std::sync::Mutex::new(work);
    let failed: std::sync::Mutex<Option<io::Error>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..COPIERS {
            scope.spawn(|| loop {
                let next = work.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((s, d)) = next else { break };
                let mut links = Links {
                    join: false,
                    first: HashMap::new(),
                };
                if let Err(e) = copy_tree(&s, &d, &mut links, true) {
                    work.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(io::Error::new(e.kind(), format!("{}: {e}", s.display())));
                    break;
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    // Their metadata once their entries are made (which changes their times).
    for (s, d, m) in dirs {
        copy_xattrs(&s, &d)?;
        apply_metadata(&d, &m)?;
    }
    Ok(())
}

/// Applies one overlay-format layer onto `dst`: whiteouts delete, opaque
/// directories replace, everything else is copied over.
fn apply_layer(layer: &Path, dst: &Path, links: &mut Links) -> io::Result<()> {
    let mut names: Vec<OsString> = std::fs::read_dir(layer)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let s = layer.join(&name);
        let d = dst.join(&name);
        let m = s.symlink_metadata()?;
        if overlay::is_whiteout_at(&s, &m) {
            remove_any(&d)?;
        } else if m.is_dir() {
            let existing = d.symlink_metadata().ok();
            if is_opaque(&s) || !existing.as_ref().is_some_and(|e| e.is_dir()) {
                remove_any(&d)?;
                copy_tree(&s, &d, links, true)?;
            } else {
                apply_layer(&s, &d, links)?;
                copy_xattrs(&s, &d)?;
                apply_metadata(&d, &m)?;
            }
        } else {
            remove_any(&d)?;
            copy_leaf(&s, &d, &m, links)?;
        }
    }
    Ok(())
}

impl CopySnapshot {
    /// Copies the merged view of `lowerdirs` (top first, as for overlay) into
    /// `dir`, which must not exist yet.
    pub fn prepare(lowerdirs: &[PathBuf], dir: &Path) -> io::Result<CopySnapshot> {
        Self::prepare_with(lowerdirs, dir, |_| Ok(()))
    }

    /// [`Self::prepare`], calling `provision` on the copy before recording
    /// its state: what it adds (e.g. [`crate::chroot::provision`]'s mount
    /// points and `/etc/hosts`) is part of the "before" and in no diff unless
    /// the step changes it.
    pub fn prepare_with(
        lowerdirs: &[PathBuf],
        dir: &Path,
        provision: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<CopySnapshot> {
        std::fs::create_dir(dir)?;
        Self::resume_with(dir, lowerdirs, provision)
    }

    /// Like [`Self::prepare_with`], on `dir` as an earlier step of the stage
    /// left it (see [`Self::settle`]): what a fresh copy of the layers below
    /// `lowerdirs` gives. `lowerdirs` (top first) are the layers made since,
    /// applied onto it as a fresh copy would apply them, so the result is the
    /// fresh copy of all the step's layers, without copying the ones below.
    /// Hard links the earlier steps made are broken up first (a fresh copy
    /// has none: see [`Self::prepare_with`]).
    pub fn resume_with(
        dir: &Path,
        lowerdirs: &[PathBuf],
        provision: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<CopySnapshot> {
        for (i, layer) in lowerdirs.iter().rev().enumerate() {
            // No two names share a copy: as after overlay's copy-up, a change
            // made through one name of a lower hard link does not show through
            // the other (so the step's layer is the one overlay gives).
            let mut links = Links {
                join: false,
                first: HashMap::new(),
            };
            if i == 0 && std::fs::read_dir(dir)?.next().is_none() {
                // The bottom layer onto an empty directory: a plain copy.
                copy_into_empty(layer, dir)?;
            } else {
                apply_layer(layer, dir, &mut links)?;
            }
            if i + 1 == lowerdirs.len() {
                // The root directory's own metadata comes from the top layer.
                let m = layer.symlink_metadata()?;
                apply_metadata(dir, &m)?;
            }
        }
        // What provisioning adds changes no directory's times: those are the
        // layers' (as with overlay, where nothing is written into the root).
        let dirs: Vec<(PathBuf, std::fs::Metadata)> = ["", "etc", "dev"]
            .iter()
            .map(|d| dir.join(d))
            .filter_map(|d| {
                let m = d.symlink_metadata().ok()?;
                m.is_dir().then_some((d, m))
            })
            .collect();
        provision(dir)?;
        for (d, m) in dirs.iter().rev() {
            restore_times(d, m)?;
        }
        let mut snap = CopySnapshot {
            merged: dir.to_path_buf(),
            before: HashMap::new(),
            children: HashMap::new(),
            touched: Default::default(),
        };
        snap.record(Path::new(""))?;
        Ok(snap)
    }

    /// Records the tree's state before the step; a regular file with more
    /// than one name becomes one copy per name first. Returns whether it
    /// did that in `rel`.
    fn record(&mut self, rel: &Path) -> io::Result<bool> {
        let mut names = BTreeSet::new();
        let here = self.merged.join(rel);
        let mut here_md = None;
        for e in std::fs::read_dir(&here)? {
            let e = e?;
            let r = rel.join(e.file_name());
            let mut m = e.path().symlink_metadata()?;
            if m.is_file() && m.nlink() > 1 {
                if here_md.is_none() {
                    here_md = Some(here.symlink_metadata()?);
                }
                break_link(&e.path(), &m)?;
                m = e.path().symlink_metadata()?;
            }
            // Breaking links below changes its ctime.
            if m.is_dir() && self.record(&r)? {
                m = e.path().symlink_metadata()?;
            }
            self.before.insert(r.clone(), Before::of(&m));
            names.insert(e.file_name());
        }
        let broke = here_md.is_some();
        if let Some(m) = here_md {
            restore_times(&here, &m)?;
        }
        self.children.insert(rel.to_path_buf(), names);
        Ok(broke)
    }

    /// After the step's layer is made from [`Self::diff_into`]'s upper
    /// directory: makes the tree what a fresh copy of the layers including
    /// the new one gives, so that the next step of the stage can
    /// [`Self::resume_with`] it. `restore` are the entries the differ left
    /// out of the layer as the same as below (`drop_unchanged`, children
    /// before their directories), each with the file below it: they get that
    /// file's content and metadata back (a rewritten file with the same
    /// size and times, a directory whose mtime alone changed). `top` is the
    /// new layer's directory: the root's metadata comes from it, and the
    /// times of the directories entries were left out of.
    pub fn settle(&self, restore: &[(PathBuf, PathBuf)], top: &Path) -> io::Result<()> {
        for (rel, below) in restore {
            let dst = self.merged.join(rel);
            let m = below.symlink_metadata()?;
            let here = dst.symlink_metadata()?;
            if m.is_dir() != here.is_dir() {
                return Err(io::Error::other(format!(
                    "{}: not the same kind of file as {}",
                    dst.display(),
                    below.display()
                )));
            }
            if m.is_dir() {
                sync_xattrs(below, &dst)?;
                apply_metadata(&dst, &m)?;
            } else {
                let parent = dst.parent().unwrap_or(&self.merged);
                let pm = parent.symlink_metadata()?;
                remove_any(&dst)?;
                let mut links = Links {
                    join: false,
                    first: HashMap::new(),
                };
                copy_leaf(below, &dst, &m, &mut links)?;
                restore_times(parent, &pm)?;
            }
        }
        // Leaving entries out changed the times of the layer's directories
        // they were in: the tree's get those.
        let parents: BTreeSet<&Path> = restore
            .iter()
            .filter_map(|(rel, _)| rel.parent())
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        for parent in parents {
            if let Ok(m) = top.join(parent).symlink_metadata() {
                if m.is_dir() {
                    restore_times(&self.merged.join(parent), &m)?;
                }
            }
        }
        apply_metadata(&self.merged, &top.symlink_metadata()?)
    }

    /// The directories (relative) the step changed nothing of but their
    /// ctime, which [`Self::diff_into`] leaves out of the upper directory:
    /// one of their extended attributes may have changed, so before the
    /// tree is resumed they get their metadata back from the layers too
    /// (in [`Self::settle`]'s list).
    pub fn touched_dirs(&self) -> Vec<PathBuf> {
        self.touched.borrow().clone()
    }

    /// Where the tree is.
    pub fn dir(&self) -> &Path {
        &self.merged
    }

    /// The rootfs to run the step on.
    pub fn rootfs(&self) -> Rootfs {
        Rootfs::Dir(self.merged.clone())
    }

    /// Writes what the step changed as an overlay-style upperdir into `upper`
    /// (an existing, empty directory).
    pub fn diff_into(&self, upper: &Path) -> io::Result<()> {
        let mut links = Links::new();
        self.diff_dir(Path::new(""), upper, &mut links)?;
        Ok(())
    }

    /// Diffs directory `rel` (the same directory as before); returns whether
    /// anything was written under it. The upper dir for `rel` is created on
    /// demand and given its metadata at the end.
    fn diff_dir(&self, rel: &Path, upper: &Path, links: &mut Links) -> io::Result<bool> {
        let here = self.merged.join(rel);
        let up = upper.join(rel);
        let mut after: Vec<OsString> = std::fs::read_dir(&here)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        after.sort();
        let after_set: BTreeSet<&OsString> = after.iter().collect();
        let mut changed = false;
        let ensure = |changed: &mut bool| -> io::Result<()> {
            if !*changed && !rel.as_os_str().is_empty() {
                std::fs::create_dir_all(&up)?;
            }
            *changed = true;
            Ok(())
        };
        if let Some(before) = self.children.get(rel) {
            for gone in before.iter().filter(|n| !after_set.contains(n)) {
                ensure(&mut changed)?;
                overlay::make_whiteout(&up.join(gone))?;
            }
        }
        for name in &after {
            let r = rel.join(name);
            let src = self.merged.join(&r);
            let m = src.symlink_metadata()?;
            match self.before.get(&r) {
                None => {
                    ensure(&mut changed)?;
                    copy_tree(&src, &up.join(name), links, false)?;
                }
                Some(b)
                    if b.ino != m.ino() || b.born != m.created().ok() || b.kind != kind_of(&m) =>
                {
                    ensure(&mut changed)?;
                    copy_tree(&src, &up.join(name), links, false)?;
                    if m.is_dir() {
                        // A directory that replaced another entry hides the lower one's content.
                        set_opaque(&up.join(name))?;
                    }
                }
                Some(b) if m.is_dir() => {
                    let meta_changed = b.mode != m.mode()
                        || b.uid != m.uid()
                        || b.gid != m.gid()
                        || b.mtime != (m.mtime(), m.mtime_nsec());
                    let below_changed = self.diff_dir(&r, upper, links)?;
                    if !meta_changed && !below_changed && b.ctime != (m.ctime(), m.ctime_nsec()) {
                        // Not in the diff (overlay would not copy it up for a
                        // mount stub made and removed), but not as recorded
                        // either (an extended attribute may have changed).
                        self.touched.borrow_mut().push(r.clone());
                    }
                    if meta_changed || below_changed {
                        ensure(&mut changed)?;
                    }
                    if meta_changed && !below_changed {
                        // Only its own metadata changed: the directory with it
                        // (a changed one below got it from the call above).
                        let d = up.join(name);
                        std::fs::create_dir_all(&d)?;
                        copy_xattrs(&src, &d)?;
                        apply_metadata(&d, &m)?;
                    }
                }
                Some(b) => {
                    if b.ctime != (m.ctime(), m.ctime_nsec()) {
                        ensure(&mut changed)?;
                        copy_leaf(&src, &up.join(name), &m, links)?;
                    }
                }
            }
        }
        if changed && !rel.as_os_str().is_empty() {
            let m = here.symlink_metadata()?;
            copy_xattrs(&here, &up)?;
            apply_metadata(&up, &m)?;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(root: &Path, rel: &str, content: &str, mtime: i64) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        set_mtime(&p, mtime);
    }

    fn set_mtime(p: &Path, secs: i64) {
        let t = rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            p,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    /// Everything a later step or layer could see of a tree: per entry its
    /// type, mode, owner, mtime, link count, extended attributes, and content
    /// or target (atime and ctime aside). The root directory too.
    fn state(root: &Path) -> Vec<String> {
        fn entry(p: &Path, rel: &str, out: &mut Vec<String>) {
            let m = p.symlink_metadata().unwrap();
            let what = if m.is_file() {
                format!("{:?} links {}", std::fs::read(p).unwrap(), m.nlink())
            } else if m.file_type().is_symlink() {
                format!("-> {:?}", std::fs::read_link(p).unwrap())
            } else {
                String::new()
            };
            let mut xattrs: Vec<String> = xattr_names(p)
                .unwrap()
                .into_iter()
                .map(|n| String::from_utf8_lossy(&n).into_owned())
                .collect();
            xattrs.sort();
            out.push(format!(
                "{rel:?} {:o} {}:{} mtime {}.{} {what} {xattrs:?}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec()
            ));
            if m.is_dir() {
                let mut names: Vec<_> = std::fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                names.sort();
                for n in names {
                    let r = format!("{rel}/{}", n.to_string_lossy());
                    entry(&p.join(&n), &r, out);
                }
            }
        }
        let mut out = Vec::new();
        entry(root, "", &mut out);
        out
    }

    /// A tree kept after a step ([`CopySnapshot::settle`]) and resumed with
    /// the layers made since ([`CopySnapshot::resume_with`]) is what a fresh
    /// copy of all the layers gives: what the differ left out of the step's
    /// layer has the lower file back (a file rewritten with the same content
    /// and times, a directory whose mtime alone changed), a hard link the
    /// step made is two files, and a later layer's whiteouts, opaque
    /// directories and files are applied as a fresh copy applies them.
    #[test]
    fn a_settled_and_resumed_tree_is_a_fresh_copy_of_its_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let lower = t.join("lower");
        write(&lower, "etc/conf", "setting=1\n", 1_000);
        write(&lower, "keep/a", "a\n", 2_000);
        write(&lower, "keep/b", "b\n", 2_000);
        write(&lower, "opt/old/x", "x\n", 3_000);
        write(&lower, "gone", "g\n", 3_000);
        write(&lower, "quiet/q", "q\n", 3_000);
        for d in ["etc", "keep", "opt/old", "opt", "quiet", ""] {
            set_mtime(&lower.join(d), 500);
        }

        let kept = t.join("kept");
        let snap = CopySnapshot::prepare(std::slice::from_ref(&lower), &kept).unwrap();
        // The step: a new file, a hard link to a lower file, a directory whose
        // mtime alone changes, a file rewritten in place as it was.
        write(&kept, "new/file", "n\n", 4_000);
        std::fs::hard_link(kept.join("new/file"), kept.join("new/file2")).unwrap();
        std::fs::hard_link(kept.join("keep/a"), kept.join("keep/a2")).unwrap();
        std::fs::write(kept.join("opt/old/tmp"), "t").unwrap();
        std::fs::remove_file(kept.join("opt/old/tmp")).unwrap();
        std::fs::write(kept.join("etc/conf"), "setting=1\n").unwrap();
        set_mtime(&kept.join("etc/conf"), 1_000);
        // An extended attribute of a directory, all it changes.
        rustix::fs::lsetxattr(
            kept.join("quiet"),
            "user.step",
            b"1",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let upper = t.join("upper");
        std::fs::create_dir(&upper).unwrap();
        snap.diff_into(&upper).unwrap();
        assert!(!upper.join("quiet").exists());
        assert_eq!(snap.touched_dirs(), [PathBuf::from("quiet")]);
        // What the differ (`drop_unchanged`) leaves out of the layer: the
        // entries that are the same as below, children first.
        let dropped = ["etc/conf", "etc", "keep/a", "opt/old", "opt"];
        let mut restore = vec![(PathBuf::from("quiet"), lower.join("quiet"))];
        for rel in dropped {
            let p = upper.join(rel);
            assert!(p.symlink_metadata().is_ok(), "{rel} not in the diff");
            if p.is_dir() {
                std::fs::remove_dir(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
            restore.push((PathBuf::from(rel), lower.join(rel)));
        }
        snap.settle(&restore, &upper).unwrap();
        drop(snap);

        // The next step, right after.
        let resumed = CopySnapshot::resume_with(&kept, &[], |_| Ok(())).unwrap();
        let fresh = t.join("fresh");
        CopySnapshot::prepare(&[upper.clone(), lower.clone()], &fresh).unwrap();
        assert_eq!(state(&kept), state(&fresh));
        assert_eq!(
            kept.join("new/file2").symlink_metadata().unwrap().nlink(),
            1,
            "the step's hard link is two files now"
        );
        // Breaking the link left the tree as recorded: no change to diff.
        let none = t.join("none");
        std::fs::create_dir(&none).unwrap();
        resumed.diff_into(&none).unwrap();
        assert_eq!(std::fs::read_dir(&none).unwrap().count(), 0);
        drop(resumed);

        // A later layer (a COPY's): a whiteout, an opaque directory, a file.
        let copy = t.join("copy");
        std::fs::create_dir_all(copy.join("opt")).unwrap();
        overlay::make_whiteout(&copy.join("gone")).unwrap();
        write(&copy, "opt/only", "o\n", 6_000);
        set_opaque(&copy.join("opt")).unwrap();
        write(&copy, "keep/c", "c\n", 6_000);
        std::fs::set_permissions(copy.join("keep"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        set_mtime(&copy.join("keep"), 7_000);
        CopySnapshot::resume_with(&kept, std::slice::from_ref(&copy), |_| Ok(())).unwrap();
        let fresh2 = t.join("fresh2");
        CopySnapshot::prepare(&[copy.clone(), upper, lower], &fresh2).unwrap();
        assert_eq!(state(&kept), state(&fresh2));
        assert!(!kept.join("gone").exists() && !kept.join("opt/old").exists());
    }

    /// The bottom layer copied by several threads is what applying it onto
    /// an empty directory gives (whiteouts left out at any depth, hard links
    /// not shared, directories with their own times and xattrs).
    #[test]
    fn copying_into_an_empty_directory_is_applying_the_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        let layer = t.join("layer");
        write(&layer, "top-file", "t\n", 10);
        write(&layer, "usr/lib/deep/f", "f\n", 20);
        write(&layer, "usr/bin/tool", "x\n", 30);
        std::fs::hard_link(layer.join("usr/bin/tool"), layer.join("usr/bin/tool2")).unwrap();
        std::os::unix::fs::symlink("lib", layer.join("usr/lib64")).unwrap();
        overlay::make_whiteout(&layer.join("gone")).unwrap();
        overlay::make_whiteout(&layer.join("usr/gone")).unwrap();
        overlay::make_whiteout(&layer.join("usr/lib/gone")).unwrap();
        set_opaque(&layer.join("usr/lib")).unwrap();
        rustix::fs::lsetxattr(
            layer.join("usr"),
            "user.note",
            b"kept",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        std::fs::set_permissions(
            layer.join("usr/bin"),
            std::fs::Permissions::from_mode(0o711),
        )
        .unwrap();
        for d in ["usr/lib/deep", "usr/lib", "usr/bin", "usr"] {
            set_mtime(&layer.join(d), 40);
        }
        let (parallel, applied) = (t.join("parallel"), t.join("applied"));
        std::fs::create_dir(&parallel).unwrap();
        std::fs::create_dir(&applied).unwrap();
        copy_into_empty(&layer, &parallel).unwrap();
        let mut links = Links {
            join: false,
            first: HashMap::new(),
        };
        apply_layer(&layer, &applied, &mut links).unwrap();
        let (got, want) = (state(&parallel), state(&applied));
        assert_eq!(got[1..], want[1..], "below the root");
        assert!(!parallel.join("usr/lib/gone").exists());
        assert!(got.iter().any(|l| l.contains("user.note")), "{got:#?}");
    }
}
