//! `kiln run [-e K=V]... [-u USER] [-w DIR] [--network host|none] [--entrypoint P] IMAGE [CMD...]`:
//! runs a stored image's command in kiln's sandbox and leaves nothing behind.
//!
//! The root filesystem is an overlay: the image's layers (extracted once into the
//! store's snapshots) as lowerdirs, a temporary upperdir that is deleted when the
//! process exits. The command follows docker's rules: `--entrypoint` replaces the
//! image's ENTRYPOINT and drops its CMD; otherwise ENTRYPOINT + (the given command
//! or the image's CMD). Output is passed through line by line as it comes;
//! SIGINT/SIGTERM/SIGHUP stop the container; the exit code is the process's (128 +
//! signal when it was killed; 125 when the container could not be started, 126/127
//! when the command could not be executed / found, as docker does).

use crate::flags::{GlobalFlags, RunFlags, RunNetwork};
use crate::local_images::{find, open_store};
use kiln_builder::{Layer, LayeredView, Snapshots};
use kiln_oci::Image;
use kiln_sandbox::{
    ExitStatus, NetworkMode, OutputStream, Rootfs, RunSpec, SandboxError, UserSpec,
};
use miette::{miette, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};

/// docker's exit code when the container cannot be started.
const START_FAILED: u8 = 125;

pub fn run(global: &GlobalFlags, flags: RunFlags) -> Result<ExitCode> {
    let store = open_store(global)?;
    let found = find(&store, &flags.image)?;
    let image = found.image().clone();
    let container = image.config.config.clone().unwrap_or_default();

    let args = command_line(
        container.entrypoint.as_deref(),
        container.cmd.as_deref(),
        flags.entrypoint.as_deref(),
        &flags.command,
    );
    if args.is_empty() || args[0].is_empty() {
        return Err(miette!(
            "no command to run: the image {} has no ENTRYPOINT or CMD; give one after the image name",
            flags.image
        ));
    }
    let mut env = container.env.clone();
    for e in &flags.env {
        let entry = match e.split_once('=') {
            Some(_) => e.clone(),
            None => match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                // docker: `-e NAME` for an unset NAME sets nothing.
                Err(_) => continue,
            },
        };
        set_env(&mut env, entry);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={}", kiln_sandbox::spec::DEFAULT_PATH));
    }
    let user = flags
        .user
        .clone()
        .or(container.user.clone())
        .unwrap_or_default();
    let cwd = flags
        .workdir
        .clone()
        .or(container.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(miette!(
            "the working directory must be an absolute path, not {cwd:?}"
        ));
    }

    let snapshots = Snapshots::open(store.root()).map_err(|e| miette!("{e}"))?;
    let lowerdirs = snapshots
        .stack(&store, &layers_of(&image)?)
        .map_err(|e| miette!("preparing the image's layers: {e}"))?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(&lowerdirs, &user)));
    }
    let work = snapshots.work_dir().map_err(|e| miette!("{e}"))?;
    let upperdir = work.path().join("upper");
    let workdir = work.path().join("work");
    for d in [&upperdir, &workdir] {
        std::fs::create_dir(d).map_err(|e| miette!("creating {}: {e}", d.display()))?;
    }
    create_workdir(&lowerdirs, &upperdir, &cwd)?;

    let mut spec = RunSpec::new(
        Rootfs::Overlay {
            lowerdirs,
            upperdir,
            workdir,
        },
        args,
    );
    spec.env = env;
    spec.cwd = cwd;
    spec.user = UserSpec::new(user);
    spec.tail_lines = 0;
    match flags.network {
        RunNetwork::None => {
            spec.network = NetworkMode::None;
            spec.hostname = short_id(&image);
            spec.hosts = Some(kiln_sandbox::default_hosts(&spec.hostname));
        }
        RunNetwork::Host => {
            // docker --network host: the host's name and /etc/hosts.
            spec.network = NetworkMode::Host;
            spec.hostname = rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned();
            spec.hosts = std::fs::read("/etc/hosts").ok();
        }
    }

    let signals = ForwardedSignals::install()?;
    let step =
        kiln_sandbox::spawn(&spec).map_err(|e| miette!("cannot start the container: {e}"))?;
    signals.forward_to(step.killer());
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let result = step.wait(&mut |line| {
        let _ = match line.stream {
            OutputStream::Stdout => writeln!(stdout.lock(), "{}", line.line),
            OutputStream::Stderr => writeln!(stderr.lock(), "{}", line.line),
        };
    });
    drop(work);
    let signalled = RECEIVED.load(Ordering::SeqCst);
    let code = match result {
        Ok(_) => 0,
        Err(SandboxError::StepFailed(f)) => match f.status {
            ExitStatus::Code(c) => (c & 0xff) as u8,
            ExitStatus::Signal(s) => (128 + s).clamp(0, 255) as u8,
        },
        Err(SandboxError::Cancelled) => (128 + signalled).clamp(0, 255) as u8,
        Err(SandboxError::Setup(message)) => {
            eprintln!("kiln run: {message}");
            setup_failure_code(&message)
        }
        Err(e) => {
            eprintln!("kiln run: {e}");
            START_FAILED
        }
    };
    Ok(ExitCode::from(code))
}

/// docker's rules for what runs: `--entrypoint` (even "") replaces the image's
/// ENTRYPOINT and CMD; the command line replaces CMD.
fn command_line(
    image_entrypoint: Option<&[String]>,
    image_cmd: Option<&[String]>,
    entrypoint: Option<&str>,
    command: &[String],
) -> Vec<String> {
    let mut args: Vec<String> = match entrypoint {
        Some("") => Vec::new(),
        Some(p) => vec![p.to_string()],
        None => image_entrypoint.map(<[String]>::to_vec).unwrap_or_default(),
    };
    if !command.is_empty() {
        args.extend(command.iter().cloned());
    } else if entrypoint.is_none() {
        args.extend(image_cmd.unwrap_or_default().iter().cloned());
    }
    args
}

/// Adds `KEY=value`, replacing an earlier value of KEY.
fn set_env(env: &mut Vec<String>, entry: String) {
    let key = entry.split('=').next().unwrap_or_default();
    let prefix = format!("{key}=");
    match env.iter_mut().find(|e| e.starts_with(&prefix) || *e == key) {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

/// The image's layers with their diff_ids, base first.
fn layers_of(image: &Image) -> Result<Vec<Layer>> {
    let diff_ids = &image.config.rootfs.diff_ids;
    if diff_ids.len() != image.layers.len() {
        return Err(miette!(
            "the image's config lists {} layers but its manifest {}",
            diff_ids.len(),
            image.layers.len()
        ));
    }
    Ok(image
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(blob, diff_id)| Layer {
            blob: blob.clone(),
            diff_id: *diff_id,
        })
        .collect())
}

fn short_id(image: &Image) -> String {
    image.id().hex()[..12].to_string()
}

/// docker creates a missing working directory; kiln creates it in the temporary
/// upperdir (so it disappears with the container). The parents that exist in the
/// image show through the upperdir's copies (overlay merges directories). A path
/// through a symlink is left to the sandbox to resolve, inside the rootfs.
fn create_workdir(lowerdirs: &[PathBuf], upperdir: &Path, cwd: &str) -> Result<()> {
    let view = LayeredView::new(lowerdirs.to_vec());
    let mut path = String::new();
    for comp in cwd.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if comp == ".." {
            return Ok(());
        }
        path.push('/');
        path.push_str(comp);
        match view.lookup(&path, false) {
            Ok(Some(e)) if e.is_dir() => continue,
            // A file or a symlink: a path through it is not ours to create.
            Ok(Some(_)) | Err(_) => return Ok(()),
            Ok(None) => {
                let dir = upperdir.join(cwd.trim_start_matches('/'));
                return std::fs::create_dir_all(&dir)
                    .map_err(|e| miette!("creating the working directory {cwd}: {e}"));
            }
        }
    }
    Ok(())
}

/// The home directory of `user` from the image's `/etc/passwd` ("/" when unknown),
/// read through the merged view of its layers (symlinks resolved inside the image).
fn home_of(lowerdirs: &[PathBuf], user: &str) -> String {
    let name = user.split(':').next().unwrap_or_default();
    let name = if name.is_empty() { "0" } else { name };
    let view = LayeredView::new(lowerdirs.to_vec());
    let passwd = view
        .read_user_file("/etc/passwd")
        .ok()
        .flatten()
        .unwrap_or_default();
    if let Some(e) = kiln_sandbox::user::passwd_entries(&passwd)
        .find(|e| e.name == name || e.uid.to_string() == name)
    {
        return e.home.to_string();
    }
    if name == "0" || name == "root" {
        "/root".to_string()
    } else {
        "/".to_string()
    }
}

/// 126/127 when the command itself could not be executed, else 125.
fn setup_failure_code(message: &str) -> u8 {
    if message.starts_with("exec") {
        if message.contains("not found") || message.contains("No such file") {
            127
        } else {
            126
        }
    } else {
        START_FAILED
    }
}

/// The first stop signal received (0: none yet).
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// Write end of the pipe that wakes the forwarding thread (-1: not set up).
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

/// SIGINT, SIGTERM and SIGHUP stop the container instead of kiln. They are
/// caught with a handler (not blocked: a blocked mask would be inherited by the
/// sandbox helper, whose own handlers must run), which wakes a thread through a
/// pipe; that thread asks the helper to stop the container.
struct ForwardedSignals {
    wake: std::fs::File,
}

impl ForwardedSignals {
    /// Installs the handlers; a signal that arrives before [`Self::forward_to`]
    /// is remembered and acted on then.
    fn install() -> Result<ForwardedSignals> {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| miette!("creating a pipe: {e}"))?;
        // The write end lives as long as the process (the handler may run at any time).
        WAKE_FD.store(std::os::fd::IntoRawFd::into_raw_fd(w), Ordering::SeqCst);
        // SAFETY: sigset_t is plain data, initialised by sigemptyset.
        let mut unblock: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid sigset_t.
        unsafe { libc::sigemptyset(&mut unblock) };
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
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
                return Err(miette!(
                    "installing a signal handler: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        // Whoever started kiln may have blocked them (and threads started later
        // inherit this thread's mask).
        // SAFETY: a valid, initialised sigset_t.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &unblock, std::ptr::null_mut()) };
        Ok(ForwardedSignals {
            wake: std::fs::File::from(r),
        })
    }

    /// From now on a stop signal kills the container.
    fn forward_to(self, killer: kiln_sandbox::StepKiller) {
        let mut wake = self.wake;
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            while let Ok(1) = std::io::Read::read(&mut wake, &mut byte) {
                killer.kill();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn docker_entrypoint_and_cmd_rules() {
        let ep = v(&["/entry.sh"]);
        let cmd = v(&["node", "server.js"]);
        // Image defaults.
        assert_eq!(
            command_line(Some(&ep), Some(&cmd), None, &[]),
            v(&["/entry.sh", "node", "server.js"])
        );
        // Arguments replace CMD, not ENTRYPOINT.
        assert_eq!(
            command_line(Some(&ep), Some(&cmd), None, &v(&["sh"])),
            v(&["/entry.sh", "sh"])
        );
        // --entrypoint drops the image's CMD too.
        assert_eq!(
            command_line(Some(&ep), Some(&cmd), Some("/bin/sh"), &[]),
            v(&["/bin/sh"])
        );
        assert_eq!(
            command_line(Some(&ep), Some(&cmd), Some("/bin/sh"), &v(&["-c", "id"])),
            v(&["/bin/sh", "-c", "id"])
        );
        // --entrypoint "" clears it: the command line is all there is.
        assert_eq!(
            command_line(Some(&ep), Some(&cmd), Some(""), &v(&["id"])),
            v(&["id"])
        );
        assert!(command_line(Some(&ep), Some(&cmd), Some(""), &[]).is_empty());
        assert_eq!(command_line(None, Some(&cmd), None, &[]), cmd);
        assert!(command_line(None, None, None, &[]).is_empty());
    }

    #[test]
    fn env_overrides_replace_earlier_values() {
        let mut env = v(&["PATH=/bin", "A=1"]);
        set_env(&mut env, "A=2".into());
        set_env(&mut env, "B=x=y".into());
        assert_eq!(env, v(&["PATH=/bin", "A=2", "B=x=y"]));
    }

    #[test]
    fn home_comes_from_the_images_passwd() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("top");
        let base = tmp.path().join("base");
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::create_dir_all(&top).unwrap();
        std::fs::write(
            base.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnodejs:x:1001:1001::/home/nodejs:/bin/sh\n",
        )
        .unwrap();
        let lowers = vec![top, base];
        assert_eq!(home_of(&lowers, ""), "/root");
        assert_eq!(home_of(&lowers, "nodejs"), "/home/nodejs");
        assert_eq!(home_of(&lowers, "1001:1001"), "/home/nodejs");
        assert_eq!(home_of(&lowers, "4242"), "/");
    }

    #[test]
    fn home_is_never_read_from_the_hosts_files() {
        // The image's /etc/passwd is a symlink to a file outside the image:
        // it means the image's own (missing) file at that path.
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host-passwd");
        std::fs::write(&host, "root:x:0:0:root:/leaked:/bin/sh\n").unwrap();
        let base = tmp.path().join("base");
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::os::unix::fs::symlink(&host, base.join("etc/passwd")).unwrap();
        assert_eq!(home_of(std::slice::from_ref(&base), ""), "/root");
        // A FIFO is not read (it would block).
        std::fs::remove_file(base.join("etc/passwd")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            base.join("etc/passwd"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert_eq!(home_of(&[base], ""), "/root");
    }

    #[test]
    fn exec_failures_get_dockers_codes() {
        assert_eq!(
            setup_failure_code("exec: \"nope\": executable file not found in $PATH"),
            127
        );
        assert_eq!(
            setup_failure_code("exec /x: Permission denied (os error 13)"),
            126
        );
        assert_eq!(setup_failure_code("mounting overlay: EPERM"), 125);
    }
}
