//! Shared test support for kiln's crates (a dev-dependency only; not published).
//!
//! - [`Kiln`]: the one builder for running the `kiln` binary in tests.
//! - [`bytes`]: random-looking test bytes, and the system's `gzip -dc`.
//! - [`busybox`]: the busybox root filesystem most tests build images or sandboxes from.
//! - [`registry`]: where the local test registries are (started by `scripts/setup-test-env`).
//! - [`root`]: running root-only cases in custom-harness test binaries.
//! - [`rootless`]: running kiln as the unprivileged test user `kiln-rootless`.
//! - [`harness`]: test binaries whose tests are decided at run time (data-driven:
//!   the BuildKit corpus, BuildKit's conformance data), reported as cargo's own
//!   harness does, with tests that cannot run reported as ignored, with the reason.
//! - [`conformance`]: where BuildKit's conformance data is (`$KILN_BUILDKIT_CONFORMANCE`).
//! - [`corpus`]: the cases of `tests/buildkit-corpus/` and their `args` files.
//! - [`http`]: free ports and HTTP GETs to servers on 127.0.0.1.
//! - [`tree`]: writing files and overlay whiteout/opaque markers into a directory.
//! - [`process`]: child processes with default signal dispositions, unique markers,
//!   finding processes by their command line.
//!
//! This crate depends on no kiln crate, so every crate's tests can use it.

pub mod busybox;
pub mod bytes;
pub mod conformance;
pub mod corpus;
pub mod harness;
pub mod http;
mod kiln;
pub mod process;
pub mod registry;
pub mod root;
pub mod rootless;
pub mod tree;

pub use kiln::{printed, Kiln};

use std::path::PathBuf;

/// The repository's root directory (the workspace root).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(|crates| crates.parent())
        .map(PathBuf::from)
        .unwrap_or(here)
}
