//! Descriptors: what names a blob (its media type, digest, size and
//! annotations), the media types kiln knows, and which blobs a manifest or
//! index refers to. A leaf module: the store and the image model both use it.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Media types kiln reads and writes.
pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

    pub fn is_manifest(mt: &str) -> bool {
        mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
    }
    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_MANIFEST_LIST
    }
    pub fn is_manifest_or_index(mt: &str) -> bool {
        is_manifest(mt) || is_index(mt)
    }
    /// A layer stored as a plain tar (its digest is its diff_id).
    pub fn is_uncompressed_layer(mt: &str) -> bool {
        mt == OCI_LAYER || mt == DOCKER_LAYER
    }
}

/// A descriptor of something stored: what the index records for each image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobRef {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A manifest or index that is not what it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed manifest {digest}: {message}")]
pub struct MalformedManifest {
    pub digest: Digest,
    pub message: String,
}

/// The blobs a manifest or index refers to (config and layers, or manifests).
pub fn referenced_blobs(data: &[u8], digest: &Digest) -> Result<Vec<BlobRef>, MalformedManifest> {
    let malformed = |message: String| MalformedManifest {
        digest: *digest,
        message,
    };
    let v: Value = serde_json::from_slice(data).map_err(|e| malformed(e.to_string()))?;
    let mut out = Vec::new();
    let mut push = |d: &Value| -> Result<(), MalformedManifest> {
        let b: BlobRef = serde_json::from_value(d.clone()).map_err(|e| malformed(e.to_string()))?;
        out.push(b);
        Ok(())
    };
    if let Some(c) = v.get("config") {
        push(c)?;
    }
    for key in ["layers", "manifests"] {
        if let Some(items) = v.get(key).and_then(Value::as_array) {
            for item in items {
                push(item)?;
            }
        }
    }
    Ok(out)
}
