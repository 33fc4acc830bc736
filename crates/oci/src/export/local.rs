//! The image's filesystem: its layers applied in order onto a directory
//! ([`LocalExporter`], `-o type=local`) or written as one tar ([`TarExporter`],
//! `-o type=tar`). Layer decoding, whiteouts and safe extraction are the layer
//! codec's ([`crate::layer`]).
//!
//! With attestations (`--sbom`, `--provenance`), both write the in-toto
//! statements as files at the top of the tree, as BuildKit's local and tar
//! exporters do ([`StatementFiles`]): `sbom.spdx.json`, `provenance.json`,
//! each about every regular file of the output (its path and sha256) instead
//! of an image manifest.

use super::{ArchiveError, Exporter, NamedImage, Result};
use crate::image::load_image;
use crate::layer::{
    apply_image_layer, apply_layer_with, write_layer, ApplyOptions, Compression, DiffKind,
    LayerOptions,
};
use crate::store::Store;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
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

/// In-toto statements to write into a filesystem output, and the time their
/// files get (`SOURCE_DATE_EPOCH` or the build's time, as BuildKit's epoch or
/// export time).
#[derive(Clone, Debug, Default)]
pub struct StatementFiles {
    pub statements: Vec<Value>,
    pub mtime: i64,
}

impl StatementFiles {
    /// The file BuildKit writes a statement of this predicate type to.
    pub fn file_name(statement: &Value) -> Result<&'static str> {
        match statement.get("predicateType").and_then(Value::as_str) {
            Some(crate::attestation::SPDX_PREDICATE) => Ok("sbom.spdx.json"),
            Some(crate::attestation::SLSA_PROVENANCE_V1) => Ok("provenance.json"),
            other => Err(ArchiveError::Unsupported(format!(
                "an attestation of predicate type {other:?} has no file name in a filesystem output"
            ))),
        }
    }

    /// Writes each statement into `root`, its subjects every regular file
    /// under `root` before they are added (path relative to `root`, sorted,
    /// and sha256), as JSON indented by two spaces, mode 0600.
    fn write_into(&self, root: &Path) -> Result<()> {
        if self.statements.is_empty() {
            return Ok(());
        }
        let mut files = Vec::new();
        regular_files(root, "", &mut files)?;
        files.sort();
        let mut subjects = Vec::with_capacity(files.len());
        for rel in files {
            let path = root.join(&rel);
            let mut f = std::fs::File::open(&path).map_err(super::io_err("reading", &path))?;
            let mut hash = Sha256::new();
            std::io::copy(&mut f, &mut hash).map_err(super::io_err("reading", &path))?;
            subjects.push(json!({
                "name": rel,
                "digest": { "sha256": format!("{:x}", hash.finalize()) },
            }));
        }
        let mut seen = std::collections::BTreeSet::new();
        for statement in &self.statements {
            let name = Self::file_name(statement)?;
            if !seen.insert(name) {
                return Err(ArchiveError::Unsupported(format!(
                    "duplicate attestation path name {name}"
                )));
            }
            let mut statement = statement.clone();
            statement["subject"] = Value::Array(subjects.clone());
            let bytes = serde_json::to_vec_pretty(&statement)
                .map_err(|e| ArchiveError::Format(format!("writing {name}: {e}")))?;
            let path = root.join(name);
            // An image's own file of that name is replaced, not written through.
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(_) => Ok(()),
            }
            .map_err(super::io_err("replacing", &path))?;
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(super::io_err("creating", &path))?;
                f.write_all(&bytes)
                    .map_err(super::io_err("writing", &path))?;
                let t = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(self.mtime.max(0) as u64);
                f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
                    .map_err(super::io_err("setting the time of", &path))?;
            }
        }
        Ok(())
    }
}

/// The regular files under `dir` (not following symlinks), as paths relative
/// to the output's root (`prefix` is `dir`'s).
fn regular_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(super::io_err("reading", dir))? {
        let entry = entry.map_err(super::io_err("reading", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry
            .file_type()
            .map_err(super::io_err("reading", &entry.path()))?;
        if kind.is_dir() {
            regular_files(&entry.path(), &rel, out)?;
        } else if kind.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

/// Writes an image's root filesystem into a directory (created if missing).
pub struct LocalExporter {
    dest: PathBuf,
    statements: StatementFiles,
}

impl LocalExporter {
    pub fn new(dest: impl Into<PathBuf>) -> Self {
        LocalExporter {
            dest: dest.into(),
            statements: StatementFiles::default(),
        }
    }

    /// The attestations to write beside the filesystem.
    pub fn with_statements(mut self, statements: StatementFiles) -> Self {
        self.statements = statements;
        self
    }
}

impl Exporter for LocalExporter {
    fn export(&mut self, store: &Store, images: &[NamedImage]) -> Result<()> {
        unpack(store, one_image(images, "local")?, &self.dest)?;
        self.statements.write_into(&self.dest)
    }
}

/// Writes an image's root filesystem as one uncompressed tar.
pub struct TarExporter {
    out: Option<Box<dyn Write>>,
    statements: StatementFiles,
}

impl TarExporter {
    pub fn new(out: impl Write + 'static) -> Self {
        TarExporter {
            out: Some(Box::new(out)),
            statements: StatementFiles::default(),
        }
    }

    /// The attestations to write into the tar, at its top.
    pub fn with_statements(mut self, statements: StatementFiles) -> Self {
        self.statements = statements;
        self
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
        self.statements.write_into(&root)?;
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
