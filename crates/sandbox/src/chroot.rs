//! Chroot isolation ([`Isolation::Chroot`]): for where kiln itself runs in an
//! unprivileged container (a CI pod) that allows no new namespaces and often no
//! mounts at all. The step runs in the helper's namespaces, `chroot`ed into a
//! directory (a copy of the lower layers, see [`crate::CopySnapshot`]).
//!
//! What the step sees, and what it does not get compared with
//! [`Isolation::Namespaces`]:
//!
//! - `/proc`, `/sys` (read-only where the remount is allowed) and `/dev` are
//!   the caller's, bound in recursively when mounts are allowed (kiln in its
//!   own user namespace); where they are not (root of a container without
//!   `CAP_SYS_ADMIN`), `/dev` holds the device nodes [`provision`] could make
//!   (null, zero, full, random, urandom, tty: `CAP_MKNOD`), and `/proc` and
//!   `/sys` are empty directories.
//! - `/etc/hosts` and `/etc/resolv.conf` are written into the directory before
//!   the step ([`provision`]), so they are part of the state the step's changes
//!   are compared with and are in no layer unless the step changes them.
//! - The caller's PID, network, UTS and IPC namespaces: the step sees the
//!   container's processes and network, and the hostname is the container's.
//!   `RUN --network=none` and `RUN --mount` are refused (they need namespaces
//!   or mounts).
//! - Docker's default capabilities less `CAP_SYS_CHROOT` (so the step cannot
//!   chroot its way out), `no_new_privs` and Docker's default seccomp profile,
//!   as in the namespaced sandbox. The step is in a process group of its own,
//!   killed as a whole when the step ends or is cancelled.

use crate::helper::{HelperOutcome, HelperReport, STEP_PID};
use crate::idmap::IdMap;
use crate::spec::{Isolation, NetworkMode, Rootfs, RunSpec};
use crate::sys::{ctx, wait_pid, ExecChild, Exit, R};
use rustix::mount::{MountFlags, UnmountFlags};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;

/// The directories bound from the caller into the step's root, and whether
/// read-only.
const BOUND: [(&str, &str, bool); 3] = [
    ("/proc", "proc", false),
    ("/sys", "sys", true),
    ("/dev", "dev", false),
];

/// Device nodes made in `/dev` where kiln may (`CAP_MKNOD`): name, major, minor.
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// `path` inside `root` is a real directory (no symlink on the way out of it).
fn real_dir(root: &Path, name: &str) -> bool {
    root.join(name)
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_dir())
}

/// Makes `root/name` a directory (mode 0755, root's) when nothing is there.
fn ensure_dir(root: &Path, name: &str) -> std::io::Result<()> {
    let p = root.join(name);
    match p.symlink_metadata() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(&p)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
        }
        Err(e) => Err(e),
    }
}

/// Writes `content` as the regular file `root/etc/name` (mode 0644), replacing
/// a file or symlink there; nothing when `/etc` is not a real directory.
fn write_etc(root: &Path, name: &str, content: &[u8]) -> std::io::Result<()> {
    ensure_dir(root, "etc")?;
    if !real_dir(root, "etc") {
        return Ok(());
    }
    let p = root.join("etc").join(name);
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => std::fs::remove_file(&p)?,
        Err(_) => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)?;
    f.write_all(content)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
}

/// Prepares a copied root for a chroot step, before the state its changes are
/// compared with is recorded: the mount points `/proc`, `/sys`, `/dev`, the
/// device nodes kiln may make, and `spec`'s `/etc/hosts` and `/etc/resolv.conf`.
/// None of it reaches a layer unless the step changes it.
pub fn provision(root: &Path, spec: &RunSpec) -> std::io::Result<()> {
    for (_, name, _) in BOUND {
        ensure_dir(root, name)?;
    }
    if real_dir(root, "dev") {
        for (name, major, minor) in DEVICES {
            let p = root.join("dev").join(name);
            if p.symlink_metadata().is_ok() {
                continue;
            }
            // Without CAP_MKNOD (a user namespace) there is no /dev/null: said in the README.
            let _ = rustix::fs::mknodat(
                rustix::fs::CWD,
                &p,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o666),
                rustix::fs::makedev(major, minor),
            );
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666));
        }
    }
    if let Some(hosts) = &spec.hosts {
        write_etc(root, "hosts", hosts)?;
    }
    if let Some(resolv) = &spec.resolv_conf {
        write_etc(root, "resolv.conf", resolv)?;
    }
    Ok(())
}

/// Detaches whatever a chroot step left bound in `root` (a helper killed
/// before it could), so removing the directory never reaches the caller's
/// `/dev`. Harmless where nothing is mounted.
pub fn release(root: &Path) {
    for (_, name, _) in BOUND {
        let _ = rustix::mount::unmount(root.join(name), UnmountFlags::DETACH);
    }
}

/// The helper's side of a chroot run.
pub(crate) fn run(
    spec: &RunSpec,
    id_map: &IdMap,
    filter: Option<&[crate::seccomp::SockFilter]>,
) -> R<HelperReport> {
    debug_assert_eq!(spec.isolation, Isolation::Chroot);
    let Rootfs::Dir(root) = &spec.rootfs else {
        return Err("chroot isolation runs on a directory, not on an overlay".into());
    };
    if !spec.mounts.is_empty() {
        return Err(
            "RUN --mount needs mount namespaces, which chroot isolation does not have".into(),
        );
    }
    if spec.network == NetworkMode::None && spec.join_netns.is_none() {
        return Err(
            "--network=none needs a network namespace, which chroot isolation does not have".into(),
        );
    }
    if let Some(netns) = &spec.join_netns {
        crate::netns::join(netns)?;
    }
    let mut cleanup_errors = Vec::new();
    // The caller's /proc, /sys and /dev, where mounts are allowed.
    let mut bound = Vec::new();
    for (source, name, readonly) in BOUND {
        if !real_dir(root, name) {
            continue;
        }
        let target = root.join(name);
        if rustix::mount::mount_bind_recursive(source, &target).is_err() {
            continue;
        }
        if readonly {
            let _ =
                rustix::mount::mount_remount(&target, MountFlags::BIND | MountFlags::RDONLY, c"");
        }
        bound.push(target);
    }
    let outcome = fork_step(spec, id_map, filter, root);
    for target in bound {
        if let Err(e) = rustix::mount::unmount(&target, UnmountFlags::DETACH) {
            cleanup_errors.push(format!("unmounting {}: {e}", target.display()));
        }
    }
    outcome.map(|outcome| HelperReport {
        outcome,
        cleanup_errors,
    })
}

fn fork_step(
    spec: &RunSpec,
    id_map: &IdMap,
    filter: Option<&[crate::seccomp::SockFilter]>,
    root: &Path,
) -> R<HelperOutcome> {
    if crate::helper::CANCELLED.load(Ordering::SeqCst) != 0 {
        return Ok(HelperOutcome::Cancelled);
    }
    let last_cap = crate::container::last_cap();
    let child = ExecChild::fork(127, || enter_and_exec(spec, id_map, filter, root, last_cap))?;
    let pid = child.pid;
    // The whole group: there is no PID namespace whose end kills what the step started.
    if !spec.tty {
        // SAFETY: setpgid on our own child (it does the same itself; whoever is first wins).
        unsafe { libc::setpgid(pid, pid) };
    }
    STEP_PID.store(if spec.tty { pid } else { -pid }, Ordering::SeqCst);
    if crate::helper::CANCELLED.load(Ordering::SeqCst) != 0 {
        // SAFETY: our own child's group.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    if let Some(pid_file) = &spec.pid_file {
        let _ = std::fs::write(pid_file, format!("{pid}\n"));
    }
    let setup_error = child.setup_error();
    let status = wait_pid(pid);
    STEP_PID.store(0, Ordering::SeqCst);
    // What the step left running in its group goes with it.
    // SAFETY: kill of the step's own process group.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    if let Some(pid_file) = &spec.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    if !setup_error.is_empty() {
        return Err(setup_error);
    }
    if crate::helper::CANCELLED.load(Ordering::SeqCst) != 0 {
        return Ok(HelperOutcome::Cancelled);
    }
    Ok(match status? {
        Exit::Code(c) => HelperOutcome::Exited(c),
        Exit::Signal(s) => HelperOutcome::Signaled(s),
    })
}

/// In the forked child: chroot and exec. Returns only on error.
fn enter_and_exec(
    spec: &RunSpec,
    id_map: &IdMap,
    filter: Option<&[crate::seccomp::SockFilter]>,
    root: &Path,
    last_cap: u32,
) -> String {
    let run = || -> R<std::convert::Infallible> {
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
        if !spec.tty {
            // SAFETY: setpgid on this process.
            unsafe { libc::setpgid(0, 0) };
        }
        ctx(rustix::process::chdir(root), || {
            format!("chdir {}", root.display())
        })?;
        ctx(rustix::process::chroot("."), || {
            format!("chroot {}", root.display())
        })?;
        ctx(rustix::process::chdir("/"), || "chdir /".into())?;
        // CAP_SYS_CHROOT goes: a second chroot is the way out of a first one.
        crate::container::become_user_and_exec(spec, id_map, filter, last_cap, 1 << 18)
    };
    match run() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// argv[1] of the probe process ([`probe`]).
pub(crate) const PROBE_ARG: &str = "__kiln-sandbox-probe";

/// What this process may do, asked once per build before the first RUN step
/// ([`probe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Namespaces, a fresh `/proc` and overlay with its upper directory in the
    /// store: the namespaced sandbox over overlay.
    Full,
    /// Namespaces work, but overlay cannot have its upper directory on the
    /// store's filesystem (an overlay filesystem itself, e.g. a container's
    /// root): the namespaced sandbox over a copy. The reason.
    NoOverlayUpper(String),
    /// No mount namespace, or no fresh `/proc` in one (a container's masked
    /// `/proc`): chroot isolation over a copy. The reason.
    NoNamespaces(String),
}

/// Finds out, in a short-lived helper process, whether RUN steps can have
/// their namespaces and a fresh `/proc`, and whether overlay accepts an upper
/// directory under `scratch` (an existing, empty directory on the store's
/// filesystem, left empty).
pub fn probe(scratch: &Path) -> Probe {
    let out = std::process::Command::new("/proc/self/exe")
        .arg(PROBE_ARG)
        .arg(scratch)
        .stdin(std::process::Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => return Probe::NoNamespaces(format!("cannot start the probe: {e}")),
    };
    let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
    match out.status.code() {
        Some(0) => Probe::Full,
        Some(3) => Probe::NoOverlayUpper(why),
        _ => Probe::NoNamespaces(why),
    }
}

/// The probe process: exit 0 when all works, 2 (reason on stderr) without
/// namespaces or a fresh `/proc`, 3 without overlay on the scratch directory.
pub(crate) fn probe_main() -> ! {
    let scratch = std::env::args_os().nth(2).map(std::path::PathBuf::from);
    let code = match probe_namespaces() {
        Err(e) => {
            eprintln!("{e}");
            2
        }
        Ok(()) => match scratch.as_deref().map(probe_overlay) {
            Some(Err(e)) => {
                eprintln!("{e}");
                3
            }
            _ => 0,
        },
    };
    std::process::exit(code)
}

fn probe_namespaces() -> R<()> {
    use rustix::thread::UnshareFlags;
    ctx(
        crate::sys::unshare(
            UnshareFlags::NEWNS
                | UnshareFlags::NEWPID
                | UnshareFlags::NEWUTS
                | UnshareFlags::NEWIPC,
        ),
        || "unshare of mount, PID, UTS and IPC namespaces".into(),
    )?;
    ctx(
        rustix::mount::mount_change(
            "/",
            rustix::mount::MountPropagationFlags::REC
                | rustix::mount::MountPropagationFlags::PRIVATE,
        ),
        || "making / private in a new mount namespace".into(),
    )?;
    // A fresh /proc needs a process in the new PID namespace.
    // SAFETY: single-threaded probe process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let r = rustix::mount::mount("proc", "/proc", "proc", MountFlags::empty(), c"");
        if let Err(e) = r {
            eprintln!("cannot mount a fresh /proc: {e}");
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(1) };
        }
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    match wait_pid(pid)? {
        Exit::Code(0) => Ok(()),
        _ => Err(String::new()),
    }
}

fn probe_overlay(scratch: &Path) -> R<()> {
    let dirs: Vec<_> = ["lower", "upper", "work", "merged"]
        .iter()
        .map(|d| scratch.join(d))
        .collect();
    for d in &dirs {
        ctx(std::fs::create_dir(d), || {
            format!("creating {}", d.display())
        })?;
    }
    let rootless = !crate::userns::is_host_root();
    let r = crate::helper::mount_rootfs(
        &Rootfs::Overlay {
            lowerdirs: vec![dirs[0].clone()],
            upperdir: dirs[1].clone(),
            workdir: dirs[2].clone(),
        },
        &dirs[3],
        rootless,
    );
    if r.is_ok() {
        let _ = rustix::mount::unmount(&dirs[3], UnmountFlags::DETACH);
    }
    // overlay leaves a `work` directory (mode 000) inside its workdir.
    let _ = std::fs::remove_dir(dirs[2].join("work"));
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
    r
}
