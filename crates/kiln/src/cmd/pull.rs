//! `kiln pull [--platform P] REF`.

use crate::flags::{GlobalFlags, PullFlags};
use crate::local_images::open_store;
use kiln_oci::registry::{pull_with, LayerUnpacker, Platform, Reference, RegistryContext};
use miette::{miette, Result};
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: PullFlags) -> Result<ExitCode> {
    let reference = Reference::parse(&flags.reference).map_err(|e| miette!("{e}"))?;
    let platform = flags
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .map_err(|e| miette!("{e}"))?;
    let ctx =
        RegistryContext::load(flags.authfile.authfile.as_deref()).map_err(|e| miette!("{e}"))?;
    let store = open_store(global)?;
    // Layers are unpacked into snapshots while they download, so the first
    // build on the image does not extract them.
    let unpacker = kiln_builder::Snapshots::for_pull(&store);
    let pulled = pull_with(
        &store,
        &reference,
        platform.as_ref(),
        &ctx,
        unpacker.as_ref().map(|u| u as &dyn LayerUnpacker),
    )
    .map_err(|e| miette!("pull {e}"))?;
    if flags.quiet {
        println!("{}", pulled.resolved_digest);
    } else {
        if pulled.source_registry != reference.registry {
            println!("Pulled through mirror {}", pulled.source_registry);
        }
        // Like docker: one line per layer, then the digest.
        let image = kiln_oci::image::load_image(&store, &pulled.manifest)
            .map_err(|e| miette!("pull {reference}: {e}"))?;
        for layer in &image.layers {
            let status = if pulled.downloaded.contains(&layer.digest) {
                "Pull complete"
            } else {
                "Already exists"
            };
            println!("{}: {status}", &layer.digest.hex()[..12]);
        }
        println!(
            "{}: {} blob(s) downloaded",
            reference,
            pulled.downloaded.len()
        );
        println!("Digest: {}", pulled.resolved_digest);
        println!("Manifest: {}", pulled.manifest.digest);
    }
    Ok(ExitCode::SUCCESS)
}
