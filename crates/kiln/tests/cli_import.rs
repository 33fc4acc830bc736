//! `kiln import`, run as a user would: root filesystem tarballs (plain, gzip, zstd,
//! xz, on standard input) and directories into temporary stores (`--root`).

use crate::util::kiln;
use kiln_oci::image::load_image;
use kiln_oci::layer::apply_layer;
use kiln_oci::{ImageName, Store};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn kiln_with(root: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
    let mut cmd = kiln();
    cmd.root(root).args(args).env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(data) = stdin {
        cmd.stdin(data);
    }
    cmd.output()
}

fn ok_with(root: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> String {
    let out = kiln_with(root, args, env, stdin);
    assert!(
        out.status.success(),
        "kiln {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ok(root: &Path, args: &[&str]) -> String {
    ok_with(root, args, &[], None)
}

fn fails(root: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = kiln_with(root, args, &[], stdin);
    assert!(!out.status.success(), "kiln {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn inspect(root: &Path, image: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&ok(root, &["inspect", image])).unwrap();
    v[0].clone()
}

/// A small root filesystem tarball, as `tar -C rootfs -cf - .` writes it.
fn rootfs_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |name: &str, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        (h, name.to_string())
    };
    for (name, mode) in [("./", 0o755), ("./etc/", 0o755), ("./tmp/", 0o1777)] {
        let (mut h, name) = dir(name, mode);
        b.append_data(&mut h, name, &[][..]).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(14);
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    b.append_data(&mut h, "./etc/os-release", &b"ID=importtest\n"[..])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    b.append_link(&mut h, "./etc/alias", "os-release").unwrap();
    b.into_inner().unwrap()
}

/// Extracts the only layer of `image` into `dest`.
fn extract(root: &Path, image: &str, dest: &Path) {
    let store = Store::open(root).unwrap();
    let name: ImageName = image.parse().unwrap();
    let img = load_image(&store, &store.resolve(&name).unwrap()).unwrap();
    assert_eq!(img.layers.len(), 1);
    let blob = store.open_blob(&img.layers[0].digest).unwrap();
    apply_layer(blob, dest).unwrap();
}

#[test]
fn tarballs_in_every_compression_give_the_same_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let tar = rootfs_tar();
    let plain = tmp.path().join("rootfs.tar");
    fs::write(&plain, &tar).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    fs::write(tmp.path().join("rootfs.tar.gz"), gz.finish().unwrap()).unwrap();
    fs::write(
        tmp.path().join("rootfs.tar.zst"),
        zstd::encode_all(&tar[..], 3).unwrap(),
    )
    .unwrap();
    let xz = Command::new("xz")
        .args(["-k", "-T1"])
        .arg(&plain)
        .status()
        .expect("run xz (Debian's xz-utils)");
    assert!(xz.success());

    let mut diff_ids = Vec::new();
    for (i, file) in [
        "rootfs.tar",
        "rootfs.tar.gz",
        "rootfs.tar.zst",
        "rootfs.tar.xz",
    ]
    .iter()
    .enumerate()
    {
        let path = tmp.path().join(file);
        let name = format!("imported:{i}");
        let id = ok(&root, &["import", path.to_str().unwrap(), &name]);
        assert!(id.starts_with("sha256:") && id.trim().len() == 71, "{id}");
        let v = inspect(&root, &name);
        assert_eq!(v["Id"].as_str().unwrap(), id.trim());
        diff_ids.push(v["RootFS"]["Layers"][0].as_str().unwrap().to_string());
        let out = tmp.path().join(format!("out{i}"));
        extract(&root, &name, &out);
        assert_eq!(
            fs::read_to_string(out.join("etc/os-release")).unwrap(),
            "ID=importtest\n"
        );
        assert_eq!(
            fs::read_link(out.join("etc/alias")).unwrap(),
            Path::new("os-release")
        );
        let mode = fs::metadata(out.join("tmp")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o1777, "{file}");
    }
    assert!(diff_ids.iter().all(|d| d == &diff_ids[0]), "{diff_ids:?}");

    // Standard input, with a message and no name: stored untagged, listed by id.
    let id = ok_with(
        &root,
        &["import", "-m", "from a pipe", "-"],
        &[("SOURCE_DATE_EPOCH", "0")],
        Some(&tar),
    );
    let v = inspect(&root, id.trim());
    assert_eq!(v["RootFS"]["Layers"][0].as_str().unwrap(), diff_ids[0]);
    assert_eq!(v["Created"], "1970-01-01T00:00:00Z");
    let history = ok(&root, &["history", "--no-trunc", id.trim()]);
    assert!(history.contains("from a pipe"), "{history}");
}

#[test]
fn a_directory_imports_reproducibly_with_source_date_epoch_and_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(rootfs.join("app")).unwrap();
    fs::write(rootfs.join("app/server.js"), "console.log('hi')\n").unwrap();
    let args = [
        "import",
        "--change",
        "ENV PATH=/usr/local/bin:/usr/bin:/bin",
        "--change",
        "ENV NODE_PATH=$PATH/lib",
        "--change",
        "WORKDIR /app",
        "--change",
        "USER 1001",
        "--change",
        r#"CMD ["node", "server.js"]"#,
        "--change",
        "EXPOSE 3000",
        "--change",
        "LABEL maintainer=kiln",
        "--platform",
        "linux/arm64",
        "-m",
        "base",
        rootfs.to_str().unwrap(),
        "app:base",
    ];
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let env = [("SOURCE_DATE_EPOCH", "1700000000")];
    let id_a = ok_with(&a, &args, &env, None);
    let id_b = ok_with(&b, &args, &env, None);
    assert_eq!(
        id_a, id_b,
        "same input and SOURCE_DATE_EPOCH, same image id"
    );
    assert_eq!(
        inspect(&a, "app:base")["Descriptor"],
        inspect(&b, "app:base")["Descriptor"]
    );
    let v = inspect(&a, "app:base");
    assert_eq!(v["Architecture"], "arm64");
    assert_eq!(v["Created"], "2023-11-14T22:13:20Z");
    let c = &v["Config"];
    assert_eq!(
        c["Env"],
        serde_json::json!([
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "NODE_PATH=/usr/local/bin:/usr/bin:/bin/lib"
        ])
    );
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "1001");
    assert_eq!(c["Cmd"], serde_json::json!(["node", "server.js"]));
    assert_eq!(c["ExposedPorts"], serde_json::json!({"3000/tcp": {}}));
    assert_eq!(c["Labels"]["maintainer"], "kiln");
    let out = tmp.path().join("out");
    extract(&a, "app:base", &out);
    assert_eq!(
        fs::read_to_string(out.join("app/server.js")).unwrap(),
        "console.log('hi')\n"
    );
    // Without SOURCE_DATE_EPOCH `created` is now, so the id differs.
    let id_now = ok(&b, &args);
    assert_ne!(id_now, id_a);
}

#[test]
fn user_mistakes_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let text = tmp.path().join("notes.txt");
    fs::write(&text, "this is not a tarball, just some text long enough\n").unwrap();
    let tar = tmp.path().join("rootfs.tar");
    fs::write(&tar, rootfs_tar()).unwrap();
    let tar = tar.to_str().unwrap();

    let err = fails(&root, &["import", "/nonexistent/rootfs.tar", "x"], None);
    assert!(err.contains("/nonexistent/rootfs.tar"), "{err}");
    let err = fails(&root, &["import", text.to_str().unwrap(), "x"], None);
    assert!(err.contains("tar"), "{err}");
    let err = fails(&root, &["import", "-", "x"], Some(b""));
    assert!(err.contains("empty"), "{err}");
    let err = fails(&root, &["import", "--change", "RUN make", tar, "x"], None);
    assert!(err.contains("RUN") && err.contains("allowed"), "{err}");
    let err = fails(&root, &["import", "--change", "COPPY a b", tar, "x"], None);
    assert!(err.contains("COPPY"), "{err}");
    let err = fails(
        &root,
        &["import", "--change", "EXPOSE http", tar, "x"],
        None,
    );
    assert!(err.contains("http"), "{err}");
    let err = fails(&root, &["import", "--platform", "amd64", tar, "x"], None);
    assert!(err.contains("platform"), "{err}");
    let err = fails(&root, &["import", tar, "Bad Name"], None);
    assert!(!err.is_empty());
    // Nothing was tagged by the failed imports.
    let images = ok(&root, &["images", "-q"]);
    assert_eq!(images, "", "{images}");
}
