//! kiln-build: build context loading, .dockerignore, cache keys, snapshots, the
//! scheduler and executor, and progress events. Renders nothing to a terminal.

pub mod context;
pub mod context_hash;
pub mod dockerignore;
pub mod gomatch;
