//! `docker load`-compatible archives (docker-archive).
//!
//! The archive carries `manifest.json` (Config / RepoTags / Layers), which is what
//! `docker load` of every dockerd version and `skopeo docker-archive:` read, and
//! also the same content as an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`), as Docker 25+ writes it. The config and layers are referenced
//! by their blob paths; layers stay as stored (docker load decompresses them), so
//! loading the archive back reproduces the exact manifest digest.

use super::oci::{layout_index, OCI_LAYOUT};
use super::{closure, io_err, ArchiveError, Exporter, NamedImage, Result, TarOut};
use crate::canonical_json::canonical_json;
use crate::image::load_image;
use crate::store::{BlobRef, Store};
use serde::Serialize;
use std::io::Write;

/// One entry of docker's `manifest.json`.
#[derive(Serialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn blob_path(b: &BlobRef) -> String {
    format!("blobs/sha256/{}", b.digest.hex())
}

/// Writes a docker-archive tar.
pub struct DockerExporter {
    out: Option<Box<dyn Write>>,
}

impl DockerExporter {
    pub fn new(out: impl Write + 'static) -> Self {
        DockerExporter {
            out: Some(Box::new(out)),
        }
    }
}

impl Exporter for DockerExporter {
    fn export(&mut self, store: &Store, images: &[NamedImage]) -> Result<()> {
        let out = self
            .out
            .take()
            .ok_or_else(|| ArchiveError::Format("this exporter was already used".into()))?;
        let mut entries: Vec<DockerManifestEntry> = Vec::new();
        let mut blobs: Vec<BlobRef> = Vec::new();
        for img in images {
            for b in closure(store, &img.target)? {
                if !blobs.iter().any(|x| x.digest == b.digest) {
                    blobs.push(b);
                }
            }
            let image = load_image(store, &img.target)?;
            let config = blob_path(&image.config_ref);
            let tag = img.name.as_ref().map(|n| n.to_string());
            // The same image saved under two names is one entry with two RepoTags.
            if let Some(e) = entries.iter_mut().find(|e| e.config == config) {
                e.repo_tags.extend(tag);
                continue;
            }
            entries.push(DockerManifestEntry {
                config,
                repo_tags: tag.into_iter().collect(),
                layers: image.layers.iter().map(blob_path).collect(),
            });
        }
        let mut tar = TarOut::new(out);
        let w = |e| io_err("writing", "docker archive")(e);
        for b in &blobs {
            tar.blob(store, b)?;
        }
        tar.bytes("index.json", &layout_index(images)).map_err(w)?;
        tar.bytes("manifest.json", &canonical_json(&entries))
            .map_err(w)?;
        tar.bytes("oci-layout", OCI_LAYOUT).map_err(w)?;
        tar.finish().and_then(|mut o| o.flush()).map_err(w)?;
        Ok(())
    }
}
