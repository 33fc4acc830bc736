//! One layer's tar stream read as a list of changes (files put, paths
//! deleted, directories made opaque), with what the analysis needs from the
//! contents of a few files (secret patterns, package manifests) taken on the
//! way, so no layer is read twice and no content is kept beyond that.

use crate::packages::wants_manifest;
use crate::secrets::{self, SecretHit};
use kiln_oci::layer::whiteout::{classify, Whiteout};
use std::collections::BTreeMap;
use std::io::{self, Read};

/// What kind of filesystem object an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A hard link to another entry (its bytes are counted there).
    Hardlink,
    Other,
}

/// A file, directory or link a layer puts at `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Without a leading `/` (`usr/bin/env`).
    pub path: String,
    pub kind: Kind,
    /// Bytes of a regular file (0 for anything else).
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
}

/// One change a layer makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Put(Entry),
    /// A whiteout: `path` (and what is below it) is deleted.
    Delete(String),
    /// An opaque directory: what the lower layers had below `path` is hidden.
    Opaque(String),
}

/// A layer, read.
#[derive(Clone, Debug, Default)]
pub struct LayerScan {
    pub changes: Vec<Change>,
    /// Secrets found in the contents of the files this layer puts, by path.
    pub secrets: BTreeMap<String, Vec<SecretHit>>,
    /// Contents of package manifests (`package.json`, dpkg's status, Python
    /// `METADATA`) this layer puts, by path, for [`crate::packages`].
    pub manifests: BTreeMap<String, Vec<u8>>,
    /// Bytes of the layer's tar.
    pub tar_size: u64,
}

/// Largest file whose contents are looked at.
const MAX_CONTENT: u64 = 1 << 20;

/// Normalizes a tar path: no `./` or leading `/`, no trailing `/`.
pub fn clean_path(raw: &str) -> String {
    let p = raw.trim_start_matches("./").trim_start_matches('/');
    p.trim_end_matches('/').to_string()
}

struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Reads one layer's (uncompressed) tar stream to its end.
pub fn scan_layer(tar_stream: impl Read) -> io::Result<LayerScan> {
    let mut counting = Counting {
        inner: tar_stream,
        n: 0,
    };
    let mut scan = LayerScan::default();
    {
        let mut archive = tar::Archive::new(&mut counting);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = clean_path(&raw);
            if path.is_empty() || path == "." {
                continue;
            }
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (d.to_string(), b.to_string()),
                None => (String::new(), path.clone()),
            };
            match classify(base.as_bytes()) {
                Whiteout::Opaque => {
                    scan.changes.push(Change::Opaque(dir));
                    continue;
                }
                Whiteout::Delete(name) => {
                    let name = String::from_utf8_lossy(name);
                    let target = if dir.is_empty() {
                        name.into_owned()
                    } else {
                        format!("{dir}/{name}")
                    };
                    scan.changes.push(Change::Delete(target));
                    continue;
                }
                Whiteout::Meta => continue,
                Whiteout::None => {}
            }
            let header = entry.header();
            let kind = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink,
                tar::EntryType::Link => Kind::Hardlink,
                _ => Kind::Other,
            };
            let size = if kind == Kind::File { entry.size() } else { 0 };
            let mode = header.mode().unwrap_or(0);
            let uid = header.uid().unwrap_or(0);
            if kind == Kind::File && mode & 0o111 != 0 && size > MAX_CONTENT {
                // A big executable: a Go program's build info (its modules).
                if let Some(info) = crate::packages::go_buildinfo(&mut entry)? {
                    scan.manifests.insert(path.clone(), info);
                }
            } else if kind == Kind::File && size <= MAX_CONTENT {
                let go = mode & 0o111 != 0;
                let manifest = wants_manifest(&path);
                let secret = secrets::wants_content(&path, size);
                if manifest || secret || go {
                    let mut data = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut data)?;
                    if go && !manifest {
                        if let Some(info) = crate::packages::go_buildinfo(&mut &data[..])? {
                            scan.manifests.insert(path.clone(), info);
                        }
                    }
                    if secret {
                        let hits = secrets::scan_content(&path, &data);
                        if !hits.is_empty() {
                            scan.secrets.insert(path.clone(), hits);
                        }
                    }
                    if manifest {
                        scan.manifests.insert(path.clone(), data);
                    }
                }
            }
            scan.changes.push(Change::Put(Entry {
                path,
                kind,
                size,
                mode,
                uid,
            }));
        }
    }
    // The tar crate stops at the end-of-archive blocks: count what follows too.
    io::copy(&mut counting, &mut io::sink())?;
    scan.tar_size = counting.n;
    Ok(scan)
}
