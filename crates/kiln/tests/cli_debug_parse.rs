//! `kiln debug parse`: the S-expression dump, the listing, and errors (file:line,
//! non-zero exit, never a panic). The dumps of BuildKit's whole parser corpus are
//! compared in the `buildkit` test binary (`conformance::…`), which reports them as
//! not run where BuildKit's conformance data is absent.

use crate::util::kiln;
use std::fs;

#[test]
fn dump_from_stdin() {
    let out = kiln()
        .args(["debug", "parse", "--dump", "-"])
        .stdin(&b"FROM alpine AS build\nCOPY --from=build a b\n"[..])
        .output();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "(from \"alpine\" \"AS\" \"build\")\n(copy [\"--from=build\"] \"a\" \"b\")\n"
    );
}

#[test]
fn listing_shows_lines_flags_and_heredocs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Dockerfile");
    fs::write(
        &file,
        "# syntax=docker/dockerfile:1\nFROM alpine\nRUN --mount=type=cache,target=/c <<-EOF\n\techo hi\nEOF\n",
    )
    .unwrap();
    let out = kiln().args(["debug", "parse"]).arg(&file).output();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("directive syntax=docker/dockerfile:1 (line 1)"),
        "{text}"
    );
    assert!(text.contains("2         FROM args: \"alpine\""), "{text}");
    assert!(
        text.contains("3-5       RUN flags: --mount=type=cache,target=/c args: \"<<-EOF\""),
        "{text}"
    );
    assert!(
        text.contains("heredoc EOF (fd 0, expand, strip leading tabs):"),
        "{text}"
    );
    assert!(text.contains("\n            | \techo hi\n"), "{text}");
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = kiln()
        .args(["debug", "parse", "/nonexistent/Dockerfile"])
        .output();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reading /nonexistent/Dockerfile"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
