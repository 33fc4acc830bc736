//! `kiln debug ...`: developer views of the frontend and of built images.

use crate::describe::{render, render_history, Tree};
use crate::flags::{DebugDescribeFlags, DebugParseFlags, GlobalFlags};
use crate::local_images::{find, open_store};
use kiln_dockerfile::ast::go_quote;
use kiln_dockerfile::{parse as parse_dockerfile, Dockerfile, Node, Source};
use kiln_oci::image::load_image;
use kiln_oci::load::{import_oci_dir, load_archive};
use kiln_oci::{Image, Store};
use miette::{miette, IntoDiagnostic};
use std::fmt::Write as _;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::process::ExitCode;

/// `kiln debug parse [--dump] FILE`: parse a Dockerfile and print its AST,
/// either as BuildKit's S-expression dump or as a readable listing.
pub fn parse(flags: DebugParseFlags) -> miette::Result<ExitCode> {
    let (name, bytes) = if flags.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| miette!("reading the Dockerfile from standard input: {e}"))?;
        ("<stdin>".to_string(), buf)
    } else {
        let bytes = std::fs::read(&flags.file)
            .map_err(|e| miette!("reading {}: {e}", flags.file.display()))?;
        (flags.file.display().to_string(), bytes)
    };
    let src = Source::new(name, String::from_utf8_lossy(&bytes).into_owned());
    let df = parse_dockerfile(&src).map_err(miette::Report::new)?;
    let out = if flags.dump { df.dump() } else { listing(&df) };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .into_diagnostic()?;
    Ok(ExitCode::SUCCESS)
}

/// A readable listing of the AST: directives, then per instruction its line
/// range, keyword, flags, arguments, ONBUILD trigger and heredocs.
fn listing(df: &Dockerfile) -> String {
    let mut out = String::new();
    for d in &df.directives {
        let _ = writeln!(out, "directive {}={} (line {})", d.name, d.value, d.line);
    }
    let _ = writeln!(out, "escape {}", df.escape);
    for (line, msg) in &df.warnings {
        let _ = writeln!(out, "warning (line {line}): {msg}");
    }
    for n in &df.nodes {
        let range = if n.start_line == n.end_line {
            format!("{}", n.start_line)
        } else {
            format!("{}-{}", n.start_line, n.end_line)
        };
        let _ = writeln!(out, "{range:<9} {}", describe_node(n));
        if let Some(sub) = &n.sub {
            let _ = writeln!(out, "{:<9}   trigger: {}", "", describe_node(sub));
        }
        for h in &n.heredocs {
            let mut attrs = vec![format!("fd {}", h.file_descriptor)];
            attrs.push(if h.expand { "expand" } else { "no expansion" }.into());
            if h.chomp {
                attrs.push("strip leading tabs".into());
            }
            let _ = writeln!(
                out,
                "{:<9}   heredoc {} ({}):",
                "",
                h.name,
                attrs.join(", ")
            );
            for line in h.content.lines() {
                let _ = writeln!(out, "{:<9}   | {line}", "");
            }
        }
    }
    out
}

/// `RUN [json] flags: --mount=... args: "a" "b"` for one node.
fn describe_node(n: &Node) -> String {
    let mut s = n.keyword.to_uppercase();
    if n.json {
        s.push_str(" [exec form]");
    }
    if !n.flags.is_empty() {
        let _ = write!(s, " flags: {}", n.flags.join(" "));
    }
    if !n.args.is_empty() {
        let args: Vec<String> = n.args.iter().map(|a| go_quote(a)).collect();
        let _ = write!(s, " args: {}", args.join(" "));
    }
    s
}

/// `kiln debug describe IMAGE-SOURCE`: the image's merged file tree and runtime
/// config as normalized JSON (see `crate::describe`).
pub fn describe(global: &GlobalFlags, flags: DebugDescribeFlags) -> miette::Result<ExitCode> {
    let path = Path::new(&flags.source);
    // Archives and layouts are read through a throw-away store, so every source
    // ends up as an image whose blobs a store serves (and has verified).
    let scratch;
    let (store, image) = if path.exists() {
        scratch = tempfile::Builder::new()
            .prefix("kiln-describe-")
            .tempdir()
            .map_err(|e| miette!("creating a temporary directory: {e}"))?;
        let store =
            Store::open(scratch.path()).map_err(|e| miette!("creating a temporary store: {e}"))?;
        let loaded = if path.is_dir() {
            import_oci_dir(&store, path, None)
                .map_err(|e| miette!("reading the OCI layout {}: {e}", path.display()))?
        } else {
            let file = std::fs::File::open(path)
                .map_err(|e| miette!("opening {}: {e}", path.display()))?;
            load_archive(&store, BufReader::with_capacity(1 << 20, file))
                .map_err(|e| miette!("reading the archive {}: {e}", path.display()))?
        };
        let first = match loaded.as_slice() {
            [one] => one.target.clone(),
            [] => return Err(miette!("{} holds no image", path.display())),
            more => {
                return Err(miette!(
                    "{} holds {} images; describe takes one",
                    path.display(),
                    more.len()
                ))
            }
        };
        let image = load_image(&store, &first).map_err(|e| miette!("{e}"))?;
        (store, image)
    } else {
        let store = open_store(global)?;
        let found = find(&store, &flags.source)?;
        if !flags.history {
            crate::local_images::fetch_left_layers(&store, &found.target().entry.target)?;
        }
        let image = found.image().clone();
        (store, image)
    };
    let text = if flags.history {
        render_history(&image.config, image.layers.len())
    } else {
        render(&image.config, &merged_tree(&store, &image)?)
    };
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .into_diagnostic()?;
    Ok(ExitCode::SUCCESS)
}

/// The image's layers applied in order.
fn merged_tree(store: &Store, image: &Image) -> miette::Result<Tree> {
    let mut tree = Tree::new();
    for (i, layer) in image.layers.iter().enumerate() {
        let at = |e: &dyn std::fmt::Display| miette!("layer {} ({}): {e}", i + 1, layer.digest);
        // A layer a build made is its snapshot until an output makes its blob.
        let local = (!store.has_blob(&layer.digest))
            .then(|| store.local_layer(&layer.digest))
            .flatten();
        let tar: Box<dyn std::io::Read> = match local {
            Some(local) => Box::new(
                kiln_oci::export::local_layer_tar(layer.digest, &local).map_err(|e| at(&e))?,
            ),
            None => {
                let blob = store.open_blob(&layer.digest).map_err(|e| at(&e))?;
                kiln_oci::layer::decompressed(blob).map_err(|e| at(&e))?
            }
        };
        tree.apply_layer(tar).map_err(|e| at(&e))?;
    }
    Ok(tree)
}
