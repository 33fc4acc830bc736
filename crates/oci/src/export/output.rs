//! `-o/--output` specs as docker buildx takes them: `type=oci,dest=out.tar`,
//! `type=docker,dest=-`, `type=local,dest=dir`, `type=tar,dest=fs.tar`, or a bare
//! path meaning `type=local,dest=PATH`.

use super::{
    ArchiveError, DockerExporter, Exporter, LocalExporter, OciExporter, Result, TarExporter,
};
use std::io::BufWriter;
use std::path::PathBuf;

/// The kind of output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    Oci,
    Docker,
    Local,
    Tar,
}

/// A parsed `-o` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputSpec {
    pub kind: OutputKind,
    /// Destination path; `-` is standard output.
    pub dest: PathBuf,
    /// For `type=oci`: write a tar (default) or, with `tar=false`, a layout directory.
    pub tar: bool,
    /// `name=` (image names for the archive's index), comma-separated in the spec.
    pub names: Vec<String>,
}

impl std::str::FromStr for OutputSpec {
    type Err = ArchiveError;
    fn from_str(s: &str) -> Result<OutputSpec> {
        let bad = |m: String| ArchiveError::Format(format!("invalid output {s:?}: {m}"));
        if !s.contains('=') {
            if s.is_empty() {
                return Err(bad("empty".into()));
            }
            return Ok(OutputSpec {
                kind: OutputKind::Local,
                dest: PathBuf::from(s),
                tar: false,
                names: Vec::new(),
            });
        }
        let (mut kind, mut dest, mut tar, mut names) = (None, None, true, Vec::new());
        for field in s.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| bad(format!("{field:?} is not key=value")))?;
            match k.trim() {
                "type" => {
                    kind = Some(match v {
                        "oci" => OutputKind::Oci,
                        "docker" => OutputKind::Docker,
                        "local" => OutputKind::Local,
                        "tar" => OutputKind::Tar,
                        other => {
                            return Err(bad(format!(
                                "unknown type {other:?} (expected oci, docker, local or tar)"
                            )))
                        }
                    })
                }
                "dest" => dest = Some(PathBuf::from(v)),
                "tar" => {
                    tar = match v {
                        "true" => true,
                        "false" => false,
                        _ => return Err(bad(format!("tar={v:?} is not true or false"))),
                    }
                }
                "name" => names.extend(v.split(';').filter(|n| !n.is_empty()).map(String::from)),
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        let kind = kind.ok_or_else(|| bad("type= is missing".into()))?;
        let dest = dest.ok_or_else(|| bad("dest= is missing".into()))?;
        if kind == OutputKind::Local && dest.as_os_str() == "-" {
            return Err(bad(
                "type=local writes a directory; use type=tar for standard output".into(),
            ));
        }
        if kind == OutputKind::Oci && !tar && dest.as_os_str() == "-" {
            return Err(bad(
                "an OCI layout directory cannot go to standard output".into()
            ));
        }
        Ok(OutputSpec {
            kind,
            dest,
            tar: kind == OutputKind::Oci && tar,
            names,
        })
    }
}

impl OutputSpec {
    /// An exporter writing to this spec's destination (files are created here).
    pub fn exporter(&self) -> Result<Box<dyn Exporter>> {
        let writer = || -> Result<Box<dyn std::io::Write>> {
            if self.dest.as_os_str() == "-" {
                return Ok(Box::new(BufWriter::new(std::io::stdout())));
            }
            let f =
                std::fs::File::create(&self.dest).map_err(super::io_err("creating", &self.dest))?;
            Ok(Box::new(BufWriter::new(f)))
        };
        Ok(match self.kind {
            OutputKind::Oci if self.tar => Box::new(OciExporter::tar(writer()?)),
            OutputKind::Oci => Box::new(OciExporter::dir(&self.dest)),
            OutputKind::Docker => Box::new(DockerExporter::new(writer()?)),
            OutputKind::Local => Box::new(LocalExporter::new(&self.dest)),
            OutputKind::Tar => Box::new(TarExporter::new(writer()?)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_style_specs() {
        let s: OutputSpec = "type=oci,dest=out.tar".parse().unwrap();
        assert_eq!((s.kind, s.tar), (OutputKind::Oci, true));
        assert_eq!(s.dest, PathBuf::from("out.tar"));
        let s: OutputSpec = "type=oci,dest=layout,tar=false".parse().unwrap();
        assert_eq!((s.kind, s.tar), (OutputKind::Oci, false));
        let s: OutputSpec = "type=docker,dest=-,name=app:1;app:2".parse().unwrap();
        assert_eq!(s.kind, OutputKind::Docker);
        assert_eq!(s.names, ["app:1", "app:2"]);
        let s: OutputSpec = "outdir".parse().unwrap();
        assert_eq!(
            (s.kind, s.dest),
            (OutputKind::Local, PathBuf::from("outdir"))
        );
        let s: OutputSpec = "type=tar,dest=fs.tar".parse().unwrap();
        assert_eq!((s.kind, s.tar), (OutputKind::Tar, false));
        for bad in [
            "type=zip,dest=x",
            "type=oci",
            "dest=x",
            "type=local,dest=-",
            "type=oci,dest=x,tar=maybe",
            "type=oci,dest=x,color=blue",
            "",
        ] {
            assert!(bad.parse::<OutputSpec>().is_err(), "{bad}");
        }
    }
}
