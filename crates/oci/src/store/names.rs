//! The image index (`index.json`): which stored manifests have which names.
//! Every change is a read-modify-write under `index.lock`, written atomically.

use super::{flock, io_err, BlobRef, Result, Store, StoreError};
use crate::canonical_json::canonical_json;
use crate::digest::Digest;
use crate::reference::ImageName;
use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io;
use std::path::PathBuf;

/// The annotation that names an image in an OCI image layout's index.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd and Docker use for the full image name in an index.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// One entry of the store's image index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredImage {
    /// `None` for an image that was loaded without a name (docker shows `<none>`).
    pub name: Option<ImageName>,
    /// The manifest (or index) of the image.
    pub target: BlobRef,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexFile {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<BlobRef>,
}

impl Store {
    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// All stored images, in index order (sorted by name; untagged last by digest).
    pub fn images(&self) -> Result<Vec<StoredImage>> {
        let path = self.index_path();
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        let index: IndexFile =
            serde_json::from_slice(&data).map_err(|source| StoreError::Index { path, source })?;
        Ok(index
            .manifests
            .into_iter()
            .map(|mut target| {
                let name = target
                    .annotations
                    .remove(REF_NAME_ANNOTATION)
                    .and_then(|n| n.parse::<ImageName>().ok());
                StoredImage { name, target }
            })
            .collect())
    }

    /// Read-modify-write the index under the index lock, atomically.
    fn update_index<T>(&self, f: impl FnOnce(&mut Vec<StoredImage>) -> Result<T>) -> Result<T> {
        let lock_path = self.root.join("index.lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err("opening", &lock_path))?;
        flock(&lock, FlockOperation::LockExclusive, &lock_path)?;
        // The index must never name a blob that is not durable yet.
        self.sync()?;
        let mut images = self.images()?;
        let out = f(&mut images)?;
        images.sort_by(|a, b| match (&a.name, &b.name) {
            (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.target.digest.cmp(&b.target.digest),
        });
        let manifests = images
            .into_iter()
            .map(|img| {
                let mut t = img.target;
                if let Some(n) = img.name {
                    t.annotations
                        .insert(REF_NAME_ANNOTATION.to_string(), n.to_string());
                }
                t
            })
            .collect();
        let index = IndexFile {
            schema_version: 2,
            media_type: Some(crate::descriptor::media_type::OCI_INDEX.to_string()),
            manifests,
        };
        // Unchanged (a no-op rebuild tags the same image again): no write, and
        // no fsync of the file and the directory.
        let data = canonical_json(&index);
        if fs::read(self.index_path()).ok().as_deref() != Some(&data[..]) {
            self.write_atomic(&self.index_path(), &data)?;
        }
        drop(lock);
        Ok(out)
    }

    /// Point `name` at `target` (replacing what it named before). The target's blobs
    /// must already be stored.
    pub fn tag(&self, name: &ImageName, target: BlobRef) -> Result<()> {
        if !self.has_blob(&target.digest) {
            return Err(StoreError::BlobNotFound(target.digest));
        }
        self.update_index(|images| {
            images.retain(|i| i.name.as_ref() != Some(name));
            // A dangling entry of the same image is now named.
            images.retain(|i| !(i.name.is_none() && i.target.digest == target.digest));
            let mut target = target;
            target.annotations.remove(REF_NAME_ANNOTATION);
            images.push(StoredImage {
                name: Some(name.clone()),
                target,
            });
            Ok(())
        })
    }

    /// Record an image without a name (kept until removed by digest).
    pub fn add_untagged(&self, target: BlobRef) -> Result<()> {
        if !self.has_blob(&target.digest) {
            return Err(StoreError::BlobNotFound(target.digest));
        }
        self.update_index(|images| {
            if !images.iter().any(|i| i.target.digest == target.digest) {
                images.push(StoredImage { name: None, target });
            }
            Ok(())
        })
    }

    /// Remove the name `name`; returns what it pointed at.
    pub fn untag(&self, name: &ImageName) -> Result<BlobRef> {
        self.update_index(|images| {
            let pos = images
                .iter()
                .position(|i| i.name.as_ref() == Some(name))
                .ok_or_else(|| StoreError::ImageNotFound(name.to_string()))?;
            Ok(images.remove(pos).target)
        })
    }

    /// Remove every index entry whose target is `digest` (all its names); returns
    /// the names removed.
    pub fn remove_image(&self, digest: &Digest) -> Result<Vec<Option<ImageName>>> {
        self.update_index(|images| {
            let mut removed = Vec::new();
            images.retain(|i| {
                if i.target.digest == *digest {
                    removed.push(i.name.clone());
                    false
                } else {
                    true
                }
            });
            if removed.is_empty() {
                return Err(StoreError::ImageNotFound(digest.to_string()));
            }
            Ok(removed)
        })
    }

    /// The image named `name`.
    pub fn resolve(&self, name: &ImageName) -> Result<BlobRef> {
        self.images()?
            .into_iter()
            .find(|i| i.name.as_ref() == Some(name))
            .map(|i| i.target)
            .ok_or_else(|| StoreError::ImageNotFound(name.to_string()))
    }
}
