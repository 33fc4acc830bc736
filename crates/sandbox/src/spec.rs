//! What to run: the serializable description of one sandboxed process.
//!
//! A [`RunSpec`] travels as JSON from the (possibly multithreaded) caller to the
//! single-threaded helper process over a pipe, so every type here is serde-able.

use crate::idmap::IdMap;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Hostname BuildKit gives RUN steps; used when the caller sets none.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

/// PATH used to look up `args[0]` when the step's environment has no PATH
/// (the same default runc/BuildKit use).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The filesystem the process sees as `/`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Rootfs {
    /// An overlay mount: read-only `lowerdirs` (top first), writes go to
    /// `upperdir`; `workdir` is overlay's scratch dir on the upperdir's
    /// filesystem. A directory listed more than once is used at its topmost
    /// place only (the same view; overlay refuses duplicates). The upperdir afterwards holds the step's changes with
    /// overlay whiteouts (0/0 char devices, `*.overlay.opaque` xattrs).
    Overlay {
        lowerdirs: Vec<PathBuf>,
        upperdir: PathBuf,
        workdir: PathBuf,
    },
    /// A plain directory, used read-write as it is (see
    /// [`crate::copy::CopySnapshot`] for the copying fallback snapshotter).
    Dir(PathBuf),
}

/// How the step is isolated from the machine.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum Isolation {
    /// New mount, PID, UTS and IPC namespaces (and a network namespace for
    /// [`NetworkMode::None`]), a fresh `/proc`, a private `/dev`, pivot_root.
    #[default]
    Namespaces,
    /// No new namespaces: the step runs `chroot`ed into a [`Rootfs::Dir`],
    /// for where namespaces and mounts are not allowed (an unprivileged
    /// container). `/proc`, `/sys` and `/dev` are the caller's, bound in when
    /// mounts are allowed (see [`crate::chroot`]). The step sees the caller's
    /// processes, network and hostname.
    Chroot,
}

/// Who the process runs as: Dockerfile `USER` syntax, `name|uid[:group|gid]`,
/// resolved against the rootfs's `/etc/passwd` and `/etc/group`. Empty = root.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserSpec(pub String);

impl UserSpec {
    pub fn root() -> Self {
        UserSpec(String::new())
    }
    pub fn new(spec: impl Into<String>) -> Self {
        UserSpec(spec.into())
    }
}

/// Network of the step.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum NetworkMode {
    /// The host's network namespace (`RUN --network=host`, and BuildKit's default).
    #[default]
    Host,
    /// A fresh network namespace with only `lo`, brought up.
    None,
}

/// `RUN --security=`: `Insecure` keeps every capability, skips `no_new_privs`
/// and the masked/read-only `/proc` paths and mounts `/sys` read-write. Whether
/// a build may use it is the caller's policy; this crate only provides it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum SecurityMode {
    #[default]
    Sandbox,
    Insecure,
}

/// An extra mount inside the sandbox. Targets are absolute paths inside the
/// rootfs, resolved inside it ([`crate::rootpath`]: symlinks are followed as
/// if the rootfs were `/`, so they cannot point out of it). A missing target
/// is created (where its symlinks lead, inside the rootfs) for the run and
/// removed again afterwards, so mount points never show up in the upperdir.
/// Mounts are made in the order of their targets after the sandbox's own, so
/// one inside another is made in it (its mount point too); a mount on the
/// target of one of the sandbox's own (`/dev/shm`, `/etc/hosts`, …) replaces
/// it, as with BuildKit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum MountSpec {
    /// Bind mount the file or directory at `path` inside the host directory
    /// `root`. `path` is resolved inside `root` as if `root` were `/` (its
    /// symlinks followed there, the last one too; `..` stops at `root`) and
    /// mounted from the descriptor that resolution gave, so whatever `root`
    /// holds, nothing outside it is mounted.
    Bind {
        root: PathBuf,
        path: String,
        target: String,
        readonly: bool,
    },
    /// A fresh tmpfs; `size_bytes` None = the kernel default (half of RAM).
    Tmpfs {
        target: String,
        size_bytes: Option<u64>,
    },
    /// A file with `content`, read-only, on a private tmpfs (never written to
    /// disk, never in the upperdir).
    Secret {
        target: String,
        content: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

impl MountSpec {
    pub fn target(&self) -> &str {
        match self {
            MountSpec::Bind { target, .. }
            | MountSpec::Tmpfs { target, .. }
            | MountSpec::Secret { target, .. } => target,
        }
    }
}

/// Everything needed to run one process in the sandbox.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunSpec {
    pub rootfs: Rootfs,
    /// Exec form; the caller builds `["/bin/sh", "-c", cmd]` for shell form.
    /// `args[0]` without a `/` is looked up in the step's `PATH`.
    pub args: Vec<String>,
    /// `KEY=value` entries, the complete environment of the process.
    pub env: Vec<String>,
    /// Working directory inside the rootfs; must exist (BuildKit creates it at
    /// `WORKDIR`, not at `RUN`).
    pub cwd: String,
    pub user: UserSpec,
    pub hostname: String,
    pub network: NetworkMode,
    pub mounts: Vec<MountSpec>,
    /// Content of `/etc/hosts` for the step (a read-only bind of a temp file);
    /// None leaves the image's own file.
    pub hosts: Option<Vec<u8>>,
    /// Content of `/etc/resolv.conf` for the step; None leaves the image's own.
    pub resolv_conf: Option<Vec<u8>>,
    pub security: SecurityMode,
    /// Size of `/dev/shm` in bytes; None: 64 MiB, as Docker.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// How many of the last output lines a [`crate::RunOutcome`] keeps.
    pub tail_lines: usize,
    /// Id mapping for rootless runs; None = [`IdMap::for_current_user`].
    /// Ignored when running as root (of the host: identity; of a user
    /// namespace: the ids mapped there).
    pub id_map: Option<IdMap>,
    /// A network namespace to join (e.g. `/proc/PID/ns/net` of a
    /// [`crate::NetnsHolder`]) instead of the one [`Self::network`] says: a
    /// container network set up beforehand (netavark, slirp4netns).
    #[serde(default)]
    pub join_netns: Option<PathBuf>,
    /// A file the helper writes the step's pid into (as this process sees
    /// pids) once it has started, for [`crate::exec_in`]; removed after the run.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// The step's standard input is the descriptor given to
    /// [`crate::spawn_with_stdin`] (`kiln run -i`), not `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// That descriptor is a terminal (the slave of a pseudo-terminal) and
    /// becomes the step's stdin, stdout, stderr and controlling terminal
    /// (`kiln run -t`); its output then comes through the terminal, not as lines.
    #[serde(default)]
    pub tty: bool,
    /// The helper (and so the step) in a process group of its own, so that a
    /// terminal's Ctrl-C (SIGINT to its foreground group) does not reach it
    /// and its caller decides how it stops (`kiln compose up`: SIGTERM to the
    /// step first, killed after a grace period).
    #[serde(default)]
    pub own_process_group: bool,
    /// Namespaces (the default) or a plain chroot ([`Isolation::Chroot`]).
    #[serde(default)]
    pub isolation: Isolation,
}

impl RunSpec {
    /// A spec with BuildKit's defaults: root, `/`, host network, hostname
    /// `buildkitsandbox`, its `/etc/hosts`, the host's `/etc/resolv.conf`.
    pub fn new(rootfs: Rootfs, args: Vec<String>) -> Self {
        let hostname = DEFAULT_HOSTNAME.to_string();
        RunSpec {
            rootfs,
            args,
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cwd: "/".to_string(),
            user: UserSpec::root(),
            hosts: Some(default_hosts(&hostname)),
            resolv_conf: std::fs::read("/etc/resolv.conf").ok(),
            hostname,
            network: NetworkMode::Host,
            mounts: Vec::new(),
            security: SecurityMode::Sandbox,
            shm_size: None,
            tail_lines: 50,
            id_map: None,
            join_netns: None,
            pid_file: None,
            stdin: false,
            tty: false,
            own_process_group: false,
            isolation: Isolation::Namespaces,
        }
    }
}

/// The `/etc/hosts` BuildKit writes for a step.
pub fn default_hosts(hostname: &str) -> Vec<u8> {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        .into_bytes()
}
