//! `kiln debug parse` against BuildKit's conformance data (where it is:
//! `kiln_testkit::conformance`): the built binary's dump must equal BuildKit's
//! `result` file for the whole parser corpus, and a negative case's parse error
//! must be reported (file:line) with a non-zero exit, not a panic.

use crate::util::kiln;
use std::fs;
use std::path::PathBuf;

fn corpus() -> PathBuf {
    kiln_testkit::conformance::location()
}

pub fn dump_matches_buildkit_results() {
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
            .output();
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

pub fn parse_error_exits_non_zero_with_location() {
    // Run on a relative path so the message is not wrapped by the renderer.
    let dir = tempfile::tempdir().unwrap();
    let text =
        fs::read_to_string(corpus().join("testfiles-negative/env_no_value/Dockerfile")).unwrap();
    fs::write(dir.path().join("Dockerfile"), &text).unwrap();
    let out = kiln()
        .current_dir(dir.path())
        .args(["debug", "parse", "--dump", "Dockerfile"])
        .output();
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
