//! `kiln build --ssh` and `RUN --mount=type=ssh` end to end (needs root, as
//! every test running RUN steps; and OpenSSH's ssh-agent, ssh-add and
//! ssh-keygen on the host, which the tests fail without). The image: the test
//! busybox plus the host's `ssh-add` and the libraries `ldd` lists for it,
//! copied in by the Dockerfile from the context.

use crate::util::{kiln, store_busybox};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Setup {
    dir: tempfile::TempDir,
    root: PathBuf,
    ctx: PathBuf,
}

/// A key pair `NAME` / `NAME.pub` (ed25519, no passphrase) in `dir`; returns
/// the private key's path and its SHA256 fingerprint.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (openssh-client) is needed");
    assert!(st.success());
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&key)
        .output()
        .unwrap();
    let fp = String::from_utf8(out.stdout).unwrap();
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    assert!(fp.starts_with("SHA256:"), "{fp}");
    (key, fp)
}

/// The host's `ssh-add` (as `/bin/ssh-add`) with its libraries (at their
/// absolute paths), under `ctx/sshbin/`.
fn copy_ssh_add(ctx: &Path) {
    let bin = Path::new("/usr/bin/ssh-add");
    let ldd = Command::new("ldd").arg(bin).output().unwrap();
    let mut files = vec![bin.to_path_buf()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            files.push(PathBuf::from(p));
        }
    }
    for (i, f) in files.into_iter().enumerate() {
        // The test busybox's PATH is /bin.
        let at = if i == 0 {
            Path::new("bin/ssh-add")
        } else {
            f.strip_prefix("/").unwrap()
        };
        let to = ctx.join("sshbin").join(at);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&f, &to).unwrap();
    }
}

fn setup(dockerfile_tail: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    store_busybox(&root);
    copy_ssh_add(&ctx);
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM busybox:test\nCOPY sshbin/ /\n{dockerfile_tail}"),
    )
    .unwrap();
    Setup { dir, root, ctx }
}

impl Setup {
    fn build(&self, args: &[&str], auth_sock: Option<&Path>) -> Output {
        let mut k = kiln();
        k.root(&self.root)
            .args(["build", "--progress=plain"])
            .args(args)
            .arg(&self.ctx);
        match auth_sock {
            Some(s) => k.env("SSH_AUTH_SOCK", s),
            None => k.env_remove("SSH_AUTH_SOCK"),
        };
        k.output()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An `ssh-agent -D` of the test's own, holding `key`; killed on drop.
struct Agent {
    child: std::process::Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path, key: &Path) -> Agent {
        let socket = dir.join("test-agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..500 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let st = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &socket)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        Agent { child, socket }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ssh_key_files_reach_the_step_and_nothing_reaches_the_layer() {
    let s = setup(
        "RUN --mount=type=ssh echo \"sock=$SSH_AUTH_SOCK\" && ssh-add -l && (ssh-add -D || echo delete-refused) && ssh-add -l\n",
    );
    let (key, fp) = keygen(s.dir.path(), "kiln-test-key");
    let tar = s.dir.path().join("image.tar");
    let ssh = format!("default={}", key.display());
    let out_spec = format!("type=tar,dest={}", tar.display());
    let out = s.build(
        &["--ssh", &ssh, "-t", "ssh:1", "-o", &out_spec, "--no-cache"],
        None,
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("sock=/run/buildkit/ssh_agent.0"), "{err}");
    // Listed twice: removing the identities is refused by kiln's proxy.
    assert_eq!(err.matches(&fp).count(), 2, "{err}");
    assert!(err.contains("delete-refused"), "{err}");
    // The image: no mount point, no socket, no key.
    let data = fs::read(&tar).unwrap();
    let key_text = fs::read_to_string(&key).unwrap();
    let key_body: &str = key_text.lines().nth(1).unwrap();
    let hay = String::from_utf8_lossy(&data);
    assert!(!hay.contains(key_body), "the private key is in the image");
    assert!(!hay.contains("ssh_agent"), "the socket is in the image");
    assert!(
        !hay.contains("run/buildkit"),
        "the mount point is in the image"
    );

    // Another key, same id: the step's cache key does not change (only the
    // id is in it, as in BuildKit).
    let (key2, _) = keygen(s.dir.path(), "other-key");
    let ssh2 = format!("default={}", key2.display());
    let out = s.build(&["--ssh", &ssh2, "-t", "ssh:1"], None);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("CACHED"), "{err}");
    assert!(
        !err.contains("kiln-test-key") && !err.contains("ssh_agent.0"),
        "{err}"
    );
}

#[test]
fn the_users_agent_is_forwarded_to_a_non_root_step() {
    let s = setup(
        "USER nobody\nRUN --mount=type=ssh,id=git,target=/tmp/agent,uid=65534 test \"$SSH_AUTH_SOCK\" = /tmp/agent && ssh-add -l\n",
    );
    let (key, fp) = keygen(s.dir.path(), "agent-key");
    let agent = Agent::start(s.dir.path(), &key);
    // `--ssh git` alone is the agent of $SSH_AUTH_SOCK.
    let out = s.build(&["--ssh", "git"], Some(&agent.socket));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&fp), "{err}");
    // The same with the socket named: `--ssh git=SOCKET`.
    let named = format!("git={}", agent.socket.display());
    let out = s.build(&["--ssh", &named, "--no-cache"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&fp));
}

#[test]
fn a_required_ssh_mount_without_ssh_is_a_located_error() {
    let s = setup("RUN --mount=type=ssh,required=true ssh-add -l\n");
    let out = s.build(&[], None);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(
        err.contains("no SSH key \"default\" forwarded from the client"),
        "{err}"
    );
    assert!(err.contains("--ssh default"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // An optional one is left out (SSH_AUTH_SOCK still names it, as in BuildKit).
    fs::write(
        s.ctx.join("Dockerfile"),
        "FROM busybox:test\nRUN --mount=type=ssh test ! -e \"$SSH_AUTH_SOCK\" && echo no-agent\n",
    )
    .unwrap();
    let out = s.build(&[], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("no-agent"));
    // `--ssh default` with no agent to name.
    let out = s.build(&["--ssh", "default"], None);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("--ssh default: SSH_AUTH_SOCK is not set"),
        "{err}"
    );
}

#[test]
fn compose_build_ssh_entries_are_ssh_flags() {
    let s = setup("RUN --mount=type=ssh,required=true ssh-add -l\n");
    let (key, fp) = keygen(s.dir.path(), "compose-key");
    fs::write(
        s.ctx.join("compose.yaml"),
        format!(
            "services:\n  app:\n    build:\n      context: .\n      ssh:\n        - default={}\n",
            key.display()
        ),
    )
    .unwrap();
    let out = kiln()
        .root(&s.root)
        .current_dir(&s.ctx)
        .env_remove("SSH_AUTH_SOCK")
        .args(["compose", "build", "--progress=plain"])
        .output();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&fp), "{err}");
}

/// Rootless: kiln in its user namespace forwards a key file's agent and the
/// user's own agent socket (needs root to switch to the test user made by
/// scripts/setup-test-env).
#[test]
fn rootless_builds_forward_keys_and_the_users_agent() {
    use kiln_testkit::rootless::{self, Scratch};
    rootless::require_root_and_user();
    let scratch = Scratch::new("ssh");
    let home = scratch.dir.clone();
    let ctx = home.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    copy_ssh_add(&ctx);
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:test\nCOPY sshbin/ /\nRUN --mount=type=ssh,required=true ssh-add -l\n",
    )
    .unwrap();
    let rootfs = home.join("rootfs");
    kiln_testkit::busybox::rootfs(&rootfs).unwrap();
    let st = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(home.join("busybox.tar"))
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let (key, fp) = keygen(&home, "rootless-key");
    rootless::chown_tree(&home);
    let kiln_bin = rootless::executable_for_user(&crate::util::kiln_path(), &home);
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let out = rootless::as_user(&kiln_bin, &home, &[], env)
            .args(args)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(out.status.success(), "kiln {args:?}: {err}");
        err
    };
    let tar = home.join("busybox.tar");
    run(&[], &["import", tar.to_str().unwrap(), "busybox:test"]);
    let ssh = format!("default={}", key.display());
    let err = run(
        &[],
        &[
            "build",
            "--progress=plain",
            "--ssh",
            &ssh,
            ctx.to_str().unwrap(),
        ],
    );
    assert!(err.contains(&fp), "{err}");
    // The user's own agent, started as the user.
    let sock = home.join("agent.sock");
    let script = format!(
        "ssh-agent -D -a {sock} >/dev/null 2>&1 & a=$!; sleep 0.5; SSH_AUTH_SOCK={sock} ssh-add {key} 2>/dev/null; SSH_AUTH_SOCK={sock} {kiln} build --progress=plain --no-cache --ssh default {ctx} 2>&1; s=$?; kill $a; exit $s",
        sock = sock.display(),
        key = key.display(),
        kiln = kiln_bin.display(),
        ctx = ctx.display()
    );
    let out = rootless::as_user(Path::new("/bin/sh"), &home, &[], &[])
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains(&fp), "{text}");
}
