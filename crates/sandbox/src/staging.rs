//! Files a step's mounts bind from the helper's staging tmpfs (`/etc/hosts`,
//! `/etc/resolv.conf`, secrets), written before the step starts.

use crate::spec::{MountSpec, RunSpec};
use crate::sys::{ctx, R};
use std::path::{Path, PathBuf};

/// Files that mounts bind from the staging tmpfs, by mount index.
pub(crate) struct Staged {
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    /// Staged file for each `MountSpec::Secret`, same index as `spec.mounts`.
    pub secrets: Vec<Option<PathBuf>>,
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
    }
    Ok(staged)
}
