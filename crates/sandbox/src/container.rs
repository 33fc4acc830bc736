//! The step process's side: runs in the child the helper forked (PID 1 of the
//! new PID namespace), builds the container's view and execs the command.

use crate::idmap::IdMap;
use crate::rootpath;
use crate::spec::{MountSpec, NetworkMode, RunSpec, DEFAULT_PATH};
use crate::staging::{BindSource, Staged};
use crate::sys::{ctx, R};
use crate::user::resolve_user;
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use std::ffi::CString;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Docker's default capabilities (moby `oci/caps/defaults.go`, containerd's
/// default spec): everything else is dropped.
pub const DEFAULT_CAPABILITIES: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (13, "CAP_NET_RAW"),
    (18, "CAP_SYS_CHROOT"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];

/// The default set as a bit mask (`0xa80425fb`, as in `/proc/self/status`).
pub fn default_capability_mask() -> u64 {
    DEFAULT_CAPABILITIES
        .iter()
        .fold(0, |m, (bit, _)| m | (1u64 << bit))
}

/// Paths hidden from the step (Docker/containerd defaults): directories get an
/// empty read-only tmpfs, files `/dev/null`.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths the step sees read-only.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What one mount of the step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MountKind {
    Proc,
    /// The `/dev` tmpfs, then its device nodes, directories and links.
    Dev,
    DevPts,
    DevShm,
    DevMqueue,
    Sys,
    Hosts,
    ResolvConf,
    /// `spec.mounts[i]`.
    Run(usize),
}

/// One mount of the step, in the order the step makes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PlannedMount {
    /// Absolute, lexically normalized (`/dev/shm`).
    pub target: String,
    pub kind: MountKind,
    /// The mount point is a directory (else a file).
    pub is_dir: bool,
    /// An earlier mount of the plan holds the target (`/dev/pipes/EOF` is on
    /// the `/dev` tmpfs, `/a/b` on a cache mount at `/a`): the step makes the
    /// mount point there, after that mount. Otherwise it is in the rootfs,
    /// where the helper creates it if missing and removes it afterwards.
    pub nested: bool,
}

/// `target` as an absolute path without `.`, `..` or repeated slashes.
pub(crate) fn normalize_target(target: &str) -> String {
    kiln_oci::path::resolve("/", target)
}

/// Every mount the step makes, in order, as BuildKit's executor gives them to
/// runc: kiln's own (`/proc`, `/dev` and the mounts in it, `/sys`, the hosts
/// and resolv.conf files), then the RUN's mounts sorted by target (so a mount
/// inside another one comes after it, whatever order the Dockerfile gave).
/// A mount whose target is already in the list takes that entry's place
/// (BuildKit's `dedupMounts`): `--mount=type=tmpfs,target=/dev/shm`
/// replaces kiln's `/dev/shm` instead of covering it, and of two RUN mounts
/// on one target the later one is made. (A RUN mount on `/dev` itself
/// replaces kiln's `/dev` tmpfs with its device nodes and links; `pts`,
/// `shm` and `mqueue` are still mounted in it.)
pub(crate) fn mount_plan(spec: &RunSpec, staged: &Staged) -> Vec<PlannedMount> {
    let mut own = vec![
        ("/proc", MountKind::Proc),
        ("/dev", MountKind::Dev),
        ("/dev/pts", MountKind::DevPts),
        ("/dev/shm", MountKind::DevShm),
        ("/dev/mqueue", MountKind::DevMqueue),
        ("/sys", MountKind::Sys),
    ];
    if spec.hosts.is_some() {
        own.push(("/etc/hosts", MountKind::Hosts));
    }
    if spec.resolv_conf.is_some() {
        own.push(("/etc/resolv.conf", MountKind::ResolvConf));
    }
    let mut plan: Vec<PlannedMount> = own
        .into_iter()
        .map(|(target, kind)| PlannedMount {
            target: target.to_string(),
            kind,
            is_dir: !matches!(kind, MountKind::Hosts | MountKind::ResolvConf),
            nested: false,
        })
        .collect();
    let mut run: Vec<(String, usize)> = spec
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| (normalize_target(m.target()), i))
        .collect();
    run.sort_by(|a, b| a.0.cmp(&b.0));
    for (target, i) in run {
        let is_dir = match &spec.mounts[i] {
            MountSpec::Bind { .. } => staged.bind_is_dir.get(i).copied().flatten() == Some(true),
            MountSpec::Tmpfs { .. } => true,
            MountSpec::Secret { .. } => false,
        };
        let entry = PlannedMount {
            target,
            kind: MountKind::Run(i),
            is_dir,
            nested: false,
        };
        match plan.iter_mut().find(|p| p.target == entry.target) {
            Some(same) => *same = entry,
            None => plan.push(entry),
        }
    }
    for i in 0..plan.len() {
        let (earlier, rest) = plan.split_at_mut(i);
        let m = &mut rest[0];
        m.nested = earlier.iter().any(|e| {
            e.target == "/"
                || m.target
                    .strip_prefix(e.target.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        });
    }
    plan
}

/// A path inside the rootfs, opened with every symlink resolved inside it.
struct Target {
    fd: OwnedFd,
}

impl Target {
    fn open(root: &OwnedFd, path: &str) -> R<Target> {
        let fd = ctx(rootpath::open_in_root(root, path, true), || {
            format!("mount point {path}")
        })?;
        Ok(Target { fd })
    }
    /// A path naming exactly the opened file (a /proc magic link).
    fn path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }
}

fn mount_at(
    root: &OwnedFd,
    target: &str,
    source: &str,
    fstype: &str,
    flags: MountFlags,
    data: &str,
) -> R<()> {
    let t = Target::open(root, target)?;
    let data = ctx(CString::new(data), || format!("mount options for {target}"))?;
    ctx(
        rustix::mount::mount(source, t.path(), fstype, flags, data.as_c_str()),
        || format!("mounting {fstype} on {target}"),
    )
}

/// Flags of the mount holding `path` that a read-only remount must keep
/// (in a user namespace the kernel refuses to drop locked ones).
fn kept_flags(path: &str) -> MountFlags {
    let mut flags = MountFlags::empty();
    if let Ok(st) = rustix::fs::statvfs(path) {
        use rustix::fs::StatVfsMountFlags as S;
        for (s, m) in [
            (S::NOSUID, MountFlags::NOSUID),
            (S::NODEV, MountFlags::NODEV),
            (S::NOEXEC, MountFlags::NOEXEC),
            (S::NOATIME, MountFlags::NOATIME),
            (S::NODIRATIME, MountFlags::NODIRATIME),
            (S::RELATIME, MountFlags::RELATIME),
        ] {
            if st.f_flag.contains(s) {
                flags |= m;
            }
        }
    }
    flags
}

fn remount_readonly(root: &OwnedFd, target: &str) -> R<()> {
    let t = Target::open(root, target)?;
    let path = t.path();
    let flags = MountFlags::BIND | MountFlags::RDONLY | kept_flags(&path);
    ctx(rustix::mount::mount_remount(&path, flags, ""), || {
        format!("making {target} read-only")
    })
}

/// Bind-mounts the host path `source` (kiln's own: a staged file, /sys) on
/// `target`.
fn bind_at(root: &OwnedFd, source: &Path, target: &str, readonly: bool) -> R<()> {
    bind_named_at(
        root,
        source,
        &source.display().to_string(),
        target,
        readonly,
    )
}

/// Bind-mounts `source` (a path, or a /proc magic link to an opened file)
/// named `name` in errors on `target`.
fn bind_named_at(
    root: &OwnedFd,
    source: impl AsRef<Path>,
    name: &str,
    target: &str,
    readonly: bool,
) -> R<()> {
    let t = Target::open(root, target)?;
    ctx(
        rustix::mount::mount_bind_recursive(source.as_ref(), t.path()),
        || format!("bind-mounting {name} on {target}"),
    )?;
    drop(t);
    if readonly {
        remount_readonly(root, target)?;
    }
    Ok(())
}

/// kiln's `/dev`: a tmpfs with the host's harmless device nodes bound in,
/// the directories for `pts`, `shm` and `mqueue`, and the usual links.
fn setup_dev(root: &OwnedFd) -> R<()> {
    mount_at(
        root,
        "/dev",
        "tmpfs",
        "tmpfs",
        MountFlags::NOSUID | MountFlags::STRICTATIME,
        "mode=755,size=65536k",
    )?;
    let dev = ctx(rootpath::open_in_root(root, "dev", true), || {
        "opening /dev".into()
    })?;
    for name in DEV_NODES {
        let host = format!("/dev/{name}");
        ctx(
            rustix::fs::openat(
                &dev,
                *name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o666),
            ),
            || format!("creating /dev/{name}"),
        )?;
        let node = ctx(
            rustix::fs::openat(&dev, *name, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()),
            || format!("opening /dev/{name}"),
        )?;
        ctx(
            rustix::mount::mount_bind(&host, format!("/proc/self/fd/{}", node.as_raw_fd())),
            || format!("bind-mounting {host}"),
        )?;
    }
    for (dir, mode) in [("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o755)] {
        ctx(
            rustix::fs::mkdirat(&dev, dir, Mode::from_raw_mode(mode)),
            || format!("creating /dev/{dir}"),
        )?;
    }
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ctx(rustix::fs::symlinkat(to, &dev, link), || {
            format!("creating /dev/{link}")
        })?;
    }
    Ok(())
}

fn setup_sys(root: &OwnedFd, sandboxed: bool, network: NetworkMode) -> R<()> {
    let mut flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if sandboxed {
        flags |= MountFlags::RDONLY;
    }
    match mount_at(root, "/sys", "sysfs", "sysfs", flags, "") {
        Ok(()) => Ok(()),
        // A user namespace may only mount sysfs for a network namespace it
        // owns; with the host network, bind the host's /sys instead.
        Err(sysfs_err) => bind_at(root, Path::new("/sys"), "/sys", sandboxed)
            .map_err(|bind_err| format!("{sysfs_err}; {bind_err} (network {network:?})")),
    }
}

fn mask_paths(root: &OwnedFd) -> R<()> {
    for path in MASKED_PATHS {
        let t = match Target::open(root, path) {
            Ok(t) => t,
            Err(_) if !exists_in(root, path) => continue,
            Err(e) => return Err(e),
        };
        let st = ctx(rustix::fs::fstat(&t.fd), || format!("stat {path}"))?;
        let is_dir =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
        let r = if is_dir {
            rustix::mount::mount(
                "tmpfs",
                t.path(),
                "tmpfs",
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                c"size=0",
            )
        } else {
            rustix::mount::mount_bind("/dev/null", t.path())
        };
        ctx(r, || format!("masking {path}"))?;
    }
    for path in READONLY_PATHS {
        let t = match Target::open(root, path) {
            Ok(t) => t,
            Err(_) if !exists_in(root, path) => continue,
            Err(e) => return Err(e),
        };
        ctx(
            rustix::mount::mount_bind_recursive(t.path(), t.path()),
            || format!("binding {path}"),
        )?;
        drop(t);
        remount_readonly(root, path)?;
    }
    Ok(())
}

fn exists_in(root: &OwnedFd, path: &str) -> bool {
    !matches!(
        rootpath::open_in_root(root, path, true),
        Err(rustix::io::Errno::NOENT)
    )
}

pub(crate) fn read_limited(path: &str) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut s = String::new();
    f.take(10 << 20).read_to_string(&mut s).ok()?;
    Some(s)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// The highest capability number the kernel knows.
pub(crate) fn last_cap() -> u32 {
    read_limited("/proc/sys/kernel/cap_last_cap")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

pub(crate) fn capget() -> R<u64> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with a v3 header and two data structs.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) } < 0 {
        return Err(format!("capget: {}", std::io::Error::last_os_error()));
    }
    Ok(data[0].permitted as u64 | ((data[1].permitted as u64) << 32))
}

pub(crate) fn capset(effective_and_permitted: u64) -> R<()> {
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let lo = effective_and_permitted as u32;
    let hi = (effective_and_permitted >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a v3 header and two data structs.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } < 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

pub(crate) fn prctl(
    op: libc::c_int,
    arg: libc::c_ulong,
    arg2: libc::c_ulong,
) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(op, arg, arg2, 0 as libc::c_ulong, 0 as libc::c_ulong) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Ignored signals and the signal mask survive exec: the helper (a Rust
/// program) ignores SIGPIPE and may have inherited more, so every signal gets
/// its default disposition back and none is blocked. Uses the raw syscall
/// because libc refuses to touch the signals it reserves for itself.
pub(crate) fn reset_signals() {
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid kernel sigaction; the process is
        // single-threaded and about to exec.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
    // SAFETY: an empty, initialized signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

pub(crate) fn find_program(arg0: &str, env: &[String]) -> R<PathBuf> {
    if arg0.contains('/') {
        return Ok(PathBuf::from(arg0));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(arg0);
        let is_file = std::fs::metadata(&candidate)
            .map(|m| m.is_file())
            .unwrap_or(false);
        if is_file && rustix::fs::access(&candidate, rustix::fs::Access::EXEC_OK).is_ok() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "exec: {arg0:?}: executable file not found in $PATH"
    ))
}

pub(crate) fn cstrings(items: &[String], what: &str) -> R<Vec<CString>> {
    items
        .iter()
        .map(|s| {
            CString::new(s.as_bytes()).map_err(|_| format!("{what} contains a NUL byte: {s:?}"))
        })
        .collect()
}

/// Makes one mount of the plan.
fn make_mount(
    root: &OwnedFd,
    spec: &RunSpec,
    id_map: &IdMap,
    staged: &Staged,
    m: &PlannedMount,
) -> R<()> {
    let target = m.target.as_str();
    let no_exec_dev_suid = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    match m.kind {
        MountKind::Proc => mount_at(root, target, "proc", "proc", no_exec_dev_suid, ""),
        MountKind::Dev => setup_dev(root),
        MountKind::DevPts => {
            let mut opts = "newinstance,ptmxmode=0666,mode=0620".to_string();
            if id_map.to_host_gid(5).is_some() {
                opts.push_str(",gid=5");
            }
            let flags = MountFlags::NOSUID | MountFlags::NOEXEC;
            mount_at(root, target, "devpts", "devpts", flags, &opts)
        }
        MountKind::DevShm => mount_at(
            root,
            target,
            "shm",
            "tmpfs",
            no_exec_dev_suid,
            &format!(
                "mode=1777,size={}k",
                spec.shm_size.unwrap_or(64 << 20).div_ceil(1024)
            ),
        ),
        MountKind::DevMqueue => mount_at(root, target, "mqueue", "mqueue", no_exec_dev_suid, ""),
        MountKind::Sys => setup_sys(root, spec.security.is_sandboxed(), spec.network),
        MountKind::Hosts | MountKind::ResolvConf => {
            let file = if m.kind == MountKind::Hosts {
                &staged.hosts
            } else {
                &staged.resolv_conf
            };
            let file = file
                .as_ref()
                .ok_or_else(|| format!("{target} was not staged"))?;
            bind_at(root, file, target, true)
        }
        MountKind::Run(i) => match &spec.mounts[i] {
            MountSpec::Bind {
                root: source_root,
                path,
                readonly,
                ..
            } => {
                let source = BindSource::open(source_root, path)?;
                let name = format!("{path} (in {})", source_root.display());
                bind_named_at(root, source.path(), &name, target, *readonly)
            }
            MountSpec::Tmpfs { size_bytes, .. } => {
                let data = size_bytes.map(|s| format!("size={s}")).unwrap_or_default();
                // BuildKit's tmpfs mount options: nosuid and the size, no
                // nodev (the rootfs allows devices too).
                let flags = MountFlags::NOSUID;
                mount_at(root, target, "tmpfs", "tmpfs", flags, &data)
            }
            MountSpec::Secret { .. } => {
                let staged = staged
                    .secrets
                    .get(i)
                    .and_then(|s| s.as_ref())
                    .ok_or("secret was not staged")?;
                bind_at(root, staged, target, true)
            }
        },
    }
}

/// Creates a missing mount point, and missing directories above it, wherever
/// the path leads now: on a mount made before (the `/dev` tmpfs, a cache
/// mount), as runc does. Nothing is removed afterwards: a tmpfs goes away by
/// itself, and a cache directory keeps it as with BuildKit.
fn make_mount_point(root: &OwnedFd, target: &str, is_dir: bool) -> R<()> {
    let comps = kiln_oci::path::rooted_components(target);
    for i in 0..comps.len() {
        let rel = comps[..=i].join("/");
        match rootpath::open_in_root(root, format!("/{rel}"), true) {
            Ok(_) => continue,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(format!("mount point {target}: /{rel}: {e}")),
        }
        let parent_rel = comps[..i].join("/");
        let parent = ctx(
            rootpath::open_in_root(root, format!("/{parent_rel}"), true),
            || format!("mount point {target}: /{parent_rel}"),
        )?;
        let name = comps[i].as_str();
        let created = if i + 1 < comps.len() || is_dir {
            rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))
        } else {
            rustix::fs::openat(
                &parent,
                name,
                OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map(drop)
        };
        match created {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(format!("creating mount point /{rel}: {e}")),
        }
    }
    Ok(())
}

/// In the forked child: build the container and exec. Returns only on error,
/// with the message for the caller.
pub(crate) fn enter_and_exec(
    spec: &RunSpec,
    id_map: &IdMap,
    filter: Option<&[crate::seccomp::SockFilter]>,
    root: &Path,
    staged: &Staged,
) -> String {
    match setup_and_exec(spec, id_map, filter, root, staged) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn setup_and_exec(
    spec: &RunSpec,
    id_map: &IdMap,
    filter: Option<&[crate::seccomp::SockFilter]>,
    root: &Path,
    staged: &Staged,
) -> R<std::convert::Infallible> {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let sandboxed = spec.security.is_sandboxed();
    // Own mount namespace, so pivot_root leaves the helper where it is.
    ctx(
        crate::sys::unshare(rustix::thread::UnshareFlags::NEWNS),
        || "unshare mount namespace".into(),
    )?;
    ctx(
        rustix::mount::mount_change(
            "/",
            MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
        ),
        || "making / private".into(),
    )?;
    let last_cap = last_cap();
    let root_fd = ctx(
        rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ),
        || format!("opening rootfs {}", root.display()),
    )?;

    for m in mount_plan(spec, staged) {
        if m.nested {
            make_mount_point(&root_fd, &m.target, m.is_dir)?;
        }
        make_mount(&root_fd, spec, id_map, staged, &m)?;
    }
    if sandboxed {
        mask_paths(&root_fd)?;
    }

    // pivot_root into the rootfs and drop the old root.
    drop(root_fd);
    ctx(rustix::process::chdir(root), || {
        format!("chdir {}", root.display())
    })?;
    ctx(rustix::process::pivot_root(".", "."), || {
        "pivot_root".into()
    })?;
    ctx(rustix::mount::unmount(".", UnmountFlags::DETACH), || {
        "detaching the old root".into()
    })?;
    ctx(rustix::process::chdir("/"), || "chdir /".into())?;
    become_user_and_exec(spec, id_map, filter, last_cap, 0)
}

/// The last part of entering the step, in its root already (after pivot_root
/// or chroot, cwd `/`): USER, working directory, capabilities (`drop` more
/// taken away from Docker's default set), `no_new_privs`, seccomp, exec.
pub(crate) fn become_user_and_exec(
    spec: &RunSpec,
    id_map: &IdMap,
    filter: Option<&[crate::seccomp::SockFilter]>,
    last_cap: u32,
    drop: u64,
) -> R<std::convert::Infallible> {
    let sandboxed = spec.security.is_sandboxed();
    let user = resolve_user(
        &spec.user.0,
        read_limited("/etc/passwd").as_deref(),
        read_limited("/etc/group").as_deref(),
    )
    .map_err(|e| format!("USER {}: {e}", spec.user.0))?;
    rustix::process::chdir(spec.cwd.as_str()).map_err(|e| {
        if e == rustix::io::Errno::NOENT {
            format!("working directory {} does not exist", spec.cwd)
        } else {
            format!("cannot enter working directory {}: {e}", spec.cwd)
        }
    })?;

    // `--ulimit`: set while kiln's capabilities still allow raising a hard limit.
    for u in &spec.ulimits {
        let resource = u
            .resource()
            .ok_or_else(|| format!("ulimit {}: unknown resource", u.name))?;
        let lim = libc::rlimit {
            rlim_cur: u.soft,
            rlim_max: u.hard,
        };
        // SAFETY: a plain system call on a value of ours.
        if unsafe { libc::setrlimit(resource as _, &lim) } < 0 {
            return Err(format!(
                "ulimit {}={}:{}: {}",
                u.name,
                u.soft,
                u.hard,
                std::io::Error::last_os_error()
            ));
        }
    }
    // Capabilities: bounding set, ambient, then ids, then the process sets.
    let keep = if sandboxed {
        default_capability_mask()
    } else {
        u64::MAX
    } & !drop;
    for cap in 0..=last_cap.min(63) {
        // Only what the bounding set still has (dropping needs CAP_SETPCAP,
        // which a container may not give).
        // SAFETY: PR_CAPBSET_READ only reads.
        let in_bounding_set =
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) } == 1;
        if keep & (1u64 << cap) == 0 && in_bounding_set {
            ctx(
                prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0),
                || format!("dropping capability {cap}"),
            )?;
        }
    }
    ctx(
        prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
        ),
        || "clearing ambient capabilities".into(),
    )?;
    let single_id = id_map.is_single_id();
    if !single_id {
        let gids = user.additional_gids();
        // SAFETY: setgroups with a valid slice; the child is single-threaded.
        if unsafe { libc::setgroups(gids.len(), gids.as_ptr()) } < 0 {
            return Err(format!(
                "setgroups {:?}: {}",
                gids,
                std::io::Error::last_os_error()
            ));
        }
    }
    let unmapped = |what: &str, id: u32, e: std::io::Error| {
        if single_id && e.raw_os_error() == Some(libc::EINVAL) {
            format!(
                "USER {}: {what} {id} does not exist in this rootless sandbox: {}",
                spec.user.0,
                id_map
                    .limitation
                    .as_deref()
                    .unwrap_or("only id 0 is mapped")
            )
        } else {
            format!("USER {}: set{what} {id}: {e}", spec.user.0)
        }
    };
    // SAFETY: plain id syscalls.
    if unsafe { libc::setresgid(user.gid, user.gid, user.gid) } < 0 {
        return Err(unmapped("gid", user.gid, std::io::Error::last_os_error()));
    }
    // SAFETY: plain id syscalls.
    if unsafe { libc::setresuid(user.uid, user.uid, user.uid) } < 0 {
        return Err(unmapped("uid", user.uid, std::io::Error::last_os_error()));
    }
    if user.uid == 0 {
        capset(keep & capget()?)?;
    } else {
        capset(0)?;
    }
    if sandboxed {
        ctx(prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0), || {
            "setting no_new_privs".into()
        })?;
    }
    // Changing credentials cleared the parent-death signal: set it again.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));

    if spec.tty {
        controlling_terminal()?;
    }
    reset_signals();
    exec_program(&spec.args, &spec.env, &user.home, filter)
}

/// The last act of a container's process, once it is the user it runs as:
/// `args[0]` looked up on the `PATH` of `env`, `HOME` added when `env` has
/// none (runc's rule: the user's home directory), the seccomp `filter`
/// installed (last: from then on only its syscalls, execve one of them), and
/// execve. Returns only with the reason it could not exec.
pub(crate) fn exec_program(
    args: &[String],
    env: &[String],
    home: &str,
    filter: Option<&[crate::seccomp::SockFilter]>,
) -> R<std::convert::Infallible> {
    let Some(arg0) = args.first() else {
        return Err("no command to run".into());
    };
    let program = find_program(arg0, env)?;
    let prog_c = ctx(CString::new(program.as_os_str().as_encoded_bytes()), || {
        "program path".into()
    })?;
    let argv = cstrings(args, "an argument")?;
    let mut env = env.to_vec();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    let envp = cstrings(&env, "an environment variable")?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    if let Some(filter) = filter {
        crate::seccomp::install(filter)?;
    }
    // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(prog_c.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    Err(format!(
        "exec {}: {}",
        program.display(),
        std::io::Error::last_os_error()
    ))
}

/// `RunSpec::tty`: fd 0 is the slave of a pseudo-terminal: a new session
/// with it as the controlling terminal, and stdout/stderr on it too.
fn controlling_terminal() -> R<()> {
    // SAFETY: setsid/ioctl/dup2 on this process's own descriptors.
    unsafe {
        if libc::setsid() < 0 {
            return Err(format!("setsid: {}", std::io::Error::last_os_error()));
        }
        if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return Err(format!(
                "making the terminal the controlling one: {}",
                std::io::Error::last_os_error()
            ));
        }
        for fd in [1, 2] {
            if libc::dup2(0, fd) < 0 {
                return Err(format!(
                    "dup2 terminal: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(mounts: Vec<MountSpec>) -> Vec<(String, MountKind, bool)> {
        let mut spec = RunSpec::new(crate::spec::Rootfs::Dir("/nonexistent".into()), vec![]);
        spec.mounts = mounts;
        let staged = crate::staging::Staged {
            hosts: None,
            resolv_conf: None,
            secrets: vec![None; spec.mounts.len()],
            bind_is_dir: vec![None; spec.mounts.len()],
        };
        mount_plan(&spec, &staged)
            .into_iter()
            .map(|m| (m.target, m.kind, m.nested))
            .collect()
    }

    fn tmpfs(target: &str) -> MountSpec {
        MountSpec::Tmpfs {
            target: target.into(),
            size_bytes: None,
        }
    }

    #[test]
    fn mounts_inside_mounts_come_after_them_and_are_nested() {
        use MountKind::*;
        let plan = plan_of(vec![
            tmpfs("/foo/bar/baz"),
            tmpfs("/foo//bar/"),
            tmpfs("/dev/pipes/EOF"),
            tmpfs("/foo-x"),
        ]);
        let s = |t: &str| t.to_string();
        assert_eq!(
            plan,
            [
                (s("/proc"), Proc, false),
                (s("/dev"), Dev, false),
                (s("/dev/pts"), DevPts, true),
                (s("/dev/shm"), DevShm, true),
                (s("/dev/mqueue"), DevMqueue, true),
                (s("/sys"), Sys, false),
                (s("/etc/hosts"), Hosts, false),
                (s("/etc/resolv.conf"), ResolvConf, false),
                (s("/dev/pipes/EOF"), Run(2), true),
                (s("/foo-x"), Run(3), false),
                (s("/foo/bar"), Run(1), false),
                (s("/foo/bar/baz"), Run(0), true),
            ]
        );
    }

    #[test]
    fn a_run_mount_on_a_default_target_replaces_it() {
        let plan = plan_of(vec![tmpfs("/dev/shm/"), tmpfs("/x"), tmpfs("/x")]);
        let shm: Vec<_> = plan.iter().filter(|m| m.0 == "/dev/shm").collect();
        assert_eq!(shm, [&("/dev/shm".to_string(), MountKind::Run(0), true)]);
        assert_eq!(plan[3].0, "/dev/shm", "in the place of kiln's /dev/shm");
        // Two RUN mounts on one target: the later one.
        let x: Vec<_> = plan.iter().filter(|m| m.0 == "/x").collect();
        assert_eq!(x, [&("/x".to_string(), MountKind::Run(2), false)]);
    }

    #[test]
    fn default_caps_match_docker() {
        assert_eq!(default_capability_mask(), 0xa80425fb);
    }
}
