//! `kiln build`'s flags taken from `docker buildx build`: `--add-host`,
//! `--shm-size`, `--ulimit` (seen by a RUN step; needs root, as every test
//! running RUN steps), `--annotation` (in the manifest written), `--call`
//! (outline, targets, check) and the refused `--cgroup-parent`.

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
