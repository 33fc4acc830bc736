//! Directory → layer blob, in one streaming pass.
//!
//! Two threads: the *walker* reads the tree in sorted order, frames it as tar and
//! hashes the tar (the diff_id) as it goes, handing 1 MiB chunks over a bounded
//! channel; the calling thread compresses each chunk, hashes and counts the
//! compressed bytes and writes them to the caller's writer. So reading/tar/sha256
//! and compression overlap on two cores, and nothing is staged on disk.

use super::compress::Encoder;
use super::header::{self, EntryMeta, EntryType, BLOCK};
use super::overlay::{self, is_overlay_xattr};
use super::whiteout::{self, OPAQUE_MARKER};
use super::{Compression, LayerError};
use crate::digest::{Digest, Hasher};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};

/// What the directory handed to [`write_layer`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffKind {
    /// A plain directory: every entry is an addition.
    Plain,
    /// An overlayfs upperdir: 0/0 character devices are deletions (written as
    /// `.wh.<name>`), directories with `trusted.overlay.opaque=y` (or
    /// `user.overlay.opaque=y`) are opaque (written with `.wh..wh..opq`).
    OverlayUpper,
}

/// How to write a layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerOptions {
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: when set, no entry's mtime is later than this.
    pub source_date_epoch: Option<i64>,
}

/// The result of writing a layer: what a manifest and an image config need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDescriptor {
    /// sha256 of the blob as written (compressed).
    pub digest: Digest,
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Size of the blob in bytes (compressed).
    pub size: u64,
    /// OCI media type of the blob for its compression.
    pub media_type: String,
}

/// Extended attributes by name.
type Xattrs = BTreeMap<Vec<u8>, Vec<u8>>;

const CHUNK: usize = 1 << 20;
const IN_FLIGHT: usize = 4;

/// The uncompressed side of a layer: what a build step records (BuildKit does not
/// compress while building either); the blob is made later, when an output needs
/// it, by [`write_layer`] over the same directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerDigest {
    /// sha256 of the tar (the config's `rootfs.diff_ids` entry, and the digest of
    /// the layer as an uncompressed blob).
    pub diff_id: Digest,
    /// Size of the tar in bytes.
    pub size: u64,
}

/// Walks `dir` as [`write_layer`] does and returns the diff_id and size of the
/// tar, without compressing or writing anything: one thread, one sha256 pass.
pub fn layer_digest(
    dir: &Path,
    kind: DiffKind,
    source_date_epoch: Option<i64>,
) -> Result<LayerDigest, LayerError> {
    check_dir(dir)?;
    let mut walker = Walker {
        kind,
        source_date_epoch,
        links: HashMap::new(),
        xattr_buf: vec![0u8; 64 * 1024],
        sink: TarSink::hash_only(),
    };
    walker.walk_dir(dir, b"")?;
    walker.sink.write(&[0u8; 2 * BLOCK])?;
    let size = walker.sink.total + walker.sink.fill as u64;
    let diff_id = walker.sink.finish()?;
    Ok(LayerDigest { diff_id, size })
}

fn check_dir(dir: &Path) -> Result<(), LayerError> {
    let md = fs::symlink_metadata(dir).map_err(|e| LayerError::io(dir, e))?;
    if !md.is_dir() {
        return Err(LayerError::Unsupported {
            path: dir.to_path_buf(),
            reason: "a layer is written from a directory".into(),
        });
    }
    Ok(())
}

/// Writes `dir` as a layer blob to `out` and returns its digests. `out` receives
/// exactly the blob bytes; flushing it is done, syncing it is the caller's business.
pub fn write_layer(
    dir: &Path,
    kind: DiffKind,
    opts: &LayerOptions,
    out: impl Write,
) -> Result<LayerDescriptor, LayerError> {
    check_dir(dir)?;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    let sde = opts.source_date_epoch;

    std::thread::scope(|scope| {
        let walker = scope.spawn(move || {
            let mut walker = Walker {
                kind,
                source_date_epoch: sde,
                links: HashMap::new(),
                xattr_buf: vec![0u8; 64 * 1024],
                sink: TarSink::new(Some((tx, free_rx))),
            };
            walker.walk_dir(dir, b"")?;
            // End of archive: two zero blocks, as Go's archive/tar writes it.
            walker.sink.write(&[0u8; 2 * BLOCK])?;
            walker.sink.finish()
        });

        let counted = CountingHasher {
            inner: out,
            hasher: Hasher::new(),
            count: 0,
        };
        let consume = move || -> io::Result<CountingHasher<_>> {
            let mut enc = Encoder::new(opts.compression, counted)?;
            for chunk in rx.iter() {
                enc.write_all(&chunk)?;
                let _ = free_tx.send(chunk);
            }
            let mut counted = enc.finish()?;
            counted.inner.flush()?;
            Ok(counted)
        };
        let consumed = consume();
        // `rx` was moved into the closure and is dropped: a walker still sending
        // stops with a closed-channel error now.
        let walked = match walker.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let counted = consumed.map_err(LayerError::Output)?;
        let diff_id = walked?;
        Ok(LayerDescriptor {
            digest: counted.hasher.finish(),
            diff_id,
            size: counted.count,
            media_type: opts.compression.media_type().to_string(),
        })
    })
}

/// The blob writer: sha256 and byte count of what passes through.
pub(super) struct CountingHasher<W: Write> {
    pub(super) inner: W,
    pub(super) hasher: Hasher,
    pub(super) count: u64,
}

impl<W: Write> Write for CountingHasher<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Full chunks out to the compressor, emptied ones back.
type ChunkChannel = (SyncSender<Vec<u8>>, Receiver<Vec<u8>>);

/// The tar stream on the walker side: fills fixed-size chunks (file contents are
/// read straight into them), hashes each full chunk and sends it on.
struct TarSink {
    buf: Vec<u8>,
    fill: usize,
    /// Where full chunks go (the compressor) and come back from; `None` when
    /// only the digest is wanted ([`layer_digest`]): the chunk is reused.
    chan: Option<ChunkChannel>,
    hasher: Hasher,
    /// Bytes in the chunks flushed so far.
    total: u64,
}

fn closed() -> LayerError {
    LayerError::Output(io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the compressor stopped",
    ))
}

impl TarSink {
    fn new(chan: Option<ChunkChannel>) -> Self {
        TarSink {
            buf: vec![0u8; CHUNK],
            fill: 0,
            chan,
            hasher: Hasher::new(),
            total: 0,
        }
    }

    fn hash_only() -> Self {
        Self::new(None)
    }

    fn flush_chunk(&mut self) -> Result<(), LayerError> {
        if self.fill == 0 {
            return Ok(());
        }
        self.hasher.update(&self.buf[..self.fill]);
        self.total += self.fill as u64;
        let Some((tx, free)) = &self.chan else {
            self.fill = 0;
            return Ok(());
        };
        let mut next = free.try_recv().unwrap_or_default();
        next.resize(CHUNK, 0);
        let mut full = std::mem::replace(&mut self.buf, next);
        full.truncate(self.fill);
        self.fill = 0;
        tx.send(full).map_err(|_| closed())
    }

    fn write(&mut self, mut data: &[u8]) -> Result<(), LayerError> {
        while !data.is_empty() {
            let n = (CHUNK - self.fill).min(data.len());
            self.buf[self.fill..self.fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
            if self.fill == CHUNK {
                self.flush_chunk()?;
            }
        }
        Ok(())
    }

    /// Copies exactly `len` bytes of `file` and the zero padding to a block.
    fn copy_file(&mut self, path: &Path, file: &mut File, len: u64) -> Result<(), LayerError> {
        let mut left = len;
        while left > 0 {
            if self.fill == CHUNK {
                self.flush_chunk()?;
            }
            let want = ((CHUNK - self.fill) as u64).min(left) as usize;
            let n = match file.read(&mut self.buf[self.fill..self.fill + want]) {
                Ok(0) => {
                    return Err(LayerError::io(
                        path,
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shrank while the layer was being written",
                        ),
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::io(path, e)),
            };
            self.fill += n;
            left -= n as u64;
        }
        let pad = (BLOCK - (len % BLOCK as u64) as usize) % BLOCK;
        self.write(&[0u8; BLOCK][..pad])
    }

    fn finish(mut self) -> Result<Digest, LayerError> {
        self.flush_chunk()?;
        Ok(self.hasher.finish())
    }
}

struct Walker {
    kind: DiffKind,
    source_date_epoch: Option<i64>,
    /// (dev, inode) of regular files with more than one link → first tar name.
    links: HashMap<(u64, u64), Vec<u8>>,
    xattr_buf: Vec<u8>,
    sink: TarSink,
}

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut rel = Vec::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        rel.extend_from_slice(parent);
        rel.push(b'/');
    }
    rel.extend_from_slice(name);
    rel
}

impl Walker {
    /// Entries of `abs` in byte-wise name order, depth first (a directory's entry
    /// right before its contents), like Go's `filepath.Walk` that containerd uses.
    fn walk_dir(&mut self, abs: &Path, rel: &[u8]) -> Result<(), LayerError> {
        let mut names: Vec<OsString> = fs::read_dir(abs)
            .and_then(|rd| rd.map(|e| e.map(|e| e.file_name())).collect())
            .map_err(|e| LayerError::io(abs, e))?;
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = abs.join(&name);
            let rel_child = join_rel(rel, &name.into_vec());
            self.entry(&path, rel, rel_child)?;
        }
        Ok(())
    }

    fn mtime(&self, md: &fs::Metadata) -> i64 {
        let t = md.mtime();
        match self.source_date_epoch {
            Some(sde) if t > sde => sde,
            _ => t,
        }
    }

    fn emit(&mut self, path: &Path, meta: &EntryMeta) -> Result<(), LayerError> {
        let blocks = header::encode(meta).map_err(|reason| LayerError::Unsupported {
            path: path.to_path_buf(),
            reason,
        })?;
        self.sink.write(&blocks)
    }

    /// A zero-length regular file named `name`, mode 0, owned by 0:0, mtime 0: how
    /// whiteouts are written (fixed metadata so they never vary between builds).
    fn emit_marker(&mut self, path: &Path, name: Vec<u8>) -> Result<(), LayerError> {
        self.emit(path, &EntryMeta::new(name, EntryType::Regular))
    }

    fn entry(&mut self, path: &Path, parent_rel: &[u8], rel: Vec<u8>) -> Result<(), LayerError> {
        let md = fs::symlink_metadata(path).map_err(|e| LayerError::io(path, e))?;
        let ft = md.file_type();
        let base = &rel[rel.len() - path.file_name().map_or(0, |n| n.len())..];

        if self.kind == DiffKind::OverlayUpper && overlay::is_whiteout_at(path, &md) {
            let mut base_wh = whiteout::WHITEOUT_PREFIX.to_vec();
            base_wh.extend_from_slice(base);
            return self.emit_marker(path, join_rel(parent_rel, &base_wh));
        }
        if base.starts_with(whiteout::WHITEOUT_PREFIX) {
            return Err(LayerError::Unsupported {
                path: path.to_path_buf(),
                reason: "names starting with .wh. are reserved for OCI whiteouts".into(),
            });
        }
        if ft.is_socket() {
            // Sockets are meaningless outside the running process; docker skips them too.
            return Ok(());
        }

        let (xattrs, opaque) = self.read_xattrs(path)?;
        let kind = if ft.is_dir() {
            EntryType::Directory
        } else if ft.is_file() {
            EntryType::Regular
        } else if ft.is_symlink() {
            EntryType::Symlink
        } else if ft.is_char_device() {
            EntryType::Char
        } else if ft.is_block_device() {
            EntryType::Block
        } else if ft.is_fifo() {
            EntryType::Fifo
        } else {
            return Err(LayerError::Unsupported {
                path: path.to_path_buf(),
                reason: "unknown file type".into(),
            });
        };
        let mut meta = EntryMeta::new(rel, kind);
        meta.mode = md.mode() & 0o7777;
        meta.uid = u64::from(md.uid());
        meta.gid = u64::from(md.gid());
        meta.mtime = self.mtime(&md);
        meta.xattrs = xattrs;

        match kind {
            EntryType::Directory => {
                let rel = meta.name.clone();
                meta.name.push(b'/');
                self.emit(path, &meta)?;
                if opaque && self.kind == DiffKind::OverlayUpper {
                    self.emit_marker(path, join_rel(&rel, OPAQUE_MARKER))?;
                }
                self.walk_dir(path, &rel)
            }
            EntryType::Regular => {
                if md.nlink() > 1 {
                    let key = (md.dev(), md.ino());
                    if let Some(first) = self.links.get(&key) {
                        meta.kind = EntryType::HardLink;
                        meta.link_name = first.clone();
                        return self.emit(path, &meta);
                    }
                    self.links.insert(key, meta.name.clone());
                }
                let mut file = File::open(path).map_err(|e| LayerError::io(path, e))?;
                meta.size = md.len();
                self.emit(path, &meta)?;
                self.sink.copy_file(path, &mut file, meta.size)
            }
            EntryType::Symlink => {
                let target = fs::read_link(path).map_err(|e| LayerError::io(path, e))?;
                meta.link_name = target.into_os_string().into_vec();
                self.emit(path, &meta)
            }
            EntryType::Char | EntryType::Block => {
                meta.dev_major = rustix::fs::major(md.rdev());
                meta.dev_minor = rustix::fs::minor(md.rdev());
                self.emit(path, &meta)
            }
            EntryType::Fifo | EntryType::HardLink => self.emit(path, &meta),
        }
    }

    /// The extended attributes to store (all but overlayfs' own and the host's
    /// SELinux label), and whether overlayfs marked the directory opaque.
    fn read_xattrs(&mut self, path: &Path) -> Result<(Xattrs, bool), LayerError> {
        let mut out = BTreeMap::new();
        let mut opaque = false;
        let n = match rustix::fs::llistxattr(path, &mut self.xattr_buf[..]) {
            Ok(n) => n,
            Err(rustix::io::Errno::NOTSUP) => return Ok((out, false)),
            Err(e) => return Err(LayerError::io(path, e.into())),
        };
        if n == 0 {
            return Ok((out, false));
        }
        let names: Vec<Vec<u8>> = self.xattr_buf[..n]
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let mut value = vec![0u8; 64 * 1024];
        for name in names {
            let overlay = is_overlay_xattr(&name);
            if !overlay && name == b"security.selinux" {
                continue;
            }
            let cname = std::ffi::OsStr::from_bytes(&name);
            let len = match rustix::fs::lgetxattr(path, cname, &mut value[..]) {
                Ok(len) => len,
                // Removed between list and get: it is simply not there.
                Err(rustix::io::Errno::NODATA) => continue,
                Err(e) => return Err(LayerError::io(path, e.into())),
            };
            let v = &value[..len];
            if overlay {
                if self.kind == DiffKind::OverlayUpper {
                    let key = name.split(|&b| b == b'.').nth(2).unwrap_or_default();
                    match key {
                        b"opaque" => opaque |= v == b"y",
                        b"redirect" | b"metacopy" => {
                            return Err(LayerError::Unsupported {
                                path: path.to_path_buf(),
                                reason: format!(
                                    "overlayfs {} entries cannot be turned into a layer \
                                     (mount with redirect_dir=off,metacopy=off)",
                                    String::from_utf8_lossy(key)
                                ),
                            })
                        }
                        _ => {}
                    }
                }
                continue;
            }
            out.insert(name, v.to_vec());
        }
        Ok((out, opaque))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest-only walk gives what writing the layer uncompressed gives:
    /// the blob of an uncompressed layer is its tar, so its digest is the diff_id.
    #[test]
    fn layer_digest_matches_the_written_layer() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub/a"), vec![7u8; 3 * CHUNK + 17]).unwrap();
        fs::write(d.join("b"), b"small").unwrap();
        std::os::unix::fs::symlink("sub/a", d.join("link")).unwrap();
        for sde in [None, Some(1_000)] {
            let opts = LayerOptions {
                compression: Compression::None,
                source_date_epoch: sde,
            };
            let mut blob = Vec::new();
            let written = write_layer(d, DiffKind::Plain, &opts, &mut blob).unwrap();
            let only = layer_digest(d, DiffKind::Plain, sde).unwrap();
            assert_eq!(only.diff_id, written.diff_id);
            assert_eq!(only.diff_id, written.digest);
            assert_eq!(only.size, blob.len() as u64);
            assert_eq!(only.size, written.size);
        }
        let clamped = layer_digest(d, DiffKind::Plain, Some(1_000)).unwrap();
        let unclamped = layer_digest(d, DiffKind::Plain, None).unwrap();
        assert_ne!(clamped.diff_id, unclamped.diff_id);
    }

    /// A gzip layer without random-looking data is, byte for byte, what
    /// flate2's GzEncoder made of its tar written in CHUNK pieces (what
    /// write_layer gave it before layer::gzip): digests of such layers do not
    /// change. A layer of random bytes decompresses to its tar.
    #[test]
    fn gzip_layers_keep_flate2s_bytes_and_random_ones_decompress() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("src")).unwrap();
        for i in 0..300 {
            let text: String = (0..200 + i * 7)
                .map(|j| format!("line {j} of file {i}: layer digest manifest\n"))
                .collect();
            fs::write(d.join(format!("src/f{i:03}.txt")), text).unwrap();
        }
        fs::write(d.join("zeros"), vec![0u8; CHUNK + 4096]).unwrap();
        let tar_of = |d: &Path| {
            let opts = LayerOptions {
                compression: Compression::None,
                source_date_epoch: None,
            };
            let mut tar = Vec::new();
            write_layer(d, DiffKind::Plain, &opts, &mut tar).unwrap();
            tar
        };
        let tar = tar_of(d);
        assert!(tar.len() > 3 * CHUNK, "{}", tar.len());
        for level in [1, 6, 9] {
            let mut before =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            for piece in tar.chunks(CHUNK) {
                before.write_all(piece).unwrap();
            }
            let before = before.finish().unwrap();
            let opts = LayerOptions {
                compression: Compression::Gzip { level },
                source_date_epoch: None,
            };
            let mut blob = Vec::new();
            let desc = write_layer(d, DiffKind::Plain, &opts, &mut blob).unwrap();
            assert!(blob == before, "level {level}: not the bytes flate2 wrote");
            assert_eq!(desc.digest, crate::digest::Digest::of(&before));
        }

        // Random bytes: 3 MiB and a bit.
        let random = kiln_testkit::bytes::random((3 << 20) + 800, 0x6b69_6c6e);
        fs::write(d.join("weights.bin"), &random).unwrap();
        let tar = tar_of(d);
        let mut blob = Vec::new();
        let desc = write_layer(d, DiffKind::Plain, &LayerOptions::default(), &mut blob).unwrap();
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out == tar);
        assert_eq!(desc.diff_id, crate::digest::Digest::of(&tar));
        assert_eq!(desc.digest, crate::digest::Digest::of(&blob));
        assert_eq!(desc.size, blob.len() as u64);
    }
}
