//! `kiln completion bash|zsh|fish` and `kiln man [COMMAND…]`: made at run time
//! from the clap definition in `flags.rs` (clap_complete, clap_mangen), so they
//! always describe the flags this binary has.

use crate::flags::{Cli, CompletionFlags, CompletionShell, ManFlags};
use clap::CommandFactory;
use miette::{miette, IntoDiagnostic};
use std::io::Write;
use std::process::ExitCode;

pub fn completion(flags: &CompletionFlags) -> miette::Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    match flags.shell {
        CompletionShell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "kiln", &mut out)
        }
        CompletionShell::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "kiln", &mut out)
        }
        CompletionShell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "kiln", &mut out)
        }
    }
    std::io::stdout().write_all(&out).into_diagnostic()?;
    Ok(ExitCode::SUCCESS)
}

pub fn man(flags: &ManFlags) -> miette::Result<ExitCode> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut name = "kiln".to_string();
    for sub in &flags.command {
        let found = cmd
            .find_subcommand(sub)
            .cloned()
            .ok_or_else(|| miette!("kiln man: {name} has no command {sub:?}"))?;
        name = format!("{name}-{sub}");
        // clap keeps names as `&'static str`; this process ends after printing.
        let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
        cmd = found.name(static_name);
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .into_diagnostic()?;
    std::io::stdout().write_all(&out).into_diagnostic()?;
    Ok(ExitCode::SUCCESS)
}
