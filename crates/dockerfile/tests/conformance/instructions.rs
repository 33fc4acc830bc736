//! Every BuildKit parser test file that parses is turned into typed
//! instructions: either all of them convert, or the error names a line of
//! that file. A few files have known instruction-level errors, checked exactly.

use kiln_dockerfile::instructions::parse_instructions;
use kiln_dockerfile::{parse, Source};
use std::path::PathBuf;

fn testfiles() -> PathBuf {
    kiln_testkit::conformance::location().join("testfiles")
}

pub fn testfiles_convert_or_fail_on_a_line() {
    let mut dirs: Vec<_> = std::fs::read_dir(testfiles())
        .expect("conformance testfiles")
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    let mut converted = 0;
    let mut failed = Vec::new();
    for dir in &dirs {
        let text = std::fs::read_to_string(dir.join("Dockerfile")).unwrap();
        let src = Source::new("Dockerfile", text.as_str());
        let Ok(df) = parse(&src) else { continue };
        match parse_instructions(&df, &src) {
            Ok(ins) => {
                assert_eq!(ins.len(), df.nodes.len());
                converted += 1;
            }
            Err(e) => {
                let lines = text.lines().count().max(1);
                assert!(
                    (1..=lines).contains(&e.line),
                    "{}: error on line {} of {lines}: {e}",
                    dir.display(),
                    e.line
                );
                failed.push((
                    dir.file_name().unwrap().to_string_lossy().into_owned(),
                    e.to_string(),
                ));
            }
        }
    }
    assert!(
        converted >= 20,
        "only {converted} test files converted; failures: {failed:?}"
    );
    let find = |name: &str| {
        failed
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.as_str())
            .unwrap_or_else(|| panic!("{name} should fail: {failed:?}"))
    };
    assert_eq!(find("flags"), "Dockerfile:3: unknown flag: --user");
    assert_eq!(
        find("health"),
        "Dockerfile:4: HEALTHCHECK requires at least one argument"
    );
}
