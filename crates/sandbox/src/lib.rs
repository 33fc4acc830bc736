//! kiln-sandbox: runs one process in Linux namespaces over a rootfs (overlay
//! mounts, user namespaces, /proc, /dev, mounts, network mode). Knows nothing
//! about images or caching.
//!
//! The caller describes a run with a [`RunSpec`] and calls [`run`] (or
//! [`spawn`]). The work happens in a re-executed, single-threaded helper
//! process (`/proc/self/exe __kiln-sandbox-helper`), so every binary that runs
//! sandboxes calls [`helper_main_if_requested`] first thing in `main()`.
//! See `helper.rs` for the process structure, `container.rs` for what the
//! step sees (Docker's default capabilities, masked `/proc` paths, its
//! mounts, …) and `seccomp/` for Docker's default seccomp profile, which the
//! step runs under.
//!
//! Rootless runs use a user namespace; [`IdMap`] maps the host ids found in an
//! upperdir back to in-container ids for the layer writer. [`userns`] puts a
//! whole rootless kiln process in such a namespace (the user as uid 0, its
//! subordinate ids mapped), so it builds with a root build's ownership.
//! Where overlay cannot be mounted, [`CopySnapshot`] copies the lowers into a
//! directory and afterwards writes the same upperdir overlay would have.
//!
//! For containers (`kiln_runtime`): a step can join a network namespace made
//! beforehand ([`NetnsHolder`], [`RunSpec::join_netns`]), write its pid
//! ([`RunSpec::pid_file`]) so [`exec_in`] can run a second command inside it
//! (healthchecks), and take the caller's stdin or a terminal
//! ([`spawn_with_stdin`]).
//!
//! ```no_run
//! use kiln_sandbox::{run, IdMap, Rootfs, RunSpec, SandboxError};
//! # fn main() -> Result<(), SandboxError> {
//! let rootfs = Rootfs::Overlay {
//!     lowerdirs: vec!["/snapshots/base".into()], // top first
//!     upperdir: "/snapshots/step/upper".into(),
//!     workdir: "/snapshots/step/work".into(),
//! };
//! let spec = RunSpec::new(rootfs, vec!["/bin/sh".into(), "-c".into(), "make".into()]);
//! let outcome = run(&spec, &mut |line| println!("{}", line.line))?;
//! // Rootless: host ids in the upperdir → in-container ids for the layer.
//! let ids = IdMap::for_current_user();
//! assert_eq!(ids.to_container_uid(ids.to_host_uid(0).unwrap_or(0)), Some(0));
//! # let _ = outcome;
//! # Ok(())
//! # }
//! ```

pub mod chroot;
mod container;
pub mod copy;
pub mod emulation;
mod exec;
mod helper;
pub mod idmap;
mod mount_stubs;
pub mod netns;
pub mod rootpath;
mod runner;
mod seccomp;
pub mod spec;
mod staging;
mod sys;
pub mod user;
pub mod userns;

pub use chroot::Probe;
pub use container::{default_capability_mask, DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS};
pub use copy::CopySnapshot;
pub use exec::{exec_in, ExecOutcome, ExecSpec};
pub use idmap::{IdMap, IdRange};
pub use netns::NetnsHolder;
pub use runner::{
    helper_main_if_requested, run, run_with, spawn, spawn_with_stdin, ExitStatus, OutputLine,
    OutputStream, RunOutcome, RunningStep, SandboxError, StepFailure, StepKiller,
};
pub use spec::{
    default_hosts, Isolation, MountSpec, NetworkMode, Rootfs, RunSpec, SecurityMode, Ulimit,
    UserSpec,
};

/// Whether this process ignores `sig` because whoever started it made it so
/// (`nohup` ignores SIGHUP; a non-interactive shell starts `cmd &` with SIGINT and
/// SIGQUIT ignored). kiln leaves an ignored SIGINT or SIGHUP ignored, in its
/// sandbox helper too; SIGTERM always stops it.
pub fn signal_is_ignored(sig: libc::c_int) -> bool {
    // SAFETY: a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ignored_signal_is_seen_as_ignored() {
        // SIGUSR2: no test of this crate uses it.
        // SAFETY: setting a disposition of a signal nothing here sends.
        unsafe { libc::signal(libc::SIGUSR2, libc::SIG_IGN) };
        assert!(super::signal_is_ignored(libc::SIGUSR2));
        // SAFETY: as above.
        unsafe { libc::signal(libc::SIGUSR2, libc::SIG_DFL) };
        assert!(!super::signal_is_ignored(libc::SIGUSR2));
    }
}
