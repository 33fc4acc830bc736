//! BuildKit's conformance data: the parser's test files (`testfiles/`,
//! `testfiles-negative/`, `testfile-line/`) and the shell-expansion tables
//! (`shell/envVarTest`, `shell/wordsTest`) from moby/buildkit's
//! `frontend/dockerfile/parser` and `frontend/dockerfile/shell`.
//!
//! Location: `$KILN_BUILDKIT_CONFORMANCE` (relative to the repository root when
//! relative), else `../shared/conformance/buildkit` from the repository root (the
//! team's checkout layout). The data is not part of the repository; where it is
//! absent the tests that need it are reported as ignored, with one line saying why
//! and how to provide it, never as passed. With `$KILN_REQUIRE_BUILDKIT_CONFORMANCE`
//! set (`.ci/run` sets it) they fail instead, so CI proves them.

use crate::harness::{Completion, Trial};
use std::path::PathBuf;

/// Names the data's directory.
pub const ENV: &str = "KILN_BUILDKIT_CONFORMANCE";
/// Set (non-empty): a missing data directory fails the tests that need it.
pub const REQUIRE_ENV: &str = "KILN_REQUIRE_BUILDKIT_CONFORMANCE";
/// Where the data is looked for without [`ENV`], from the repository root.
pub const DEFAULT: &str = "../shared/conformance/buildkit";

/// Where the data should be (it may be absent).
pub fn location() -> PathBuf {
    let given = std::env::var_os(ENV).filter(|v| !v.is_empty());
    normalize(&crate::repo_root().join(given.as_deref().unwrap_or(DEFAULT.as_ref())))
}

/// `path` with `.` and `..` resolved by name (for messages that name the place).
fn normalize(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// The data's directory, or why the tests that need it cannot run and how to
/// provide it.
pub fn dir() -> Result<PathBuf, String> {
    let at = location();
    if at.is_dir() {
        return Ok(at);
    }
    Err(format!(
        "BuildKit's conformance data is not at {}: set {ENV} to a directory with \
         moby/buildkit's frontend/dockerfile/parser/{{testfiles,testfiles-negative,testfile-line}} \
         and frontend/dockerfile/shell/{{envVarTest,wordsTest}} (as shell/) to run them \
         (see the README)",
        at.display()
    ))
}

/// Whether a missing data directory is a failure ([`REQUIRE_ENV`] set).
pub fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some_and(|v| !v.is_empty())
}

/// A test that reads the data (from [`location`]) and fails by panicking. Without
/// the data it is reported as ignored, or failed when [`required`].
pub fn test(name: impl Into<String>, body: fn()) -> Trial {
    Trial::ignorable_test(name, move || match dir() {
        Ok(_) => {
            body();
            Ok(Completion::Completed)
        }
        Err(why) if required() => Err(format!("{why}; {REQUIRE_ENV} is set").into()),
        Err(_) => Ok(Completion::ignored_with(
            "no BuildKit conformance data, see the note above",
        )),
    })
}

/// The one line a test binary prints before running `count` tests that need the
/// data when it is absent (and not required).
pub fn announce(count: usize) {
    // `--list` output is read by programs: one `name: test` line per test.
    if count == 0 || required() || std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Err(why) = dir() {
        println!("note: {count} test(s) not run: {why}");
    }
}

/// `[conformance::test("module::name", module::name), …]` for test functions given
/// by path: each test is named as libtest would name it.
#[macro_export]
macro_rules! conformance_tests {
    ($($test:path),* $(,)?) => {
        vec![$($crate::conformance::test(stringify!($test).replace(' ', ""), $test)),*]
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn locations_are_named_without_dot_dot() {
        assert_eq!(
            super::normalize("/work/wt/kiln/../shared/./conformance/buildkit".as_ref()),
            std::path::PathBuf::from("/work/wt/shared/conformance/buildkit")
        );
    }
}
