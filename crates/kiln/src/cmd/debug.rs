//! `kiln debug ...`: developer views of the frontend.

use crate::flags::DebugParseFlags;
use kiln_dockerfile::ast::go_quote;
use kiln_dockerfile::{parse as parse_dockerfile, Dockerfile, Node, Source};
use miette::{miette, IntoDiagnostic};
use std::fmt::Write as _;
use std::io::{Read, Write};
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
        let _ = writeln!(out, "{range:<9} {}", describe(n));
        if let Some(sub) = &n.sub {
            let _ = writeln!(out, "{:<9}   trigger: {}", "", describe(sub));
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
fn describe(n: &Node) -> String {
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
