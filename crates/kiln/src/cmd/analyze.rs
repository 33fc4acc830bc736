//! `kiln analyze IMAGE`: what a stored image holds, per stage and layer
//! (`kiln_insight`), as text, JSON or HTML, with CI gates (exit code 3).

use crate::analysis::{html, text, Gates, GATE_FAILED};
use crate::flags::{AnalyzeFlags, AnalyzeFormat, GlobalFlags};
use crate::local_images::{find, open_store};
use kiln_oci::Store;
use miette::{miette, Result};
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: AnalyzeFlags) -> Result<ExitCode> {
    let gates = Gates::from_flags(&flags.gates)?;
    let store = open_store(global)?;
    let target = find(&store, &flags.image)?;
    crate::local_images::fetch_left_layers(&store, &target.target().entry.target)?;
    let report = kiln_insight::analyze(&store, target.image(), &flags.image)
        .map_err(|e| miette!("analyzing {}: {e}", flags.image))?;
    let out = match flags.format {
        AnalyzeFormat::Text => text::render(&report),
        AnalyzeFormat::Json => {
            let mut s = serde_json::to_string_pretty(&report).unwrap_or_default();
            s.push('\n');
            s
        }
        AnalyzeFormat::Html => html::render(&report),
    };
    match &flags.output {
        Some(p) => std::fs::write(p, out).map_err(|e| miette!("writing {}: {e}", p.display()))?,
        None => print!("{out}"),
    }
    Ok(gate_exit(&gates, &report))
}

/// Checks the gates: each failed one said on stderr, and exit code 3.
pub fn gate_exit(gates: &Gates, report: &kiln_insight::Report) -> ExitCode {
    let failed = gates.check(report);
    for f in &failed {
        eprintln!("kiln analyze: gate failed: {f}");
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(GATE_FAILED)
    }
}

/// `kiln build --analyze`: the text report of the image just stored, and the gates.
pub fn after_build(
    store: &Store,
    manifest: &kiln_oci::BlobRef,
    name: &str,
    gates: &Gates,
) -> Result<ExitCode> {
    crate::local_images::fetch_left_layers(store, manifest)?;
    let image = kiln_oci::image::load_image(store, manifest).map_err(|e| miette!("{e}"))?;
    let report =
        kiln_insight::analyze(store, &image, name).map_err(|e| miette!("analyzing {name}: {e}"))?;
    print!("{}", text::render(&report));
    Ok(gate_exit(gates, &report))
}
