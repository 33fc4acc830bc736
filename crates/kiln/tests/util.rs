//! What every test module of kiln's test binaries shares.

use kiln_testkit::Kiln;

/// The `kiln` binary this package built, as a [`Kiln`] command.
pub fn kiln() -> Kiln {
    Kiln::new(env!("CARGO_BIN_EXE_kiln"))
}
