//! The image's filesystem: its layers applied in order onto a directory
//! ([`LocalExporter`], `-o type=local`) or written as one tar ([`TarExporter`],
//! `-o type=tar`). Layer decoding, whiteouts and safe extraction are the layer
//! codec's ([`crate::layer`]).

use super::{ArchiveError, Exporter, NamedImage, Result};
use crate::image::load_image;
use crate::layer::{
    apply_image_layer, write_layer, ApplyOptions, Compression, DiffKind, LayerOptions,
};
use crate::store::Store;
use std::io::Write;
use std::path::{Path, PathBuf};

fn one_image<'a>(images: &'a [NamedImage], what: &str) -> Result<&'a NamedImage> {
    match images {
        [one] => Ok(one),
        _ => Err(ArchiveError::Unsupported(format!(
            "the {what} exporter writes exactly one image's filesystem, not {}",
            images.len()
        ))),
    }
}

/// Apply every layer of `image`, base first, onto `dest`. Each layer is checked
/// against its descriptor and its diff_id as it is applied.
pub(crate) fn unpack(store: &Store, image: &NamedImage, dest: &Path) -> Result<()> {
    let img = load_image(store, &image.target)?;
    let diff_ids = &img.config.rootfs.diff_ids;
    if diff_ids.len() != img.layers.len() {
        return Err(ArchiveError::Format(format!(
            "image {}: the manifest has {} layers but the config lists {} diff_ids",
            img.id(),
            img.layers.len(),
            diff_ids.len()
        )));
    }
    let opts = ApplyOptions::default();
    for (layer, diff_id) in img.layers.iter().zip(diff_ids) {
        apply_image_layer(store, layer, diff_id, dest, &opts).map_err(|e| ArchiveError::Layer {
            digest: layer.digest,
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// Writes an image's root filesystem into a directory (created if missing).
pub struct LocalExporter {
    dest: PathBuf,
}

impl LocalExporter {
    pub fn new(dest: impl Into<PathBuf>) -> Self {
        LocalExporter { dest: dest.into() }
    }
}

impl Exporter for LocalExporter {
    fn export(&mut self, store: &Store, images: &[NamedImage]) -> Result<()> {
        unpack(store, one_image(images, "local")?, &self.dest)
    }
}

/// Writes an image's root filesystem as one uncompressed tar.
pub struct TarExporter {
    out: Option<Box<dyn Write>>,
}

impl TarExporter {
    pub fn new(out: impl Write + 'static) -> Self {
        TarExporter {
            out: Some(Box::new(out)),
        }
    }
}

impl Exporter for TarExporter {
    fn export(&mut self, store: &Store, images: &[NamedImage]) -> Result<()> {
        let out = self
            .out
            .take()
            .ok_or_else(|| ArchiveError::Format("this exporter was already used".into()))?;
        let image = one_image(images, "tar")?;
        // Unpack onto scratch space in the store (same filesystem, removed on drop),
        // then write that tree as a tar with the layer writer's deterministic headers.
        let scratch = store.scratch_dir()?;
        let root = scratch.path().join("rootfs");
        unpack(store, image, &root)?;
        let opts = LayerOptions {
            compression: Compression::None,
            source_date_epoch: None,
        };
        write_layer(&root, DiffKind::Plain, &opts, out)
            .map_err(|e| ArchiveError::Format(format!("writing the filesystem tar: {e}")))?;
        Ok(())
    }
}
