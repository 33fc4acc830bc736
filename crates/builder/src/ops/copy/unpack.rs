//! ADD's automatic extraction of local tar archives (BuildKit
//! `solver/llbsolver/file/unpack.go`: `isArchivePath` + `chrootarchive.Untar`).
//!
//! - A source is an archive when it is a regular file whose content, after
//!   decompression (gzip, bzip2, xz, zstd or none, detected from the magic
//!   bytes), starts with a valid tar header.
//! - Entries are extracted into the destination directory as if it were the root
//!   of a chroot: names are cleaned, a name leaving it (`../x`) is refused, absolute
//!   names are taken relative to it, and symlinks met on the way (in the step's
//!   filesystem or created by earlier entries) are followed inside it.
//! - Missing parent directories are created 0755, owned by root; entries keep the
//!   archive's mode, times and xattrs, and its owners unless `--chown` is given.
//! - An existing directory merges with a directory entry (taking its metadata);
//!   anything else at an entry's name is replaced.

use super::upper::{Meta, Times, Upper};
use crate::names;
use crate::snapshot::merged_view::{join_abs, resolve_with};
use kiln_oci::path::clean;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What an extraction wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extracted {
    pub files: u64,
    pub bytes: u64,
}

/// Opens `path` decompressed according to its first bytes.
fn open_decoded(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut r = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let head = r.fill_buf()?.to_vec();
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else if head.starts_with(b"BZh") {
        Box::new(bzip2::bufread::MultiBzDecoder::new(r))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Box::new(lzma_rust2::XzReader::new(r, true))
    } else {
        Box::new(r)
    })
}

/// Whether the regular file at `path` is a (possibly compressed) tar archive.
pub fn is_archive(path: &Path) -> bool {
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !md.is_file() {
        return false;
    }
    let Ok(r) = open_decoded(path) else {
        return false;
    };
    let mut ar = tar::Archive::new(r);
    let Ok(mut entries) = ar.entries() else {
        return false;
    };
    matches!(entries.next(), Some(Ok(_)))
}

/// A cleaned entry name relative to the extraction root, or why it is refused.
fn clean_name(raw: &str) -> Result<Vec<String>, String> {
    let c = clean(raw);
    if c == ".." || c.starts_with("../") {
        return Err(format!(
            "{:?}: path leaves the destination",
            names::display(raw)
        ));
    }
    Ok(c.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_string)
        .collect())
}

/// Resolves `comps` (the parent part of an entry name) inside the chroot at
/// `root` (an in-view directory), following symlinks of the step's filesystem.
fn resolve_in(up: &Upper, root: &[String], comps: &[String]) -> io::Result<Vec<String>> {
    let rel = comps.join("/");
    let resolved = resolve_with(&rel, true, |c| {
        let mut full = root.to_vec();
        full.extend_from_slice(c);
        match up.state().lookup(&join_abs(&full), false)? {
            Some(e) if e.is_symlink() => {
                let t = std::fs::read_link(&e.host_path)?;
                Ok(Some(names::encode_os(t.as_os_str()).into_owned()))
            }
            _ => Ok(None),
        }
    })?;
    let mut full = root.to_vec();
    full.extend(resolved);
    Ok(full)
}

/// Extracts the archive at `archive` into the in-view directory `dest` (resolved,
/// existing). Errors are readable reasons.
pub fn extract(
    archive: &Path,
    dest: &str,
    up: &mut Upper,
    chown: Option<(u32, u32)>,
) -> Result<Extracted, String> {
    let root: Vec<String> = dest
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let r = open_decoded(archive).map_err(|e| e.to_string())?;
    let mut ar = tar::Archive::new(r);
    let mut st = Extracted::default();
    for entry in ar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
        let etype = entry.header().entry_type();
        if etype.is_pax_global_extensions()
            || etype.is_pax_local_extensions()
            || etype.is_gnu_longname()
            || etype.is_gnu_longlink()
        {
            continue;
        }
        let raw = names::encode(&entry.path_bytes()).into_owned();
        // For messages: the name with bytes that are not UTF-8 as U+FFFD.
        let shown = names::display(&raw).into_owned();
        let comps = clean_name(&raw)?;
        let Some((last, parent)) = comps.split_last() else {
            // The archive's root (`./`): BuildKit leaves the destination alone.
            continue;
        };
        let parent_path = resolve_in(up, &root, parent).map_err(|e| format!("{shown}: {e}"))?;
        let parent_view = join_abs(&parent_path);
        match up
            .lstat(&parent_view)
            .map_err(|e| format!("{shown}: {}", e.source))?
        {
            Some(e) if e.is_dir() => {}
            Some(_) => return Err(format!("{shown}: parent is not a directory")),
            None => up
                .mkdir_all(&parent_view, 0o755, (0, 0))
                .map_err(|e| format!("{shown}: {}: {}", names::display(&e.path), e.source))?,
        }
        let target = if parent_view == "/" {
            format!("/{last}")
        } else {
            format!("{parent_view}/{last}")
        };
        let h = entry.header().clone();
        let mtime = h.mtime().unwrap_or(0) as i64;
        let (uid, gid) =
            chown.unwrap_or((h.uid().unwrap_or(0) as u32, h.gid().unwrap_or(0) as u32));
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let mut xattrs = Vec::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
                        continue;
                    }
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
        let meta = Meta {
            uid,
            gid,
            mode,
            times: Times::at(mtime),
            xattrs,
        };
        let at = |e: super::upper::WriteError| {
            format!("{shown}: {}: {}", names::display(&e.path), e.source)
        };
        let existing = up.lstat(&target).map_err(at)?;
        match etype {
            tar::EntryType::Directory => {
                if existing.as_ref().is_some_and(|e| e.is_dir()) {
                    up.update_dir(&target, &meta).map_err(at)?;
                } else {
                    up.create_dir(&target, &meta).map_err(at)?;
                }
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let n = up.write_file(&target, &mut entry, &meta).map_err(at)?;
                st.bytes += n;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| format!("{shown}: symlink without a target"))?;
                let link = std::ffi::OsStr::from_bytes(&link);
                up.symlink(&target, Path::new(link), &meta).map_err(at)?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| format!("{shown}: hard link without a target"))?;
                let link = names::encode(&link).into_owned();
                let lcomps = clean_name(&link)?;
                let Some((llast, lparent)) = lcomps.split_last() else {
                    return Err(format!("{shown}: hard link to the archive root"));
                };
                let mut lpath =
                    resolve_in(up, &root, lparent).map_err(|e| format!("{shown}: {e}"))?;
                lpath.push(llast.clone());
                let existing_link = join_abs(&lpath);
                match up.lstat(&existing_link).map_err(at)? {
                    Some(e) if !e.is_dir() => {}
                    _ => {
                        return Err(format!(
                            "{shown}: hard link target {:?} not found",
                            names::display(&link)
                        ))
                    }
                }
                up.hard_link(&target, &existing_link).map_err(at)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let kind = match etype {
                    tar::EntryType::Char => 0o020000,
                    tar::EntryType::Block => 0o060000,
                    _ => 0o010000,
                };
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let rdev = rustix::fs::makedev(major, minor);
                up.special(&target, kind | mode, rdev, &meta).map_err(at)?;
            }
            other => return Err(format!("{shown}: unsupported tar entry type {other:?}")),
        }
        st.files += 1;
    }
    Ok(st)
}
