//! OCI image layout, as a directory or as a tar (an "OCI archive").

use super::{closure, io_err, ArchiveError, Exporter, NamedImage, Result, TarOut};
use crate::canonical_json::canonical_json;
use crate::image::media_type;
use crate::store::{sync_dir, BlobRef, Store, CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION};
use serde::Serialize;
use std::fs;
use std::io::Write;
use std::path::PathBuf;

pub(crate) const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LayoutIndex {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<BlobRef>,
}

/// The `index.json` of a layout holding `images`: each manifest annotated with its
/// tag (`org.opencontainers.image.ref.name`, what `skopeo oci:<dir>:<tag>` looks up)
/// and its full name (`io.containerd.image.name`, what `docker load` and kiln read).
pub(crate) fn layout_index(images: &[NamedImage]) -> Vec<u8> {
    let manifests = images
        .iter()
        .map(|img| {
            let mut d = img.target.clone();
            d.annotations.remove(REF_NAME_ANNOTATION);
            if let Some(name) = &img.name {
                d.annotations
                    .insert(REF_NAME_ANNOTATION.to_string(), name.tag().to_string());
                d.annotations
                    .insert(CONTAINERD_NAME_ANNOTATION.to_string(), name.to_string());
            }
            d
        })
        .collect();
    canonical_json(&LayoutIndex {
        schema_version: 2,
        media_type: media_type::OCI_INDEX,
        manifests,
    })
}

enum Dest {
    Dir(PathBuf),
    Tar(Box<dyn Write>),
}

/// Writes an OCI image layout.
pub struct OciExporter {
    dest: Option<Dest>,
}

impl OciExporter {
    /// Write (or add to) a layout directory. An existing `index.json` there is replaced.
    pub fn dir(path: impl Into<PathBuf>) -> Self {
        OciExporter {
            dest: Some(Dest::Dir(path.into())),
        }
    }
    /// Write the layout as a tar stream.
    pub fn tar(out: impl Write + 'static) -> Self {
        OciExporter {
            dest: Some(Dest::Tar(Box::new(out))),
        }
    }
}

impl Exporter for OciExporter {
    fn export(&mut self, store: &Store, images: &[NamedImage]) -> Result<()> {
        let dest = self
            .dest
            .take()
            .ok_or_else(|| ArchiveError::Format("this exporter was already used".into()))?;
        let mut blobs = Vec::new();
        for img in images {
            for b in closure(store, &img.target)? {
                if !blobs.iter().any(|x: &BlobRef| x.digest == b.digest) {
                    blobs.push(b);
                }
            }
        }
        let index = layout_index(images);
        match dest {
            Dest::Dir(dir) => {
                let blob_dir = dir.join("blobs/sha256");
                fs::create_dir_all(&blob_dir).map_err(io_err("creating", &blob_dir))?;
                for b in &blobs {
                    let path = blob_dir.join(b.digest.hex());
                    if path.is_file() && fs::metadata(&path).map(|m| m.len()).ok() == Some(b.size) {
                        continue;
                    }
                    let tmp = blob_dir.join(format!(".tmp-{}", b.digest.hex()));
                    let mut r = store.open_blob_verified(&b.digest)?;
                    let mut f = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
                    std::io::copy(&mut r, &mut f)
                        .and_then(|_| f.sync_all())
                        .map_err(io_err("writing", &tmp))?;
                    fs::rename(&tmp, &path).map_err(io_err("renaming", &path))?;
                }
                sync_dir(&blob_dir)?;
                for (name, data) in [("oci-layout", OCI_LAYOUT), ("index.json", &index[..])] {
                    let path = dir.join(name);
                    let tmp = dir.join(format!(".tmp-{name}"));
                    fs::write(&tmp, data).map_err(io_err("writing", &tmp))?;
                    fs::rename(&tmp, &path).map_err(io_err("renaming", &path))?;
                }
                sync_dir(&dir)?;
            }
            Dest::Tar(out) => {
                let mut tar = TarOut::new(out);
                let w = |e| io_err("writing", "OCI archive")(e);
                tar.bytes("oci-layout", OCI_LAYOUT).map_err(w)?;
                for b in &blobs {
                    tar.blob(store, b)?;
                }
                tar.bytes("index.json", &index).map_err(w)?;
                tar.finish().and_then(|mut o| o.flush()).map_err(w)?;
            }
        }
        Ok(())
    }
}
