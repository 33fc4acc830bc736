//! Mount points that leave no trace: a mount target missing from the rootfs
//! (`/etc/hosts` in an image without one, `/run/secrets/x`, a tmpfs dir) is
//! created before the step and removed after it, and the parent directory's
//! mtime is put back, like BuildKit's mount-stub cleaner. With overlay, a
//! parent directory that was copied up only for such a stub is removed from
//! the upperdir again once the overlay is unmounted.
//!
//! A target is first resolved inside the rootfs ([`rootpath::resolve_in_root`]:
//! the image's symlinks followed as if the rootfs were `/`, missing parts as
//! written), and the stubs are made along that resolved path, where runc's
//! `securejoin` would make them and where the mount then lands. Afterwards
//! the step may have turned any of those directories into a symlink (to the
//! host, say): cleaning up therefore never follows a symlink
//! ([`rootpath::open_beneath`]), it leaves such a path alone.

use crate::rootpath;
use crate::spec::RunSpec;
use crate::staging::Staged;
use crate::sys::{ctx, R};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, UTIME_OMIT};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

struct Stub {
    /// Path relative to the rootfs, resolved (no symlinks, `.` or `..`).
    rel: PathBuf,
    is_dir: bool,
    /// The parent was in the upperdir before we created the stub (always true
    /// for a plain directory rootfs).
    parent_in_upper: bool,
    parent_mtime_before: Timespec,
    parent_mtime_after: Timespec,
}

/// A parent directory a removed stub left copied up in the upperdir.
pub(crate) struct CopiedUpParent {
    rel: PathBuf,
}

pub(crate) struct Stubs<'a> {
    root: &'a Path,
    upper: Option<&'a Path>,
    created: Vec<Stub>,
}

/// The directory at `rel` below `root`, reached without following any
/// symlink; None when there is none (missing, not a directory, or a symlink
/// on the way).
fn dir_beneath(root: &OwnedFd, rel: &Path) -> Result<Option<OwnedFd>, Errno> {
    match rootpath::open_beneath(root, rel) {
        Ok(fd) => {
            let st = rustix::fs::fstat(&fd)?;
            Ok((FileType::from_raw_mode(st.st_mode) == FileType::Directory).then_some(fd))
        }
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV) => Ok(None),
        Err(e) => Err(e),
    }
}

fn mtime(fd: &OwnedFd) -> R<Timespec> {
    let st = ctx(rustix::fs::fstat(fd), || "stat".into())?;
    Ok(Timespec {
        tv_sec: st.st_mtime,
        tv_nsec: st.st_mtime_nsec as _,
    })
}

fn set_mtime(fd: &OwnedFd, t: Timespec) -> rustix::io::Result<()> {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
        last_modification: t,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        &times,
        AtFlags::empty(),
    )
}

impl<'a> Stubs<'a> {
    pub(crate) fn new(root: &'a Path, upper: Option<&'a Path>) -> Stubs<'a> {
        Stubs {
            root,
            upper,
            created: Vec::new(),
        }
    }

    fn root_fd(&self) -> R<OwnedFd> {
        ctx(rootpath::open_root(self.root), || {
            format!("opening {}", self.root.display())
        })
    }

    /// Creates every missing mount point the step needs.
    pub(crate) fn create_all(&mut self, spec: &RunSpec, staged: &Staged) -> R<()> {
        let root = self.root_fd()?;
        let upper = match self.upper {
            Some(u) => Some(ctx(rootpath::open_root(u), || {
                format!("opening {}", u.display())
            })?),
            None => None,
        };
        for m in crate::container::mount_plan(spec, staged) {
            // A mount point inside another mount is made by the step, there.
            if !m.nested {
                self.ensure(&root, upper.as_ref(), &m.target, m.is_dir)?;
            }
        }
        Ok(())
    }

    fn ensure(
        &mut self,
        root: &OwnedFd,
        upper: Option<&OwnedFd>,
        target: &str,
        is_dir: bool,
    ) -> R<()> {
        let resolved = ctx(rootpath::resolve_in_root(root, target), || {
            format!("mount point {target}")
        })?;
        let comps: Vec<&OsStr> = resolved.iter().collect();
        if comps.is_empty() {
            return Err(format!("cannot mount over the root directory ({target:?})"));
        }
        for i in 0..comps.len() {
            let rel: PathBuf = comps[..=i].iter().collect();
            match rootpath::open_beneath(root, &rel) {
                Ok(_) => continue,
                Err(Errno::NOENT) => {}
                Err(e) => return Err(format!("mount point {target}: /{}: {e}", rel.display())),
            }
            let parent_rel: PathBuf = comps[..i].iter().collect();
            let parent = ctx(rootpath::open_beneath(root, &parent_rel), || {
                format!("mount point {target}: /{}", parent_rel.display())
            })?;
            let parent_in_upper = match upper {
                Some(upper) => i == 0 || rootpath::open_beneath(upper, &parent_rel).is_ok(),
                None => true,
            };
            let parent_mtime_before = mtime(&parent)?;
            let name = comps[i];
            let dir = i + 1 < comps.len() || is_dir;
            let created = if dir {
                rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))
            } else {
                rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o644),
                )
                .map(drop)
            };
            ctx(created, || {
                format!("creating mount point /{}", rel.display())
            })?;
            let parent_mtime_after = mtime(&parent)?;
            self.created.push(Stub {
                rel,
                is_dir: dir,
                parent_in_upper,
                parent_mtime_before,
                parent_mtime_after,
            });
        }
        Ok(())
    }

    /// Removes the stubs (newest first) through the still-mounted rootfs.
    /// Returns the parents that overlay copied up only for them.
    pub(crate) fn remove_all(&mut self, errors: &mut Vec<String>) -> Vec<CopiedUpParent> {
        let mut parents = Vec::new();
        let root = match self.root_fd() {
            Ok(r) => r,
            Err(e) => {
                errors.push(e);
                return parents;
            }
        };
        while let Some(stub) = self.created.pop() {
            let parent_rel = stub.rel.parent().map(Path::to_path_buf).unwrap_or_default();
            let name = stub
                .rel
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_default();
            let parent = match dir_beneath(&root, &parent_rel) {
                Ok(Some(p)) => p,
                // The step removed or replaced a directory on the way: what
                // is there now is its change, not ours to clean.
                Ok(None) => continue,
                Err(e) => {
                    errors.push(format!("mount point /{}: {e}", stub.rel.display()));
                    continue;
                }
            };
            let now = mtime(&parent).ok();
            let flags = if stub.is_dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            match rustix::fs::unlinkat(&parent, &name, flags) {
                Ok(()) => {}
                // The step put files into a directory we created: they are its
                // changes, and the directory stays with them.
                Err(Errno::NOTEMPTY) => continue,
                Err(Errno::NOENT) => continue,
                Err(e) => {
                    errors.push(format!("removing mount point /{}: {e}", stub.rel.display()));
                    continue;
                }
            }
            // Untouched by the step since we created the stub: original mtime;
            // otherwise the step's own last change.
            let restore = match now {
                Some(now) if now == stub.parent_mtime_after => stub.parent_mtime_before,
                Some(now) => now,
                None => stub.parent_mtime_before,
            };
            if let Err(e) = set_mtime(&parent, restore) {
                errors.push(format!(
                    "restoring the mtime of /{}: {e}",
                    parent_rel.display()
                ));
            }
            if !stub.parent_in_upper {
                parents.push(CopiedUpParent { rel: parent_rel });
            }
        }
        parents
    }
}

/// After unmounting the overlay: a directory copied up only because a stub was
/// created in it is removed from the upperdir when it is empty there and its
/// metadata equals the lower one it was copied from. Paths are followed in
/// the upper and lower directories without any symlink (the step may have
/// made some), so nothing outside them is ever looked at or removed.
pub(crate) fn drop_untouched_copied_up_parents(
    upper: &Path,
    lowerdirs: &[PathBuf],
    parents: &[CopiedUpParent],
    errors: &mut Vec<String>,
) {
    if parents.is_empty() {
        return;
    }
    let Ok(upper_fd) = rootpath::open_root(upper) else {
        return;
    };
    let lowers: Vec<OwnedFd> = lowerdirs
        .iter()
        .filter_map(|l| rootpath::open_root(l).ok())
        .collect();
    for p in parents {
        let Ok(Some(dir)) = dir_beneath(&upper_fd, &p.rel) else {
            continue;
        };
        let Ok(meta) = rustix::fs::fstat(&dir) else {
            continue;
        };
        let empty = rootpath::reopen_dir(&dir)
            .and_then(rustix::fs::Dir::read_from)
            .map(|mut entries| {
                entries.all(|e| e.is_ok_and(|e| matches!(e.file_name().to_bytes(), b"." | b"..")))
            })
            .unwrap_or(false);
        if !empty {
            continue;
        }
        // The topmost lower holding the path (without symlinks on the way).
        let lower = lowers.iter().find_map(|l| {
            rootpath::open_beneath(l, &p.rel)
                .ok()
                .and_then(|fd| rustix::fs::fstat(&fd).ok())
        });
        let same = lower.is_some_and(|l| {
            FileType::from_raw_mode(l.st_mode) == FileType::Directory
                && l.st_mode == meta.st_mode
                && l.st_uid == meta.st_uid
                && l.st_gid == meta.st_gid
                && l.st_mtime == meta.st_mtime
                && l.st_mtime_nsec == meta.st_mtime_nsec
        });
        if !same {
            continue;
        }
        let parent_rel = p.rel.parent().unwrap_or(Path::new(""));
        let (Some(name), Ok(Some(parent))) =
            (p.rel.file_name(), dir_beneath(&upper_fd, parent_rel))
        else {
            continue;
        };
        if let Err(e) = rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR) {
            errors.push(format!(
                "removing {} from the upperdir: {e}",
                upper.join(&p.rel).display()
            ));
        }
    }
}
