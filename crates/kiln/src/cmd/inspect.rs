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
        let stored = &target.target().entry.target;
        let repo_tags: Vec<String> = all
            .iter()
            .filter(|f| f.entry.target.digest == stored.digest)
            .filter_map(|f| f.entry.name.as_ref().map(|n| n.to_string()))
            .collect();
        let c = &image.config;
        let config = match &c.config {
            Some(cc) => serde_json::to_value(cc).map_err(|e| miette!("{e}"))?,
            None => json!({}),
        };
        let mut v = json!({
            "Id": target.target().id().to_string(),
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
                "mediaType": stored.media_type,
                "digest": stored.digest.to_string(),
                "size": stored.size,
            },
        });
        // A multi-platform image: the fields above are the host's platform's
        // (as docker shows them); its manifests are listed by platform.
        if kiln_oci::image::media_type::is_index(&stored.media_type) {
            let entries =
                kiln_oci::index::read_index(&store, stored).map_err(|e| miette!("{e}"))?;
            let manifests: Vec<Value> = entries
                .iter()
                .map(|e| {
                    json!({
                        "platform": e.platform.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "unknown/unknown".into()),
                        "mediaType": e.manifest.media_type,
                        "digest": e.manifest.digest.to_string(),
                        "size": e.manifest.size,
                        "annotations": e.manifest.annotations,
                    })
                })
                .collect();
            if let Value::Object(m) = &mut v {
                m.insert("Manifests".into(), json!(manifests));
            }
        }
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
