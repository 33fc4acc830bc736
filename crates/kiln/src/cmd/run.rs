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
use crate::flags::{GlobalFlags, RunFlags};
use crate::local_images::{find, open_store};
use kiln_runtime::network::DEFAULT_BRIDGE;
use kiln_runtime::{Containers, Group, Member, NetworkChoice, Output, PortMapping, StopFlag};
use kiln_sandbox::{OutputLine, OutputStream};
use miette::{miette, Result};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

pub fn run(global: &GlobalFlags, flags: RunFlags) -> Result<ExitCode> {
    if flags.tty || flags.interactive {
        return Err(miette!(
            "kiln run -i/-t (standard input, a terminal) is not supported yet"
        ));
    }
    let store = open_store(global)?;
    let found = find(&store, &flags.image)?;
    let image = found.image().clone();
    let containers = Containers::open(store.root()).map_err(|e| miette!("{e}"))?;
    let base = std::env::current_dir().map_err(|e| miette!("the current directory: {e}"))?;

    let mut env = Vec::new();
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
    let network = match (flags.network.as_deref(), ports.is_empty()) {
        (Some("host"), false) | (Some("none"), false) => {
            return Err(miette!(
                "-p publishes ports of a container with its own network: use it without --network or with --network bridge"
            ))
        }
        (Some("host"), true) | (None, true) => NetworkChoice::Host,
        (Some("none"), true) => NetworkChoice::None,
        _ => NetworkChoice::Bridge {
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
        ..Default::default()
    };
    let config = container_config(&store, &containers, &flags.image, &image, opts)?;
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
    let ended = kiln_runtime::supervise(&containers, &group, &Passthrough, &stop, &mut |_| {})
        .map_err(|e| miette!("{e}"))?;
    let Some(ended) = ended.into_iter().next() else {
        return Err(miette!("the container did not run"));
    };
    if let Some(e) = &ended.error {
        eprintln!("kiln run: {e}");
    }
    Ok(ExitCode::from((ended.code & 0xff) as u8))
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
