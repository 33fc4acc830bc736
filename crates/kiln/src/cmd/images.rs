//! `kiln images`.

use crate::flags::{GlobalFlags, ImagesFlags, ListFormat};
use crate::local_images::{all_images, open_store};
use crate::render::{created_at, human_since, human_size, now_unix, table};
use kiln_oci::image::parse_rfc3339;
use kiln_oci::ImageName;
use miette::{miette, Result};
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: ImagesFlags) -> Result<ExitCode> {
    let store = open_store(global)?;
    // "name" filters the repository; "name:tag" also the tag.
    let filter = match &flags.reference {
        Some(r) => {
            let n: ImageName = r.parse().map_err(|e| miette!("{e}"))?;
            Some((
                n.repository().to_string(),
                r.contains(':').then(|| n.tag().to_string()),
            ))
        }
        None => None,
    };
    let now = now_unix();
    let mut rows = Vec::new();
    let mut json_lines = Vec::new();
    for f in all_images(&store)? {
        let (repo, tag) = match &f.entry.name {
            Some(n) => (n.repository().to_string(), n.tag().to_string()),
            None => ("<none>".to_string(), "<none>".to_string()),
        };
        if let Some((frepo, ftag)) = &filter {
            if &repo != frepo || ftag.as_ref().is_some_and(|t| t != &tag) {
                continue;
            }
        }
        let id = f.id();
        let id_text = if flags.no_trunc.no_trunc {
            id.to_string()
        } else {
            id.short()
        };
        let created = f.image.config.created.as_deref().and_then(parse_rfc3339);
        let since = created
            .map(|c| human_since(now - c))
            .unwrap_or_else(|| "N/A".into());
        let size = human_size(stored_size(&store, &f));
        if flags.quiet.quiet {
            if !rows.iter().any(|r: &Vec<String>| r[0] == id_text) {
                rows.push(vec![id_text]);
            }
            continue;
        }
        if flags.format.format == ListFormat::Json {
            json_lines.push(serde_json::json!({
                "Containers": "N/A",
                "CreatedAt": created.map(created_at).unwrap_or_else(|| "N/A".into()),
                "CreatedSince": since,
                "Digest": f.entry.target.digest.to_string(),
                "ID": id_text,
                "Repository": repo,
                "SharedSize": "N/A",
                "Size": size,
                "Tag": tag,
                "UniqueSize": "N/A",
                "VirtualSize": size,
            }));
        } else {
            rows.push(vec![repo, tag, id_text, since, size]);
        }
    }
    if flags.quiet.quiet {
        for r in rows {
            println!("{}", r[0]);
        }
    } else if flags.format.format == ListFormat::Json {
        for l in json_lines {
            println!("{l}");
        }
    } else {
        print!(
            "{}",
            table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], &rows)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The bytes an image takes in the store: its config and layers, or for a
/// multi-platform image every platform's (a blob they share counted once).
fn stored_size(store: &kiln_oci::Store, f: &crate::local_images::Found) -> u64 {
    if !kiln_oci::image::media_type::is_index(&f.entry.target.media_type) {
        return f.image.stored_size();
    }
    let Ok(images) = kiln_oci::image::load_all_images(store, &f.entry.target) else {
        return f.image.stored_size();
    };
    let mut seen = std::collections::BTreeSet::new();
    images
        .iter()
        .flat_map(|i| std::iter::once(&i.config_ref).chain(&i.layers))
        .filter(|b| seen.insert(b.digest))
        .map(|b| b.size)
        .sum()
}
