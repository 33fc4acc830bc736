//! `kiln build` behaviours found by comparing kiln with BuildKit on BuildKit's own
//! Dockerfile tests (issue #19): each test here failed before its fix. The kiln
//! binary runs against a temporary store holding a busybox image made by the test
//! (Debian's static busybox), so RUN steps need root (CI runs as root).

use kiln_oci::image::ContainerConfig;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::util::kiln;

/// kiln with the store `root` and `args`, whatever it exits with.
fn run_kiln(root: &Path, args: &[&str]) -> Output {
    kiln().root(root).args(args).output()
}

/// Stores an image of one layer (the directory `rootfs`) under `tag`, with
/// `Env PATH=/bin` and the given ONBUILD triggers.
fn store_image(root: &Path, tag: &str, rootfs: &Path, on_build: &[&str]) {
    let container = ContainerConfig {
        env: vec!["PATH=/bin".into()],
        on_build: on_build.iter().map(|t| t.to_string()).collect(),
        ..ContainerConfig::default()
    };
    crate::util::store_image(root, tag, rootfs, container, "made by the test");
}

/// A busybox root filesystem (`kiln_testkit::busybox`) with only root and nobody.
fn busybox_rootfs(dir: &Path) {
    kiln_testkit::busybox::rootfs_with_users(
        dir,
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        "root:x:0:\nnobody:x:65534:\n",
    )
    .unwrap();
}

struct Project {
    dir: tempfile::TempDir,
    root: PathBuf,
    ctx: PathBuf,
}

/// A store with `busybox:test`, and a context directory holding `files`.
fn project(files: &[(&str, &str)]) -> Project {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    let rootfs = dir.path().join("busybox-rootfs");
    busybox_rootfs(&rootfs);
    store_image(&root, "busybox:test", &rootfs, &[]);
    for (name, content) in files {
        let p = ctx.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    Project { dir, root, ctx }
}

impl Project {
    fn build(&self, extra: &[&str]) -> Output {
        let mut args = vec!["build", "--progress=plain"];
        args.extend_from_slice(extra);
        let ctx = self.ctx.to_str().unwrap();
        args.push(ctx);
        run_kiln(&self.root, &args)
    }

    fn build_ok(&self, extra: &[&str]) -> Output {
        let out = self.build(extra);
        assert!(
            out.status.success(),
            "kiln build {extra:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Builds and returns the image's file tree (`-o type=local`).
    fn export(&self, extra: &[&str]) -> tempfile::TempDir {
        let out = tempfile::tempdir().unwrap();
        let spec = format!("type=local,dest={}", out.path().display());
        let mut args = extra.to_vec();
        args.extend_from_slice(&["-o", &spec]);
        self.build_ok(&args);
        out
    }
}

fn read(dir: &Path, path: &str) -> String {
    fs::read_to_string(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Issue #19 item 3: `-o type=tar` of an image with no layers.
#[test]
fn tar_output_of_an_image_without_layers() {
    let p = project(&[("Dockerfile", "FROM scratch\nLABEL foo=bar\n")]);
    let tar = p.dir.path().join("fs.tar");
    p.build_ok(&["-o", &format!("type=tar,dest={}", tar.display())]);
    let mut archive = tar::Archive::new(fs::File::open(&tar).unwrap());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .filter(|n| n != "./")
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

/// Issue #19 item 4: without `Dockerfile`, `dockerfile` is read (BuildKit's
/// testDockerfileLowercase); errors still name `Dockerfile`.
#[test]
fn a_lowercase_dockerfile_is_used_when_dockerfile_is_absent() {
    let p = project(&[
        ("dockerfile", "FROM scratch\nCOPY foo /foo\n"),
        ("foo", "contents"),
    ]);
    let out = p.export(&[]);
    assert_eq!(read(out.path(), "foo"), "contents");
    // `-f DIR/Dockerfile` falls back the same way.
    let df = p.ctx.join("Dockerfile");
    let out = p.export(&["-f", df.to_str().unwrap()]);
    assert_eq!(read(out.path(), "foo"), "contents");

    fs::write(p.ctx.join("dockerfile"), "FROM scratch\nCOPPY foo /foo\n").unwrap();
    let err = p.build(&[]);
    assert!(!err.status.success());
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");

    // Other names do not fall back.
    fs::remove_file(p.ctx.join("dockerfile")).unwrap();
    let missing = p.build(&[]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("cannot read Dockerfile"), "{stderr}");
}

/// Issue #19 item 7: `--build-arg http_proxy=X` reaches RUN as `http_proxy` and
/// `HTTP_PROXY` (BuildKit's testBuiltinArgs); an empty one is left out.
#[test]
fn proxy_build_args_reach_run_under_both_names() {
    let p = project(&[(
        "Dockerfile",
        "FROM busybox:test\nRUN echo \"$HTTP_PROXY|$http_proxy|$NO_PROXY|$no_proxy|${FTP_PROXY-unset}\" > /out\n",
    )]);
    let out = p.export(&[
        "--build-arg",
        "http_proxy=hp",
        "--build-arg",
        "NO_PROXY=np",
        "--build-arg",
        "ftp_proxy=",
    ]);
    assert_eq!(read(out.path(), "out"), "hp|hp|np|np|unset\n");
}

/// Issue #19 item 5: a cache is keyed by its id and its uid/gid/mode (a new
/// combination is a new directory made with those owners), and `source=` mounts
/// a subdirectory of it (BuildKit's testCacheMountUser, with the issue's
/// reproduction).
#[test]
fn cache_mounts_key_uid_gid_mode_and_mount_source_subdirectories() {
    let p = project(&[(
        "Dockerfile",
        "FROM busybox:test\n\
         RUN --mount=type=cache,target=/c mkdir -p /c/sel && touch /c/foo /c/sel/in-sel\n\
         RUN --mount=type=cache,target=/c,uid=1001,gid=1002,mode=0751 stat -c '%u %g %a' /c > /owned && ls /c >> /owned && touch /c/owned-only\n\
         RUN --mount=type=cache,target=/c,uid=1001,gid=1002,mode=0751 ls /c > /owned-again\n\
         RUN --mount=type=cache,target=/c stat -c '%u %g %a' /c > /plain && ls /c >> /plain\n\
         RUN --mount=type=cache,target=/s,id=/c,source=sel ls /s > /sub\n",
    )]);
    let out = p.export(&[]);
    assert_eq!(read(out.path(), "owned"), "1001 1002 751\n");
    assert_eq!(read(out.path(), "owned-again"), "owned-only\n");
    assert_eq!(read(out.path(), "plain"), "0 0 755\nfoo\nsel\n");
    assert_eq!(read(out.path(), "sub"), "in-sel\n");
}

/// `source=` is resolved inside the cache: a symlink to `/etc` there does not
/// reach the host's /etc (BuildKit's testCacheMountSourceEscape fails the build).
#[test]
fn a_cache_source_through_a_symlink_stays_inside_the_cache() {
    let p = project(&[(
        "Dockerfile",
        "FROM busybox:test\n\
         RUN --mount=type=cache,id=esc,target=/cache mkdir -p /cache/sel && echo benign > /cache/sel/benign.txt\n\
         RUN --mount=type=cache,id=esc,target=/cache rm -rf /cache/sel && ln -s /etc /cache/sel\n\
         RUN --mount=type=cache,id=esc,source=sel,target=/victim cat /victim/hostname /victim/passwd > /leak\n",
    )]);
    let out = p.build(&[]);
    assert!(
        !out.status.success(),
        "the escaping source must fail the build"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The mount fails, not the command (which cannot read the host's files).
    assert!(
        stderr.contains("cache mount esc: sel: no such file or directory"),
        "{stderr}"
    );
    assert!(!stderr.contains("exited with"), "{stderr}");
}

/// `RUN --mount=type=cache,from=STAGE,source=DIR`: a new cache starts as a copy of
/// the stage's directory (owner and mode included); what a step adds stays in it.
#[test]
fn cache_mounts_seeded_from_a_stage() {
    let p = project(&[(
        "Dockerfile",
        "FROM busybox:test AS deps\n\
         RUN mkdir -p /seed/sub && echo seeded > /seed/sub/file && chown 7:8 /seed && chmod 0750 /seed\n\
         FROM busybox:test\n\
         RUN --mount=type=cache,target=/c,from=deps,source=/seed cat /c/sub/file > /out && stat -c '%u %g %a' /c >> /out && touch /c/added\n\
         RUN --mount=type=cache,target=/c,from=deps,source=/seed ls /c > /again\n\
         RUN --mount=type=cache,target=/c ls /c > /plain\n",
    )]);
    let out = p.export(&[]);
    assert_eq!(read(out.path(), "out"), "seeded\n7 8 750\n");
    assert_eq!(read(out.path(), "again"), "added\nsub\n");
    assert_eq!(read(out.path(), "plain"), "");
}

/// Issue #19 item 6: the ONBUILD triggers of a base image may read other stages
/// and images (BuildKit's testOnBuildNewDeps): `COPY --from=IMAGE` works, and
/// `RUN --mount=from=STAGE` mounts that stage of the child Dockerfile — built
/// for it although nothing else needs it — not the build context.
#[test]
fn image_onbuild_triggers_read_stages_and_images() {
    let p = project(&[
        (
            "Dockerfile",
            "FROM busybox:test AS inputstage\n\
             RUN echo -n from-stage > /foo\n\
             FROM onbuild:test\n\
             RUN ls /out > /list\n",
        ),
        ("foo", "from-context"),
    ]);
    let rootfs = p.dir.path().join("onbuild-rootfs");
    busybox_rootfs(&rootfs);
    store_image(
        &p.root,
        "onbuild:test",
        &rootfs,
        &[
            "COPY --from=busybox:test /etc/group /out/group",
            "RUN --mount=type=bind,target=/in,from=inputstage cat /in/foo > /out/bar",
        ],
    );
    let out = p.export(&["-t", "child:1"]);
    assert_eq!(read(out.path(), "out/bar"), "from-stage");
    assert_eq!(
        read(out.path(), "out/group"),
        "root:x:0:\nnobody:x:65534:\n"
    );
    assert_eq!(read(out.path(), "list"), "bar\ngroup\n");
    // The child image does not inherit the triggers.
    let inspect = run_kiln(&p.root, &["inspect", "child:1"]);
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert!(v[0]["Config"]["Env"].is_array(), "{v}");
    assert!(
        v[0]["Config"]["OnBuild"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{v}"
    );
}

/// The entry names of each layer of the image in the OCI archive at `path`,
/// base layer first.
fn layer_entries(path: &Path) -> Vec<Vec<String>> {
    use std::io::Read as _;
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut archive = tar::Archive::new(fs::File::open(path).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        blobs.insert(name, data);
    }
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&blobs[name]).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let blob = |digest: &serde_json::Value| {
        format!(
            "blobs/sha256/{}",
            digest.as_str().unwrap().trim_start_matches("sha256:")
        )
    };
    let index = json("index.json");
    let manifest = json(&blob(&index["manifests"][0]["digest"]));
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let data = &blobs[&blob(&l["digest"])];
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&data[..]));
            tar.entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect()
        })
        .collect()
}

/// Issue #19 item 9: a step's layer holds only what differs from the filesystem
/// below, as BuildKit's differ writes it: a COPY of identical content, or a RUN
/// that only made the overlay copy a directory up, gives an empty layer.
#[test]
fn unchanged_files_are_left_out_of_a_layer() {
    let p = project(&[
        (
            "Dockerfile",
            "FROM busybox:test\n\
             RUN touch /tmp/x && rm /tmp/x\n\
             COPY foo /dir/foo\n\
             COPY foo /dir/foo\n\
             COPY foo /dir/bar\n",
        ),
        ("foo", "contents"),
    ]);
    let oci = p.dir.path().join("image.tar");
    p.build_ok(&["-o", &format!("type=oci,dest={}", oci.display())]);
    let layers = layer_entries(&oci);
    assert_eq!(layers.len(), 5, "{layers:?}");
    assert!(layers[1].is_empty(), "the RUN: {:?}", layers[1]);
    assert_eq!(layers[2], ["dir/", "dir/foo"]);
    assert!(layers[3].is_empty(), "the second COPY: {:?}", layers[3]);
    // (BuildKit leaves the unchanged `dir/` header out too; kiln keeps it.)
    assert_eq!(layers[4], ["dir/", "dir/bar"]);
}

/// `--label KEY=VALUE` sets a label on the image over the Dockerfile's, without a
/// history entry (BuildKit's testLabels, `label:` frontend option).
#[test]
fn label_flag_sets_labels_without_history() {
    let p = project(&[("Dockerfile", "FROM scratch\nLABEL foo=bar keep=yes\n")]);
    p.build_ok(&[
        "-t",
        "labelled:1",
        "--label",
        "bar=baz",
        "--label",
        "foo=over",
    ]);
    let out = run_kiln(&p.root, &["inspect", "labelled:1"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v[0]["Config"]["Labels"],
        serde_json::json!({"bar": "baz", "foo": "over", "keep": "yes"})
    );
    let out = run_kiln(&p.root, &["history", "labelled:1"]);
    let history = String::from_utf8_lossy(&out.stdout);
    assert!(!history.contains("bar=baz"), "{history}");
}

/// `--build-arg BUILDKIT_SANDBOX_HOSTNAME=NAME` is RUN's hostname, in /etc/hosts
/// too (BuildKit's testDockerfileCheckHostname).
#[test]
fn sandbox_hostname_build_arg() {
    let p = project(&[(
        "Dockerfile",
        "FROM busybox:test\nRUN hostname > /name && (grep -c foo /etc/hosts || true) > /in-hosts\n",
    )]);
    let out = p.export(&["--build-arg", "BUILDKIT_SANDBOX_HOSTNAME=foo"]);
    assert_eq!(read(out.path(), "name"), "foo\n");
    assert_eq!(read(out.path(), "in-hosts"), "1\n");
    let out = p.export(&[]);
    assert_eq!(read(out.path(), "name"), "buildkitsandbox\n");
    assert_eq!(read(out.path(), "in-hosts"), "0\n");
}
