//! kiln-oci: the content-addressed store, image/manifest/config types, the layer
//! codec (tar, whiteouts, gzip/zstd), OCI layout and docker-archive formats, and
//! the registry client. Knows nothing about Dockerfiles.

pub mod attestation;
pub mod canonical_json;
pub mod descriptor;
pub mod digest;
pub mod export;
pub mod image;
pub mod index;
pub mod layer;
pub mod load;
pub mod parallel;
pub mod path;
pub mod reference;
pub mod registry;
pub mod store;

pub use digest::{Digest, Hasher};
pub use image::{Image, ImageConfig, ManifestFormat};
pub use reference::ImageName;
pub use store::{BlobRef, BlobWriter, Store, StoreError};
