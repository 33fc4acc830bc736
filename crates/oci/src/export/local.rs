//! The image's filesystem: its layers applied in order onto a directory
//! ([`LocalExporter`], `-o type=local`) or written as one tar ([`TarExporter`],
//! `-o type=tar`). Layer decoding, whiteouts and safe extraction are the layer
//! codec's ([`crate::layer`]).

use super::{ArchiveError, Exporter, NamedImage, Result};
use crate::image::load_image;
use crate::layer::{
    apply_image_layer, apply_layer_with, write_layer, ApplyOptions, Compression, DiffKind,
    LayerOptions,
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

/// Apply every layer of `image`, base first, onto `dest` (created first, so an
/// image without layers gives an empty directory). Each layer is checked
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
    std::fs::create_dir_all(dest).map_err(super::io_err("creating", dest))?;
    let opts = ApplyOptions::default();
    for (layer, diff_id) in img.layers.iter().zip(diff_ids) {
        let at = |e: crate::layer::LayerError| ArchiveError::Layer {
            digest: layer.digest,
            message: e.to_string(),
        };
        // A layer a build made and no output compressed yet: its tar is
        // written from its snapshot as it is applied (checked against its
        // diff_id at the end of the stream), no blob needed.
        let local = (!store.has_blob(&layer.digest) && layer.digest == *diff_id)
            .then(|| store.local_layer(diff_id))
            .flatten();
        match local {
            Some(local) => {
                let tar = super::local_layer_tar(*diff_id, &local)?;
                let stats = apply_layer_with(tar, dest, &opts).map_err(at)?;
                if stats.diff_id != *diff_id {
                    return Err(at(crate::layer::LayerError::NotAsDescribed {
                        blob: layer.digest,
                        problem: format!("its tar is {}", stats.diff_id),
                    }));
                }
            }
            None => {
                apply_image_layer(store, layer, diff_id, dest, &opts).map_err(at)?;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{write_image, ImageConfig};
    use crate::ManifestFormat;

    /// `FROM scratch` + `LABEL`: an image without layers still has a (empty)
    /// file tree, as a tar and as a directory.
    #[test]
    fn an_image_without_layers_exports_an_empty_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path().join("store")).unwrap();
        let config = ImageConfig::new("linux", "amd64");
        let target = write_image(&store, &config, &[], ManifestFormat::Oci).unwrap();
        let image = NamedImage { name: None, target };

        let tar_path = tmp.path().join("fs.tar");
        TarExporter::new(std::fs::File::create(&tar_path).unwrap())
            .export(&store, std::slice::from_ref(&image))
            .expect("a tar of an image without layers");
        let mut archive = tar::Archive::new(std::fs::File::open(&tar_path).unwrap());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .filter(|n| n != "./" && n != ".")
            .collect();
        assert!(names.is_empty(), "{names:?}");

        let dir = tmp.path().join("local");
        LocalExporter::new(&dir)
            .export(&store, &[image])
            .expect("a directory of an image without layers");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }
}
