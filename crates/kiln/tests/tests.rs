//! kiln's integration tests: the kiln binary run as a user runs it. One test
//! binary (as ripgrep's `tests/tests.rs`): each file below is a module, and
//! `util.rs` has what they share. The tests decided by data — the BuildKit corpus
//! and BuildKit's conformance data — are the other binary, `buildkit/main.rs`.
//!
//! `cargo test` finds a test file here only when it is listed below (this package
//! sets `autotests = false`); `every_test_file_is_a_module` fails for one that is not.

mod util;

mod base_images_script;
mod cli_analyze;
mod cli_build;
mod cli_build_buildx_flags;
mod cli_build_chroot;
mod cli_build_fidelity_as_root;
mod cli_build_multiplatform;
mod cli_build_plan;
mod cli_build_rootless;
mod cli_build_ssh;
mod cli_build_symlink_escapes_root;
mod cli_check;
mod cli_completion;
mod cli_compose;
mod cli_containers;
mod cli_debug_describe;
mod cli_debug_parse;
mod cli_explain_cache;
mod cli_images;
mod cli_import;
mod cli_lazy_layers;
mod cli_load_docker;
mod cli_progress;
mod cli_pull_resume_mock_server;
mod cli_pull_unpack;
mod cli_registry;
mod cli_registry_cache;
mod cli_run;
mod example_api;
mod example_api_attestations;
mod example_api_registry_cache;
mod example_compose;
mod seccomp_debian_base;

/// Every `tests/*.rs` file is a module of this binary (or its root): with
/// `autotests = false`, a new file that is not listed above would never run.
#[test]
fn every_test_file_is_a_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let this = std::fs::read_to_string(dir.join("tests.rs")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        if module != "tests" && !this.contains(&format!("\nmod {module};")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "tests/{missing:?} not compiled: add `mod NAME;` to tests/tests.rs"
    );
}
