//! The report as text: a few tables, sizes as `kiln images` writes them.

use crate::render::{human_size, table};
use kiln_insight::Report;
use std::fmt::Write;

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

fn line_of(dockerfile: Option<&str>, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{l}", dockerfile.unwrap_or("Dockerfile")),
        None => "-".into(),
    }
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let df = r.image.dockerfile.as_deref();
    let _ = writeln!(
        o,
        "Image {} ({}){}, runs as {}",
        r.image.name,
        &r.image.id[..r.image.id.len().min(19)],
        r.image
            .stage
            .as_ref()
            .map(|s| format!(", stage {s} of {}", df.unwrap_or("Dockerfile")))
            .unwrap_or_default(),
        if r.image.user.is_empty() {
            "root (no USER)"
        } else {
            &r.image.user
        }
    );
    let compressed = match r.size.compressed {
        Some(c) => human_size(c),
        None => format!(
            "not compressed yet ({} of {} layers; made by push or export)",
            r.size.layers_not_compressed,
            r.layers.len()
        ),
    };
    let _ = writeln!(
        o,
        "Size: {} as stored (kiln images), {} unpacked, {} of files; compressed: {compressed}",
        human_size(r.size.stored),
        human_size(r.size.unpacked),
        human_size(r.size.files),
    );
    if !r.stages.is_empty() {
        o.push_str("\nStages\n");
        let rows: Vec<Vec<String>> = r
            .stages
            .iter()
            .map(|s| {
                let ran = s
                    .steps
                    .iter()
                    .filter(|x| x.result == kiln_oci::store::StepResult::Ran)
                    .count();
                let cached = s
                    .steps
                    .iter()
                    .filter(|x| x.result == kiln_oci::store::StepResult::Cached)
                    .count();
                vec![
                    format!("{}{}", s.name, if s.final_stage { " (final)" } else { "" }),
                    human_size(s.stored_size),
                    human_size(s.files_size),
                    s.layers.to_string(),
                    format!("{ran} ran, {cached} cached"),
                    format!("{}:{}", df.unwrap_or("Dockerfile"), s.line),
                    cut(&s.from, 40),
                ]
            })
            .collect();
        o.push_str(&table(
            &["STAGE", "SIZE", "FILES", "LAYERS", "STEPS", "LINE", "FROM"],
            &rows,
        ));
    }
    if let Some(s) = &r.saving {
        let _ = writeln!(
            o,
            "\nMulti-stage saving: final {} {}, {} {}, saved {} ({:.0} %)\n  ({} is the stage {} copies most from: {} of files; sizes as kiln images counts them)",
            s.final_stage,
            human_size(s.final_stored),
            s.compared_with,
            human_size(s.stage_stored),
            if s.saved >= 0 {
                human_size(s.saved as u64)
            } else {
                format!("-{}", human_size(s.saved.unsigned_abs()))
            },
            s.saved_percent,
            s.compared_with,
            s.final_stage,
            human_size(s.copied_bytes),
        );
    }
    o.push_str("\nLayers\n");
    let rows: Vec<Vec<String>> = r
        .layers
        .iter()
        .map(|l| {
            vec![
                l.index.to_string(),
                human_size(l.stored_size),
                human_size(l.files_size),
                l.compressed_size
                    .map(human_size)
                    .unwrap_or_else(|| "not yet".into()),
                line_of(df, l.line),
                l.stage.clone().unwrap_or_else(|| "-".into()),
                l.result.clone(),
                cut(&l.instruction, 60),
            ]
        })
        .collect();
    o.push_str(&table(
        &[
            "#",
            "SIZE",
            "FILES",
            "COMPRESSED",
            "LINE",
            "STAGE",
            "RESULT",
            "INSTRUCTION",
        ],
        &rows,
    ));
    let _ = writeln!(
        o,
        "\nWaste: {} hidden by later layers (each hidden copy counted once); efficiency {:.2} %",
        human_size(r.waste.wasted_bytes),
        r.waste.efficiency * 100.0
    );
    if !r.waste.top.is_empty() {
        let rows: Vec<Vec<String>> = r
            .waste
            .top
            .iter()
            .take(10)
            .map(|w| {
                vec![
                    human_size(w.wasted),
                    w.copies.to_string(),
                    if w.present { "overwritten" } else { "deleted" }.into(),
                    cut(&w.path, 70),
                ]
            })
            .collect();
        o.push_str(&table(&["WASTED", "COPIES", "HOW", "PATH"], &rows));
    }
    o.push_str("\nBiggest directories\n");
    let rows: Vec<Vec<String>> = r
        .biggest
        .directories
        .iter()
        .take(10)
        .map(|d| vec![human_size(d.size), d.path.clone()])
        .collect();
    o.push_str(&table(&["SIZE", "PATH"], &rows));
    o.push_str("\nBiggest files\n");
    let rows: Vec<Vec<String>> = r
        .biggest
        .files
        .iter()
        .take(10)
        .map(|d| {
            vec![
                human_size(d.size),
                d.layer.map(|l| l.to_string()).unwrap_or_default(),
                d.path.clone(),
            ]
        })
        .collect();
    o.push_str(&table(&["SIZE", "LAYER", "PATH"], &rows));
    if !r.packages.is_empty() {
        let mut by: std::collections::BTreeMap<String, usize> = Default::default();
        for p in &r.packages {
            *by.entry(format!("{:?}", p.ecosystem).to_lowercase())
                .or_default() += 1;
        }
        let counts: Vec<String> = by.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            o,
            "\nPackages: {} ({}; the list: --format json, or kiln build --sbom)",
            r.packages.len(),
            counts.join(", ")
        );
    }
    if r.findings.is_empty() {
        o.push_str("\nFindings: none\n");
    } else {
        let _ = writeln!(o, "\nFindings ({})", r.findings.len());
        let rows: Vec<Vec<String>> = r
            .findings
            .iter()
            .map(|f| {
                vec![
                    format!("{:?}", f.severity).to_lowercase(),
                    f.kind.name().to_string(),
                    if f.path.is_empty() {
                        "-".into()
                    } else {
                        cut(&f.path, 50)
                    },
                    human_size(f.size),
                    line_of(df, f.line),
                    cut(f.instruction.as_deref().unwrap_or("-"), 40),
                    f.message.clone(),
                ]
            })
            .collect();
        o.push_str(&table(
            &[
                "SEVERITY",
                "KIND",
                "PATH",
                "SIZE",
                "LINE",
                "INSTRUCTION",
                "WHAT",
            ],
            &rows,
        ));
    }
    o
}
