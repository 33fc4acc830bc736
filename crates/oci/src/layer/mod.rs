//! The layer codec: a directory (or an overlayfs upperdir) becomes an OCI layer blob
//! in one streaming pass, and a layer blob is applied onto a directory without ever
//! writing outside it.
//!
//! * [`layer_digest`]: the same walk → tar → sha256 and size only: what a build
//!   step records; the blob is made from the same directory when an output needs it.
//! * [`write_layer`]: walk → tar (deterministic headers) → sha256 of the tar (the
//!   diff_id) → gzip/zstd → sha256 + size of the blob → the caller's writer. The
//!   uncompressed tar never touches the disk.
//! * [`apply_layer`] / [`apply_layer_with`]: decompress (format detected from the
//!   magic bytes, read to the end, so a cut stream is an error) → sha256 of the
//!   whole tar stream (the diff_id) → tar → entries created below the target
//!   through directory file descriptors resolved with `openat2(RESOLVE_BENEATH)`;
//!   OCI whiteouts either delete (a merged rootfs) or become overlayfs whiteouts
//!   (one lowerdir per layer).
//! * [`apply_image_layer`] / [`verify_image_layer`]: a stored blob checked against
//!   what its image says (descriptor size, media type's compression, diff_id) while
//!   it is applied, or on its own.
//! * [`write_layer_from_tar`]: a root filesystem tarball (plain, gzip, bzip2,
//!   xz or zstd)
//!   → checked tar entries → diff_id → recompressed blob (`kiln import`).

mod apply;
mod compress;
mod from_tar;
mod gzip;
mod header;
mod image_layer;
pub mod overlay;
pub mod whiteout;
mod write;

pub use apply::{apply_layer, apply_layer_with, ApplyOptions, ApplyStats, WhiteoutMode};
pub use compress::{tarball_decoder, Compression, TarballCompression};
pub use from_tar::{write_layer_from_tar, TarLayer};
pub use image_layer::{apply_image_layer, apply_image_layer_stream, verify_image_layer};
pub use overlay::OverlayXattr;
pub use write::{layer_digest, write_layer, DiffKind, LayerDescriptor, LayerDigest, LayerOptions};

use crate::digest::Digest;
use std::io;
use std::path::PathBuf;

/// Wraps a layer blob reader in the decompressor its first bytes call for (gzip,
/// zstd, or none for a plain tar), so callers can read the layer's tar stream.
pub fn decompressed<'a, R: io::Read + 'a>(reader: R) -> io::Result<Box<dyn io::Read + 'a>> {
    compress::decoder(reader).map(|(_, r)| r)
}

/// Everything that can go wrong writing or applying a layer. Each variant names the
/// file or the layer entry it is about.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A file system operation on `path` failed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// Writing the layer blob to its destination failed.
    #[error("writing the layer blob: {0}")]
    Output(#[source] io::Error),
    /// The layer stream could not be read (truncated, corrupt compression, bad tar).
    #[error("reading the layer: {0}")]
    Input(#[source] io::Error),
    /// A file in the directory cannot be represented in a layer.
    #[error("{}: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },
    /// A layer entry would write outside the target, or is otherwise unsafe; nothing
    /// was written for it.
    #[error("layer entry {entry:?} refused: {reason}")]
    Refused { entry: String, reason: String },
    /// Creating a layer entry in the target failed.
    #[error("layer entry {entry:?}: {source}")]
    Entry { entry: String, source: io::Error },
    /// A stored layer blob is not what its image says it is (its size, its
    /// compression, or the diff_id of its content).
    #[error("layer {blob}: {problem}")]
    NotAsDescribed { blob: Digest, problem: String },
    /// `--compression` named something we do not write.
    #[error("unknown compression {0:?}: expected gzip, zstd or uncompressed")]
    UnknownCompression(String),
}

impl LayerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        LayerError::Io {
            path: path.into(),
            source,
        }
    }

    /// The error with a file under `root` named as the layer sees it
    /// (`/etc/passwd`), not by where the directory is on the host: for a
    /// user's message about a step's changes.
    pub fn rooted_at(self, root: &std::path::Path) -> Self {
        let rooted = |path: PathBuf| match path.strip_prefix(root) {
            Ok(rel) => std::path::Path::new("/").join(rel),
            Err(_) => path,
        };
        match self {
            LayerError::Io { path, source } => LayerError::Io {
                path: rooted(path),
                source,
            },
            LayerError::Unsupported { path, reason } => LayerError::Unsupported {
                path: rooted(path),
                reason,
            },
            other => other,
        }
    }
}

/// Lossy display form of a tar entry name for error messages.
pub(crate) fn entry_display(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn an_error_under_the_layer_root_names_the_file_as_the_image_sees_it() {
        let root = Path::new("/var/lib/kiln/snapshots/step-1");
        let e = LayerError::Unsupported {
            path: root.join("etc/.wh.x"),
            reason: "reserved".into(),
        };
        assert_eq!(e.rooted_at(root).to_string(), "/etc/.wh.x: reserved");
        let e = LayerError::io(root, io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(
            e.rooted_at(root).to_string(),
            format!("/: {}", io::Error::from(io::ErrorKind::NotFound))
        );
        // A path elsewhere is left as it is.
        let e = LayerError::io("/elsewhere/f", io::Error::from(io::ErrorKind::NotFound));
        assert!(e.rooted_at(root).to_string().starts_with("/elsewhere/f: "));
    }
}
