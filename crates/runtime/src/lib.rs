//! kiln-runtime: containers that outlive a command. A container is a
//! directory under the store (`containers/<id>/`: its configuration, its
//! state, its log, its overlay upper dir); a *supervisor* runs a group of them
//! (one for `kiln run`, a project's for `kiln compose up`): it sets up their
//! network, starts them in dependency order (`service_started`,
//! `service_healthy` through healthchecks, `service_completed_successfully`),
//! writes their output to their logs, and when they have all ended tears the
//! network down and removes their upper dirs. Foreground commands run the
//! supervisor in their own process; detached ones (`-d`) start it as
//! `/proc/self/exe __kiln-supervise` in its own session, and `ps`, `logs`,
//! `stop`, `rm` and `compose down` find the containers again by their
//! directories.
//!
//! Networks use existing tools: as root, netavark (bridge, published ports by
//! DNAT, aardvark-dns for names) on a network namespace made for each
//! container; rootless, one network namespace per group joined by all its
//! containers, connected to the host by slirp4netns, which forwards the
//! published ports (see `network.rs`). Knows nothing about images: callers
//! hand it complete [`kiln_sandbox::RunSpec`]s.

pub mod health;
pub mod network;
pub mod ports;
pub mod signals;
pub mod state;
pub mod supervisor;

pub use health::Healthcheck;
pub use network::NetworkChoice;
pub use ports::PortMapping;
pub use state::{ContainerConfig, ContainerState, Containers, Status};
pub use supervisor::{
    setup_failure_code, start_detached, stop_container, supervise, supervisor_main_if_requested,
    wait_supervisor, Condition, Dependency, Ended, Group, LogsOnly, Member, Output, StopFlag,
    STOP_SIGNAL,
};

/// Errors of this crate: one message for the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RuntimeError(pub String);

pub type Result<T> = std::result::Result<T, RuntimeError>;

pub(crate) fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(RuntimeError(msg.into()))
}
