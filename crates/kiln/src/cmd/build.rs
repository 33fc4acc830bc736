//! `kiln build`.

use crate::flags::{BuildFlags, GlobalFlags};
use std::process::ExitCode;

pub fn run(_global: &GlobalFlags, _flags: BuildFlags) -> miette::Result<ExitCode> {
    Err(miette::miette!(
        "kiln build: planning is not wired up yet in this build of kiln"
    ))
}
