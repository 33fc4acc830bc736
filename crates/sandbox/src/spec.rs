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
    /// Resource limits set (soft and hard) before the process starts
    /// (`kiln build --ulimit`); the others are inherited from kiln.
    #[serde(default)]
    pub ulimits: Vec<Ulimit>,
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
            ulimits: Vec::new(),
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

/// One resource limit, docker's `--ulimit NAME=SOFT[:HARD]` (`-1`: unlimited).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ulimit {
    /// Docker's name: `nofile`, `nproc`, `core`, `stack`, … (see [`Ulimit::NAMES`]).
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

impl Ulimit {
    /// The names docker (go-units) accepts, with their `RLIMIT_*` resource.
    pub const NAMES: [(&'static str, i32); 15] = [
        ("core", libc::RLIMIT_CORE as i32),
        ("cpu", libc::RLIMIT_CPU as i32),
        ("data", libc::RLIMIT_DATA as i32),
        ("fsize", libc::RLIMIT_FSIZE as i32),
        ("locks", libc::RLIMIT_LOCKS as i32),
        ("memlock", libc::RLIMIT_MEMLOCK as i32),
        ("msgqueue", libc::RLIMIT_MSGQUEUE as i32),
        ("nice", libc::RLIMIT_NICE as i32),
        ("nofile", libc::RLIMIT_NOFILE as i32),
        ("nproc", libc::RLIMIT_NPROC as i32),
        ("rss", libc::RLIMIT_RSS as i32),
        ("rtprio", libc::RLIMIT_RTPRIO as i32),
        ("rttime", libc::RLIMIT_RTTIME as i32),
        ("sigpending", libc::RLIMIT_SIGPENDING as i32),
        ("stack", libc::RLIMIT_STACK as i32),
    ];

    /// `NAME=SOFT[:HARD]` (one value: both), as docker parses it.
    pub fn parse(s: &str) -> Result<Ulimit, String> {
        let (name, values) = s
            .split_once('=')
            .ok_or_else(|| format!("invalid ulimit {s:?}: expected NAME=SOFT[:HARD]"))?;
        if !Self::NAMES.iter().any(|(n, _)| *n == name) {
            let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "invalid ulimit {s:?}: unknown name {name:?} ({})",
                names.join(", ")
            ));
        }
        let value = |v: &str| -> Result<u64, String> {
            match v.parse::<i64>() {
                Ok(-1) => Ok(libc::RLIM_INFINITY),
                Ok(n) if n >= 0 => Ok(n as u64),
                _ => Err(format!(
                    "invalid ulimit {s:?}: {v:?} is not a number (-1: unlimited)"
                )),
            }
        };
        let (soft, hard) = match values.split_once(':') {
            Some((a, b)) => (value(a)?, value(b)?),
            None => (value(values)?, value(values)?),
        };
        if soft > hard {
            return Err(format!(
                "invalid ulimit {s:?}: the soft limit must be less than or equal to the hard limit"
            ));
        }
        Ok(Ulimit {
            name: name.to_string(),
            soft,
            hard,
        })
    }

    /// The `RLIMIT_*` resource.
    pub fn resource(&self) -> Option<i32> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == self.name)
            .map(|(_, r)| *r)
    }
}

/// The `/etc/hosts` BuildKit writes for a step.
pub fn default_hosts(hostname: &str) -> Vec<u8> {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_as_docker_parses_them() {
        let u = Ulimit::parse("nofile=1024:2048").unwrap();
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("nofile", 1024, 2048));
        let u = Ulimit::parse("core=-1").unwrap();
        assert_eq!((u.soft, u.hard), (libc::RLIM_INFINITY, libc::RLIM_INFINITY));
        assert_eq!(u.resource(), Some(libc::RLIMIT_CORE as i32));
        for bad in [
            "nofile",
            "nofiles=1",
            "nofile=2048:1024",
            "nofile=x",
            "nproc=-2",
        ] {
            assert!(Ulimit::parse(bad).is_err(), "{bad}");
        }
    }
}
