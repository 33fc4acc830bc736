//! BuildKit parser conformance: every case of BuildKit's parser test corpus
//! (`frontend/dockerfile/parser/testfiles*`, see `kiln_testkit::conformance` for where it is)
//! must give the same AST dump, the same errors and the same line numbers.

use kiln_dockerfile::{parse, Source};
use std::fs;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    kiln_testkit::conformance::location()
}

fn case_dirs(dir: &str) -> Vec<PathBuf> {
    let root = corpus().join(dir);
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn read_source(path: &Path) -> Source {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Source::new("Dockerfile", String::from_utf8_lossy(&bytes).into_owned())
}

pub fn testfiles_dump_like_buildkit() {
    let mut ran = 0;
    let mut failures = Vec::new();
    for dir in case_dirs("testfiles") {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let src = read_source(&dir.join("Dockerfile"));
        let expected = fs::read_to_string(dir.join("result")).expect("result file");
        ran += 1;
        let df = match parse(&src) {
            Ok(df) => df,
            Err(e) => {
                failures.push(format!("{name}: parse error: {e}"));
                continue;
            }
        };
        let got = df.dump();
        let got_lines: Vec<&str> = got.lines().collect();
        let want_lines: Vec<&str> = expected.lines().collect();
        let mut diffs = Vec::new();
        for i in 0..got_lines.len().max(want_lines.len()) {
            let g = got_lines.get(i).copied().unwrap_or("<missing>");
            let w = want_lines.get(i).copied().unwrap_or("<missing>");
            if g != w {
                diffs.push(format!("  line {}:\n    want {w}\n    got  {g}", i + 1));
            }
        }
        if got != expected && diffs.is_empty() {
            diffs.push("  (differs only in trailing newlines)".into());
        }
        if !diffs.is_empty() {
            failures.push(format!("{name}:\n{}", diffs.join("\n")));
        }
    }
    println!("ran {ran} BuildKit parser testfiles cases");
    assert!(
        failures.is_empty(),
        "{} of {ran} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(ran, 33, "expected 33 testfiles cases");
}

pub fn testfiles_negative_are_errors() {
    let mut ran = 0;
    let mut accepted = Vec::new();
    for dir in case_dirs("testfiles-negative") {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let src = read_source(&dir.join("Dockerfile"));
        ran += 1;
        match parse(&src) {
            Ok(df) => accepted.push(format!("{name}: accepted:\n{}", df.dump())),
            Err(e) => {
                // Errors name the file and a line.
                assert!(e.to_string().starts_with("Dockerfile:"), "{name}: {e}");
            }
        }
    }
    println!("ran {ran} BuildKit parser testfiles-negative cases");
    assert!(accepted.is_empty(), "{}", accepted.join("\n"));
    assert_eq!(ran, 4, "expected 4 testfiles-negative cases");
}

pub fn negative_cases_report_their_line() {
    let cases = [
        ("empty_dockerfile", "file with no instructions"),
        ("only_comments", "file with no instructions"),
        ("env_no_value", "ENV must have two arguments"),
        (
            "shykes-nested-json",
            "when using JSON array syntax, arrays must be comprised of strings only",
        ),
    ];
    for (name, msg) in cases {
        let src = read_source(
            &corpus()
                .join("testfiles-negative")
                .join(name)
                .join("Dockerfile"),
        );
        let err = parse(&src).expect_err(name);
        assert_eq!(err.message, msg, "{name}");
    }
    let src = read_source(&corpus().join("testfiles-negative/env_no_value/Dockerfile"));
    let err = parse(&src).unwrap_err();
    let env_line = src.text.lines().position(|l| l.starts_with("ENV")).unwrap() + 1;
    assert_eq!(err.line, env_line);
}

pub fn testfile_line_numbers_like_buildkit() {
    // BuildKit's TestParseIncludesLineNumbers.
    let src = read_source(&corpus().join("testfile-line/Dockerfile"));
    let df = parse(&src).expect("testfile-line parses");
    let lines: Vec<(usize, usize)> = df
        .nodes
        .iter()
        .map(|n| (n.start_line, n.end_line))
        .collect();
    assert_eq!(lines, [(5, 5), (11, 12), (17, 31)]);
    assert_eq!(df.nodes.first().unwrap().start_line, 5);
    assert_eq!(df.nodes.last().unwrap().end_line, 31);
}
