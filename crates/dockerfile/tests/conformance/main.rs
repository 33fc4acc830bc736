//! BuildKit's conformance data run against kiln's parser and shell-word expansion
//! (`kiln_testkit::conformance` says where the data is). Custom harness: where
//! the data is absent these tests are reported as ignored, with one line saying
//! why and how to provide it (failed instead with
//! `KILN_REQUIRE_BUILDKIT_CONFORMANCE` set, as in CI).

mod instructions;
mod parser;
mod shell;

fn main() {
    let tests = kiln_testkit::conformance_tests![
        instructions::testfiles_convert_or_fail_on_a_line,
        parser::testfiles_dump_like_buildkit,
        parser::testfiles_negative_are_errors,
        parser::negative_cases_report_their_line,
        parser::testfile_line_numbers_like_buildkit,
        shell::env_var_test_table,
        shell::words_test_table,
    ];
    kiln_testkit::conformance::announce(tests.len());
    kiln_testkit::harness::run(tests).exit();
}
