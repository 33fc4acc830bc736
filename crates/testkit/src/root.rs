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

/// The `main` of a one-case, custom-harness test binary (after the sandbox helper
/// hook, when it has one): runs `case` as root in a fresh temporary directory and
/// reports it as cargo's harness does, taking cargo's test arguments (a name filter
/// that does not match it skips it, `--list` lists it). The case runs on the main
/// thread, as it did before this binary took arguments.
pub fn run_as_root_in_tempdir(name: &str, case: fn(&Path) -> Result<(), String>) -> ExitCode {
    let mut args = libtest_mimic::Arguments::from_args();
    args.test_threads = Some(1);
    let trial = libtest_mimic::Trial::test(name, move || {
        if !is_root() {
            return Err("needs root (CI runs as root)".into());
        }
        let dir =
            tempfile::tempdir().map_err(|e| format!("creating a temporary directory: {e}"))?;
        case(dir.path()).map_err(Into::into)
    });
    libtest_mimic::run(&args, vec![trial]).exit_code()
}
