//! Small system-call helpers the helper process, the step and kiln's own user
//! namespace share: errors as text with what was being done ([`R`], [`ctx`]),
//! `unshare(2)` and `waitpid(2)`. A leaf module.

use rustix::thread::UnshareFlags;

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
