//! `scripts/make-base-images --only busybox`, run with this build's kiln: the image
//! is made once, is the same byte for byte in two stores, and runs. Needs root (CI
//! runs as root) and Debian's busybox-static (the script installs it when missing).

use crate::util::kiln;
use std::path::Path;
use std::process::{Command, Output};

fn script(root: &Path) -> Output {
    Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/make-base-images"
    ))
    .args(["--only", "busybox", "--root"])
    .arg(root)
    .env("KILN", env!("CARGO_BIN_EXE_kiln"))
    .output()
    .expect("run scripts/make-base-images")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn manifest_digest(root: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&kiln().root(root).args(["inspect", "busybox:test"]).stdout())
            .unwrap();
    v[0]["Descriptor"]["digest"].as_str().unwrap().to_string()
}

#[test]
fn busybox_test_is_reproducible_idempotent_and_runs() {
    kiln_testkit::root::require_root("scripts/make-base-images");
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let first = ok(script(&a));
    assert!(first.contains("busybox:test made"), "{first}");
    ok(script(&b));
    assert_eq!(manifest_digest(&a), manifest_digest(&b));
    let again = ok(script(&a));
    assert!(again.contains("busybox:test is in the store"), "{again}");

    let v: serde_json::Value =
        serde_json::from_str(&kiln().root(&a).args(["inspect", "busybox:test"]).stdout()).unwrap();
    assert_eq!(v[0]["Created"], "1970-01-01T00:00:00Z");
    assert_eq!(v[0]["Config"]["Cmd"], serde_json::json!(["sh"]));
    let out = kiln()
        .root(&a)
        .args([
            "run",
            "busybox:test",
            "sh",
            "-c",
            "stat -c '%a %U' /tmp /root; grep -c . /etc/passwd; ls -l /bin/sh | sed 's/.*-> //'",
        ])
        .stdout();
    assert_eq!(out, "1777 root\n700 root\n2\n/bin/busybox\n");
    assert_eq!(
        kiln()
            .root(&a)
            .args(["run", "-u", "nobody", "busybox:test", "id", "-u"])
            .stdout(),
        "65534\n"
    );
}
