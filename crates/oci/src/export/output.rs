//! `-o/--output` specs as docker buildx takes them: `type=oci,dest=out.tar`,
//! `type=docker,dest=-`, `type=local,dest=dir`, `type=tar,dest=fs.tar`,
//! `type=registry` (push to the names, like `--push`), or a bare path meaning
//! `type=local,dest=PATH`. Image outputs take BuildKit's `compression=gzip|zstd|
//! uncompressed` and `compression-level=N` (gzip 0–9, zstd 1–22) for the layers
//! the build made.

use super::{
    ArchiveError, DockerExporter, Exporter, LocalExporter, OciExporter, Result, StatementFiles,
    TarExporter,
};
use crate::layer::Compression;
use std::io::BufWriter;
use std::path::PathBuf;

/// The kind of output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    Oci,
    Docker,
    Local,
    Tar,
    /// Push to a registry (`type=registry`, what `--push` means).
    Registry,
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
    /// How the layers the build made are compressed (`compression=`,
    /// `compression-level=`); gzip by default.
    pub compression: Compression,
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
                compression: Compression::default(),
            });
        }
        let (mut kind, mut dest, mut tar, mut names) = (None, None, true, Vec::new());
        let (mut compression, mut level) = (None, None);
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
                        "registry" => OutputKind::Registry,
                        other => {
                            return Err(bad(format!(
                            "unknown type {other:?} (expected oci, docker, local, tar or registry)"
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
                "compression" => {
                    compression = Some(v.parse::<Compression>().map_err(|_| {
                        bad(format!(
                            "compression={v:?}: expected gzip, zstd or uncompressed"
                        ))
                    })?)
                }
                "compression-level" => {
                    level = Some(
                        v.parse::<i32>()
                            .map_err(|_| bad(format!("compression-level={v:?} is not a number")))?,
                    )
                }
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        let kind = kind.ok_or_else(|| bad("type= is missing".into()))?;
        let compression = match (compression.unwrap_or_default(), level) {
            (c, None) => c,
            (Compression::Gzip { .. }, Some(l @ 0..=9)) => Compression::Gzip { level: l as u32 },
            (Compression::Zstd { .. }, Some(l @ 1..=22)) => Compression::Zstd { level: l },
            (Compression::None, Some(_)) => {
                return Err(bad(
                    "compression-level needs compression=gzip or zstd".into()
                ))
            }
            (c, Some(l)) => {
                return Err(bad(format!(
                    "compression-level={l} is out of range for {c} (gzip 0-9, zstd 1-22)"
                )))
            }
        };
        let dest = match (dest, kind) {
            (Some(d), _) => d,
            (None, OutputKind::Registry) => PathBuf::new(),
            (None, _) => return Err(bad("dest= is missing".into())),
        };
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
            compression,
        })
    }
}

impl OutputSpec {
    /// An exporter writing to this spec's destination (files are created
    /// here); a filesystem output (`local`, `tar`) writes `statements` too.
    pub fn exporter(&self, statements: StatementFiles) -> Result<Box<dyn Exporter>> {
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
            OutputKind::Local => {
                Box::new(LocalExporter::new(&self.dest).with_statements(statements))
            }
            OutputKind::Tar => Box::new(TarExporter::new(writer()?).with_statements(statements)),
            OutputKind::Registry => {
                return Err(ArchiveError::Unsupported(
                    "type=registry pushes; it writes no archive".into(),
                ))
            }
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
        let s: OutputSpec = "type=oci,dest=o.tar,compression=zstd,compression-level=19"
            .parse()
            .unwrap();
        assert_eq!(s.compression, Compression::Zstd { level: 19 });
        let s: OutputSpec = "type=registry,compression=uncompressed".parse().unwrap();
        assert_eq!(
            (s.kind, s.compression),
            (OutputKind::Registry, Compression::None)
        );
        let s: OutputSpec = "type=docker,dest=x,compression-level=1".parse().unwrap();
        assert_eq!(s.compression, Compression::Gzip { level: 1 });
        assert_eq!(
            "type=oci,dest=x".parse::<OutputSpec>().unwrap().compression,
            Compression::DEFAULT_GZIP
        );
        for bad in [
            "type=oci,dest=x,compression=xz",
            "type=oci,dest=x,compression=gzip,compression-level=10",
            "type=oci,dest=x,compression=zstd,compression-level=0",
            "type=oci,dest=x,compression=uncompressed,compression-level=1",
            "type=oci,dest=x,compression-level=fast",
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
