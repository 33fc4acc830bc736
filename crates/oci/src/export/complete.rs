//! Making the blobs an output needs: an image a build made names its new layers
//! uncompressed, by diff_id, and holds them as directories (see
//! `crate::store` `layers.rs`); [`complete_image`] writes each such layer's blob
//! with the compression asked for (layers in parallel, each once: a blob made
//! before is reused) and stores the manifest naming them. The config, and so the
//! image id, is the same one.

use super::{ArchiveError, Result};
use crate::digest::Digest;
use crate::image::{load_image, media_type, write_manifest, ManifestFormat};
use crate::layer::{write_layer, Compression, DiffKind, LayerOptions};
use crate::store::{BlobRef, LocalLayer, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The manifest of `target` with every layer's blob in the store: `target`
/// itself when its blobs are all there (a pulled or loaded image, or one
/// completed before with the same compression), else a new manifest of the
/// same format naming, for each layer held as a directory, its blob written
/// with `compression`. Layers that already have blobs keep them, whatever their
/// compression (as BuildKit keeps a base image's blobs unless forced).
pub fn complete_image(
    store: &Store,
    target: &BlobRef,
    compression: Compression,
) -> Result<BlobRef> {
    complete_image_except(store, target, compression, &|_| false)
}

/// [`complete_image`] for a push: a layer the store lacks altogether but for
/// which `elsewhere` holds (its blob is in the destination registry, or a
/// registry can mount it there) is left as it is instead of being an error.
pub fn complete_image_except(
    store: &Store,
    target: &BlobRef,
    compression: Compression,
    elsewhere: &dyn Fn(&Digest) -> bool,
) -> Result<BlobRef> {
    if media_type::is_index(&target.media_type) {
        // Each platform's manifest completed, then the index naming them.
        return crate::index::rewrite_index(store, target, |e| {
            if !media_type::is_manifest(&e.manifest.media_type) {
                return Ok(None);
            }
            complete_image_except(store, &e.manifest, compression, elsewhere).map(Some)
        });
    }
    if !media_type::is_manifest(&target.media_type) {
        return Ok(target.clone());
    }
    let image = load_image(store, target)?;
    let mut pending: Vec<(Digest, LocalLayer)> = Vec::new();
    for l in &image.layers {
        if store.has_blob(&l.digest) || pending.iter().any(|(d, _)| *d == l.digest) {
            continue;
        }
        let local = store
            .local_layer(&l.digest)
            .filter(|_| media_type::is_uncompressed_layer(&l.media_type));
        let local = match local {
            Some(local) => local,
            None if elsewhere(&l.digest) => continue,
            None => return Err(StoreError::BlobNotFound(l.digest).into()),
        };
        pending.push((l.digest, local));
    }
    if pending.is_empty() {
        return Ok(target.clone());
    }
    let made = make_blobs(store, &pending, compression)?;
    let layers: Vec<BlobRef> = image
        .layers
        .iter()
        .map(|l| made.get(&l.digest).cloned().unwrap_or_else(|| l.clone()))
        .collect();
    let format = if target.media_type == media_type::DOCKER_MANIFEST {
        ManifestFormat::Docker
    } else {
        ManifestFormat::Oci
    };
    // The manifest's annotations (`--annotation`) stay.
    let annotations: BTreeMap<String, String> = image
        .manifest
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok(write_manifest(
        store,
        &image.config_ref,
        &layers,
        format,
        &annotations,
    )?)
}

/// A layer descriptor whose blob is in the store: `layer` itself when its blob
/// is, else (a layer a build made, held as a directory) its blob written with
/// `compression`, or the one made before. For the build cache's export.
pub fn layer_with_blob(
    store: &Store,
    layer: &BlobRef,
    compression: Compression,
) -> Result<BlobRef> {
    if store.has_blob(&layer.digest) {
        return Ok(layer.clone());
    }
    let local = store
        .local_layer(&layer.digest)
        .filter(|_| media_type::is_uncompressed_layer(&layer.media_type))
        .ok_or(StoreError::BlobNotFound(layer.digest))?;
    layer_blob(store, &layer.digest, &local, compression)
}

/// Writes the blob of each pending layer (those made before are reused), up to
/// one layer per core at once; returns them by diff_id.
fn make_blobs(
    store: &Store,
    pending: &[(Digest, LocalLayer)],
    compression: Compression,
) -> Result<BTreeMap<Digest, BlobRef>> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let out = Mutex::new(BTreeMap::new());
    crate::parallel::try_for_each(
        pending,
        workers,
        |(diff_id, local)| {
            let b = layer_blob(store, diff_id, local, compression)?;
            out.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*diff_id, b);
            Ok(())
        },
        || ArchiveError::Format("a compressing thread panicked".into()),
    )?;
    Ok(out.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// The blob of one layer held as a directory: the one made before with this
/// compression, else written now (walk → tar → compressor → store) and
/// remembered. The walk must give the layer's diff_id again: a directory
/// changed since its layer was made is an error, never a wrong blob.
fn layer_blob(
    store: &Store,
    diff_id: &Digest,
    local: &LocalLayer,
    compression: Compression,
) -> Result<BlobRef> {
    if let Some(b) = store.layer_variant(diff_id, compression) {
        return Ok(b);
    }
    let mut writer = store.blob_writer()?;
    let opts = LayerOptions {
        compression,
        source_date_epoch: local.source_date_epoch,
    };
    let desc =
        write_layer(&local.dir, DiffKind::OverlayUpper, &opts, &mut writer).map_err(|e| {
            ArchiveError::Layer {
                digest: *diff_id,
                message: e.to_string(),
            }
        })?;
    if desc.diff_id != *diff_id {
        return Err(ArchiveError::Layer {
            digest: *diff_id,
            message: format!(
                "its directory {} now gives {} (it changed since the layer was made)",
                local.dir.display(),
                desc.diff_id
            ),
        });
    }
    let (digest, size) = writer.commit()?;
    let blob = BlobRef {
        media_type: desc.media_type,
        digest,
        size,
        annotations: BTreeMap::new(),
    };
    if compression != Compression::None {
        store.record_layer_variant(diff_id, compression, &blob)?;
    }
    Ok(blob)
}

/// The uncompressed tar of a layer held as a directory, written as it is read
/// (a thread walks the directory and hands over 256 KiB chunks): for outputs that
/// want the filesystem, not a blob (`type=local`, `type=tar`, `kiln debug
/// describe`). Reading it to its end fails unless the tar hashed to the layer's
/// diff_id.
pub fn local_layer_tar(diff_id: Digest, local: &LocalLayer) -> Result<LocalLayerTar> {
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    let dir = local.dir.clone();
    let opts = LayerOptions {
        compression: Compression::None,
        source_date_epoch: local.source_date_epoch,
    };
    let walker = std::thread::spawn(move || {
        let out = ChunkWriter {
            tx,
            buf: Vec::with_capacity(TAR_CHUNK),
        };
        write_layer(&dir, DiffKind::OverlayUpper, &opts, out).map(|d| d.diff_id)
    });
    Ok(LocalLayerTar {
        rx,
        chunk: Vec::new(),
        at: 0,
        walker: Some(walker),
        diff_id,
    })
}

const TAR_CHUNK: usize = 256 * 1024;

/// The walker's side of [`LocalLayerTar`]: chunks over a bounded channel.
struct ChunkWriter {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= TAR_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(TAR_CHUNK));
        self.tx
            .send(full)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader stopped"))
    }
}

/// See [`local_layer_tar`].
pub struct LocalLayerTar {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
    walker: Option<std::thread::JoinHandle<Result<Digest, crate::layer::LayerError>>>,
    diff_id: Digest,
}

impl std::io::Read for LocalLayerTar {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.chunk = next;
                    self.at = 0;
                }
                Err(_) => return self.end(),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl LocalLayerTar {
    /// The walker is done: end of stream if it gave the layer's diff_id.
    fn end(&mut self) -> std::io::Result<usize> {
        let Some(walker) = self.walker.take() else {
            return Ok(0);
        };
        let other = |m: String| std::io::Error::other(m);
        match walker.join() {
            Ok(Ok(d)) if d == self.diff_id => Ok(0),
            Ok(Ok(d)) => Err(other(format!(
                "layer {}: its directory now gives {d} (it changed since the layer was made)",
                self.diff_id
            ))),
            Ok(Err(e)) => Err(other(format!("layer {}: {e}", self.diff_id))),
            Err(_) => Err(other(format!(
                "layer {}: the writer panicked",
                self.diff_id
            ))),
        }
    }
}
