//! Shared by the tests that need a registry: where the local registries are
//! (started by scripts/setup-test-env), images built straight into a store, and
//! counting requests in a registry's access log.
#![allow(dead_code)]

use kiln_oci::image::{media_type, write_image};
use kiln_oci::registry::{AuthFile, RegistryConfig, RegistryContext};
use kiln_oci::{BlobRef, Digest, ImageConfig, ManifestFormat, Store};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn require(addr: &str, what: &str) -> String {
    let sock = addr
        .parse()
        .unwrap_or_else(|e| panic!("bad address {addr}: {e}"));
    if TcpStream::connect_timeout(&sock, Duration::from_secs(2)).is_err() {
        panic!(
            "this test needs the {what} registry on {addr}, and none answers: \
             run scripts/setup-test-env (as root) to start it"
        );
    }
    addr.to_string()
}

/// The registry without auth (default 127.0.0.1:5000).
pub fn plain_registry() -> String {
    require(
        &env_or("KILN_TEST_REGISTRY", "127.0.0.1:5000"),
        "unauthenticated",
    )
}

/// The registry with htpasswd Basic auth (default 127.0.0.1:5001).
pub fn auth_registry() -> String {
    require(
        &env_or("KILN_TEST_AUTH_REGISTRY", "127.0.0.1:5001"),
        "authenticated",
    )
}

pub fn auth_user() -> (String, String) {
    (
        env_or("KILN_TEST_AUTH_USER", "kiln"),
        env_or("KILN_TEST_AUTH_PASSWORD", "kiln-secret"),
    )
}

pub fn registry_dir() -> PathBuf {
    PathBuf::from(env_or(
        "KILN_TEST_REGISTRY_DIR",
        "/tmp/kiln-test-registries",
    ))
}

/// The access log of the unauthenticated registry.
pub fn plain_registry_log() -> PathBuf {
    registry_dir().join("plain/registry.log")
}

/// Lines of `log` (an access log) with `needle`; read again to count new requests.
pub fn count_log_lines(log: &Path, needles: &[&str]) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("cannot read the registry log {}: {e}", log.display()))
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// A repository name no earlier run used.
pub fn unique_repo(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("kiln-test/{prefix}-{}-{nanos}", std::process::id())
}

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
