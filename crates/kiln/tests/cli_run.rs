//! `kiln run`, as a user would run it: a busybox image imported with `kiln import`
//! into a temporary store, run in the sandbox. Needs root (CI runs as root) and
//! Debian's static busybox at /bin/busybox (scripts/setup-test-env installs it).

use crate::util::kiln;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn run(root: &Path, args: &[&str]) -> Output {
    kiln().root(root).arg("run").args(args).output()
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(root: &Path, args: &[&str]) -> String {
    let out = run(root, args);
    assert!(
        out.status.success(),
        "kiln run {args:?} failed ({}):\n{}{}",
        out.status,
        stdout_of(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout_of(&out)
}

/// A temporary store holding `bb:test` (busybox, root and user 1001) and
/// `bb:entry` (the same with an ENTRYPOINT and CMD).
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

fn fixture() -> Fixture {
    kiln_testkit::root::require_root("kiln run tests");
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    kiln_testkit::busybox::rootfs(&rootfs).unwrap();
    std::fs::create_dir_all(rootfs.join("home/user")).unwrap();
    let root = tmp.path().join("store");
    for (name, changes) in [
        (
            "bb:test",
            vec!["ENV GREETING=hello IMAGE_ONLY=1", r#"CMD ["sh"]"#],
        ),
        (
            "bb:entry",
            vec![
                r#"ENTRYPOINT ["echo", "entry"]"#,
                r#"CMD ["default", "args"]"#,
            ],
        ),
    ] {
        let mut cmd = kiln();
        cmd.root(&root).arg("import");
        for c in changes {
            cmd.args(["--change", c]);
        }
        let out = cmd.arg(&rootfs).arg(name).output();
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Fixture { _tmp: tmp, root }
}

/// Nothing of a finished run is left: no mount under the store, no work dir.
fn assert_nothing_left(root: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_str = root.to_str().unwrap();
    assert!(
        !mountinfo.contains(root_str),
        "a mount under the store is left:\n{mountinfo}"
    );
    let tmp = root.join("snapshots/tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(
        left.is_empty(),
        "work dirs left in {}: {left:?}",
        tmp.display()
    );
}

#[test]
fn runs_commands_with_exit_codes_user_workdir_and_env() {
    let f = fixture();
    let root = &f.root;
    let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();

    assert_eq!(
        ok(root, &["bb:test", "echo", "hello", "world"]),
        "hello world\n"
    );
    // The image's CMD runs when no command is given.
    let out = kiln().root(root).args(["run", "bb:test"]).output();
    assert!(out.status.success(), "sh with no input exits 0");

    let out = run(
        root,
        &["bb:test", "sh", "-c", "echo out; echo err >&2; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout_of(&out), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    assert_eq!(ok(root, &["-u", "1001", "bb:test", "id", "-u"]), "1001\n");
    assert_eq!(
        ok(
            root,
            &["--user", "user", "bb:test", "sh", "-c", "id -g; echo $HOME"]
        ),
        "1001\n/home/user\n"
    );
    assert_eq!(
        ok(root, &["bb:test", "sh", "-c", "id -u; echo $HOME"]),
        "0\n/root\n"
    );
    // A missing working directory is created for the run only.
    assert_eq!(
        ok(root, &["-w", "/work/dir", "bb:test", "pwd"]),
        "/work/dir\n"
    );
    assert_eq!(
        ok(
            root,
            &[
                "bb:test",
                "sh",
                "-c",
                "test -e /work && echo kept || echo gone"
            ]
        ),
        "gone\n"
    );
    assert_eq!(
        ok(
            root,
            &[
                "-e",
                "GREETING=bonjour",
                "-e",
                "EXTRA=x=y",
                "bb:test",
                "sh",
                "-c",
                "echo $GREETING $IMAGE_ONLY $EXTRA $PATH"
            ]
        ),
        "bonjour 1 x=y /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
    // A file written by one run is not seen by the next.
    ok(root, &["bb:test", "sh", "-c", "echo x > /tmp/state"]);
    assert_eq!(
        ok(
            root,
            &[
                "bb:test",
                "sh",
                "-c",
                "cat /tmp/state 2>/dev/null || echo none"
            ]
        ),
        "none\n"
    );

    // docker's entrypoint rules.
    assert_eq!(ok(root, &["bb:entry"]), "entry default args\n");
    assert_eq!(ok(root, &["bb:entry", "given"]), "entry given\n");
    assert_eq!(ok(root, &["--entrypoint", "/bin/echo", "bb:entry"]), "\n");
    assert_eq!(
        ok(root, &["--entrypoint", "", "bb:entry", "echo", "plain"]),
        "plain\n"
    );

    // Errors: docker's exit codes, one clear message.
    let out = run(root, &["bb:test", "no-such-program"]);
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-program"), "{err}");
    let out = run(root, &["no-such-image:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no such image") && !err.contains("panicked"),
        "{err}"
    );
    let out = run(root, &["--entrypoint", "", "bb:entry"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no command"));

    // --network none: only loopback inside.
    let net = ok(
        root,
        &["--network", "none", "bb:test", "cat", "/proc/net/dev"],
    );
    let ifaces: Vec<&str> = net
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{net}");

    assert_nothing_left(root);
    let mounts_after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let ours = |m: &str| -> Vec<String> {
        m.lines()
            .filter(|l| l.contains("kiln") || l.contains(root.to_str().unwrap()))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(ours(&mounts_before), ours(&mounts_after));
}

#[test]
fn a_server_is_reachable_on_loopback_and_sigterm_stops_it() {
    let f = fixture();
    let root = &f.root;
    // A port derived from the pid, to not collide with parallel test runs.
    let port = 20000 + (std::process::id() % 20000) as u16;
    let script = format!(
        "mkdir -p /www && echo served-from-kiln > /www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /www"
    );
    let mut k = kiln();
    let cmd = k.root(root).command();
    cmd.args(["run", "--rm", "bb:test", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Started with the stop signals blocked (as some supervisors do): kiln and its
    // sandbox helper must unblock them to stop the container.
    // SAFETY: only sigemptyset/sigaddset/sigprocmask between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let response = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                break body;
            }
            Err(_) if Instant::now() < deadline => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("kiln run exited early: {status}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                let _ = child.kill();
                panic!("the server in the container never answered: {e}");
            }
        }
    };
    assert!(response.contains("served-from-kiln"), "{response}");

    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kiln run did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(128 + 15), "exit code is 128 + SIGTERM");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server is gone"
    );
    assert_nothing_left(root);
}

/// The same image run by an unprivileged user (`kiln-rootless`, made by
/// scripts/setup-test-env with a subordinate id range): kiln enters its own
/// user namespace, extracts the layers with their owners and mounts the overlay.
#[test]
fn runs_rootless_as_an_unprivileged_user() {
    let f = fixture();
    let user = "kiln-rootless";
    let base = f.root.parent().unwrap().join("rootless");
    std::fs::create_dir(&base).unwrap();
    let exe = base.join("kiln");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &exe).unwrap();
    let chown = Command::new("chown")
        .args(["-R", &format!("{user}:")])
        .arg(&f.root)
        .arg(&base)
        .status()
        .unwrap();
    assert!(
        chown.success(),
        "cannot chown to {user}: run scripts/setup-test-env as root first"
    );
    // The temporary directory above the store must be reachable for the user.
    let mut dir = f.root.parent().unwrap().to_path_buf();
    while dir != Path::new("/") && dir.starts_with(std::env::temp_dir()) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
        dir.pop();
    }
    let rootless = |args: &[&str]| -> Output {
        Command::new("runuser")
            .args(["-u", user, "--"])
            .arg(&exe)
            .arg("--root")
            .arg(&f.root)
            .arg("run")
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .expect("runuser")
    };
    let out = rootless(&["bb:test", "sh", "-c", "id -u; stat -c %U /etc/passwd"]);
    assert!(
        out.status.success(),
        "{}{}",
        stdout_of(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_of(&out), "0\nroot\n");
    let out = rootless(&[
        "-u",
        "1001",
        "-w",
        "/new",
        "bb:test",
        "sh",
        "-c",
        "id -u; pwd; exit 5",
    ]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_of(&out), "1001\n/new\n");
    assert_nothing_left(&f.root);
}

/// Host pids whose command line is exactly `args`.
fn pids_running(args: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// A SIGINT or SIGHUP that kiln's caller ignores stays ignored: `nohup kiln run …`
/// (SIGHUP) or `kiln run … &` in a script (SIGINT and SIGQUIT), with both signals
/// then sent to the whole process group, keep the container running. SIGTERM
/// still stops it (exit code 128 + 15) and leaves nothing behind.
#[test]
fn kiln_run_keeps_an_inherited_ignored_sigint_and_sighup() {
    use std::os::unix::process::CommandExt;
    let f = fixture();
    let seconds = kiln_testkit::process::unique_number().to_string();
    let mut k = kiln();
    let cmd = k
        .root(&f.root)
        .args(["run", "bb:test", "sleep", &seconds])
        .command();
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    kiln_testkit::process::ignored_signals(cmd, &[libc::SIGINT, libc::SIGQUIT, libc::SIGHUP]);
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let step = ["sleep", seconds.as_str()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids_running(&step).is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kiln run ended early: {status}");
        }
        assert!(Instant::now() < deadline, "the container never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    for sig in [libc::SIGINT, libc::SIGHUP] {
        // SAFETY: signalling the process group this test started.
        unsafe { libc::kill(-pid, sig) };
    }
    std::thread::sleep(Duration::from_secs(1));
    let still_running = child.try_wait().unwrap().is_none() && !pids_running(&step).is_empty();
    if !still_running {
        // SAFETY: as above; nothing of this test may outlive it.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = child.wait();
    }
    assert!(
        still_running,
        "kiln run stopped the container on a SIGINT/SIGHUP its caller ignores"
    );
    // SAFETY: signalling the process this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            panic!("kiln run did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(128 + 15), "exit code is 128 + SIGTERM");
    assert!(
        pids_running(&step).is_empty(),
        "the container's process is gone"
    );
    assert_nothing_left(&f.root);
}

/// kiln killed outright (SIGKILL) while a RUN step runs, having been started with
/// the stop signals blocked: the sandbox helper is told by its parent-death
/// signal (SIGTERM) and must still stop the step and clean up, so it unblocks
/// the signals it handles instead of inheriting the mask.
#[test]
fn a_killed_build_leaves_no_step_running_even_with_signals_blocked() {
    let f = fixture();
    let ctx = f.root.parent().unwrap().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    let seconds = kiln_testkit::process::unique_number().to_string();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM bb:test\nRUN sleep {seconds}\n"),
    )
    .unwrap();
    let mut k = kiln();
    let cmd = k.root(&f.root).command();
    cmd.args(["build", "--progress", "plain", "-t", "never:1"])
        .arg(&ctx)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only sigemptyset/sigaddset/sigprocmask between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let step = ["sleep", seconds.as_str()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while pids_running(&step).is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kiln build ended before its RUN step started: {status}");
        }
        assert!(Instant::now() < deadline, "the RUN step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = pids_running(&step);
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for pid in &left {
                let _ = rustix::process::kill_process(
                    rustix::process::Pid::from_raw(*pid as i32).unwrap(),
                    rustix::process::Signal::KILL,
                );
            }
            panic!("the RUN step outlived kiln: pids {left:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A container process killed by a signal (here SIGKILL from the host): kiln run
/// exits with 128 + the signal, as docker does.
#[test]
fn a_process_killed_by_a_signal_gives_128_plus_the_signal() {
    let f = fixture();
    let seconds = kiln_testkit::process::unique_number().to_string();
    let mut child = kiln()
        .root(&f.root)
        .args(["run", "bb:test", "sleep", &seconds])
        .command()
        .spawn()
        .unwrap();
    let step = ["sleep", seconds.as_str()];
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Some(pid) = pids_running(&step).first() {
            break *pid;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("kiln run ended early: {status}");
        }
        assert!(Instant::now() < deadline, "the container never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 9));
    assert_nothing_left(&f.root);
}
