//! `kiln save`: images to a docker-archive (default) or OCI archive tar.

use crate::flags::{GlobalFlags, SaveFlags, SaveFormat};
use crate::local_images::{named_for_export, open_store};
use kiln_oci::export::{DockerExporter, Exporter, OciExporter};
use miette::{miette, Result};
use std::fs;
use std::io::{BufWriter, IsTerminal, Write};
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, flags: SaveFlags) -> Result<ExitCode> {
    let store = open_store(global)?;
    let images = named_for_export(&store, &flags.images)?;
    let make = |w: Box<dyn Write>| -> Box<dyn Exporter> {
        match flags.format {
            SaveFormat::Oci => Box::new(OciExporter::tar(w)),
            SaveFormat::Docker => Box::new(DockerExporter::new(w)),
        }
    };
    match &flags.output {
        Some(path) => {
            // Write next to the destination, then rename: no half-written archive.
            let file_name = path
                .file_name()
                .ok_or_else(|| miette!("{} is not a file name", path.display()))?;
            let tmp = path.with_file_name(format!(".{}.kiln-tmp", file_name.to_string_lossy()));
            let f = fs::File::create(&tmp)
                .map_err(|e| miette!("cannot create {}: {e}", tmp.display()))?;
            let res = make(Box::new(BufWriter::new(f))).export(&store, &images);
            if let Err(e) = res {
                let _ = fs::remove_file(&tmp);
                return Err(miette!("saving: {e}"));
            }
            fs::rename(&tmp, path).map_err(|e| miette!("cannot write {}: {e}", path.display()))?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(miette!(
                    "refusing to write an archive to a terminal; use -o FILE or redirect standard output"
                ));
            }
            let out = BufWriter::new(std::io::stdout());
            make(Box::new(out))
                .export(&store, &images)
                .map_err(|e| miette!("saving: {e}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
