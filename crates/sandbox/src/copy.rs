//! The copying snapshotter, for where overlay cannot be mounted: the merged
//! view of the lower snapshots is copied into a plain directory, the step runs
//! on it ([`Rootfs::Dir`]), and the changes are then written out as an
//! overlay-style upperdir — new and changed entries copied, deleted ones as
//! 0/0 character-device whiteouts, replaced directories opaque, parents of
//! changes included — so the layer made from it is the one overlay would give.
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

fn remove_any(p: &Path) -> io::Result<()> {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
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
        for (i, layer) in lowerdirs.iter().rev().enumerate() {
            // No two names share a copy: as after overlay's copy-up, a change
            // made through one name of a lower hard link does not show through
            // the other (so the step's layer is the one overlay gives).
            let mut links = Links {
                join: false,
                first: HashMap::new(),
            };
            apply_layer(layer, dir, &mut links)?;
            if i + 1 == lowerdirs.len() {
                // The root directory's own metadata comes from the top layer.
                let m = layer.symlink_metadata()?;
                apply_metadata(dir, &m)?;
            }
        }
        provision(dir)?;
        let mut snap = CopySnapshot {
            merged: dir.to_path_buf(),
            before: HashMap::new(),
            children: HashMap::new(),
        };
        snap.record(Path::new(""))?;
        Ok(snap)
    }

    fn record(&mut self, rel: &Path) -> io::Result<()> {
        let mut names = BTreeSet::new();
        for e in std::fs::read_dir(self.merged.join(rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            let m = e.path().symlink_metadata()?;
            self.before.insert(r.clone(), Before::of(&m));
            if m.is_dir() {
                self.record(&r)?;
            }
            names.insert(e.file_name());
        }
        self.children.insert(rel.to_path_buf(), names);
        Ok(())
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
