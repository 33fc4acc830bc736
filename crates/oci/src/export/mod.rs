//! Images out of the store: one [`Exporter`] trait with small implementations —
//! [`OciExporter`] (OCI image layout as a directory or a tar), [`DockerExporter`] (a
//! `docker load`-compatible tar), [`LocalExporter`] and [`TarExporter`] (the image's
//! filesystem, as a directory or a tar). The way in is [`crate::load`].

mod complete;
mod docker;
mod local;
mod oci;
mod output;

pub use complete::{
    complete_image, complete_image_except, layer_with_blob, local_layer_tar, LocalLayerTar,
};
pub use docker::DockerExporter;
pub use local::{LocalExporter, StatementFiles, TarExporter};
pub use oci::OciExporter;
pub use output::{OutputKind, OutputSpec};

use crate::digest::Digest;
use crate::image::{media_type, referenced_blobs};
use crate::reference::ImageName;
use crate::store::{BlobRef, Store, StoreError};
use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Format(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("applying layer {digest}: {message}")]
    Layer { digest: Digest, message: String },
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.into();
    move |source| ArchiveError::Io {
        action,
        path,
        source,
    }
}

/// An image to export: its name (if any) and its manifest or index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedImage {
    pub name: Option<ImageName>,
    pub target: BlobRef,
}

/// One way of writing images out of the store.
pub trait Exporter {
    /// Write `images` (all their blobs) from `store`.
    fn export(&mut self, store: &Store, images: &[NamedImage]) -> Result<()>;
}

/// Every blob needed for `target`: itself, its children (recursively), in a stable
/// order (the target first, then depth-first in document order).
pub(crate) fn closure(store: &Store, target: &BlobRef) -> Result<Vec<BlobRef>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    walk(store, target, &mut out, &mut seen)?;
    Ok(out)
}

fn walk(
    store: &Store,
    target: &BlobRef,
    out: &mut Vec<BlobRef>,
    seen: &mut BTreeSet<Digest>,
) -> Result<()> {
    if !seen.insert(target.digest) {
        return Ok(());
    }
    if !store.has_blob(&target.digest) {
        return Err(StoreError::BlobNotFound(target.digest).into());
    }
    out.push(target.clone());
    if media_type::is_manifest_or_index(&target.media_type) {
        let data = store.read_blob(&target.digest)?;
        for child in referenced_blobs(&data, &target.digest).map_err(StoreError::from)? {
            walk(store, &child, out, seen)?;
        }
    }
    Ok(())
}

/// A tar writer with fixed, reproducible headers (mtime 0, root-owned, 0644/0755).
pub(crate) struct TarOut<W: Write> {
    builder: tar::Builder<W>,
    dirs: BTreeSet<String>,
}

impl<W: Write> TarOut<W> {
    pub(crate) fn new(w: W) -> Self {
        let mut builder = tar::Builder::new(w);
        builder.mode(tar::HeaderMode::Deterministic);
        TarOut {
            builder,
            dirs: BTreeSet::new(),
        }
    }

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// Add the parent directories of `path` that are not yet in the archive.
    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for p in &parts[..parts.len() - 1] {
            prefix.push_str(p);
            prefix.push('/');
            if self.dirs.insert(prefix.clone()) {
                let mut h = Self::header(tar::EntryType::Directory, 0, 0o755);
                self.builder.append_data(&mut h, &prefix, io::empty())?;
            }
        }
        Ok(())
    }

    pub(crate) fn file(&mut self, path: &str, size: u64, data: impl io::Read) -> io::Result<()> {
        self.parents(path)?;
        let mut h = Self::header(tar::EntryType::Regular, size, 0o644);
        self.builder.append_data(&mut h, path, data)
    }

    pub(crate) fn bytes(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.file(path, data.len() as u64, data)
    }

    /// Add a stored blob as `blobs/sha256/<hex>`, verifying it as it streams.
    pub(crate) fn blob(&mut self, store: &Store, b: &BlobRef) -> Result<()> {
        let path = format!("blobs/sha256/{}", b.digest.hex());
        let size = store.blob_size(&b.digest)?;
        let r = store.open_blob_verified(&b.digest)?;
        self.file(&path, size, r)
            .map_err(io_err("archiving blob", store.blob_path(&b.digest)))
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        self.builder.into_inner()
    }
}
