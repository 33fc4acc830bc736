//! kiln-builder: runs a planned Dockerfile build into an image. It owns the
//! build context (`source/`: loading with `.dockerignore`, glob matching,
//! content hashing), what is kept between builds (`cache/`: step results,
//! `RUN --mount=type=cache` directories), the layer snapshots and their merged
//! read view (`snapshot/`), the filesystem operations of steps (`ops/`: COPY/ADD/
//! WORKDIR into an upper directory), the scheduler and one dispatcher per
//! instruction (`solver/`), entitlement checks (`--allow`), SSH agent forwarding
//! (`ssh.rs`) and progress events.
//! It renders nothing to a terminal.
//!
//! The API is what the CLI uses: [`build`] with its [`BuildOptions`], the
//! registry cache ([`parse_cache_from`], [`parse_cache_to`], [`export_cache`]),
//! [`BuildContext`] and [`BuildError`], [`progress`] events, [`prune`], the
//! snapshots `kiln run` starts containers on, and [`apply_config`] for
//! `kiln import --change`.

mod cache;
mod cancel;
mod claim;
mod entitlements;
mod names;
mod ops;
pub mod progress;
mod prune;
mod snapshot;
mod solver;
mod source;
pub mod ssh;

pub use cache::remote::spec::{
    parse_cache_from, parse_cache_to, CacheExport, CacheLocation, CacheMode,
};
pub use cache::remote::{export as export_cache, CacheUsage, ExportReport, RemoteCache};
pub use cancel::Cancel;
pub use entitlements::{check_plan as check_entitlements, Entitlements};
pub use prune::{prune, PruneError, PruneReport};
pub use snapshot::merged_view::LayeredView;
pub use snapshot::{BlobFetcher, Fetchers, Layer, Snapshots, SourcesFetcher};
pub use solver::dispatch::config::{apply as apply_config, ConfigError};
pub use solver::{
    build, BuildError, BuildOptions, BuildOutput, Isolation, NamedContext, PendingImage,
    Precompress, ResolvedBase,
};
/// `.dockerignore` as BuildKit reads it (for `kiln check`'s context rules).
pub use source::dockerignore::{load_patterns as load_ignore_patterns, PatternMatcher};
pub use source::BuildContext;

/// Not API: what this crate's own integration tests (which need root, so they
/// live in `tests/`) and its context benchmark (`examples/`) exercise directly.
#[doc(hidden)]
pub mod internal {
    pub use crate::cache::mounts::{CacheMountRequest, CacheMounts};
    pub use crate::ops::copy::upper::{set_times_at, Times};
    pub use crate::ops::copy::{
        context_sources_digest, context_sources_digest_listed, copy, dest_path, make_workdir,
        view_sources_digest, CopyError, CopyOp, CopySource, CopyStats,
    };
    pub use crate::source::context::Context;
    pub use crate::source::dockerignore::PatternMatcher;
    pub use crate::source::hash::{cache_path, hash_context};
}
