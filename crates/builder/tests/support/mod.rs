//! Helpers shared by the sandbox-backed tests of this crate.

use std::path::Path;
use std::process::{Command, ExitCode};

/// A busybox rootfs with root and user 1001.
pub fn busybox_rootfs(dir: &Path) -> std::io::Result<()> {
    for d in ["bin", "etc", "proc", "dev", "sys", "tmp", "cache", "run"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox"))?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet))?;
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1001:1001:user:/:/bin/sh\n",
    )?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\nuser:x:1001:\n")
}

/// Prints one test's outcome the way libtest does (so CI's summary counts it)
/// and turns it into the process's exit code.
pub fn report(name: &str, result: Result<(), String>) -> ExitCode {
    let (passed, failed) = match &result {
        Ok(()) => {
            println!("test {name} ... ok");
            (1, 0)
        }
        Err(e) => {
            println!("test {name} ... FAILED\n    {e}");
            (0, 1)
        }
    };
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out"
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The `main` of a sandbox-backed test binary (after the sandbox helper hook):
/// runs `case` as root in a fresh temporary directory and reports it.
pub fn run_as_root_in_tempdir(name: &str, case: fn(&Path) -> Result<(), String>) -> ExitCode {
    let result = if !rustix::process::geteuid().is_root() {
        Err("needs root (CI runs as root)".to_string())
    } else {
        match tempfile::tempdir() {
            Ok(dir) => case(dir.path()),
            Err(e) => Err(format!("creating a temporary directory: {e}")),
        }
    };
    report(name, result)
}
