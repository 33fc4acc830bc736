//! `kiln build --progress=plain|auto|tty` as a user sees it: the kiln binary
//! building `FROM scratch` + a copy of Debian's static busybox, whose RUN steps
//! print lines. RUN steps run in the real sandbox, so this needs root (CI runs as
//! root); the tty view is drawn into a pseudo-terminal made by `script(1)`.

use crate::util::kiln;
use regex::Regex;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ctx: PathBuf,
}

/// A context with busybox and `Dockerfile`: `FROM scratch`, `COPY busybox`,
/// then `run` as the exec-form RUN `busybox sh -c <run>`.
fn project(run: &str) -> Project {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::copy("/bin/busybox", ctx.join("busybox")).expect("busybox-static is installed");
    let run = serde_json::to_string(run).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", {run}]\n"
        ),
    )
    .unwrap();
    Project {
        root,
        ctx,
        _dir: dir,
    }
}

impl Project {
    fn build(&self, progress: &str) -> Output {
        kiln()
            .root(&self.root)
            .args(["build", "-t", "progress:1", progress])
            .arg(&self.ctx)
            .output()
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `#N` of the step whose header matches `header`.
fn vertex(log: &str, header: &str) -> String {
    let re = Regex::new(&format!(r"(?m)^#(\d+) {header}")).unwrap();
    match re.captures(log) {
        Some(c) => c[1].to_string(),
        None => panic!("no step header matching {header:?} in:\n{log}"),
    }
}

fn has_line(log: &str, pattern: &str) -> bool {
    Regex::new(&format!("(?m)^{pattern}$"))
        .unwrap()
        .is_match(log)
}

#[test]
fn plain_progress_reads_like_buildkit_and_auto_is_plain_off_a_terminal() {
    let p = project("echo hello; echo oops >&2");
    let out = p.build("--progress=plain");
    let log = stderr_of(&out);
    assert!(out.status.success(), "{log}");
    let copy = vertex(&log, r"\[[^\]]+\] COPY busybox /bin/busybox");
    let run = vertex(&log, r"\[[^\]]+\] RUN ");
    assert!(has_line(&log, &format!(r"#{copy} DONE \d+\.\ds")), "{log}");
    assert!(
        has_line(&log, &format!(r"#{run} \d+\.\d{{3}} hello")),
        "{log}"
    );
    assert!(
        has_line(&log, &format!(r"#{run} \d+\.\d{{3}} oops")),
        "{log}"
    );
    assert!(has_line(&log, &format!(r"#{run} DONE \d+\.\ds")), "{log}");
    assert!(has_line(&log, r"#\d+ exporting to image"), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        Regex::new(r"^built progress:1 sha256:[0-9a-f]{64} \S+ in \S+ — 2 steps run, 0 cached$")
            .unwrap()
            .is_match(last),
        "{log}"
    );
    assert!(out.stdout.is_empty(), "progress goes to stderr only");

    // stderr is a pipe here, so auto means plain; everything comes from the cache.
    let out = p.build("--progress=auto");
    let log = stderr_of(&out);
    assert!(out.status.success(), "{log}");
    let copy = vertex(&log, r"\[[^\]]+\] COPY busybox /bin/busybox");
    let run = vertex(&log, r"\[[^\]]+\] RUN ");
    assert!(has_line(&log, &format!("#{copy} CACHED")), "{log}");
    assert!(has_line(&log, &format!("#{run} CACHED")), "{log}");
    assert!(
        !has_line(&log, r"#\d+ \d+\.\d{3} .*"),
        "nothing ran:\n{log}"
    );
    assert!(log.trim_end().ends_with("— 0 steps run, 2 cached"), "{log}");
}

#[test]
fn plain_progress_shows_a_failing_step_as_an_error() {
    let p = project("echo before; exit 3");
    let out = p.build("--progress=plain");
    let log = stderr_of(&out);
    assert!(!out.status.success(), "{log}");
    let run = vertex(&log, r"\[[^\]]+\] RUN ");
    assert!(
        has_line(&log, &format!(r"#{run} \d+\.\d{{3}} before")),
        "{log}"
    );
    assert!(has_line(&log, &format!("#{run} ERROR: .+")), "{log}");
    assert!(!log.contains("built "), "{log}");
}

/// Runs `kiln build --progress=tty` in a 72×20 pseudo-terminal; what the
/// terminal received.
fn build_in_a_terminal(p: &Project) -> String {
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let cmd = format!(
        "stty cols 72 rows 20; {} --root {} build -t progress:1 --progress=tty {}",
        quote(Path::new(kiln)),
        quote(&p.root),
        quote(&p.ctx)
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("NO_COLOR", "1")
        .output()
        .expect("script(1) from util-linux is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text:?}");
    text
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

#[test]
fn tty_progress_redraws_in_place_and_leaves_a_final_view() {
    let p = project(
        "for i in 1 2 3 4 5 6 7 8; do echo line $i; /bin/busybox sleep 0.1; done; \
         printf 'a\\tb\\033[31mred\\r\\n'; /bin/busybox sleep 0.4",
    );
    let text = build_in_a_terminal(&p);
    // Live frames: header, the running RUN's output under it, each frame drawn
    // over the last one (cursor up, lines cleared).
    assert!(text.contains("[+] Building "), "{text:?}");
    assert!(
        Regex::new(r" => => # line [1-8]\x1b\[K")
            .unwrap()
            .is_match(&text),
        "{text:?}"
    );
    assert!(
        Regex::new(r"\x1b\[\d+A\r\[\+\] Building")
            .unwrap()
            .is_match(&text),
        "{text:?}"
    );
    // The RUN's own escape sequences and tab never reach the terminal (the line
    // stays on screen for 0.4s, several frames).
    assert!(!text.contains("\x1b[31m"), "{text:?}");
    assert!(text.contains(" => => # a       bred\x1b[K"), "{text:?}");
    // Every line of the view fits in 72 columns.
    let escape = Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").unwrap();
    for line in text.split(['\n', '\r']) {
        let visible = escape.replace_all(line, "");
        assert!(
            visible.chars().count() < 72 || visible.starts_with("built "),
            "{visible:?}"
        );
    }
    // The final view: finished header, one line per step, the summary.
    let last = &text[text.rfind("[+] Building").unwrap()..];
    assert!(
        Regex::new(r"^\[\+\] Building \S+ \(3/3\) FINISHED")
            .unwrap()
            .is_match(last),
        "{last:?}"
    );
    assert!(!last.contains(" => => # "), "{last:?}");
    assert!(last.contains(" => exporting to image "), "{last:?}");
    assert!(
        Regex::new(r"built progress:1 sha256:[0-9a-f]{12} \S+ in \S+ — 2 steps run, 0 cached")
            .unwrap()
            .is_match(last),
        "{last:?}"
    );

    // A rebuild: every step cached.
    let text = build_in_a_terminal(&p);
    let last = &text[text.rfind("[+] Building").unwrap()..];
    assert!(
        Regex::new(r" => CACHED \[[^\]]+\] RUN .* 0\.0s")
            .unwrap()
            .is_match(last),
        "{last:?}"
    );
    assert!(last.contains("0 steps run, 2 cached"), "{last:?}");
}
