//! A build writes no compressed layer: the layers it makes are snapshots plus
//! diff_ids, and their blobs are made when an output or a push needs them,
//! once, then kept. Needs root (RUN steps) and, for the push test, the local
//! registry of scripts/setup-test-env.

use crate::util::{kiln, store_busybox};
use kiln_oci::image::{load_image, media_type};
use kiln_oci::{Digest, Store};
use kiln_testkit::registry::{plain as plain_registry, unique_repo};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

const EPOCH: &str = "1700000000";

fn k(root: &Path, args: &[&str]) -> String {
    kiln()
        .root(root)
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .stdout()
}

/// The blobs of the store by digest, with whether each is a compressed stream.
fn blobs(root: &Path) -> Vec<(Digest, bool)> {
    let mut out = Vec::new();
    for e in fs::read_dir(root.join("blobs/sha256")).unwrap().flatten() {
        let data = fs::read(e.path()).unwrap();
        let compressed =
            data.starts_with(&[0x1f, 0x8b]) || data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
        let d: Digest = format!("sha256:{}", e.file_name().to_str().unwrap())
            .parse()
            .unwrap();
        out.push((d, compressed));
    }
    out
}

fn context(dir: &Path, dockerfile: &str) -> String {
    let ctx = dir.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    fs::write(ctx.join("app.txt"), "the app\n".repeat(1000)).unwrap();
    ctx.to_str().unwrap().to_string()
}

const DOCKERFILE: &str = "FROM busybox:test\n\
     COPY app.txt /app/app.txt\n\
     RUN mkdir -p /data && for i in 1 2 3 4 5 6 7 8 9 10; do echo file $i > /data/f$i; done\n\
     CMD [\"cat\", \"/app/app.txt\"]\n";

/// The layers of `name` in the store: (media type, digest, blob present).
fn layers(root: &Path, name: &str) -> (Digest, Vec<(String, Digest, bool)>) {
    let store = Store::open(root).unwrap();
    let target = store.resolve(&name.parse().unwrap()).unwrap();
    let image = load_image(&store, &target).unwrap();
    let l = image
        .layers
        .iter()
        .map(|l| (l.media_type.clone(), l.digest, store.has_blob(&l.digest)))
        .collect();
    (image.id(), l)
}

#[test]
fn a_built_image_has_no_compressed_layer_blobs_until_an_output_needs_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    store_busybox(&root);
    let base: BTreeSet<Digest> = blobs(&root).into_iter().map(|(d, _)| d).collect();
    let ctx = context(tmp.path(), DOCKERFILE);
    k(&root, &["build", "-q", "-t", "app:1", &ctx]);

    // Only JSON (config, manifest) was added: no layer blob, compressed or not.
    let added: Vec<(Digest, bool)> = blobs(&root)
        .into_iter()
        .filter(|(d, _)| !base.contains(d))
        .collect();
    assert_eq!(added.len(), 2, "{added:?}");
    assert!(added.iter().all(|(_, c)| !c), "{added:?}");
    let (id, built) = layers(&root, "app:1");
    assert_eq!(built.len(), 3);
    assert!(built[0].2, "the base layer keeps its blob");
    for (mt, d, present) in &built[1..] {
        assert_eq!(mt, media_type::OCI_LAYER);
        assert!(!present, "layer {d} was written as a blob during the build");
    }

    // The image works without blobs: images, inspect, history, run, the cache.
    assert!(k(&root, &["images"]).contains("app"));
    assert!(k(&root, &["inspect", "app:1"]).contains(&id.to_string()));
    k(&root, &["history", "app:1"]);
    assert_eq!(
        k(&root, &["run", "--rm", "app:1", "cat", "/data/f7"]),
        "file 7\n"
    );
    let again = k(&root, &["build", "-q", "-t", "app:1", &ctx]);
    assert_eq!(again.trim(), id.to_string());
    assert_eq!(
        blobs(&root).len(),
        base.len() + 2,
        "a cache hit writes nothing"
    );
    // A filesystem output reads the snapshots; still no blob.
    let fs_out = tmp.path().join("fs");
    k(
        &root,
        &[
            "build",
            "-q",
            "-t",
            "app:1",
            "-o",
            &format!("type=local,dest={}", fs_out.display()),
            &ctx,
        ],
    );
    assert_eq!(
        fs::read_to_string(fs_out.join("data/f3")).unwrap(),
        "file 3\n"
    );
    assert_eq!(blobs(&root).len(), base.len() + 2);

    // An archive needs them: made now, gzip, and kept for the next one.
    let a = tmp.path().join("a.tar");
    let b = tmp.path().join("b.tar");
    k(&root, &["save", "-o", a.to_str().unwrap(), "app:1"]);
    let made: Vec<(Digest, bool)> = blobs(&root)
        .into_iter()
        .filter(|(d, _)| !base.contains(d))
        .filter(|(_, c)| *c)
        .collect();
    assert_eq!(made.len(), 2, "one gzip blob per built layer: {made:?}");
    let inodes: Vec<u64> = made
        .iter()
        .map(|(d, _)| {
            fs::metadata(root.join("blobs/sha256").join(d.hex()))
                .unwrap()
                .ino()
        })
        .collect();
    k(&root, &["save", "-o", b.to_str().unwrap(), "app:1"]);
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    let inodes_after: Vec<u64> = made
        .iter()
        .map(|(d, _)| {
            fs::metadata(root.join("blobs/sha256").join(d.hex()))
                .unwrap()
                .ino()
        })
        .collect();
    assert_eq!(inodes, inodes_after, "the second save made its blobs again");

    // Another compression: other blobs, the same image id (config).
    let z = tmp.path().join("z");
    k(
        &root,
        &[
            "build",
            "-q",
            "-t",
            "app:1",
            "-o",
            &format!("type=oci,tar=false,dest={},compression=zstd", z.display()),
            &ctx,
        ],
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(z.join("index.json")).unwrap()).unwrap();
    let mdigest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(
            z.join("blobs/sha256")
                .join(mdigest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["config"]["digest"], id.to_string());
    let mts: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        mts,
        [
            media_type::OCI_LAYER_GZIP,
            media_type::OCI_LAYER_ZSTD,
            media_type::OCI_LAYER_ZSTD
        ],
        "the base keeps its gzip blob, the built layers are zstd"
    );

    // prune keeps what the image needs, blobs made for it included.
    k(&root, &["prune"]);
    let c = tmp.path().join("c.tar");
    k(&root, &["save", "-o", c.to_str().unwrap(), "app:1"]);
    assert_eq!(fs::read(&a).unwrap(), fs::read(&c).unwrap());
    assert!(Store::open(&root).unwrap().verify().unwrap().is_ok());
    // Without the image (and its cache), its snapshots, records and blobs go.
    k(&root, &["rmi", "app:1"]);
    k(&root, &["prune", "--build-cache"]);
    assert_eq!(
        fs::read_dir(root.join("layers")).unwrap().count(),
        0,
        "layer records of removed images are dropped"
    );
}

#[test]
fn push_of_a_built_image_then_pull_into_another_store_gives_the_same_digests() {
    let registry = plain_registry();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let other = tmp.path().join("other");
    let third = tmp.path().join("third");
    store_busybox(&root);
    store_busybox(&third);
    let ctx = context(tmp.path(), DOCKERFILE);
    let id = k(&root, &["build", "-q", "-t", "app:1", &ctx]);
    let dest = format!("{registry}/{}:1", unique_repo("lazy"));
    let pushed = k(&root, &["push", "-q", "app:1", &dest]);
    let pushed = pushed.trim();
    assert!(pushed.starts_with("sha256:"), "{pushed}");
    let pulled = k(&other, &["pull", &dest]);
    assert!(pulled.contains(pushed), "{pulled}");
    let (pulled_id, pulled_layers) = layers(&other, &dest);
    assert_eq!(pulled_id.to_string(), id.trim());
    assert!(pulled_layers
        .iter()
        .all(|(mt, _, present)| *present && mt == media_type::OCI_LAYER_GZIP));
    // The same build in another store, exported as an archive: same manifest.
    let out = tmp.path().join("third.tar");
    let meta = tmp.path().join("meta.json");
    k(
        &third,
        &[
            "build",
            "-q",
            "--metadata-file",
            meta.to_str().unwrap(),
            "-o",
            &format!("type=oci,dest={}", out.display()),
            &ctx,
        ],
    );
    let meta: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], pushed);
}

#[test]
fn killing_kiln_while_it_compresses_leaves_the_store_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    store_busybox(&root);
    let ctx = context(
        tmp.path(),
        "FROM busybox:test\nRUN dd if=/dev/urandom of=/big bs=1048576 count=160 2>/dev/null\n",
    );
    k(&root, &["build", "-q", "-t", "big:1", &ctx]);
    let out = tmp.path().join("big.tar");
    let mut child = kiln()
        .root(&root)
        .args(["save", "-o", out.to_str().unwrap(), "big:1"])
        .command()
        .spawn()
        .unwrap();
    // Kill it (SIGKILL) once the layer's blob is being written.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let writing = fs::read_dir(root.join("tmp"))
            .unwrap()
            .flatten()
            .any(|e| e.metadata().map(|m| m.len() > 4 << 20).unwrap_or(false));
        if writing {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "save finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "the blob was never written");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (_, l) = layers(&root, "big:1");
    assert!(!l[1].2, "no blob under the layer's digest");
    assert!(Store::open(&root).unwrap().verify().unwrap().is_ok());

    // A later export makes the blob and succeeds; the same again gives the same bytes.
    k(&root, &["save", "-o", out.to_str().unwrap(), "big:1"]);
    let again = tmp.path().join("again.tar");
    k(&root, &["save", "-o", again.to_str().unwrap(), "big:1"]);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&again).unwrap());
    let store = Store::open(&root).unwrap();
    assert!(store.verify().unwrap().is_ok());
    drop(store);
    // The killed writer's leftover goes with the next prune.
    k(&root, &["prune"]);
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
}
