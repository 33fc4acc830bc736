//! `kiln prune`: garbage-collect the store.

use crate::flags::{GlobalFlags, PruneFlags};
use crate::local_images::open_store;
use crate::render::human_size;
use miette::{miette, Result};
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: PruneFlags) -> Result<ExitCode> {
    let mut store = open_store(global)?;
    let report = store.gc().map_err(|e| miette!("pruning the store: {e}"))?;
    if flags.format.format == "json" {
        let v = serde_json::json!({
            "DeletedBlobs": report.removed_blobs.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "RemovedTempFiles": report.removed_temp_files,
            "SpaceReclaimed": report.reclaimed_bytes,
        });
        println!("{v}");
    } else {
        if !report.removed_blobs.is_empty() {
            println!("Deleted blobs:");
            for d in &report.removed_blobs {
                println!("deleted: {d}");
            }
            println!();
        }
        println!(
            "Total reclaimed space: {}",
            human_size(report.reclaimed_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
