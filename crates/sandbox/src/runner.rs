//! The caller's side: start the helper, stream the step's output, collect the
//! result, kill on request or drop.

use crate::helper::{HelperOutcome, HelperReport, HelperRequest, HELPER_ARG, REPORT_FD, STDIN_FD};
use crate::idmap::IdMap;
use crate::spec::RunSpec;
use rustix::fd::{AsRawFd, OwnedFd};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Call this first thing in `main()` of every binary that runs sandboxes (the
/// `kiln` binary, test binaries): when the process was started as the sandbox
/// helper it runs the helper and exits; otherwise it returns at once.
pub fn helper_main_if_requested() {
    match std::env::args_os().nth(1) {
        Some(a) if a == HELPER_ARG => crate::helper::helper_main(),
        Some(a) if a == crate::netns::HOLDER_ARG => crate::netns::holder_main(),
        Some(a) if a == crate::exec::EXEC_ARG => crate::exec::exec_main(),
        Some(a) if a == crate::chroot::PROBE_ARG => crate::chroot::probe_main(),
        _ => {}
    }
}

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// One line of the step's output (without its newline; invalid UTF-8 replaced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: OutputStream,
    pub line: String,
}

/// How the step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exited with {c}"),
            ExitStatus::Signal(s) => write!(f, "was killed by signal {s}"),
        }
    }
}

/// A step that ran to exit code 0.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// The last [`RunSpec::tail_lines`] lines of output (stdout and stderr interleaved).
    pub tail: Vec<String>,
    /// Things the user should know (e.g. a rootless single-id mapping).
    pub warnings: Vec<String>,
}

/// A step that ran but did not succeed.
#[derive(Clone, Debug)]
pub struct StepFailure {
    pub status: ExitStatus,
    pub tail: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot start the sandbox helper: {0}")]
    Spawn(#[source] std::io::Error),
    /// The sandbox could not be set up (mounts, user, working directory, exec…).
    #[error("{0}")]
    Setup(String),
    #[error("the command {}", .0.status)]
    StepFailed(StepFailure),
    #[error("the step was cancelled")]
    Cancelled,
    #[error("the sandbox helper failed: {0}")]
    Helper(String),
}

/// A running step. Dropping it kills the step (and its whole process tree)
/// and waits until the sandbox is torn down.
///
/// The helper dies with the *thread* that spawned it (`PR_SET_PDEATHSIG`), so
/// spawn and wait on the same thread (or use [`run`]).
pub struct RunningStep {
    child: Option<Child>,
    pidfd: Option<Arc<OwnedFd>>,
    report: Option<std::fs::File>,
    lines: mpsc::Receiver<OutputLine>,
    readers: Vec<JoinHandle<()>>,
    tail_lines: usize,
    warnings: Vec<String>,
}

/// Cancels a running step from another thread.
#[derive(Clone)]
pub struct StepKiller {
    pidfd: Option<Arc<OwnedFd>>,
}

impl StepKiller {
    /// Asks the helper to kill the step; the run then ends with
    /// [`SandboxError::Cancelled`] after the sandbox is cleaned up.
    pub fn kill(&self) {
        if let Some(fd) = &self.pidfd {
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::TERM);
        }
    }
}

/// Longest line kept in one piece; longer ones are split.
const MAX_LINE: usize = 64 * 1024;

fn read_lines(stream: OutputStream, r: impl Read, tx: mpsc::Sender<OutputLine>) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.by_ref().take(MAX_LINE as u64).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                let line = String::from_utf8_lossy(&buf).into_owned();
                if tx.send(OutputLine { stream, line }).is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts `spec` in the sandbox.
pub fn spawn(spec: &RunSpec) -> Result<RunningStep, SandboxError> {
    spawn_with_stdin(spec, None)
}

/// Starts `spec` with `stdin` as the step's standard input (for
/// [`RunSpec::stdin`]) or terminal (for [`RunSpec::tty`]).
pub fn spawn_with_stdin(
    spec: &RunSpec,
    stdin: Option<OwnedFd>,
) -> Result<RunningStep, SandboxError> {
    if (spec.stdin || spec.tty) != stdin.is_some() {
        return Err(SandboxError::Helper(
            "RunSpec::stdin/tty and the descriptor given go together".into(),
        ));
    }
    let id_map = if rustix::process::geteuid().is_root() {
        // Identity, or inside a user namespace the ids mapped there.
        IdMap::for_current_user()
    } else {
        spec.id_map.clone().unwrap_or_else(IdMap::for_current_user)
    };
    let mut warnings = Vec::new();
    if let Some(w) = &id_map.limitation {
        tracing::warn!("{w}");
        warnings.push(w.clone());
    }
    let request = serde_json::to_vec(&HelperRequest {
        spec: spec.clone(),
        id_map,
    })
    .map_err(|e| SandboxError::Helper(format!("encoding the request: {e}")))?;

    let (report_r, report_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SandboxError::Spawn(e.into()))?;
    let wfd = report_w.as_raw_fd();
    let in_fd = stdin.as_ref().map(|f| f.as_raw_fd());
    let own_group = spec.own_process_group;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(HELPER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (dup2, fcntl, setpgid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if own_group && libc::setpgid(0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The stdin descriptor first out of the way of fds 3 and 4
            // (a close-on-exec copy at 10 or above).
            let in_copy = match in_fd {
                Some(fd) => {
                    let c = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                    if c < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Some(c)
                }
                None => None,
            };
            if wfd == REPORT_FD {
                if libc::fcntl(wfd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(wfd, REPORT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = in_copy {
                // dup2 clears close-on-exec on the copy.
                if libc::dup2(fd, STDIN_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(SandboxError::Spawn)?;
    drop(report_w);
    drop(stdin);
    let pidfd = rustix::process::Pid::from_raw(child.id() as i32)
        .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok())
        .map(Arc::new);

    let (tx, lines) = mpsc::channel();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            read_lines(OutputStream::Stdout, out, tx)
        }));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            read_lines(OutputStream::Stderr, err, tx)
        }));
    }
    drop(tx);
    let mut step = RunningStep {
        child: Some(child),
        pidfd,
        report: Some(std::fs::File::from(report_r)),
        lines,
        readers,
        tail_lines: spec.tail_lines,
        warnings,
    };
    if let Some(mut stdin) = step.child.as_mut().and_then(|c| c.stdin.take()) {
        // The helper reads the whole request before doing anything else.
        if let Err(e) = stdin.write_all(&request) {
            return Err(SandboxError::Helper(format!("sending the request: {e}")));
        }
    }
    Ok(step)
}

/// Runs `spec` to completion, passing each output line to `on_line` as it
/// arrives. Exit code 0 is `Ok`; anything else is an error.
///
/// Logs at debug level how long the whole run took (helper start, namespaces,
/// mounts, the process, clean-up): the time a RUN step spends in the sandbox,
/// which `bench/build.sh` separates from the rest of a build.
pub fn run(
    spec: &RunSpec,
    on_line: &mut dyn FnMut(&OutputLine),
) -> Result<RunOutcome, SandboxError> {
    run_with(spec, on_line, |_| {})
}

/// [`run`], handing `started` the step's [`StepKiller`] once the step runs
/// (so that another thread can stop it).
pub fn run_with(
    spec: &RunSpec,
    on_line: &mut dyn FnMut(&OutputLine),
    started: impl FnOnce(StepKiller),
) -> Result<RunOutcome, SandboxError> {
    let start = std::time::Instant::now();
    let result = spawn(spec).and_then(|step| {
        started(step.killer());
        step.wait(on_line)
    });
    tracing::debug!(
        sandbox_run_ms = start.elapsed().as_secs_f64() * 1000.0,
        ok = result.is_ok(),
        "sandbox run finished"
    );
    result
}

impl RunningStep {
    /// The pid of the sandbox helper: a SIGTERM to it stops the step (the
    /// helper kills it and cleans up), from any process of the same user.
    pub fn helper_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn killer(&self) -> StepKiller {
        StepKiller {
            pidfd: self.pidfd.clone(),
        }
    }

    /// Streams output to `on_line` until the step ends, then reports.
    pub fn wait(
        mut self,
        on_line: &mut dyn FnMut(&OutputLine),
    ) -> Result<RunOutcome, SandboxError> {
        let mut tail: VecDeque<String> = VecDeque::new();
        for line in self.lines.iter() {
            on_line(&line);
            if self.tail_lines > 0 {
                if tail.len() == self.tail_lines {
                    tail.pop_front();
                }
                tail.push_back(line.line);
            }
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let status = match self.child.take() {
            Some(mut c) => c
                .wait()
                .map_err(|e| SandboxError::Helper(format!("waiting for the helper: {e}")))?,
            None => return Err(SandboxError::Helper("already waited".into())),
        };
        let mut report = Vec::new();
        if let Some(mut f) = self.report.take() {
            let _ = f.read_to_end(&mut report);
        }
        let report: HelperReport = serde_json::from_slice(&report).map_err(|_| {
            SandboxError::Helper(format!("the helper ended without a report ({status})"))
        })?;
        for e in &report.cleanup_errors {
            tracing::warn!("sandbox cleanup: {e}");
        }
        self.warnings.extend(
            report
                .cleanup_errors
                .iter()
                .map(|e| format!("sandbox cleanup: {e}")),
        );
        let tail: Vec<String> = tail.into();
        match report.outcome {
            HelperOutcome::Exited(0) => Ok(RunOutcome {
                tail,
                warnings: std::mem::take(&mut self.warnings),
            }),
            HelperOutcome::Exited(c) => Err(SandboxError::StepFailed(StepFailure {
                status: ExitStatus::Code(c),
                tail,
            })),
            HelperOutcome::Signaled(s) => Err(SandboxError::StepFailed(StepFailure {
                status: ExitStatus::Signal(s),
                tail,
            })),
            HelperOutcome::Cancelled => Err(SandboxError::Cancelled),
            HelperOutcome::SetupFailed(m) => Err(SandboxError::Setup(m)),
        }
    }
}

impl Drop for RunningStep {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.killer().kill();
        // The helper kills the step and unmounts; give it a moment, then force.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}
