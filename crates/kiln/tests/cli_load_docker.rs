//! `kiln build --load`, `kiln load-into docker`: the image reaches a real
//! docker daemon, which runs it. `--load=podman`: podman's storage (under a
//! temporary directory), from which podman runs it. The test starts its own dockerd (Debian's
//! docker.io, installed by scripts/setup-test-env) with everything under a
//! temporary directory — its socket, data, exec root and pid file — and no
//! bridge or firewall changes (`--bridge=none --iptables=false
//! --ip-masq=false`), so it touches nothing of the machine's; containers run
//! with the host network. Needs root. A dockerd that cannot start fails the
//! test with its log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The base image's users: root and `app` (1001).
const BASE_PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1001::/:/bin/sh\n";
const BASE_GROUP: &str = "root:x:0:\napp:x:1001:\n";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A private dockerd, stopped (and its mounts removed) on drop.
pub(crate) struct Dockerd {
    dir: PathBuf,
    child: Child,
}

impl Dockerd {
    pub(crate) fn start(dir: &Path) -> Dockerd {
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start dockerd ({e}): install docker.io (scripts/setup-test-env)")
            });
        let d = Dockerd {
            dir: dir.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = d.docker(&["version", "--format", "{{.Server.Version}}"]);
            if v.status.success() {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default();
                panic!(
                    "dockerd did not answer within 60 s: {}\nits log:\n{log}",
                    text(&v.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    pub(crate) fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    pub(crate) fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_HOST", self.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("the docker command line")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // What dockerd leaves mounted under its directories (its netns file).
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.to_string_lossy().into_owned();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").args(["-l", p]).status();
        }
    }
}

#[test]
fn build_load_hands_the_image_to_a_docker_daemon_that_runs_it_needs_root_and_dockerd() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (CI runs as root)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let kiln = |args: &[&str], docker_host: &str| -> Output {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(&root)
            .args(args)
            .env("DOCKER_HOST", docker_host)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // A base: busybox with a user.
    let rootfs = tmp.path().join("rootfs");
    kiln_testkit::busybox::rootfs_with_users(&rootfs, BASE_PASSWD, BASE_GROUP).unwrap();
    let out = kiln(&["import", rootfs.to_str().unwrap(), "base:1"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1 AS build\nRUN echo built-by-kiln > /msg\n\
         FROM base:1\nCOPY --from=build /msg /msg\nUSER app\nCMD [\"sh\", \"-c\", \"cat /msg; id -u\"]\n",
    )
    .unwrap();

    let docker = Dockerd::start(tmp.path());
    let host = docker.host();
    let out = kiln(
        &[
            "build",
            "--progress=plain",
            "--load",
            "-t",
            "x:1",
            ctx.to_str().unwrap(),
        ],
        &host,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("loading into docker"),
        "{}",
        text(&out.stderr)
    );
    let run = docker.docker(&["run", "--rm", "--network", "host", "x:1"]);
    assert!(run.status.success(), "docker run: {}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "built-by-kiln\n1001\n");

    // The same image id in docker as in kiln: the config is handed over as it is.
    let kiln_id = text(&kiln(&["images", "-q", "--no-trunc", "x:1"], "").stdout);
    let docker_id = text(
        &docker
            .docker(&["image", "inspect", "-f", "{{.Id}}", "x:1"])
            .stdout,
    );
    assert_eq!(kiln_id.trim(), docker_id.trim());

    // kiln load-into under another name.
    let out = kiln(&["tag", "x:1", "y:2"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = kiln(&["load-into", "docker", "y:2"], &host);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = docker.docker(&["run", "--rm", "--network", "host", "y:2", "cat", "/msg"]);
    assert_eq!(
        text(&run.stdout),
        "built-by-kiln\n",
        "{}",
        text(&run.stderr)
    );

    // kiln compose build --load: the service's image, named as compose names it.
    std::fs::write(
        ctx.join("compose.yaml"),
        "name: loadtest\nservices:\n  app:\n    build: .\n",
    )
    .unwrap();
    let compose_file = ctx.join("compose.yaml");
    let out = kiln(
        &[
            "compose",
            "-f",
            compose_file.to_str().unwrap(),
            "build",
            "--progress=plain",
            "--load",
        ],
        &host,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = docker.docker(&["run", "--rm", "--network", "host", "loadtest-app"]);
    assert_eq!(
        text(&run.stdout),
        "built-by-kiln\n1001\n",
        "{}",
        text(&run.stderr)
    );

    // A daemon that is not there: one clear error.
    let out = kiln(
        &["load-into", "docker", "y:2"],
        &format!("unix://{}", tmp.path().join("nothing.sock").display()),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("docker load failed"),
        "{}",
        text(&out.stderr)
    );
}

/// `kiln build --load=podman` and `kiln load-into podman`: the image lands
/// in podman's storage, and podman runs it. Everything of podman's is under
/// a temporary directory (storage.conf and containers.conf through
/// CONTAINERS_STORAGE_CONF / CONTAINERS_CONF, which `podman load` started by
/// kiln inherits): vfs storage (no mounts), no events log, cgroupfs, and
/// ulimits within this machine's hard limits (podman's defaults as root are
/// above them). Needs root and Debian's podman (scripts/setup-test-env).
#[test]
fn build_load_podman_puts_the_image_in_podmans_storage_which_runs_it_needs_root_and_podman() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root (CI runs as root)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    std::fs::write(
        p.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            p.join("graph").display(),
            p.join("run").display()
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("containers.conf"),
        format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\ntmp_dir = \"{}\"\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n\
             [network]\nnetwork_config_dir = \"{}\"\n",
            p.join("tmp").display(),
            p.join("networks").display()
        ),
    )
    .unwrap();
    let with_env = |mut c: Command| -> Output {
        c.env("CONTAINERS_STORAGE_CONF", p.join("storage.conf"))
            .env("CONTAINERS_CONF", p.join("containers.conf"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let root = p.join("store");
    let kiln = |args: &[&str]| -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.arg("--root").arg(&root).args(args);
        with_env(c)
    };
    let podman = |args: &[&str]| -> Output {
        let mut c = Command::new("podman");
        c.args(args);
        with_env(c)
    };
    let rootfs = p.join("rootfs");
    kiln_testkit::busybox::rootfs_with_users(&rootfs, BASE_PASSWD, BASE_GROUP).unwrap();
    let out = kiln(&["import", rootfs.to_str().unwrap(), "base:1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ctx = p.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1\nRUN echo built-by-kiln > /msg\nUSER app\nCMD [\"sh\", \"-c\", \"cat /msg; id -u\"]\n",
    )
    .unwrap();
    let out = kiln(&[
        "build",
        "--progress=plain",
        "--load=podman",
        "-t",
        "p:1",
        ctx.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = podman(&["run", "--rm", "--network", "host", "p:1"]);
    assert!(run.status.success(), "podman run: {}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "built-by-kiln\n1001\n");
    // The same image id in podman as in kiln.
    let kiln_id = text(&kiln(&["images", "-q", "--no-trunc", "p:1"]).stdout);
    let podman_id = text(&podman(&["image", "inspect", "-f", "{{.Id}}", "p:1"]).stdout);
    assert_eq!(
        kiln_id.trim().trim_start_matches("sha256:"),
        podman_id.trim()
    );
    // load-into under another name.
    assert!(kiln(&["tag", "p:1", "q:2"]).status.success());
    let out = kiln(&["load-into", "podman", "q:2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).stdout);
    assert!(listed.contains("localhost/q:2"), "{listed}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(p.to_str().unwrap()),
        "podman left a mount:\n{mounts}"
    );
}
