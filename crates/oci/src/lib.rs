//! kiln-oci: the content-addressed store, image/manifest/config types, the layer
//! codec (tar, whiteouts, gzip/zstd), OCI layout and docker-archive formats, and
//! the registry client. Knows nothing about Dockerfiles.

pub mod digest;

pub use digest::{Digest, Hasher};
