//! kiln-sandbox: runs one process in Linux namespaces over a rootfs (overlay
//! mounts, user namespaces, /proc, /dev, mounts, network mode). Knows nothing
//! about images or caching.
//!
//! The caller describes a run with a [`RunSpec`] and calls [`run`] (or
//! [`spawn`]). The work happens in a re-executed, single-threaded helper
//! process (`/proc/self/exe __kiln-sandbox-helper`), so every binary that runs
//! sandboxes calls [`helper_main_if_requested`] first thing in `main()`.
//! See `helper.rs` for the process structure and `container.rs` for what the
//! step sees (Docker's default capabilities, masked `/proc` paths, …).
//!
//! Rootless runs use a user namespace; [`IdMap`] maps the host ids found in an
//! upperdir back to in-container ids for the layer writer.

mod container;
pub mod copy;
mod helper;
pub mod idmap;
mod runner;
pub mod spec;
mod stubs;
pub mod user;

pub use container::{default_capability_mask, DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS};
pub use copy::CopySnapshot;
pub use idmap::{IdMap, IdRange};
pub use runner::{
    helper_main_if_requested, run, spawn, ExitStatus, OutputLine, OutputStream, RunOutcome,
    RunningStep, SandboxError, StepFailure, StepKiller,
};
pub use spec::{default_hosts, MountSpec, NetworkMode, Rootfs, RunSpec, SecurityMode, UserSpec};
