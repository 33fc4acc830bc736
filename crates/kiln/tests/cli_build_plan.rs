//! `kiln build` planning from the command line: `--dry-run` output, `--target`
//! pruning, and Dockerfile errors reported with file:line, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

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
    kiln().args(args).output().expect("run kiln")
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
    let mut child = kiln()
        .args([
            "build",
            "--dry-run",
            "-f",
            "-",
            "--build-arg",
            "TAG=3.20",
            ".",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"ARG TAG=3.19\nFROM alpine:${TAG} AS app\nRUN echo hi\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
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

/// `kiln build` with a 4 GiB address-space limit, so that a build whose
/// memory would explode fails fast instead of swamping the machine.
fn run_bounded(args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = kiln();
    cmd.args(args);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("run kiln")
}

/// 40 doublings of an ARG (2^40 bytes unchecked) stop at the 1 MiB word cap
/// on the line that crosses it; many 1 MiB ENV values stop at the stage's
/// 16 MiB expansion budget. Both are located Dockerfile errors.
#[test]
fn variable_expansion_is_capped_with_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let build = |lines: &[String]| {
        std::fs::write(dir.path().join("Dockerfile"), lines.join("\n") + "\n").unwrap();
        let out = run_bounded(&[
            "--root",
            root.path().to_str().unwrap(),
            "build",
            "--progress=plain",
            dir.path().to_str().unwrap(),
        ]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.len() < 64 * 1024, "no huge value is printed");
        // The message as one line (miette wraps it under its `×`).
        stderr
            .replace('│', " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };

    let mut lines = vec!["FROM scratch".to_string(), "ARG A=x".to_string()];
    lines.extend((0..40).map(|_| "ARG A=$A$A".to_string()));
    let stderr = build(&lines);
    // Line 3 + 19 reaches exactly 1 MiB; the next line would be 2 MiB.
    assert!(
        stderr.contains(
            "Dockerfile:23: failed to process \"$A$A\": expanded word is more than 1 MiB longer than written"
        ),
        "{stderr}"
    );

    // 20 doublings make A 1 MiB (2^21 - 82 bytes of growth); each ENV adds
    // 2^20 - 2 more, and the 15th crosses 16 MiB.
    lines.truncate(22);
    lines.extend((0..20).map(|i| format!("ENV B{i}=$A")));
    let stderr = build(&lines);
    assert!(
        stderr
            .contains("Dockerfile:37: variable expansion in this stage produced more than 16 MiB"),
        "{stderr}"
    );

    // The same before the first FROM, where the meta ARGs are expanded.
    let mut lines = vec!["ARG A=x".to_string()];
    lines.extend((0..40).map(|_| "ARG A=$A$A".to_string()));
    lines.push("FROM scratch".to_string());
    let stderr = build(&lines);
    assert!(
        stderr.contains(
            "Dockerfile:22: failed to process \"$A$A\": expanded word is more than 1 MiB"
        ),
        "{stderr}"
    );
    let mut lines = vec!["ARG A=x".to_string()];
    lines.extend((0..20).map(|_| "ARG A=$A$A".to_string()));
    lines.extend((0..20).map(|i| format!("ARG B{i}=$A")));
    lines.push("FROM scratch".to_string());
    let stderr = build(&lines);
    assert!(
        stderr.contains(
            "Dockerfile:36: variable expansion in the ARGs before the first FROM produced more than 16 MiB"
        ),
        "{stderr}"
    );
}
