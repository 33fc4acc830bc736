//! `kiln tag SOURCE TARGET`.

use crate::flags::{GlobalFlags, TagFlags};
use crate::local_images::{find, open_store};
use kiln_oci::ImageName;
use miette::{miette, Result};
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: TagFlags) -> Result<ExitCode> {
    let store = open_store(global)?;
    let new_name: ImageName = flags.target.parse().map_err(|e| miette!("{e}"))?;
    let target = find(&store, &flags.source)?;
    let manifest = target.image().manifest_ref.clone();
    store.tag(&new_name, manifest).map_err(|e| miette!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}
