//! `kiln import [--change INSTR]... [--platform P] [--message M] FILE|DIR|- [NAME[:TAG]]`:
//! a root filesystem (a tarball — plain, gzip, zstd or xz — or a directory)
//! becomes a one-layer image in the store, like `docker import`.
//!
//! A tarball's bytes are kept as they are (recompressed with gzip); a directory
//! is written by the layer codec with deterministic headers. `created` and the
//! history entry use `SOURCE_DATE_EPOCH` when it is set, so the same input gives
//! the same image id. `--change` takes Dockerfile instructions (ENV, CMD,
//! ENTRYPOINT, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK,
//! ONBUILD) parsed by kiln's Dockerfile frontend, with variables expanded from the
//! environment set so far, as docker does.

use crate::flags::{GlobalFlags, ImportFlags};
use crate::local_images::open_store;
use kiln_dockerfile::instructions::{parse_instructions, Kind, ShellExpand};
use kiln_dockerfile::Source;
use kiln_oci::image::{format_rfc3339, write_image, ContainerConfig, History};
use kiln_oci::layer::{write_layer, write_layer_from_tar, Compression, DiffKind, LayerOptions};
use kiln_oci::registry::Platform;
use kiln_oci::{BlobRef, ImageConfig, ImageName, ManifestFormat};
use miette::{miette, Result};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::Path;
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: ImportFlags) -> Result<ExitCode> {
    let name: Option<ImageName> = flags
        .reference
        .as_deref()
        .map(|r| r.parse().map_err(|e| miette!("{e}")))
        .transpose()?;
    let platform = match &flags.platform {
        Some(p) => Platform::parse(p).map_err(|e| miette!("--platform: {e}"))?,
        None => Platform::host(),
    };
    let source_date_epoch = source_date_epoch()?;
    let mut config = ImageConfig::new(&platform.os, &platform.architecture);
    config.variant = platform.variant.clone();
    let mut changes = ChangeState::default();
    for change in &flags.changes {
        apply_change(&mut config, &mut changes, change)?;
    }
    if config.config == Some(ContainerConfig::default()) {
        config.config = None;
    }

    let store = open_store(global)?;
    let compression = Compression::DEFAULT_GZIP;
    let mut blob = store.blob_writer().map_err(|e| miette!("{e}"))?;
    let source = flags.source.as_str();
    let layer = if source == "-" {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            return Err(miette!(
                "requested import from standard input, but it is a terminal; give a FILE or DIR, or redirect"
            ));
        }
        tarball_layer(stdin.lock(), compression, &mut blob, "standard input")?
    } else {
        let path = Path::new(source);
        let md = std::fs::metadata(path).map_err(|e| miette!("cannot import {source}: {e}"))?;
        if md.is_dir() {
            let opts = LayerOptions {
                compression,
                source_date_epoch,
            };
            write_layer(path, DiffKind::Plain, &opts, &mut blob)
                .map_err(|e| miette!("importing the directory {source}: {e}"))?
        } else {
            let file =
                std::fs::File::open(path).map_err(|e| miette!("cannot open {source}: {e}"))?;
            tarball_layer(file, compression, &mut blob, source)?
        }
    };
    let (digest, size) = blob
        .commit()
        .map_err(|e| miette!("storing the layer: {e}"))?;
    if digest != layer.digest {
        return Err(miette!(
            "internal error: the layer was stored as {digest} but hashed as {}",
            layer.digest
        ));
    }

    let created = format_rfc3339(source_date_epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }));
    config.created = Some(created.clone());
    config.rootfs.diff_ids.push(layer.diff_id);
    config.history.push(History {
        created: Some(created),
        comment: Some(
            flags
                .message
                .clone()
                .unwrap_or_else(|| format!("Imported from {source}")),
        ),
        ..History::default()
    });
    let layer_ref = BlobRef {
        media_type: layer.media_type.clone(),
        digest,
        size,
        annotations: BTreeMap::new(),
    };
    let manifest = write_image(&store, &config, &[layer_ref], ManifestFormat::Oci)
        .map_err(|e| miette!("storing the image: {e}"))?;
    match &name {
        Some(n) => store.tag(n, manifest),
        None => store.add_untagged(manifest),
    }
    .map_err(|e| miette!("{e}"))?;
    let id = kiln_oci::Digest::of(&config.to_bytes());
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

fn tarball_layer(
    input: impl Read,
    compression: Compression,
    out: &mut kiln_oci::BlobWriter<'_>,
    what: &str,
) -> Result<kiln_oci::layer::LayerDescriptor> {
    let made = write_layer_from_tar(input, compression, out)
        .map_err(|e| miette!("importing {what}: {e}"))?;
    tracing::info!(
        "{what}: {} tar entries ({} input)",
        made.entries,
        made.input_compression
    );
    Ok(made.layer)
}

/// `SOURCE_DATE_EPOCH` as seconds, when set (an empty value counts as unset).
fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => v
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| miette!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(None),
    }
}

/// What earlier `--change`s did that later ones depend on.
#[derive(Default)]
struct ChangeState {
    /// A CMD was given: a later ENTRYPOINT keeps it (otherwise ENTRYPOINT clears CMD).
    cmd_set: bool,
}

const ALLOWED: &str =
    "CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR";

/// Applies one `--change` (a Dockerfile instruction) to `config`, with the
/// meaning `kiln build` gives it ([`kiln_builder::apply_config`]).
fn apply_change(config: &mut ImageConfig, state: &mut ChangeState, text: &str) -> Result<()> {
    let src = Source::new("--change", text.to_string());
    let df = kiln_dockerfile::parse(&src).map_err(miette::Report::new)?;
    let mut instructions = parse_instructions(&df, &src).map_err(miette::Report::new)?;
    if instructions.len() != 1 {
        return Err(miette!(
            "--change {text:?}: expected exactly one instruction, found {}",
            instructions.len()
        ));
    }
    let instruction = instructions.remove(0);
    let bad = |m: String| miette!("--change {text:?}: {m}");
    match &instruction.kind {
        Kind::Cmd(_)
        | Kind::Entrypoint(_)
        | Kind::Env(_)
        | Kind::Expose(_)
        | Kind::Healthcheck(_)
        | Kind::Label(_)
        | Kind::Onbuild(_)
        | Kind::StopSignal(_)
        | Kind::User(_)
        | Kind::Volume(_)
        | Kind::Workdir(_) => {}
        other => {
            return Err(bad(format!(
                "{} cannot be used with import; allowed: {ALLOWED}",
                other.keyword()
            )))
        }
    }
    let env: Vec<(String, String)> = config
        .config
        .iter()
        .flat_map(|c| &c.env)
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect();
    let mut expand = ShellExpand::new(df.escape, &env);
    let instruction = instruction
        .expanded(&mut expand)
        .map_err(|e| bad(e.message))?;
    kiln_builder::apply_config(config, &mut state.cmd_set, &instruction.kind)
        .map_err(|e| bad(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(changes: &[&str]) -> ContainerConfig {
        let mut config = ImageConfig::new("linux", "amd64");
        let mut state = ChangeState::default();
        for c in changes {
            apply_change(&mut config, &mut state, c).unwrap();
        }
        config.config.unwrap_or_default()
    }

    #[test]
    fn env_is_set_in_order_and_expanded() {
        let c = changed(&[
            "ENV PATH=/usr/bin",
            "ENV PATH=/opt/bin:$PATH HOME=/root",
            "ENV LEGACY value with spaces",
        ]);
        assert_eq!(
            c.env,
            [
                "PATH=/opt/bin:/usr/bin",
                "HOME=/root",
                "LEGACY=value with spaces"
            ]
        );
    }

    #[test]
    fn cmd_and_entrypoint_follow_dockerfile_rules() {
        let c = changed(&["CMD echo hi"]);
        assert_eq!(c.cmd.unwrap(), ["/bin/sh", "-c", "echo hi"]);
        let c = changed(&[r#"ENTRYPOINT ["/bin/tini", "--"]"#, r#"CMD ["node"]"#]);
        assert_eq!(c.entrypoint.unwrap(), ["/bin/tini", "--"]);
        assert_eq!(c.cmd.unwrap(), ["node"]);
        // CMD given before ENTRYPOINT in the same import is kept.
        let c = changed(&[r#"CMD ["node"]"#, r#"ENTRYPOINT ["/e"]"#]);
        assert_eq!(c.cmd.unwrap(), ["node"]);
    }

    #[test]
    fn workdir_user_label_expose_volume() {
        let c = changed(&[
            "WORKDIR /app",
            "WORKDIR src/../lib",
            "USER 1001:1001",
            r#"LABEL org.opencontainers.image.title="a b" x=y"#,
            "EXPOSE 80 53/udp 8000-8001",
            "VOLUME /data",
            "STOPSIGNAL SIGINT",
        ]);
        assert_eq!(c.working_dir.as_deref(), Some("/app/lib"));
        assert_eq!(c.user.as_deref(), Some("1001:1001"));
        assert_eq!(c.labels["org.opencontainers.image.title"], "a b");
        assert_eq!(c.labels["x"], "y");
        let ports: Vec<&str> = c.exposed_ports.keys().map(String::as_str).collect();
        assert_eq!(ports, ["53/udp", "80/tcp", "8000/tcp", "8001/tcp"]);
        assert!(c.volumes.contains_key("/data"));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
    }

    #[test]
    fn forbidden_and_malformed_changes_are_errors() {
        let mut config = ImageConfig::new("linux", "amd64");
        let mut state = ChangeState::default();
        for bad in [
            "RUN echo",
            "FROM busybox",
            "EXPOSE 99999",
            "EXPOSE 80/xyz",
            "COPPY a b",
            "",
        ] {
            let err = apply_change(&mut config, &mut state, bad).unwrap_err();
            assert!(!format!("{err:?}").is_empty());
        }
        let err = apply_change(&mut config, &mut state, "RUN echo").unwrap_err();
        assert!(err.to_string().contains("allowed"), "{err}");
    }
}
