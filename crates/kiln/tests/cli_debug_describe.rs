//! `kiln debug describe`: the same image described from the store, an OCI archive,
//! an OCI layout directory and a docker archive gives the same normalized JSON,
//! with later layers' whiteouts applied.

use crate::util::kiln;
use kiln_oci::image::{
    format_rfc3339, media_type, write_image, ContainerConfig, HealthConfig, History,
};
use kiln_oci::{BlobRef, Digest, ImageConfig, ManifestFormat, Store};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

fn ok(root: &Path, args: &[&str]) -> String {
    kiln().root(root).args(args).stdout()
}

enum Entry<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, u64, &'a [u8]),
    Symlink(&'a str, &'a str),
}

fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(name, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
            Entry::File(name, mode, owner, data) => {
                h.set_mode(*mode);
                h.set_uid(*owner);
                h.set_gid(*owner);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, *data).unwrap();
            }
            Entry::Symlink(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, name, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A two-layer image: the second deletes a file of the first and adds a symlink.
fn make_image(root: &Path) {
    let store = Store::open(root).unwrap();
    let mut config = ImageConfig::new("linux", "amd64");
    config.created = Some(format_rfc3339(1_700_000_000));
    let mut c = ContainerConfig {
        env: vec!["PATH=/bin".into()],
        entrypoint: Some(vec!["/app".into()]),
        user: Some("1000:1000".into()),
        working_dir: Some("/srv".into()),
        stop_signal: Some("SIGQUIT".into()),
        ..ContainerConfig::default()
    };
    c.labels.insert("a".into(), "b".into());
    c.volumes.insert("/data".into(), Default::default());
    c.healthcheck = Some(HealthConfig {
        test: vec!["NONE".into()],
        ..HealthConfig::default()
    });
    config.config = Some(c);
    for (by, empty) in [
        ("COPY a /srv/ # buildkit", false),
        ("RUN /bin/sh -c x # buildkit", false),
        ("ENTRYPOINT [\"/app\"]", true),
    ] {
        config.history.push(History {
            created: config.created.clone(),
            created_by: Some(by.into()),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: empty,
            ..History::default()
        });
    }
    let layers = [
        layer(&[
            Entry::Dir("srv/", 0o755),
            Entry::File("srv/gone", 0o644, 0, b"deleted later"),
            Entry::File("srv/tool", 0o4755, 1000, b"tool"),
            Entry::Dir("tmp/", 0o1777),
        ]),
        layer(&[
            Entry::Dir("srv/", 0o750),
            Entry::File("srv/.wh.gone", 0o644, 0, b""),
            Entry::Symlink("srv/link", "tool"),
        ]),
    ];
    let mut refs = Vec::new();
    for data in &layers {
        let digest = store.put_blob(data).unwrap();
        config.rootfs.diff_ids.push(Digest::of(data));
        refs.push(BlobRef {
            media_type: media_type::OCI_LAYER.into(),
            digest,
            size: data.len() as u64,
            annotations: BTreeMap::new(),
        });
    }
    let m = write_image(&store, &config, &refs, ManifestFormat::Oci).unwrap();
    store.tag(&"img:1".parse().unwrap(), m).unwrap();
}

#[test]
fn describes_the_same_image_from_every_kind_of_source() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    make_image(&root);

    let from_store = ok(&root, &["debug", "describe", "img:1"]);
    let v: Value = serde_json::from_str(&from_store).unwrap();
    assert_eq!(
        v["config"],
        json!({
            "Cmd": null, "Entrypoint": ["/app"], "Env": ["PATH=/bin"],
            "ExposedPorts": null, "Healthcheck": {"Test": ["NONE"]},
            "Labels": {"a": "b"}, "OnBuild": null, "Shell": null,
            "StopSignal": "SIGQUIT", "User": "1000:1000", "Volumes": ["/data"],
            "WorkingDir": "/srv"
        })
    );
    let tool_sha = Digest::of(b"tool").hex();
    assert_eq!(
        v["files"],
        json!([
            {"path": "/srv", "type": "dir", "mode": "0750", "uid": 0, "gid": 0},
            {"path": "/srv/link", "type": "symlink", "mode": "0777", "uid": 0, "gid": 0,
             "target": "tool"},
            {"path": "/srv/tool", "type": "file", "mode": "4755", "uid": 1000, "gid": 1000,
             "size": 4, "sha256": tool_sha},
            {"path": "/tmp", "type": "dir", "mode": "1777", "uid": 0, "gid": 0},
        ])
    );
    assert!(!from_store.contains("sha256:"), "no digests: {from_store}");
    assert!(!from_store.contains("2023"), "no timestamps: {from_store}");

    let history = ok(&root, &["debug", "describe", "--history", "img:1"]);
    assert!(!history.contains("2023"), "no timestamps: {history}");
    let h: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(h["layers"], 2);
    assert_eq!(h["args_escaped"], false);
    assert_eq!(
        h["history"][2],
        json!({"created_by": "ENTRYPOINT [\"/app\"]", "empty_layer": true,
               "comment": "buildkit.dockerfile.v0"})
    );
    assert_eq!(h["history"].as_array().unwrap().len(), 3);

    // An OCI archive, the layout directory inside it, and a docker archive.
    let oci_tar = tmp.path().join("img-oci.tar");
    let docker_tar = tmp.path().join("img-docker.tar");
    ok(
        &root,
        &[
            "save",
            "--format",
            "oci",
            "-o",
            oci_tar.to_str().unwrap(),
            "img:1",
        ],
    );
    ok(
        &root,
        &["save", "-o", docker_tar.to_str().unwrap(), "img:1"],
    );
    let layout = tmp.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    tar::Archive::new(std::fs::File::open(&oci_tar).unwrap())
        .unpack(&layout)
        .unwrap();
    assert!(layout.join("index.json").is_file());
    let empty = tmp.path().join("unused-store");
    for source in [&oci_tar, &layout, &docker_tar] {
        let out = ok(&empty, &["debug", "describe", source.to_str().unwrap()]);
        assert_eq!(out, from_store, "{}", source.display());
        let out = ok(
            &empty,
            &["debug", "describe", "--history", source.to_str().unwrap()],
        );
        assert_eq!(out, history, "{}", source.display());
    }
}

#[test]
fn unknown_sources_are_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = kiln()
        .root(tmp.path())
        .args(["debug", "describe", "no-such-image:1"])
        .output();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such image: no-such-image:1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let not_an_image = tmp.path().join("notes.txt");
    std::fs::write(&not_an_image, "plain text").unwrap();
    let out = kiln()
        .root(tmp.path())
        .args(["debug", "describe", not_an_image.to_str().unwrap()])
        .output();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("notes.txt"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
