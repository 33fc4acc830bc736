//! The sandbox helper: the re-executed, single-threaded process that builds
//! the namespaces and forks the step.
//!
//! Process tree of one run:
//!
//! ```text
//! caller (any threads) ── spawns /proc/self/exe __kiln-sandbox-helper
//!   helper: [user ns] + new mount/UTS/IPC/PID[/net] namespaces, mounts the
//!           rootfs and a private tmpfs for hosts/resolv.conf/secrets,
//!           creates missing mount points, forks:
//!     step (PID 1 of the new PID namespace): own mount namespace, /proc,
//!           /dev, /sys, mounts, pivot_root, user, capabilities,
//!           no_new_privs, the seccomp filter (compiled by the helper), exec.
//!   helper: waits, removes the mount points it created, reports the result
//!           as JSON on fd 3.
//! ```
//!
//! Everything mounted lives in the helper's private mount namespace, so nothing
//! is left on the host however the run ends. The helper dies with its caller
//! (`PR_SET_PDEATHSIG`), the step dies with the helper, and when the step (PID 1)
//! dies the kernel kills everything else in its PID namespace.

use crate::idmap::IdMap;
use crate::spec::{NetworkMode, Rootfs, RunSpec, SecurityMode};
use crate::staging::{stage_files, Staged};
use crate::sys::{ctx, unshare, wait_pid, ExecChild, Exit, R};
use crate::{container, mount_stubs, seccomp};
use rustix::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::thread::UnshareFlags;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

/// argv[1] that turns a kiln (or test) binary into the sandbox helper.
pub const HELPER_ARG: &str = "__kiln-sandbox-helper";
/// The fd on which the helper writes its [`HelperReport`].
pub(crate) const REPORT_FD: i32 = 3;
/// The fd on which the helper gets the step's stdin (`RunSpec::stdin`/`tty`).
pub(crate) const STDIN_FD: i32 = 4;

/// What the caller sends on the helper's stdin.
#[derive(Serialize, Deserialize)]
pub(crate) struct HelperRequest {
    pub spec: RunSpec,
    pub id_map: IdMap,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum HelperOutcome {
    Exited(i32),
    Signaled(i32),
    /// The step was killed because the helper was asked to stop.
    Cancelled,
    SetupFailed(String),
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct HelperReport {
    pub outcome: HelperOutcome,
    /// Problems while cleaning up after the step (mount points not removed).
    pub cleanup_errors: Vec<String>,
}

/// Host pid of the step, for the signal handler.
/// Negative: the step's process group (chroot isolation).
pub(crate) static STEP_PID: AtomicI32 = AtomicI32::new(0);
pub(crate) static CANCELLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    CANCELLED.store(1, Ordering::SeqCst);
    let pid = STEP_PID.load(Ordering::SeqCst);
    if pid != 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Entry point of the helper process; never returns.
pub(crate) fn helper_main() -> ! {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(REPORT_FD, libc::F_GETFD) } < 0 {
        eprintln!(
            "{HELPER_ARG} is kiln's internal sandbox helper; it is not meant to be run by hand"
        );
        std::process::exit(2);
    }
    // SAFETY: fd 3 was set up by the caller (checked open above); we own it.
    let report_fd = unsafe { OwnedFd::from_raw_fd(REPORT_FD) };
    let _ = rustix::io::fcntl_setfd(&report_fd, rustix::io::FdFlags::CLOEXEC);
    // SIGTERM/SIGINT/SIGHUP: kill the step, then clean up and report normally.
    // They are unblocked too: a blocked mask is inherited from whoever started
    // kiln, and the handler must run (SIGTERM is also the parent-death signal).
    // A SIGINT or SIGHUP that kiln's caller ignores (`nohup`, a script's `cmd &`)
    // stays ignored here as in kiln itself, which inherited it the same way:
    // Ctrl-C to the terminal's process group then stops neither.
    // SAFETY: the handler only touches atomics and calls kill(2); the set is
    // initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            if sig != libc::SIGTERM && crate::signal_is_ignored(sig) {
                continue;
            }
            libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t);
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    // When the caller (the thread that spawned us) dies, stop the same way:
    // the step is killed and the mount points are still cleaned up.
    let caller = rustix::process::getppid();
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM));
    if rustix::process::getppid() != caller {
        std::process::exit(1);
    }
    let outcome_and_errors = read_request().and_then(run);
    let report = match outcome_and_errors {
        Ok(r) => r,
        Err(message) => HelperReport {
            outcome: HelperOutcome::SetupFailed(message),
            cleanup_errors: Vec::new(),
        },
    };
    let mut out = std::fs::File::from(report_fd);
    let json = serde_json::to_vec(&report).unwrap_or_default();
    let _ = out.write_all(&json);
    drop(out);
    std::process::exit(0)
}

fn read_request() -> R<HelperRequest> {
    let mut buf = Vec::new();
    ctx(std::io::stdin().lock().read_to_end(&mut buf), || {
        "reading the run request".into()
    })?;
    let req: HelperRequest = ctx(serde_json::from_slice(&buf), || {
        "decoding the run request".into()
    })?;
    if req.spec.stdin || req.spec.tty {
        // The caller's descriptor (its stdin, or a terminal) on STDIN_FD.
        // SAFETY: plain dup2/close of descriptors this process owns.
        unsafe {
            if libc::dup2(STDIN_FD, 0) < 0 {
                return Err(format!(
                    "the step's standard input: {}",
                    std::io::Error::last_os_error()
                ));
            }
            libc::close(STDIN_FD);
        }
        return Ok(req);
    }
    // The step's stdin is /dev/null.
    let null = ctx(std::fs::File::open("/dev/null"), || {
        "opening /dev/null".into()
    })?;
    // SAFETY: plain dup2 onto fd 0.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(format!(
            "dup2 /dev/null: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(req)
}

/// The directory (under the temp dir, in the helper's private mount namespace)
/// where the rootfs and the staging tmpfs are mounted.
struct Workspace {
    dir: PathBuf,
    root: PathBuf,
    stage: PathBuf,
}

impl Workspace {
    fn create() -> R<Workspace> {
        let base = std::env::temp_dir();
        let pid = std::process::id();
        for n in 0..1000 {
            let dir = base.join(format!("kiln-sandbox-{pid}-{n}"));
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let ws = Workspace {
                        root: dir.join("root"),
                        stage: dir.join("stage"),
                        dir,
                    };
                    for d in [&ws.root, &ws.stage] {
                        ctx(std::fs::create_dir(d), || {
                            format!("creating {}", d.display())
                        })?;
                    }
                    return Ok(ws);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("creating {}: {e}", dir.display())),
            }
        }
        Err(format!("no free workspace name under {}", base.display()))
    }

    fn remove(&self, errors: &mut Vec<String>) {
        for d in [&self.root, &self.stage, &self.dir] {
            if let Err(e) = std::fs::remove_dir(d) {
                errors.push(format!("removing {}: {e}", d.display()));
            }
        }
    }
}

fn run(req: HelperRequest) -> R<HelperReport> {
    let HelperRequest { spec, id_map } = req;
    if spec.args.is_empty() {
        return Err("no command to run".into());
    }
    if spec.isolation == crate::spec::Isolation::Chroot {
        return crate::chroot::run(&spec, &id_map, step_filter(&spec)?.as_deref());
    }
    // A non-root caller gets a user namespace per step. Root of a user
    // namespace (kiln's own, see `userns`) is already mapped: it stays there,
    // but like any rootless run it lacks the host's privileges (overlay needs
    // `userxattr`, /dev nodes are bind-mounted, sysfs may be refused).
    let new_user_namespace = !rustix::process::geteuid().is_root();
    if let Some(netns) = &spec.join_netns {
        crate::netns::join(netns)?;
    }
    if new_user_namespace {
        crate::userns::enter(&id_map)?;
    }
    let rootless = new_user_namespace || !crate::userns::in_initial_user_namespace();
    let mut flags =
        UnshareFlags::NEWNS | UnshareFlags::NEWUTS | UnshareFlags::NEWIPC | UnshareFlags::NEWPID;
    let own_network = spec.network == NetworkMode::None && spec.join_netns.is_none();
    if own_network {
        flags |= UnshareFlags::NEWNET;
    }
    ctx(unshare(flags), || "creating namespaces (unshare)".into())?;
    ctx(
        rustix::mount::mount_change(
            "/",
            MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
        ),
        || "making / private".into(),
    )?;
    ctx(
        rustix::system::sethostname(spec.hostname.as_bytes()),
        || format!("setting hostname {:?}", spec.hostname),
    )?;
    if own_network {
        loopback_up()?;
    }

    // Docker's default seccomp profile for the default capabilities; the
    // step installs it right before exec. `--security=insecure`: none.
    let filter = step_filter(&spec)?;

    let ws = Workspace::create()?;
    let mut cleanup_errors = Vec::new();
    let result = run_in_workspace(
        &spec,
        &id_map,
        rootless,
        filter.as_deref(),
        &ws,
        &mut cleanup_errors,
    );
    ws.remove(&mut cleanup_errors);
    result.map(|outcome| HelperReport {
        outcome,
        cleanup_errors,
    })
}

/// Docker's default seccomp profile for the default capabilities, compiled;
/// `--security=insecure`: none.
fn step_filter(spec: &RunSpec) -> R<Option<Vec<seccomp::SockFilter>>> {
    Ok(match spec.security {
        SecurityMode::Sandbox => {
            let caps = container::DEFAULT_CAPABILITIES
                .iter()
                .map(|c| c.1)
                .collect();
            seccomp::Target::native(caps)
                .map(|t| seccomp::default_filter(&t))
                .transpose()?
        }
        SecurityMode::Insecure => None,
    })
}

fn run_in_workspace(
    spec: &RunSpec,
    id_map: &IdMap,
    rootless: bool,
    filter: Option<&[seccomp::SockFilter]>,
    ws: &Workspace,
    cleanup_errors: &mut Vec<String>,
) -> R<HelperOutcome> {
    ctx(
        rustix::mount::mount(
            "tmpfs",
            &ws.stage,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            c"mode=700",
        ),
        || "mounting the staging tmpfs".into(),
    )?;
    let result = stage_files(spec, &ws.stage).and_then(|staged| {
        mount_rootfs(&spec.rootfs, &ws.root, rootless)?;
        let (upper, lowerdirs): (Option<&Path>, &[PathBuf]) = match &spec.rootfs {
            Rootfs::Overlay {
                upperdir,
                lowerdirs,
                ..
            } => (Some(upperdir.as_path()), lowerdirs),
            Rootfs::Dir(_) => (None, &[]),
        };
        let mut stubs = mount_stubs::Stubs::new(&ws.root, upper);
        let result = stubs
            .create_all(spec, &staged)
            .and_then(|()| fork_step(spec, id_map, filter, ws, &staged));
        let removed = stubs.remove_all(cleanup_errors);
        if let Err(e) = rustix::mount::unmount(&ws.root, UnmountFlags::empty()) {
            cleanup_errors.push(format!("unmounting the rootfs: {e}"));
        } else if let Some(upper) = upper {
            // Directories overlay copied up only because we created a mount
            // point in them go again, so the upperdir holds the step's changes only.
            mount_stubs::drop_untouched_copied_up_parents(
                upper,
                lowerdirs,
                &removed,
                cleanup_errors,
            );
        }
        result
    });
    if let Err(e) = rustix::mount::unmount(&ws.stage, UnmountFlags::DETACH) {
        cleanup_errors.push(format!("unmounting the staging tmpfs: {e}"));
    }
    result
}

/// Backslash-escapes what the legacy overlay option string treats specially.
fn escape_overlay_path(p: &Path) -> String {
    let mut out = String::new();
    for c in p.to_string_lossy().chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(crate) fn mount_rootfs(rootfs: &Rootfs, target: &Path, rootless: bool) -> R<()> {
    match rootfs {
        Rootfs::Dir(dir) => ctx(rustix::mount::mount_bind_recursive(dir, target), || {
            format!("bind-mounting rootfs {}", dir.display())
        }),
        Rootfs::Overlay {
            lowerdirs,
            upperdir,
            workdir,
        } => {
            if lowerdirs.is_empty() {
                return Err("overlay rootfs needs at least one lowerdir".into());
            }
            let lowerdirs = &distinct_lowerdirs(lowerdirs);
            match mount_overlay_fsconfig(lowerdirs, upperdir, workdir, target, rootless) {
                Ok(()) => Ok(()),
                Err(new_api_err) => {
                    // Kernels before 6.8 lack "lowerdir+": use the option string.
                    let lower: Vec<String> =
                        lowerdirs.iter().map(|p| escape_overlay_path(p)).collect();
                    let mut data = format!(
                        "lowerdir={},upperdir={},workdir={}",
                        lower.join(":"),
                        escape_overlay_path(upperdir),
                        escape_overlay_path(workdir)
                    );
                    if rootless {
                        data.push_str(",userxattr");
                    }
                    let data = ctx(std::ffi::CString::new(data), || "overlay options".into())?;
                    rustix::mount::mount(
                        "overlay",
                        target,
                        "overlay",
                        MountFlags::empty(),
                        data.as_c_str(),
                    )
                    .map_err(|e| {
                        format!("mounting the overlay rootfs: {new_api_err}; with mount(2): {e}")
                    })
                }
            }
        }
    }
}

/// `lowerdirs` (top first) with every directory only at its topmost place.
/// Overlay refuses a directory given twice (ELOOP), and the lower copy could
/// not show anything: all it holds, the upper copy holds at the same path and
/// is found first. Identity is the directory's device and inode, as overlay
/// sees it.
fn distinct_lowerdirs(lowerdirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    lowerdirs
        .iter()
        .filter(|l| match rustix::fs::stat(l.as_path()) {
            Ok(st) => seen.insert((st.st_dev, st.st_ino)),
            // Mounting reports what is wrong with it.
            Err(_) => true,
        })
        .cloned()
        .collect()
}

fn mount_overlay_fsconfig(
    lowerdirs: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    rootless: bool,
) -> R<()> {
    use rustix::mount::*;
    let fs = ctx(fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC), || {
        "fsopen overlay".into()
    })?;
    let with_log = |e: rustix::io::Errno, what: String| -> String {
        // The kernel explains mount errors in the fs context's log.
        let mut buf = [0u8; 512];
        let mut log = String::new();
        while let Ok(n) = rustix::io::read(&fs, &mut buf) {
            if n == 0 {
                break;
            }
            log.push_str(String::from_utf8_lossy(&buf[..n]).trim());
            log.push_str("; ");
        }
        format!(
            "{what}: {e}{}",
            if log.is_empty() {
                String::new()
            } else {
                format!(" ({})", log.trim_end_matches("; "))
            }
        )
    };
    for l in lowerdirs {
        fsconfig_set_string(&fs, "lowerdir+", l)
            .map_err(|e| with_log(e, format!("overlay lowerdir {}", l.display())))?;
    }
    fsconfig_set_string(&fs, "upperdir", upper)
        .map_err(|e| with_log(e, format!("overlay upperdir {}", upper.display())))?;
    fsconfig_set_string(&fs, "workdir", work)
        .map_err(|e| with_log(e, format!("overlay workdir {}", work.display())))?;
    if rootless {
        fsconfig_set_flag(&fs, "userxattr").map_err(|e| with_log(e, "overlay userxattr".into()))?;
    }
    fsconfig_create(&fs).map_err(|e| with_log(e, "creating the overlay".into()))?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| with_log(e, "fsmount overlay".into()))?;
    ctx(
        move_mount(
            mnt.as_fd(),
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        ),
        || format!("moving the overlay to {}", target.display()),
    )
}

/// Brings `lo` up in a fresh network namespace.
pub(crate) fn loopback_up() -> R<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!(
                "socket for lo: {}",
                std::io::Error::last_os_error()
            ));
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(format!(
                "SIOCGIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            ));
        }
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(format!(
                "bringing lo up: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn fork_step(
    spec: &RunSpec,
    id_map: &IdMap,
    filter: Option<&[seccomp::SockFilter]>,
    ws: &Workspace,
    staged: &Staged,
) -> R<HelperOutcome> {
    if CANCELLED.load(Ordering::SeqCst) != 0 {
        return Ok(HelperOutcome::Cancelled);
    }
    let child = ExecChild::fork(127, || {
        container::enter_and_exec(spec, id_map, filter, &ws.root, staged)
    })?;
    let pid = child.pid;
    STEP_PID.store(pid, Ordering::SeqCst);
    if CANCELLED.load(Ordering::SeqCst) != 0 {
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    if let Some(pid_file) = &spec.pid_file {
        // Without it only `exec_in` (healthchecks) cannot find the step.
        let _ = write_pid_file(pid_file, pid);
    }
    let setup_error = child.setup_error();
    let status = wait_pid(pid);
    STEP_PID.store(0, Ordering::SeqCst);
    if let Some(pid_file) = &spec.pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    if !setup_error.is_empty() {
        return Err(setup_error);
    }
    if CANCELLED.load(Ordering::SeqCst) != 0 {
        return Ok(HelperOutcome::Cancelled);
    }
    Ok(match status? {
        Exit::Code(c) => HelperOutcome::Exited(c),
        Exit::Signal(s) => HelperOutcome::Signaled(s),
    })
}

/// Writes the step's pid for `exec_in` (write to a temp name, rename).
fn write_pid_file(path: &Path, pid: libc::pid_t) -> R<()> {
    let tmp = path.with_extension("tmp");
    ctx(std::fs::write(&tmp, format!("{pid}\n")), || {
        format!("writing {}", tmp.display())
    })?;
    ctx(std::fs::rename(&tmp, path), || {
        format!("writing {}", path.display())
    })
}

impl SecurityMode {
    pub(crate) fn is_sandboxed(self) -> bool {
        self == SecurityMode::Sandbox
    }
}
