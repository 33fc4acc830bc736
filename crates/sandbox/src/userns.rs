//! kiln's own user namespace for rootless use, and what code must know when
//! it runs inside one.
//!
//! A non-root user cannot chown files to the image's ids, create the 0/0
//! character devices of overlay whiteouts, or mount anything. So for the
//! commands that read or write image filesystems (`kiln build`, `run`,
//! `import`, `prune`, `unshare`) kiln puts *itself* in a user namespace first ([`enter_user_namespace_if_needed`]):
//! the user's uid becomes 0, its `/etc/subuid`/`/etc/subgid` ranges become
//! 1..=N (through `newuidmap`/`newgidmap`, as for a rootless RUN step), and a
//! new mount namespace goes with it. From then on kiln is root of that
//! namespace: extracting layers restores their owners, COPY `--chown` and
//! WORKDIR work, overlay mounts are possible (kernel ≥ 5.11) and every file
//! shows its in-container ids, so the layers written are the ones a root build
//! writes. What still differs from real root is asked with [`is_host_root`]:
//! overlay needs `userxattr` and marks opaque directories with
//! `user.overlay.opaque` ([`overlay_xattr`]), and `/dev` nodes cannot be made.
//!
//! The process enters the namespace itself (`unshare` while it is still
//! single-threaded, at the start of `main`) instead of re-executing into it:
//! the result is the same, and there is no second process to forward the
//! terminal, signals and the exit code through. The sandbox helper started for
//! each RUN inherits the namespace and only adds the step's own namespaces.

use crate::idmap::IdMap;
pub use crate::idmap::{current_maps, MapLine, NamespaceMaps};
use crate::sys::{ctx, unshare, wait_pid, Exit, R};
use kiln_oci::layer::OverlayXattr;
use rustix::thread::UnshareFlags;

/// Whether this process is in the initial user namespace.
pub fn in_initial_user_namespace() -> bool {
    current_maps().is_none()
}

/// Root of the initial user namespace: the only identity with the host's
/// privileges (`trusted.*` xattrs, `mknod` of devices, sysfs of the host network).
pub fn is_host_root() -> bool {
    rustix::process::geteuid().is_root() && in_initial_user_namespace()
}

/// The xattr namespace that marks opaque directories in the overlay mounts
/// this process makes: `trusted.*` for host root, else `user.*` (overlay
/// mounted with `userxattr`). Host root without `CAP_SYS_ADMIN` (root of an
/// unprivileged container) cannot write `trusted.*` either: `user.*` too (it
/// mounts no overlay; the copying snapshotter reads both).
pub fn overlay_xattr() -> OverlayXattr {
    if is_host_root() && has_cap_sys_admin() {
        OverlayXattr::Trusted
    } else {
        OverlayXattr::User
    }
}

/// Why kiln could not enter its user namespace.
#[derive(Debug, thiserror::Error)]
#[error("rootless: cannot enter a user namespace: {message}")]
pub struct UsernsError {
    message: String,
    denied: bool,
}

/// What `enter` says when the kernel refuses the user namespace itself.
const CREATING_USERNS: &str = "creating a user namespace";

impl UsernsError {
    fn new(message: String) -> UsernsError {
        // The kernel refuses it (EPERM): a seccomp filter (Docker's default
        // profile for a non-root user), no CAP_SYS_ADMIN where
        // unprivileged_userns_clone is off, or max_user_namespaces 0 (ENOSPC).
        let denied = message.starts_with(CREATING_USERNS)
            && [rustix::io::Errno::PERM, rustix::io::Errno::NOSPC]
                .iter()
                .any(|e| message.ends_with(&e.to_string()));
        UsernsError { message, denied }
    }

    /// Whether no user namespace may be made here at all (rather than the
    /// id mapping failing): then a non-root user has no way to run steps or
    /// give files their image owners, with any isolation.
    pub fn denied(&self) -> bool {
        self.denied
    }
}

/// For a non-root user: puts this process in a new user namespace where the
/// user is uid/gid 0 and its subordinate ids are 1..=N (or, without them,
/// only 0, with [`IdMap::limitation`] saying what that limits), plus a new
/// mount namespace. Returns the mapping used (in host terms), or None when
/// the process is root already (of any namespace) and nothing was done.
///
/// Must be called while the process is single-threaded (first thing in
/// `main`): the kernel refuses a new user namespace to a threaded process.
pub fn enter_user_namespace_if_needed() -> Result<Option<IdMap>, UsernsError> {
    if rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        });
    if threads.is_some_and(|n| n > 1) {
        return Err(UsernsError::new(
            "the process already runs several threads (call this first in main)".into(),
        ));
    }
    let mut map = IdMap::for_current_user();
    // In the namespace, before it has a map, the ids read as the overflow id.
    let (uid, gid) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    if let Err(e) = enter(&map) {
        // The namespace was made but newuidmap/newgidmap could not map the
        // subordinate ranges (in a container: set-uid newuidmap is not the
        // namespace's owner and has no CAP_SYS_ADMIN there): map the user's
        // own ids, as without newuidmap.
        if map.is_single_id() || e.starts_with(CREATING_USERNS) {
            return Err(UsernsError::new(e));
        }
        map = IdMap::single_id(
            uid,
            gid,
            &format!("newuidmap/newgidmap could not map the subordinate ids: {e}"),
        );
        map_own_ids(&map).map_err(|own| {
            UsernsError::new(format!("{e}; mapping only the user's own ids: {own}"))
        })?;
    }
    ctx(unshare(UnshareFlags::NEWNS), || {
        "creating a mount namespace".into()
    })
    .map_err(UsernsError::new)?;
    // Mounts kiln makes (overlays for RUN --mount) stay in this namespace and
    // vanish with the process.
    ctx(
        rustix::mount::mount_change(
            "/",
            rustix::mount::MountPropagationFlags::REC
                | rustix::mount::MountPropagationFlags::PRIVATE,
        ),
        || "making kiln's mounts private".into(),
    )
    .map_err(UsernsError::new)?;
    Ok(Some(map))
}

fn write_proc_file(path: &str, content: &str) -> R<()> {
    ctx(std::fs::write(path, content), || {
        format!("writing {path:?} ({content:?})")
    })
}

/// Maps the single ids of `map` in the user namespace this process has just
/// entered (no map written yet), from inside: no helper tool needed.
fn map_own_ids(map: &IdMap) -> R<()> {
    write_proc_file("/proc/self/setgroups", "deny")?;
    let (u, g) = (map.uids[0], map.gids[0]);
    write_proc_file(
        "/proc/self/uid_map",
        &format!("{} {} 1\n", u.container, u.host),
    )?;
    write_proc_file(
        "/proc/self/gid_map",
        &format!("{} {} 1\n", g.container, g.host),
    )
}

/// Makes the calling (single-threaded) process enter a new user namespace
/// mapped per `map`: directly for a single id,
/// through `newuidmap`/`newgidmap` (run by a forked child still outside the
/// namespace) for subordinate ranges.
pub(crate) fn enter(map: &IdMap) -> R<()> {
    if map.uids.len() == 1 && map.gids.len() == 1 && map.uids[0].size == 1 && map.gids[0].size == 1
    {
        ctx(unshare(UnshareFlags::NEWUSER), || CREATING_USERNS.into())?;
        return map_own_ids(map);
    }
    let (ready_r, ready_w) = ctx(
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC),
        || "pipe".into(),
    )?;
    let me = std::process::id();
    let uid_args: Vec<String> = map
        .uids
        .iter()
        .flat_map(|r| [r.container, r.host, r.size])
        .map(|n| n.to_string())
        .collect();
    let gid_args: Vec<String> = map
        .gids
        .iter()
        .flat_map(|r| [r.container, r.host, r.size])
        .map(|n| n.to_string())
        .collect();
    // SAFETY: the helper is single-threaded, so the child may do anything.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(ready_w);
        let mut b = [0u8; 1];
        let ok = matches!(rustix::io::read(&ready_r, &mut b), Ok(1));
        let run = |tool: &str, args: &[String]| {
            std::process::Command::new(tool)
                .arg(me.to_string())
                .args(args)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        let code = if ok && run("newuidmap", &uid_args) && run("newgidmap", &gid_args) {
            0
        } else {
            1
        };
        // SAFETY: leave the forked child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(ready_r);
    let unshared = unshare(UnshareFlags::NEWUSER);
    if unshared.is_ok() {
        let _ = rustix::io::write(&ready_w, b"x");
    }
    drop(ready_w);
    let status = wait_pid(pid);
    ctx(unshared, || CREATING_USERNS.into())?;
    match status {
        Ok(Exit::Code(0)) => Ok(()),
        _ => Err(format!(
            "newuidmap/newgidmap failed to map uids {} and gids {} (check /etc/subuid and /etc/subgid)",
            uid_args.join(" "),
            gid_args.join(" ")
        )),
    }
}

/// Whether `CAP_SYS_ADMIN` is in this process's effective set.
pub fn has_cap_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}
