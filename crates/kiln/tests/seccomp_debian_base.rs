//! RUN steps get Docker's default seccomp profile, and real toolchains still
//! work under it: apt-get (which drops privileges to `_apt`), dpkg, gcc and npm,
//! on the Debian + Node base that `scripts/make-base-images` makes.
//! `RUN --security=insecure` runs without the filter. (Go is not installed: its
//! toolchain, about 300 MB unpacked, made this the slowest test of the suite —
//! 613 s beside other jobs on 2 cores — and compiles nothing gcc and npm do not
//! already prove the filter allows.)
//!
//! Needs root (the base is made with mmdebstrap and a chroot; the sandbox),
//! the Debian package mirror and the npm registry.

use crate::util::{kiln, make_base_images};

/// The results are copied into a scratch stage, so the export writes five small
/// files rather than the whole Debian + gcc tree.
const DOCKERFILE: &str = r#"FROM node:20-bookworm-slim AS work
RUN grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status > /seccomp
RUN (unshare -U -r true && echo allowed || echo refused) > /unshare 2>/dev/null
RUN apt-get update -q && apt-get install -y -q --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN printf '#include <stdio.h>\nint main(void) { puts("hello from gcc"); return 0; }\n' > /hello.c \
 && gcc -O2 -o /hello /hello.c && /hello > /gcc.out
RUN mkdir /app && cd /app && npm init -y > /dev/null \
 && npm install --no-audit --no-fund left-pad@1.3.0 \
 && node -e 'console.log(require("left-pad")("npm", 5, "-"))' > /npm.out
RUN --security=insecure grep -E '^Seccomp:' /proc/self/status > /seccomp-insecure
FROM scratch
COPY --from=work /seccomp /unshare /gcc.out /npm.out /seccomp-insecure /
"#;

#[test]
fn apt_gcc_and_npm_work_under_the_seccomp_filter() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    make_base_images(&root, Some("node"));

    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    let out = dir.path().join("out");
    let built = kiln()
        .root(&root)
        .args([
            "build",
            "--progress=plain",
            "--allow",
            "security.insecure",
            "-o",
        ])
        .arg(format!("type=local,dest={}", out.display()))
        .arg(&ctx)
        .output();
    let log = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "kiln build failed:\n{log}");
    let read =
        |p: &str| std::fs::read_to_string(out.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("seccomp"), "NoNewPrivs:\t1\nSeccomp:\t2\n");
    assert_eq!(read("unshare"), "refused\n", "no nested user namespaces");
    assert_eq!(read("gcc.out"), "hello from gcc\n");
    assert_eq!(read("npm.out"), "--npm\n");
    assert_eq!(read("seccomp-insecure"), "Seccomp:\t0\n");
}
