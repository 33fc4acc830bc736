//! A `RUN --mount=type=secret` step end to end below the executor: the secret
//! is readable in a real sandbox step, and after the step's upperdir is
//! written as a layer, the image (base layer + step layer, config with the
//! RUN in its history) stored and exported as an OCI layout and as a docker
//! archive, the secret's bytes occur nowhere in the export: not in any blob,
//! not in any decompressed layer, not in the config or history. Needs root
//! (CI runs as root).
//!
//! Custom harness (`harness = false`): this binary is also the sandbox
//! helper, so `main` calls the helper hook first.

use kiln_oci::export::{DockerExporter, Exporter, NamedImage, OciExporter};
use kiln_oci::image::{write_image, History, ImageConfig, ManifestFormat};
use kiln_oci::layer::{write_layer, DiffKind, LayerOptions};
use kiln_oci::store::{BlobRef, Store};
use kiln_sandbox::{MountSpec, NetworkMode, OutputLine, Rootfs, RunSpec, SandboxError};
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitCode};

mod support;
use support::busybox_rootfs;

const SECRET: &[u8] = b"s3cr3t-kiln-test-value-4f1c9a";

/// The step's command: it checks the secret by its sha256 (so the command, which
/// goes into the image's history verbatim, does not hold the secret itself).
fn step_command() -> String {
    let want = kiln_oci::Digest::of(SECRET).hex();
    format!("test \"$(sha256sum < /run/secrets/token | cut -d' ' -f1)\" = {want} && echo ok > /ok")
}

fn store_layer(
    store: &Store,
    dir: &Path,
    kind: DiffKind,
) -> Result<(BlobRef, kiln_oci::Digest), String> {
    let mut w = store.blob_writer().map_err(|e| e.to_string())?;
    let opts = LayerOptions {
        source_date_epoch: Some(0),
        ..LayerOptions::default()
    };
    let desc = write_layer(dir, kind, &opts, &mut w).map_err(|e| e.to_string())?;
    let (digest, size) = w.commit().map_err(|e| e.to_string())?;
    if digest != desc.digest || size != desc.size {
        return Err(format!(
            "blob {digest} ({size} B) differs from the layer descriptor {desc:?}"
        ));
    }
    let blob = BlobRef {
        media_type: desc.media_type.clone(),
        digest,
        size,
        annotations: Default::default(),
    };
    Ok((blob, desc.diff_id))
}

/// Every file below `dir`, and the decompressed form of every gzip file, must
/// not contain `needle`. Returns how many files were searched.
fn assert_absent(dir: &Path, needle: &[u8]) -> Result<usize, String> {
    let mut searched = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            let md = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
            if md.is_dir() {
                stack.push(path);
                continue;
            }
            if !md.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut forms = vec![bytes.clone()];
            if bytes.starts_with(&[0x1f, 0x8b]) {
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_end(&mut plain)
                    .map_err(|e| format!("gunzip {}: {e}", path.display()))?;
                forms.push(plain);
            }
            for form in forms {
                if form.windows(needle.len()).any(|w| w == needle) {
                    return Err(format!("the secret occurs in {}", path.display()));
                }
            }
            searched += 1;
        }
    }
    Ok(searched)
}

fn secret_is_absent_from_the_exported_image(base: &Path) -> Result<(), String> {
    let lower = base.join("lower");
    busybox_rootfs(&lower).map_err(|e| format!("building the busybox rootfs: {e}"))?;
    let (upper, work) = (base.join("upper"), base.join("work"));
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let script = step_command();
    let mut spec = RunSpec::new(
        Rootfs::Overlay {
            lowerdirs: vec![lower.clone()],
            upperdir: upper.clone(),
            workdir: work,
        },
        vec!["/bin/sh".into(), "-c".into(), script],
    );
    spec.network = NetworkMode::None;
    spec.mounts.push(MountSpec::Secret {
        target: "/run/secrets/token".into(),
        content: SECRET.to_vec(),
        mode: 0o400,
        uid: 0,
        gid: 0,
    });
    kiln_sandbox::run(&spec, &mut |_: &OutputLine| {}).map_err(|e| match e {
        SandboxError::StepFailed(f) => format!(
            "the step could not read the secret: {} {:?}",
            f.status, f.tail
        ),
        e => e.to_string(),
    })?;
    if std::fs::read(upper.join("ok")).map_err(|e| format!("the step's /ok: {e}"))? != b"ok\n" {
        return Err("the step did not write /ok".into());
    }

    let store = Store::open(base.join("store")).map_err(|e| e.to_string())?;
    let (base_layer, base_diff) = store_layer(&store, &lower, DiffKind::Plain)?;
    let (run_layer, run_diff) = store_layer(&store, &upper, DiffKind::OverlayUpper)?;
    let mut config = ImageConfig::new("linux", "amd64");
    config.rootfs.diff_ids = vec![base_diff, run_diff];
    config.history = vec![
        History {
            created_by: Some("busybox rootfs".into()),
            ..History::default()
        },
        History {
            created_by: Some(format!(
                "RUN --mount=type=secret,id=token {}",
                step_command()
            )),
            ..History::default()
        },
    ];
    let manifest = write_image(
        &store,
        &config,
        &[base_layer, run_layer],
        ManifestFormat::Oci,
    )
    .map_err(|e| e.to_string())?;
    let images = [NamedImage {
        name: None,
        target: manifest,
    }];

    let oci_dir = base.join("export-oci");
    OciExporter::dir(&oci_dir)
        .export(&store, &images)
        .map_err(|e| e.to_string())?;
    let docker_tar = base.join("export-docker.tar");
    let file = std::fs::File::create(&docker_tar).map_err(|e| e.to_string())?;
    DockerExporter::new(file)
        .export(&store, &images)
        .map_err(|e| e.to_string())?;
    let docker_dir = base.join("export-docker");
    std::fs::create_dir_all(&docker_dir).map_err(|e| e.to_string())?;
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&docker_tar)
        .arg("-C")
        .arg(&docker_dir)
        .status()
        .map_err(|e| e.to_string())?;
    if !untar.success() {
        return Err("tar -xf of the docker archive failed".into());
    }

    // The search must be able to see the secret: a control file holding it is found.
    let control = base.join("control");
    std::fs::create_dir_all(&control).map_err(|e| e.to_string())?;
    std::fs::write(control.join("x"), SECRET).map_err(|e| e.to_string())?;
    if assert_absent(&control, SECRET).is_ok() {
        return Err("the search does not find a planted secret".into());
    }

    let n_oci = assert_absent(&oci_dir, SECRET)?;
    let n_docker = assert_absent(&docker_dir, SECRET)?;
    // oci-layout, index.json, manifest, config, two layers at least.
    if n_oci < 6 || n_docker < 6 {
        return Err(format!(
            "too few files searched: oci {n_oci}, docker {n_docker}"
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    kiln_sandbox::helper_main_if_requested();
    support::run_as_root_in_tempdir(
        "secret_is_absent_from_the_exported_image",
        secret_is_absent_from_the_exported_image,
    )
}
