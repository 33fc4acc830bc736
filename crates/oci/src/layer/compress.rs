//! Compression of layer blobs: gzip (zlib-rs's deflate through flate2, with
//! random-looking data stored: see [`super::gzip`]), zstd (multithreaded
//! libzstd), or none; and detection of the format when reading.

use super::gzip::GzipEncoder;
use super::LayerError;
use crate::digest::{Digest, Hasher};
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::str::FromStr;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl Compression {
    /// gzip at level 6, what `gzip` and Go's `compress/gzip` default to.
    pub const DEFAULT_GZIP: Compression = Compression::Gzip { level: 6 };
    /// zstd at level 3, libzstd's default.
    pub const DEFAULT_ZSTD: Compression = Compression::Zstd { level: 3 };

    /// The OCI media type of a layer compressed this way.
    pub fn media_type(&self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip { .. } => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd { .. } => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The Docker v2 schema 2 media type. Docker has no zstd type of its own; it
    /// uses the OCI one, as BuildKit does.
    pub fn docker_media_type(&self) -> &'static str {
        match self {
            Compression::None => "application/vnd.docker.image.rootfs.diff.tar",
            Compression::Gzip { .. } => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Zstd { .. } => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression::DEFAULT_GZIP
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("uncompressed"),
            Compression::Gzip { .. } => f.write_str("gzip"),
            Compression::Zstd { .. } => f.write_str("zstd"),
        }
    }
}

impl FromStr for Compression {
    type Err = LayerError;
    /// `gzip`, `zstd` or `uncompressed` (docker's `--compression` values), each at
    /// its default level.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gzip" => Ok(Compression::DEFAULT_GZIP),
            "zstd" => Ok(Compression::DEFAULT_ZSTD),
            "uncompressed" => Ok(Compression::None),
            other => Err(LayerError::UnknownCompression(other.to_string())),
        }
    }
}

/// A compressing writer for one of the [`Compression`] kinds.
pub(crate) enum Encoder<W: Write> {
    None(W),
    Gzip(GzipEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub(crate) fn new(compression: Compression, out: W) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::None(out),
            // flate2's gzip header (mtime 0, no file name: reproducible) and,
            // but for random-looking chunks, flate2's GzEncoder's bytes.
            Compression::Gzip { level } => Encoder::Gzip(GzipEncoder::new(out, level)?),
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(out, level)?;
                // libzstd's multithreaded mode produces the same bytes for any number
                // of workers ≥ 1, so the digest does not depend on the machine.
                let workers = std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1)
                    .max(1);
                enc.multithread(workers)?;
                Encoder::Zstd(enc)
            }
        })
    }

    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.write_all(buf),
            Encoder::Gzip(e) => e.write_all(buf),
            Encoder::Zstd(e) => e.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const BZIP2_MAGIC: &[u8] = b"BZh";
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// The compression a layer blob's first bytes show (`None` for anything that is
/// neither gzip nor zstd: a plain tar, or not a layer at all).
pub(crate) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(GZIP_MAGIC) {
        Compression::DEFAULT_GZIP
    } else if head.starts_with(ZSTD_MAGIC) {
        Compression::DEFAULT_ZSTD
    } else {
        Compression::None
    }
}

fn fill<R: BufRead>(r: &mut R) -> io::Result<&[u8]> {
    loop {
        match r.fill_buf() {
            // The second `fill_buf` returns the bytes buffered here (returning
            // them from inside the loop does not pass the borrow checker).
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    r.fill_buf()
}

/// Wraps `reader` in the decompressor its first bytes call for (gzip, zstd, or a
/// plain tar), returning the detected kind with default level.
///
/// The decoders report a stream that ends early (a cut gzip member, an
/// incomplete zstd frame) as an error, but only to a reader that reads to the
/// end: a tar reader stops at the end-of-archive marker, so callers that need
/// the whole layer read what it left (see [`HashingReader::finish`]).
pub(crate) fn decoder<'a, R: Read + 'a>(
    reader: R,
) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let kind = sniff(fill(&mut buffered)?);
    let stream: Box<dyn Read + 'a> = match kind {
        Compression::Gzip { .. } => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd { .. } => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::None => Box::new(buffered),
    };
    Ok((kind, stream))
}

/// The compression of a tarball that is not a layer: a root filesystem for
/// `kiln import`, an image archive for `kiln load` (the formats `docker import`
/// and `docker load` read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TarballCompression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl std::fmt::Display for TarballCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TarballCompression::None => "uncompressed",
            TarballCompression::Gzip => "gzip",
            TarballCompression::Bzip2 => "bzip2",
            TarballCompression::Xz => "xz",
            TarballCompression::Zstd => "zstd",
        })
    }
}

/// The most memory, in KiB, an xz stream's decoder may ask for (its LZMA2
/// dictionary and buffers): four times what `xz -9e` streams need (64 MiB
/// dictionary). A stream asking for more (the format allows 1.5 GiB per block)
/// is refused before anything is allocated. bzip2 needs at most ~4 MiB, and
/// zstd's decoder refuses windows above 128 MiB by default.
const XZ_MEMORY_LIMIT_KIB: u32 = 256 * 1024;

/// An xz decoder (several streams allowed) whose blocks may need at most
/// `limit_kib` of memory; one that needs more is an error saying so.
fn xz_decoder<'a, R: Read + 'a>(reader: R, limit_kib: u32) -> Box<dyn Read + 'a> {
    struct Limited<R: Read>(lzma_rust2::XzReader<R>, u32);
    impl<R: Read> Read for Limited<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf).map_err(|e| {
                if e.kind() == io::ErrorKind::OutOfMemory {
                    io::Error::other(format!(
                        "the xz stream needs more than {} MiB of memory to decompress (its dictionary size); kiln's limit",
                        self.1 / 1024
                    ))
                } else {
                    e
                }
            })
        }
    }
    Box::new(Limited(
        lzma_rust2::XzReader::new_mem_limit(reader, true, limit_kib),
        limit_kib,
    ))
}

#[cfg(test)]
mod xz_limit_tests {
    use std::io::Read;

    /// An xz stream of `xz -6` (8 MiB dictionary) decodes under a 16 MiB limit
    /// and is refused, with a clear message, under a 4 MiB one.
    #[test]
    fn an_xz_stream_needing_more_memory_than_the_limit_is_refused() {
        let data = b"kiln ".repeat(1000);
        let mut w =
            lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(6)).unwrap();
        std::io::Write::write_all(&mut w, &data).unwrap();
        let xz = w.finish().unwrap();
        let mut out = Vec::new();
        super::xz_decoder(&xz[..], 16 * 1024)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let err = super::xz_decoder(&xz[..], 4 * 1024)
            .read_to_end(&mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 4 MiB of memory"), "{err}");
    }
}

/// Wraps `reader` in the decompressor its first bytes call for: gzip, bzip2, xz,
/// zstd, or none. `Ok(None)` when the input is empty.
pub fn tarball_decoder<'a, R: Read + 'a>(
    reader: R,
) -> io::Result<Option<(TarballCompression, Box<dyn Read + 'a>)>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = fill(&mut buffered)?;
    if head.is_empty() {
        return Ok(None);
    }
    Ok(Some(if head.starts_with(XZ_MAGIC) {
        (
            TarballCompression::Xz,
            xz_decoder(buffered, XZ_MEMORY_LIMIT_KIB),
        )
    } else if head.starts_with(BZIP2_MAGIC) {
        (
            TarballCompression::Bzip2,
            Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
        )
    } else {
        let (kind, stream) = decoder(buffered)?;
        let kind = match kind {
            Compression::None => TarballCompression::None,
            Compression::Gzip { .. } => TarballCompression::Gzip,
            Compression::Zstd { .. } => TarballCompression::Zstd,
        };
        (kind, stream)
    }))
}

/// Hashes everything read through it: wrapped around a layer's decompressed
/// stream, it gives the layer's diff_id.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(),
        }
    }

    /// Reads what is left of the stream (a tar reader stops at the end-of-archive
    /// marker; the padding after it and the compression trailer are part of the
    /// layer too) and returns the digest of all of it. Reading to the end is also
    /// what makes a decompressor check that its stream is complete.
    pub(crate) fn finish(mut self) -> io::Result<Digest> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher.finish())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_compression_names() {
        assert_eq!(
            "gzip".parse::<Compression>().unwrap(),
            Compression::Gzip { level: 6 }
        );
        assert_eq!(
            "zstd".parse::<Compression>().unwrap(),
            Compression::Zstd { level: 3 }
        );
        assert_eq!(
            "uncompressed".parse::<Compression>().unwrap(),
            Compression::None
        );
        let err = "xz".parse::<Compression>().unwrap_err().to_string();
        assert!(
            err.contains("\"xz\"") && err.contains("gzip, zstd or uncompressed"),
            "{err}"
        );
    }

    #[test]
    fn detects_each_format_by_magic() {
        for c in [
            Compression::None,
            Compression::DEFAULT_GZIP,
            Compression::DEFAULT_ZSTD,
        ] {
            let mut enc = Encoder::new(c, Vec::new()).unwrap();
            enc.write_all(b"hello layer").unwrap();
            let blob = enc.finish().unwrap();
            let (kind, mut dec) = decoder(&blob[..]).unwrap();
            assert_eq!(kind.to_string(), c.to_string());
            let mut out = Vec::new();
            dec.read_to_end(&mut out).unwrap();
            assert_eq!(out, b"hello layer");
        }
    }
}
