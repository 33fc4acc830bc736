//! What the build keeps between builds: step results by cache key ([`steps`])
//! and the persistent `RUN --mount=type=cache` directories ([`mounts`]), and
//! the build cache shared through a registry or a directory ([`remote`]), and
//! why a step missed ([`explain`]).

pub mod explain;
pub mod mounts;
pub mod remote;
pub mod steps;
