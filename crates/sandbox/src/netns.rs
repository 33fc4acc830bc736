//! Network namespaces made before a container starts, so that a network tool
//! (netavark, slirp4netns) can configure them and sandboxes can join them
//! ([`crate::RunSpec::join_netns`]).
//!
//! A namespace lives as long as a process is in it: [`NetnsHolder`] starts
//! `/proc/self/exe __kiln-netns-holder` in a new network namespace (its `lo`
//! up), which only waits for its standard input to close. Its namespace is
//! `/proc/PID/ns/net`; dropping the holder ends the process, and with it the
//! namespace once no container is left in it. Made inside kiln's user
//! namespace (rootless), the network namespace belongs to that one, so the
//! sandboxes kiln starts can join it and mount its sysfs.

use crate::sys::{ctx, R};
use crate::SandboxError;
use rustix::fd::AsFd;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// argv[1] that turns a kiln (or test) binary into a namespace holder.
pub(crate) const HOLDER_ARG: &str = "__kiln-netns-holder";

/// A process holding a new network namespace open.
pub struct NetnsHolder {
    child: Option<Child>,
}

impl NetnsHolder {
    /// Creates a network namespace with `lo` up.
    pub fn create() -> Result<NetnsHolder, SandboxError> {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg(HOLDER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: unshare(2) is a plain system call, fine between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| SandboxError::Setup(format!("cannot create a network namespace: {e}")))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        if line.trim() != "ready" {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(SandboxError::Setup(format!(
                "cannot set up a network namespace: {}",
                err.trim()
            )));
        }
        Ok(NetnsHolder { child: Some(child) })
    }

    /// The holder's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The namespace, as a path for `setns` (netavark, the sandbox).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid()))
    }
}

impl Drop for NetnsHolder {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// The holder process: `lo` up, say so, wait for standard input to close.
pub(crate) fn holder_main() -> ! {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    // Ctrl-C reaches the whole process group; the namespace must outlive the
    // containers in it until its owner has detached them (then it closes stdin).
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: setting a signal to be ignored.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    if let Err(e) = crate::helper::loopback_up() {
        eprintln!("{e}");
        std::process::exit(1);
    }
    println!("ready");
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    while let Ok(n) = stdin.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    std::process::exit(0)
}

/// Moves the calling (single-threaded) process into the network namespace at `path`.
pub(crate) fn join(path: &Path) -> R<()> {
    let f = ctx(std::fs::File::open(path), || {
        format!("opening the network namespace {}", path.display())
    })?;
    ctx(
        rustix::thread::move_into_link_name_space(
            f.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        ),
        || format!("joining the network namespace {}", path.display()),
    )
}
