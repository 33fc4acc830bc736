//! `kiln build --isolation=chroot` (no new namespaces, each RUN chrooted into a
//! copy of its layers, the layer found by a walk) gives the layers a namespaced
//! overlay build gives: same diff_ids with `SOURCE_DATE_EPOCH`, for a
//! Dockerfile with deletions (whiteouts, of the base's files and of a lower
//! layer's), a file over a directory and a directory over a file, an opaque
//! directory, metadata-only changes, set-uid bits, links, a FIFO and a stage
//! copied from another. The same build as root without CAP_SYS_ADMIN (what
//! Docker's default profile gives a container's root) finds out by itself that
//! it cannot make namespaces and says so once; a rootless user without
//! `newuidmap` (one mapped id) builds the same layers too.
//!
//! Needs root (and the `kiln-rootless` user made by scripts/setup-test-env).

use crate::cli_build_rootless::{image_digests, make_base, make_context};
use crate::util::{kiln, kiln_path, store_busybox};
use kiln_testkit::rootless::{
    chown_tree, executable_for_user, require_root_and_user, Scratch, USER,
};
use std::path::Path;
use std::process::{Command, Output};

const EPOCH: &str = "1700000000";

const MESSAGE: &str = "no mount namespace allowed: running steps with chroot isolation";

const DOCKERFILE: &str = r#"FROM base:test AS build
RUN mkdir -p /out/deep && echo built > /out/artifact && chmod 0750 /out && echo x > /dev/null
FROM base:test
RUN mkdir -p /data/sub/inner && echo one > /data/a && echo two > /data/b && rm /data/b \
 && echo deep > /data/sub/inner/f && mkdir /data/dir2 \
 && chown 1000:1000 /data/a /data/sub && chmod 4755 /data/a \
 && ln -s a /data/link && ln /data/a /data/hard && mkfifo /data/fifo
RUN rm /home/app/.profile && rm /opt/new && rm /data/link && cat /etc/hosts > /hosts-seen
RUN rm -rf /data/sub && echo file > /data/sub \
 && rm /data/fifo && mkdir /data/fifo && echo in > /data/fifo/x \
 && rm -rf /data/dir2 && ln -s /nowhere /data/dir2 \
 && rm -rf /opt && mkdir /opt && echo again > /opt/again
RUN chmod 700 /data/hard && chown 1000:1000 /bin/setuid-tool && cp /etc/passwd /tmp/p && mv /tmp/p /etc/passwd
COPY --from=build /out /out
USER app
RUN id -u > /tmp/whoami && touch /home/app/mine
"#;

fn show(out: &Output) -> String {
    kiln_testkit::printed(out)
}

/// Builds the Dockerfile in `ctx` into the fresh store `store` as root, with
/// `extra` arguments, behind `prefix` (e.g. `setpriv …`); returns the output.
fn build_as_root(store: &Path, ctx: &Path, prefix: &[&str], extra: &[&str]) -> Output {
    make_base(store);
    let mut cmd = Command::new(
        prefix
            .first()
            .copied()
            .unwrap_or(kiln_path().to_str().unwrap()),
    );
    if !prefix.is_empty() {
        cmd.args(&prefix[1..]).arg(kiln_path());
    }
    cmd.arg("--root")
        .arg(store)
        .args(["build", "--progress=plain", "-t", "out:1"])
        .args(extra)
        .arg(ctx)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env_remove("KILN_ROOT");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "build {extra:?} behind {prefix:?}: {}",
        show(&out)
    );
    out
}

#[test]
fn chroot_isolation_builds_the_overlay_builds_layers() {
    kiln_testkit::root::require_root("chroot isolation test");
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    make_context(&ctx, DOCKERFILE);

    let overlay_store = tmp.path().join("overlay");
    let out = build_as_root(&overlay_store, &ctx, &[], &[]);
    assert!(!show(&out).contains(MESSAGE), "{}", show(&out));
    let (_, want, _) = image_digests(&overlay_store, "out:1");
    assert_eq!(want.len(), 2 + 5 + 1, "two base layers, 5 RUN and one COPY");

    let chroot_store = tmp.path().join("chroot");
    let out = build_as_root(&chroot_store, &ctx, &[], &["--isolation=chroot"]);
    // Asked for, so not announced as a fallback.
    assert!(!show(&out).contains(MESSAGE), "{}", show(&out));
    let (_, got, _) = image_digests(&chroot_store, "out:1");
    assert_eq!(got, want, "--isolation=chroot vs overlay:\n{}", show(&out));

    // Root without CAP_SYS_ADMIN: no mount namespace, no mounts, no trusted.*
    // xattrs, as in a container with Docker's default profile.
    let container_store = tmp.path().join("container");
    let out = build_as_root(
        &container_store,
        &ctx,
        &[
            "setpriv",
            "--bounding-set=-sys_admin",
            "--inh-caps=-sys_admin",
            "--",
        ],
        &[],
    );
    let printed = show(&out);
    assert_eq!(printed.matches(MESSAGE).count(), 1, "said once:\n{printed}");
    let (_, got, _) = image_digests(&container_store, "out:1");
    assert_eq!(got, want, "without CAP_SYS_ADMIN vs overlay:\n{printed}");
}

/// The store on an overlay filesystem (a container's own root): overlay cannot
/// have its upper directory there, so steps keep their namespaces but run on a
/// copy of their layers, with one warning, and give the overlay build's layers.
#[test]
fn a_store_on_overlay_runs_steps_on_a_copy() {
    kiln_testkit::root::require_root("store on overlay test");
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    make_context(&ctx, DOCKERFILE);
    let overlay_store = tmp.path().join("overlay");
    build_as_root(&overlay_store, &ctx, &[], &[]);
    let (_, want, _) = image_digests(&overlay_store, "out:1");

    // The store (with the base) is the lower of an overlay mounted in a mount
    // namespace of kiln's own; kiln writes through the merged directory.
    let dirs: Vec<_> = ["l", "u", "w", "m"]
        .iter()
        .map(|d| tmp.path().join(d))
        .collect();
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    make_base(&dirs[0].join("store"));
    let script = format!(
        "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {} && exec \"$0\" \"$@\"",
        dirs[0].display(),
        dirs[1].display(),
        dirs[2].display(),
        dirs[3].display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .arg(kiln_path())
        .arg("--root")
        .arg(dirs[3].join("store"))
        .args(["build", "--progress=plain", "-t", "out:1"])
        .arg(&ctx)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .env_remove("KILN_ROOT")
        .output()
        .unwrap();
    let printed = show(&out);
    assert!(out.status.success(), "{printed}");
    assert_eq!(
        printed
            .matches("overlay cannot keep its upper directory in the store")
            .count(),
        1,
        "said once:\n{printed}"
    );
    assert!(printed.contains("not supported as upperdir"), "{printed}");
    assert!(!printed.contains(MESSAGE), "{printed}");
    // What kiln wrote is in the overlay's upper directory.
    let (_, got, _) = image_digests(&dirs[1].join("store"), "out:1");
    assert_eq!(got, want, "store on overlay vs overlay build:\n{printed}");
}

#[test]
fn chroot_steps_refuse_what_needs_namespaces_with_a_located_error() {
    kiln_testkit::root::require_root("chroot isolation test");
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    store_busybox(&store);
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:test\nRUN true\nRUN --mount=type=tmpfs,target=/t true\n",
    )
    .unwrap();
    let err = kiln()
        .root(&store)
        .args(["build", "--progress=plain", "--isolation=chroot"])
        .arg(&ctx)
        .fails();
    assert!(
        err.contains("RUN --mount needs mounts, which chroot isolation does not make")
            && err.contains("Dockerfile:3"),
        "{err}"
    );
}

const ROOTLESS_DOCKERFILE: &str = r#"FROM busybox:test
RUN mkdir -p /data/sub && echo one > /data/a && echo two > /data/b && ln -s a /data/link && mkdir /home
RUN rm /data/b && rm -rf /data/sub && echo file > /data/sub && chmod 600 /data/a && echo x > /dev/null
"#;

/// The user's build in a store made for it; `path` is kiln's PATH (one without
/// `newuidmap` gives the single-id mapping of a container without `uidmap`).
fn build_as_user(scratch: &Path, tag: &str, extra: &[&str]) -> (Output, std::path::PathBuf) {
    let kiln = executable_for_user(&kiln_path(), scratch);
    let home = scratch.join(tag);
    let store = home.join("data/kiln");
    store_busybox(&store);
    let ctx = home.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), ROOTLESS_DOCKERFILE).unwrap();
    chown_tree(&home);
    let out = Command::new("runuser")
        .args(["-u", USER, "--", "env", "-i"])
        .arg(format!("HOME={}", home.display()))
        .arg(format!("XDG_DATA_HOME={}", home.join("data").display()))
        // No newuidmap on this PATH: only the user's own id is mapped.
        .arg("PATH=/nonexistent")
        .arg(format!("SOURCE_DATE_EPOCH={EPOCH}"))
        .arg(&kiln)
        .args(["build", "--progress=plain", "-t", "out:1"])
        .args(extra)
        .arg(&ctx)
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build {extra:?} as {USER}: {}",
        show(&out)
    );
    (out, store)
}

#[test]
fn rootless_with_one_mapped_id_builds_the_root_builds_layers() {
    require_root_and_user();
    let scratch = Scratch::new("chroot-single-id");
    let root_store = scratch.dir.join("root-store");
    store_busybox(&root_store);
    let ctx = scratch.dir.join("root-ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), ROOTLESS_DOCKERFILE).unwrap();
    kiln()
        .root(&root_store)
        .args(["build", "--progress=plain", "-t", "out:1"])
        .arg(&ctx)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .ok();
    let (_, want, _) = image_digests(&root_store, "out:1");

    for (tag, extra) in [("auto", &[][..]), ("chroot", &["--isolation=chroot"][..])] {
        let (out, store) = build_as_user(&scratch.dir, tag, extra);
        assert!(
            show(&out).contains(
                "only uid/gid 0 is mapped (newuidmap/newgidmap (package uidmap) are not installed)"
            ),
            "the single-id mapping is said:\n{}",
            show(&out)
        );
        let (_, got, _) = image_digests(&store, "out:1");
        assert_eq!(got, want, "{tag} as {USER} vs root:\n{}", show(&out));
    }
}

const CI_DOCKERFILE: &str = r#"FROM BASE AS build
RUN mkdir -p /out/d && echo built > /out/artifact && echo x > /out/d/f && rm -rf /out/d && echo file > /out/d
FROM BASE
RUN mkdir -p /app/dir && echo a > /app/a && echo f > /app/dir/f && rm /etc/group
RUN rm -rf /app/dir && echo file > /app/dir && rm /app/a && echo x > /dev/null
COPY --from=build /out /app/out
"#;

/// The image kiln runs in: busybox, kiln's binary and the libraries it links.
fn ci_rootfs(dir: &Path) {
    kiln_testkit::busybox::rootfs(dir).unwrap();
    let kiln = kiln_path();
    std::fs::copy(&kiln, dir.join("kiln")).unwrap();
    let ldd = Command::new("ldd").arg(&kiln).output().unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = dir.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(lib, &to).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
}

/// The acceptance test of #18: kiln inside `docker run`, as root with Docker's
/// default profile (no mount namespace, store on the container's overlay root)
/// and as `--user 1000` with seccomp unconfined (a user namespace with one
/// mapped id, no fresh /proc), builds a multi-stage Dockerfile from the local
/// registry and pushes it; the pushed layers equal a normal root build's.
/// Starts its own dockerd (see `cli_load_docker`); containers use the host
/// network for the registry on 127.0.0.1.
#[test]
fn kiln_in_docker_builds_and_pushes_the_root_builds_layers_needs_root_and_dockerd() {
    kiln_testkit::root::require_root("docker acceptance test");
    let registry = kiln_testkit::registry::plain();
    let tmp = tempfile::tempdir().unwrap();
    let host_store = tmp.path().join("host-store");
    store_busybox(&host_store);
    let repo = kiln_testkit::registry::unique_repo("chroot-accept");
    let base = format!("{registry}/{repo}/busybox:1");
    kiln()
        .root(&host_store)
        .args(["push", "busybox:test", &base])
        .ok();

    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), CI_DOCKERFILE.replace("BASE", &base)).unwrap();
    let perms = |p: &Path, m| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    perms(&ctx, 0o755);
    perms(&ctx.join("Dockerfile"), 0o644);
    let want_ref = format!("{registry}/{repo}/app:host");
    kiln()
        .root(&host_store)
        .args(["build", "--progress=plain", "--push", "-t", &want_ref])
        .arg(&ctx)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .ok();
    let (_, want, _) = image_digests(&host_store, &want_ref);

    let rootfs = tmp.path().join("rootfs");
    ci_rootfs(&rootfs);
    let tar = tmp.path().join("rootfs.tar");
    let st = Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let ddir = tmp.path().join("docker");
    std::fs::create_dir(&ddir).unwrap();
    let dockerd = crate::cli_load_docker::Dockerd::start(&ddir);
    let imported = dockerd.docker(&["import", tar.to_str().unwrap(), "kiln-ci:test"]);
    assert!(imported.status.success(), "{}", show(&imported));

    let pull_store = tmp.path().join("pull-store");
    for (tag, extra) in [
        ("root", &[][..]),
        (
            "user",
            &[
                "--user",
                "1000:1000",
                "--security-opt",
                "seccomp=unconfined",
            ][..],
        ),
    ] {
        let target = format!("{registry}/{repo}/app:{tag}");
        let mut args = vec!["run", "--rm", "--network=host"];
        args.extend_from_slice(extra);
        let volume = format!("{}:/ctx:ro", ctx.display());
        let epoch = format!("SOURCE_DATE_EPOCH={EPOCH}");
        args.extend_from_slice(&["-v", &volume, "-e", &epoch, "-e", "HOME=/tmp"]);
        args.extend_from_slice(&["kiln-ci:test", "/kiln", "build", "--progress=plain"]);
        args.extend_from_slice(&["--push", "-t", &target, "/ctx"]);
        let out = dockerd.docker(&args);
        let printed = show(&out);
        assert!(out.status.success(), "kiln in docker as {tag}: {printed}");
        assert_eq!(
            printed.matches(MESSAGE).count(),
            1,
            "{tag}: said once:\n{printed}"
        );
        kiln().root(&pull_store).args(["pull", &target]).ok();
        let (_, got, _) = image_digests(&pull_store, &target);
        assert_eq!(
            got, want,
            "kiln in docker as {tag} vs root on the host:\n{printed}"
        );
    }
}

/// What a chroot step still does not get: a second chroot (CAP_SYS_CHROOT is
/// dropped, so the step cannot leave its root), and what it leaves running in
/// the background ends with it (no PID namespace: its process group is killed).
#[test]
fn a_chroot_step_cannot_chroot_and_leaves_no_process_behind() {
    kiln_testkit::root::require_root("chroot isolation test");
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    store_busybox(&store);
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    // A sleep nobody else runs: its argument names this test process.
    let nap = format!(
        "{}.{}",
        4000 + std::process::id() % 1000,
        std::process::id()
    );
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM busybox:test\nRUN (sleep {nap} &) ; echo started\nRUN chroot / true\n"),
    )
    .unwrap();
    let err = kiln()
        .root(&store)
        .args(["build", "--progress=plain", "--isolation=chroot"])
        .arg(&ctx)
        .fails();
    assert!(
        err.contains("RUN chroot / true (Dockerfile:3)") && err.contains("Operation not permitted"),
        "{err}"
    );
    let left = Command::new("pgrep")
        .args(["-f", &format!("sleep {nap}")])
        .output()
        .unwrap();
    assert!(
        !left.status.success(),
        "the step's background process outlived it: {}",
        show(&left)
    );
}
