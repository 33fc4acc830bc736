//! `kiln debug ...`: developer views of the frontend.

use crate::flags::DebugParseFlags;
use std::process::ExitCode;

pub fn parse(_flags: DebugParseFlags) -> miette::Result<ExitCode> {
    Err(miette::miette!(
        "kiln debug parse: the parser is not wired up yet"
    ))
}
