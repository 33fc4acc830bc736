//! What every test module of kiln's test binaries shares.

use kiln_oci::image::media_type;
use kiln_oci::image::{format_rfc3339, write_image, ContainerConfig, History};
use kiln_oci::layer::{write_layer, DiffKind, LayerOptions};
use kiln_oci::{BlobRef, Digest, ImageConfig, ManifestFormat, Store};
use kiln_testkit::Kiln;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `kiln` binary this package built, as a [`Kiln`] command.
pub fn kiln() -> Kiln {
    Kiln::new(kiln_path())
}

/// The path of the `kiln` binary this package built (for scripts and `runuser`).
pub fn kiln_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kiln"))
}

/// A copy of kiln's binary at `to` (for a user who cannot read the build
/// directory), written by `cp`: a descriptor open for writing in this process
/// would be inherited by a child another test thread forks meanwhile, and
/// exec'ing the copy would then fail with "Text file busy" until that child execs.
pub fn copy_kiln_exe(to: &Path) {
    let ok = Command::new("cp")
        .arg(kiln_path())
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success(), "cp kiln {}", to.display());
}

/// `scripts/make-base-images --root ROOT [--only ONLY]` with this build's kiln:
/// `busybox:test` and/or `node:20-bookworm-slim` in the store at `root`. Needs
/// root (mmdebstrap, chroot); the test fails with the script's output otherwise.
pub fn make_base_images(root: &Path, only: Option<&str>) {
    let mut cmd = Command::new(kiln_testkit::repo_root().join("scripts/make-base-images"));
    if let Some(only) = only {
        cmd.args(["--only", only]);
    }
    let made = cmd
        .arg("--root")
        .arg(root)
        .env("KILN", kiln_path())
        .output()
        .expect("run scripts/make-base-images");
    assert!(
        made.status.success(),
        "scripts/make-base-images failed ({}):\n{}",
        made.status,
        kiln_testkit::printed(&made)
    );
}

/// Stores the busybox image (`kiln_testkit::busybox::rootfs`) as `busybox:test` in
/// the store at `root`.
pub fn store_busybox(root: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    kiln_testkit::busybox::rootfs(tmp.path()).unwrap();
    store_image(
        root,
        "busybox:test",
        tmp.path(),
        ContainerConfig {
            env: vec!["PATH=/bin".into()],
            cmd: Some(vec!["sh".into()]),
            ..ContainerConfig::default()
        },
        "busybox made by the test",
    );
}

/// Stores an image of one layer (the directory `rootfs`, as of time 0) under `tag`
/// in the store at `root`, with the runtime config `container` and one history
/// entry `created_by`.
pub fn store_image(
    root: &Path,
    tag: &str,
    rootfs: &Path,
    container: ContainerConfig,
    created_by: &str,
) {
    let store = Store::open(root).unwrap();
    let mut w = store.blob_writer().unwrap();
    let desc = write_layer(
        rootfs,
        DiffKind::Plain,
        &LayerOptions {
            source_date_epoch: Some(0),
            ..LayerOptions::default()
        },
        &mut w,
    )
    .unwrap();
    let (digest, size) = w.commit().unwrap();
    let mut config = ImageConfig::new("linux", kiln_oci::image::host_architecture());
    config.created = Some(format_rfc3339(0));
    config.config = Some(container);
    config.rootfs.diff_ids.push(desc.diff_id);
    config.history.push(History {
        created_by: Some(created_by.into()),
        ..History::default()
    });
    let layer = BlobRef {
        media_type: desc.media_type,
        digest,
        size,
        annotations: BTreeMap::new(),
    };
    let m = write_image(&store, &config, &[layer], ManifestFormat::Oci).unwrap();
    store.tag(&tag.parse().unwrap(), m).unwrap();
}

/// `skopeo inspect --raw docker://REFERENCE` against a plain-HTTP registry:
/// the manifest or index as the registry serves it to an independent reader.
pub fn skopeo_raw(reference: &str) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect --raw {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `buildah manifest inspect NAME` against the plain-HTTP registry `registry`
/// (a registries.conf written into `dir` marks it insecure): the index as
/// buildah reads it.
pub fn buildah_manifest_inspect(dir: &Path, registry: &str, name: &str) -> serde_json::Value {
    let conf = dir.join("registries.conf");
    std::fs::write(
        &conf,
        format!("[[registry]]\nlocation = \"{registry}\"\ninsecure = true\n"),
    )
    .unwrap();
    let out = Command::new("buildah")
        .arg("--registries-conf")
        .arg(&conf)
        .args(["manifest", "inspect", name])
        .output()
        .expect("run buildah");
    assert!(
        out.status.success(),
        "buildah manifest inspect {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A one-layer image for a test's own small registry: its layer is a tar of
/// one file `data.bin` holding `content` (gzip-compressed when `gzip`).
pub struct OneFileImage {
    pub manifest: Vec<u8>,
    pub config: (Digest, Vec<u8>),
    pub layer: (Digest, Vec<u8>),
    /// The uncompressed tar's digest, as the config lists it.
    pub diff_id: Digest,
}

impl OneFileImage {
    pub fn new(content: &[u8], gzip: bool) -> Self {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, "data.bin", content).unwrap();
        let tar = b.into_inner().unwrap();
        let diff_id = Digest::of(&tar);
        let (layer, layer_type) = if gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &tar).unwrap();
            (gz.finish().unwrap(), media_type::OCI_LAYER_GZIP)
        } else {
            (tar, media_type::OCI_LAYER)
        };
        let mut config = ImageConfig::for_host();
        config.rootfs.diff_ids = vec![diff_id];
        let config = config.to_bytes();
        let (cd, ld) = (Digest::of(&config), Digest::of(&layer));
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"{layer_type}","digest":"{ld}","size":{}}}]}}"#,
            media_type::OCI_MANIFEST,
            media_type::OCI_CONFIG,
            config.len(),
            layer.len()
        );
        OneFileImage {
            manifest: manifest.into_bytes(),
            config: (cd, config),
            layer: (ld, layer),
            diff_id,
        }
    }
}
