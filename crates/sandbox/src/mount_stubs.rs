//! Mount points that leave no trace: a mount target missing from the rootfs
//! (`/etc/hosts` in an image without one, `/run/secrets/x`, a tmpfs dir) is
//! created before the step and removed after it, and the parent directory's
//! mtime is put back, like BuildKit's mount-stub cleaner. With overlay, a
//! parent directory that was copied up only for such a stub is removed from
//! the upperdir again once the overlay is unmounted.

use crate::spec::RunSpec;
use crate::sys::{ctx, R};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps, UTIME_OMIT};
use std::path::{Path, PathBuf};

struct Stub {
    /// Path relative to the rootfs, lexically normalized.
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

/// Lexically normalized components of an absolute in-rootfs path.
fn components(target: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

fn open_in(root: &OwnedFd, rel: &str) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    rustix::fs::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    )
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
        ctx(
            rustix::fs::open(
                self.root,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ),
            || format!("opening {}", self.root.display()),
        )
    }

    /// Creates every missing mount point the step needs.
    pub(crate) fn create_all(&mut self, spec: &RunSpec) -> R<()> {
        let root = self.root_fd()?;
        for (target, is_dir) in crate::container::mount_points(spec) {
            self.ensure(&root, &target, is_dir)?;
        }
        Ok(())
    }

    fn ensure(&mut self, root: &OwnedFd, target: &str, is_dir: bool) -> R<()> {
        let comps = components(target);
        if comps.is_empty() {
            return Err(format!("cannot mount over the root directory ({target:?})"));
        }
        for i in 0..comps.len() {
            let rel = comps[..=i].join("/");
            match open_in(root, &rel) {
                Ok(_) => continue,
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(format!("mount point {target}: /{rel}: {e}")),
            }
            let parent_rel = comps[..i].join("/");
            let parent = ctx(open_in(root, &parent_rel), || {
                format!("mount point {target}: /{parent_rel}")
            })?;
            let parent_in_upper = match self.upper {
                Some(upper) => i == 0 || upper.join(&parent_rel).symlink_metadata().is_ok(),
                None => true,
            };
            let parent_mtime_before = mtime(&parent)?;
            let name = comps[i].as_str();
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
            ctx(created, || format!("creating mount point /{rel}"))?;
            let parent_mtime_after = mtime(&parent)?;
            self.created.push(Stub {
                rel: PathBuf::from(rel),
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
            let parent = match open_in(&root, &parent_rel.to_string_lossy()) {
                Ok(p) => p,
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
                Err(rustix::io::Errno::NOTEMPTY) => continue,
                Err(rustix::io::Errno::NOENT) => continue,
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
/// metadata equals the lower one it was copied from.
pub(crate) fn drop_untouched_copied_up_parents(
    upper: &Path,
    lowerdirs: &[PathBuf],
    parents: &[CopiedUpParent],
    errors: &mut Vec<String>,
) {
    use std::os::unix::fs::MetadataExt;
    for p in parents {
        let up = upper.join(&p.rel);
        let Ok(meta) = up.symlink_metadata() else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let empty = std::fs::read_dir(&up)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if !empty {
            continue;
        }
        let lower = lowerdirs
            .iter()
            .find_map(|l| l.join(&p.rel).symlink_metadata().ok());
        let same = lower.is_some_and(|l| {
            l.is_dir()
                && l.mode() == meta.mode()
                && l.uid() == meta.uid()
                && l.gid() == meta.gid()
                && l.mtime() == meta.mtime()
                && l.mtime_nsec() == meta.mtime_nsec()
        });
        if same {
            if let Err(e) = std::fs::remove_dir(&up) {
                errors.push(format!("removing {} from the upperdir: {e}", up.display()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::components;

    #[test]
    fn normalizes_targets() {
        assert_eq!(components("/etc/hosts"), ["etc", "hosts"]);
        assert_eq!(
            components("//run/./secrets/../secrets/x"),
            ["run", "secrets", "x"]
        );
        assert!(components("/..").is_empty());
    }
}
