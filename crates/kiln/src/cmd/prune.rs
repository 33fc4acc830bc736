//! `kiln prune [--build-cache]`: garbage-collect the store (blobs no image or
//! build-cache record uses, unused snapshots; with `--build-cache` the cache too).

use crate::flags::{GlobalFlags, ListFormat, PruneFlags};
use crate::local_images::open_store;
use crate::render::human_size;
use miette::{miette, Result};
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: PruneFlags) -> Result<ExitCode> {
    let mut store = open_store(global)?;
    let pruned = kiln_builder::prune(&mut store, flags.build_cache)
        .map_err(|e| miette!("pruning the store: {e}"))?;
    let mut report = pruned.gc;
    report.reclaimed_bytes += pruned.reclaimed_bytes;
    if flags.format.format == ListFormat::Json {
        let v = serde_json::json!({
            "DeletedBlobs": report.removed_blobs.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "RemovedTempFiles": report.removed_temp_files,
            "RemovedSnapshots": pruned.removed_snapshots,
            "RemovedBuildCacheRecords": pruned.removed_cache_records,
            "RemovedCacheMounts": pruned.removed_cache_mounts,
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
        if pruned.removed_snapshots > 0 {
            println!(
                "Removed {} unused layer snapshot(s)",
                pruned.removed_snapshots
            );
        }
        if flags.build_cache {
            println!(
                "Removed the build cache: {} step record(s), {} cache mount(s)",
                pruned.removed_cache_records, pruned.removed_cache_mounts
            );
        }
        println!(
            "Total reclaimed space: {}",
            human_size(report.reclaimed_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
