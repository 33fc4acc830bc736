//! `kiln build` planning from the command line: `--dry-run` output, `--target`
//! pruning, and Dockerfile errors reported with file:line, never a panic.

use crate::util::kiln;
use std::path::{Path, PathBuf};
use std::process::Output;

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/api")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn run(args: &[&str]) -> Output {
    kiln().args(args).output()
}

#[test]
fn dry_run_prints_three_stages() {
    let dir = example_dir();
    let out = run(&["build", "--dry-run", dir.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stdout.contains("3 stages (3 needed, 0 pruned)"), "{stdout}");
    assert!(stdout.contains("stage 0  base  [needed]"), "{stdout}");
    assert!(stdout.contains("stage 1  builder  [needed]"), "{stdout}");
    assert!(
        stdout.contains("stage 2  runner  [needed, target]"),
        "{stdout}"
    );
    assert!(stdout.contains("image node:20-bookworm-slim"), "{stdout}");
    // Steps with their line numbers and what they read.
    assert!(
        stdout.contains("line 11  COPY --from=builder /home/build/dist dist/"),
        "{stdout}"
    );
    assert!(stdout.contains("(from stage 1 (builder))"), "{stdout}");
    assert!(
        stdout.contains("line 19  CMD [ \"npm\", \"start\" ]"),
        "{stdout}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn target_builder_prunes_runner() {
    let dir = example_dir();
    let out = run(&[
        "build",
        "--dry-run",
        "--target",
        "builder",
        dir.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(stdout.contains("3 stages (2 needed, 1 pruned)"), "{stdout}");
    assert!(
        stdout.contains("stage 1  builder  [needed, target]"),
        "{stdout}"
    );
    assert!(stdout.contains("stage 2  runner  [pruned]"), "{stdout}");
}

#[test]
fn unknown_target_is_an_error() {
    let dir = example_dir();
    let out = run(&[
        "build",
        "--dry-run",
        "--target",
        "nope",
        dir.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("target stage \"nope\" could not be found"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unknown_instruction_reports_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::fs::read_to_string(example_dir().join("Dockerfile")).unwrap();
    let broken: Vec<String> = seed
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 11 {
                l.replacen("COPY", "COPPY", 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(broken[11].starts_with("COPPY"));
    std::fs::write(dir.path().join("Dockerfile"), broken.join("\n") + "\n").unwrap();
    for dry in [true, false] {
        let mut args = vec!["build"];
        if dry {
            args.push("--dry-run");
        }
        args.push(dir.path().to_str().unwrap());
        let out = run(&args);
        let (_, stderr) = text(&out);
        assert_ne!(out.status.code(), Some(0), "{stderr}");
        assert!(out.status.code().is_some(), "killed by a signal: {stderr}");
        assert!(stderr.contains("Dockerfile:12"), "{stderr}");
        assert!(stderr.contains("unknown instruction: COPPY"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn missing_base_image_with_pull_never_is_a_located_error() {
    let dir = example_dir();
    let root = tempfile::tempdir().unwrap();
    let out = run(&[
        "--root",
        root.path().to_str().unwrap(),
        "build",
        "--pull=never",
        "--progress=plain",
        dir.to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Dockerfile:1:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn dockerfile_from_stdin_and_build_args() {
    let out = kiln()
        .args([
            "build",
            "--dry-run",
            "-f",
            "-",
            "--build-arg",
            "TAG=3.20",
            ".",
        ])
        .stdin(&b"ARG TAG=3.19\nFROM alpine:${TAG} AS app\nRUN echo hi\n"[..])
        .output();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("image alpine:3.20"), "{stdout}");
    assert!(stdout.contains("build args: TAG=3.20"), "{stdout}");
}

#[test]
fn missing_dockerfile_and_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["build", "--dry-run", dir.path().to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot read Dockerfile"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = run(&[
        "build",
        "--dry-run",
        "--platform",
        "linux/",
        example_dir().to_str().unwrap(),
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("invalid --platform"), "{stderr}");

    let bad = dir.path().join("Dockerfile");
    std::fs::write(
        &bad,
        "FROM alpine\nRUN --mount=type=cache,target=/c,sharing=nobody true\n",
    )
    .unwrap();
    let out = run(&["build", "--dry-run", dir.path().to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("Dockerfile:2"), "{stderr}");
    assert!(
        stderr.contains("unsupported sharing value \"nobody\""),
        "{stderr}"
    );
}

#[test]
fn insecure_run_needs_allow_security_insecure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM alpine\nRUN echo fine\nRUN --security=insecure \\\n  mount -t tmpfs none /mnt\n",
    )
    .unwrap();
    let ctx = dir.path().to_str().unwrap();
    for dry in [true, false] {
        let mut args = vec!["build"];
        if dry {
            args.push("--dry-run");
        }
        args.push(ctx);
        let out = run(&args);
        let (stdout, stderr) = text(&out);
        assert_ne!(out.status.code(), Some(0), "{stderr}");
        assert!(out.status.code().is_some(), "killed by a signal: {stderr}");
        assert!(
            stderr.contains(
                "Dockerfile:3: RUN --security=insecure requires --allow security.insecure"
            ),
            "{stderr}"
        );
        assert!(!stdout.contains("stage 0"), "no plan is printed: {stdout}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    let out = run(&["build", "--dry-run", "--allow", "security.insecure", ctx]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("line 3"), "{stdout}");
    assert!(stdout.contains("RUN --security=insecure"), "{stdout}");

    let out = run(&["build", "--dry-run", "--allow", "security.insecur", ctx]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--allow: invalid entitlement \"security.insecur\""),
        "{stderr}"
    );
}
