//! Test binaries whose tests are decided at run time (`harness = false`): the cases
//! of a corpus directory, tests that need data which may be absent. Built on
//! `libtest-mimic`, so they take cargo's test arguments (name filters, `--exact`,
//! `--list`, `--ignored`, `--test-threads`, …) and print cargo's lines, summary
//! included (`test result: ok. N passed; N failed; N ignored; …`), which `.ci/run`
//! adds up. A test that cannot run here is reported as ignored with its reason,
//! never as passed.

pub use libtest_mimic::{Completion, Conclusion, Failed, Trial};

/// A test whose body fails by panicking, like a `#[test]` function.
pub fn test(name: impl Into<String>, body: impl FnOnce() + Send + 'static) -> Trial {
    Trial::test(name, move || {
        body();
        Ok(())
    })
}

/// Runs `trials` as cargo's test arguments ask and prints the results.
pub fn run(trials: Vec<Trial>) -> Conclusion {
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials)
}
