//! `kiln debug parse`: the built binary's BuildKit dump must equal BuildKit's
//! `result` files for the whole parser corpus, and parse errors must be
//! reported (file:line) with a non-zero exit, not a panic.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn corpus() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/buildkit"
    ))
    .to_path_buf()
}

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

#[test]
fn dump_matches_buildkit_results() {
    let mut dirs: Vec<PathBuf> = fs::read_dir(corpus().join("testfiles"))
        .expect("testfiles corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.sort();
    let mut ran = 0;
    let mut failures = Vec::new();
    for dir in &dirs {
        let out = kiln()
            .args(["debug", "parse", "--dump"])
            .arg(dir.join("Dockerfile"))
            .output()
            .expect("run kiln");
        ran += 1;
        let want = fs::read_to_string(dir.join("result")).expect("result file");
        let got = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || got != want {
            failures.push(format!(
                "{}: status {:?}\n--- want\n{want}--- got\n{got}--- stderr\n{}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    println!("compared {ran} dumps");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(ran, 33);
}

#[test]
fn dump_from_stdin() {
    let mut child = kiln()
        .args(["debug", "parse", "--dump", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run kiln");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM alpine AS build\nCOPY --from=build a b\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
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
    let out = kiln().args(["debug", "parse"]).arg(&file).output().unwrap();
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
fn parse_error_exits_non_zero_with_location() {
    // Run on a relative path so the message is not wrapped by the renderer.
    let dir = tempfile::tempdir().unwrap();
    let text =
        fs::read_to_string(corpus().join("testfiles-negative/env_no_value/Dockerfile")).unwrap();
    fs::write(dir.path().join("Dockerfile"), &text).unwrap();
    let out = kiln()
        .current_dir(dir.path())
        .args(["debug", "parse", "--dump", "Dockerfile"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().position(|l| l.starts_with("ENV")).unwrap() + 1;
    assert!(
        stderr.contains(&format!("Dockerfile:{line}: ENV must have two arguments")),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = kiln()
        .args(["debug", "parse", "/nonexistent/Dockerfile"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reading /nonexistent/Dockerfile"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
