//! `kiln build`'s flags taken from `docker buildx build`: `--add-host`,
//! `--shm-size`, `--ulimit` (seen by a RUN step; needs root, as every test
//! running RUN steps), `--annotation` (in the manifest written), `--call`
//! (outline, targets, check), the refused `--cgroup-parent`, and `--provenance`
//! (an attestation manifest in an index, BuildKit's layout).

use crate::util::{kiln, store_busybox};
use std::fs;
use std::path::Path;

fn project(dockerfile: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    (dir, root, ctx)
}

#[test]
fn add_host_shm_size_and_ulimit_reach_run_steps() {
    let (_d, root, ctx) = project(
        "FROM busybox:test\nRUN grep db.internal /etc/hosts; df -k /dev/shm; echo \"nofile=$(ulimit -Sn):$(ulimit -Hn)\"\n",
    );
    store_busybox(&root);
    let out = kiln()
        .root(&root)
        .args([
            "build",
            "--progress=plain",
            "--add-host",
            "db.internal:10.1.2.3",
        ])
        .args(["--add-host", "v6.internal=[fd00::1]", "--shm-size", "96m"])
        .args(["--ulimit", "nofile=1024:2048"])
        .arg(&ctx)
        .ok();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("10.1.2.3\tdb.internal"), "{err}");
    assert!(err.contains("98304"), "/dev/shm of 96 MiB: {err}");
    assert!(err.contains("nofile=1024:2048"), "{err}");
    // Without them: the defaults (no host line, 64 MiB, kiln's limits), and
    // the step runs again (they are in its cache key).
    let out = kiln()
        .root(&root)
        .args(["build", "--progress=plain"])
        .arg(&ctx)
        .ok();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("10.1.2.3"), "{err}");
    assert!(err.contains("65536"), "{err}");
    assert!(!err.contains("nofile=1024:2048"), "{err}");
    // Bad values are one clear error each.
    for (flag, value, says) in [
        ("--ulimit", "nofile=2048:1024", "soft limit must be less"),
        ("--ulimit", "files=1", "unknown name \"files\""),
        ("--add-host", "db", "expected HOST:IP"),
        ("--shm-size", "lots", "invalid --shm-size"),
    ] {
        let e = kiln()
            .root(&root)
            .args(["build", flag, value])
            .arg(&ctx)
            .fails();
        assert!(e.contains(says), "{flag} {value}: {e}");
    }
}

/// The manifest of the one image in an OCI archive (`-o type=oci`'s tar).
fn archive_manifest(tar_path: &Path) -> serde_json::Value {
    let mut files = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(fs::File::open(tar_path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        files.insert(name, data);
    }
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap());
    serde_json::from_slice(&files[&blob]).unwrap()
}

#[test]
fn annotations_go_into_the_manifest() {
    let (d, root, ctx) = project("FROM busybox:test\nRUN echo hi > /hi\n");
    store_busybox(&root);
    let dest = d.path().join("oci.tar");
    let out_spec = format!("type=oci,dest={}", dest.display());
    kiln()
        .root(&root)
        .args(["build", "-q", "-t", "annotated:1", "-o", &out_spec])
        .args(["--annotation", "org.opencontainers.image.title=api"])
        .args(["--annotation", "manifest:com.example.url=http://x:80/y"])
        .args(["--annotation", "manifest[linux/s390x]:com.example.other=no"])
        .arg(&ctx)
        .ok();
    let m = archive_manifest(&dest);
    let a = &m["annotations"];
    assert_eq!(a["org.opencontainers.image.title"], "api", "{m}");
    assert_eq!(a["com.example.url"], "http://x:80/y", "{m}");
    assert!(a.get("com.example.other").is_none(), "{m}");
    // Index annotations need an index: refused for a single-platform build.
    let e = kiln()
        .root(&root)
        .args(["build", "--annotation", "index:k=v"])
        .arg(&ctx)
        .fails();
    assert!(e.contains("need an image index"), "{e}");
}

const CALL_DF: &str = "\
ARG BASE=busybox:test
# build Compiles it
FROM ${BASE} AS build
# MODE How to build
ARG MODE=release
RUN --mount=type=secret,id=token,required=true --mount=type=ssh true
FROM busybox:test
COPY --from=build / /
";

#[test]
fn call_outline_targets_and_check() {
    let (_d, root, ctx) = project(CALL_DF);
    let stdout = |args: &[&str]| {
        let out = kiln().root(&root).arg("build").args(args).arg(&ctx).ok();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        stdout(&["--call", "targets"]),
        "TARGET    DESCRIPTION\nbuild     Compiles it\n(default) \n"
    );
    assert_eq!(
        stdout(&["--call=outline", "--build-arg", "MODE=debug"]),
        "BUILD ARG   VALUE          DESCRIPTION\n\
         BASE        busybox:test   \n\
         MODE        debug          How to build\n\
         \n\
         SECRET   REQUIRED\n\
         token    true\n\
         \n\
         SSH       REQUIRED\n\
         default   \n\
         \n"
    );
    assert!(stdout(&["--call=outline", "--target", "build"])
        .starts_with("TARGET:      build\nDESCRIPTION: Compiles it\n\nBUILD ARG"));
    let out = kiln()
        .root(&root)
        .args(["build", "--call=check"])
        .arg(&ctx)
        .ok();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("Check complete"), "{all}");
    let e = kiln()
        .root(&root)
        .args(["build", "--cgroup-parent", "kiln.slice"])
        .arg(&ctx)
        .fails();
    assert!(
        e.contains("--cgroup-parent kiln.slice: not supported") && e.contains("systemd-run"),
        "{e}"
    );
}

/// The files of an OCI archive (`-o type=oci`'s tar), by path.
fn archive_files(tar_path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(fs::File::open(tar_path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        files.insert(name, data);
    }
    files
}

#[test]
fn provenance_makes_a_one_platform_build_an_index_with_an_attestation_manifest() {
    let (d, root, ctx) = project("FROM busybox:test\nARG NOTE\nRUN echo \"$NOTE\" > /note\n");
    store_busybox(&root);
    let dest = d.path().join("oci.tar");
    let out_spec = format!("type=oci,dest={}", dest.display());
    kiln()
        .root(&root)
        .args(["build", "-q", "-t", "attested:1", "-o", &out_spec])
        .args(["--provenance=true", "--build-arg", "NOTE=hello"])
        .args([
            "--annotation",
            "index:org.opencontainers.image.title=attested",
        ])
        .args([
            "--annotation",
            "manifest-descriptor:com.example.entry=image",
        ])
        .args(["--annotation", "index-descriptor:com.example.layout=entry"])
        .arg(&ctx)
        .ok();
    let files = archive_files(&dest);
    let blob = |d: &serde_json::Value| -> serde_json::Value {
        let hex = d
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_string();
        serde_json::from_slice(&files[&format!("blobs/sha256/{hex}")]).unwrap()
    };
    let top: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(
        top["manifests"][0]["annotations"]["com.example.layout"],
        "entry"
    );
    let index = blob(&top["manifests"][0]["digest"]);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index:#}");
    let (image, att) = (&entries[0], &entries[1]);
    // The index's own annotations, and its image entry's (with an index,
    // `index:` and `manifest-descriptor:` annotations have a place).
    assert_eq!(
        index["annotations"]["org.opencontainers.image.title"],
        "attested"
    );
    assert_eq!(image["annotations"]["com.example.entry"], "image");
    assert!(att["annotations"].get("com.example.entry").is_none());
    assert_eq!(att["platform"]["os"], "unknown");
    assert_eq!(
        att["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        att["annotations"]["vnd.docker.reference.digest"],
        image["digest"]
    );
    // The image in the archive is the one with its layers compressed, and the
    // attestation names that one (not the store's uncompressed manifest).
    let m = blob(&image["digest"]);
    assert!(m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["mediaType"].as_str().unwrap().ends_with("+gzip")));
    let am = blob(&att["digest"]);
    assert_eq!(am["subject"]["digest"], image["digest"]);
    assert_eq!(am["layers"].as_array().unwrap().len(), 1);
    let s = blob(&am["layers"][0]["digest"]);
    assert_eq!(s["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(s["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        s["subject"][0]["digest"]["sha256"],
        image["digest"].as_str().unwrap()[7..]
    );
    let subject = s["subject"][0]["name"].as_str().unwrap();
    assert!(
        subject.starts_with("pkg:docker/attested@1?platform=linux%2F"),
        "{subject}"
    );
    let p = &s["predicate"];
    assert_eq!(
        p["buildDefinition"]["externalParameters"]["request"]["args"]["build-arg:NOTE"],
        "hello"
    );
    // mode=min: no Dockerfile source, no steps.
    assert!(
        p["runDetails"]["metadata"]["buildkit_metadata"]
            .get("source")
            .is_none(),
        "{p:#}"
    );
    assert!(p["buildDefinition"]["internalParameters"]
        .get("buildConfig")
        .is_none());
    // The store names the index; run uses the image.
    let ran = kiln()
        .root(&root)
        .args(["run", "--rm", "attested:1", "cat", "/note"])
        .stdout();
    assert_eq!(ran, "hello\n");
    // An index cannot be loaded or written as a docker archive (as BuildKit),
    // and bad attestation options are one clear error.
    for (args, says) in [
        (
            &["--sbom=true", "--load=docker"][..],
            "docker exporter does not currently support exporting manifest lists",
        ),
        (&["--attest", "type=vex"], "unknown type \"vex\""),
        (&["--provenance=mode=full"], "use mode=min or mode=max"),
        (
            &["--sbom=generator=docker/buildkit-syft-scanner"],
            "kiln makes the SBOM itself",
        ),
    ] {
        let e = kiln()
            .root(&root)
            .args(["build", "-t", "attested:2"])
            .args(args)
            .arg(&ctx)
            .fails();
        assert!(e.contains(says), "{args:?}: {e}");
    }
}

/// With a filesystem output, the statements are files at the top of the tree,
/// as BuildKit's local and tar exporters write them: `provenance.json` and
/// `sbom.spdx.json`, each about every regular file of the output (relative
/// path and sha256), mode 0600, dated `SOURCE_DATE_EPOCH`.
#[test]
fn attestations_of_a_filesystem_output_are_files_about_its_files() {
    let (d, root, ctx) = project("FROM busybox:test\nRUN mkdir -p /app && echo hi > /app/note\n");
    store_busybox(&root);
    let dir = d.path().join("out");
    let tar = d.path().join("out.tar");
    kiln()
        .root(&root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "-q", "--sbom=true", "--provenance=mode=min"])
        .args(["-o", &format!("type=local,dest={}", dir.display())])
        .args(["-o", &format!("type=tar,dest={}", tar.display())])
        .arg(&ctx)
        .ok();
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&fs::read(dir.join(name)).unwrap()).unwrap()
    };
    let provenance = read("provenance.json");
    let sbom = read("sbom.spdx.json");
    assert_eq!(
        provenance["predicateType"],
        "https://slsa.dev/provenance/v1"
    );
    assert_eq!(sbom["predicateType"], "https://spdx.dev/Document");
    // The subjects: every regular file of the image (not the statements),
    // sorted, each with its content's sha256.
    let subjects = provenance["subject"].as_array().unwrap();
    let names: Vec<&str> = subjects
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(
        names.contains(&"app/note") && names.contains(&"bin/busybox"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.ends_with(".json")), "{names:?}");
    let note = subjects.iter().find(|s| s["name"] == "app/note").unwrap();
    assert_eq!(
        note["digest"]["sha256"],
        kiln_oci::digest::Digest::of(b"hi\n").hex()
    );
    assert_eq!(sbom["subject"], provenance["subject"]);
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::metadata(dir.join("provenance.json")).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.mtime()), (0o600, 1_700_000_000));
    // The tar holds the same two files, with the same bytes.
    let mut archive = tar::Archive::new(fs::File::open(&tar).unwrap());
    let mut in_tar = std::collections::BTreeMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if name.ends_with("provenance.json") || name.ends_with("sbom.spdx.json") {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            in_tar.insert(name.trim_start_matches("./").to_string(), data);
        }
    }
    assert_eq!(in_tar.len(), 2, "{:?}", in_tar.keys());
    assert_eq!(
        in_tar["sbom.spdx.json"],
        fs::read(dir.join("sbom.spdx.json")).unwrap()
    );
}
