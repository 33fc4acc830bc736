//! A stored layer blob checked against what its image says about it: the size in
//! its descriptor, the compression its media type names, and the diff_id the
//! image config gives it.
//!
//! Snapshots are named by diff_id, so a layer whose content is not its diff_id
//! must never become one (an image whose config claims another image's diff_ids
//! would replace that image's files for every later build). [`apply_image_layer`]
//! hashes the uncompressed stream while it extracts — one sha256 pass over the
//! same read — and fails on a mismatch, before the caller names anything.
//! [`verify_image_layer`] makes the same checks without extracting (`kiln load`).

use super::apply::{apply_layer_with, ApplyOptions, ApplyStats};
use super::compress::{decoder, HashingReader};
use super::LayerError;
use crate::digest::Digest;
use crate::image::LayerCompression;
use crate::store::{BlobRef, Store};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;

/// Applies the stored layer `blob` onto `target` (see [`apply_layer_with`]) and
/// checks it is the layer its image describes: `blob.size` is the blob's size, a
/// gzip or zstd media type has a complete stream of that kind, and the
/// uncompressed stream hashes to `diff_id`.
///
/// On an error `target` may hold part of the layer, or all of a wrong one:
/// extract into a temporary directory and give it its name only on success.
pub fn apply_image_layer(
    store: &Store,
    blob: &BlobRef,
    diff_id: &Digest,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    let file = open_as_described(store, blob)?;
    let stats = apply_layer_with(BufReader::with_capacity(1 << 20, file), target, opts)?;
    check_diff_id(blob, diff_id, &stats.diff_id)?;
    Ok(stats)
}

/// [`apply_image_layer`] for a blob still streaming in (a pull unpacking while
/// it downloads): `reader` gives the blob's bytes as they arrive. The same
/// checks, except the blob's size and digest, which the caller checks on the
/// bytes it stores; the stream is read to its end.
pub fn apply_image_layer_stream(
    reader: impl Read,
    blob: &BlobRef,
    diff_id: &Digest,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    let stats = apply_layer_with(BufReader::with_capacity(1 << 20, reader), target, opts)?;
    let declared = LayerCompression::of_media_type(&blob.media_type);
    let found = match stats.compression {
        Some(super::Compression::Gzip { .. }) => LayerCompression::Gzip,
        Some(super::Compression::Zstd { .. }) => LayerCompression::Zstd,
        _ => LayerCompression::None,
    };
    if let Some(want @ (LayerCompression::Gzip | LayerCompression::Zstd)) = declared {
        if found != want {
            return Err(not_as_described(
                blob,
                format!(
                    "its media type {} says {}, but the blob is not",
                    blob.media_type,
                    if want == LayerCompression::Gzip {
                        "gzip"
                    } else {
                        "zstd"
                    }
                ),
            ));
        }
    }
    check_diff_id(blob, diff_id, &stats.diff_id)?;
    Ok(stats)
}

/// The checks of [`apply_image_layer`] without extracting: decompresses the
/// stored blob to its end and hashes it.
pub fn verify_image_layer(
    store: &Store,
    blob: &BlobRef,
    diff_id: &Digest,
) -> Result<(), LayerError> {
    let file = open_as_described(store, blob)?;
    let (_, stream) =
        decoder(BufReader::with_capacity(1 << 20, file)).map_err(LayerError::Input)?;
    let actual = HashingReader::new(stream)
        .finish()
        .map_err(LayerError::Input)?;
    check_diff_id(blob, diff_id, &actual)
}

fn not_as_described(blob: &BlobRef, problem: String) -> LayerError {
    LayerError::NotAsDescribed {
        blob: blob.digest,
        problem,
    }
}

/// Opens the blob after checking its size and, for a compressed media type, that
/// its first bytes are of that compression.
fn open_as_described(store: &Store, blob: &BlobRef) -> Result<File, LayerError> {
    let path = store.blob_path(&blob.digest);
    let mut file = store
        .open_blob(&blob.digest)
        .map_err(|e| not_as_described(blob, e.to_string()))?;
    let size = file.metadata().map_err(|e| LayerError::io(&path, e))?.len();
    if size != blob.size {
        return Err(not_as_described(
            blob,
            format!(
                "the blob has {size} bytes, but its descriptor says {}",
                blob.size
            ),
        ));
    }
    let declared = LayerCompression::of_media_type(&blob.media_type);
    if let Some(want @ (LayerCompression::Gzip | LayerCompression::Zstd)) = declared {
        let mut head = [0u8; 4];
        let n = read_head(&mut file, &mut head).map_err(|e| LayerError::io(&path, e))?;
        if LayerCompression::sniff(&head[..n]) != want {
            let name = if want == LayerCompression::Gzip {
                "gzip"
            } else {
                "zstd"
            };
            let found = if size == 0 {
                "the blob is empty".to_string()
            } else {
                format!("the blob is not {name} data")
            };
            return Err(not_as_described(
                blob,
                format!(
                    "its media type {} says {name}, but {found}",
                    blob.media_type
                ),
            ));
        }
        file.rewind().map_err(|e| LayerError::io(&path, e))?;
    }
    Ok(file)
}

fn read_head(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn check_diff_id(blob: &BlobRef, claimed: &Digest, actual: &Digest) -> Result<(), LayerError> {
    if actual == claimed {
        return Ok(());
    }
    Err(not_as_described(
        blob,
        format!(
            "its uncompressed content is {actual}, not the diff_id {claimed} its image's \
             config gives it"
        ),
    ))
}
