//! `kiln rmi IMAGE…`: removes names from the index; `kiln prune` reclaims the space.

use crate::flags::{GlobalFlags, RmiFlags};
use crate::local_images::{find, open_store, Target};
use miette::{miette, Result};
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: RmiFlags) -> Result<ExitCode> {
    let store = open_store(global)?;
    let mut failed = false;
    for arg in &flags.images {
        let res = (|| -> Result<()> {
            match find(&store, arg)? {
                Target::Name(name, found) => {
                    store.untag(&name).map_err(|e| miette!("{e}"))?;
                    println!("Untagged: {name}");
                    let digest = found.entry.target.digest;
                    let still_used = store
                        .images()
                        .map_err(|e| miette!("{e}"))?
                        .iter()
                        .any(|i| i.target.digest == digest);
                    if !still_used {
                        println!("Deleted: {}", found.image.id());
                    }
                }
                Target::Id(id, entries) => {
                    let named = entries.iter().filter(|f| f.entry.name.is_some()).count();
                    if named > 1 && !flags.force {
                        return Err(miette!(
                            "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                            id.short()
                        ));
                    }
                    let mut manifests: Vec<_> =
                        entries.iter().map(|f| f.entry.target.digest).collect();
                    manifests.dedup();
                    for m in manifests {
                        for name in store
                            .remove_image(&m)
                            .map_err(|e| miette!("{e}"))?
                            .into_iter()
                            .flatten()
                        {
                            println!("Untagged: {name}");
                        }
                    }
                    println!("Deleted: {id}");
                }
            }
            Ok(())
        })();
        if let Err(e) = res {
            eprintln!("Error: {e}");
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
