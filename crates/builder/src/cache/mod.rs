//! What the build keeps between builds: step results by cache key ([`steps`])
//! and the persistent `RUN --mount=type=cache` directories ([`mounts`]).

pub mod mounts;
pub mod steps;
