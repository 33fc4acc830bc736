//! One module per subcommand; `run` dispatches.

mod build;
mod debug;

use crate::flags::{Cli, Command, DebugCommand};
use std::process::ExitCode;

pub fn run(cli: Cli) -> miette::Result<ExitCode> {
    match cli.command {
        Command::Build(flags) => build::run(&cli.global, flags),
        Command::Debug(DebugCommand::Parse(flags)) => debug::parse(flags),
    }
}
