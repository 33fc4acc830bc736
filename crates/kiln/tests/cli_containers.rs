//! Containers that outlive a command, networks and Compose projects, run as a
//! user would: `kiln run -d -p`, `ps`, `logs`, `stop`, `rm`, and `kiln compose
//! up/ps/logs/down` on a project of busybox services (depends_on conditions,
//! a healthcheck, names resolved on the project network, environment,
//! env_file, user, working_dir, entrypoint/command, bind mounts and a named
//! volume). Root runs use netavark and aardvark-dns, rootless ones slirp4netns
//! (scripts/setup-test-env installs them). Needs root, Debian's static busybox
//! at /bin/busybox, and for the rootless tests the `kiln-rootless` user.
//! Every test checks that nothing is left behind: no container, no process,
//! no bridge, no firewall rule, no address held.

use kiln_testkit::http::{self, free_port};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Fixture {
    tmp: tempfile::TempDir,
    root: PathBuf,
    /// The kiln binary the test runs (a copy the rootless user can execute).
    exe: PathBuf,
    /// Run as this user (None: root).
    user: Option<&'static str>,
    /// Ids (12 digits) of the containers seen running, to look for their
    /// slirp4netns (its API socket is named after the first container).
    seen: std::cell::RefCell<Vec<String>>,
}

const ROOTLESS_USER: &str = "kiln-rootless";

/// A store with `bb:www`: busybox serving /www/index.html ("hello-from-www")
/// with `httpd` on port 8000, users root and nobody.
fn fixture(rootless: bool) -> Fixture {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests need root (CI runs as root)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    for d in ["bin", "etc", "tmp", "www", "work"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("/bin/busybox (Debian's busybox-static)");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(rootfs.join("www/index.html"), "hello-from-www\n").unwrap();
    let root = tmp.path().join("store");
    let exe = tmp.path().join("kiln");
    crate::util::copy_kiln_exe(&exe);
    let user = rootless.then_some(ROOTLESS_USER);
    if rootless {
        use std::os::unix::fs::PermissionsExt;
        let chown = Command::new("chown")
            .args(["-R", &format!("{ROOTLESS_USER}:")])
            .arg(tmp.path())
            .status()
            .unwrap();
        assert!(
            chown.success(),
            "cannot chown to {ROOTLESS_USER}: run scripts/setup-test-env as root first"
        );
        let mut dir = tmp.path().to_path_buf();
        while dir != Path::new("/") && dir.starts_with(std::env::temp_dir()) {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
            dir.pop();
        }
    }
    let f = Fixture {
        tmp,
        root,
        exe,
        user,
        seen: Default::default(),
    };
    let out = f.run_kiln(&[
        "import",
        "--change",
        r#"CMD ["httpd", "-f", "-v", "-p", "8000", "-h", "/www"]"#,
        rootfs.to_str().unwrap(),
        "bb:www",
    ]);
    assert!(out.status.success(), "import: {}", text(&out.stderr));
    f
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Fixture {
    fn command(&self, dir: &Path) -> Command {
        let mut c = match self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        c.arg("--root")
            .arg(&self.root)
            .current_dir(dir)
            .stdin(Stdio::null());
        for v in ["COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "COMPOSE_PROFILES"] {
            c.env_remove(v);
        }
        c
    }

    fn kiln_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.command(dir).args(args).output().expect("run kiln")
    }

    fn run_kiln(&self, args: &[&str]) -> Output {
        self.kiln_in(self.tmp.path(), args)
    }

    fn ok_in(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.kiln_in(dir, args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout) + &text(&out.stderr)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.ok_in(self.tmp.path(), args)
    }

    /// Remembers the ids of the containers there are now.
    fn note_ids(&self) {
        let ids = self.run_kiln(&["ps", "-a", "-q"]);
        self.seen
            .borrow_mut()
            .extend(text(&ids.stdout).split_whitespace().map(String::from));
    }

    /// A Compose project directory with this compose.yaml.
    fn project(&self, name: &str, yaml: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("compose.yaml"), yaml).unwrap();
        if let Some(u) = self.user {
            Command::new("chown")
                .args(["-R", &format!("{u}:")])
                .arg(&dir)
                .status()
                .unwrap();
        }
        dir
    }

    /// Nothing of the containers is left: no container directory, no process
    /// naming the store, no supervisor, namespace holder or slirp4netns of ours.
    fn assert_nothing_left(&self, networks: &[&str]) {
        let containers = self.root.join("containers");
        let left: Vec<_> = std::fs::read_dir(&containers)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.len() == 64)
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "containers left: {left:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        let seen = self.seen.borrow().clone();
        loop {
            let procs = our_processes(&self.exe, &self.root, &seen);
            if procs.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "processes left: {procs:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let links = text(
            &Command::new("ip")
                .args(["-o", "link"])
                .output()
                .unwrap()
                .stdout,
        );
        let nat = text(
            &Command::new("iptables")
                .args(["-t", "nat", "-S"])
                .output()
                .unwrap()
                .stdout,
        );
        let ipam = std::fs::read_to_string("/run/kiln/netavark/ipam.json").unwrap_or_default();
        for n in networks {
            let bridge = format!("kiln{}", &sha256_hex(n)[..8]);
            assert!(
                !links.contains(&bridge),
                "bridge {bridge} of {n} left:\n{links}"
            );
            assert!(
                !nat.contains(&format!("dnat name: {n} ")),
                "firewall rules of {n} left:\n{nat}"
            );
            assert!(
                !ipam.contains(&format!("\"{n}\"")),
                "addresses of {n} still held:\n{ipam}"
            );
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mountinfo.contains(self.root.to_str().unwrap()),
            "a mount under the store is left:\n{mountinfo}"
        );
    }
}

impl Drop for Fixture {
    /// However a test ends, none of its containers keeps running.
    fn drop(&mut self) {
        let ids = self.run_kiln(&["ps", "-a", "-q"]);
        for id in text(&ids.stdout).split_whitespace() {
            let _ = self.run_kiln(&["rm", "-f", id]);
        }
    }
}

fn sha256_hex(s: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    text(&out.stdout)[..64].to_string()
}

/// Processes of this test: running our kiln copy (supervisors, namespace
/// holders, sandbox helpers are /proc/self/exe of it) or naming the store.
fn our_processes(exe: &Path, root: &Path, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = text(&cmdline).replace('\0', " ");
        let exe_link = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe_link == exe
            || cmdline.contains(root.to_str().unwrap())
            || ids
                .iter()
                .any(|id| cmdline.contains(&format!("kiln-slirp-{id}")))
        {
            out.push(format!("{pid} {cmdline}"));
        }
    }
    out
}

/// Waits until `f` holds (within 20 s).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Held by the root tests that use netavark's network `kiln`, which they
/// check is gone at their end: not while another test has it up.
static KILN_NETWORK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn kiln_network() -> std::sync::MutexGuard<'static, ()> {
    KILN_NETWORK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn published_ports_two_containers_same_port(f: &Fixture) {
    // Root: netavark's network `kiln`; rootless has no netavark network.
    let networks: &[&str] = if f.user.is_some() { &[] } else { &["kiln"] };
    let (p1, p2) = (free_port(), free_port());
    let a = f.ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "-p",
        &format!("{p1}:8000"),
        "bb:www",
    ]);
    assert_eq!(a.trim().len(), 64, "run -d prints the id: {a}");
    f.ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "-p",
        &format!("127.0.0.1:{p2}:8000/tcp"),
        "bb:www",
    ]);
    // Both publish container port 8000, each in its own network namespace.
    assert!(http::wait_for_200(p1, "/", Duration::from_secs(20)).contains("hello-from-www"));
    assert!(http::wait_for_200(p2, "/", Duration::from_secs(20)).contains("hello-from-www"));
    let ps = f.ok(&["ps"]);
    assert!(ps.contains(&format!("0.0.0.0:{p1}->8000/tcp")), "{ps}");
    assert!(ps.contains(&format!("127.0.0.1:{p2}->8000/tcp")), "{ps}");
    assert!(ps.contains(&a.trim()[..12]), "{ps}");
    // httpd -v logs each request on stderr.
    eventually("a's log shows the request", || {
        f.ok(&["logs", "a"]).contains("response:200")
    });
    f.note_ids();
    let ps_line = |name: &str| -> String {
        let json = f.ok(&["ps", "-a", "--format", "json"]);
        json.lines()
            .find(|l| l.contains(&format!("\"Names\":\"{name}\"")))
            .unwrap_or_else(|| panic!("{name} not in {json}"))
            .to_string()
    };
    // kiln stop: the stop signal first. httpd, the first process of its
    // container, has no handler for SIGTERM, so the signal does nothing and
    // it is killed after -t seconds (137, as docker says).
    let asked = Instant::now();
    assert!(f.ok(&["stop", "-t", "1", "a"]).contains('a'));
    assert!(asked.elapsed() >= Duration::from_secs(1), "killed at once");
    let a_line = ps_line("a");
    assert!(a_line.contains("\"State\":\"exited\""), "{a_line}");
    assert!(a_line.contains("\"ExitCode\":137"), "{a_line}");
    assert!(
        http::get(p1, "/").is_none(),
        "a still answers after kiln stop"
    );
    // A process that handles the signal ends by itself, well before its
    // grace period; --stop-signal chooses the signal.
    for (args, signal) in [
        (&[][..], "TERM"),
        (&["--stop-signal", "SIGUSR1"][..], "USR1"),
    ] {
        let name = format!("t-{signal}");
        let script = format!(
            "trap 'echo got-{signal}; exit 7' {signal}; echo ready; while :; do sleep 0.1; done"
        );
        let mut run = vec!["run", "-d", "--name", &name];
        run.extend_from_slice(args);
        run.extend_from_slice(&["bb:www", "sh", "-c", &script]);
        f.ok(&run);
        eventually("the trap is set", || {
            f.ok(&["logs", &name]).contains("ready")
        });
        let asked = Instant::now();
        f.ok(&["stop", &name]);
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "{name} was not stopped by its signal"
        );
        assert!(
            ps_line(&name).contains("\"ExitCode\":7"),
            "{}",
            ps_line(&name)
        );
        assert!(f.ok(&["logs", &name]).contains(&format!("got-{signal}")));
        f.ok(&["rm", &name]);
    }
    // A name is unique.
    let again = f.run_kiln(&["run", "-d", "--name", "b", "bb:www"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already in use"),
        "{}",
        text(&again.stderr)
    );
    let rm = f.run_kiln(&["rm", "b"]);
    assert!(!rm.status.success(), "rm of a running container without -f");
    f.ok(&["rm", "-f", "a", "b"]);
    assert_eq!(f.ok(&["ps", "-a", "-q"]).trim(), "");
    assert!(http::get(p2, "/").is_none(), "b still answers after rm -f");
    f.assert_nothing_left(networks);

    // In the foreground: a signal stops it and the exit code says which.
    let p3 = free_port();
    let mut fg = f
        .command(f.tmp.path())
        .args(["run", "-p", &format!("{p3}:8000"), "bb:www"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(http::wait_for_200(p3, "/", Duration::from_secs(20)).contains("hello-from-www"));
    f.note_ids();
    // runuser forwards the signal to kiln.
    unsafe { libc::kill(fg.id() as i32, libc::SIGTERM) };
    let status = fg.wait().unwrap();
    if f.user.is_some() {
        // runuser passes the signal on, then ends by it itself.
        use std::os::unix::process::ExitStatusExt;
        assert!(
            status.code() == Some(143) || status.signal() == Some(libc::SIGTERM),
            "{status}"
        );
    } else {
        assert_eq!(status.code(), Some(143), "{status}");
    }
    f.assert_nothing_left(networks);
}

#[test]
fn run_d_publishes_ports_and_two_containers_share_a_container_port_needs_root() {
    // Taken before the fixture, so held until its containers are removed.
    let _kiln_network = kiln_network();
    published_ports_two_containers_same_port(&fixture(false));
}

#[test]
fn run_d_publishes_ports_rootless_needs_root_and_the_rootless_user() {
    published_ports_two_containers_same_port(&fixture(true));
}

/// `-v` and `--mount`: a host directory both ways, `:ro`, a path relative to
/// the current directory, a named volume kept under the store across
/// containers, a readonly bind and a tmpfs; `--network none` and `bridge`.
fn volumes_mounts_and_network_modes(f: &Fixture) {
    let shared = f.tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("in"), "from-host\n").unwrap();
    if let Some(u) = f.user {
        Command::new("chown")
            .args(["-R", &format!("{u}:")])
            .arg(&shared)
            .status()
            .unwrap();
    }
    let bind = format!("{}:/shared", shared.display());
    let out = f.ok(&[
        "run",
        "-v",
        &bind,
        "bb:www",
        "sh",
        "-c",
        "cat /shared/in; echo from-container > /shared/out",
    ]);
    assert!(out.contains("from-host"), "{out}");
    assert_eq!(
        std::fs::read_to_string(shared.join("out")).unwrap(),
        "from-container\n"
    );
    // Relative to the current directory (the fixture's), read-only.
    let ro = f.run_kiln(&[
        "run",
        "-v",
        "./shared:/shared:ro",
        "bb:www",
        "sh",
        "-c",
        "cat /shared/out && echo x > /shared/refused",
    ]);
    assert!(!ro.status.success(), "a write to a :ro bind worked");
    assert!(text(&ro.stdout).contains("from-container"), "{ro:?}");
    assert!(!shared.join("refused").exists());
    // A named volume outlives its container.
    f.ok(&[
        "run",
        "-v",
        "cache:/c",
        "bb:www",
        "sh",
        "-c",
        "echo kept > /c/f",
    ]);
    assert!(f.root.join("volumes/cache/_data/f").is_file());
    let out = f.ok(&[
        "run",
        "--mount",
        "type=volume,source=cache,target=/c,readonly",
        "--mount",
        &format!("type=bind,source={},target=/b,readonly", shared.display()),
        "--mount",
        "type=tmpfs,target=/scratch",
        "bb:www",
        "sh",
        "-c",
        "cat /c/f /b/in; ! touch /c/g 2>/dev/null && ! touch /b/g 2>/dev/null && \
         echo y > /scratch/y && grep ' /scratch ' /proc/mounts",
    ]);
    assert!(out.contains("kept\nfrom-host\n"), "{out}");
    assert!(out.contains("tmpfs /scratch tmpfs"), "{out}");
    assert!(!shared.join("g").exists());
    // A mistake in a spec: one message naming it.
    let bad = f.run_kiln(&["run", "--mount", "type=bind,target=/x", "bb:www", "true"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("invalid mount \"type=bind,target=/x\": source= is missing"),
        "{}",
        text(&bad.stderr)
    );
    // --network none: only loopback.
    let out = f.ok(&["run", "--network", "none", "bb:www", "cat", "/proc/net/dev"]);
    let ifaces: Vec<&str> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{out}");
    // --network bridge: an interface and an address of its own (netavark's
    // bridge as root, slirp4netns's tap rootless).
    let out = f.ok(&[
        "run",
        "--network",
        "bridge",
        "bb:www",
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
    ]);
    let (iface, address) = if f.user.is_some() {
        ("tap0", "inet 10.0.2.100/24")
    } else {
        ("eth0", "inet 10.89.")
    };
    assert!(
        out.lines()
            .any(|l| l.contains(iface) && l.contains(address)),
        "{out}"
    );
    f.note_ids();
    let networks: &[&str] = if f.user.is_some() { &[] } else { &["kiln"] };
    f.assert_nothing_left(networks);
}

#[test]
fn run_v_mount_and_network_modes_needs_root() {
    let _kiln_network = kiln_network();
    volumes_mounts_and_network_modes(&fixture(false));
}

#[test]
fn run_v_mount_and_network_modes_rootless_needs_root_and_the_rootless_user() {
    volumes_mounts_and_network_modes(&fixture(true));
}

/// A project of three busybox services: `init` seeds a named volume and
/// exits, `server` (httpd, with a healthcheck) waits for it to complete
/// successfully, `client` waits for `server` to be healthy and asks it by name.
fn three_services(project: &str, port: u16) -> String {
    format!(
        r#"name: {project}
volumes:
  data: {{}}
services:
  init:
    image: bb:www
    command: sh -c 'echo seeded > /data/seed'
    volumes: [data:/data]
  server:
    image: bb:www
    ports: ["{port}:8000"]
    # httpd ignores SIGTERM (the first process of its container, no handler).
    stop_grace_period: 1s
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8000/"]
      interval: 300ms
    depends_on:
      init: {{condition: service_completed_successfully}}
  client:
    image: bb:www
    env_file: [client.env]
    environment:
      GREETING: hi
    user: "65534"
    working_dir: /work/here
    entrypoint: ["sh", "-c"]
    command: ["echo $$GREETING $$FROM_FILE $$(id -u) $$(pwd) $$(cat /data/seed) $$(cat /host/file); wget -qO- http://server:8000/; echo done; trap 'exit 0' TERM; while :; do sleep 0.2; done"]
    volumes: ["data:/data:ro", "./host:/host:ro"]
    depends_on:
      server: {{condition: service_healthy}}
"#
    )
}

fn compose_project_with_dependencies(f: &Fixture, project: &str) {
    let port = free_port();
    let dir = f.project(project, &three_services(project, port));
    std::fs::write(dir.join("client.env"), "FROM_FILE=from-env-file\n").unwrap();
    std::fs::create_dir(dir.join("host")).unwrap();
    std::fs::write(dir.join("host/file"), "host-file\n").unwrap();
    if let Some(u) = f.user {
        Command::new("chown")
            .args(["-R", &format!("{u}:")])
            .arg(&dir)
            .status()
            .unwrap();
    }
    let up = f.ok_in(&dir, &["compose", "up", "-d"]);
    assert!(
        up.contains(&format!("Container {project}-client-1 started")),
        "{up}"
    );
    assert!(http::wait_for_200(port, "/", Duration::from_secs(20)).contains("hello-from-www"));
    eventually("client's output", || {
        f.ok_in(&dir, &["compose", "logs", "client"])
            .contains("done")
    });
    let logs = f.ok_in(&dir, &["compose", "logs", "client"]);
    assert!(
        logs.contains(&format!(
            "{project}-client-1 | hi from-env-file 65534 /work/here seeded host-file"
        )),
        "{logs}"
    );
    // `server` by its service name, from client's network namespace.
    assert!(
        logs.contains(&format!("{project}-client-1 | hello-from-www")),
        "{logs}"
    );
    let ps = f.ok_in(&dir, &["compose", "ps", "-a"]);
    assert!(ps.contains("(healthy)"), "{ps}");
    assert!(
        ps.contains(&format!("{project}-init-1")) && ps.contains("Exited (0)"),
        "{ps}"
    );
    assert!(ps.contains(&format!("{project}-client-1")), "{ps}");
    // A second up while it runs is refused.
    let again = f.kiln_in(&dir, &["compose", "up", "-d"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already up"),
        "{}",
        text(&again.stderr)
    );

    // logs -f keeps following until the service's container ends.
    let mut follow = f
        .command(&dir)
        .args(["compose", "logs", "-f", "client"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let followed = {
        let out = follow.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(out).read_to_string(&mut text);
            text
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        follow.try_wait().unwrap().is_none(),
        "logs -f ended while client runs"
    );

    f.note_ids();
    let volume = f.root.join(format!("volumes/{project}_data/_data/seed"));
    assert!(volume.is_file(), "the named volume is under the store");
    let asked = Instant::now();
    let down = f.ok_in(&dir, &["compose", "down", "-v"]);
    // client ends on SIGTERM, server is killed after its 1 s: well within
    // the default 10 s; client (which depends on server) stops first.
    assert!(asked.elapsed() < Duration::from_secs(8), "{down}");
    assert!(
        down.contains(&format!("Container {project}-server-1 removed")),
        "{down}"
    );
    let stopped = |s: &str| down.find(&format!("Container {project}-{s}-1 stopped"));
    assert!(
        stopped("client").unwrap() < stopped("server").unwrap(),
        "{down}"
    );
    assert!(stopped("init").is_none(), "{down}");
    assert!(!volume.exists(), "down -v removes the project's volumes");
    let deadline = Instant::now() + Duration::from_secs(10);
    while follow.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = follow.kill();
            let _ = follow.wait();
            panic!("logs -f still follows after down");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let followed = followed.join().unwrap();
    assert!(
        followed.contains(&format!("{project}-client-1 | done")),
        "{followed}"
    );
    assert!(
        http::get(port, "/").is_none(),
        "server still answers after down"
    );
    assert_eq!(f.ok_in(&dir, &["compose", "ps", "-a", "-q"]).trim(), "");
    f.assert_nothing_left(&[&format!("{project}_default")]);
}

#[test]
fn compose_up_d_starts_services_in_dependency_order_and_down_removes_all_needs_root() {
    let f = fixture(false);
    compose_project_with_dependencies(&f, &format!("kct{}", std::process::id()));
}

#[test]
fn compose_up_d_rootless_needs_root_and_the_rootless_user() {
    let f = fixture(true);
    compose_project_with_dependencies(&f, &format!("kcr{}", std::process::id()));
}

#[test]
fn compose_up_in_the_foreground_prefixes_lines_and_ctrl_c_stops_all_needs_root() {
    let f = fixture(false);
    let project = format!("kcf{}", std::process::id());
    let port = free_port();
    let dir = f.project(
        &project,
        &format!(
            r#"services:
  server:
    image: bb:www
    ports: ["{port}:8000"]
  talker:
    image: bb:www
    command: ["sh", "-c", "trap 'echo talker-stopping; exit 0' TERM; echo talking; while :; do sleep 0.2; done"]
    depends_on: [server]
"#
        ),
    );
    // Its own process group, signalled as a whole: what Ctrl-C on a terminal does.
    let mut up = {
        use std::os::unix::process::CommandExt;
        // Ctrl-C's signal at its default action, however the suite was started.
        let mut cmd = f.command(&dir);
        kiln_testkit::process::default_interrupt_signals(&mut cmd);
        cmd.args(["compose", "-p", &project, "up"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    // stderr line by line as it comes (the status lines), and all of it at the end.
    let (err_lines, err_rx) = std::sync::mpsc::channel::<String>();
    let stderr = up.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = err_lines.send(line);
        }
        all
    });
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, format!("{project}-talker-1 | talking"));
    assert!(http::wait_for_200(port, "/", Duration::from_secs(20)).contains("hello-from-www"));
    f.note_ids();
    // The first Ctrl-C: SIGTERM to each container (the sandbox helpers are
    // not in the terminal's group, so they do not get the SIGINT). talker
    // handles it; httpd does not, and keeps serving meanwhile.
    unsafe { libc::kill(-(up.id() as i32), libc::SIGINT) };
    let next = lines.next().unwrap().unwrap();
    assert_eq!(next, format!("{project}-talker-1 | talker-stopping"));
    // talker's shell exits just after its echo: the second Ctrl-C waits for
    // that, or it would kill talker between the two.
    let talker_exited = format!("{project}-talker-1 exited with code");
    let deadline = Instant::now() + Duration::from_secs(20);
    let said = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match err_rx.recv_timeout(left) {
            Ok(line) if line.contains(&talker_exited) => break line,
            Ok(_) => continue,
            Err(e) => panic!("no {talker_exited:?} within 20 s: {e}"),
        }
    };
    assert_eq!(said, format!("{talker_exited} 0"));
    assert!(
        http::get(port, "/").is_some(),
        "server was killed at once, not given its grace period"
    );
    // The second: killed now.
    unsafe { libc::kill(-(up.id() as i32), libc::SIGINT) };
    let status = up.wait().unwrap();
    let err = err_reader.join().unwrap();
    assert!(status.success(), "{status}: {err}");
    for said in [
        "Gracefully stopping... (press Ctrl+C again to force)".to_string(),
        format!("{project}-talker-1 exited with code 0"),
        format!("{project}-server-1 exited with code 137"),
    ] {
        assert!(err.contains(&said), "{said:?} not in: {err}");
    }
    // The containers stay listed (exited) until down, as docker compose keeps them.
    let ps = f.ok_in(&dir, &["compose", "-p", &project, "ps", "-a"]);
    assert!(
        ps.contains("Exited (137)") && ps.contains("Exited (0)"),
        "{ps}"
    );
    f.ok_in(&dir, &["compose", "-p", &project, "down"]);
    f.assert_nothing_left(&[&format!("{project}_default")]);
}

#[test]
fn a_dependency_that_fails_keeps_its_dependents_from_starting_needs_root() {
    let f = fixture(false);
    let project = format!("kcd{}", std::process::id());
    let dir = f.project(
        &project,
        r#"services:
  migrate:
    image: bb:www
    command: sh -c 'echo migration failed; exit 3'
  app:
    image: bb:www
    depends_on:
      migrate: {condition: service_completed_successfully}
"#,
    );
    let up = f.kiln_in(&dir, &["compose", "-p", &project, "up", "-d"]);
    assert!(!up.status.success());
    // One line, whatever width the error was wrapped to.
    let err = text(&up.stderr)
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        err.contains(
            "dependency failed to start: container migrate didn't complete successfully: exit 3"
        ),
        "{err}"
    );
    let ps = f.ok_in(&dir, &["compose", "-p", &project, "ps", "-a"]);
    assert!(ps.contains("Exited (3)"), "{ps}");
    let logs = f.ok_in(&dir, &["compose", "-p", &project, "logs", "migrate"]);
    assert!(logs.contains("migration failed"), "{logs}");
    f.ok_in(&dir, &["compose", "-p", &project, "down"]);
    f.assert_nothing_left(&[&format!("{project}_default")]);

    // A signal that is none: one located message, nothing started.
    let bad = f.project(
        &format!("{project}-bad"),
        "services:\n  app:\n    image: bb:www\n    stop_signal: SIGNOPE\n",
    );
    let up = f.kiln_in(&bad, &["compose", "-p", &project, "up", "-d"]);
    assert!(!up.status.success());
    let err = text(&up.stderr);
    assert!(
        err.contains("compose.yaml:4")
            && err.contains("services.app.stop_signal: \"SIGNOPE\" is not a signal"),
        "{err}"
    );
    assert_eq!(f.ok(&["ps", "-a", "-q"]).trim(), "");
}

#[test]
fn run_i_passes_standard_input_and_t_gives_a_terminal_needs_root() {
    let f = fixture(false);
    let with_input = |args: &[&str], input: &str| -> Output {
        let mut child = f
            .command(f.tmp.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    // -i: the container reads kiln's standard input to its end.
    let out = with_input(
        &[
            "run",
            "-i",
            "bb:www",
            "sh",
            "-c",
            "read x; echo got:$x; cat; exit 3",
        ],
        "first\nsecond\n",
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "got:first\nsecond\n");
    // Without -i it is /dev/null.
    let out = with_input(&["run", "bb:www", "sh", "-c", "cat; echo end"], "ignored\n");
    assert_eq!(text(&out.stdout), "end\n");
    // -t: a terminal for its standard streams (so \r\n), TERM=xterm.
    let out = with_input(
        &[
            "run",
            "-t",
            "bb:www",
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo tty $TERM",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "tty xterm\r\n");
    // -it: what kiln reads goes to the container's terminal.
    let out = with_input(
        &["run", "-it", "bb:www", "sh"],
        "echo typed-$((6*7))\nexit 4\n",
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("typed-42\r\n"),
        "{}",
        text(&out.stdout)
    );
    // Not with -d (no attach).
    let out = f.run_kiln(&["run", "-d", "-t", "bb:www"]);
    assert!(!out.status.success());
    f.assert_nothing_left(&[]);
}
