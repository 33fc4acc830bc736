//! Symlinks that point out of the build — in the context, in a stage, in an
//! image — are resolved inside their own root, never on the host (issue #10).
//! Every case runs the kiln binary as root and as the unprivileged user
//! `kiln-rootless`, then checks the host side: a canary file outside the
//! build is read into nothing kiln wrote, nothing is created in (or removed
//! from) host directories outside the build. Where a build succeeds, its
//! result is BuildKit's: the symlink followed inside the context or stage root
//! (each case puts a decoy at the symlink's target inside that root).
//!
//! Needs root (CI runs as root): the rootless cases switch to the user, made
//! with a subordinate id range by scripts/setup-test-env, with `runuser`.

use kiln_oci::image::{format_rfc3339, write_image, ContainerConfig, History};
use kiln_oci::layer::{write_layer, DiffKind, LayerOptions};
use kiln_oci::{BlobRef, ImageConfig, ManifestFormat, Store};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const USER: &str = "kiln-rootless";
/// Every kiln command is stopped after this long (a hang is a failure).
const TIMEOUT_SECS: &str = "120";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Root,
    Rootless,
}

/// One test's world: a scratch directory holding the store, the contexts and
/// outputs, and `host/` — what stands for the rest of the host.
///
/// `host/` holds `canary` (a secret, readable by the rootless user too, so the
/// user could read it were kiln to follow a symlink on the host), `passwd`, a
/// directory `dir/` with one file `host-only` (writable by everyone, so any
/// kiln could write there), and an empty directory `empty/q/` (removable by
/// everyone).
struct World {
    who: Who,
    dir: PathBuf,
    host: PathBuf,
    canary: String,
    store: PathBuf,
    home: PathBuf,
    kiln: PathBuf,
    n: Cell<usize>,
    /// Every failed expectation, reported together at the end.
    fails: RefCell<Vec<String>>,
    /// Files already reported to hold the canary.
    leaked: RefCell<BTreeSet<PathBuf>>,
}

/// What a test context holds.
enum E<'a> {
    File(&'a [u8]),
    Link(String),
    Dir,
}

impl World {
    fn new(tag: &str, who: Who) -> World {
        // SAFETY: geteuid has no preconditions.
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test needs root (CI runs as root)"
        );
        let dir = std::env::temp_dir().join(format!(
            "kiln-escape-{tag}-{}-{}",
            match who {
                Who::Root => "root",
                Who::Rootless => "rootless",
            },
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        chmod(&dir, 0o755);
        let host = dir.join("host");
        fs::create_dir_all(host.join("dir")).unwrap();
        fs::create_dir_all(host.join("empty/q")).unwrap();
        let canary = format!(
            "kiln-canary-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        fs::write(host.join("canary"), format!("{canary}\n")).unwrap();
        fs::write(
            host.join("passwd"),
            format!("root:x:0:0:{canary}:/leaked-home:/bin/sh\n"),
        )
        .unwrap();
        fs::write(host.join("dir/host-only"), "host\n").unwrap();
        for (p, mode) in [
            ("", 0o755),
            ("canary", 0o644),
            ("passwd", 0o644),
            ("dir", 0o777),
            ("dir/host-only", 0o666),
            ("empty", 0o777),
            ("empty/q", 0o777),
        ] {
            chmod(&host.join(p), mode);
        }
        let home = dir.join("home");
        let store = match who {
            Who::Root => dir.join("store"),
            Who::Rootless => home.join("data/kiln"),
        };
        fs::create_dir_all(&home).unwrap();
        make_busybox(&store);
        let kiln = match who {
            Who::Root => PathBuf::from(env!("CARGO_BIN_EXE_kiln")),
            Who::Rootless => {
                let known = Command::new("id")
                    .arg("-u")
                    .arg(USER)
                    .output()
                    .is_ok_and(|o| o.status.success());
                assert!(
                    known,
                    "user {USER} does not exist: run scripts/setup-test-env as root first"
                );
                chown_user(&home);
                kiln_for_user(&dir)
            }
        };
        World {
            who,
            dir,
            host,
            canary,
            store,
            home,
            kiln,
            n: Cell::new(0),
            fails: RefCell::new(Vec::new()),
            leaked: RefCell::new(BTreeSet::new()),
        }
    }

    /// `host/<rel>` as an absolute path.
    fn h(&self, rel: &str) -> String {
        self.host.join(rel).display().to_string()
    }

    /// `host/<rel>` relative to `/`: where a decoy of it goes inside a root.
    fn inside(&self, rel: &str) -> String {
        self.h(rel).trim_start_matches('/').to_string()
    }

    fn next(&self, what: &str) -> PathBuf {
        let n = self.n.get() + 1;
        self.n.set(n);
        self.home.join(format!("{what}-{n}"))
    }

    /// A build context with a Dockerfile and `entries`.
    fn context(&self, dockerfile: &str, entries: &[(String, E)]) -> PathBuf {
        let ctx = self.next("ctx");
        fs::create_dir_all(&ctx).unwrap();
        fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        for (rel, e) in entries {
            let p = ctx.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            match e {
                E::File(s) => fs::write(&p, s).unwrap(),
                E::Link(t) => symlink(t, &p).unwrap(),
                E::Dir => fs::create_dir_all(&p).unwrap(),
            }
        }
        if self.who == Who::Rootless {
            chown_user(&ctx);
        }
        ctx
    }

    /// `kiln ARGS` as root (own store) or as the user (its default store),
    /// stopped by `timeout` if it hangs.
    fn kiln(&self, args: &[&str]) -> Output {
        let mut cmd = match self.who {
            Who::Root => {
                let mut c = Command::new("timeout");
                c.arg(TIMEOUT_SECS)
                    .arg(&self.kiln)
                    .arg("--root")
                    .arg(&self.store)
                    .env_remove("KILN_ROOT");
                c
            }
            Who::Rootless => {
                let mut c = Command::new("runuser");
                c.args(["-u", USER, "--", "timeout", TIMEOUT_SECS, "env", "-i"])
                    .arg(format!("HOME={}", self.home.display()))
                    .arg(format!(
                        "XDG_DATA_HOME={}",
                        self.home.join("data").display()
                    ))
                    .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
                    .arg(&self.kiln);
                c
            }
        };
        cmd.args(args).current_dir("/");
        cmd.output().unwrap()
    }

    fn build(&self, ctx: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["build", "--progress=plain"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        self.kiln(&args)
    }

    fn fail(&self, msg: String) {
        self.fails.borrow_mut().push(msg);
    }

    fn expect_file(&self, path: &Path, want: &str) {
        match fs::read_to_string(path) {
            Ok(got) if got == want => {}
            Ok(got) => self.fail(format!("{}: {got:?}, want {want:?}", path.display())),
            Err(e) => self.fail(format!("{}: {e}, want {want:?}", path.display())),
        }
    }

    /// Builds `ctx` (`case` names it in failures) and exports the image's
    /// files (`-o type=local`); None (and a failure) when the build fails.
    fn export(&self, case: &str, ctx: &Path, extra: &[&str]) -> Option<PathBuf> {
        let out = self.next("out");
        let spec = format!("type=local,dest={}", out.display());
        let mut args = extra.to_vec();
        args.extend_from_slice(&["-o", &spec]);
        let o = self.build(ctx, &args);
        if o.status.success() {
            Some(out)
        } else {
            self.fail(format!("{case}: the build failed: {}", tail(&o)));
            None
        }
    }

    fn expect_build_error(&self, case: &str, ctx: &Path, why: &str) {
        let o = self.build(ctx, &[]);
        let text = show(&o);
        if o.status.success() {
            self.fail(format!("{case}: the build should fail with {why:?}"));
        } else if o.status.code() == Some(124) {
            self.fail(format!("{case}: kiln hung and was stopped: {}", tail(&o)));
        } else if !text.contains(why) {
            self.fail(format!("{case}: want {why:?} in: {}", tail(&o)));
        }
    }

    /// The host side after `case`: the canary was read into nothing kiln
    /// wrote (store, outputs, contexts), `host/dir` holds only what it held,
    /// `host/empty/q` still exists, the canary is unchanged. Puts `host/`
    /// back as it was, so the next case is judged on its own.
    fn check_host(&self, case: &str) {
        let dir = self.host.join("dir");
        for name in names(&dir) {
            if name != "host-only" {
                self.fail(format!("{case}: created {name} in a host directory"));
                let p = dir.join(&name);
                let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
            }
        }
        let q = self.host.join("empty/q");
        if !fs::symlink_metadata(&q).is_ok_and(|m| m.is_dir()) {
            self.fail(format!(
                "{case}: removed the host directory {}",
                q.display()
            ));
            fs::create_dir_all(&q).unwrap();
            chmod(&q, 0o777);
        }
        if fs::read_to_string(self.host.join("canary")).ok() != Some(format!("{}\n", self.canary)) {
            self.fail(format!("{case}: changed the host's canary file"));
        }
        let mut found = Vec::new();
        find_bytes(&self.dir, &self.host, self.canary.as_bytes(), &mut found);
        let mut leaked = self.leaked.borrow_mut();
        let new: Vec<&PathBuf> = found.iter().filter(|p| !leaked.contains(*p)).collect();
        if !new.is_empty() {
            self.fail(format!("{case}: the host's canary was read into {new:?}"));
        }
        leaked.extend(found);
    }

    /// Fails the test with every failed expectation.
    fn finish(&self) {
        let fails = self.fails.borrow();
        assert!(
            fails.is_empty(),
            "{:?}: {} failed expectation(s):\n- {}",
            self.who,
            fails.len(),
            fails.join("\n- ")
        );
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_user(path: &Path) {
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{USER}:"))
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "chown -R {USER} {}", path.display());
}

/// The kiln binary at a path the user can execute.
fn kiln_for_user(scratch: &Path) -> PathBuf {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_kiln"));
    let usable = Command::new("runuser")
        .args(["-u", USER, "--", "test", "-x"])
        .arg(&built)
        .status()
        .is_ok_and(|s| s.success());
    if usable {
        return built;
    }
    let copy = scratch.join("kiln");
    fs::copy(&built, &copy).unwrap();
    chmod(&copy, 0o755);
    copy
}

/// The last lines of a command's output.
fn tail(out: &Output) -> String {
    let text = show(out);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}

fn show(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Regular files under `dir` (not following symlinks, skipping `skip`) that
/// contain `needle`.
fn find_bytes(dir: &Path, skip: &Path, needle: &[u8], found: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p == skip {
            continue;
        }
        let Ok(md) = fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            find_bytes(&p, skip, needle, found);
        } else if md.is_file() {
            if let Ok(data) = fs::read(&p) {
                if data.windows(needle.len()).any(|w| w == needle) {
                    found.push(p);
                }
            }
        }
    }
}

/// Stores a busybox image (static busybox, root, nobody and app) as
/// `busybox:test` in the store at `root`.
fn make_busybox(root: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for d in ["bin", "etc", "proc", "dev", "sys", "tmp", "root"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox-static is installed");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = symlink("busybox", dir.join("bin").join(applet));
        }
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\nnobody:x:65534:\napp:x:1000:\n",
    )
    .unwrap();
    chmod(&dir.join("tmp"), 0o1777);
    let store = Store::open(root).unwrap();
    let mut w = store.blob_writer().unwrap();
    let desc = write_layer(
        dir,
        DiffKind::Plain,
        &LayerOptions {
            source_date_epoch: Some(0),
            ..LayerOptions::default()
        },
        &mut w,
    )
    .unwrap();
    let (digest, size) = w.commit().unwrap();
    let mut config = ImageConfig::new("linux", kiln_oci::image::host_architecture());
    config.created = Some(format_rfc3339(0));
    config.config = Some(ContainerConfig {
        env: vec!["PATH=/bin".into()],
        cmd: Some(vec!["sh".into()]),
        ..ContainerConfig::default()
    });
    config.rootfs.diff_ids.push(desc.diff_id);
    config.history.push(History {
        created_by: Some("busybox made by the test".into()),
        ..History::default()
    });
    let layer = BlobRef {
        media_type: desc.media_type,
        digest,
        size,
        annotations: BTreeMap::new(),
    };
    let m = write_image(&store, &config, &[layer], ManifestFormat::Oci).unwrap();
    store.tag(&"busybox:test".parse().unwrap(), m).unwrap();
}

/// The sorted names in a directory.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// The cases.

/// `RUN --mount=type=bind,source=…` of context symlinks pointing out of the
/// context: resolved inside the context (BuildKit mounts the context's own
/// file), "not found" when the context has nothing there; `rw` writes go
/// nowhere.
fn bind_sources_in_the_context(w: &World) {
    // The issue's first two Dockerfiles: nothing at the targets in the context.
    let case = "context symlink to a host file (issue #10)";
    let ctx = w.context(
        "FROM busybox:test\nRUN --mount=type=bind,source=s,target=/m cp /m /leak\n",
        &[("s".into(), E::Link(w.h("canary")))],
    );
    w.expect_build_error(case, &ctx, "not found");
    w.check_host(case);

    let case = "rw context symlink to a host directory (issue #10)";
    let ctx = w.context(
        "FROM busybox:test\nRUN --mount=type=bind,source=d,target=/m,rw touch /m/pwned\n",
        &[("d".into(), E::Link(w.h("dir")))],
    );
    w.expect_build_error(case, &ctx, "not found");
    w.check_host(case);

    // Absolute, climbing relative and intermediate symlinks whose targets
    // exist in the context too (decoys): the decoys are what is mounted.
    let case = "context symlinks with decoys inside the context";
    let ctx = w.context(
        "FROM busybox:test\n\
         RUN --mount=type=bind,source=s,target=/m cp /m /leak\n\
         RUN --mount=type=bind,source=up,target=/m cp /m /leak-up\n\
         RUN --mount=type=bind,source=via/canary,target=/m cp /m /leak-via\n\
         RUN --mount=type=bind,source=d,target=/m ls /m > /ro-listing\n\
         RUN --mount=type=bind,source=d,target=/m,rw touch /m/pwned && ls /m > /rw-listing\n",
        &[
            ("s".into(), E::Link(w.h("canary"))),
            ("up".into(), E::Link("../../host/canary".into())),
            ("via".into(), E::Link(w.h(""))),
            ("d".into(), E::Link(w.h("dir"))),
            (format!("{}/canary", w.inside("")), E::File(b"decoy\n")),
            ("host/canary".into(), E::File(b"decoy-up\n")),
            (format!("{}/dir", w.inside("")), E::Dir),
        ],
    );
    if let Some(out) = w.export(case, &ctx, &[]) {
        w.expect_file(&out.join("leak"), "decoy\n");
        w.expect_file(&out.join("leak-up"), "decoy-up\n");
        w.expect_file(&out.join("leak-via"), "decoy\n");
        w.expect_file(&out.join("ro-listing"), "");
        w.expect_file(&out.join("rw-listing"), "pwned\n");
    }
    let decoy_dir = ctx.join(w.inside("dir"));
    if !names(&decoy_dir).is_empty() {
        w.fail(format!("{case}: an rw bind mount wrote to the context"));
    }
    w.check_host(case);
}

/// `RUN --mount=type=bind,from=STAGE,source=…` of symlinks a stage made:
/// resolved inside the stage's filesystem.
fn bind_sources_in_a_stage(w: &World) {
    // The issue's third Dockerfile: the stage has nothing at the target.
    let case = "rw stage symlink to a host directory (issue #10)";
    let ctx = w.context(
        &format!(
            "FROM busybox:test AS st\n\
             RUN ln -s {dir} /evildir\n\
             FROM busybox:test\n\
             RUN --mount=type=bind,from=st,source=evildir,target=/m,rw touch /m/x\n",
            dir = w.h("dir"),
        ),
        &[],
    );
    w.expect_build_error(case, &ctx, "not found");
    w.check_host(case);

    let case = "stage symlinks with decoys inside the stage";
    let ctx = w.context(
        &format!(
            "FROM busybox:test AS st\n\
             RUN mkdir -p {dir} && echo inside > {dir}/f && echo decoy > {canary} \
              && ln -s {dir} /evildir && ln -s {canary} /evilfile \
              && ln -s {up}{canary} /relfile\n\
             FROM busybox:test\n\
             RUN --mount=type=bind,from=st,source=evilfile,target=/m cp /m /leak\n\
             RUN --mount=type=bind,from=st,source=relfile,target=/m cp /m /leak-rel\n\
             RUN --mount=type=bind,from=st,source=evildir,target=/m,rw touch /m/x; ls /m > /seen\n",
            dir = w.h("dir"),
            canary = w.h("canary"),
            up = "../".repeat(40).trim_end_matches('/'),
        ),
        &[],
    );
    if let Some(out) = w.export(case, &ctx, &[]) {
        w.expect_file(&out.join("leak"), "decoy\n");
        w.expect_file(&out.join("leak-rel"), "decoy\n");
        w.expect_file(&out.join("seen"), "f\nx\n");
    }
    w.check_host(case);
}

/// Mount targets through the image's symlinks (tmpfs, bind, cache, secret,
/// /etc/hosts, /etc/resolv.conf) land inside the rootfs, where runc's
/// `securejoin` puts them; the mount points made for the step (also where a
/// symlink dangles) are removed inside it afterwards, and a step that turns
/// their parents into symlinks to the host cannot make that cleanup remove a
/// host directory.
fn mount_targets_and_their_cleanup(w: &World) {
    let secret = w.next("secret");
    fs::write(&secret, "s3cret").unwrap();
    if w.who == Who::Rootless {
        chown_user(&secret);
    }
    let secret_arg = format!("id=s,src={}", secret.display());
    let dir = w.h("dir");
    // /etc/hosts cannot be replaced in a RUN (it is a mount point there):
    // COPY puts the symlink in.
    let case = "mount targets through symlinks";
    let ctx = w.context(
        &format!(
            "FROM busybox:test\n\
             RUN mkdir -p {dir} && touch {dir}/hosts && ln -s {dir} /t\n\
             COPY etc/ /etc/\n\
             RUN --mount=type=tmpfs,target=/t/tmpfs --mount=type=bind,source=f,target=/t/bind \
              --mount=type=cache,target=/t/cache --mount=type=secret,id=s,target=/t/secret \
              ls {dir} > /during && cat /etc/hosts > /hosts-seen\n"
        ),
        &[
            ("f".into(), E::File(b"f\n")),
            ("etc/hosts".into(), E::Link(w.h("dir/hosts"))),
        ],
    );
    if let Some(out) = w.export(case, &ctx, &["--secret", &secret_arg]) {
        w.expect_file(&out.join("during"), "bind\ncache\nhosts\nsecret\ntmpfs\n");
        w.expect_file(
            &out.join("hosts-seen"),
            &String::from_utf8(kiln_sandbox::default_hosts("buildkitsandbox")).unwrap(),
        );
        // The mount points are gone again, inside the image too.
        let inside = out.join(w.inside("dir"));
        if names(&inside) != ["hosts"] {
            w.fail(format!("{case}: left {:?} in the image", names(&inside)));
        }
    }
    w.check_host(case);

    let case = "mount targets through dangling symlinks";
    let ctx = w.context(
        &format!(
            "FROM busybox:test\n\
             RUN mkdir -p {dir} && ln -s {dir}/missing /d\n\
             COPY etc/ /etc/\n\
             RUN --mount=type=tmpfs,target=/d/sub ls {dir} {dir}/missing > /during \
              && cat /etc/resolv.conf > /resolv-seen\n"
        ),
        &[("etc/resolv.conf".into(), E::Link(w.h("dir/resolv.conf")))],
    );
    if let Some(out) = w.export(case, &ctx, &[]) {
        w.expect_file(
            &out.join("during"),
            &format!("{dir}:\nmissing\nresolv.conf\n\n{dir}/missing:\nsub\n"),
        );
        w.expect_file(
            &out.join("resolv-seen"),
            &fs::read_to_string("/etc/resolv.conf").unwrap(),
        );
        let inside = out.join(w.inside("dir"));
        if !names(&inside).is_empty() {
            w.fail(format!("{case}: left {:?} in the image", names(&inside)));
        }
    }
    w.check_host(case);

    // `/r/q/new` is made for the tmpfs inside `/r/q` (r: a symlink to the
    // image's own copy of host/empty); the step then points `/r` at the
    // host. Cleaning up must not follow it there.
    let case = "mount point cleanup after the step replaced a parent by a symlink";
    let ctx = w.context(
        &format!(
            "FROM busybox:test AS base\n\
             RUN mkdir -p {empty}/q && ln -s {empty} /r\n\
             FROM base\n\
             RUN --mount=type=tmpfs,target=/r/q/new rm /r && ln -s {empty} /r\n",
            empty = w.h("empty"),
        ),
        &[],
    );
    if let Some(out) = w.export(case, &ctx, &[]) {
        if !fs::symlink_metadata(out.join("r")).is_ok_and(|m| m.is_symlink()) {
            w.fail(format!("{case}: /r is not a symlink in the image"));
        }
    }
    w.check_host(case);
}

/// COPY/ADD sources and destinations, WORKDIR, and `-o type=local` over a
/// previous export: symlinks resolved inside the context, the stage or the
/// image, never on the host.
fn copy_workdir_and_local_export(w: &World) {
    let dir = w.h("dir");
    let canary = w.h("canary");
    // COPY of context symlinks pointing out: "not found", as in BuildKit.
    let case = "COPY of a context symlink to a host file";
    let ctx = w.context(
        "FROM busybox:test\nCOPY s /x\n",
        &[("s".into(), E::Link(canary.clone()))],
    );
    w.expect_build_error(case, &ctx, "not found");
    w.check_host(case);
    let case = "COPY of a context symlink to a host directory";
    let ctx = w.context(
        "FROM busybox:test\nCOPY d/ /x/\n",
        &[("d".into(), E::Link(dir.clone()))],
    );
    w.expect_build_error(case, &ctx, "not found");
    w.check_host(case);

    // Destinations and WORKDIR through the image's symlinks to host paths,
    // COPY --from a stage's symlink, ADD of an archive through one.
    let case = "COPY/ADD/WORKDIR through symlinks";
    let tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "from-tar", &b"tar\n"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let ctx = w.context(
        &format!(
            "FROM busybox:test AS st\n\
             RUN mkdir -p {dir} && echo decoy > {canary} && ln -s {canary} /evilfile\n\
             FROM busybox:test\n\
             RUN mkdir -p {dir} && ln -s {dir} /w && ln -s {dir} /dst\n\
             WORKDIR /w/sub\n\
             COPY f /dst/copied\n\
             COPY f rel-copied\n\
             COPY --from=st /evilfile /from-stage\n\
             ADD a.tar /dst/\n\
             USER app\n\
             WORKDIR /w/as-app\n"
        ),
        &[
            ("f".into(), E::File(b"f\n")),
            ("a.tar".into(), E::File(&tar)),
        ],
    );
    if let Some(out) = w.export(case, &ctx, &[]) {
        let inside = out.join(w.inside("dir"));
        w.expect_file(&inside.join("copied"), "f\n");
        w.expect_file(&inside.join("sub/rel-copied"), "f\n");
        w.expect_file(&inside.join("from-tar"), "tar\n");
        if !inside.join("as-app").is_dir() {
            w.fail(format!("{case}: no {}/as-app in the image", w.h("dir")));
        }
        w.expect_file(&out.join("from-stage"), "decoy\n");
    }
    w.check_host(case);

    // -o type=local into a directory where an earlier export left a symlink
    // to the host at a name where the new image has a directory.
    let case = "-o type=local over an earlier export's symlink";
    let dest = w.next("dest");
    let spec = format!("type=local,dest={}", dest.display());
    let ctx = w.context(&format!("FROM busybox:test\nRUN ln -s {dir} /link\n"), &[]);
    let o = w.build(&ctx, &["-o", &spec]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(fs::symlink_metadata(dest.join("link")).is_ok_and(|m| m.is_symlink()));
    let ctx = w.context(
        "FROM busybox:test\nRUN mkdir /link && echo new > /link/file\n",
        &[],
    );
    let o = w.build(&ctx, &["-o", &spec]);
    if o.status.success() {
        w.expect_file(&dest.join("link/file"), "new\n");
    } else {
        w.fail(format!("{case}: the build failed: {}", tail(&o)));
    }
    w.check_host(case);
}

/// Files kiln reads from an image for itself: `kiln run`'s HOME from the
/// image's passwd (a symlink to the host's passwd), and WORKDIR's owner from
/// a passwd that is a FIFO (read on the host, it would block kiln forever).
fn image_user_files(w: &World) {
    let case = "kiln run: HOME from a passwd symlinked to the host's";
    let ctx = w.context(
        &format!(
            "FROM busybox:test\nRUN ln -sf {} /etc/passwd\n",
            w.h("passwd")
        ),
        &[],
    );
    let o = w.build(&ctx, &["-t", "esc:passwd"]);
    assert!(o.status.success(), "{}", show(&o));
    let o = w.kiln(&["run", "esc:passwd", "sh", "-c", "echo $HOME"]);
    if !o.status.success() {
        w.fail(format!("{case}: kiln run failed: {}", tail(&o)));
    } else if String::from_utf8_lossy(&o.stdout) != "/root\n" {
        w.fail(format!(
            "{case}: HOME={:?}, want /root",
            String::from_utf8_lossy(&o.stdout)
        ));
    }
    w.check_host(case);

    let case = "WORKDIR as a USER whose passwd is a FIFO";
    let ctx = w.context(
        "FROM busybox:test\n\
         RUN rm /etc/passwd && mkfifo /etc/passwd\n\
         USER app\n\
         WORKDIR /x\n",
        &[],
    );
    w.expect_build_error(case, &ctx, "/etc/passwd is not a regular file");
    w.check_host(case);
}

#[test]
fn bind_sources_resolve_inside_the_context_as_root() {
    let w = World::new("ctx", Who::Root);
    bind_sources_in_the_context(&w);
    w.finish();
}

#[test]
fn bind_sources_resolve_inside_the_context_rootless() {
    let w = World::new("ctx", Who::Rootless);
    bind_sources_in_the_context(&w);
    w.finish();
}

#[test]
fn bind_sources_resolve_inside_the_stage_as_root() {
    let w = World::new("stage", Who::Root);
    bind_sources_in_a_stage(&w);
    w.finish();
}

#[test]
fn bind_sources_resolve_inside_the_stage_rootless() {
    let w = World::new("stage", Who::Rootless);
    bind_sources_in_a_stage(&w);
    w.finish();
}

#[test]
fn mount_targets_and_their_cleanup_stay_in_the_rootfs_as_root() {
    let w = World::new("targets", Who::Root);
    mount_targets_and_their_cleanup(&w);
    w.finish();
}

#[test]
fn mount_targets_and_their_cleanup_stay_in_the_rootfs_rootless() {
    let w = World::new("targets", Who::Rootless);
    mount_targets_and_their_cleanup(&w);
    w.finish();
}

#[test]
fn copy_add_workdir_and_local_export_stay_inside_as_root() {
    let w = World::new("copy", Who::Root);
    copy_workdir_and_local_export(&w);
    w.finish();
}

#[test]
fn copy_add_workdir_and_local_export_stay_inside_rootless() {
    let w = World::new("copy", Who::Rootless);
    copy_workdir_and_local_export(&w);
    w.finish();
}

#[test]
fn image_user_files_are_read_inside_the_image_as_root() {
    let w = World::new("userfiles", Who::Root);
    image_user_files(&w);
    w.finish();
}

#[test]
fn image_user_files_are_read_inside_the_image_rootless() {
    let w = World::new("userfiles", Who::Rootless);
    image_user_files(&w);
    w.finish();
}
