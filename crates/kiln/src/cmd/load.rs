//! `kiln load`: docker-archive or OCI archive tar into the store.

use crate::flags::{GlobalFlags, LoadFlags};
use crate::local_images::open_store;
use kiln_oci::load::load_archive;
use miette::{miette, Result};
use std::io::{BufReader, IsTerminal, Read};
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: LoadFlags) -> Result<ExitCode> {
    let store = open_store(global)?;
    let input: Box<dyn Read> = match &flags.input {
        Some(p) => Box::new(
            std::fs::File::open(p).map_err(|e| miette!("cannot open {}: {e}", p.display()))?,
        ),
        None => {
            if std::io::stdin().is_terminal() {
                return Err(miette!(
                    "requested load from standard input, but it is a terminal; use -i FILE or redirect"
                ));
            }
            Box::new(std::io::stdin())
        }
    };
    let loaded = load_archive(&store, BufReader::with_capacity(1 << 20, input))
        .map_err(|e| miette!("loading: {e}"))?;
    if !flags.quiet {
        for l in loaded {
            match l.name {
                Some(n) => println!("Loaded image: {n}"),
                None => println!("Loaded image ID: {}", l.target.digest),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
