//! kiln-build: build context loading, .dockerignore, cache keys, snapshots, the
//! scheduler and executor, persistent `RUN --mount=type=cache` directories,
//! entitlement checks (`--allow`), and progress events. Reading a stack of
//! overlay-format snapshots as one filesystem (`fsview`) and writing COPY/ADD/
//! WORKDIR results into a step's upper directory (`copy`). Renders nothing to a
//! terminal.

pub mod cache_mounts;
pub mod context;
pub mod context_hash;
pub mod copy;
pub mod dockerignore;
pub mod entitlements;
pub mod executor;
pub mod fsview;
pub mod gomatch;
pub mod names;
pub mod progress;
pub mod prune;
pub mod snapshots;
