//! SIGINT, SIGTERM and SIGHUP as a request to stop: a handler notes the
//! signal and wakes a thread through a pipe, which calls back. They are
//! caught, not blocked: a blocked mask would be inherited by the sandbox
//! helpers, whose own handlers must run.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first stop signal received (0: none yet).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// Write end of the pipe that wakes the watching thread (-1: not set up).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    let _ = RECEIVED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a valid byte.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

/// The first stop signal received so far, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Installs the handlers (once per process) and calls `on_stop` on a thread
/// for every stop signal, the first one included even if it came before.
pub fn on_stop(on_stop: impl Fn(i32) + Send + 'static) -> std::io::Result<()> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // The write end lives as long as the process (the handler may run at any time).
    WAKE_FD.store(std::os::fd::IntoRawFd::into_raw_fd(w), Ordering::SeqCst);
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut unblock: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid sigset_t.
    unsafe { libc::sigemptyset(&mut unblock) };
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // A SIGINT or SIGHUP that kiln's caller ignores (`nohup kiln run …`,
        // `kiln run … &` in a script) stays ignored, as for `kiln build`.
        if sig != libc::SIGTERM && kiln_sandbox::signal_is_ignored(sig) {
            continue;
        }
        // SAFETY: a zeroed sigaction is valid; the handler only touches atomics
        // and calls write(2).
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaddset(&mut unblock, sig);
            libc::sigaction(sig, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // Whoever started kiln may have blocked them (threads started later
    // inherit this thread's mask).
    // SAFETY: a valid, initialised sigset_t.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &unblock, std::ptr::null_mut()) };
    let mut wake = std::fs::File::from(r);
    std::thread::spawn(move || {
        if let Some(s) = received() {
            on_stop(s);
        }
        let mut byte = [0u8; 1];
        while let Ok(1) = std::io::Read::read(&mut wake, &mut byte) {
            on_stop(received().unwrap_or(libc::SIGTERM));
        }
    });
    Ok(())
}
