//! `kiln inspect`: docker's `image inspect` JSON for stored images.

use crate::flags::{GlobalFlags, InspectFlags};
use crate::local_images::{all_images, find, open_store};
use miette::{miette, Result};
use serde_json::{json, Value};
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: InspectFlags) -> Result<ExitCode> {
    let store = open_store(global)?;
    let all = all_images(&store)?;
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for arg in &flags.images {
        let target = match find(&store, arg) {
            Ok(t) => t,
            Err(e) => {
                missing.push(e.to_string());
                continue;
            }
        };
        let image = target.image();
        let repo_tags: Vec<String> = all
            .iter()
            .filter(|f| f.image.manifest_ref.digest == image.manifest_ref.digest)
            .filter_map(|f| f.entry.name.as_ref().map(|n| n.to_string()))
            .collect();
        let c = &image.config;
        let config = match &c.config {
            Some(cc) => serde_json::to_value(cc).map_err(|e| miette!("{e}"))?,
            None => json!({}),
        };
        let mut v = json!({
            "Id": image.id().to_string(),
            "RepoTags": repo_tags,
            "RepoDigests": [],
            "Parent": "",
            "Comment": "",
            "Created": c.created.clone().unwrap_or_default(),
            "Author": c.author.clone().unwrap_or_default(),
            "Config": config,
            "Architecture": c.architecture,
            "Os": c.os,
            "Size": image.stored_size(),
            "RootFS": {
                "Type": c.rootfs.kind,
                "Layers": c.rootfs.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            },
            "Descriptor": {
                "mediaType": image.manifest_ref.media_type,
                "digest": image.manifest_ref.digest.to_string(),
                "size": image.manifest_ref.size,
            },
        });
        if let (Some(variant), Value::Object(m)) = (&c.variant, &mut v) {
            m.insert("Variant".into(), json!(variant));
        }
        out.push(v);
    }
    let text = serde_json::to_string_pretty(&out).map_err(|e| miette!("{e}"))?;
    println!("{text}");
    if !missing.is_empty() {
        for m in &missing {
            eprintln!("Error: {m}");
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
