//! The filesystem side of RUN's mounts: a mask of whiteouts that hides what
//! `.dockerignore` leaves out of a context bind mount, and the scratch overlay
//! a bind mount of several directories (or a writable one) is made of. The RUN
//! dispatcher (`solver/dispatch/run.rs`) decides which mounts a step gets.

use crate::snapshot::SnapshotError;
use std::io;
use std::path::{Path, PathBuf};

/// Why a RUN mount's directories could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{0}")]
    Snapshot(#[source] SnapshotError),
    /// Listing the context or making a directory failed. Messages of a bare
    /// directory creation name no path (as they did before this type).
    #[error("{}{source}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Io {
        path: Option<PathBuf>,
        #[source]
        source: io::Error,
    },
    /// A whiteout for an ignored file could not be made.
    #[error("hiding {name}: {source}")]
    Hide {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("a snapshot path contains a NUL byte")]
    NulInPath,
    #[error("mounting an overlay: {0}")]
    Mount(#[source] io::Error),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> MountError + '_ {
    move |source| MountError::Io {
        path: Some(path.to_path_buf()),
        source,
    }
}

fn io_bare(source: io::Error) -> MountError {
    MountError::Io { path: None, source }
}

/// A layer of whiteouts for what the build context directory holds under `rel`
/// but the (`.dockerignore`-filtered) context does not, so that an overlay of it
/// above the directory shows exactly the context; None when nothing is hidden.
pub(crate) fn context_mask(
    snapshots: &crate::snapshot::Snapshots,
    ctx: &crate::source::context::Context,
    rel: &str,
) -> Result<Option<crate::snapshot::WorkDir>, MountError> {
    let included: std::collections::HashSet<&str> =
        ctx.entries.iter().map(|e| e.path.as_str()).collect();
    let mut hidden: Vec<String> = Vec::new();
    fn walk(
        root: &std::path::Path,
        rel: &str,
        included: &std::collections::HashSet<&str>,
        hidden: &mut Vec<String>,
    ) -> Result<(), MountError> {
        let dir = root.join(crate::names::path(rel));
        let rd = std::fs::read_dir(&dir).map_err(io_at(&dir))?;
        for e in rd.flatten() {
            let name = crate::names::encode_os(&e.file_name()).into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if !included.contains(path.as_str()) {
                hidden.push(path);
            } else if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(root, &path, included, hidden)?;
            }
        }
        Ok(())
    }
    // `rel` is resolved in the listing: every component a real directory.
    let is_dir = rel.is_empty()
        || ctx
            .entry(rel)
            .is_some_and(|e| e.kind == crate::source::context::FileKind::Dir);
    if !is_dir {
        return Ok(None);
    }
    walk(&ctx.root, rel, &included, &mut hidden)?;
    if hidden.is_empty() {
        return Ok(None);
    }
    let dir = snapshots.work_dir().map_err(MountError::Snapshot)?;
    for h in hidden {
        let p = dir.path().join(crate::names::path(&h));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io_bare)?;
        }
        kiln_oci::layer::overlay::make_whiteout(&p).map_err(|source| MountError::Hide {
            name: h.clone(),
            source,
        })?;
    }
    Ok(Some(dir))
}

/// An overlay of some directories (a stage's layers, the context) for `RUN
/// --mount=type=bind`, mounted in the builder's mount namespace and detached
/// when dropped. A writable one (`rw`) gets a throwaway upper directory, so
/// writes never reach the sources.
pub(crate) struct ScratchOverlay {
    _dir: crate::snapshot::WorkDir,
    mountpoint: PathBuf,
}

impl ScratchOverlay {
    pub(crate) fn mount(
        snapshots: &crate::snapshot::Snapshots,
        mut lowers: Vec<PathBuf>,
        writable: bool,
    ) -> Result<ScratchOverlay, MountError> {
        let dir = snapshots.work_dir().map_err(MountError::Snapshot)?;
        let mountpoint = dir.path().join("merged");
        std::fs::create_dir(&mountpoint).map_err(io_bare)?;
        // Overlay without an upper needs at least two lowers.
        if !writable && lowers.len() < 2 {
            lowers.push(snapshots.empty());
        }
        let lowerdir: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let mut data = format!("lowerdir={}", lowerdir.join(":"));
        let mut flags = rustix::mount::MountFlags::empty();
        if writable {
            let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
            for d in [&upper, &work] {
                std::fs::create_dir(d).map_err(io_bare)?;
            }
            data.push_str(&format!(
                ",upperdir={},workdir={}",
                upper.display(),
                work.display()
            ));
        } else {
            flags |= rustix::mount::MountFlags::RDONLY;
        }
        if !kiln_sandbox::userns::is_host_root() {
            // In kiln's user namespace (rootless) the snapshots mark opaque
            // directories with user.overlay.opaque, which only this option reads.
            data.push_str(",userxattr");
        }
        let data = std::ffi::CString::new(data).map_err(|_| MountError::NulInPath)?;
        rustix::mount::mount(
            "overlay",
            &mountpoint,
            "overlay",
            flags,
            Some(data.as_c_str()),
        )
        .map_err(|e| MountError::Mount(e.into()))?;
        Ok(ScratchOverlay {
            _dir: dir,
            mountpoint,
        })
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.mountpoint
    }
}

impl Drop for ScratchOverlay {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
    }
}
