//! The image commands, run as a user would: the kiln binary against temporary
//! stores (`--root`).

use kiln_oci::image::{format_rfc3339, media_type, write_image, ContainerConfig, History};
use kiln_oci::{BlobRef, Digest, ImageConfig, ManifestFormat, Store};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn kiln(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run kiln")
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out = kiln(root, args);
    assert!(
        out.status.success(),
        "kiln {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(root: &Path, args: &[&str]) -> String {
    let out = kiln(root, args);
    assert!(!out.status.success(), "kiln {args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// An uncompressed layer holding `files`.
fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Store a two-layer image named `name` in the store at `root`.
fn make_image(root: &Path, name: &str, marker: &str) -> BlobRef {
    let store = Store::open(root).unwrap();
    let mut config = ImageConfig::new("linux", "amd64");
    config.created = Some(format_rfc3339(1_700_000_000));
    config.config = Some(ContainerConfig {
        cmd: Some(vec!["/app".into()]),
        ..ContainerConfig::default()
    });
    let mut layers = Vec::new();
    for (i, content) in [marker.as_bytes(), b"second layer"].iter().enumerate() {
        let data = layer(&[(&format!("file{i}"), content)]);
        let digest = store.put_blob(&data).unwrap();
        config.rootfs.diff_ids.push(Digest::of(&data));
        config.history.push(History {
            created: config.created.clone(),
            created_by: Some(format!(
                "COPY file{i} / # a long command line to see truncation"
            )),
            ..History::default()
        });
        layers.push(BlobRef {
            media_type: media_type::OCI_LAYER.into(),
            digest,
            size: data.len() as u64,
            annotations: BTreeMap::new(),
        });
    }
    config.history.push(History {
        created_by: Some("CMD [\"/app\"]".into()),
        empty_layer: true,
        ..History::default()
    });
    let m = write_image(&store, &config, &layers, ManifestFormat::Oci).unwrap();
    store.tag(&name.parse().unwrap(), m.clone()).unwrap();
    m
}

fn inspect(root: &Path, image: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&ok(root, &["inspect", image])).unwrap();
    v[0].clone()
}

#[test]
fn save_then_load_into_a_fresh_store_keeps_the_manifest_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let m = make_image(&a, "app:1", "one");
    for format in ["docker", "oci"] {
        let b = tmp.path().join(format!("b-{format}"));
        let tar = tmp.path().join(format!("app-{format}.tar"));
        ok(
            &a,
            &[
                "save",
                "--format",
                format,
                "-o",
                tar.to_str().unwrap(),
                "app:1",
            ],
        );
        let out = ok(&b, &["load", "-i", tar.to_str().unwrap()]);
        assert_eq!(out, "Loaded image: app:1\n", "{format}");
        let v = inspect(&b, "app:1");
        assert_eq!(v["Descriptor"]["digest"], m.digest.to_string(), "{format}");
        assert_eq!(v["Id"], inspect(&a, "app:1")["Id"]);
        let line = ok(&b, &["images", "--format", "json"]);
        let j: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(j["Digest"], m.digest.to_string());
        assert_eq!(j["Repository"], "app");
        assert_eq!(j["Tag"], "1");
    }
    // Standard output and input work too.
    let saved = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&a)
        .args(["save", "app"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        !saved.status.success(),
        "app means app:latest, which does not exist"
    );
    let saved = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&a)
        .args(["save", "app:1"])
        .output()
        .unwrap();
    assert!(saved.status.success());
    let c = tmp.path().join("c");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&c)
        .args(["load", "-q"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&saved.stdout)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        inspect(&c, "app:1")["Descriptor"]["digest"],
        m.digest.to_string()
    );
}

/// `kiln load` reads what `docker load` reads (a compressed archive too), and
/// refuses what it cannot use with a readable message.
#[test]
fn load_reads_compressed_archives_and_explains_what_it_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let m = make_image(&a, "app:1", "packed");
    let tar = tmp.path().join("app.tar");
    ok(&a, &["save", "-o", tar.to_str().unwrap(), "app:1"]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&fs::read(&tar).unwrap()).unwrap();
    let packed = tmp.path().join("app.tar.gz");
    fs::write(&packed, gz.finish().unwrap()).unwrap();
    let b = tmp.path().join("b");
    let out = ok(&b, &["load", "-i", packed.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: app:1\n");
    assert_eq!(
        inspect(&b, "app:1")["Descriptor"]["digest"],
        m.digest.to_string()
    );

    // Random bytes: the message quotes nothing unprintable.
    let mut junk = vec![0u8; 8192];
    let mut x: u32 = 5;
    for byte in junk.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *byte = (x >> 16) as u8;
    }
    let random = tmp.path().join("random.bin");
    fs::write(&random, &junk).unwrap();
    let err = fails(&b, &["load", "-i", random.to_str().unwrap()]);
    assert!(err.contains("not a tar file"), "{err}");
    assert!(
        err.chars().all(|c| c == '\n' || !c.is_control()) && !err.contains('\u{fffd}'),
        "{err:?}"
    );

    // An archive that names no image is an error, not a silent success.
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(2);
    builder
        .append_data(&mut h, "manifest.json", &b"[]"[..])
        .unwrap();
    let empty = tmp.path().join("empty.tar");
    fs::write(&empty, builder.into_inner().unwrap()).unwrap();
    let err = fails(&b, &["load", "-i", empty.to_str().unwrap()]);
    assert!(err.contains("no image"), "{err}");
}

#[test]
fn images_tag_history_rmi_prune() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    make_image(&root, "app:1", "one");
    make_image(&root, "other", "two");
    ok(&root, &["tag", "app:1", "registry.local:5000/team/app:v2"]);

    let table = ok(&root, &["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("REPOSITORY"), "{table}");
    assert!(lines[0].contains("IMAGE ID") && lines[0].ends_with("SIZE"));
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[1].starts_with("app "), "{table}");
    assert!(lines[2].starts_with("other "), "{table}");
    assert!(
        lines[3].starts_with("registry.local:5000/team/app "),
        "{table}"
    );
    assert!(table.contains("years ago"), "{table}");
    let only = ok(&root, &["images", "app"]);
    assert_eq!(only.lines().count(), 2, "{only}");
    let id = inspect(&root, "app:1")["Id"].as_str().unwrap().to_string();
    let short = &id["sha256:".len().."sha256:".len() + 12];
    assert!(lines[1].contains(short));
    assert_eq!(ok(&root, &["images", "-q", "app"]), format!("{short}\n"));

    let history = ok(&root, &["history", "app:1"]);
    let hl: Vec<&str> = history.lines().collect();
    assert!(
        hl[0].starts_with("IMAGE") && hl[0].contains("CREATED BY"),
        "{history}"
    );
    assert_eq!(hl.len(), 4, "{history}");
    assert!(hl[1].starts_with(short), "{history}");
    assert!(hl[1].contains("CMD [\"/app\"]"));
    assert!(hl[2].starts_with("<missing>"));
    assert!(hl[2].contains('…'), "long commands are cut: {history}");
    let hj = ok(
        &root,
        &["history", "--format", "json", "--no-trunc", "app:1"],
    );
    let first: serde_json::Value = serde_json::from_str(hj.lines().nth(1).unwrap()).unwrap();
    assert_eq!(
        first["CreatedBy"],
        "COPY file1 / # a long command line to see truncation"
    );

    // By id prefix, inspect finds both names of the image.
    let v = inspect(&root, short);
    let tags = v["RepoTags"].as_array().unwrap();
    assert_eq!(tags.len(), 2, "{v}");
    assert_eq!(v["Config"]["Cmd"][0], "/app");
    assert_eq!(v["RootFS"]["Layers"].as_array().unwrap().len(), 2);

    // An id with two names needs -f.
    let err = fails(&root, &["rmi", short]);
    assert!(err.contains("must be forced"), "{err}");
    assert_eq!(ok(&root, &["rmi", "app:1"]), "Untagged: app:1\n");
    let out = ok(&root, &["rmi", "registry.local:5000/team/app:v2"]);
    assert_eq!(
        out,
        format!("Untagged: registry.local:5000/team/app:v2\nDeleted: {id}\n")
    );

    let pruned = ok(&root, &["prune", "--format", "json"]);
    let p: serde_json::Value = serde_json::from_str(&pruned).unwrap();
    // Manifest, config and the layer not shared with "other" are gone.
    assert_eq!(p["DeletedBlobs"].as_array().unwrap().len(), 3, "{p}");
    assert!(p["SpaceReclaimed"].as_u64().unwrap() > 0);
    assert_eq!(ok(&root, &["prune"]), "Total reclaimed space: 0B\n");
    assert!(Store::open(&root).unwrap().verify().unwrap().is_ok());
    assert_eq!(ok(&root, &["images", "-q"]).lines().count(), 1);
}

#[test]
fn user_errors_are_clear_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    make_image(&root, "app:1", "one");
    let err = fails(&root, &["inspect", "nosuch"]);
    assert!(err.contains("no such image: nosuch"), "{err}");
    let err = fails(&root, &["tag", "app:1", "Bad:Name"]);
    assert!(err.contains("invalid image name"), "{err}");
    let err = fails(&root, &["history", "app:2"]);
    assert!(err.contains("no such image"), "{err}");
    let junk = tmp.path().join("junk.tar");
    fs::write(&junk, b"this is not a tar archive at all").unwrap();
    let err = fails(&root, &["load", "-i", junk.to_str().unwrap()]);
    assert!(err.contains("loading"), "{err}");
    let err = fails(&root, &["load", "-i", "/nonexistent/file.tar"]);
    assert!(err.contains("cannot open /nonexistent/file.tar"), "{err}");
    let err = fails(
        &root,
        &[
            "save",
            "-o",
            tmp.path().join("x.tar").to_str().unwrap(),
            "nope:1",
        ],
    );
    assert!(err.contains("no such image: nope:1"), "{err}");
    assert!(!tmp.path().join("x.tar").exists());
}

/// A tar header for a regular file entry.
fn header(path: &str, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    *h.as_bytes()
}

#[test]
fn crash_killed_mid_blob_leaves_the_store_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    // A complete small blob first, then a big one the writer is killed in the middle of.
    let small = b"a complete blob".to_vec();
    let big: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    let big_digest = Digest::of(&big);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&root)
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&header(
            &format!("blobs/sha256/{}", Digest::of(&small).hex()),
            small.len() as u64,
        ))
        .unwrap();
    let mut padded = small.clone();
    padded.resize(512, 0);
    stdin.write_all(&padded).unwrap();
    stdin
        .write_all(&header(
            &format!("blobs/sha256/{}", big_digest.hex()),
            big.len() as u64,
        ))
        .unwrap();
    // Half of the big blob, then wait until the writer has put it on disk.
    stdin.write_all(&big[..32 << 20]).unwrap();
    stdin.flush().unwrap();
    let tmp_dir = root.join("tmp");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let written: u64 = fs::read_dir(&tmp_dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if written >= 16 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the writer never wrote the blob");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(stdin);

    let mut store = Store::open(&root).unwrap();
    assert!(store.has_blob(&Digest::of(&small)));
    assert!(
        !store.has_blob(&big_digest),
        "a half-written blob is visible"
    );
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.checked, 1);
    // Every file under a digest name holds exactly that content.
    for e in fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let data = fs::read(e.path()).unwrap();
        assert_eq!(Digest::of(&data).hex(), e.file_name().to_str().unwrap());
    }
    // The leftover is in tmp/ until a gc removes it.
    assert!(fs::read_dir(&tmp_dir).unwrap().count() >= 1);
    let gc = store.gc().unwrap();
    assert!(gc.removed_temp_files >= 1);
    assert!(gc.reclaimed_bytes >= 16 << 20);
    assert_eq!(fs::read_dir(&tmp_dir).unwrap().count(), 0);
    assert!(store.verify().unwrap().is_ok());
}
