//! Small system-call helpers the helper process, the step and kiln's own user
//! namespace share: errors as text with what was being done ([`R`], [`ctx`]),
//! `unshare(2)`, `waitpid(2)` and forking a child that sets itself up and
//! execs ([`ExecChild`]). A leaf module.

use rustix::fd::OwnedFd;
use rustix::thread::UnshareFlags;
use std::io::{Read, Write};

pub(crate) type R<T> = Result<T, String>;

/// Adds what was being done to an OS error.
pub(crate) fn ctx<T, E: std::fmt::Display>(r: Result<T, E>, what: impl FnOnce() -> String) -> R<T> {
    r.map_err(|e| format!("{}: {e}", what()))
}

/// unshare(2) for the helper and the step, which are single-threaded.
pub(crate) fn unshare(flags: UnshareFlags) -> rustix::io::Result<()> {
    // SAFETY: both processes that call this are single-threaded (the helper is
    // a fresh exec; the step is its forked child), so no other thread can see
    // the namespace or fs-struct change.
    unsafe { rustix::thread::unshare_unsafe(flags) }
}

pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

pub(crate) fn wait_pid(pid: libc::pid_t) -> R<Exit> {
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(format!("waitpid: {e}"));
        }
        if libc::WIFEXITED(status) {
            return Ok(Exit::Code(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Exit::Signal(libc::WTERMSIG(status)));
        }
    }
}

/// A child forked to set itself up and exec a command. An error it meets
/// before its exec reaches the parent through a close-on-exec pipe, so the
/// parent tells "could not start" (a message) from "started" (the pipe closed
/// by the exec, nothing written).
pub(crate) struct ExecChild {
    pub(crate) pid: libc::pid_t,
    errors: OwnedFd,
}

impl ExecChild {
    /// Forks. The child drops its copy of the read end and runs
    /// `setup_and_exec`, which returns only with the error that stopped it;
    /// the child writes that to the pipe and exits with `exit_code`.
    /// The caller must be single-threaded (the child may then allocate).
    pub(crate) fn fork(exit_code: i32, setup_and_exec: impl FnOnce() -> String) -> R<Self> {
        let (err_r, err_w) = ctx(
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC),
            || "pipe".into(),
        )?;
        // SAFETY: every caller is a single-threaded helper process.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(err_r);
            let err = setup_and_exec();
            let _ = std::fs::File::from(err_w).write_all(err.as_bytes());
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(exit_code) };
        }
        drop(err_w);
        Ok(ExecChild { pid, errors: err_r })
    }

    /// Waits until the child has exec'd or given up: the error it reported,
    /// empty when its exec succeeded.
    pub(crate) fn setup_error(self) -> String {
        let mut error = String::new();
        let _ = std::fs::File::from(self.errors).read_to_string(&mut error);
        error
    }
}
