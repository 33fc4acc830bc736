//! A pull unpacks each layer into its snapshot while the layer downloads, with
//! the blob's digest and the diff_id checked in the same pass: the first build
//! on the image extracts nothing, and a tampered blob leaves neither a snapshot
//! nor a blob. Needs root (RUN steps), the local registry of
//! scripts/setup-test-env for the first test, and runs a small registry on
//! 127.0.0.1 for the second.

use crate::util::{kiln, store_busybox, OneFileImage};
use kiln_oci::image::{load_image, media_type};
use kiln_oci::{Digest, Store};
use kiln_testkit::http::{self, respond, Request};
use kiln_testkit::registry::{plain as plain_registry, unique_repo};
use std::collections::HashMap;
use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

/// The names under `snapshots/` other than kiln's own `tmp` and `empty`, and
/// what is left under `snapshots/tmp`.
fn snapshots(root: &Path) -> (Vec<String>, Vec<String>) {
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let top = names(&root.join("snapshots"))
        .into_iter()
        .filter(|n| n != "tmp" && n != "empty")
        .collect();
    (top, names(&root.join("snapshots/tmp")))
}

/// The diff_ids of the stored image `name`.
fn diff_ids(root: &Path, name: &str) -> Vec<Digest> {
    let store = Store::open(root).unwrap();
    let target = store.resolve(&name.parse().unwrap()).unwrap();
    load_image(&store, &target).unwrap().config.rootfs.diff_ids
}

const EXTRACTED_ON_USE: &str = "extracting layer from the store";
const UNPACKED_ON_PULL: &str = "layer unpacked while it downloaded";

#[test]
fn a_pulled_image_is_unpacked_and_its_first_build_extracts_nothing() {
    let registry = plain_registry();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst, implicit) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("implicit"),
    );
    store_busybox(&src);
    let reference = format!("{registry}/{}:1", unique_repo("unpack"));
    kiln()
        .root(&src)
        .args(["push", "-q", "busybox:test", &reference])
        .ok();

    // `kiln pull`: every layer's snapshot exists when the pull returns, and
    // nothing is left in snapshots/tmp (no claim, no work dir).
    let out = kiln()
        .root(&dst)
        .args(["pull", &reference])
        .env("KILN_LOG", "kiln_builder=debug")
        .ok();
    let log = String::from_utf8_lossy(&out.stderr);
    let ids = diff_ids(&dst, &reference);
    assert!(!ids.is_empty());
    let (snaps, left) = snapshots(&dst);
    let want: Vec<String> = ids.iter().map(|d| d.hex().to_string()).collect();
    assert_eq!(snaps, want, "pull log:\n{log}");
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(log.matches(UNPACKED_ON_PULL).count(), ids.len(), "{log}");
    assert!(dst
        .join("snapshots")
        .join(ids[0].hex())
        .join("bin/busybox")
        .is_file());
    // The blobs are kept, compressed as the registry had them (push and save
    // need them).
    let store = Store::open(&dst).unwrap();
    let target = store.resolve(&reference.parse().unwrap()).unwrap();
    for l in load_image(&store, &target).unwrap().layers {
        assert!(store.has_blob(&l.digest));
        assert_eq!(l.media_type, media_type::OCI_LAYER_GZIP);
    }

    // The first build on it runs a step on those snapshots without
    // extracting any layer again.
    let ctx = tmp.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {reference}\nRUN busybox --help > /help.txt && test -s /help.txt\n"),
    )
    .unwrap();
    let build = |root: &Path, extra: &[&str]| {
        let out = kiln()
            .root(root)
            .args(["build", "-q"])
            .args(extra)
            .arg(&ctx)
            .env("KILN_LOG", "kiln_builder=debug")
            .ok();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let log = build(&dst, &[]);
    assert!(!log.contains(EXTRACTED_ON_USE), "{log}");

    // The implicit pull of a build (FROM an image the store lacks) unpacks
    // in the same way.
    let log = build(&implicit, &[]);
    assert_eq!(log.matches(UNPACKED_ON_PULL).count(), ids.len(), "{log}");
    assert!(!log.contains(EXTRACTED_ON_USE), "{log}");

    // Without the pull's unpacking the same build would extract: a store
    // whose snapshots are removed extracts each layer on first use (the
    // log line the assertions above rely on is real; --no-cache, as a cache
    // hit needs no snapshot).
    fs::remove_dir_all(implicit.join("snapshots").join(ids[0].hex())).unwrap();
    let log = build(&implicit, &["--no-cache"]);
    assert!(log.contains(EXTRACTED_ON_USE), "{log}");
}

struct Mock {
    addr: String,
    manifest: Vec<u8>,
    blobs: HashMap<String, Vec<u8>>,
}

fn handle(mock: &Mock, req: Request, s: &mut TcpStream) {
    let path = req.path.as_str();
    if path == "/v2/team/app/manifests/1" {
        let ct = ("Content-Type", media_type::OCI_MANIFEST.to_string());
        return respond(s, "200 OK", &[ct], &mock.manifest);
    }
    match path
        .strip_prefix("/v2/team/app/blobs/")
        .and_then(|d| mock.blobs.get(d))
    {
        Some(data) => respond(s, "200 OK", &[], data),
        None => respond(s, "404 Not Found", &[], b"{}"),
    }
}

/// A registry serving one image whose layer (a gzip tar of 2 MiB) has the
/// size its manifest says but one byte changed, so it hashes to another
/// digest; the diff_id in its config is the untampered layer's.
fn tampered_registry() -> (Arc<Mock>, Digest, Digest) {
    let (listener, addr) = http::listen();
    let content: Vec<u8> = (0..2u32 << 20).map(|i| (i % 253) as u8).collect();
    let image = OneFileImage::new(&content, true);
    let (cd, config) = image.config;
    let (ld, layer) = image.layer;
    let mut served = layer;
    // A byte in the middle of the deflate stream: still the same size.
    let mid = served.len() / 2;
    served[mid] ^= 0x55;
    let mock = Arc::new(Mock {
        addr,
        manifest: image.manifest,
        blobs: HashMap::from([(cd.to_string(), config), (ld.to_string(), served)]),
    });
    http::serve(listener, mock.clone(), handle);
    (mock, ld, image.diff_id)
}

#[test]
fn a_tampered_layer_fails_the_pull_and_leaves_no_snapshot_and_no_blob() {
    let (mock, layer, diff_id) = tampered_registry();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let reference = format!("{}/team/app:1", mock.addr);
    let err = kiln()
        .root(&root)
        .args(["pull", &reference])
        .env("REGISTRY_AUTH_FILE", tmp.path().join("auth.json"))
        .env("KILN_CONFIG", tmp.path().join("kiln.json"))
        .env("HOME", tmp.path())
        .fails();
    assert!(
        err.contains(&layer.to_string()) && err.contains("does not match"),
        "the error names the blob and the mismatch: {err}"
    );
    let store = Store::open(&root).unwrap();
    assert!(!store.has_blob(&layer), "the tampered blob was stored");
    assert!(store.images().unwrap().is_empty());
    let (snaps, left) = snapshots(&root);
    assert!(snaps.is_empty(), "snapshots left: {snaps:?}");
    assert!(left.is_empty(), "snapshots/tmp left: {left:?}");
    assert!(!root.join("snapshots").join(diff_id.hex()).exists());
}
