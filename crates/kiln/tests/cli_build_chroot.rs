//! `kiln build --isolation=chroot` (no new namespaces, each RUN chrooted into a
//! copy of its layers, the layer found by a walk) gives the layers a namespaced
//! overlay build gives: same diff_ids with `SOURCE_DATE_EPOCH`, for a
//! Dockerfile with deletions (whiteouts, of the base's files and of a lower
//! layer's), a file over a directory and a directory over a file, an opaque
//! directory, metadata-only changes, set-uid bits, links, a FIFO and a stage
//! copied from another. Steps of a stage run on the tree the previous step
//! left (`snapshot::copied`): a directory whose mtime alone a step changed
//! (`/bin`, left out of that layer) has the base's mtime again in the later
//! layer that changes a file in it, and a hard link a step made is two files
//! for the next step. The same build as root without CAP_SYS_ADMIN (what
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
RUN rm /home/app/.profile && rm /opt/new && rm /data/link && cat /etc/hosts > /hosts-seen \
 && touch /bin/gone && rm /bin/gone
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
fn build_as_user(
    scratch: &Path,
    tag: &str,
    path: &str,
    extra: &[&str],
) -> (Output, std::path::PathBuf) {
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
        .arg(format!("PATH={path}"))
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

    // newuidmap and newgidmap that fail, as Debian's set-uid ones do in a
    // container (the map writer is not the namespace's owner and has no
    // CAP_SYS_ADMIN there): kiln maps the user's own id instead.
    let failing = scratch.dir.join("failing-uidmap");
    std::fs::create_dir(&failing).unwrap();
    for tool in ["newuidmap", "newgidmap"] {
        let p = failing.join(tool);
        std::fs::write(
            &p,
            "#!/bin/sh\necho \"$0: write to uid_map failed\" >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    chown_tree(&failing);
    let failing = failing.to_str().unwrap();
    // No newuidmap on /nonexistent: only the user's own id is mapped.
    let not_installed = "newuidmap/newgidmap (package uidmap) are not installed";
    let could_not = "newuidmap/newgidmap could not map the subordinate ids";
    for (tag, path, extra, said) in [
        ("auto", "/nonexistent", &[][..], not_installed),
        (
            "chroot",
            "/nonexistent",
            &["--isolation=chroot"][..],
            not_installed,
        ),
        ("failing", failing, &[][..], could_not),
    ] {
        let (out, store) = build_as_user(&scratch.dir, tag, path, extra);
        assert!(
            show(&out).contains(&format!("only uid/gid 0 is mapped ({said}")),
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

/// The Debian image kiln runs in (what a CI job's image is): the
/// `node:20-bookworm-slim` base of `scripts/make-base-images` (bookworm
/// minbase) with a user `ci` (1000) that has a subordinate id range, and the
/// host's `newuidmap`/`newgidmap` (Debian 12's; their libraries are in
/// minbase) with file capabilities (cap_setuid, cap_setgid), as rootless
/// container images (podman's) have them: set-uid root, as Debian installs
/// them, fails in a container, where the map writer needs CAP_SYS_ADMIN in
/// the new namespace (it is not its owner) and Docker's bounding set has no
/// CAP_SYS_ADMIN. kiln itself is not in it: the test's binary is mounted
/// read-only at `/usr/local/bin/kiln`.
const CI_IMAGE_DOCKERFILE: &str = r#"FROM node:20-bookworm-slim
COPY --chmod=0755 newuidmap newgidmap setcap /usr/bin/
RUN setcap cap_setuid=ep /usr/bin/newuidmap && setcap cap_setgid=ep /usr/bin/newgidmap \
 && rm /usr/bin/setcap \
 && echo 'ci:x:1000:1000::/tmp:/bin/sh' >> /etc/passwd && echo 'ci:x:1000:' >> /etc/group \
 && echo 'ci:100000:65536' > /etc/subuid && echo 'ci:100000:65536' > /etc/subgid
"#;

/// The base of examples/api the builds pull from the registry: the node image
/// with npm's debug log off (`npm install` writes its log under a name with
/// the time of day into the layer; no two builds would have that layer's
/// diff_id otherwise, in or out of a container).
const API_BASE_DOCKERFILE: &str =
    "FROM node:20-bookworm-slim\nENV npm_config_logs_max=0 npm_config_update_notifier=false\n";

/// examples/api (Dockerfile, package.json, tsconfig.json, src/) in `to`, its
/// base pulled from `base`; everything world-readable (kiln as uid 1000 in
/// the container reads it).
fn api_context(to: &Path, base: &str) {
    let from = kiln_testkit::repo_root().join("examples/api");
    let st = Command::new("cp")
        .arg("-r")
        .arg(&from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
    let dockerfile = std::fs::read_to_string(from.join("Dockerfile")).unwrap();
    let first = "FROM node:20-bookworm-slim as base";
    assert!(dockerfile.starts_with(first), "{dockerfile}");
    std::fs::write(
        to.join("Dockerfile"),
        dockerfile.replacen(first, &format!("FROM {base} as base"), 1),
    )
    .unwrap();
    let st = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// `kiln run` of the API image `image` (in `store`) answers on a free port as
/// uid 1001 (USER nodejs), as scripts/demo checks.
fn api_answers_as_uid_1001(store: &Path, image: &str) {
    let port = kiln_testkit::http::free_port();
    let mut server = kiln()
        .root(store)
        .args(["run", "--rm", "-e", &format!("PORT={port}"), image])
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut body = None;
    while std::time::Instant::now() < deadline && body.is_none() {
        body = kiln_testkit::http::get(port, "/").filter(|r| !r.is_empty());
        if body.is_none() {
            if let Some(st) = server.try_wait().unwrap() {
                let out = server.wait_with_output().unwrap();
                panic!("kiln run {image} ended ({st}): {}", show(&out));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let out = server.wait_with_output().unwrap();
    let body = body.unwrap_or_else(|| panic!("{image} did not answer: {}", show(&out)));
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let json = body.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["uid"], 1001, "{v}");
    assert_eq!(v["user"], "nodejs", "{v}");
}

/// The acceptance test of #18: kiln inside `docker run` of a Debian image, as
/// root with Docker's default profile (no mount namespace, store on the
/// container's overlay root) and as `--user 1000` with seccomp unconfined (a
/// user namespace, no fresh /proc), builds from the local registry and pushes:
/// a multi-stage busybox Dockerfile with deletions (as 1000 without
/// `newuidmap`: one mapped id), and examples/api (as 1000 with the image's
/// `newuidmap`: `adduser` chowns to 1001), pushed to the registry with auth
/// with the credentials of a mounted `config.json` (`DOCKER_CONFIG`, as
/// Kaniko's `/kaniko/.docker`). The pushed layers equal a normal root build's
/// on the host, and the API image runs (uid 1001 answers over HTTP).
/// Starts its own dockerd (see `cli_load_docker`); containers use the host
/// network for the registries on 127.0.0.1.
#[test]
fn kiln_in_docker_builds_and_pushes_the_root_builds_layers_needs_root_and_dockerd() {
    kiln_testkit::root::require_root("docker acceptance test");
    let registry = kiln_testkit::registry::plain();
    let auth_registry = kiln_testkit::registry::auth();
    let tmp = tempfile::tempdir().unwrap();
    let host_store = tmp.path().join("host-store");
    store_busybox(&host_store);
    crate::util::make_base_images(&host_store, Some("node"));
    let repo = kiln_testkit::registry::unique_repo("chroot-accept");

    // Credentials for the auth registry in a config.json of their own.
    let docker_config = tmp.path().join("docker-config");
    std::fs::create_dir(&docker_config).unwrap();
    let (user, password) = kiln_testkit::registry::auth_user();
    kiln()
        .root(&host_store)
        .args(["login", "-u", &user, "--password-stdin", &auth_registry])
        .env("DOCKER_CONFIG", &docker_config)
        .stdin(password)
        .ok();
    let perms = |p: &Path, m| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(m)).unwrap()
    };
    perms(&docker_config, 0o755);
    perms(&docker_config.join("config.json"), 0o644);
    let with_auth = |k: &mut kiln_testkit::Kiln| {
        k.env("DOCKER_CONFIG", &docker_config);
    };

    // The bases, in the registries.
    let busybox = format!("{registry}/{repo}/busybox:1");
    kiln()
        .root(&host_store)
        .args(["push", "busybox:test", &busybox])
        .ok();
    let api_base = format!("{auth_registry}/{repo}/node:20");
    let base_ctx = tmp.path().join("api-base");
    std::fs::create_dir(&base_ctx).unwrap();
    std::fs::write(base_ctx.join("Dockerfile"), API_BASE_DOCKERFILE).unwrap();
    let mut k = kiln();
    with_auth(k.root(&host_store));
    k.args(["build", "--progress=plain", "--push", "-t", &api_base])
        .arg(&base_ctx)
        .ok();

    // The two contexts, and their root builds on the host.
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        CI_DOCKERFILE.replace("BASE", &busybox),
    )
    .unwrap();
    perms(&ctx, 0o755);
    perms(&ctx.join("Dockerfile"), 0o644);
    let api_ctx = tmp.path().join("api");
    api_context(&api_ctx, &api_base);
    let mut want = Vec::new();
    for (c, name) in [(&ctx, "app"), (&api_ctx, "api")] {
        let reference = format!("{registry}/{repo}/{name}:host");
        let mut k = kiln();
        with_auth(k.root(&host_store));
        k.args(["build", "--progress=plain", "-t", &reference])
            .arg(c)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .ok();
        want.push(image_digests(&host_store, &reference).1);
    }

    // The Debian image the jobs run in, handed to a private dockerd.
    let ci_ctx = tmp.path().join("ci-image");
    std::fs::create_dir(&ci_ctx).unwrap();
    std::fs::write(ci_ctx.join("Dockerfile"), CI_IMAGE_DOCKERFILE).unwrap();
    for tool in [
        "/usr/bin/newuidmap",
        "/usr/bin/newgidmap",
        "/usr/sbin/setcap",
    ] {
        let tool = Path::new(tool);
        std::fs::copy(tool, ci_ctx.join(tool.file_name().unwrap())).unwrap();
    }
    kiln()
        .root(&host_store)
        .args(["build", "--progress=plain", "-t", "kiln-ci:debian"])
        .arg(&ci_ctx)
        .ok();
    let ddir = tmp.path().join("docker");
    std::fs::create_dir(&ddir).unwrap();
    let dockerd = crate::cli_load_docker::Dockerd::start(&ddir);
    let loaded = kiln()
        .root(&host_store)
        .args(["load-into", "docker", "kiln-ci:debian"])
        .env("DOCKER_HOST", dockerd.host())
        .output();
    assert!(loaded.status.success(), "{}", show(&loaded));

    let pull_store = tmp.path().join("pull-store");
    let kiln_mount = format!("{}:/usr/local/bin/kiln:ro", kiln_path().display());
    let config_mount = format!("{}:/kiln/.docker:ro", docker_config.display());
    let epoch = format!("SOURCE_DATE_EPOCH={EPOCH}");
    let as_user: &[&str] = &[
        "--user",
        "1000:1000",
        "--security-opt",
        "seccomp=unconfined",
    ];
    // What is built: (name, context, pushed to).
    let builds = [("app", &ctx, &registry), ("api", &api_ctx, &auth_registry)];
    // (who, extra docker run arguments, index in builds, one mapped id)
    let jobs: [(&str, &[&str], usize, bool); 4] = [
        ("root", &[], 0, false),
        // No newuidmap on kiln's PATH: only uid 1000 is mapped (as 0).
        ("user", as_user, 0, true),
        ("root", &[], 1, false),
        ("user", as_user, 1, false),
    ];
    for (who, extra, which, single_id) in jobs {
        let (name, context, to) = builds[which];
        let want = &want[which];
        let target = format!("{to}/{repo}/{name}:{who}");
        let volume = format!("{}:/ctx:ro", context.display());
        let mut args = vec!["run", "--rm", "--network=host"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-v", &kiln_mount, "-v", &volume, "-v", &config_mount]);
        args.extend_from_slice(&["-e", &epoch, "-e", "HOME=/tmp"]);
        args.extend_from_slice(&["-e", "DOCKER_CONFIG=/kiln/.docker"]);
        if single_id {
            args.extend_from_slice(&["-e", "PATH=/usr/local/bin"]);
        }
        args.extend_from_slice(&["kiln-ci:debian", "kiln", "build", "--progress=plain"]);
        args.extend_from_slice(&["--push", "-t", &target, "/ctx"]);
        let out = dockerd.docker(&args);
        let printed = show(&out);
        assert!(
            out.status.success(),
            "kiln in docker as {who} ({name}): {printed}"
        );
        assert_eq!(
            printed.matches(MESSAGE).count(),
            1,
            "{who} ({name}): said once:\n{printed}"
        );
        if who == "user" {
            assert_eq!(
                printed.contains("only uid/gid 0 is mapped"),
                single_id,
                "{who} ({name}): {printed}"
            );
        }
        let mut k = kiln();
        with_auth(k.root(&pull_store));
        k.args(["pull", &target]).ok();
        let (_, got, _) = image_digests(&pull_store, &target);
        assert_eq!(
            &got, want,
            "kiln in docker as {who} ({name}) vs root on the host:\n{printed}"
        );
        if name == "api" {
            api_answers_as_uid_1001(&pull_store, &target);
        }
    }

    // `--user 1000` with Docker's default profile: no user namespace at all,
    // and no CAP_SYS_CHROOT. One message says so and what to change.
    let volume = format!("{}:/ctx:ro", ctx.display());
    let out = dockerd.docker(&[
        "run",
        "--rm",
        "--network=host",
        "--user",
        "1000:1000",
        "-v",
        &kiln_mount,
        "-v",
        &volume,
        "-e",
        "HOME=/tmp",
        "kiln-ci:debian",
        "kiln",
        "build",
        "--progress=plain",
        "/ctx",
    ]);
    let printed = show(&out);
    assert!(!out.status.success(), "{printed}");
    // The help is wrapped: compare with single spaces.
    let words = printed.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("rootless: cannot enter a user namespace")
            && words.contains("no user namespace may be made here")
            && words.contains("Run the container as root"),
        "{printed}"
    );
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

/// kiln's own image (`image/Dockerfile`, made by `scripts/make-kiln-image`:
/// `FROM scratch`, a static kiln, the CA bundle), as a CI user runs it: loaded
/// into a private dockerd, it answers `--version`, and as root with Docker's
/// default profile it builds a Dockerfile with a RUN step from the local
/// registry (named `localhost`, so the static binary resolves it through
/// `/etc/hosts`) and pushes it; the pushed image has what the RUN wrote.
#[test]
fn kiln_image_answers_version_and_builds_in_docker_needs_root_and_dockerd() {
    kiln_testkit::root::require_root("kiln image test");
    let registry = kiln_testkit::registry::plain();
    let port = registry.rsplit_once(':').unwrap().1;
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let made = Command::new(kiln_testkit::repo_root().join("scripts/make-kiln-image"))
        .arg("--root")
        .arg(&store)
        .args(["-t", "kiln:test"])
        .output()
        .unwrap();
    assert!(made.status.success(), "make-kiln-image: {}", show(&made));
    let inspect = kiln().root(&store).args(["inspect", "kiln:test"]).stdout();
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(
        v[0]["Config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/kiln"])
    );

    store_busybox(&store);
    let repo = kiln_testkit::registry::unique_repo("kiln-image");
    let base = format!("localhost:{port}/{repo}/busybox:1");
    kiln()
        .root(&store)
        .args(["push", "busybox:test", &base])
        .ok();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base}\nRUN echo built-in-the-kiln-image > /built && rm /etc/group\nCOPY f /f\n"
        ),
    )
    .unwrap();
    std::fs::write(ctx.join("f"), "from the context\n").unwrap();

    let ddir = tmp.path().join("docker");
    std::fs::create_dir(&ddir).unwrap();
    let dockerd = crate::cli_load_docker::Dockerd::start(&ddir);
    let loaded = kiln()
        .root(&store)
        .args(["load-into", "docker", "kiln:test"])
        .env("DOCKER_HOST", dockerd.host())
        .output();
    assert!(loaded.status.success(), "{}", show(&loaded));

    let out = dockerd.docker(&["run", "--rm", "kiln:test", "--version"]);
    assert!(out.status.success(), "{}", show(&out));
    let version = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        version.trim(),
        format!("kiln {}", env!("CARGO_PKG_VERSION")),
        "{}",
        show(&out)
    );

    let target = format!("localhost:{port}/{repo}/small:1");
    let volume = format!("{}:/workspace:ro", ctx.display());
    let out = dockerd.docker(&[
        "run",
        "--rm",
        "--network=host",
        "-v",
        &volume,
        "kiln:test",
        "build",
        "--progress=plain",
        "--push",
        "-t",
        &target,
        ".",
    ]);
    let printed = show(&out);
    assert!(out.status.success(), "{printed}");
    assert_eq!(printed.matches(MESSAGE).count(), 1, "said once:\n{printed}");
    let pulled = tmp.path().join("pulled");
    kiln().root(&pulled).args(["pull", &target]).ok();
    let cat = kiln()
        .root(&pulled)
        .args(["run", "--rm", &target, "sh", "-c", "cat /built /f; ls /etc"])
        .stdout();
    assert!(
        cat.starts_with("built-in-the-kiln-image\nfrom the context\n") && !cat.contains("group"),
        "{cat}"
    );
}
