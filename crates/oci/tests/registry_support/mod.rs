//! Shared by the tests that need a registry: where the local registries are
//! (`kiln_testkit::registry`: started by scripts/setup-test-env), images built
//! straight into a store, and counting requests in a registry's access log.
#![allow(dead_code)]

use kiln_oci::image::{media_type, write_image};
use kiln_oci::registry::{AuthFile, RegistryConfig, RegistryContext};
use kiln_oci::{BlobRef, Digest, ImageConfig, ManifestFormat, Store};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub use kiln_testkit::registry::{
    auth as auth_registry, auth_user, count_log_lines, plain as plain_registry,
    plain_log as plain_registry_log, unique_repo,
};

/// A context with no mirrors, no insecure registries and an empty auth file in `dir`.
pub fn context(dir: &Path) -> RegistryContext {
    RegistryContext {
        config: RegistryConfig::default(),
        auth: AuthFile::locate(Some(&dir.join("auth.json"))),
    }
}

/// A gzip layer holding `files` (sorted, mtime 0).
pub fn layer(files: &[(&str, &[u8])]) -> (Vec<u8>, Digest) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, name, *data).unwrap();
    }
    let tar_bytes = b.into_inner().unwrap();
    let diff_id = Digest::of(&tar_bytes);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// The busybox-static binary as a base layer (same bytes every time).
pub fn busybox_layer() -> (Vec<u8>, Digest) {
    let busybox = std::fs::read("/bin/busybox")
        .expect("busybox-static is installed (scripts/setup-test-env)");
    layer(&[("bin/busybox", &busybox)])
}

/// Store an image of `layers` (base first) for `arch`; returns its manifest.
pub fn store_image(
    store: &Store,
    arch: &str,
    layers: &[(Vec<u8>, Digest)],
    format: ManifestFormat,
) -> BlobRef {
    let mut config = ImageConfig::new("linux", arch);
    let mut refs = Vec::new();
    for (data, diff_id) in layers {
        let digest = store.put_blob(data).unwrap();
        config.rootfs.diff_ids.push(*diff_id);
        refs.push(BlobRef {
            media_type: media_type::OCI_LAYER_GZIP.into(),
            digest,
            size: data.len() as u64,
            annotations: BTreeMap::new(),
        });
    }
    write_image(store, &config, &refs, format).unwrap()
}

/// The digests of a stored manifest's config and layers.
pub fn blobs_of(store: &Store, manifest: &BlobRef) -> Vec<Digest> {
    let data = store.read_blob(&manifest.digest).unwrap();
    kiln_oci::image::referenced_blobs(&data, &manifest.digest)
        .unwrap()
        .into_iter()
        .map(|b| b.digest)
        .collect()
}
