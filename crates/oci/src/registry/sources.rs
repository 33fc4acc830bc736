//! Which repositories of which registries a blob is known to be in (because kiln
//! pulled it from or pushed it to them), so a push can ask the registry to mount the
//! blob from there instead of uploading it. Kept under `<store>/registry-sources/`,
//! one small file per blob with `registry repository` lines; losing it only costs
//! an upload.

use crate::digest::Digest;
use crate::store::Store;
use std::io::Write;
use std::path::PathBuf;

fn path(store: &Store, digest: &Digest) -> PathBuf {
    store.root().join("registry-sources").join(digest.hex())
}

/// Note that `digest` is in `registry`/`repository`.
pub fn record(store: &Store, registry: &str, repository: &str, digest: &Digest) {
    let line = format!("{registry} {repository}");
    if known(store, registry, digest)
        .iter()
        .any(|r| *r == repository)
    {
        return;
    }
    let p = path(store, digest);
    let res = p
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
        })
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = res {
        tracing::debug!("cannot record where {digest} came from: {e}");
    }
}

/// Repositories of `registry` known to hold `digest`.
pub fn known(store: &Store, registry: &str, digest: &Digest) -> Vec<String> {
    std::fs::read_to_string(path(store, digest))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(r, _)| *r == registry)
        .map(|(_, repo)| repo.to_string())
        .collect()
}

/// Every `(registry, repository)` known to hold `digest`.
pub fn all(store: &Store, digest: &Digest) -> Vec<(String, String)> {
    std::fs::read_to_string(path(store, digest))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(r, repo)| (r.to_string(), repo.to_string()))
        .collect()
}
