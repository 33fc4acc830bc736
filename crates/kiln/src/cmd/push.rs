//! `kiln push NAME[:TAG] [DEST]`.

use crate::flags::{GlobalFlags, PushFlags};
use crate::local_images::{find, open_store, with_blobs, Target};
use kiln_oci::layer::Compression;
use kiln_oci::registry::{push, PushOptions, Reference, RegistryContext};
use miette::{miette, IntoDiagnostic, Result};
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: PushFlags) -> Result<ExitCode> {
    let store = open_store(global)?;
    let entry = match find(&store, &flags.image)? {
        Target::Name(_, found) => found.entry,
        Target::Id(_, mut all) => all.remove(0).entry,
    };
    let dest_text = match &flags.destination {
        Some(d) => d.clone(),
        None => entry
            .name
            .as_ref()
            .map(|n| n.to_string())
            .ok_or_else(|| miette!("image {} has no name; give a destination", flags.image))?,
    };
    let dest = Reference::parse(&dest_text).map_err(|e| miette!("{e}"))?;
    if dest.digest.is_some() {
        return Err(miette!("push to a tag, not a digest: {dest_text}"));
    }
    let ctx =
        RegistryContext::load(flags.authfile.authfile.as_deref()).map_err(|e| miette!("{e}"))?;
    let options = PushOptions {
        chunk_size: (flags.chunk_size > 0).then_some(flags.chunk_size << 20),
    };
    let target = with_blobs(&store, &entry.target, Compression::default())?;
    let report = push(&store, &target, &dest, &options, &ctx).map_err(|e| miette!("push {e}"))?;
    let digest = report.digest.map(|d| d.to_string()).unwrap_or_default();
    if let Some(f) = &flags.digestfile {
        std::fs::write(f, &digest).into_diagnostic()?;
    }
    if flags.quiet {
        println!("{digest}");
    } else {
        println!(
            "{dest}: {} uploaded, {} mounted, {} already present",
            report.uploaded.len(),
            report.mounted.len(),
            report.skipped.len()
        );
        println!("Digest: {digest}");
    }
    Ok(ExitCode::SUCCESS)
}
