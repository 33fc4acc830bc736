//! Images written by kiln, read by independent tools: skopeo and umoci (Debian
//! packages `skopeo`, `umoci`, `busybox-static`; installed by scripts/setup-test-env).
//! umoci unpack preserves ownership, so these tests run as root (as CI does).

mod common;

use common::{build_image, busybox_rootfs, run, tree_listing};
use kiln_oci::export::{
    DockerExporter, Exporter, LocalExporter, NamedImage, OciExporter, TarExporter,
};
use kiln_oci::image::load_image;
use kiln_oci::load::{import_oci_dir, load_archive};
use kiln_oci::{ImageName, ManifestFormat, Store};
use std::fs;
use std::path::Path;
use std::process::Command;

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    rootfs: std::path::PathBuf,
    store: Store,
    image: NamedImage,
}

fn fixture(format: ManifestFormat) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let rootfs = dir.join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    busybox_rootfs(&rootfs);
    let store = Store::open(dir.join("store")).unwrap();
    let target = build_image(&store, &rootfs, format);
    let name: ImageName = "kiln-test/busybox:1".parse().unwrap();
    store.tag(&name, target.clone()).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        rootfs,
        store,
        image: NamedImage {
            name: Some(name),
            target,
        },
    }
}

fn export_oci_dir(f: &Fixture, dest: &Path) {
    OciExporter::dir(dest)
        .export(&f.store, std::slice::from_ref(&f.image))
        .unwrap();
}

#[test]
fn skopeo_inspects_and_copies_the_oci_layout() {
    let f = fixture(ManifestFormat::Oci);
    let layout = f.dir.join("layout");
    export_oci_dir(&f, &layout);
    let out = run(Command::new("skopeo").args(["inspect", &format!("oci:{}:1", layout.display())]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], f.image.target.digest.to_string());
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(v["Labels"]["org.example.test"], "yes");
    assert_eq!(v["Architecture"], "amd64");

    let copy = f.dir.join("copy");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:1", layout.display()),
        &format!("dir:{}", copy.display()),
    ]));
    // skopeo keeps an OCI image as it is: same manifest bytes.
    let manifest = fs::read(copy.join("manifest.json")).unwrap();
    assert_eq!(kiln_oci::Digest::of(&manifest), f.image.target.digest);
}

#[test]
fn skopeo_reads_a_docker_schema2_image_from_the_docker_archive() {
    // skopeo's oci: transport only lists OCI media types, so a Docker schema 2 image
    // is checked through the docker archive.
    let f = fixture(ManifestFormat::Docker);
    let tar = f.dir.join("image.tar");
    DockerExporter::new(fs::File::create(&tar).unwrap())
        .export(&f.store, std::slice::from_ref(&f.image))
        .unwrap();
    let copy = f.dir.join("copy");
    run(Command::new("skopeo").args([
        "copy",
        &format!("docker-archive:{}", tar.display()),
        &format!("dir:{}", copy.display()),
    ]));
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(copy.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        m["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    // The config is passed through untouched: same image id.
    let ours = load_image(&f.store, &f.image.target).unwrap();
    assert_eq!(m["config"]["digest"], ours.id().to_string());
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
}

#[test]
fn umoci_unpack_and_kiln_exports_give_the_source_tree() {
    let f = fixture(ManifestFormat::Oci);
    let layout = f.dir.join("layout");
    export_oci_dir(&f, &layout);
    let bundle = f.dir.join("bundle");
    run(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:1", layout.display()),
        bundle.to_str().unwrap(),
    ]));
    let source = tree_listing(&f.rootfs);
    let theirs = tree_listing(&bundle.join("rootfs"));
    assert!(source.len() > 10, "{source:?}");
    assert_eq!(theirs, source);

    // kiln's own filesystem export gives the same tree as umoci's unpack.
    let local = f.dir.join("local");
    LocalExporter::new(&local)
        .export(&f.store, std::slice::from_ref(&f.image))
        .unwrap();
    assert_eq!(tree_listing(&local), theirs);

    // And the tar export holds the same tree: unpacked by GNU tar, compare again.
    let fs_tar = f.dir.join("fs.tar");
    TarExporter::new(fs::File::create(&fs_tar).unwrap())
        .export(&f.store, std::slice::from_ref(&f.image))
        .unwrap();
    let untarred = f.dir.join("untarred");
    fs::create_dir(&untarred).unwrap();
    run(Command::new("tar").args([
        "-xpf",
        fs_tar.to_str().unwrap(),
        "--same-owner",
        "-C",
        untarred.to_str().unwrap(),
    ]));
    assert_eq!(tree_listing(&untarred), theirs);
    // Nothing is left behind in the store's scratch space.
    assert_eq!(fs::read_dir(f.store.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn skopeo_reads_the_docker_archive() {
    let f = fixture(ManifestFormat::Oci);
    let tar = f.dir.join("image.tar");
    DockerExporter::new(fs::File::create(&tar).unwrap())
        .export(&f.store, std::slice::from_ref(&f.image))
        .unwrap();
    let out =
        run(Command::new("skopeo").args(["inspect", &format!("docker-archive:{}", tar.display())]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Labels"]["org.example.test"], "yes");

    let copied = f.dir.join("copied");
    run(Command::new("skopeo").args([
        "copy",
        &format!("docker-archive:{}", tar.display()),
        &format!("oci:{}:copied", copied.display()),
    ]));
    // What skopeo read is the same image: same config (image id) and layer content.
    let other = Store::open(f.dir.join("store2")).unwrap();
    let loaded = import_oci_dir(&other, &copied, Some("copied")).unwrap();
    assert_eq!(loaded.len(), 1);
    let theirs = load_image(&other, &loaded[0].target).unwrap();
    let ours = load_image(&f.store, &f.image.target).unwrap();
    // skopeo re-serialises the config when it converts to OCI, so compare content.
    assert_eq!(theirs.config, ours.config);
    assert_eq!(theirs.config.rootfs.diff_ids.len(), 1);
}

#[test]
fn docker_archive_written_by_skopeo_loads() {
    let f = fixture(ManifestFormat::Oci);
    let layout = f.dir.join("layout");
    export_oci_dir(&f, &layout);
    let tar = f.dir.join("skopeo.tar");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:1", layout.display()),
        &format!("docker-archive:{}:other/name:2", tar.display()),
    ]));
    let other = Store::open(f.dir.join("store2")).unwrap();
    let loaded = load_archive(&other, fs::File::open(&tar).unwrap()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].name.as_ref().unwrap().to_string(), "other/name:2");
    let img = load_image(&other, &loaded[0].target).unwrap();
    let ours = load_image(&f.store, &f.image.target).unwrap();
    assert_eq!(img.id(), ours.id());
    assert!(other.verify().unwrap().is_ok());
}

#[test]
fn archives_round_trip_with_the_same_manifest_digest() {
    let f = fixture(ManifestFormat::Oci);
    for kind in ["oci", "docker"] {
        let tar = f.dir.join(format!("{kind}.tar"));
        let file = fs::File::create(&tar).unwrap();
        let mut exporter: Box<dyn Exporter> = if kind == "oci" {
            Box::new(OciExporter::tar(file))
        } else {
            Box::new(DockerExporter::new(file))
        };
        exporter
            .export(&f.store, std::slice::from_ref(&f.image))
            .unwrap();
        if kind == "oci" {
            run(Command::new("skopeo")
                .args(["inspect", &format!("oci-archive:{}:1", tar.display())]));
        }
        let fresh = Store::open(f.dir.join(format!("fresh-{kind}"))).unwrap();
        let loaded = load_archive(&fresh, fs::File::open(&tar).unwrap()).unwrap();
        assert_eq!(loaded.len(), 1, "{kind}");
        assert_eq!(loaded[0].name, f.image.name, "{kind}");
        assert_eq!(loaded[0].target.digest, f.image.target.digest, "{kind}");
        assert!(fresh.verify().unwrap().is_ok());
    }
}

#[test]
fn same_input_gives_byte_identical_images_and_archives() {
    let a = fixture(ManifestFormat::Oci);
    let b = fixture(ManifestFormat::Oci);
    assert_eq!(a.image.target, b.image.target);
    let ia = load_image(&a.store, &a.image.target).unwrap();
    let ib = load_image(&b.store, &b.image.target).unwrap();
    assert_eq!(ia.id(), ib.id());
    assert_eq!(ia.layers, ib.layers);
    let mut archives = Vec::new();
    for f in [&a, &b] {
        let tar = f.dir.join("out.tar");
        DockerExporter::new(fs::File::create(&tar).unwrap())
            .export(&f.store, std::slice::from_ref(&f.image))
            .unwrap();
        archives.push(fs::read(&tar).unwrap());
    }
    assert!(archives[0] == archives[1], "docker archives differ");
}

#[test]
fn the_store_root_is_an_oci_layout_skopeo_reads() {
    let f = fixture(ManifestFormat::Oci);
    let out = run(Command::new("skopeo").args([
        "inspect",
        &format!("oci:{}:kiln-test/busybox:1", f.store.root().display()),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Digest"], f.image.target.digest.to_string());
}
