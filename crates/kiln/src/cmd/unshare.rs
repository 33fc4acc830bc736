//! `kiln unshare [COMMAND…]`: runs a command as root of kiln's user namespace
//! (entered in `main`, see `cmd::enter_user_namespace_if_needed`). Rootless
//! builds leave files owned by the user's subordinate ids (snapshots, cache
//! mounts, `-o type=local` output); this is how the user removes or inspects
//! them, like `podman unshare`. As root it just runs the command.

use crate::flags::UnshareFlags;
use miette::{miette, Result};
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

pub fn run(flags: UnshareFlags) -> Result<ExitCode> {
    let mut args = flags.command.into_iter();
    let program = args.next().unwrap_or_else(|| {
        std::env::var_os("SHELL")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/bin/sh".into())
    });
    // exec only returns on failure.
    let err = std::process::Command::new(&program).args(args).exec();
    Err(miette!("cannot run {}: {err}", program.to_string_lossy()))
}
