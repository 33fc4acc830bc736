//! kiln against BuildKit's own results, one test per piece of data:
//!
//! - `corpus::<case>`: each case of `tests/buildkit-corpus/` built by kiln must
//!   give the image BuildKit gave (`corpus.rs`);
//! - `conformance::<test>`: `kiln debug parse` against BuildKit's conformance data,
//!   reported as not run (ignored, with the reason) where that data is absent
//!   (`kiln_testkit::conformance`).
//!
//! Custom harness (`harness = false`, `kiln_testkit::harness`): the tests are found
//! at run time, so a new corpus case needs no rebuild and absent data can be
//! reported as not run. Cargo's test arguments work as usual
//! (`cargo test -p kiln --test buildkit corpus::chmod`).

// Shared with the `tests` binary, which uses all of it.
#[allow(dead_code)]
#[path = "../util.rs"]
mod util;

mod conformance;
mod corpus;

use std::sync::Arc;

fn main() {
    let tally = Arc::new(corpus::Tally::default());
    let mut tests = corpus::tests(&tally);
    tests.push(kiln_testkit::harness::test(
        "differences_name_each_changed_field_and_missing_path",
        corpus::differences_name_each_changed_field_and_missing_path,
    ));
    let conformance = kiln_testkit::conformance_tests![
        conformance::dump_matches_buildkit_results,
        conformance::parse_error_exits_non_zero_with_location,
    ];
    kiln_testkit::conformance::announce(conformance.len());
    tests.extend(conformance);
    let conclusion = kiln_testkit::harness::run(tests);
    if let Some(summary) = tally.summary() {
        println!("{summary}");
    }
    conclusion.exit();
}
