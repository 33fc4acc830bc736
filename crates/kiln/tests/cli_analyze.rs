//! `kiln analyze` and `kiln build --analyze` end to end, on busybox builds the
//! tests make (needs root: RUN runs in the sandbox): a planted image (a `.env`,
//! an `.npmrc` with a token, an SSH private key and a devDependency copied into
//! the final stage) is found item by item with its Dockerfile line, a clean one
//! has no findings, the stage sizes agree with `kiln inspect`/`kiln images` of
//! each stage built with `--target`, the build record goes with the image on
//! prune, the gates exit 3, and the HTML report renders in headless Chromium.

use crate::util::{kiln, store_busybox};
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const NPM_TOKEN: &str = "npm_0123456789abcdefghijABCDEFGHIJ012345";

/// Line numbers matter: the assertions name them.
const PLANTED: &str = "\
FROM busybox:test AS builder
WORKDIR /src
COPY . .
RUN mkdir -p node_modules/typescript node_modules/left-pad \\
 && echo '{\"name\":\"typescript\",\"version\":\"5.4.0\"}' > node_modules/typescript/package.json \\
 && echo '{\"name\":\"left-pad\",\"version\":\"1.3.0\"}' > node_modules/left-pad/package.json \\
 && dd if=/dev/zero of=/src/toolchain.bin bs=1024 count=512 2>/dev/null
RUN echo built > /src/app.js
FROM busybox:test AS final
WORKDIR /app
COPY --from=builder /src/app.js /src/package.json ./
COPY --from=builder /src/node_modules node_modules/
COPY .env .npmrc config.js ./
COPY id_ed25519 /root/.ssh/id_ed25519
RUN echo rebuilt > /app/app.js
USER 1000
";

const CLEAN: &str = "\
FROM busybox:test AS builder
WORKDIR /src
COPY app.sh .
RUN dd if=/dev/zero of=/src/toolchain.bin bs=1024 count=256 2>/dev/null && cp app.sh app.out
FROM busybox:test
COPY --from=builder /src/app.out /app/app.sh
USER 1000
";

struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ctx: PathBuf,
}

fn project(dockerfile: &str, files: &[(&str, &str)]) -> Project {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    store_busybox(&root);
    fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        fs::write(ctx.join(name), content).unwrap();
    }
    Project {
        root,
        ctx,
        _dir: dir,
    }
}

fn planted() -> Project {
    project(
        PLANTED,
        &[
            ("package.json", r#"{"name":"app","version":"1.0.0","dependencies":{"left-pad":"1"},"devDependencies":{"typescript":"5"}}"#),
            (".env", "DATABASE_PASSWORD=hunter2\n"),
            ("config.js", "module.exports = {\n  key: 'AKIAIOSFODNN7EXAMPLE',\n};\n"),
            (".npmrc", &format!("//registry.npmjs.org/:_authToken={NPM_TOKEN}\n")),
            ("id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"),
        ],
    )
}

impl Project {
    fn build(&self, extra: &[&str]) {
        kiln()
            .root(&self.root)
            .args(["build", "--progress=plain"])
            .args(extra)
            .arg(&self.ctx)
            .ok();
    }

    fn analyze_json(&self, image: &str) -> Value {
        let out = kiln()
            .root(&self.root)
            .args(["analyze", "--format", "json", image])
            .stdout();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    fn inspect_size(&self, image: &str) -> u64 {
        let out = kiln().root(&self.root).args(["inspect", image]).stdout();
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0]["Size"].as_u64().unwrap()
    }
}

fn finding<'a>(r: &'a Value, kind: &str, path: &str) -> &'a Value {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == kind && f["path"] == path)
        .unwrap_or_else(|| panic!("no {kind} finding at {path} in {:#}", r["findings"]))
}

#[test]
fn planted_secrets_and_dev_dependency_are_found_with_their_dockerfile_line() {
    let p = planted();
    p.build(&["-t", "planted:1"]);
    let r = p.analyze_json("planted:1");
    assert_eq!(r["version"], 1);
    for (kind, path, line) in [
        ("secrets", "/app/.env", 13),
        ("secrets", "/app/.npmrc", 13),
        ("secrets", "/root/.ssh/id_ed25519", 14),
        ("dev-deps", "/app/node_modules/typescript", 12),
    ] {
        let f = finding(&r, kind, path);
        assert_eq!(f["line"], line, "{f:#}");
        assert_eq!(f["stage"], "final", "{f:#}");
        assert!(f["size"].as_u64().unwrap() > 0, "{f:#}");
    }
    // A token in an application file, found by its pattern, with its line in the file.
    let aws = finding(&r, "secrets", "/app/config.js");
    assert_eq!(aws["line"], 13);
    assert!(
        aws["message"]
            .as_str()
            .unwrap()
            .contains("aws-access-key-id on line 2"),
        "{aws:#}"
    );
    assert!(finding(&r, "secrets", "/app/.npmrc")["message"]
        .as_str()
        .unwrap()
        .contains("auth token"));
    // left-pad is a production dependency: not a finding.
    assert!(!r["findings"].to_string().contains("left-pad"));
    // USER 1000: no root finding.
    assert!(!r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["kind"] == "root"));
    // /app/app.js ("built\n") overwritten by line 15: one hidden copy of 6 bytes.
    assert_eq!(r["waste"]["wasted_bytes"], 6, "{:#}", r["waste"]);
    assert_eq!(r["waste"]["top"][0]["path"], "/app/app.js");
    assert_eq!(r["waste"]["top"][0]["copies"], 1);

    // The text report says the same.
    let text = kiln().root(&p.root).args(["analyze", "planted:1"]).stdout();
    assert!(
        text.contains("/app/.env") && text.contains("Dockerfile:13"),
        "{text}"
    );
    assert!(text.contains("Multi-stage saving: final final"), "{text}");
}

#[test]
fn stage_sizes_and_saving_agree_with_each_stage_built_as_target() {
    let p = planted();
    p.build(&["-t", "planted:1"]);
    p.build(&["-t", "planted:builder", "--target", "builder"]);
    let r = p.analyze_json("planted:1");
    let stages = r["stages"].as_array().unwrap();
    let size_of = |name: &str| -> u64 {
        stages.iter().find(|s| s["name"] == name).unwrap()["stored_size"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(size_of("builder"), p.inspect_size("planted:builder"));
    assert_eq!(size_of("final"), p.inspect_size("planted:1"));
    assert_eq!(r["size"]["stored"], p.inspect_size("planted:1"));
    // The builder's 512 KiB file stayed behind: that is the saving.
    let s = &r["saving"];
    assert_eq!(s["compared_with"], "builder");
    assert_eq!(s["final_stage"], "final");
    let saved = size_of("builder") as i64 - size_of("final") as i64;
    assert_eq!(s["saved"], saved);
    assert!(saved > 400 * 1024, "{s:#}");
    // The builder's files: its 512 KiB file is in its filesystem, not the final one's.
    let files = |name: &str| {
        stages.iter().find(|s| s["name"] == name).unwrap()["files_size"]
            .as_u64()
            .unwrap()
    };
    assert!(files("builder") >= files("final") + 512 * 1024);
    // Every layer of the final image names its line; the build made uncompressed ones.
    for l in r["layers"].as_array().unwrap() {
        assert!(l["line"].as_u64().is_some(), "{l:#}");
    }
    assert_eq!(r["size"]["compressed"], Value::Null);
    // After a push-like export the compressed sizes are known and measured.
    let out = p.root.join("../out.tar");
    kiln()
        .root(&p.root)
        .args(["save", "-o"])
        .arg(&out)
        .arg("planted:1")
        .ok();
    let r = p.analyze_json("planted:1");
    assert!(
        r["size"]["compressed"].as_u64().unwrap() > 0,
        "{:#}",
        r["size"]
    );
}

#[test]
fn a_clean_build_has_only_facts_and_no_findings() {
    let p = project(CLEAN, &[("app.sh", "#!/bin/sh\necho hi\n")]);
    p.build(&["-t", "clean:1"]);
    let r = p.analyze_json("clean:1");
    assert_eq!(r["findings"], serde_json::json!([]), "{:#}", r["findings"]);
    assert_eq!(r["waste"]["wasted_bytes"], 0);
    assert_eq!(r["waste"]["efficiency"], 1.0);
    assert_eq!(r["saving"]["compared_with"], "builder");
    assert!(r["biggest"]["files"][0]["path"]
        .as_str()
        .unwrap()
        .starts_with('/'));
    // An image kiln did not build (no record): its layers, no stages, no saving;
    // no USER, so the root finding, with no line to point at.
    let r = p.analyze_json("busybox:test");
    assert_eq!(r["stages"], serde_json::json!([]));
    assert_eq!(r["saving"], Value::Null);
    assert_eq!(r["layers"].as_array().unwrap().len(), 1);
    let root = finding(&r, "root", "");
    assert_eq!(root["line"], Value::Null);
}

#[test]
fn gates_exit_3_and_build_analyze_reports_after_the_build() {
    let p = planted();
    p.build(&["-t", "planted:1"]);
    let code = |args: &[&str]| {
        kiln()
            .root(&p.root)
            .args(["analyze", "planted:1"])
            .args(args)
            .output()
            .status
            .code()
    };
    assert_eq!(code(&["--fail-on", "secrets"]), Some(3));
    assert_eq!(code(&["--fail-on", "dev-deps"]), Some(3));
    assert_eq!(code(&["--fail-on", "root"]), Some(0));
    assert_eq!(code(&["--max-size", "1GB"]), Some(0));
    assert_eq!(code(&["--max-size", "10kB"]), Some(3));
    assert_eq!(code(&["--min-efficiency", "0.5"]), Some(0));
    assert_eq!(code(&["--max-size", "lots"]), Some(1));

    let out = kiln()
        .root(&p.root)
        .args([
            "build",
            "--progress=plain",
            "--analyze",
            "--fail-on",
            "secrets",
            "-t",
            "planted:2",
        ])
        .arg(&p.ctx)
        .output();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/root/.ssh/id_ed25519"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("gate failed: --fail-on secrets"));
}

#[test]
fn the_build_record_keeps_the_stages_layers_and_goes_with_the_image() {
    let p = planted();
    p.build(&["-t", "planted:1"]);
    let records = || -> Vec<PathBuf> {
        fs::read_dir(p.root.join("builds"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    assert_eq!(records().len(), 1);
    let rec: Value = serde_json::from_slice(&fs::read(&records()[0]).unwrap()).unwrap();
    assert_eq!(rec["version"], 1);
    let names: Vec<&str> = rec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["builder", "final"]);
    let step = &rec["stages"][0]["steps"][2];
    assert_eq!(step["line"], 4);
    assert_eq!(step["end_line"], 7);
    assert_eq!(step["result"], "ran");
    // The builder's layers survive a prune while the image is stored...
    kiln().root(&p.root).args(["prune"]).ok();
    let r = p.analyze_json("planted:1");
    assert_eq!(r["stages"].as_array().unwrap().len(), 2);
    // ...and a rebuild from the cache records cache hits.
    p.build(&["-t", "planted:1"]);
    let rec: Value = serde_json::from_slice(&fs::read(&records()[0]).unwrap()).unwrap();
    assert_eq!(rec["stages"][0]["steps"][2]["result"], "cached");
    // Without the image, prune removes the record.
    kiln().root(&p.root).args(["rmi", "planted:1"]).ok();
    kiln().root(&p.root).args(["prune"]).ok();
    assert_eq!(records().len(), 0);
}

fn chromium_dom(html: &Path) -> String {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium (Debian package chromium) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn html_report_renders_stages_and_sizes_in_headless_chromium() {
    let p = planted();
    p.build(&["-t", "planted:1"]);
    let html = p.root.join("../report.html");
    kiln()
        .root(&p.root)
        .args(["analyze", "--format", "html", "-o"])
        .arg(&html)
        .arg("planted:1")
        .ok();
    let page = fs::read_to_string(&html).unwrap();
    for external in ["http://", "https://", "src=", "@import", "url("] {
        assert!(
            !page.contains(external),
            "the page refers to something outside: {external}"
        );
    }
    let r = p.analyze_json("planted:1");
    let dom = chromium_dom(&html);
    // Drawn by the page's script: the stage rows exist only after it ran.
    assert!(dom.contains(r#"id="stages" data-rendered="1""#), "{dom}");
    for s in r["stages"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        assert!(
            dom.contains(&format!(r#"data-stage="{name}""#)),
            "{name} not in {dom}"
        );
        assert!(
            dom.contains(&format!(r#"data-bytes="{}""#, s["stored_size"])),
            "size of {name} not in the DOM"
        );
    }
    assert!(dom.contains(r#"data-kind="secrets""#));
    assert!(dom.contains(r#"class="cell"#), "no treemap cells");
}
