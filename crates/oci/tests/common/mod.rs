//! Test fixtures: a small busybox root filesystem, made into an image in a store.
#![allow(dead_code)]

use kiln_oci::image::{format_rfc3339, media_type, write_image, ContainerConfig, History};
use kiln_oci::layer::{write_layer, Compression, DiffKind, LayerOptions};
use kiln_oci::{BlobRef, Digest, ImageConfig, ManifestFormat, Store};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// The busybox rootfs (`kiln_testkit::busybox`) with odd modes and owners added.
pub fn busybox_rootfs(dir: &Path) {
    kiln_testkit::busybox::rootfs(dir).expect("the busybox rootfs");
    for d in ["usr/share/doc", "var/empty", "home/user"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::write(dir.join("etc/hello.txt"), "hello from kiln\n").unwrap();
    fs::write(dir.join("etc/secret"), "secret\n").unwrap();
    fs::set_permissions(dir.join("etc/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(dir.join("usr/share/doc/README"), "x".repeat(70_000)).unwrap();
    fs::set_permissions(dir.join("var/empty"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(dir.join("home/user/.profile"), "export PS1='$ '\n").unwrap();
    std::os::unix::fs::chown(dir.join("home/user"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(dir.join("home/user/.profile"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::symlink("/etc/hello.txt", dir.join("home/user/hello")).unwrap();
}

/// `dir` as a gzip layer, written by kiln's layer codec. Returns (blob, diff_id).
pub fn make_layer(dir: &Path) -> (Vec<u8>, Digest) {
    let mut blob = Vec::new();
    let opts = LayerOptions {
        compression: Compression::DEFAULT_GZIP,
        source_date_epoch: Some(0),
    };
    let desc = write_layer(dir, DiffKind::Plain, &opts, &mut blob).unwrap();
    assert_eq!(desc.digest, Digest::of(&blob));
    assert_eq!(desc.media_type, media_type::OCI_LAYER_GZIP);
    (blob, desc.diff_id)
}

/// Store an image made of one layer of `rootfs`; returns the manifest descriptor.
pub fn build_image(store: &Store, rootfs: &Path, format: ManifestFormat) -> BlobRef {
    let (layer, diff_id) = make_layer(rootfs);
    let digest = store.put_blob(&layer).unwrap();
    let mut config = ImageConfig::new("linux", "amd64");
    config.created = Some(format_rfc3339(1_700_000_000));
    let mut cc = ContainerConfig {
        env: vec!["PATH=/bin".into()],
        cmd: Some(vec!["/bin/sh".into()]),
        working_dir: Some("/home/user".into()),
        user: Some("1000:1000".into()),
        ..ContainerConfig::default()
    };
    cc.labels = BTreeMap::from([("org.example.test".to_string(), "yes".to_string())]);
    config.config = Some(cc);
    config.rootfs.diff_ids.push(diff_id);
    config.history.push(History {
        created: config.created.clone(),
        created_by: Some("COPY rootfs /".into()),
        ..History::default()
    });
    config.history.push(History {
        created: config.created.clone(),
        created_by: Some("CMD [\"/bin/sh\"]".into()),
        empty_layer: true,
        ..History::default()
    });
    let layer_ref = BlobRef {
        media_type: media_type::OCI_LAYER_GZIP.into(),
        digest,
        size: layer.len() as u64,
        annotations: BTreeMap::new(),
    };
    write_image(store, &config, &[layer_ref], format).unwrap()
}

/// Run a command; panic with its output if it fails. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One line per path: type, mode, uid, gid, size, sha256 (files) or target (symlinks).
pub fn tree_listing(root: &Path) -> Vec<String> {
    fn walk(base: &Path, rel: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(base.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let p = rel.join(&n);
            let full = base.join(&p);
            let m = fs::symlink_metadata(&full).unwrap();
            let ft = m.file_type();
            let (kind, size, detail) = if ft.is_dir() {
                ("dir", 0, String::new())
            } else if ft.is_symlink() {
                (
                    "symlink",
                    0,
                    fs::read_link(&full).unwrap().display().to_string(),
                )
            } else if ft.is_file() {
                let mut data = Vec::new();
                fs::File::open(&full)
                    .unwrap()
                    .read_to_end(&mut data)
                    .unwrap();
                ("file", m.len(), Digest::of(&data).to_string())
            } else {
                ("other", 0, String::new())
            };
            out.push(format!(
                "{} {kind} {:o} {}:{} {size} {detail}",
                p.display(),
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            ));
            if ft.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out);
    out
}
