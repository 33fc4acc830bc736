//! Rootless `kiln build` against a root build of the same Dockerfile: the
//! unprivileged user `kiln-rootless` (made with a subordinate id range by
//! scripts/setup-test-env) must produce byte-identical layers, with the
//! image's owners, whiteouts, opaque directories, set-id bits and links.
//! Then the user manages that store outside kiln's user namespace (images,
//! rmi, prune), removes it with `kiln unshare`, runs the image with
//! `kiln run`, and Ctrl-C during a rootless RUN leaves no process behind.
//!
//! Needs root (to create the test directories for the user and switch to it
//! with `runuser`); CI runs as root.

use crate::util::{kiln, kiln_path};
use kiln_oci::image::{format_rfc3339, load_image, write_image, ContainerConfig, History};
use kiln_oci::layer::{write_layer, DiffKind, LayerOptions};
use kiln_oci::{BlobRef, Digest, ImageConfig, ManifestFormat, Store};
use kiln_testkit::rootless::{
    self, chown_tree, executable_for_user, require_root_and_user, user_ids, Scratch, USER,
};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EPOCH: &str = "1700000000";

const DOCKERFILE: &str = r#"FROM base:test
RUN mkdir -p /data/sub \
 && echo one > /data/a && echo two > /data/b && rm /data/b \
 && chown 1000:1000 /data/a /data/sub && chmod 4755 /data/a \
 && ln -s a /data/link && ln /data/a /data/hard \
 && rm -rf /opt && mkdir /opt && echo again > /opt/again \
 && rm /home/app/.profile && mkfifo /data/fifo
COPY --chown=1000:1000 files/ /srv/files/
COPY --chown=app files/one.txt /srv/one-by-name.txt
WORKDIR /w/deep
RUN touch here && chown 1000:1000 here
RUN --mount=type=bind,from=base:test,source=/opt,target=/mnt/opt ls /mnt/opt > /opt-list
RUN --mount=type=bind,target=/mnt/ctx,rw touch /mnt/ctx/scratch && ls /mnt/ctx > /ctx-list
USER app
RUN id -u > /tmp/whoami && touch /home/app/mine
"#;

/// The kiln binary, at a path the user can execute.
fn kiln_for_user(scratch: &Path) -> PathBuf {
    executable_for_user(&kiln_path(), scratch)
}

fn mknod(path: &Path, mode: u32, dev: libc::dev_t) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string.
    let r = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    assert_eq!(r, 0, "mknod {}", path.display());
}

fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// Layer 1 of the base: busybox, users root and app (1000), a home owned by
/// app, a setuid file, a device node, files the second layer removes.
fn base_rootfs(dir: &Path) {
    kiln_testkit::busybox::rootfs_with_users(
        dir,
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        "root:x:0:\napp:x:1000:\n",
    )
    .unwrap();
    for d in ["home/app", "opt/old"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::write(dir.join("etc/motd"), "removed by layer 2\n").unwrap();
    fs::write(dir.join("opt/old/file"), "hidden by layer 2\n").unwrap();
    fs::write(dir.join("home/app/.profile"), "export A=1\n").unwrap();
    lchown(&dir.join("home/app/.profile"), 1000, 1000);
    lchown(&dir.join("home/app"), 1000, 1000);
    fs::set_permissions(dir.join("home/app"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(dir.join("bin/setuid-tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(
        dir.join("bin/setuid-tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    mknod(
        &dir.join("dev/console"),
        libc::S_IFCHR | 0o600,
        libc::makedev(5, 1),
    );
}

/// Layer 2 of the base, in overlay upperdir form: a whiteout for /etc/motd
/// and /opt replaced by an opaque directory.
fn base_upper(dir: &Path) {
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::create_dir_all(dir.join("opt")).unwrap();
    mknod(&dir.join("etc/motd"), libc::S_IFCHR, libc::makedev(0, 0));
    let opt = CString::new(dir.join("opt").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        libc::lsetxattr(
            opt.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(r, 0, "setting trusted.overlay.opaque");
    fs::write(dir.join("opt/new"), "from layer 2\n").unwrap();
}

/// Stores the two-layer base as `base:test` in the store at `root`.
pub(crate) fn make_base(root: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let (l1, l2) = (tmp.path().join("l1"), tmp.path().join("l2"));
    base_rootfs(&l1);
    base_upper(&l2);
    let store = Store::open(root).unwrap();
    let opts = LayerOptions {
        source_date_epoch: Some(0),
        ..LayerOptions::default()
    };
    let mut config = ImageConfig::new("linux", kiln_oci::image::host_architecture());
    config.created = Some(format_rfc3339(0));
    config.config = Some(ContainerConfig {
        env: vec!["PATH=/bin".into()],
        cmd: Some(vec!["sh".into()]),
        ..ContainerConfig::default()
    });
    let mut layers = Vec::new();
    for (dir, kind) in [(&l1, DiffKind::Plain), (&l2, DiffKind::OverlayUpper)] {
        let mut w = store.blob_writer().unwrap();
        let desc = write_layer(dir, kind, &opts, &mut w).unwrap();
        let (digest, size) = w.commit().unwrap();
        config.rootfs.diff_ids.push(desc.diff_id);
        config.history.push(History {
            created_by: Some("base made by the test".into()),
            ..History::default()
        });
        layers.push(BlobRef {
            media_type: desc.media_type,
            digest,
            size,
            annotations: BTreeMap::new(),
        });
    }
    let m = write_image(&store, &config, &layers, ManifestFormat::Oci).unwrap();
    store.tag(&"base:test".parse().unwrap(), m).unwrap();
}

/// The build context: the Dockerfile and a small tree to COPY.
pub(crate) fn make_context(ctx: &Path, dockerfile: &str) {
    fs::create_dir_all(ctx.join("files/sub")).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    fs::write(ctx.join("files/one.txt"), "one\n").unwrap();
    fs::write(ctx.join("files/sub/two.txt"), "two\n").unwrap();
    fs::set_permissions(ctx.join("files/one.txt"), fs::Permissions::from_mode(0o640)).unwrap();
}

fn show(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `kiln ARGS` as `kiln-rootless` with a clean, fixed environment: HOME and
/// XDG_DATA_HOME under `home`, so the default store is `home/data/kiln`.
fn as_user(kiln: &Path, home: &Path, args: &[&str]) -> Command {
    let mut cmd = rootless::as_user(kiln, home, &[], &[("SOURCE_DATE_EPOCH", EPOCH)]);
    cmd.args(args);
    cmd
}

fn user_ok(kiln: &Path, home: &Path, args: &[&str]) -> Output {
    let out = as_user(kiln, home, args).output().unwrap();
    assert!(
        out.status.success(),
        "kiln {args:?} as {USER} failed: {}",
        show(&out)
    );
    out
}

fn root_ok(store: &Path, args: &[&str]) -> Output {
    kiln()
        .root(store)
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env_remove("KILN_ROOT")
        .ok()
}

/// (image id, diff_ids, manifest layer digests) of `name` in a store.
pub(crate) fn image_digests(store_root: &Path, name: &str) -> (Digest, Vec<Digest>, Vec<Digest>) {
    let store = Store::open(store_root).unwrap();
    let entry = store
        .images()
        .unwrap()
        .into_iter()
        .find(|i| {
            i.name
                .as_ref()
                .is_some_and(|n| n.to_string().ends_with(name))
        })
        .unwrap_or_else(|| panic!("{name} not in {}", store_root.display()));
    let image = load_image(&store, &entry.target).unwrap();
    (
        image.id(),
        image.config.rootfs.diff_ids.clone(),
        image.layers.iter().map(|l| l.digest).collect(),
    )
}

/// The describe line of `path` in `kiln debug describe` output.
fn described<'a>(describe: &'a str, path: &str) -> &'a str {
    let key = format!("{{\"path\":\"{path}\",");
    describe
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("{path} is not in the image:\n{describe}"))
}

fn subordinate_start(file: &str) -> u32 {
    let text = fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(USER)).then(|| f.next().and_then(|s| s.parse().ok()))?
        })
        .unwrap_or_else(|| panic!("{file} has no range for {USER}"))
}

#[test]
fn rootless_build_gives_the_root_builds_layers() {
    require_root_and_user();
    let scratch = Scratch::new("same");
    let kiln = kiln_for_user(&scratch.dir);

    // Root: its own store and context.
    let root_store = scratch.dir.join("root-store");
    let root_ctx = scratch.dir.join("root-ctx");
    make_base(&root_store);
    make_context(&root_ctx, DOCKERFILE);
    root_ok(
        &root_store,
        &[
            "build",
            "--progress=plain",
            "-t",
            "out:1",
            root_ctx.to_str().unwrap(),
        ],
    );

    // The user: a home it owns, the store at its default place in there.
    let home = scratch.dir.join("home");
    let user_store = home.join("data/kiln");
    let user_ctx = home.join("ctx");
    make_base(&user_store);
    make_context(&user_ctx, DOCKERFILE);
    chown_tree(&home);
    let out = user_ok(
        &kiln,
        &home,
        &[
            "build",
            "--progress=plain",
            "-t",
            "out:1",
            user_ctx.to_str().unwrap(),
        ],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("only uid/gid 0 is mapped"),
        "{USER} should have a subordinate range: {log}"
    );

    // The root build did what the Dockerfile says (so the comparison means something).
    let describe =
        String::from_utf8_lossy(&root_ok(&root_store, &["debug", "describe", "out:1"]).stdout)
            .into_owned();
    for (path, want) in [
        ("/data/a", r#""mode":"4755","uid":1000,"gid":1000"#),
        ("/data/hard", r#""mode":"4755","uid":1000,"gid":1000"#),
        (
            "/data/sub",
            r#""type":"dir","mode":"0755","uid":1000,"gid":1000"#,
        ),
        ("/data/link", r#""target":"a""#),
        ("/data/fifo", r#""type":"fifo""#),
        ("/opt/again", r#""type":"file""#),
        (
            "/srv/files/one.txt",
            r#""mode":"0640","uid":1000,"gid":1000"#,
        ),
        ("/srv/files/sub", r#""uid":1000,"gid":1000"#),
        ("/srv/one-by-name.txt", r#""uid":1000,"gid":1000"#),
        ("/w/deep/here", r#""uid":1000,"gid":1000"#),
        ("/home/app", r#""mode":"0750","uid":1000,"gid":1000"#),
        ("/home/app/mine", r#""uid":1000,"gid":1000"#),
        ("/bin/setuid-tool", r#""mode":"4755""#),
    ] {
        let line = described(&describe, path);
        assert!(line.contains(want), "{path}: want {want} in {line}");
    }
    // Bind mounts over overlays of layers: base layer 2 made /opt opaque.
    for (path, content) in [
        ("opt-list", "new\n"),
        ("ctx-list", "Dockerfile\nfiles\nscratch\n"),
    ] {
        let out = root_ok(&root_store, &["run", "out:1", "cat", &format!("/{path}")]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), content, "/{path}");
    }
    for gone in [
        "/data/b",
        "/etc/motd",
        "/opt/old",
        "/opt/new",
        "/home/app/.profile",
    ] {
        let key = format!("{{\"path\":\"{gone}\"");
        assert!(
            !describe.contains(&key),
            "{gone} should be gone:\n{describe}"
        );
    }

    // Byte-identical: same layer digests (compressed and not), same image.
    let (root_id, root_diff_ids, root_layers) = image_digests(&root_store, "out:1");
    let (user_id, user_diff_ids, user_layers) = image_digests(&user_store, "out:1");
    assert_eq!(root_diff_ids.len(), 10, "2 base layers + 8 built");
    assert_eq!(user_diff_ids, root_diff_ids, "diff_ids differ");
    assert_eq!(user_layers, root_layers, "layer blob digests differ");
    assert_eq!(user_id, root_id, "image ids differ");

    // On the host, the rootless snapshot files carry the user's ids (0) and
    // subordinate ids (1000 → start + 999): kiln's namespace did the mapping.
    let (uid, gid) = user_ids();
    let sub_u = subordinate_start("/etc/subuid");
    let sub_g = subordinate_start("/etc/subgid");
    let snap_of = |diff_id: &Digest| user_store.join("snapshots").join(diff_id.hex());
    let run_layer = snap_of(&user_diff_ids[2]);
    let a = fs::symlink_metadata(run_layer.join("data/a")).unwrap();
    assert_eq!((a.uid(), a.gid()), (sub_u + 999, sub_g + 999));
    assert_eq!(a.mode() & 0o7777, 0o4755);
    let data = fs::symlink_metadata(run_layer.join("data")).unwrap();
    assert_eq!((data.uid(), data.gid()), (uid, gid));
    let base = snap_of(&user_diff_ids[0]);
    let home_app = fs::symlink_metadata(base.join("home/app")).unwrap();
    assert_eq!((home_app.uid(), home_app.gid()), (sub_u + 999, sub_g + 999));
    // Overlay whiteouts and opaque markers of a user namespace.
    let opaque = xattr(
        &snap_of(&user_diff_ids[1]).join("opt"),
        "user.overlay.opaque",
    );
    assert_eq!(
        opaque.as_deref(),
        Some(&b"y"[..]),
        "base layer 2: /opt opaque"
    );
    let motd = fs::symlink_metadata(snap_of(&user_diff_ids[1]).join("etc/motd")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &motd.file_type()
    ));
    assert_eq!(motd.rdev(), 0);

    // A rebuild as the user is all cache hits.
    let out = user_ok(
        &kiln,
        &home,
        &[
            "build",
            "--progress=rawjson",
            "-t",
            "out:1",
            user_ctx.to_str().unwrap(),
        ],
    );
    let events = String::from_utf8_lossy(&out.stderr);
    let started: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("\"event\":\"step_started\""))
        .collect();
    assert!(
        started.len() == 1 && started[0].contains("FROM base:test"),
        "{events}"
    );
    assert_eq!(
        events.matches("\"event\":\"step_cached\"").count(),
        8,
        "{events}"
    );
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 64];
    let n = rustix::fs::lgetxattr(path, name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

#[test]
fn the_user_manages_and_removes_a_rootless_store() {
    require_root_and_user();
    let scratch = Scratch::new("manage");
    let kiln = kiln_for_user(&scratch.dir);
    let home = scratch.dir.join("home");
    let store = home.join("data/kiln");
    let ctx = home.join("ctx");
    make_base(&store);
    make_context(&ctx, DOCKERFILE);
    chown_tree(&home);
    user_ok(
        &kiln,
        &home,
        &["build", "-t", "out:1", ctx.to_str().unwrap()],
    );

    // `kiln run` as the user: the image's USER, its files and owners.
    let out = user_ok(
        &kiln,
        &home,
        &[
            "run",
            "out:1",
            "sh",
            "-c",
            "id -u; cat /tmp/whoami; stat -c '%u:%g %a' /data/a",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000\n1000\n1000:1000 4755\n",
        "{}",
        show(&out)
    );

    // `images` and `rmi` work on the user's own files; `prune` runs in the
    // namespace, since snapshots hold files of subordinate ids.
    let out = user_ok(&kiln, &home, &["images"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("out"),
        "{}",
        show(&out)
    );
    // `analyze` reads the layers the rootless build made (files of subordinate
    // ids) in the namespace: /data/a is set-uid and owned by 1000 in the image.
    let out = user_ok(&kiln, &home, &["analyze", "--format", "json", "out:1"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "setuid" && f["path"] == "/data/a")
        .unwrap_or_else(|| panic!("{:#}", r["findings"]));
    assert_eq!(a["line"], 2, "{a:#}");
    assert!(
        a["message"].as_str().unwrap().contains("owner uid 1000"),
        "{a:#}"
    );
    user_ok(&kiln, &home, &["rmi", "out:1", "base:test"]);
    let out = user_ok(&kiln, &home, &["prune", "--build-cache"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Deleted blobs:"),
        "{}",
        show(&out)
    );
    let left: Vec<_> = fs::read_dir(store.join("blobs/sha256")).unwrap().collect();
    assert!(left.is_empty(), "blobs left after prune: {left:?}");
    let snapshots: Vec<_> = fs::read_dir(store.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64)
        .collect();
    assert!(
        snapshots.is_empty(),
        "snapshots left after prune: {snapshots:?}"
    );

    // Build again; then a plain rm cannot remove the store (snapshots hold
    // files of subordinate ids), `kiln unshare rm` can.
    make_base_as_user(&kiln, &home, &store);
    user_ok(
        &kiln,
        &home,
        &["build", "-t", "out:1", ctx.to_str().unwrap()],
    );
    let plain = as_user(
        &PathBuf::from("/bin/rm"),
        &home,
        &["-rf", store.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert!(
        !plain.status.success(),
        "rm -rf of the store should fail outside the namespace"
    );
    assert!(store.exists());
    user_ok(
        &kiln,
        &home,
        &["unshare", "rm", "-rf", store.to_str().unwrap()],
    );
    assert!(!store.exists(), "kiln unshare rm -rf left the store");

    // Standard input and output are kiln's own (no second process in between).
    let mut cat = as_user(&kiln, &home, &["unshare", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = cat.stdin.take().unwrap();
        stdin.write_all(b"through the namespace\n").unwrap();
    }
    let out = cat.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "through the namespace\n"
    );
    // The command's exit code comes back.
    let out = as_user(&kiln, &home, &["unshare", "sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    // Inside, the user is root and the subordinate ids are mapped.
    let out = user_ok(&kiln, &home, &["unshare", "cat", "/proc/self/uid_map"]);
    let map = String::from_utf8_lossy(&out.stdout);
    let (uid, _) = user_ids();
    let first: Vec<&str> = map
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(first, ["0", uid.to_string().as_str(), "1"], "{map}");
    assert!(
        map.lines().count() >= 2,
        "no subordinate range mapped: {map}"
    );
}

/// Stores `base:test` again in the user's existing store (made by root in a
/// fresh directory, then loaded by the user from an OCI archive).
fn make_base_as_user(kiln: &Path, home: &Path, store: &Path) {
    let tmp = home.join("base-tmp");
    make_base(&tmp.join("store"));
    root_ok(
        &tmp.join("store"),
        &[
            "save",
            "-o",
            tmp.join("base.tar").to_str().unwrap(),
            "base:test",
        ],
    );
    chown_tree(&tmp);
    user_ok(
        kiln,
        home,
        &[
            "--root",
            store.to_str().unwrap(),
            "load",
            "-i",
            tmp.join("base.tar").to_str().unwrap(),
        ],
    );
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(e.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                found.push(format!("{}: {text}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// The pid of the kiln process `runuser` started (its only child).
fn child_of(pid: u32) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// Kills what a test started when it ends, also when it fails half-way: the
/// process `pid` (when set) and every process whose command line has `needle`.
struct KillOnDrop {
    pid: Option<u32>,
    needle: String,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pids = self
            .pid
            .into_iter()
            .chain(kiln_testkit::process::processes_with(&self.needle));
        for pid in pids {
            // SAFETY: signalling processes this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Ctrl-C (SIGINT to kiln) during a RUN step stops the build and leaves no
/// process and no mount behind. kiln relies on SIGINT's default action, so the
/// test starts it with that action whatever this test process inherited (a
/// script's `cargo test &` ignores SIGINT in everything it starts, and kiln
/// keeps an ignored SIGINT ignored, as `kiln_build_keeps_an_inherited_ignored_sigint`
/// checks).
#[test]
fn ctrl_c_during_a_rootless_run_leaves_nothing_behind() {
    require_root_and_user();
    let scratch = Scratch::new("sigint");
    let kiln = kiln_for_user(&scratch.dir);
    let home = scratch.dir.join("home");
    let ctx = home.join("ctx");
    make_base(&home.join("data/kiln"));
    // A sleep no other process runs: found by its argument afterwards.
    let marker = format!("sleep {}", kiln_testkit::process::unique_number());
    make_context(
        &ctx,
        &format!("FROM base:test\nRUN echo started && {marker}\n"),
    );
    chown_tree(&home);
    let mut cmd = as_user(
        &kiln,
        &home,
        &["build", "--progress=rawjson", ctx.to_str().unwrap()],
    );
    kiln_testkit::process::default_interrupt_signals(&mut cmd);
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut cleanup = KillOnDrop {
        pid: None,
        needle: marker.clone(),
    };
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("\"line\":\"started\""))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the RUN step did not start: {seen:#?}"),
        }
    }
    // `echo` prints before the shell starts `sleep`: wait for it too.
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes_with(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the step's {marker} never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let kiln_pid = child_of(child.id()).expect("runuser's child (kiln)");
    cleanup.pid = Some(kiln_pid);
    assert!(
        !kiln_testkit::process::ignores(kiln_pid, libc::SIGINT),
        "kiln was started with SIGINT ignored"
    );
    // SAFETY: sending a signal to a process we started.
    unsafe { libc::kill(kiln_pid as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "kiln did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "an interrupted build must not succeed");
    // The step and the sandbox helper die with kiln (parent-death signals).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_with(&marker);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(scratch.dir.to_str().unwrap()),
        "mounts left under the test dir:\n{mounts}"
    );
}

#[test]
fn without_subordinate_ids_only_root_is_mapped_with_a_warning() {
    require_root_and_user();
    let scratch = Scratch::new("single");
    let kiln = kiln_for_user(&scratch.dir);
    let home = scratch.dir.join("home");
    let ctx = home.join("ctx");
    make_base(&home.join("data/kiln"));
    make_context(
        &ctx,
        "FROM base:test\nRUN id -u > /uid && stat -c %u /home/app > /home-owner\n",
    );
    let chown_ctx = home.join("chown-ctx");
    make_context(
        &chown_ctx,
        "FROM base:test\nCOPY --chown=1000 files/ /srv/\n",
    );
    chown_tree(&home);
    // No newuidmap/newgidmap on PATH: kiln can map only the user itself.
    let run = |args: &[&str]| -> Output {
        Command::new("runuser")
            .args(["-u", USER, "--", "env", "-i"])
            .arg(format!("HOME={}", home.display()))
            .arg(format!("XDG_DATA_HOME={}", home.join("data").display()))
            .arg("PATH=/nonexistent")
            .arg(&kiln)
            .args(args)
            .current_dir("/")
            .output()
            .unwrap()
    };
    let out = run(&[
        "build",
        "--progress=plain",
        "-t",
        "one:1",
        ctx.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only uid/gid 0 is mapped (newuidmap/newgidmap"),
        "no warning: {err}"
    );
    let out = run(&["run", "one:1", "cat", "/uid", "/home-owner"]);
    // The step ran as 0; the base's files of uid 1000 belong to 0 here.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "0\n0\n",
        "{}",
        show(&out)
    );

    let out = run(&["build", "--progress=plain", chown_ctx.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "COPY --chown=1000 must fail: {}",
        show(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot chown to 1000:1000: the id is not mapped in kiln's user namespace"),
        "{err}"
    );
}
