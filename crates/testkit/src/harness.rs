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

/// For a custom-harness binary that runs its tests all together (they share a
/// set-up), named `names`: handles cargo's `--list` and a name filter that selects
/// none of them (`cargo test corpus::chmod` runs every test binary with that
/// filter). Returns the exit code when the binary has nothing to run; `None` when
/// it should run its tests — then all of them, even when the filter selects only
/// some (say so when it matters).
pub fn nothing_selected(names: &[&str]) -> Option<std::process::ExitCode> {
    let args = libtest_mimic::Arguments::from_args();
    if args.list {
        for name in names {
            println!("{name}: test");
        }
        return Some(std::process::ExitCode::SUCCESS);
    }
    let selected = names
        .iter()
        .filter(|name| !args.is_filtered_out(&Trial::test(**name, || Ok(()))))
        .count();
    if selected > 0 {
        return None;
    }
    println!("\nrunning 0 tests\n");
    println!(
        "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; {} filtered out\n",
        names.len()
    );
    Some(std::process::ExitCode::SUCCESS)
}
