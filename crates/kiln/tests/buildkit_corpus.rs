//! Differential test against BuildKit: every case of `tests/buildkit-corpus/` is built
//! with the real kiln binary into a temporary store, its image is described with
//! `kiln debug describe`, and the description must equal `expected.json` — the
//! description of the image BuildKit built from the same Dockerfile and context
//! (`scripts/compare-buildkit --regenerate` makes those; BuildKit is not needed here).
//!
//! Needs root (RUN steps), the local registry 127.0.0.1:5000 that
//! `scripts/setup-test-env` starts, and the corpus base image in it, which this test
//! pushes with `tests/buildkit-corpus/make-base` when the registry lacks it.
//! Prints every difference and `N/M identical`; fails if any case differs. Every
//! case is then built a second time in the same store (all steps cached), and that
//! image must match BuildKit's too (`cached rebuild: N/M identical`).
//! The build history (`history.json`: layer count, ArgsEscaped, created_by /
//! empty_layer / comment of each entry) is compared too and its differences are
//! printed with `history: N/M identical`, but they do not fail the test: the
//! issue's acceptance is the file tree and the runtime config.
//! A case with an `http/` directory has it served on http://127.0.0.1:38475/ (ADD of
//! URLs), as `scripts/compare-buildkit` does. A case whose `args` has `expect-error
//! TEXT` is one BuildKit fails (its `error.txt` holds BuildKit's message): kiln must
//! fail too, with TEXT in its output (white space runs and line wrapping as one
//! space, miette's frame characters removed).

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

const HTTP_ADDR: &str = "127.0.0.1:38475";

/// A minimal static file server for the cases' `http/` directories: GET of a path
/// below the directory currently in `root` answers the file, anything else 404.
fn serve_http(root: Arc<Mutex<Option<PathBuf>>>) -> Result<(), String> {
    let listener =
        TcpListener::bind(HTTP_ADDR).map_err(|e| format!("cannot listen on {HTTP_ADDR}: {e}"))?;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request_line = String::new();
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => continue,
            });
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                line.clear();
            }
            let mut parts = request_line.split_whitespace();
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let dir = root.lock().map(|g| g.clone()).unwrap_or(None);
            let body = dir
                .filter(|_| !target.contains(".."))
                .and_then(|d| fs::read(d.join(target.trim_start_matches('/'))).ok());
            let response = match body {
                Some(data) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                        data.len()
                    )
                    .into_bytes();
                    if method != "HEAD" {
                        r.extend_from_slice(&data);
                    }
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    Ok(())
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/buildkit-corpus")
}

/// The kiln options a case's `args` file asks for (`build-arg NAME=VALUE`,
/// `target STAGE`, `build-context NAME=docker-image://REF|DIR`,
/// `secret id=NAME,src=FILE`, `file DOCKERFILE`, `allow ENTITLEMENT`, `label K=V`; paths
/// relative to the case; `expect-error` is read by [`expected_error`]).
/// `-f` comes first, with the case's `Dockerfile` unless a `file` line names another.
fn case_options(dir: &Path) -> Result<Vec<String>, String> {
    let file = dir.join("args");
    let text = fs::read_to_string(&file).unwrap_or_default();
    let dockerfile = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("file "))
        .map(str::trim)
        .unwrap_or("Dockerfile");
    let mut out = vec!["-f".to_string(), dir.join(dockerfile).display().to_string()];
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(' ') {
            Some(("build-arg", v)) => out.extend(["--build-arg".to_string(), v.trim().into()]),
            Some(("file" | "expect-error", _)) => {}
            Some(("allow", v)) => out.extend(["--allow".to_string(), v.trim().into()]),
            Some(("label", v)) => out.extend(["--label".to_string(), v.trim().into()]),
            Some(("target", v)) => out.extend(["--target".to_string(), v.trim().into()]),
            Some(("secret", v)) => {
                let v = v.trim();
                let value = match v.split_once(",src=") {
                    Some((id, src)) => format!("{id},src={}", dir.join(src).display()),
                    None => v.to_string(),
                };
                out.extend(["--secret".to_string(), value]);
            }
            Some(("build-context", v)) => {
                let v = v.trim();
                let value = match v.split_once('=') {
                    Some((name, src)) if !src.contains("://") => {
                        format!("{name}={}", dir.join(src).display())
                    }
                    _ => v.to_string(),
                };
                out.extend(["--build-context".to_string(), value]);
            }
            _ => return Err(format!("{}: unknown option line {line:?}", file.display())),
        }
    }
    Ok(out)
}

/// The error text a case expects (`expect-error TEXT` in its `args`), if any.
fn expected_error(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join("args")).ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("expect-error "))
        .map(|t| t.trim().to_string())
}

/// Error output made comparable: miette's frame characters removed, runs of
/// white space (line wrapping included) as one space.
fn normalize(text: &str) -> String {
    text.replace(['│', '×'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds case `dir`, which BuildKit fails: kiln must fail with `want` in its output.
fn build_expecting_error(root: &Path, dir: &Path, want: &str) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(["build", "--progress=plain"])
        .args(case_options(dir)?)
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run kiln: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        return Err(format!("kiln built it; BuildKit fails with: {want}"));
    }
    if normalize(&text).contains(&normalize(want)) {
        return Ok(());
    }
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "kiln failed without the expected error ({want}):\n{}",
        tail.join("\n")
    ))
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        return String::from_utf8(out.stdout).map_err(|e| format!("{cmd:?}: {e}"));
    }
    let mut msg = String::from_utf8_lossy(&out.stderr).into_owned();
    msg.push_str(&String::from_utf8_lossy(&out.stdout));
    let tail: Vec<&str> = msg.lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(tail.join("\n"))
}

/// The differences between BuildKit's history description and kiln's, one line each.
fn history_differences(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["layers", "args_escaped"] {
        if expected[key] != actual[key] {
            out.push(format!(
                "{key}: BuildKit {}, kiln {}",
                expected[key], actual[key]
            ));
        }
    }
    let list = |v: &Value| v["history"].as_array().cloned().unwrap_or_default();
    let (e, a) = (list(expected), list(actual));
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i), a.get(i));
        if x != y {
            out.push(format!(
                "history[{i}]: BuildKit {}, kiln {}",
                x.unwrap_or(&Value::Null),
                y.unwrap_or(&Value::Null)
            ));
        }
    }
    out
}

/// The differences between BuildKit's description and kiln's, one line each.
fn differences(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let empty = Map::new();
    let cfg = |v: &Value| v["config"].as_object().cloned().unwrap_or_default();
    let (ec, ac) = (cfg(expected), cfg(actual));
    let keys: std::collections::BTreeSet<&String> = ec.keys().chain(ac.keys()).collect();
    for k in keys {
        let (e, a) = (
            ec.get(k).unwrap_or(&Value::Null),
            ac.get(k).unwrap_or(&Value::Null),
        );
        if e != a {
            out.push(format!("config {k}: BuildKit {e}, kiln {a}"));
        }
    }
    let files = |v: &Value| -> BTreeMap<String, Map<String, Value>> {
        v["files"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| {
                        let m = f.as_object().unwrap_or(&empty).clone();
                        (f["path"].as_str().unwrap_or("?").to_string(), m)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (ef, af) = (files(expected), files(actual));
    for (path, e) in &ef {
        match af.get(path) {
            None => out.push(format!(
                "{path}: only in BuildKit's image ({})",
                Value::Object(e.clone())
            )),
            Some(a) if a != e => {
                let fields: std::collections::BTreeSet<&String> =
                    e.keys().chain(a.keys()).collect();
                let diffs: Vec<String> = fields
                    .into_iter()
                    .filter(|f| e.get(*f) != a.get(*f))
                    .map(|f| {
                        format!(
                            "{f} BuildKit {} kiln {}",
                            e.get(f).unwrap_or(&Value::Null),
                            a.get(f).unwrap_or(&Value::Null)
                        )
                    })
                    .collect();
                out.push(format!("{path}: {}", diffs.join(", ")));
            }
            Some(_) => {}
        }
    }
    for (path, a) in &af {
        if !ef.contains_key(path) {
            out.push(format!(
                "{path}: only in kiln's image ({})",
                Value::Object(a.clone())
            ));
        }
    }
    out
}

/// Builds case `dir` with kiln into the store at `root` and returns the
/// descriptions of the image: (`debug describe`, `debug describe --history`).
fn build_and_describe(root: &Path, scratch: &Path, dir: &Path) -> Result<(Value, Value), String> {
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let archive = scratch.join(format!("{name}.tar"));
    run(Command::new(kiln)
        .arg("--root")
        .arg(root)
        .args(["build", "--progress=plain"])
        .args(["-t", &format!("kiln-corpus/{name}:latest")])
        .args(case_options(dir)?)
        .arg("-o")
        .arg(format!("type=oci,dest={}", archive.display()))
        .arg(dir))
    .map_err(|e| format!("kiln build failed:\n{e}"))?;
    let describe = |extra: &[&str]| -> Result<Value, String> {
        let text = run(Command::new(kiln)
            .arg("--root")
            .arg(root)
            .args(["debug", "describe"])
            .args(extra)
            .arg(&archive))
        .map_err(|e| format!("kiln debug describe {extra:?} failed:\n{e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("describe output: {e}"))
    };
    let described = describe(&[])?;
    let history = describe(&["--history"])?;
    let _ = fs::remove_file(&archive);
    Ok((described, history))
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[test]
fn kiln_builds_the_same_images_as_buildkit() {
    let corpus = corpus_dir();
    if let Err(e) = run(Command::new(corpus.join("make-base")).arg("--if-missing")) {
        panic!(
            "the corpus base image is not in the local registry and make-base failed \
             (run scripts/setup-test-env as root first):\n{e}"
        );
    }
    let mut cases: Vec<PathBuf> = fs::read_dir(&corpus)
        .expect("read the corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
                && p.is_dir()
        })
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 25,
        "the corpus has only {} cases",
        cases.len()
    );

    let http_root = Arc::new(Mutex::new(None));
    let needs_http = cases.iter().any(|c| c.join("http").is_dir());
    if needs_http {
        serve_http(http_root.clone()).expect("HTTP server for the ADD-of-URL cases");
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path().join("store");
    // Two passes over one store: every case cold, then every case again, where
    // each step is a cache hit and must give the same image.
    let mut identical = [0, 0];
    let mut history_identical = 0;
    let mut report = Vec::new();
    let mut history_report = Vec::new();
    for pass in 0..2 {
        let label = ["", " (cached rebuild)"][pass];
        for dir in &cases {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let http_dir = dir.join("http");
            *http_root.lock().unwrap() = http_dir.is_dir().then_some(http_dir);
            let outcome = (|| -> Result<(Vec<String>, Vec<String>), String> {
                if let Some(want) = expected_error(dir) {
                    build_expecting_error(&root, dir, &want)?;
                    return Ok((Vec::new(), Vec::new()));
                }
                let expected = read_json(&dir.join("expected.json"))?;
                let expected_history = read_json(&dir.join("history.json"))?;
                let (actual, history) = build_and_describe(&root, tmp.path(), dir)?;
                Ok((
                    differences(&expected, &actual),
                    history_differences(&expected_history, &history),
                ))
            })();
            match outcome {
                Ok((d, h)) => {
                    if d.is_empty() {
                        identical[pass] += 1;
                    } else {
                        report.push(format!(
                            "{name}{label}: differs from BuildKit:\n  {}",
                            d.join("\n  ")
                        ));
                    }
                    if pass == 0 {
                        if h.is_empty() {
                            history_identical += 1;
                        } else {
                            history_report.push(format!(
                                "{name}: history differs from BuildKit:\n  {}",
                                h.join("\n  ")
                            ));
                        }
                    }
                }
                Err(e) => report.push(format!("{name}{label}: {}", e.replace('\n', "\n  "))),
            }
        }
    }
    for r in &history_report {
        eprintln!("{r}");
    }
    eprintln!(
        "history: {history_identical}/{} identical (reported, not required)",
        cases.len()
    );
    for r in &report {
        eprintln!("{r}");
    }
    eprintln!("cached rebuild: {}/{} identical", identical[1], cases.len());
    eprintln!("{}/{} identical", identical[0], cases.len());
    assert!(
        report.is_empty(),
        "{}/{} corpus cases identical to BuildKit ({} on the cached rebuild); differences above",
        identical[0],
        cases.len(),
        identical[1]
    );
}

#[test]
fn differences_name_each_changed_field_and_missing_path() {
    let expected: Value = serde_json::json!({
        "config": {"User": "app", "Cmd": ["sh"]},
        "files": [
            {"path": "/a", "type": "file", "mode": "0644", "uid": 0, "gid": 0, "size": 1, "sha256": "x"},
            {"path": "/b", "type": "dir", "mode": "0755", "uid": 0, "gid": 0},
        ]
    });
    let actual: Value = serde_json::json!({
        "config": {"User": null, "Cmd": ["sh"]},
        "files": [
            {"path": "/a", "type": "file", "mode": "0600", "uid": 0, "gid": 0, "size": 1, "sha256": "x"},
            {"path": "/c", "type": "dir", "mode": "0755", "uid": 0, "gid": 0},
        ]
    });
    let d = differences(&expected, &actual);
    assert_eq!(d.len(), 4, "{d:#?}");
    assert_eq!(d[0], "config User: BuildKit \"app\", kiln null");
    assert_eq!(d[1], "/a: mode BuildKit \"0644\" kiln \"0600\"");
    assert!(d[2].starts_with("/b: only in BuildKit's image"), "{}", d[2]);
    assert!(d[3].starts_with("/c: only in kiln's image"), "{}", d[3]);
    assert!(differences(&expected, &expected).is_empty());

    let bk = serde_json::json!({"layers": 2, "args_escaped": true, "history": [
        {"created_by": "A", "empty_layer": false, "comment": null},
        {"created_by": "B", "empty_layer": true, "comment": null}]});
    let kiln = serde_json::json!({"layers": 1, "args_escaped": true, "history": [
        {"created_by": "A", "empty_layer": false, "comment": null}]});
    let h = history_differences(&bk, &kiln);
    assert_eq!(h.len(), 2, "{h:#?}");
    assert_eq!(h[0], "layers: BuildKit 2, kiln 1");
    assert!(h[1].starts_with("history[1]: BuildKit {"), "{}", h[1]);
    assert!(h[1].ends_with("kiln null"), "{}", h[1]);
    assert!(history_differences(&bk, &bk).is_empty());
}

#[test]
fn expected_errors_match_across_line_wrapping_and_frames() {
    let kiln_output = "  × Dockerfile:2: invalid chmod parameter: '64a'. it should be octal string\n  │ and between 0 and 07777\n";
    let want = "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777";
    assert!(normalize(kiln_output).contains(&normalize(want)));
    assert!(!normalize(kiln_output).contains(&normalize("invalid chmod parameter: '10000'")));
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(expected_error(dir.path()), None);
    fs::write(
        dir.path().join("args"),
        "target t\nexpect-error dockerfile contains no stages to build\n",
    )
    .unwrap();
    assert_eq!(
        expected_error(dir.path()).as_deref(),
        Some("dockerfile contains no stages to build")
    );
}
