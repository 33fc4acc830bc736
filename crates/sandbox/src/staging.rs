//! What a step's mounts need, prepared by the helper before the step starts:
//! files on the staging tmpfs (`/etc/hosts`, `/etc/resolv.conf`, secrets) and
//! each bind mount's source, resolved inside its root.

use crate::spec::{MountSpec, RunSpec};
use crate::sys::{ctx, R};
use rustix::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What mounts need, prepared before the step: files on the staging tmpfs,
/// and what each bind mount's source is, by mount index.
pub(crate) struct Staged {
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    /// Staged file for each `MountSpec::Secret`, same index as `spec.mounts`.
    pub secrets: Vec<Option<PathBuf>>,
    /// For each `MountSpec::Bind` (same index): whether its source, resolved
    /// here, is a directory (the kind of mount point it needs).
    pub bind_is_dir: Vec<Option<bool>>,
}

/// A bind mount's source, resolved inside its root (see [`crate::rootpath`])
/// and held open: the step mounts this very file (through
/// `/proc/self/fd/N`), whatever happens to the path afterwards. Opened where
/// it is mounted: a mount can only be bound in the mount namespace that
/// holds it, and the step has a namespace of its own.
pub(crate) struct BindSource {
    pub fd: OwnedFd,
    pub is_dir: bool,
}

impl BindSource {
    pub fn open(root: &Path, path: &str) -> R<BindSource> {
        let what = || format!("bind mount source {path} (in {})", root.display());
        let root_fd = ctx(crate::rootpath::open_root(root), what)?;
        let fd = ctx(crate::rootpath::open_in_root(&root_fd, path, true), what)?;
        let st = ctx(rustix::fs::fstat(&fd), what)?;
        let is_dir =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
        Ok(BindSource { fd, is_dir })
    }

    /// A path naming exactly the opened file (a /proc magic link).
    pub fn path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }
}

fn write_staged(path: &Path, content: &[u8], mode: u32, uid: u32, gid: u32) -> R<()> {
    use std::os::unix::fs::PermissionsExt;
    ctx(std::fs::write(path, content), || {
        format!("writing {}", path.display())
    })?;
    ctx(
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)),
        || format!("chmod {}", path.display()),
    )?;
    ctx(std::os::unix::fs::chown(path, Some(uid), Some(gid)), || {
        format!("chown {}", path.display())
    })
}

pub(crate) fn stage_files(spec: &RunSpec, stage: &Path) -> R<Staged> {
    let mut staged = Staged {
        hosts: None,
        resolv_conf: None,
        secrets: Vec::new(),
        bind_is_dir: Vec::new(),
    };
    if let Some(hosts) = &spec.hosts {
        let p = stage.join("hosts");
        write_staged(&p, hosts, 0o644, 0, 0)?;
        staged.hosts = Some(p);
    }
    if let Some(resolv) = &spec.resolv_conf {
        let p = stage.join("resolv.conf");
        write_staged(&p, resolv, 0o644, 0, 0)?;
        staged.resolv_conf = Some(p);
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        staged.secrets.push(match m {
            MountSpec::Secret {
                content,
                mode,
                uid,
                gid,
                target,
            } => {
                let p = stage.join(format!("secret-{i}"));
                write_staged(&p, content, *mode, *uid, *gid)
                    .map_err(|e| format!("secret for {target}: {e}"))?;
                Some(p)
            }
            _ => None,
        });
        staged.bind_is_dir.push(match m {
            MountSpec::Bind { root, path, .. } => Some(BindSource::open(root, path)?.is_dir),
            _ => None,
        });
    }
    Ok(staged)
}
