//! The README's main job, as a test: `examples/api` (a TypeScript API: npm
//! install + tsc in `builder`, `npm install --omit=dev` and a non-root `nodejs`
//! user in `runner`) builds with kiln from the Debian + Node base that
//! `scripts/make-base-images` makes here, and `kiln run` serves it as uid 1001
//! on port 8000. Needs root (mmdebstrap, the sandbox) and the npm registry.

use crate::util::kiln;
use kiln_testkit::http;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn example_api_builds_and_serves_as_uid_1001_on_port_8000() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let made = Command::new(repo().join("scripts/make-base-images"))
        .args(["--only", "node", "--root"])
        .arg(&root)
        .env("KILN", env!("CARGO_BIN_EXE_kiln"))
        .status()
        .expect("run scripts/make-base-images");
    assert!(made.success(), "scripts/make-base-images failed");

    let built = kiln()
        .root(&root)
        .args(["build", "--progress=plain", "-t", "api:test"])
        .arg(repo().join("examples/api"))
        .output();
    let log = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "kiln build failed:\n{log}");

    let inspect = kiln().root(&root).args(["inspect", "api:test"]).output();
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let cfg = &v[0]["Config"];
    assert_eq!(cfg["User"], "nodejs");
    assert!(cfg["ExposedPorts"].get("8000/tcp").is_some(), "{cfg}");

    // kiln analyze: the build's stages with the sizes `kiln inspect` gives each of
    // them built with --target, the saving against builder, and no false findings.
    let analysis = kiln()
        .root(&root)
        .args(["analyze", "--format", "json", "api:test"])
        .stdout();
    let r: serde_json::Value = serde_json::from_str(&analysis).unwrap();
    let stages = r["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["base", "builder", "runner"]);
    for s in stages {
        let name = s["name"].as_str().unwrap();
        let tag = format!("api:{name}");
        kiln()
            .root(&root)
            .args(["build", "--progress=plain", "--target", name, "-t", &tag])
            .arg(repo().join("examples/api"))
            .ok();
        let inspect = kiln().root(&root).args(["inspect", &tag]).stdout();
        let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        assert_eq!(s["stored_size"], v[0]["Size"], "stage {name}");
    }
    let saving = &r["saving"];
    assert_eq!(saving["compared_with"], "builder", "{saving:#}");
    assert_eq!(saving["final_stage"], "runner");
    assert!(saving["saved"].as_i64().unwrap() > 0, "{saving:#}");
    // The only findings are the Debian base's set-uid/set-gid programs, from FROM.
    for f in r["findings"].as_array().unwrap() {
        assert_eq!(f["kind"], "setuid", "unexpected finding {f:#}");
        assert_eq!(f["line"], 1, "{f:#}");
    }
    for l in r["layers"].as_array().unwrap() {
        assert!(l["line"].as_u64().is_some(), "{l:#}");
    }

    assert!(
        http::get(8000, "/health").is_none(),
        "something already listens on 127.0.0.1:8000"
    );
    let mut server = kiln()
        .root(&root)
        .args(["run", "api:test"])
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut body = None;
    while Instant::now() < deadline {
        if let Some(r) = http::get(8000, "/") {
            body = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGTERM reaches the app through kiln run; it exits and cleans up.
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let waited = Instant::now();
    loop {
        if server.try_wait().unwrap().is_some() {
            break;
        }
        if waited.elapsed() > Duration::from_secs(20) {
            let _ = server.kill();
            panic!("kiln run did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = body.expect("the app answered on 127.0.0.1:8000");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let json = body.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["uid"], 1001, "{v}");
    assert_eq!(v["user"], "nodejs", "{v}");
    assert_eq!(v["service"], "kiln-example-api");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&root.display().to_string()),
        "kiln run left mounts: {mounts}"
    );
}
