//! `kiln check` and `kiln build --check`: BuildKit's text layout, the JSON
//! array, exit codes (0 with warnings; non-zero with `error=true`, for a parse
//! error and for what the build would reject), the `# check=` directive and the
//! `BUILDKIT_DOCKERFILE_CHECK` build arg, and the rules that read the store
//! (never pulled from) and the context.

use crate::util::{kiln, store_image};
use kiln_oci::image::ContainerConfig;
use std::fs;
use std::path::Path;

/// A context directory holding `Dockerfile` with `text`.
fn context(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("Dockerfile"), text).unwrap();
    dir
}

/// `kiln --root ROOT check`: an empty store of the test's own, never the default.
fn check(root: &Path) -> kiln_testkit::Kiln {
    let mut k = kiln();
    k.root(root).arg("check");
    k
}

const CASING: &str = "FROM alpine:3 as base\nUSER app\nLABEL org.opencontainers.image.source=x\n";

#[test]
fn text_report_like_buildkit_and_exit_zero_with_warnings() {
    let ctx = context(CASING);
    let root = tempfile::tempdir().unwrap();
    let out = kiln().root(root.path()).arg("check").arg(ctx.path()).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "\nWARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n\
         'as' and 'FROM' keywords' casing do not match\n\
         Dockerfile:1\n\
         --------------------\n   \
         1 | >>> FROM alpine:3 as base\n   \
         2 |     USER app\n   \
         3 |     LABEL org.opencontainers.image.source=x\n\
         --------------------\n\
         \nCheck complete, 1 warning has been found!\n"
    );
    // The rule that needs the stored base image says why it did not run.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("note: InvalidBaseImagePlatform not checked: base image alpine:3 is not in the image store"),
        "{stderr}"
    );
    // kiln's default context is `.`.
    let out = kiln()
        .root(root.path())
        .arg("check")
        .current_dir(ctx.path())
        .stdout();
    assert!(out.contains("WARNING: FromAsCasing"), "{out}");
}

#[test]
fn json_report() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context("FROM alpine:3 AS Build\n  USER root\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.Dockerfile");
    fs::rename(ctx.path().join("Dockerfile"), &file).unwrap();
    let out = check(root.path())
        .arg("-f")
        .arg(&file)
        .args(["--format", "json"])
        .arg(ctx.path())
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let list = v.as_array().unwrap();
    let rules: Vec<(&str, u64)> = list
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap(),
                f["location"]["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rules,
        [
            ("MissingOciLabels", 1),
            ("StageNameCasing", 1),
            ("FinalStageRunsAsRoot", 2)
        ]
    );
    let casing = &list[1];
    assert_eq!(casing["message"], "Stage name 'Build' should be lowercase");
    assert_eq!(casing["description"], "Stage names should be lowercase");
    assert_eq!(
        casing["url"],
        "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/"
    );
    assert_eq!(casing["level"], "warning");
    assert_eq!(casing["location"]["file"], "app.Dockerfile");
    let root = &list[2];
    assert_eq!(root["location"]["column"], 3);
    assert!(root["url"].is_null());
    assert!(root["hint"].as_str().unwrap().contains("USER"));
    assert_eq!(list[0]["level"], "info");
}

#[test]
fn error_true_fails_only_when_a_rule_fires() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(&format!("# check=error=true\n{CASING}"));
    let err = check(root.path()).arg(ctx.path()).fails();
    assert!(
        err.contains("ERROR: lint violation found for rules: FromAsCasing"),
        "{err}"
    );
    let ctx = context(
        "# check=error=true\nFROM alpine:3\nUSER app\nLABEL org.opencontainers.image.source=x\n",
    );
    let out = check(root.path()).arg(ctx.path()).stdout();
    assert!(out.contains("Check complete, no warnings found."), "{out}");
    // Info findings never fail the check.
    let ctx = context("# check=error=true\nFROM alpine:3\nUSER app\n");
    let out = check(root.path()).arg(ctx.path()).stdout();
    assert!(out.contains("INFO: MissingOciLabels"), "{out}");
}

#[test]
fn directive_skips_and_the_build_arg_replaces_it() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(&format!("# check=skip=FromAsCasing\n{CASING}"));
    let out = check(root.path()).arg(ctx.path()).stdout();
    assert!(!out.contains("FromAsCasing"), "{out}");
    // BUILDKIT_DOCKERFILE_CHECK replaces the directive as a whole.
    let err = check(root.path())
        .args(["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=error=true"])
        .arg(ctx.path())
        .fails();
    assert!(
        err.contains("lint violation found for rules: FromAsCasing"),
        "{err}"
    );
    let out = check(root.path())
        .args(["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all"])
        .arg(ctx.path())
        .stdout();
    assert!(out.contains("no warnings found"), "{out}");
    let err = check(root.path())
        .args(["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=bogus"])
        .arg(ctx.path())
        .fails();
    assert!(
        err.contains("failed to parse BUILDKIT_DOCKERFILE_CHECK") && err.contains("\"bogus\""),
        "{err}"
    );
}

#[test]
fn parse_errors_are_one_located_message() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context("FROM alpine:3\nCOPPY a b\n");
    let err = check(root.path()).arg(ctx.path()).fails();
    assert!(
        err.contains("Dockerfile:2: unknown instruction: COPPY"),
        "{err}"
    );
    assert!(err.contains("COPPY a b"), "excerpt: {err}");
    let ctx = context("# check=error=sometimes\nFROM alpine:3\n");
    let err = check(root.path()).arg(ctx.path()).fails();
    assert!(
        err.contains("Dockerfile:1: failed to parse check options"),
        "{err}"
    );
}

#[test]
fn what_the_build_rejects_fails_after_the_warnings() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context("FROM alpine:3 AS x\nFROM alpine:3 AS x\n");
    let out = check(root.path()).arg(ctx.path()).output();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("WARNING: DuplicateStageName"), "{stdout}");
    assert!(
        stdout.contains("Duplicate stage name \"x\", stage names should be unique"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Dockerfile:2: duplicate stage name"),
        "{stderr}"
    );
}

#[test]
fn build_check_checks_and_builds_nothing() {
    let ctx = context(CASING);
    let root = tempfile::tempdir().unwrap();
    let out = kiln()
        .root(root.path())
        .args(["build", "--check", "-t", "never:1"])
        .arg(ctx.path())
        .stdout();
    assert!(out.contains("WARNING: FromAsCasing"), "{out}");
    assert!(
        out.contains("Check complete, 1 warning has been found!"),
        "{out}"
    );
    let images = kiln().root(root.path()).args(["images", "-q"]).output();
    assert!(String::from_utf8_lossy(&images.stdout).trim().is_empty());
    let ctx = context(&format!("# check=error=true\n{CASING}"));
    let err = kiln()
        .root(root.path())
        .args(["build", "--check"])
        .arg(ctx.path())
        .fails();
    assert!(
        err.contains("lint violation found for rules: FromAsCasing"),
        "{err}"
    );
}

fn other_arch() -> &'static str {
    if kiln_oci::image::host_architecture() == "amd64" {
        "linux/arm64"
    } else {
        "linux/amd64"
    }
}

#[test]
fn stored_base_images_are_checked_and_never_pulled() {
    let root = tempfile::tempdir().unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    store_image(
        root.path(),
        "base:1",
        rootfs.path(),
        ContainerConfig {
            env: vec!["PATH=/bin".into(), "APP_HOME=/app".into()],
            user: Some("1000".into()),
            ..ContainerConfig::default()
        },
        "base made by the test",
    );
    let ctx = context(
        "FROM base:1\nWORKDIR $APP_HOME\nCOPY $APP_HOEM/x /x\nLABEL org.opencontainers.image.source=x\n",
    );
    let run = |platform: Option<&str>| {
        let mut k = kiln();
        k.root(root.path()).args(["check", "--format", "json"]);
        if let Some(p) = platform {
            k.args(["--platform", p]);
        }
        let out = k.arg(ctx.path()).ok();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let found: Vec<(String, String)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["rule"].as_str().unwrap().to_string(),
                    f["message"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (found, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // The image's env is known: only the misspelt variable is undefined, and the
    // image's user is not root.
    let (found, stderr) = run(None);
    assert_eq!(
        found,
        [(
            "UndefinedVar".to_string(),
            "Usage of undefined variable '$APP_HOEM' (did you mean $APP_HOME?)".to_string()
        )],
        "{stderr}"
    );
    assert!(!stderr.contains("not checked"), "{stderr}");
    let host = format!("linux/{}", kiln_oci::image::host_architecture());
    let (found, _) = run(Some(other_arch()));
    assert!(
        found.contains(&(
            "InvalidBaseImagePlatform".to_string(),
            format!(
                "Base image base:1 was pulled with platform \"{host}\", expected \"{}\" for current build",
                other_arch()
            )
        )),
        "{found:?}"
    );
    // Not in the store: nothing is pulled (no registry is reachable at this
    // name), the rules that need it say so.
    let ctx = context("FROM localhost:1/nothing:1\nENV A=$B\nUSER app\n");
    let (found, stderr) = {
        let out = kiln()
            .root(root.path())
            .args(["check", "--format", "json"])
            .arg(ctx.path())
            .ok();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(!found.contains("UndefinedVar"), "{found}");
    assert!(
        stderr.contains(
            "note: UndefinedVar not checked: stages on localhost:1/nothing:1 start from an image"
        ),
        "{stderr}"
    );
}

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

#[test]
fn dockerignore_rules() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context(
        "FROM scratch AS build\nCOPY . /src\nCOPY tmp/a.txt /a\nFROM scratch\nCOPY --from=build /src/out /out\nUSER 1000\nLABEL org.opencontainers.image.source=x\n",
    );
    write(ctx.path(), "tmp/a.txt", "a");
    write(ctx.path(), "node_modules/x/index.js", "x");
    write(ctx.path(), ".git/HEAD", "ref");
    let out = check(root.path())
        .args(["--format", "json"])
        .arg(ctx.path())
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let msgs: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        msgs,
        ["COPY . copies node_modules, .git from the build context; .dockerignore does not exclude them"]
    );
    write(ctx.path(), ".dockerignore", "tmp\nnode_modules\n.git\n");
    let out = check(root.path())
        .args(["--format", "json"])
        .arg(ctx.path())
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let found: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["rule"].as_str().unwrap(), f["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        found,
        [(
            "CopyIgnoredFile",
            "Attempting to Copy file \"tmp/a.txt\" that is excluded by .dockerignore"
        )]
    );
}

/// `# check=error=true` fails a build too (before anything runs), as BuildKit's
/// "lint violation found for rules"; without it the findings are warnings.
#[test]
fn error_true_fails_a_build() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context("# check=error=true\nFROM scratch as base\n");
    let err = kiln()
        .root(root.path())
        .args(["build", "--dry-run"])
        .arg(ctx.path())
        .fails();
    assert!(
        err.contains("Dockerfile:2: lint violation found for rules: FromAsCasing"),
        "{err}"
    );
    let ctx = context("FROM scratch as base\n");
    let out = kiln()
        .root(root.path())
        .args(["build", "--dry-run"])
        .arg(ctx.path())
        .ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "warning: Dockerfile:1: 'as' and 'FROM' keywords' casing do not match [FromAsCasing]"
        ),
        "{stderr}"
    );
}
