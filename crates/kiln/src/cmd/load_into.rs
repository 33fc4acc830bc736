//! `kiln load-into docker|podman IMAGE...` and `--load`: stored images
//! streamed as a docker-archive into `docker load` (the daemon `$DOCKER_HOST`
//! or `/var/run/docker.sock` names) or `podman load` (podman's storage), so
//! that `docker compose up --no-build` or `podman-compose up` run them as
//! they are.

use crate::flags::{GlobalFlags, LoadEngine, LoadIntoFlags};
use crate::local_images::{named_for_export, open_store};
use kiln_oci::export::{DockerExporter, Exporter};
use kiln_oci::Store;
use miette::{miette, Result};
use std::io::Read;
use std::process::{Command, ExitCode, Stdio};

pub fn run(global: &GlobalFlags, flags: LoadIntoFlags) -> Result<ExitCode> {
    let store = open_store(global)?;
    load_into(&store, flags.engine, &flags.images)?;
    Ok(ExitCode::SUCCESS)
}

/// Streams `images` (names or ids) into `engine`'s `load`.
pub fn load_into(store: &Store, engine: LoadEngine, images: &[String]) -> Result<()> {
    let engine = engine.command();
    let named = named_for_export(store, images)?;
    let mut child = Command::new(engine)
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| miette!("cannot run `{engine} load`: {e} (is {engine} installed?)"))?;
    let stdin = child.stdin.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let exported =
        DockerExporter::new(Box::new(std::io::BufWriter::new(stdin))).export(store, &named);
    let out = child
        .wait_with_output()
        .map_err(|e| miette!("{engine} load: {e}"))?;
    let err_text = err_reader.join().unwrap_or_default();
    if !out.status.success() {
        return Err(miette!(
            "{engine} load failed ({}): {}",
            out.status,
            err_text.trim()
        ));
    }
    exported.map_err(|e| miette!("streaming the images to {engine} load: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        eprintln!("{engine}: {line}");
    }
    Ok(())
}
