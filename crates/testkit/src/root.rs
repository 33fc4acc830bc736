//! Root-only tests. CI runs as root; run as another user, these tests fail saying
//! they need root (they are not skipped).

use std::path::Path;
use std::process::ExitCode;

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails the test unless it runs as root.
pub fn require_root(what: &str) {
    assert!(is_root(), "{what} needs root (CI runs as root)");
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

/// The `main` of a one-case, custom-harness test binary (after the sandbox helper
/// hook, when it has one): runs `case` as root in a fresh temporary directory and
/// reports it.
pub fn run_as_root_in_tempdir(name: &str, case: fn(&Path) -> Result<(), String>) -> ExitCode {
    let result = if !is_root() {
        Err("needs root (CI runs as root)".to_string())
    } else {
        match tempfile::tempdir() {
            Ok(dir) => case(dir.path()),
            Err(e) => Err(format!("creating a temporary directory: {e}")),
        }
    };
    report(name, result)
}
