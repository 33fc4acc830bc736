//! Blobs: written through a [`BlobWriter`] (hashed on the way, visible under
//! their digest only once committed), read back verified, checked by
//! [`Store::verify`].

use super::{create_temp, io_err, sync_dir, Result, Store, StoreError};
use crate::digest::{Digest, Hasher};
use rustix::fs::FlockOperation;
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// What [`Store::verify`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: usize,
    /// Blobs whose content does not hash to their name.
    pub corrupt: Vec<Digest>,
    /// Blobs referenced by a stored image but absent.
    pub missing: Vec<Digest>,
    /// Files under `blobs/sha256/` whose name is not a digest.
    pub stray_files: Vec<PathBuf>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty() && self.missing.is_empty() && self.stray_files.is_empty()
    }
}

impl Store {
    /// Where the blob named `digest` lives (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Size in bytes of a stored blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound(*digest)),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    /// Start writing a blob; its name is its digest, known when it is committed.
    pub fn blob_writer(&self) -> Result<BlobWriter<'_>> {
        let (file, path) = create_temp(&self.tmp_dir(), "blob")?;
        Ok(BlobWriter {
            store: self,
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            temp_path: path,
            hasher: Hasher::new(),
            size: 0,
            expected: None,
            resumable: false,
        })
    }

    /// Where an unfinished download of the blob `digest` is kept: in `tmp/`, named
    /// by the digest, so that the next download of that blob continues it.
    pub fn partial_blob_path(&self, digest: &Digest) -> PathBuf {
        self.tmp_dir().join(format!("partial-{}", digest.hex()))
    }

    /// A writer for the blob `digest` (of `size` bytes) that continues what an
    /// earlier download left at [`Store::partial_blob_path`], in this process or
    /// in one that was killed: the bytes already there are read back through the
    /// hasher ([`BlobWriter::size`] says how many; more than `size` are dropped),
    /// and [`BlobWriter::commit`] checks the whole content against `digest`,
    /// removing the file if it does not match. Dropped without a commit, the
    /// writer keeps what it wrote there for the next attempt ([`Store::gc`]
    /// removes it). While one writer has the file, another (a concurrent pull
    /// of the same blob) gets a fresh temporary file instead.
    pub fn resumable_blob_writer(&self, digest: &Digest, size: u64) -> Result<BlobWriter<'_>> {
        use std::io::{Seek, SeekFrom};
        let path = self.partial_blob_path(digest);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut w = self.blob_writer()?;
                w.expect(*digest);
                return Ok(w);
            }
            Err(e) => return Err(io_err("locking", &path)(e.into())),
        }
        let mut hasher = Hasher::new();
        let have = file.metadata().map_err(io_err("reading", &path))?.len();
        let have = if have > size {
            file.set_len(0).map_err(io_err("truncating", &path))?;
            0
        } else {
            let copied = io::copy(&mut (&mut file).take(have), &mut hasher)
                .map_err(io_err("reading", &path))?;
            if copied != have {
                file.set_len(0).map_err(io_err("truncating", &path))?;
                hasher = Hasher::new();
                0
            } else {
                have
            }
        };
        file.seek(SeekFrom::Start(have))
            .map_err(io_err("reading", &path))?;
        Ok(BlobWriter {
            store: self,
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            temp_path: path,
            hasher,
            size: have,
            expected: Some(*digest),
            resumable: true,
        })
    }

    /// Store `data` as a blob and return its digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest> {
        let mut w = self.blob_writer()?;
        w.write_all(data).map_err(io_err("writing", &w.temp_path))?;
        Ok(w.commit()?.0)
    }

    /// Copy everything from `reader` into a blob, checking it against `expected` if
    /// given. A failure to read is [`StoreError::Input`].
    pub fn put_blob_from(
        &self,
        mut reader: impl Read,
        expected: Option<Digest>,
    ) -> Result<(Digest, u64)> {
        let mut w = self.blob_writer()?;
        w.expected = expected;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::Input(e)),
            };
            w.write_all(&buf[..n])
                .map_err(io_err("writing", &w.temp_path))?;
        }
        w.commit()
    }

    /// Open a blob without checking its content (use for large blobs whose digest a
    /// consumer checks itself, or after [`Store::verify_blob`]).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound(*digest)
            } else {
                io_err("opening", &path)(e)
            }
        })
    }

    /// Open a blob for streaming; reading it to the end fails with
    /// [`io::ErrorKind::InvalidData`] if the content does not match the digest.
    pub fn open_blob_verified(&self, digest: &Digest) -> Result<VerifiedReader<File>> {
        Ok(VerifiedReader::new(self.open_blob(digest)?, *digest))
    }

    /// Read a whole blob, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let data = fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobNotFound(*digest)
            } else {
                io_err("reading", &path)(e)
            }
        })?;
        let actual = Digest::of(&data);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(data)
    }

    /// Re-hash one blob and compare with its name.
    pub fn verify_blob(&self, digest: &Digest) -> Result<()> {
        let mut r = self.open_blob(digest)?;
        let mut h = Hasher::new();
        io::copy(&mut r, &mut h).map_err(io_err("reading", &self.blob_path(digest)))?;
        let actual = h.finish();
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
            });
        }
        Ok(())
    }

    /// Re-hash every blob and check that every stored image's blobs are present
    /// (or known to be in a registry, see [`crate::registry::sources`]).
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for entry in self.list_blob_files()? {
            match entry {
                Ok((digest, _)) => {
                    report.checked += 1;
                    match self.verify_blob(&digest) {
                        Ok(()) => {}
                        Err(StoreError::DigestMismatch { .. }) => report.corrupt.push(digest),
                        Err(e) => return Err(e),
                    }
                }
                Err(path) => report.stray_files.push(path),
            }
        }
        let mut missing = BTreeSet::new();
        for image in self.images()? {
            self.walk_reachable(&image.target, &mut BTreeSet::new(), &mut missing)?;
        }
        // A layer a build left in a registry (a base image's, a cache's) is
        // not missing: kiln knows where to fetch it when it is needed.
        report.missing = missing
            .into_iter()
            .filter(|d| crate::registry::sources::all(self, d).is_empty())
            .collect();
        Ok(report)
    }

    /// Every file under `blobs/sha256`: `Ok((digest, size))`, or `Err(path)` for a stray name.
    pub(super) fn list_blob_files(&self) -> Result<Vec<Result<(Digest, u64), PathBuf>>> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let name = entry.file_name();
            let parsed = name
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok());
            match parsed {
                Some(d) => {
                    let len = entry
                        .metadata()
                        .map_err(io_err("reading", &entry.path()))?
                        .len();
                    out.push(Ok((d, len)));
                }
                None => out.push(Err(entry.path())),
            }
        }
        out.sort_by(|a, b| match (a, b) {
            (Ok(x), Ok(y)) => x.0.cmp(&y.0),
            (Err(x), Err(y)) => x.cmp(y),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        });
        Ok(out)
    }
}

/// Streams a new blob into the store, hashing as it writes. Nothing is visible under
/// a digest name until [`BlobWriter::commit`]; dropping the writer discards the data.
pub struct BlobWriter<'a> {
    store: &'a Store,
    file: Option<io::BufWriter<File>>,
    pub(super) temp_path: PathBuf,
    hasher: Hasher,
    size: u64,
    expected: Option<Digest>,
    /// Keep the file when dropped uncommitted ([`Store::resumable_blob_writer`]).
    resumable: bool,
}

impl BlobWriter<'_> {
    /// Drops what was written so far and starts the blob again from nothing.
    pub fn restart(&mut self) -> Result<()> {
        use std::io::{Seek, SeekFrom};
        let path = self.temp_path.clone();
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io_err("writing", &path)(io::Error::other("already committed")))?;
        file.flush().map_err(io_err("writing", &path))?;
        let f = file.get_mut();
        f.set_len(0).map_err(io_err("truncating", &path))?;
        f.seek(SeekFrom::Start(0))
            .map_err(io_err("truncating", &path))?;
        self.hasher = Hasher::new();
        self.size = 0;
        Ok(())
    }

    /// Refuse to commit unless the content hashes to `digest`.
    pub fn expect(&mut self, digest: Digest) -> &mut Self {
        self.expected = Some(digest);
        self
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Make the blob durable and visible under its digest; returns (digest, size).
    /// If the blob already exists the new copy is discarded.
    pub fn commit(mut self) -> Result<(Digest, u64)> {
        let file = self.file.take().expect("commit consumes the writer");
        let file = file
            .into_inner()
            .map_err(|e| io_err("writing", &self.temp_path)(e.into_error()))?;
        // Nothing is owed a sync unless the blob is new (renamed into place below).
        let deferred = self.store.syncs_deferred();
        if !deferred {
            file.sync_all()
                .map_err(io_err("syncing", &self.temp_path))?;
        }
        drop(file);
        let digest = std::mem::take(&mut self.hasher).finish();
        if let Some(expected) = self.expected {
            if expected != digest {
                let _ = fs::remove_file(&self.temp_path);
                return Err(StoreError::DigestMismatch {
                    expected,
                    actual: digest,
                });
            }
        }
        let dest = self.store.blob_path(&digest);
        if dest.is_file() {
            fs::remove_file(&self.temp_path).map_err(io_err("removing", &self.temp_path))?;
        } else {
            fs::rename(&self.temp_path, &dest).map_err(io_err("renaming into", &dest))?;
            if deferred {
                self.store.sync_deferred();
            } else {
                sync_dir(&self.store.blobs_dir())?;
            }
        }
        Ok((digest, self.size))
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        if let Some(mut file) = self.file.take() {
            if self.resumable {
                // What was written stays for the next attempt to continue.
                let _ = file.flush();
            } else {
                let _ = fs::remove_file(&self.temp_path);
            }
        }
    }
}

/// A reader that hashes what passes through it and fails at end of stream if the
/// content does not match the expected digest.
pub struct VerifiedReader<R> {
    inner: R,
    hasher: Option<Hasher>,
    expected: Digest,
}

impl<R: Read> VerifiedReader<R> {
    pub fn new(inner: R, expected: Digest) -> Self {
        VerifiedReader {
            inner,
            hasher: Some(Hasher::new()),
            expected,
        }
    }
}

impl<R: Read> Read for VerifiedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(h) = self.hasher.take() {
                let actual = h.finish();
                if actual != self.expected {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "content does not match its digest: expected {}, got {actual}",
                            self.expected
                        ),
                    ));
                }
            }
        } else if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}
