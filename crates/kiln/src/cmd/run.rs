//! `kiln run [-d] [--name N] [-p P]... [-v V]... [--network host|none|bridge] … IMAGE [CMD...]`:
//! runs a stored image's command as a container (`kiln_runtime`).
//!
//! The root filesystem is an overlay: the image's layers (extracted once into
//! the store's snapshots) as lowerdirs, an upperdir in the container's
//! directory, removed when it ends. The command follows docker's rules
//! (`crate::containers`). In the foreground the container is supervised by
//! this process: output passes through line by line as it comes,
//! SIGINT/SIGTERM/SIGHUP stop it, the exit code is the process's (128 + signal
//! when it was killed; 125 when it could not be started, 126/127 when the
//! command could not be executed / found, as docker does), and the container
//! is removed afterwards. With `-d` a supervisor of its own runs it in the
//! background and the id is printed; `kiln ps`, `logs`, `stop` and `rm` find it.

use crate::containers::{container_config, parse_mount, parse_volume, ContainerOptions};
use crate::flags::{GlobalFlags, RunFlags, RunNetwork};
use crate::local_images::{find, open_store};
use kiln_runtime::network::DEFAULT_BRIDGE;
use kiln_runtime::{Containers, Group, Member, NetworkChoice, Output, PortMapping, StopFlag};
use kiln_sandbox::{OutputLine, OutputStream};
use miette::{miette, Result};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

pub fn run(global: &GlobalFlags, flags: RunFlags) -> Result<ExitCode> {
    if flags.detach && (flags.tty || flags.interactive) {
        return Err(miette!(
            "-i/-t with -d: kiln has no attach yet; run it in the foreground"
        ));
    }
    let store = open_store(global)?;
    let found = find(&store, &flags.image)?;
    let image = match &flags.platform {
        Some(p) => {
            let p =
                kiln_oci::registry::Platform::parse(p).map_err(|e| miette!("--platform: {e}"))?;
            kiln_oci::image::load_image_for(&store, &found.target().entry.target, Some(&p))
                .map_err(|e| miette!("{}: {e}", flags.image))?
        }
        None => found.image().clone(),
    };
    // A foreign platform's program runs under its emulator: there must be one.
    let platform = kiln_oci::image::config_platform(&image.config);
    if !image.config.architecture.is_empty() {
        kiln_sandbox::emulation::support(&platform.to_string(), &platform.architecture)
            .map_err(|why| miette!("{}: {why}", flags.image))?;
    }
    let containers = Containers::open(store.root()).map_err(|e| miette!("{e}"))?;
    let base = std::env::current_dir().map_err(|e| miette!("the current directory: {e}"))?;

    let mut env = Vec::new();
    if flags.tty {
        // docker's TERM for a container with a terminal (-e wins).
        env.push("TERM=xterm".to_string());
    }
    for e in &flags.env {
        match e.split_once('=') {
            Some(_) => env.push(e.clone()),
            None => {
                // docker: `-e NAME` for an unset NAME sets nothing.
                if let Ok(v) = std::env::var(e) {
                    env.push(format!("{e}={v}"));
                }
            }
        }
    }
    let ports = flags
        .publish
        .iter()
        .map(|p| PortMapping::parse(p).map_err(|e| miette!("{e}")))
        .collect::<Result<Vec<_>>>()?;
    let network = match (flags.network, ports.is_empty()) {
        (Some(RunNetwork::Host | RunNetwork::None), false) => {
            return Err(miette!(
                "-p publishes ports of a container with its own network: use it without --network or with --network bridge"
            ))
        }
        (Some(RunNetwork::Host), true) | (None, true) => NetworkChoice::Host,
        (Some(RunNetwork::None), true) => NetworkChoice::None,
        (Some(RunNetwork::Bridge), _) | (None, false) => NetworkChoice::Bridge {
            network: DEFAULT_BRIDGE.to_string(),
            aliases: Vec::new(),
            dns: false,
        },
    };
    let mut mounts = Vec::new();
    for v in &flags.volumes {
        mounts.push(parse_volume(v, store.root(), &base)?);
    }
    for m in &flags.mounts {
        mounts.push(parse_mount(m, store.root(), &base)?);
    }
    let opts = ContainerOptions {
        name: flags.name.clone(),
        env,
        user: flags.user.clone(),
        workdir: flags.workdir.clone(),
        entrypoint: flags.entrypoint.as_ref().map(|e| vec![e.clone()]),
        command: (!flags.command.is_empty()).then(|| flags.command.clone()),
        network: Some(network),
        ports,
        mounts,
        auto_remove: !flags.detach || flags.rm,
        stop_signal: flags
            .stop_signal
            .as_deref()
            .map(|s| {
                kiln_runtime::state::parse_signal(s)
                    .ok_or_else(|| miette!("--stop-signal: {s:?} is not a signal"))
            })
            .transpose()?,
        stop_grace_ms: flags.stop_timeout.map(|s| s * 1000),
        ..Default::default()
    };
    let mut config = container_config(&store, &containers, &flags.image, &image, opts)?;
    config.spec.tty = flags.tty;
    config.spec.stdin = flags.interactive && !flags.tty;
    containers.create(&config).map_err(|e| miette!("{e}"))?;
    // The upper dir is made with the container; a missing working dir goes in it.
    if let kiln_sandbox::Rootfs::Overlay {
        lowerdirs,
        upperdir,
        ..
    } = &config.spec.rootfs
    {
        crate::containers::create_workdir(lowerdirs, upperdir, &config.spec.cwd)?;
    }
    let group = Group {
        members: vec![Member {
            id: config.id.clone(),
            depends_on: Vec::new(),
        }],
    };
    if flags.detach {
        if let Err(e) = kiln_runtime::start_detached(store.root(), &group) {
            return Err(miette!("cannot start the container: {e}"));
        }
        println!("{}", config.id);
        return Ok(ExitCode::SUCCESS);
    }
    let stop = StopFlag::default();
    let s = stop.clone();
    kiln_runtime::signals::on_stop(move |sig| {
        kiln_runtime::STOP_SIGNAL.store(sig, Ordering::SeqCst);
        s.stop();
    })
    .map_err(|e| miette!("installing signal handlers: {e}"))?;
    // -i: kiln's stdin; -t: a pseudo-terminal, copied to and from ours.
    let (stdin, terminal) = if flags.tty {
        let t = Terminal::open(flags.interactive)?;
        (Some(t.slave()?), Some(t))
    } else if flags.interactive {
        let fd = rustix::io::dup(std::io::stdin()).map_err(|e| miette!("standard input: {e}"))?;
        (Some(fd), None)
    } else {
        (None, None)
    };
    let copying = terminal.map(Terminal::copy);
    let ended =
        kiln_runtime::supervise(&containers, &group, &Passthrough, &stop, &mut |_| {}, stdin)
            .map_err(|e| miette!("{e}"));
    if let Some(c) = copying {
        c.finish();
    }
    let ended = ended?;
    let Some(ended) = ended.into_iter().next() else {
        return Err(miette!("the container did not run"));
    };
    if let Some(e) = &ended.error {
        eprintln!("kiln run: {e}");
    }
    Ok(ExitCode::from((ended.code & 0xff) as u8))
}

/// `-t`: a pseudo-terminal whose slave is the container's terminal; its
/// master is copied to kiln's stdout (and, with `-i`, kiln's stdin to it, with
/// kiln's own terminal in raw mode meanwhile, so keys such as Ctrl-C reach
/// the container's terminal as they are).
struct Terminal {
    master: std::fs::File,
    slave_path: std::ffi::CString,
    interactive: bool,
}

/// The copying threads of a [`Terminal`], and kiln's terminal settings to restore.
struct Copying {
    output: std::thread::JoinHandle<()>,
    saved: Option<libc::termios>,
}

impl Terminal {
    fn open(interactive: bool) -> Result<Terminal> {
        // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on a descriptor we own.
        unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(miette!(
                    "cannot open a pseudo-terminal: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let master = <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd);
            let mut name = [0 as libc::c_char; 128];
            if libc::grantpt(fd) != 0
                || libc::unlockpt(fd) != 0
                || libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) != 0
            {
                return Err(miette!(
                    "cannot set up a pseudo-terminal: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // Our window size, when we have a terminal.
            let mut ws: libc::winsize = std::mem::zeroed();
            if libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(fd, libc::TIOCSWINSZ, &ws);
            }
            Ok(Terminal {
                master,
                slave_path: std::ffi::CStr::from_ptr(name.as_ptr()).to_owned(),
                interactive,
            })
        }
    }

    fn slave(&self) -> Result<std::os::fd::OwnedFd> {
        // SAFETY: open(2) of the slave's path.
        let fd = unsafe {
            libc::open(
                self.slave_path.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(miette!(
                "cannot open {:?}: {}",
                self.slave_path,
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: a descriptor just opened.
        Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    }

    fn copy(self) -> Copying {
        let mut saved = None;
        if self.interactive {
            // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed, then filled, termios.
            unsafe {
                let mut t: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(0, &mut t) == 0 {
                    saved = Some(t);
                    libc::cfmakeraw(&mut t);
                    libc::tcsetattr(0, libc::TCSANOW, &t);
                }
            }
            if let Ok(mut to) = self.master.try_clone() {
                // Ends with kiln's stdin (or with kiln).
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to);
                });
            }
        }
        let mut from = self.master;
        let output = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match std::io::Read::read(&mut from, &mut buf) {
                    // EIO: every slave descriptor is closed (the container ended).
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                }
            }
        });
        Copying { output, saved }
    }
}

impl Copying {
    fn finish(self) {
        let _ = self.output.join();
        if let Some(t) = self.saved {
            // SAFETY: restoring the settings read before.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

/// A foreground container's output, as it comes, on kiln's stdout/stderr.
struct Passthrough;

impl Output for Passthrough {
    fn line(&self, _: &kiln_runtime::ContainerConfig, line: &OutputLine) {
        let _ = match line.stream {
            OutputStream::Stdout => writeln!(std::io::stdout().lock(), "{}", line.line),
            OutputStream::Stderr => writeln!(std::io::stderr().lock(), "{}", line.line),
        };
    }
    fn note(&self, _: &kiln_runtime::ContainerConfig, _: &str) {}
}

#[cfg(test)]
mod tests {
    use kiln_runtime::setup_failure_code;

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
