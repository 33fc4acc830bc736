//! `kiln history`: one line per history entry, newest first, like docker.

use crate::flags::{GlobalFlags, HistoryFlags, ListFormat};
use crate::local_images::{find, open_store};
use crate::render::{created_at, human_since, human_size, now_unix, table};
use kiln_oci::image::parse_rfc3339;
use miette::Result;
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: HistoryFlags) -> Result<ExitCode> {
    let store = open_store(global)?;
    let target = find(&store, &flags.image)?;
    let image = target.image();
    let no_trunc = flags.no_trunc.no_trunc;
    let now = now_unix();
    // Non-empty history entries take the layers in order.
    let mut layers = image.layers.iter();
    let mut entries = Vec::new();
    for h in &image.config.history {
        let size = if h.empty_layer {
            0
        } else {
            layers.next().map(|l| l.size).unwrap_or(0)
        };
        entries.push((h, size));
    }
    let last = entries.len().saturating_sub(1);
    let mut rows = Vec::new();
    let mut json_lines = Vec::new();
    for (i, (h, size)) in entries.into_iter().enumerate().rev() {
        let id = if i == last {
            if no_trunc {
                image.id().to_string()
            } else {
                image.id().short()
            }
        } else {
            "<missing>".to_string()
        };
        if flags.quiet.quiet {
            println!("{id}");
            continue;
        }
        let created = h.created.as_deref().and_then(parse_rfc3339);
        let since = created
            .map(|c| human_since(now - c))
            .unwrap_or_else(|| "N/A".into());
        let by = h.created_by.clone().unwrap_or_default();
        let by_shown = if no_trunc || by.chars().count() <= 45 {
            by.clone()
        } else {
            let mut s: String = by.chars().take(44).collect();
            s.push('…');
            s
        };
        let comment = h.comment.clone().unwrap_or_default();
        if flags.format.format == ListFormat::Json {
            json_lines.push(serde_json::json!({
                "Comment": comment,
                "CreatedAt": created.map(created_at).unwrap_or_else(|| "N/A".into()),
                "CreatedBy": by_shown,
                "CreatedSince": since,
                "ID": id,
                "Size": human_size(size),
            }));
        } else {
            rows.push(vec![id, since, by_shown, human_size(size), comment]);
        }
    }
    if flags.quiet.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    if flags.format.format == ListFormat::Json {
        for l in json_lines {
            println!("{l}");
        }
    } else {
        print!(
            "{}",
            table(
                &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
                &rows
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}
