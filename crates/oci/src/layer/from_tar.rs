//! A root filesystem tarball → layer blob, in one streaming pass (what
//! `kiln import FILE` stores, like `docker import`).
//!
//! The tarball may be plain, gzip, bzip2, xz or zstd (detected from its first bytes;
//! `mmdebstrap` and `tar` write all of these). It is decompressed, read as tar
//! entry by entry — so a file that is not a tar, is truncated, or has an entry
//! that would leave the root (`..`, absolute names) fails here rather than when
//! the image is first used — and at the same time hashed (the diff_id) and
//! recompressed into the caller's writer. The tar bytes are kept as they are,
//! as docker does: the same tarball always gives the same layer.

use super::apply::clean_name;
use super::compress::{tarball_decoder, Encoder, TarballCompression};
use super::write::CountingHasher;
use super::{entry_display, Compression, LayerDescriptor, LayerError};
use crate::digest::Hasher;
use std::io::{self, Read, Write};

/// What [`write_layer_from_tar`] made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarLayer {
    pub layer: LayerDescriptor,
    /// How the input was compressed.
    pub input_compression: TarballCompression,
    /// Number of tar entries read.
    pub entries: u64,
}

/// Reads a (possibly compressed) tarball from `input` and writes it to `out` as a
/// layer blob compressed with `compression`.
pub fn write_layer_from_tar<'a>(
    input: impl Read + 'a,
    compression: Compression,
    out: impl Write,
) -> Result<TarLayer, LayerError> {
    let Some((input_compression, tar_stream)) =
        tarball_decoder(input).map_err(LayerError::Input)?
    else {
        return Err(LayerError::Input(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the input is empty, not a tar archive",
        )));
    };

    let counted = CountingHasher {
        inner: out,
        hasher: Hasher::new(),
        count: 0,
    };
    let encoder = Encoder::new(compression, counted).map_err(LayerError::Output)?;
    let mut tee = Tee {
        inner: tar_stream,
        diff: Hasher::new(),
        out: encoder,
        out_error: None,
    };

    let mut entries = 0u64;
    {
        let mut archive = tar::Archive::new(&mut tee);
        let iter = archive.entries().map_err(LayerError::Input)?;
        for entry in iter {
            let entry = entry.map_err(|e| not_a_tar(e, entries))?;
            let name = entry.path_bytes();
            if let Err(reason) = clean_name(&name) {
                return Err(LayerError::Refused {
                    entry: entry_display(&name),
                    reason,
                });
            }
            let header = entry.header();
            let numeric = header
                .uid()
                .and_then(|_| header.gid())
                .and_then(|_| header.mode())
                .and_then(|_| header.mtime());
            if let Err(e) = numeric {
                return Err(LayerError::Refused {
                    entry: entry_display(&name),
                    reason: format!("bad header: {e}"),
                });
            }
            if let Some(link) = entry.link_name_bytes() {
                if entry.header().entry_type().is_hard_link() {
                    if let Err(reason) = clean_name(&link) {
                        return Err(LayerError::Refused {
                            entry: entry_display(&name),
                            reason: format!("hard link target: {reason}"),
                        });
                    }
                }
            }
            entries += 1;
        }
    }
    if entries == 0 {
        return Err(LayerError::Input(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a tar archive (no entries)",
        )));
    }
    // The end-of-archive blocks and any padding after them belong to the layer too.
    io::copy(&mut tee, &mut io::sink()).map_err(LayerError::Input)?;
    if let Some(e) = tee.out_error.take() {
        return Err(LayerError::Output(e));
    }
    let diff_id = tee.diff.finish();
    let mut counted = tee.out.finish().map_err(LayerError::Output)?;
    counted.inner.flush().map_err(LayerError::Output)?;
    Ok(TarLayer {
        layer: LayerDescriptor {
            digest: counted.hasher.finish(),
            diff_id,
            size: counted.count,
            media_type: compression.media_type().to_string(),
        },
        input_compression,
        entries,
    })
}

fn not_a_tar(e: io::Error, entries_before: u64) -> LayerError {
    if entries_before == 0 {
        LayerError::Input(io::Error::new(e.kind(), format!("not a tar archive: {e}")))
    } else {
        LayerError::Input(e)
    }
}

/// Passes the tar stream to the tar reader while hashing it and feeding the
/// compressor. A write error is kept and reported after reading stops, so the
/// reader sees it as the end of its input instead of as corrupt data.
struct Tee<'a, W: Write> {
    inner: Box<dyn Read + 'a>,
    diff: Hasher,
    out: Encoder<CountingHasher<W>>,
    out_error: Option<io::Error>,
}

impl<W: Write> Read for Tee<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(e) = &self.out_error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        self.diff.update(&buf[..n]);
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let reported = io::Error::new(e.kind(), format!("writing the layer blob: {e}"));
            self.out_error = Some(e);
            return Err(reported);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn plain_tar_is_kept_byte_for_byte() {
        let tar = tar_of(&[("./etc/hostname", b"box\n"), ("./bin/sh", b"#!")]);
        let mut blob = Vec::new();
        let made = write_layer_from_tar(&tar[..], Compression::DEFAULT_GZIP, &mut blob).unwrap();
        assert_eq!(made.input_compression, TarballCompression::None);
        assert_eq!(made.entries, 2);
        assert_eq!(made.layer.diff_id, Digest::of(&tar));
        assert_eq!(made.layer.digest, Digest::of(&blob));
        assert_eq!(made.layer.size, blob.len() as u64);
        assert_eq!(gunzip(&blob), tar);
    }

    #[test]
    fn compressed_tarballs_are_detected() {
        let tar = tar_of(&[("a", b"x")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        for (input, kind) in [
            (gz, TarballCompression::Gzip),
            (zst, TarballCompression::Zstd),
        ] {
            let mut blob = Vec::new();
            let made =
                write_layer_from_tar(&input[..], Compression::DEFAULT_GZIP, &mut blob).unwrap();
            assert_eq!(made.input_compression, kind);
            assert_eq!(made.layer.diff_id, Digest::of(&tar));
            assert_eq!(gunzip(&blob), tar);
        }
    }

    #[test]
    fn same_input_same_layer() {
        let tar = tar_of(&[("a", b"x"), ("b", b"y")]);
        let mut one = Vec::new();
        let mut two = Vec::new();
        let a = write_layer_from_tar(&tar[..], Compression::DEFAULT_ZSTD, &mut one).unwrap();
        let b = write_layer_from_tar(&tar[..], Compression::DEFAULT_ZSTD, &mut two).unwrap();
        assert_eq!(a, b);
        assert_eq!(one, two);
        assert_eq!(a.layer.media_type, Compression::DEFAULT_ZSTD.media_type());
    }

    #[test]
    fn refuses_entries_outside_the_root() {
        let mut tar = tar_of(&[("ok", b"x")]);
        // Overwrite the name field (first 100 bytes) of the only header.
        let name = b"../escape";
        tar[..100].fill(0);
        tar[..name.len()].copy_from_slice(name);
        let mut h = tar::Header::from_byte_slice(&tar[..512]).clone();
        h.set_cksum();
        tar[..512].copy_from_slice(h.as_bytes());
        let err = write_layer_from_tar(&tar[..], Compression::None, io::sink()).unwrap_err();
        assert!(
            matches!(&err, LayerError::Refused { entry, .. } if entry == "../escape"),
            "{err}"
        );
    }

    #[test]
    fn refuses_headers_extraction_would_refuse() {
        let mut tar = tar_of(&[("ok", b"x")]);
        // Blank the uid field (offset 108, 8 bytes).
        tar[108..116].fill(0);
        let mut h = tar::Header::from_byte_slice(&tar[..512]).clone();
        h.set_cksum();
        tar[..512].copy_from_slice(h.as_bytes());
        let err = write_layer_from_tar(&tar[..], Compression::None, io::sink()).unwrap_err();
        assert!(matches!(&err, LayerError::Refused { .. }), "{err}");
    }

    #[test]
    fn not_a_tar_is_an_input_error() {
        let err = write_layer_from_tar(&b"hello, this is text"[..], Compression::None, io::sink())
            .unwrap_err();
        assert!(err.to_string().contains("tar"), "{err}");
        let err = write_layer_from_tar(&b""[..], Compression::None, io::sink()).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}
