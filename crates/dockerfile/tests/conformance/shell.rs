//! BuildKit's shell-expansion conformance tables (`frontend/dockerfile/shell`
//! `envVarTest` and `wordsTest`), read the way BuildKit's `lex_test.go` reads
//! them, run against `kiln_dockerfile::shell::Lexer`.

use kiln_dockerfile::shell::Lexer;

fn read_table(name: &str) -> String {
    let path = kiln_testkit::conformance::location()
        .join("shell")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// `platform | input | expected`, platform A (all), U (Unix) or W (Windows);
/// `expected` of `error` means the expansion must fail. Environment as in
/// BuildKit's TestShellParser4EnvVars.
pub fn env_var_test_table() {
    let table = read_table("envVarTest");
    let env: Vec<(String, String)> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lexer = Lexer::new('\\');

    let mut run = 0;
    let mut failures = Vec::new();
    for (index, raw_line) in table.lines().enumerate() {
        let line_no = index + 1;
        if raw_line.starts_with('#') {
            continue;
        }
        let line = raw_line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(
            fields.len(),
            3,
            "line {line_no} must have 3 fields: {line:?}"
        );
        let (platform, source, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        match platform {
            "A" | "U" => {}
            "W" => continue,
            other => panic!("invalid platform {other:?} at line {line_no}"),
        }
        run += 1;
        let got = lexer.process_word(source, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(word), expected) => expected != "error" && word == expected,
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!(
                "line {line_no}: {source:?} expected {expected:?}, got {got:?}"
            ));
        }
    }

    let expected_rows = table
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| matches!(l.split('|').next().map(str::trim), Some("A" | "U")))
        .count();
    println!("envVarTest: ran {run} rows (A+U rows in file: {expected_rows})");
    assert!(
        failures.is_empty(),
        "{} of {run} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(run, expected_rows);
    assert!(run > 100, "only {run} rows ran");
}

/// `input | comma-joined words`; `ENV k=v` lines add to the environment for
/// the following rows (last assignment wins). A failing expansion is the
/// single word `error`. As in BuildKit's TestShellParser4Words (its second
/// pass with RawQuotes/SkipUnsetEnv reads an already-exhausted file and so
/// checks nothing; it is not repeated here).
pub fn words_test_table() {
    let table = read_table("wordsTest");
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();

    let mut run = 0;
    let mut failures = Vec::new();
    for (index, line) in table.lines().enumerate() {
        let line_no = index + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(assignment) = line.strip_prefix("ENV ") {
            let assignment = assignment.trim_start_matches(' ');
            let (key, value) = assignment.split_once('=').unwrap_or((assignment, ""));
            env.push((key.to_string(), value.to_string()));
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(
            fields.len(),
            2,
            "line {line_no} must have exactly one '|': {line:?}"
        );
        let input = fields[0].trim();
        let expected: Vec<&str> = fields[1].trim_start_matches(' ').split(',').collect();
        run += 1;
        let got = match lexer.process_words(input, &env) {
            Ok(words) => words,
            Err(_) => vec!["error".to_string()],
        };
        if got != expected {
            failures.push(format!(
                "line {line_no}: {input:?} expected {expected:?}, got {got:?}"
            ));
        }
    }

    let expected_rows = table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("ENV "))
        .count();
    println!("wordsTest: ran {run} rows (rows in file: {expected_rows})");
    assert!(
        failures.is_empty(),
        "{} of {run} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(run, expected_rows);
    assert!(run > 20, "only {run} rows ran");
}
