//! kiln-builder: build context loading, .dockerignore, cache keys, snapshots, the
//! scheduler and executor, persistent `RUN --mount=type=cache` directories,
//! entitlement checks (`--allow`), and progress events. Reading a stack of
//! overlay-format snapshots as one filesystem (`snapshot::merged_view`) and writing
//! COPY/ADD/WORKDIR results into a step's upper directory (`ops::copy`). Renders
//! nothing to a terminal.

pub mod cache;
pub mod entitlements;
pub mod ops;
pub mod progress;
pub mod prune;
pub mod snapshot;
pub mod solver;
pub mod source;

pub use solver::dispatch::config::{apply as apply_config, ConfigError};
