//! Running a second process in a running container (a healthcheck's test):
//! `/proc/self/exe __kiln-sandbox-exec` joins the namespaces of the
//! container's first process (its pid from [`crate::RunSpec::pid_file`]),
//! forks into its PID namespace, and execs as the container's processes do:
//! the user resolved from the container's `/etc/passwd`, Docker's default
//! capabilities, `no_new_privs`, Docker's default seccomp profile.

use crate::container::{
    capget, capset, default_capability_mask, exec_program, prctl, read_limited, reset_signals,
};
use crate::spec::UserSpec;
use crate::sys::{ctx, wait_pid, ExecChild, Exit, R};
use crate::user::resolve_user;
use crate::{ExitStatus, SandboxError};
use rustix::fd::AsFd;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// argv[1] that turns a kiln (or test) binary into the exec helper.
pub(crate) const EXEC_ARG: &str = "__kiln-sandbox-exec";
/// Exit code of the exec helper when it could not start the command.
const SETUP_FAILED: i32 = 125;

/// What to run in the container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecSpec {
    /// Exec form; `args[0]` without a `/` is looked up in `PATH` of `env`.
    pub args: Vec<String>,
    /// `KEY=value` entries: the complete environment.
    pub env: Vec<String>,
    pub cwd: String,
    pub user: UserSpec,
}

#[derive(Serialize, Deserialize)]
struct ExecRequest {
    pid: u32,
    spec: ExecSpec,
}

/// How the command ended, with the start of its output (stdout and stderr
/// together, at most 4 KiB, as docker keeps of a healthcheck).
#[derive(Clone, Debug)]
pub struct ExecOutcome {
    pub status: ExitStatus,
    pub output: String,
}

const KEEP_OUTPUT: usize = 4096;

/// Runs `spec` in the container whose first process is `pid`; kills it after
/// `timeout`. A command that could not be started is an error.
pub fn exec_in(pid: u32, spec: &ExecSpec, timeout: Duration) -> Result<ExecOutcome, SandboxError> {
    let request = serde_json::to_vec(&ExecRequest {
        pid,
        spec: spec.clone(),
    })
    .map_err(|e| SandboxError::Helper(format!("encoding the exec request: {e}")))?;
    let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::Spawn(e.into()))?;
    let out_w2 = out_w.try_clone().map_err(SandboxError::Spawn)?;
    let mut child = Command::new("/proc/self/exe")
        .arg(EXEC_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(out_w2))
        .spawn()
        .map_err(SandboxError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&request)
            .map_err(|e| SandboxError::Helper(format!("sending the exec request: {e}")))?;
    }
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::fs::File::from(out_r).read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child
                    .wait()
                    .map_err(|e| SandboxError::Helper(format!("waiting: {e}")))?;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(SandboxError::Helper(format!("waiting: {e}"))),
        }
    };
    let mut output = reader.join().unwrap_or_default();
    if timed_out {
        return Err(SandboxError::Setup(format!(
            "the command did not end within {}s",
            timeout.as_secs_f64()
        )));
    }
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().unwrap_or(128 + status.signal().unwrap_or(9));
    if code == SETUP_FAILED {
        let text = String::from_utf8_lossy(&output);
        if let Some(msg) = text.lines().find_map(|l| l.strip_prefix("kiln exec: ")) {
            return Err(SandboxError::Setup(msg.to_string()));
        }
    }
    output.truncate(KEEP_OUTPUT);
    Ok(ExecOutcome {
        status: ExitStatus::Code(code),
        output: String::from_utf8_lossy(&output).into_owned(),
    })
}

/// Entry point of the exec helper; never returns.
pub(crate) fn exec_main() -> ! {
    let code = match exec_helper() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln exec: {e}");
            SETUP_FAILED
        }
    };
    std::process::exit(code)
}

fn exec_helper() -> R<i32> {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let mut buf = Vec::new();
    ctx(std::io::stdin().lock().read_to_end(&mut buf), || {
        "reading the exec request".into()
    })?;
    let req: ExecRequest = ctx(serde_json::from_slice(&buf), || {
        "decoding the exec request".into()
    })?;
    let null = ctx(std::fs::File::open("/dev/null"), || {
        "opening /dev/null".into()
    })?;
    // SAFETY: plain dup2 onto fd 0.
    unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) };
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType as T};
    let ns = |name: &str| format!("/proc/{}/ns/{name}", req.pid);
    // The user namespace only when it is another one (joining one's own fails).
    let same_user_ns = std::fs::metadata(ns("user"))
        .and_then(|a| std::fs::metadata("/proc/self/ns/user").map(|b| a.ino() == b.ino()))
        .unwrap_or(true);
    let mut order = Vec::new();
    if !same_user_ns {
        order.push(("user", T::User));
    }
    order.extend([
        ("ipc", T::InterProcessCommunication),
        ("uts", T::HostNameAndNISDomainName),
        ("net", T::Network),
        ("pid", T::ProcessID),
        ("mnt", T::Mount),
    ]);
    // Open all first: after joining the mount namespace /proc is the container's.
    let mut files = Vec::new();
    for (name, kind) in order {
        let f = ctx(std::fs::File::open(ns(name)), || {
            format!("the container's {name} namespace (is it running?)")
        })?;
        files.push((name, kind, f));
    }
    for (name, kind, f) in &files {
        ctx(move_into_link_name_space(f.as_fd(), Some(*kind)), || {
            format!("joining the container's {name} namespace")
        })?;
    }
    drop(files);
    let child = ExecChild::fork(SETUP_FAILED, || match exec_command(&req.spec) {
        Ok(never) => match never {},
        Err(e) => e,
    })?;
    let pid = child.pid;
    let setup_error = child.setup_error();
    let status = wait_pid(pid)?;
    if !setup_error.is_empty() {
        return Err(setup_error);
    }
    Ok(match status {
        Exit::Code(c) => c,
        Exit::Signal(s) => 128 + s,
    })
}

/// In the forked child, inside the container's namespaces (root and working
/// directory are the container's root after joining its mount namespace).
fn exec_command(spec: &ExecSpec) -> R<std::convert::Infallible> {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if spec.args.is_empty() {
        return Err("no command to run".into());
    }
    let user = resolve_user(
        &spec.user.0,
        read_limited("/etc/passwd").as_deref(),
        read_limited("/etc/group").as_deref(),
    )
    .map_err(|e| format!("user {}: {e}", spec.user.0))?;
    ctx(rustix::process::chdir(spec.cwd.as_str()), || {
        format!("working directory {}", spec.cwd)
    })?;
    let last_cap: u32 = read_limited("/proc/sys/kernel/cap_last_cap")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let keep = default_capability_mask();
    for cap in 0..=last_cap.min(63) {
        if keep & (1u64 << cap) == 0 {
            let _ = prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0);
        }
    }
    let gids = user.additional_gids();
    // SAFETY: setgroups with a valid slice; the child is single-threaded.
    // Refused with a single-id mapping: the process then keeps no extra groups.
    unsafe { libc::setgroups(gids.len(), gids.as_ptr()) };
    // SAFETY: plain id syscalls.
    if unsafe { libc::setresgid(user.gid, user.gid, user.gid) } < 0 {
        return Err(format!(
            "setgid {}: {}",
            user.gid,
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: plain id syscalls.
    if unsafe { libc::setresuid(user.uid, user.uid, user.uid) } < 0 {
        return Err(format!(
            "setuid {}: {}",
            user.uid,
            std::io::Error::last_os_error()
        ));
    }
    if user.uid == 0 {
        capset(keep & capget()?)?;
    } else {
        capset(0)?;
    }
    ctx(prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0), || {
        "setting no_new_privs".into()
    })?;
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    reset_signals();
    // The container's seccomp profile (Docker's default).
    let caps = crate::container::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| c.1)
        .collect();
    let filter = crate::seccomp::Target::native(caps)
        .map(|t| crate::seccomp::default_filter(&t))
        .transpose()?;
    exec_program(&spec.args, &spec.env, &user.home, filter.as_deref())
}
