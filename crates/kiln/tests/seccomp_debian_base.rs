//! RUN steps get Docker's default seccomp profile, and real toolchains still
//! work under it: apt-get (which drops privileges to `_apt`), dpkg, gcc, npm
//! and Go, on the Debian + Node base that `scripts/make-base-images` makes.
//! `RUN --security=insecure` runs without the filter.
//!
//! Needs root (the base is made with mmdebstrap and a chroot; the sandbox),
//! the Debian package mirror and the npm registry.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const DOCKERFILE: &str = r#"FROM node:20-bookworm-slim
RUN grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status > /seccomp
RUN (unshare -U -r true && echo allowed || echo refused) > /unshare 2>/dev/null
RUN apt-get update -q && apt-get install -y -q --no-install-recommends gcc libc6-dev golang-go \
 && rm -rf /var/lib/apt/lists/*
RUN printf '#include <stdio.h>\nint main(void) { puts("hello from gcc"); return 0; }\n' > /hello.c \
 && gcc -O2 -o /hello /hello.c && /hello > /gcc.out
RUN mkdir /gohello && cd /gohello \
 && printf 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello from go") }\n' > main.go \
 && HOME=/tmp GOCACHE=/tmp/go-cache GO111MODULE=off go build -o /gohello/hello . && /gohello/hello > /go.out
RUN mkdir /app && cd /app && npm init -y > /dev/null \
 && npm install --no-audit --no-fund left-pad@1.3.0 \
 && node -e 'console.log(require("left-pad")("npm", 5, "-"))' > /npm.out
RUN --security=insecure grep -E '^Seccomp:' /proc/self/status > /seccomp-insecure
"#;

#[test]
fn apt_gcc_go_and_npm_work_under_the_seccomp_filter() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let made = Command::new(repo().join("scripts/make-base-images"))
        .args(["--only", "node", "--root"])
        .arg(&root)
        .env("KILN", env!("CARGO_BIN_EXE_kiln"))
        .status()
        .expect("run scripts/make-base-images");
    assert!(made.success(), "scripts/make-base-images failed");

    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    let out = dir.path().join("out");
    let built = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(&root)
        .args([
            "build",
            "--progress=plain",
            "--allow",
            "security.insecure",
            "-o",
        ])
        .arg(format!("type=local,dest={}", out.display()))
        .arg(&ctx)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "kiln build failed:\n{log}");
    let read =
        |p: &str| std::fs::read_to_string(out.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("seccomp"), "NoNewPrivs:\t1\nSeccomp:\t2\n");
    assert_eq!(read("unshare"), "refused\n", "no nested user namespaces");
    assert_eq!(read("gcc.out"), "hello from gcc\n");
    assert_eq!(read("go.out"), "hello from go\n");
    assert_eq!(read("npm.out"), "--npm\n");
    assert_eq!(read("seccomp-insecure"), "Seccomp:\t0\n");
}
