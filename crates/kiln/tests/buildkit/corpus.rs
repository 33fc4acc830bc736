//! Differential test against BuildKit: every case of `tests/buildkit-corpus/` is one
//! test (`corpus::chmod` for `06-chmod`; `cargo test corpus::chmod` runs it). The
//! case is built with the real kiln binary into a store of its own, the image is
//! described with `kiln debug describe`, and the description must equal
//! `expected.json` — the description of the image BuildKit built from the same
//! Dockerfile and context (`scripts/compare-buildkit --regenerate` makes those;
//! BuildKit is not needed here). The case is then built a second time in the same
//! store (all steps cached), and that image must match BuildKit's too.
//! The build history (`history.json`: layer count, ArgsEscaped, created_by /
//! empty_layer / comment of each entry) is compared too and its differences are
//! printed, but they do not fail the test: the acceptance is the file tree
//! and the runtime config. At the end the binary prints `corpus: N/M identical`
//! (and the cached-rebuild and history figures).
//!
//! Needs root (RUN steps), the local registry `scripts/setup-test-env` starts, and
//! the corpus base image in it, which the first case pushes with
//! `tests/buildkit-corpus/make-base` when the registry lacks it. The Dockerfiles
//! name it `127.0.0.1:5000/kiln-corpus/busybox:1`; where the test registry is
//! elsewhere, kiln's config makes it a mirror of `127.0.0.1:5000`
//! (`kiln_testkit::corpus::kiln_config`).
//! A case with an `http/` directory has it served on http://127.0.0.1:38475/ (ADD of
//! URLs), as `scripts/compare-buildkit` does; those cases run one at a time. A case
//! whose `args` has `expect-error TEXT` is one BuildKit fails (its `error.txt` holds
//! BuildKit's message): kiln must fail too, with TEXT in its output (white space runs
//! and line wrapping as one space, miette's frame characters removed).

use crate::util::kiln;
use kiln_testkit::corpus::{self, Case};
use kiln_testkit::harness::{Failed, Trial};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

/// Builds case `dir` with kiln into the store at `root` (with kiln's config file
/// `config`) and returns the descriptions of the image: (`debug describe`,
/// `debug describe --history`).
fn build_and_describe(
    root: &Path,
    config: &Path,
    scratch: &Path,
    dir: &Path,
) -> Result<(Value, Value), String> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let archive = scratch.join(format!("{name}.tar"));
    run(kiln()
        .root(root)
        .env("KILN_CONFIG", config)
        .args(["build", "--progress=plain"])
        .args(["-t", &format!("kiln-corpus/{name}:latest")])
        .args(corpus::build_options(dir)?)
        .arg("-o")
        .arg(format!("type=oci,dest={}", archive.display()))
        .arg(dir)
        .command())
    .map_err(|e| format!("kiln build failed:\n{e}"))?;
    let describe = |extra: &[&str]| -> Result<Value, String> {
        let text = run(kiln()
            .root(root)
            .args(["debug", "describe"])
            .args(extra)
            .arg(&archive)
            .command())
        .map_err(|e| format!("kiln debug describe {extra:?} failed:\n{e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("describe output: {e}"))
    };
    let described = describe(&[])?;
    let history = describe(&["--history"])?;
    let _ = fs::remove_file(&archive);
    Ok((described, history))
}

/// Builds case `dir`, which BuildKit fails: kiln must fail with `want` in its output.
fn build_expecting_error(root: &Path, config: &Path, dir: &Path, want: &str) -> Result<(), String> {
    let out = kiln()
        .root(root)
        .env("KILN_CONFIG", config)
        .args(["build", "--progress=plain"])
        .args(corpus::build_options(dir)?)
        .arg(dir)
        .command()
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
    if corpus::normalize_error(&text).contains(&corpus::normalize_error(want)) {
        return Ok(());
    }
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "kiln failed without the expected error ({want}):\n{}",
        tail.join("\n")
    ))
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// How many cases ran and how many matched BuildKit, for the closing line.
#[derive(Default)]
pub struct Tally {
    ran: AtomicUsize,
    identical: AtomicUsize,
    identical_cached: AtomicUsize,
    history_identical: AtomicUsize,
}

impl Tally {
    /// `corpus: N/M identical …`, when any case ran.
    pub fn summary(&self) -> Option<String> {
        let ran = self.ran.load(Ordering::SeqCst);
        (ran > 0).then(|| {
            format!(
                "corpus: {}/{ran} identical to BuildKit, {}/{ran} on the cached rebuild; \
                 history: {}/{ran} identical (reported, not required)",
                self.identical.load(Ordering::SeqCst),
                self.identical_cached.load(Ordering::SeqCst),
                self.history_identical.load(Ordering::SeqCst),
            )
        })
    }
}

/// One test per corpus case, named `corpus::<case without its number>`.
pub fn tests(tally: &Arc<Tally>) -> Vec<Trial> {
    let cases = corpus::cases_in(&corpus::dir()).expect("read the corpus directory");
    assert!(
        cases.len() >= 25,
        "the corpus has only {} cases",
        cases.len()
    );
    cases
        .into_iter()
        .map(|case| {
            let tally = tally.clone();
            Trial::test(format!("corpus::{}", case.test_name), move || {
                check_case(&case, &tally).map_err(Failed::from)
            })
        })
        .collect()
}

/// The test registry's address once the corpus base image is in it (pushed by
/// `make-base` the first time), or why not.
fn base_image_registry() -> Result<String, String> {
    static REGISTRY: OnceLock<Result<String, String>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            let registry = kiln_testkit::registry::plain_or_why()?;
            let base = format!("{registry}/{}:1", corpus::BASE_REPOSITORY);
            run(Command::new(corpus::dir().join("make-base"))
                .arg("--if-missing")
                .env("KILN_CORPUS_BASE", &base))
            .map_err(|e| {
                format!(
                    "the corpus base image {base} is not in the test registry and make-base \
                     failed (run scripts/setup-test-env as root first):\n{e}"
                )
            })?;
            Ok(registry)
        })
        .clone()
}

/// The directory the server for the cases' `http/` directories serves, which is
/// started on first use.
fn http_root() -> Result<&'static Mutex<Option<PathBuf>>, String> {
    static SERVER: OnceLock<Result<Arc<Mutex<Option<PathBuf>>>, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let root = Arc::new(Mutex::new(None));
            serve_http(root.clone())?;
            Ok(root)
        })
        .as_ref()
        .map(|root| &**root)
        .map_err(Clone::clone)
}

/// Builds `case` cold and then again from the cache, comparing both images with
/// BuildKit's; history differences are printed, not failed.
fn check_case(case: &Case, tally: &Tally) -> Result<(), String> {
    let registry = base_image_registry()?;
    tally.ran.fetch_add(1, Ordering::SeqCst);
    let http_dir = case.dir.join("http");
    let _serving = if http_dir.is_dir() {
        // One case at a time serves its directory (they all use the same port).
        static SERVING: Mutex<()> = Mutex::new(());
        let serving = SERVING.lock().unwrap_or_else(|e| e.into_inner());
        *http_root()?.lock().unwrap_or_else(|e| e.into_inner()) = Some(http_dir);
        Some(serving)
    } else {
        None
    };
    let tmp = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let root = tmp.path().join("store");
    let config = tmp.path().join("kiln.json");
    fs::write(&config, corpus::kiln_config(&registry))
        .map_err(|e| format!("writing {}: {e}", config.display()))?;
    if let Some(want) = corpus::expected_error(&case.dir) {
        // BuildKit fails this case: kiln must fail with its message, cold and again.
        for (pass, label) in ["", " (cached rebuild)"].into_iter().enumerate() {
            build_expecting_error(&root, &config, &case.dir, &want)
                .map_err(|e| format!("{}{label}: {}", case.name, e.replace('\n', "\n  ")))?;
            [&tally.identical, &tally.identical_cached][pass].fetch_add(1, Ordering::SeqCst);
        }
        tally.history_identical.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    }
    let expected = read_json(&case.dir.join("expected.json"))?;
    let expected_history = read_json(&case.dir.join("history.json"))?;
    let mut report = Vec::new();
    for (pass, label) in ["", " (cached rebuild)"].into_iter().enumerate() {
        let (actual, history) = build_and_describe(&root, &config, tmp.path(), &case.dir)
            .map_err(|e| format!("{}{label}: {}", case.name, e.replace('\n', "\n  ")))?;
        let d = differences(&expected, &actual);
        if d.is_empty() {
            [&tally.identical, &tally.identical_cached][pass].fetch_add(1, Ordering::SeqCst);
        } else {
            report.push(format!(
                "{}{label}: differs from BuildKit:\n  {}",
                case.name,
                d.join("\n  ")
            ));
        }
        if pass == 0 {
            let h = history_differences(&expected_history, &history);
            if h.is_empty() {
                tally.history_identical.fetch_add(1, Ordering::SeqCst);
            } else {
                eprintln!(
                    "{}: history differs from BuildKit (reported, not required):\n  {}",
                    case.name,
                    h.join("\n  ")
                );
            }
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report.join("\n"))
    }
}

pub fn differences_name_each_changed_field_and_missing_path() {
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
