//! `kiln build` end to end, as a user runs it: the kiln binary against a
//! temporary store holding a busybox image the test makes itself (Debian's
//! static busybox on an empty root). RUN steps run in the real sandbox, so this
//! needs root (CI runs as root).

use crate::util::{kiln, store_busybox};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ok(root: &Path, args: &[&str]) -> Output {
    kiln().root(root).args(args).ok()
}

struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ctx: PathBuf,
}

fn project(dockerfile: &str, files: &[(&str, &str)]) -> Project {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    store_busybox(&root);
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        let p = ctx.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    Project {
        root,
        ctx,
        _dir: dir,
    }
}

impl Project {
    fn build(&self, extra: &[&str]) -> Output {
        let mut args = vec!["build", "--progress=rawjson"];
        args.extend_from_slice(extra);
        let ctx = self.ctx.to_str().unwrap();
        args.push(ctx);
        kiln().root(&self.root).args(&args).output()
    }

    fn build_ok(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["build", "--progress=rawjson"];
        args.extend_from_slice(extra);
        let ctx = self.ctx.to_str().unwrap().to_string();
        args.push(&ctx);
        let out = ok(&self.root, &args);
        events(&out)
    }

    /// The image's file tree, exported with `-o type=local`.
    fn export(&self, image_args: &[&str]) -> tempfile::TempDir {
        let out = tempfile::tempdir().unwrap();
        let spec = format!("type=local,dest={}", out.path().display());
        let mut args = image_args.to_vec();
        args.extend_from_slice(&["-o", &spec]);
        self.build_ok(&args);
        out
    }

    fn inspect(&self, image: &str) -> serde_json::Value {
        let out = ok(&self.root, &["inspect", image]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0].clone()
    }
}

/// The rawjson progress events on stderr.
fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}

fn count(events: &[serde_json::Value], kind: &str) -> usize {
    events.iter().filter(|e| e["event"] == kind).count()
}

fn summary(events: &[serde_json::Value]) -> serde_json::Value {
    events
        .iter()
        .find(|e| e["event"] == "build_finished")
        .map(|e| e["summary"].clone())
        .expect("a build_finished event")
}

#[test]
fn run_env_workdir_user_and_config() {
    let p = project(
        "FROM busybox:test\n\
         ARG GREETING=hello\n\
         ENV APP_HOME=/srv/app NAME=kiln\n\
         WORKDIR $APP_HOME\n\
         RUN echo \"$GREETING $NAME\" > greeting && mkdir -p data && chown 1000:1000 data\n\
         RUN rm /bin/vi\n\
         USER app\n\
         RUN id -u > /tmp/uid\n\
         LABEL org.example.name=$NAME\n\
         EXPOSE 8000 53/udp\n\
         STOPSIGNAL SIGTERM\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
         CMD [\"cat greeting\"]\n",
        &[],
    );
    let tree = p.export(&["-t", "app:1"]);
    let t = tree.path();
    assert_eq!(
        fs::read_to_string(t.join("srv/app/greeting")).unwrap(),
        "hello kiln\n"
    );
    assert_eq!(fs::read_to_string(t.join("tmp/uid")).unwrap(), "1000\n");
    assert!(!t.join("bin/vi").exists(), "vi was deleted in a RUN");
    assert!(t.join("bin/ls").exists());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(t.join("srv/app/data")).unwrap().uid(), 1000);

    let img = p.inspect("app:1");
    let cfg = &img["Config"];
    let env: Vec<String> = serde_json::from_value(cfg["Env"].clone()).unwrap();
    assert!(env.contains(&"APP_HOME=/srv/app".to_string()), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("GREETING=")),
        "ARGs are not persisted: {env:?}"
    );
    assert_eq!(cfg["WorkingDir"], "/srv/app");
    assert_eq!(cfg["User"], "app");
    assert_eq!(cfg["Labels"]["org.example.name"], "kiln");
    assert!(cfg["ExposedPorts"].get("8000/tcp").is_some());
    assert!(cfg["ExposedPorts"].get("53/udp").is_some());
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(cfg["Cmd"], serde_json::json!(["cat greeting"]));
    assert_eq!(cfg["StopSignal"], "SIGTERM");
}

#[test]
fn noop_rebuild_runs_nothing_and_a_change_reruns_only_dependents() {
    let p = project(
        "FROM busybox:test\n\
         COPY deps.txt /app/\n\
         RUN cat /app/deps.txt > /app/installed\n\
         COPY src/ /app/src/\n\
         RUN cat /app/src/main.txt > /app/built\n",
        &[("deps.txt", "left-pad\n"), ("src/main.txt", "v1\n")],
    );
    let first = p.build_ok(&["-t", "app:1", "--iidfile", "/dev/null"]);
    let s1 = summary(&first);
    assert_eq!(s1["steps_run"], 4, "{s1}");
    assert_eq!(s1["steps_cached"], 0, "{s1}");
    let id1 = p.inspect("app:1")["Id"].clone();

    let again = p.build_ok(&["-t", "app:1"]);
    let s2 = summary(&again);
    assert_eq!(s2["steps_run"], 0, "a no-op rebuild runs nothing: {s2}");
    assert_eq!(s2["steps_cached"], 4, "{s2}");
    assert_eq!(count(&again, "step_output"), 0);
    assert_eq!(
        p.inspect("app:1")["Id"],
        id1,
        "same image id after a no-op rebuild"
    );

    fs::write(p.ctx.join("src/main.txt"), "v2\n").unwrap();
    let changed = p.build_ok(&["-t", "app:2"]);
    let s3 = summary(&changed);
    assert_eq!(
        s3["steps_run"], 2,
        "only COPY src/ and the RUN after it: {s3}"
    );
    assert_eq!(s3["steps_cached"], 2, "{s3}");
    let tree = p.export(&["-t", "app:2"]);
    assert_eq!(
        fs::read_to_string(tree.path().join("app/built")).unwrap(),
        "v2\n"
    );
    assert_eq!(
        fs::read_to_string(tree.path().join("app/installed")).unwrap(),
        "left-pad\n"
    );
}

#[test]
fn independent_stages_run_at_the_same_time() {
    let p = project(
        "FROM busybox:test AS one\n\
         RUN sleep 1 && echo one > /one\n\
         FROM busybox:test AS two\n\
         RUN sleep 1 && echo two > /two\n\
         FROM busybox:test\n\
         COPY --from=one /one /\n\
         COPY --from=two /two /\n",
        &[],
    );
    let ev = p.build_ok(&["--jobs", "2", "-t", "par:1"]);
    // The two RUN steps: each one's start comes before the other's finish.
    let runs: Vec<(u64, u64)> = ev
        .iter()
        .filter(|e| {
            e["event"] == "step_started" && e["name"].as_str().unwrap_or("").contains("RUN sleep")
        })
        .map(|s| {
            let id = s["step"].clone();
            let end = ev
                .iter()
                .find(|e| e["event"] == "step_finished" && e["step"] == id)
                .expect("the step finished");
            (s["at_ms"].as_u64().unwrap(), end["at_ms"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(runs.len(), 2, "{ev:?}");
    let (a, b) = (runs[0], runs[1]);
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "the RUN steps overlap in time: {runs:?}"
    );
    let tree = p.export(&["-t", "par:1"]);
    assert_eq!(
        fs::read_to_string(tree.path().join("one")).unwrap(),
        "one\n"
    );
    assert_eq!(
        fs::read_to_string(tree.path().join("two")).unwrap(),
        "two\n"
    );
}

/// The first stage that fails cancels the build, as BuildKit cancels its
/// solve: the other stage's RUN step that is running is killed, not waited
/// for (and shown as `CANCELED`), and the error is the failure's.
#[test]
fn a_failing_stage_kills_the_running_step_of_another_stage() {
    let p = project(
        "FROM busybox:test AS slow\n\
         RUN echo slow-starts; sleep 60\n\
         FROM busybox:test AS broken\n\
         RUN sleep 1; echo broken-fails; exit 4\n\
         FROM busybox:test\n\
         COPY --from=slow /etc/hostname /slow\n\
         COPY --from=broken /etc/hostname /broken\n",
        &[],
    );
    let started = std::time::Instant::now();
    let out = kiln()
        .root(&p.root)
        .args(["build", "--progress=plain", "--jobs", "2"])
        .arg(&p.ctx)
        .output();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("slow-starts"), "both steps ran:\n{log}");
    assert!(
        log.contains("exited with 4") || log.contains("exit code: 4"),
        "{log}"
    );
    assert!(
        !log.contains("cancelled"),
        "the error is the failure's:\n{log}"
    );
    // The killed step is shown as BuildKit shows it.
    let slow = log
        .lines()
        .find(|l| l.contains("RUN echo slow-starts"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the slow step's header");
    assert!(
        log.contains(&format!("{slow} CANCELED")),
        "{slow} CANCELED:\n{log}"
    );
    assert!(
        started.elapsed().as_secs() < 30,
        "the slow step was waited for ({:?}):\n{log}",
        started.elapsed()
    );
}

#[test]
fn failing_run_names_the_line_and_shows_the_output_tail() {
    let p = project(
        "FROM busybox:test\n\
         RUN echo preparing\n\
         RUN echo compiling && echo 'error: missing semicolon' >&2 && exit 2\n",
        &[],
    );
    let out = p.build(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ERROR: RUN echo compiling && echo 'error: missing semicolon' >&2 && exit 2 (Dockerfile:3) exited with 2"),
        "{err}"
    );
    assert!(
        err.contains("error: missing semicolon"),
        "the output tail: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn context_as_a_tar_on_stdin_and_network_none() {
    let p = project("", &[]);
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        (
            "Dockerfile",
            &b"FROM busybox:test\nCOPY hello.txt /\nRUN cat /proc/net/dev > /netdev\n"[..],
        ),
        ("hello.txt", &b"from the tar\n"[..]),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, name, data).unwrap();
    }
    let archive = b.into_inner().unwrap();
    let out = tempfile::tempdir().unwrap();
    let res = kiln()
        .root(&p.root)
        .args(["build", "--progress=plain", "--network=none", "-o"])
        .arg(format!("type=local,dest={}", out.path().display()))
        .arg("-")
        .stdin(archive)
        .output();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(
        fs::read_to_string(out.path().join("hello.txt")).unwrap(),
        "from the tar\n"
    );
    let netdev = fs::read_to_string(out.path().join("netdev")).unwrap();
    let ifaces: Vec<&str> = netdev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "--network=none leaves only lo: {netdev}");
}

#[test]
fn dockerfile_on_stdin_with_no_context() {
    let p = project("", &[]);
    let out = tempfile::tempdir().unwrap();
    let res = kiln()
        .root(&p.root)
        .args(["build", "--progress=plain", "-o"])
        .arg(format!("type=local,dest={}", out.path().display()))
        .arg("-")
        .stdin(&b"FROM busybox:test\nRUN echo stdin > /made\n"[..])
        .output();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(
        fs::read_to_string(out.path().join("made")).unwrap(),
        "stdin\n"
    );
}

#[test]
fn run_mounts_bind_context_and_stage_tmpfs_cache_secret() {
    let p = project(
        "FROM busybox:test AS tools\n\
         RUN mkdir -p /opt/tool && echo 'tool v1' > /opt/tool/version\n\
         FROM busybox:test\n\
         RUN --mount=type=bind,source=conf,target=/mnt/conf cat /mnt/conf/app.conf > /from-context\n\
         RUN --mount=type=bind,source=conf,target=/mnt/conf,rw echo scribble > /mnt/conf/app.conf && echo rw-ok > /rw\n\
         RUN --mount=from=tools,source=/opt/tool,target=/tool cat /tool/version > /from-stage\n\
         RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/x && ls /scratch > /tmpfs-list\n\
         RUN --mount=type=cache,target=/var/cache/app echo hit >> /var/cache/app/log && cat /var/cache/app/log > /cache-log\n\
         RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /secret-len\n",
        &[("conf/app.conf", "setting=1\n")],
    );
    let secret = p.ctx.parent().unwrap().join("token");
    fs::write(&secret, "hunter2").unwrap();
    let secret_arg = format!("id=token,src={}", secret.display());
    let tree = p.export(&["--secret", &secret_arg, "-t", "mounts:1"]);
    let t = tree.path();
    assert_eq!(
        fs::read_to_string(t.join("from-context")).unwrap(),
        "setting=1\n"
    );
    assert_eq!(fs::read_to_string(t.join("rw")).unwrap(), "rw-ok\n");
    assert_eq!(
        fs::read_to_string(p.ctx.join("conf/app.conf")).unwrap(),
        "setting=1\n",
        "an rw bind mount never writes to the context"
    );
    assert_eq!(
        fs::read_to_string(t.join("from-stage")).unwrap(),
        "tool v1\n"
    );
    assert_eq!(fs::read_to_string(t.join("tmpfs-list")).unwrap(), "x\n");
    assert_eq!(fs::read_to_string(t.join("cache-log")).unwrap(), "hit\n");
    assert_eq!(
        fs::read_to_string(t.join("secret-len")).unwrap().trim(),
        "7"
    );
    for gone in [
        "mnt/conf/app.conf",
        "tool/version",
        "scratch/x",
        "var/cache/app/log",
        "run/secrets/token",
    ] {
        assert!(!t.join(gone).exists(), "{gone} must not be in the image");
    }
    // The cache mount persists: a rebuild without the cache sees the earlier run.
    let tree = p.export(&["--secret", &secret_arg, "--no-cache", "-t", "mounts:2"]);
    assert_eq!(
        fs::read_to_string(tree.path().join("cache-log")).unwrap(),
        "hit\nhit\n"
    );
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&p.root.display().to_string()),
        "no mounts left: {mounts}"
    );
}

#[test]
fn prune_keeps_the_build_cache_and_prune_build_cache_empties_it() {
    let p = project(
        "FROM busybox:test AS build\n\
         RUN echo built > /artifact\n\
         FROM busybox:test\n\
         COPY --from=build /artifact /artifact\n",
        &[],
    );
    p.build_ok(&["-t", "pruned:1"]);
    ok(&p.root, &["prune"]);
    let again = p.build_ok(&["-t", "pruned:1"]);
    assert_eq!(
        summary(&again)["steps_run"],
        0,
        "prune keeps the build cache"
    );

    ok(&p.root, &["rmi", "pruned:1"]);
    ok(&p.root, &["rmi", "busybox:test"]);
    ok(&p.root, &["prune", "--build-cache"]);
    let left: Vec<String> = fs::read_dir(p.root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "empty" && n != "tmp")
        .collect();
    assert!(left.is_empty(), "no snapshot is left: {left:?}");
    assert_eq!(
        fs::read_dir(p.root.join("cache/steps")).unwrap().count(),
        0,
        "no step record is left"
    );
    store_busybox(&p.root);
    let cold = p.build_ok(&["-t", "pruned:1"]);
    assert_eq!(summary(&cold)["steps_run"], 2, "{:?}", summary(&cold));
}

#[test]
fn copy_from_a_rebuilt_stage_with_the_same_artifact_stays_cached() {
    let p = project(
        "FROM busybox:test AS builder\n\
         COPY src.txt /\n\
         RUN cut -c1-3 /src.txt > /artifact\n\
         FROM busybox:test\n\
         COPY --from=builder /artifact /\n\
         RUN cat /artifact > /used\n",
        &[("src.txt", "abc-1\n")],
    );
    p.build_ok(&["-t", "art:1"]);
    // Same first three characters: the builder reruns, its artifact is the same.
    fs::write(p.ctx.join("src.txt"), "abc-2\n").unwrap();
    let ev = p.build_ok(&["-t", "art:2"]);
    let s = summary(&ev);
    assert_eq!(s["steps_run"], 2, "only the builder's COPY and RUN: {s}");
    assert_eq!(s["steps_cached"], 2, "{s}");
    // A different artifact reruns the final stage too.
    fs::write(p.ctx.join("src.txt"), "xyz-3\n").unwrap();
    let s = summary(&p.build_ok(&["-t", "art:3"]));
    assert_eq!(s["steps_run"], 4, "{s}");
}

#[test]
fn a_killed_build_leaves_no_mount_behind() {
    // A sleep no other process runs: found by its argument afterwards.
    let sleep = format!("sleep {}", kiln_testkit::process::unique_number());
    let p = project(
        &format!(
            "FROM busybox:test AS tools\n\
             RUN echo tool > /tool\n\
             FROM busybox:test\n\
             RUN --mount=from=tools,target=/t,rw {sleep}\n"
        ),
        &[],
    );
    let mut child = kiln()
        .root(&p.root)
        .args(["build", "--progress=rawjson"])
        .arg(&p.ctx)
        .command()
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the sleeping step runs (its overlay is mounted), then SIGKILL.
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let started = lines.any(|l| l.is_ok_and(|l| l.contains("step_started") && l.contains(&sleep)));
    assert!(started, "the RUN step started");
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&p.root.display().to_string()),
        "mounts left after SIGKILL: {mounts}"
    );
    let procs = kiln_testkit::process::processes_with(&sleep);
    assert!(procs.is_empty(), "the step's process is gone: {procs:?}");
}

/// A SIGINT that kiln's caller ignores stays ignored, in kiln and in its sandbox
/// helper: `kiln build … &` in a script (a non-interactive shell starts it with
/// SIGINT and SIGQUIT ignored) or `nohup`, with Ctrl-C then sent to the terminal's
/// whole process group, goes on building. SIGTERM still stops the build, step
/// included.
#[test]
fn kiln_build_keeps_an_inherited_ignored_sigint() {
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};
    let sleep = format!("sleep {}", kiln_testkit::process::unique_number());
    let p = project(&format!("FROM busybox:test\nRUN {sleep}\n"), &[]);
    let mut k = kiln();
    let cmd = k
        .root(&p.root)
        .args(["build", "--progress=plain"])
        .arg(&p.ctx)
        .command();
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    kiln_testkit::process::ignored_signals(cmd, &[libc::SIGINT, libc::SIGQUIT]);
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let _cleanup = KillGroupOnDrop(pid);
    let deadline = Instant::now() + Duration::from_secs(60);
    while kiln_testkit::process::processes_with(&sleep).is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kiln build ended before its RUN step started: {status}");
        }
        assert!(Instant::now() < deadline, "the RUN step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling the process group this test started.
    unsafe { libc::kill(-pid, libc::SIGINT) };
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        child.try_wait().unwrap().is_none(),
        "kiln build stopped on a SIGINT its caller ignores"
    );
    assert!(
        !kiln_testkit::process::processes_with(&sleep).is_empty(),
        "the RUN step stopped on a SIGINT kiln's caller ignores"
    );
    // SAFETY: signalling the process this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "kiln build did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "a terminated build must not succeed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kiln_testkit::process::processes_with(&sleep).is_empty() {
        assert!(Instant::now() < deadline, "the RUN step outlived kiln");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills a process group (SIGKILL) when dropped, also when the test fails.
struct KillGroupOnDrop(i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling a process group this test started.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

#[test]
fn every_output_kind_and_the_id_files() {
    let p = project(
        "FROM busybox:test\nRUN echo out > /made\nCMD [\"cat\", \"/made\"]\n",
        &[],
    );
    let dir = p.ctx.parent().unwrap().to_path_buf();
    let (oci, docker, tar, iid, meta) = (
        dir.join("image.oci.tar"),
        dir.join("image.docker.tar"),
        dir.join("rootfs.tar"),
        dir.join("iid"),
        dir.join("meta.json"),
    );
    let outs = [
        format!("type=oci,dest={}", oci.display()),
        format!("type=docker,dest={},name=outs:1", docker.display()),
        format!("type=tar,dest={}", tar.display()),
    ];
    p.build_ok(&[
        "-t",
        "outs:1",
        "-o",
        &outs[0],
        "-o",
        &outs[1],
        "-o",
        &outs[2],
        "--iidfile",
        iid.to_str().unwrap(),
        "--metadata-file",
        meta.to_str().unwrap(),
    ]);
    let id = p.inspect("outs:1")["Id"].as_str().unwrap().to_string();
    assert_eq!(
        fs::read_to_string(&iid).unwrap(),
        id,
        "--iidfile holds the image id"
    );
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(m["containerimage.config.digest"], id);
    assert_eq!(m["image.name"], "docker.io/library/outs:1");
    // skopeo reads the OCI archive and the docker archive kiln wrote.
    for src in [
        format!("oci-archive:{}", oci.display()),
        format!("docker-archive:{}", docker.display()),
    ] {
        let out = Command::new("skopeo")
            .args(["inspect", "--config", &src])
            .output()
            .expect("skopeo is installed (scripts/setup-test-env)");
        assert!(
            out.status.success(),
            "skopeo inspect {src}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            cfg["config"]["Cmd"],
            serde_json::json!(["cat", "/made"]),
            "{src}"
        );
    }
    // type=tar is the image's file tree.
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(fs::File::open(&tar).unwrap());
    for e in archive.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    assert!(
        names.iter().any(|n| n.trim_start_matches("./") == "made"),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.trim_start_matches("./") == "bin/busybox"),
        "{names:?}"
    );
}

/// A tiny HTTP server on 127.0.0.1 answering every GET with the current `body`.
fn serve(body: std::sync::Arc<std::sync::Mutex<String>>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            use std::io::{Read, Write};
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let b = body.lock().unwrap().clone();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                b.len()
            );
        }
    });
    port
}

#[test]
fn add_of_a_url_is_rechecked_on_every_build() {
    let body = std::sync::Arc::new(std::sync::Mutex::new("version 1\n".to_string()));
    let port = serve(body.clone());
    let p = project(
        &format!("FROM busybox:test\nADD http://127.0.0.1:{port}/release.txt /release.txt\nRUN cat /release.txt > /seen\n"),
        &[],
    );
    let s = summary(&p.build_ok(&["-t", "url:1"]));
    assert_eq!(s["steps_run"], 2, "{s}");
    let s = summary(&p.build_ok(&["-t", "url:1"]));
    assert_eq!(s["steps_run"], 0, "the same download is a cache hit: {s}");
    *body.lock().unwrap() = "version 2\n".to_string();
    let tree = p.export(&["-t", "url:2"]);
    assert_eq!(
        fs::read_to_string(tree.path().join("seen")).unwrap(),
        "version 2\n",
        "a changed download reruns ADD and what follows"
    );
}

#[test]
fn an_oci_layout_build_context_is_never_pulled_even_with_pull_always() {
    let p = project("FROM base\nCOPY f /f\n", &[("f", "x")]);
    // The busybox image as an OCI layout directory.
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("busybox.tar");
    ok(
        &p.root,
        &[
            "save",
            "--format",
            "oci",
            "-o",
            tar.to_str().unwrap(),
            "busybox:test",
        ],
    );
    let layout = dir.path().join("layout");
    fs::create_dir_all(&layout).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(untar.success());
    // The imported image is only in this store: --pull must not ask a
    // registry for it (there is none to ask here).
    let ctx = format!("base=oci-layout://{}", layout.display());
    let events = p.build_ok(&["--pull", "--build-context", &ctx, "-t", "out:1"]);
    assert_eq!(summary(&events)["steps_run"], 1, "{events:?}");
}

/// #10.3: the same layer more than once in an image (three no-op RUNs give one
/// empty layer three times; `COPY a`, `COPY b`, `COPY a` gives A, B, A) mounts
/// for the next RUN, for a bind mount of the stage and for `kiln run`, and the
/// topmost copy is what is seen (A over B).
#[test]
fn repeated_layers_mount_and_the_topmost_copy_wins() {
    let p = project(
        "FROM busybox:test AS rep\n\
         COPY a /f\n\
         COPY b /f\n\
         COPY a /f\n\
         RUN true\n\
         RUN true\n\
         RUN true\n\
         RUN cat /f > /seen\n\
         FROM rep\n\
         RUN --mount=type=bind,from=rep,target=/r cat /r/f > /via-bind\n",
        &[("a", "from a\n"), ("b", "from b\n")],
    );
    let tree = p.export(&["-t", "rep:1"]);
    let t = tree.path();
    assert_eq!(fs::read_to_string(t.join("seen")).unwrap(), "from a\n");
    assert_eq!(fs::read_to_string(t.join("via-bind")).unwrap(), "from a\n");
    let layers: Vec<String> =
        serde_json::from_value(p.inspect("rep:1")["RootFS"]["Layers"].clone()).unwrap();
    // busybox, A, B, A, E, E, E, seen, via-bind
    assert_eq!(layers.len(), 9, "{layers:?}");
    assert_eq!(layers[1], layers[3], "the two COPY a layers are one layer");
    assert_ne!(layers[1], layers[2]);
    assert!(
        layers[4] == layers[5] && layers[5] == layers[6],
        "{layers:?}"
    );
    let out = ok(&p.root, &["run", "rep:1", "cat", "/f", "/seen"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from a\nfrom a\n");
}

/// #19.2 and #19.8: mount points inside other mounts — a RUN heredoc with a
/// shebang (run from `/dev/pipes/`, on the `/dev` tmpfs) and nested cache
/// mounts in either order — and a tmpfs at `/dev/shm` that replaces kiln's.
#[test]
fn heredoc_shebang_nested_cache_mounts_and_a_dev_shm_tmpfs() {
    let p = project(
        "FROM busybox:test\n\
         RUN <<EOF\n\
         #!/bin/sh\n\
         echo hi > /x\n\
         EOF\n\
         RUN --mount=type=cache,target=/foo/bar --mount=type=cache,target=/foo/bar/baz echo 1 > /foo/bar/baz/f && ls /foo/bar > /cache-list\n\
         RUN --mount=type=cache,target=/q/r/s --mount=type=cache,target=/q/r cat /foo/bar/baz/f 2>/dev/null; echo 2 > /q/r/s/g && ls /q/r > /cache-list-2\n\
         RUN --mount=type=tmpfs,target=/dev/shm,size=128m grep -c ' /dev/shm ' /proc/self/mountinfo > /shm-mounts && df -k /dev/shm | tail -1 > /shm-df\n",
        &[],
    );
    let tree = p.export(&["-t", "mounts:1"]);
    let t = tree.path();
    assert_eq!(fs::read_to_string(t.join("x")).unwrap(), "hi\n");
    assert_eq!(fs::read_to_string(t.join("cache-list")).unwrap(), "baz\n");
    assert_eq!(fs::read_to_string(t.join("cache-list-2")).unwrap(), "s\n");
    assert_eq!(fs::read_to_string(t.join("shm-mounts")).unwrap(), "1\n");
    let df = fs::read_to_string(t.join("shm-df")).unwrap();
    assert!(df.contains(" 131072 "), "a 128 MiB /dev/shm: {df}");
    for gone in ["foo", "q", "dev/pipes"] {
        assert!(
            !t.join(gone).exists(),
            "mount point /{gone} left in the image"
        );
    }
}

/// #10.4: RUN steps and `kiln run` run under Docker's default seccomp profile
/// (no nested user namespaces); `RUN --security=insecure` runs without it.
#[test]
fn run_steps_and_kiln_run_are_under_the_seccomp_filter() {
    let p = project(
        "FROM busybox:test\n\
         RUN grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status > /seccomp\n\
         RUN (unshare -U -r true && echo allowed || echo refused) > /unshare 2>/dev/null\n\
         RUN --security=insecure grep '^Seccomp:' /proc/self/status > /seccomp-insecure\n",
        &[],
    );
    let tree = p.export(&["--allow", "security.insecure", "-t", "sec:1"]);
    let t = tree.path();
    assert_eq!(
        fs::read_to_string(t.join("seccomp")).unwrap(),
        "NoNewPrivs:\t1\nSeccomp:\t2\n"
    );
    assert_eq!(fs::read_to_string(t.join("unshare")).unwrap(), "refused\n");
    assert_eq!(
        fs::read_to_string(t.join("seccomp-insecure")).unwrap(),
        "Seccomp:\t0\n"
    );
    let out = ok(
        &p.root,
        &["run", "sec:1", "grep", "^Seccomp:", "/proc/self/status"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Seccomp:\t2\n");
    // unshare -U in kiln run must fail.
    let refused = kiln()
        .root(&p.root)
        .args(["run", "sec:1", "unshare", "-U", "true"])
        .fails();
    assert!(refused.contains("Operation not permitted"), "{refused}");
}

/// A context holding names that are not UTF-8: one excluded by
/// `.dockerignore` does not matter at all (it failed every build); an
/// included one is copied by `COPY .` and seen through a RUN bind mount of
/// the context with its exact bytes, and exported the same.
#[test]
fn names_that_are_not_utf8_in_the_context() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let p = project(
        "FROM busybox:test\nCOPY . /in/\nRUN --mount=type=bind,target=/c cp -a /c /seen\n",
        &[(".dockerignore", "skip*\nDockerfile\n.dockerignore\n")],
    );
    let raw = |root: &Path, b: &[u8]| root.join(OsStr::from_bytes(b));
    fs::write(raw(&p.ctx, b"caf\xe9.txt"), "latin-1").unwrap();
    fs::write(raw(&p.ctx, b"skip\xff"), "excluded").unwrap();
    fs::create_dir(raw(&p.ctx, b"skipdir\xfe")).unwrap();
    fs::write(raw(&p.ctx, b"skipdir\xfe/\xfa"), "excluded").unwrap();
    let out = p.export(&[]);
    for dir in ["in", "seen"] {
        let listed: Vec<Vec<u8>> = fs::read_dir(out.path().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        assert_eq!(listed, [b"caf\xe9.txt".to_vec()], "/{dir}");
        let file = raw(&out.path().join(dir), b"caf\xe9.txt");
        assert_eq!(fs::read_to_string(file).unwrap(), "latin-1");
    }
}

/// Three concurrent builds of one Dockerfile on one store run its RUN once:
/// the others wait for the step's cache key and reuse the result. Killing
/// the build that runs it leaves nobody waiting: the next one runs it.
#[test]
fn concurrent_builds_run_a_step_once_and_a_killed_one_blocks_nobody() {
    // Each run of the step appends a line to a cache-mount file on the host;
    // the first run (the one that is killed) then sleeps.
    let p = project(
        "FROM busybox:test\n\
         RUN --mount=type=cache,id=counter,target=/c \
         sh -c 'echo run >> /c/count; if [ $(wc -l < /c/count) = 1 ]; then sleep 60; fi; sleep 1'\n",
        &[],
    );
    let count_file = || -> Option<PathBuf> {
        let mounts = p.root.join("cache/mounts");
        fs::read_dir(mounts)
            .ok()?
            .flatten()
            .map(|e| e.path().join("data/count"))
            .find(|c| c.exists())
    };
    let runs = || count_file().map_or(0, |c| fs::read_to_string(c).unwrap().lines().count());
    let spawn = |tag: &str| {
        let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(&p.root)
            .args(["build", "--progress=rawjson", "-t", tag])
            .arg(&p.ctx)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        KillOnDrop(Some(child))
    };
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };

    let mut first = spawn("same:1");
    wait_until("the first build runs the step", &|| runs() == 1);
    let others = [spawn("same:1"), spawn("same:1")];
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(runs(), 1, "the others wait while the first runs the step");
    first.kill();
    let outs: Vec<Output> = others.into_iter().map(KillOnDrop::output).collect();
    for out in &outs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        runs(),
        2,
        "after the kill, one more run; the third reuses it"
    );
    let sums: Vec<serde_json::Value> = outs.iter().map(|o| summary(&events(o))).collect();
    let ran: Vec<_> = sums.iter().map(|s| s["steps_run"].as_u64()).collect();
    assert!(
        ran.contains(&Some(1)) && ran.contains(&Some(0)),
        "one ran the step, one reused it: {sums:?}"
    );

    // Three at once from the start (a new step): one run between them, the
    // others waiting out its 3 s instead of running it too.
    fs::remove_file(count_file().unwrap()).unwrap();
    fs::write(
        p.ctx.join("Dockerfile"),
        "FROM busybox:test\n\
         RUN --mount=type=cache,id=counter,target=/c sh -c 'echo again >> /c/count; sleep 3'\n",
    )
    .unwrap();
    let builds = [spawn("same:2"), spawn("same:2"), spawn("same:2")];
    let outs: Vec<Output> = builds.into_iter().map(KillOnDrop::output).collect();
    for out in &outs {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(runs(), 1, "three concurrent builds ran the step once");
}

/// A kiln process that is killed if the test fails before it is waited for.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn output(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writing a step's layer (diff, walk, sha256 of its tar) does not hold a job
/// slot: with `--jobs 1`, one stage's RUN starts while the other stage's big
/// layer is still being hashed (its "layer diff of" phase), so the first
/// step's interval (started → its layer hashed) and the second's overlap by
/// the time the first layer's hashing takes. Before, the slot was held until
/// the layer was written, and the second step started as the first finished.
#[test]
fn writing_a_layer_does_not_hold_up_an_independent_stage() {
    let p = project(
        "FROM busybox:test AS a\n\
         RUN head -c 400000000 /dev/zero > /big-a\n\
         FROM busybox:test AS b\n\
         RUN head -c 400000000 /dev/zero > /big-b\n\
         FROM busybox:test\n\
         COPY --from=a /etc/passwd /a\n\
         COPY --from=b /etc/passwd /b\n",
        &[],
    );
    let ev = p.build_ok(&["--jobs", "1"]);
    let interval = |stage: &str| -> (u64, u64) {
        let start = ev
            .iter()
            .find(|e| {
                e["event"] == "step_started"
                    && e["stage"] == stage
                    && e["name"].as_str().unwrap().contains("RUN head")
            })
            .unwrap_or_else(|| panic!("no RUN step of {stage}: {ev:?}"));
        let hashed = layer_hashed(&ev, start["name"].as_str().unwrap());
        (start["at_ms"].as_u64().unwrap(), hashed.1)
    };
    let (a, b) = (interval("a"), interval("b"));
    let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    // Hashing 400 MB takes hundreds of ms; without the overlap the second
    // step starts the moment the first finishes (the same ms, give or take
    // one: the events come from two threads).
    assert!(
        second.0 + 100 <= first.1,
        "the second RUN started only once the first step had written its layer: \
         first {first:?}, second {second:?} (ms)"
    );
}

/// When the layer of the step named `step` (as in its `step_started`) was
/// being hashed: its "layer diff of" phase's start and end (ms).
fn layer_hashed(ev: &[serde_json::Value], step: &str) -> (u64, u64) {
    let name = format!("layer diff of {step}");
    let phase = |done: bool| {
        ev.iter()
            .find(|e| {
                e["event"] == "phase"
                    && e["name"] == name.as_str()
                    && e["duration_ms"].is_null() != done
            })
            .unwrap_or_else(|| panic!("no phase {name:?} (done: {done}): {ev:?}"))["at_ms"]
            .as_u64()
            .unwrap()
    };
    (phase(false), phase(true))
}

/// The step after a RUN (in its stage, and in a stage built on it) starts
/// while that RUN's layer is still being hashed: the layer's directory is
/// stacked at once, under a name of its own, and named by its diff_id when
/// the hash is done. The image is the one a build that waits for each hash
/// makes (`KILN_LAYER_DIFF_OVERLAP=0`), to the image id, and it exports.
#[test]
fn the_next_step_starts_while_the_layer_before_is_hashed() {
    let dockerfile = "FROM busybox:test AS base\n\
         RUN head -c 3000000 /dev/zero > /big\n\
         RUN wc -c < /big > /size\n\
         FROM base AS next\n\
         RUN cat /size /size > /sizes\n\
         FROM busybox:test\n\
         COPY --from=next /sizes /sizes\n\
         COPY --from=base /big /big\n";
    let overlap = project(dockerfile, &[]);
    let out = tempfile::tempdir().unwrap();
    let oci = out.path().join("image.tar");
    let dest = format!("type=oci,dest={}", oci.display());
    let built = kiln()
        .root(&overlap.root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("KILN_TEST_LAYER_DIFF_DELAY_MS", "1500")
        .args(["build", "--progress=rawjson", "-t", "lazy:1", "-o", &dest])
        .arg(&overlap.ctx)
        .ok();
    let ev = events(&built);
    let started = |name: &str| {
        ev.iter()
            .find(|e| e["event"] == "step_started" && e["name"].as_str().unwrap().contains(name))
            .unwrap_or_else(|| panic!("no step {name}: {ev:?}"))
    };
    let big = started("RUN head");
    let big_hashed = layer_hashed(&ev, big["name"].as_str().unwrap());
    let size = started("RUN wc");
    let size_hashed = layer_hashed(&ev, size["name"].as_str().unwrap());
    let sizes = started("RUN cat");
    assert!(
        size["at_ms"].as_u64().unwrap() < big_hashed.1,
        "the next step of the stage waited for the layer's hash: {big_hashed:?}, {size}"
    );
    assert!(
        sizes["at_ms"].as_u64().unwrap() < size_hashed.1,
        "the stage built on it waited for the layer's hash: {size_hashed:?}, {sizes}"
    );
    let listed = Command::new("tar").arg("tf").arg(&oci).output().unwrap();
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("index.json"),
        "the OCI archive: {listed:?}"
    );
    let exported = overlap.export(&["-t", "lazy:1"]);
    assert_eq!(
        fs::read_to_string(exported.path().join("sizes")).unwrap(),
        "3000000\n3000000\n"
    );
    // Every layer a step made is a `step-…` directory named by its diff_id.
    let snapshots = overlap.root.join("snapshots");
    let links: Vec<PathBuf> = fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .collect();
    assert!(
        links.len() >= 3
            && links
                .iter()
                .all(|l| l.to_string_lossy().starts_with("step-")),
        "{links:?}"
    );
    let waited = project(dockerfile, &[]);
    let serial = kiln()
        .root(&waited.root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("KILN_LAYER_DIFF_OVERLAP", "0")
        .args(["build", "--progress=rawjson", "-t", "lazy:1"])
        .arg(&waited.ctx)
        .ok();
    let serial = events(&serial);
    assert!(
        !serial
            .iter()
            .any(|e| e["event"] == "phase"
                && e["name"].as_str().unwrap().starts_with("layer diff of")),
        "without overlap no layer is hashed in the background"
    );
    assert_eq!(summary(&ev)["image_id"], summary(&serial)["image_id"]);
    // And the overlapped build's records are whole: a rebuild is all cached.
    let again = kiln()
        .root(&overlap.root)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--progress=rawjson", "-t", "lazy:1"])
        .arg(&overlap.ctx)
        .ok();
    let again = summary(&events(&again));
    assert_eq!(again["steps_run"], 0, "{again}");
    assert_eq!(again["image_id"], summary(&ev)["image_id"]);
}

/// The names of the `snapshots/step-…` directories of the store at `root`:
/// the layers steps made (named by a diff_id or not yet).
fn step_dirs(root: &Path) -> Vec<String> {
    fs::read_dir(root.join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect()
}

/// kiln killed while a step's layer is being hashed leaves a store that
/// works: the step's directory, named by no diff_id, is not used; the next
/// build runs the step again, and `kiln prune` removes the leftover.
#[test]
fn killing_kiln_while_a_layer_is_hashed_leaves_a_usable_store() {
    use std::io::BufRead as _;
    let p = project(
        "FROM busybox:test\n\
         RUN echo data > /data\n",
        &[],
    );
    let mut child = KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(&p.root)
            .args(["build", "--progress=rawjson", "-t", "killed:1"])
            .arg(&p.ctx)
            .env("KILN_TEST_LAYER_DIFF_DELAY_MS", "60000")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let stderr = child.0.as_mut().unwrap().stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let hashing = serde_json::from_str::<serde_json::Value>(&line).is_ok_and(|e| {
            e["event"] == "phase"
                && e["name"].as_str().unwrap().starts_with("layer diff of")
                && e["duration_ms"].is_null()
        });
        seen.push(line);
        if hashing {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.contains("layer diff of")),
        "the build ended before hashing its layer: {seen:?}"
    );
    child.kill();
    let left = step_dirs(&p.root);
    assert_eq!(left.len(), 1, "the killed step's directory: {left:?}");

    let ev = p.build_ok(&["-t", "killed:1"]);
    assert_eq!(summary(&ev)["steps_run"], 1, "the step runs again");
    let exported = p.export(&["-t", "killed:1"]);
    assert_eq!(
        fs::read_to_string(exported.path().join("data")).unwrap(),
        "data\n"
    );
    ok(&p.root, &["prune"]);
    let kept = step_dirs(&p.root);
    assert!(!kept.contains(&left[0]), "prune left {left:?}: {kept:?}");
    assert_eq!(kept.len(), 1, "the rebuilt step's layer stays: {kept:?}");
    let ev = p.build_ok(&["-t", "killed:1"]);
    assert_eq!(summary(&ev)["steps_run"], 0, "still cached after prune");
}

/// A step whose changes cannot be a layer (here a file named like an OCI
/// whiteout) fails the build at its line, naming the file as the image sees
/// it, whether the layer is hashed beside the next steps or at once; nothing
/// of it stays in the store, and the fixed Dockerfile builds.
#[test]
fn a_step_whose_changes_cannot_be_a_layer_fails_at_its_line() {
    let p = project(
        "FROM busybox:test\n\
         RUN touch /.wh.oops\n\
         RUN echo next > /next\n",
        &[],
    );
    for overlap in ["1", "0"] {
        let err = kiln()
            .root(&p.root)
            .env("KILN_LAYER_DIFF_OVERLAP", overlap)
            .args(["build", "-t", "wh:1"])
            .arg(&p.ctx)
            .fails();
        // The message as one line: miette wraps it, with a frame.
        let flat = err
            .split_whitespace()
            .filter(|w| *w != "│")
            .collect::<Vec<_>>()
            .join(" ");
        for want in [
            "Dockerfile:2",
            "RUN touch /.wh.oops: its changes cannot be written as a layer: /.wh.oops: \
             names starting with .wh. are reserved for OCI whiteouts",
        ] {
            assert!(
                flat.contains(want),
                "overlap {overlap}: no {want:?} in\n{err}"
            );
        }
        assert!(
            !err.contains("snapshots/"),
            "overlap {overlap}: a host path in\n{err}"
        );
        assert_eq!(
            step_dirs(&p.root),
            Vec::<String>::new(),
            "overlap {overlap}"
        );
        let tagged = kiln().root(&p.root).args(["inspect", "wh:1"]).output();
        assert!(
            !tagged.status.success(),
            "overlap {overlap}: wh:1 was tagged"
        );
    }
    fs::write(
        p.ctx.join("Dockerfile"),
        "FROM busybox:test\nRUN touch /oops\nRUN echo next > /next\n",
    )
    .unwrap();
    let ev = p.build_ok(&["-t", "wh:1"]);
    assert_eq!(summary(&ev)["steps_run"], 2);
    let exported = p.export(&["-t", "wh:1"]);
    assert_eq!(
        fs::read_to_string(exported.path().join("next")).unwrap(),
        "next\n"
    );
    ok(&p.root, &["prune"]);
}
