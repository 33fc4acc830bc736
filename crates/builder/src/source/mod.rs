//! The build context: loading it with `.dockerignore` rules ([`dockerignore`]),
//! Go `filepath.Match` glob matching ([`glob`]) and content hashing with a
//! metadata cache ([`hash`]).

pub mod context;
pub mod dockerignore;
pub mod glob;
pub mod hash;

use context::{Context, ContextError};
use hash::ContextDigests;
use std::path::Path;
use std::sync::Arc;

/// The build context of a build: a directory loaded with its `.dockerignore`
/// rules and hashed (the per-file digests a COPY's cache key uses).
pub struct BuildContext {
    pub(crate) files: Arc<Context>,
    pub(crate) digests: Arc<ContextDigests>,
}

impl BuildContext {
    /// Loads `dir` with the ignore file BuildKit uses for `dockerfile`
    /// (`<Dockerfile>.dockerignore`, else `.dockerignore`) and hashes it. With
    /// `store_root`, unchanged files are recognised from `stat()` alone through
    /// a metadata cache kept there.
    pub fn load(
        dir: &Path,
        dockerfile: Option<&Path>,
        store_root: Option<&Path>,
    ) -> Result<BuildContext, ContextError> {
        let files = Context::load_with_ignore_file(dir, dockerfile)?;
        let cache = store_root.map(|root| hash::cache_path(root, dir));
        let digests = hash::hash_context(&files, cache.as_deref()).map_err(ContextError::Hash)?;
        Ok(BuildContext {
            files: Arc::new(files),
            digests: Arc::new(digests),
        })
    }
}
