//! Layer blob → directory, safely.
//!
//! Safety rules (every refusal is a [`LayerError::Refused`] naming the entry, and
//! nothing is written for that entry):
//!
//! * Entry names and hard-link targets are cleaned (`./`, `.` and empty components
//!   dropped). A name with a `..` component or an absolute name is refused.
//!   containerd instead re-roots such names (it joins them under the target after
//!   `filepath.Clean`); kiln refuses them because no layer writer produces them
//!   (Go's `archive/tar` via containerd/moby writes relative names, GNU tar strips
//!   `/` and `../`), so one that has them is broken or hostile, and a visible
//!   refusal beats a silent rewrite.
//! * Every parent directory is opened with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_MAGICLINKS)` from the target's directory descriptor: a parent path
//!   that leaves the target, through `..` inside a symlink or through an absolute
//!   symlink, fails in the kernel and the entry is refused. (Layers made from a
//!   directory diff never put entries below a symlink, so this costs nothing real.)
//! * The entry itself is created relative to that parent descriptor with the `*at`
//!   calls and `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`; whatever was at its name before
//!   (other than a directory replaced by a directory) is removed first, so a
//!   pre-existing symlink is replaced, never written through.
//! * Hard-link targets are resolved the same way; whiteouts only name entries
//!   inside an already-resolved parent.

use super::compress::{decoder, HashingReader};
use super::overlay::{self, OverlayXattr};
use super::whiteout::{self, Whiteout};
use super::{entry_display, Compression, LayerError};
use crate::digest::Digest;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What to do with OCI whiteouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The target is the merged root filesystem: `.wh.x` deletes `x`,
    /// `.wh..wh..opq` deletes what lower layers had in the directory.
    Delete,
    /// The target is one overlayfs lowerdir per layer: `.wh.x` becomes a 0/0
    /// character device `x`, `.wh..wh..opq` sets `<prefix>.overlay.opaque=y`.
    Overlay(OverlayXattr),
}

/// How to apply a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// Restore uid/gid from the layer. Defaults to true when running as (possibly
    /// namespaced) root; without it files belong to the caller.
    pub chown: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Delete,
            chown: rustix::process::geteuid().is_root(),
        }
    }
}

/// What applying a layer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyStats {
    /// The sha256 of the layer's whole uncompressed tar stream: its diff_id.
    pub diff_id: Digest,
    /// The compression detected from the blob's first bytes.
    pub compression: Option<Compression>,
    pub regular_files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    pub devices: u64,
    pub fifos: u64,
    pub whiteouts: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Things that could not be restored but did not stop the layer (device nodes
    /// or xattrs the caller lacks the privilege for), one readable line each.
    pub warnings: Vec<String>,
}

/// Applies the layer read from `reader` (gzip, zstd or plain tar, detected from its
/// first bytes) onto `target` with default options: whiteouts delete, ownership is
/// restored when running as root.
///
/// The whole stream is read, to its end (the compression must be complete), and
/// hashed in the same pass: [`ApplyStats::diff_id`]. A layer that must be a
/// particular one is applied with [`super::apply_image_layer`], which checks that.
pub fn apply_layer(reader: impl Read, target: &Path) -> Result<ApplyStats, LayerError> {
    apply_layer_with(reader, target, &ApplyOptions::default())
}

/// Applies a layer onto `target` (created if missing) with explicit options.
pub fn apply_layer_with(
    reader: impl Read,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, LayerError> {
    std::fs::create_dir_all(target).map_err(|e| LayerError::io(target, e))?;
    let root = rustix::fs::open(
        target,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::io(target, e.into()))?;
    let (compression, stream) = decoder(reader).map_err(LayerError::Input)?;
    let mut stream = HashingReader::new(stream);
    let mut applier = Applier {
        root,
        opts: *opts,
        written: HashSet::new(),
        dirs: Vec::new(),
        stats: ApplyStats {
            // Set once the whole stream is read.
            diff_id: Digest::from_bytes([0; 32]),
            compression: Some(compression),
            regular_files: 0,
            directories: 0,
            symlinks: 0,
            hard_links: 0,
            devices: 0,
            fifos: 0,
            whiteouts: 0,
            bytes: 0,
            warnings: Vec::new(),
        },
        copy_buf: vec![0u8; 256 * 1024],
    };
    {
        let mut archive = tar::Archive::new(&mut stream);
        for entry in archive.entries().map_err(LayerError::Input)? {
            let entry = entry.map_err(LayerError::Input)?;
            applier.entry(entry)?;
        }
    }
    applier.stats.diff_id = stream.finish().map_err(LayerError::Input)?;
    applier.finish_dirs()?;
    Ok(applier.stats)
}

/// An entry name split into clean components, or why it is refused.
pub(super) fn clean_name(raw: &[u8]) -> Result<Vec<&[u8]>, String> {
    if raw.starts_with(b"/") {
        return Err("absolute path (layer entries must be relative to the layer root)".into());
    }
    if raw.contains(&0) {
        return Err("NUL byte in name".into());
    }
    let mut comps = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("`..` path component (would leave the target)".into()),
            c => comps.push(c),
        }
    }
    Ok(comps)
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Removes `name` in `dir` whatever it is, recursively, never following symlinks.
fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let sub = match rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        // Not a directory after all (EPERM came from something else): report that.
        Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
            return rustix::fs::unlinkat(dir, name, AtFlags::empty())
        }
        Err(e) => return Err(e),
    };
    for child in list_dir(sub.as_fd())? {
        remove_all_at(sub.as_fd(), &child)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<OsString>, Errno> {
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(dir)? {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

struct PendingDir {
    path: Vec<u8>,
    mode: u32,
    mtime: Timespec,
}

struct Applier {
    root: OwnedFd,
    opts: ApplyOptions,
    /// Paths created by this layer: an opaque marker keeps these.
    written: HashSet<Vec<u8>>,
    /// Directories whose mode and mtime are set after all entries (creating
    /// children would change the mtime; a read-only mode would stop them).
    dirs: Vec<PendingDir>,
    stats: ApplyStats,
    copy_buf: Vec<u8>,
}

/// Metadata of one entry as the tar stream gives it.
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let secs: i128 = secs.parse().ok()?;
    let mut frac: String = frac.chars().take(9).collect();
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    while frac.len() < 9 {
        frac.push('0');
    }
    let nanos = secs * 1_000_000_000 + frac.parse::<i128>().ok()?;
    let nanos = if neg { -nanos } else { nanos };
    Some(Timespec {
        tv_sec: i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?,
        tv_nsec: nanos.rem_euclid(1_000_000_000) as _,
    })
}

impl Applier {
    fn refuse(name: &[u8], reason: impl Into<String>) -> LayerError {
        LayerError::Refused {
            entry: entry_display(name),
            reason: reason.into(),
        }
    }

    fn fail(name: &[u8], e: impl Into<io::Error>) -> LayerError {
        LayerError::Entry {
            entry: entry_display(name),
            source: e.into(),
        }
    }

    fn warn(&mut self, msg: String) {
        const MAX: usize = 100;
        if self.stats.warnings.len() < MAX {
            self.stats.warnings.push(msg);
        }
    }

    /// Opens the directory `comps` below the root, refusing anything that resolves
    /// outside it; missing directories are created (0755) when `create` is set,
    /// otherwise `Ok(None)`.
    fn open_dir(
        &self,
        name: &[u8],
        comps: &[&[u8]],
        create: bool,
    ) -> Result<Option<OwnedFd>, LayerError> {
        match self.resolve(name, comps)? {
            Some(fd) => return Ok(Some(fd)),
            None if !create => return Ok(None),
            None => {}
        }
        for i in 1..=comps.len() {
            if self.resolve(name, &comps[..i])?.is_some() {
                continue;
            }
            let parent = match self.resolve(name, &comps[..i - 1])? {
                Some(fd) => fd,
                None => return Err(Self::fail(name, errno_io(Errno::NOENT))),
            };
            match rustix::fs::mkdirat(&parent, os(comps[i - 1]), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(Self::fail(name, errno_io(e))),
            }
        }
        match self.resolve(name, comps)? {
            Some(fd) => Ok(Some(fd)),
            None => Err(Self::fail(name, errno_io(Errno::NOENT))),
        }
    }

    /// `openat2(root, comps, RESOLVE_BENEATH)`: `Ok(None)` when it does not exist.
    fn resolve(&self, name: &[u8], comps: &[&[u8]]) -> Result<Option<OwnedFd>, LayerError> {
        let rel = if comps.is_empty() {
            b".".to_vec()
        } else {
            join(comps)
        };
        for _ in 0..16 {
            match rustix::fs::openat2(
                &self.root,
                os(&rel),
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(fd) => return Ok(Some(fd)),
                Err(Errno::NOENT) => return Ok(None),
                // The kernel retries nothing itself when a rename races the lookup.
                Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                Err(Errno::XDEV) => {
                    return Err(Self::refuse(
                        name,
                        format!(
                            "{:?} resolves outside the target (through a symlink or `..`)",
                            entry_display(&rel)
                        ),
                    ))
                }
                Err(Errno::LOOP) => {
                    return Err(Self::refuse(
                        name,
                        format!("{:?} goes through a symlink loop", entry_display(&rel)),
                    ))
                }
                Err(Errno::NOSYS) => {
                    return Err(Self::fail(
                        name,
                        io::Error::other("openat2 is not available (Linux 5.6 or later is needed)"),
                    ))
                }
                Err(e) => return Err(Self::fail(name, errno_io(e))),
            }
        }
        Err(Self::fail(name, errno_io(Errno::AGAIN)))
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), LayerError> {
        let raw = entry.path_bytes().into_owned();
        let etype = entry.header().entry_type();
        if etype.is_pax_global_extensions() {
            return Ok(());
        }
        let comps = clean_name(&raw).map_err(|reason| Self::refuse(&raw, reason))?;
        let Some((&base, parent)) = comps.split_last() else {
            // The layer root itself ("./"): the target's own metadata is not ours.
            return Ok(());
        };

        match whiteout::classify(base) {
            Whiteout::None => {}
            Whiteout::Meta => return Ok(()),
            Whiteout::Opaque => return self.opaque(&raw, parent),
            Whiteout::Delete(victim) => return self.whiteout(&raw, parent, victim),
        }

        let meta = self.meta(&raw, &mut entry)?;
        let dir = match self.open_dir(&raw, parent, true)? {
            Some(fd) => fd,
            None => return Err(Self::fail(&raw, errno_io(Errno::NOENT))),
        };
        let path = join(&comps);

        use tar::EntryType as T;
        match etype {
            T::Directory => self.directory(&raw, &dir, base, path.clone(), &meta)?,
            T::Regular | T::Continuous => self.regular(&raw, &dir, base, &meta, &mut entry)?,
            T::Link => self.hard_link(&raw, &dir, base, &entry)?,
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Self::refuse(&raw, "symlink without a target"))?
                    .into_owned();
                self.clear_slot(&raw, &dir, base, false)?;
                rustix::fs::symlinkat(os(&target), &dir, os(base))
                    .map_err(|e| Self::fail(&raw, errno_io(e)))?;
                self.finish_at(&raw, &dir, base, &meta, false)?;
                self.stats.symlinks += 1;
            }
            T::Char | T::Block | T::Fifo => self.special(&raw, &dir, base, etype, &meta, &entry)?,
            other => {
                return Err(Self::refuse(
                    &raw,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ))
            }
        }
        self.written.insert(path);
        Ok(())
    }

    fn meta<R: Read>(&self, raw: &[u8], entry: &mut tar::Entry<'_, R>) -> Result<Meta, LayerError> {
        let h = entry.header();
        let bad = |what: &str, e: io::Error| Self::refuse(raw, format!("bad {what} field: {e}"));
        // Go's archive/tar (what BuildKit and containerd read layers with) takes a
        // numeric field of only NULs and spaces as 0; so do we.
        let old = h.as_old();
        let blank = |field: &[u8]| field.iter().all(|b| *b == 0 || *b == b' ');
        let mut meta = Meta {
            mode: if blank(&old.mode) {
                0
            } else {
                h.mode().map_err(|e| bad("mode", e))? & 0o7777
            },
            uid: if blank(&old.uid) {
                0
            } else {
                h.uid().map_err(|e| bad("uid", e))?
            },
            gid: if blank(&old.gid) {
                0
            } else {
                h.gid().map_err(|e| bad("gid", e))?
            },
            mtime: Timespec {
                tv_sec: if blank(&old.mtime) {
                    0
                } else {
                    h.mtime().map_err(|e| bad("mtime", e))? as i64
                },
                tv_nsec: 0,
            },
            xattrs: Vec::new(),
        };
        if let Some(exts) = entry.pax_extensions().map_err(LayerError::Input)? {
            for ext in exts {
                let ext = ext.map_err(LayerError::Input)?;
                let key = ext.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    meta.xattrs
                        .push((name.to_vec(), ext.value_bytes().to_vec()));
                } else if key == b"mtime" {
                    if let Some(t) = parse_pax_time(ext.value_bytes()) {
                        meta.mtime = t;
                    }
                }
            }
        }
        Ok(meta)
    }

    /// Makes room for a new entry at `dir/base`: removes what is there, except an
    /// existing directory when the new entry is a directory too. Returns whether a
    /// directory was kept.
    fn clear_slot(
        &mut self,
        raw: &[u8],
        dir: &OwnedFd,
        base: &[u8],
        new_is_dir: bool,
    ) -> Result<bool, LayerError> {
        match rustix::fs::statat(dir, os(base), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                if new_is_dir && FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Ok(true);
                }
                remove_all_at(dir.as_fd(), os(base)).map_err(|e| Self::fail(raw, errno_io(e)))?;
                Ok(false)
            }
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(Self::fail(raw, errno_io(e))),
        }
    }

    fn ids(
        &self,
        raw: &[u8],
        meta: &Meta,
    ) -> Result<(rustix::fs::Uid, rustix::fs::Gid), LayerError> {
        let uid = u32::try_from(meta.uid).ok().filter(|&u| u != u32::MAX);
        let gid = u32::try_from(meta.gid).ok().filter(|&g| g != u32::MAX);
        match (uid, gid) {
            (Some(u), Some(g)) => Ok((rustix::fs::Uid::from_raw(u), rustix::fs::Gid::from_raw(g))),
            _ => Err(Self::refuse(
                raw,
                format!("owner {}:{} is out of range", meta.uid, meta.gid),
            )),
        }
    }

    fn set_xattrs_fd(&mut self, raw: &[u8], fd: BorrowedFd<'_>, meta: &Meta) {
        for (name, value) in &meta.xattrs {
            if let Err(e) = rustix::fs::fsetxattr(fd, os(name), value, XattrFlags::empty()) {
                let msg = format!(
                    "{}: xattr {} not restored: {}",
                    entry_display(raw),
                    entry_display(name),
                    errno_io(e)
                );
                self.warn(msg);
            }
        }
    }

    fn set_xattrs_at(&mut self, raw: &[u8], dir: &OwnedFd, base: &[u8], meta: &Meta) {
        if meta.xattrs.is_empty() {
            return;
        }
        // No descriptor can be opened on a symlink or device for fsetxattr; the
        // /proc path resolves to `dir` and lsetxattr does not follow `base`.
        let mut path =
            format!("/proc/self/fd/{}/", std::os::fd::AsRawFd::as_raw_fd(dir)).into_bytes();
        path.extend_from_slice(base);
        for (name, value) in &meta.xattrs {
            if let Err(e) = rustix::fs::lsetxattr(os(&path), os(name), value, XattrFlags::empty()) {
                let msg = format!(
                    "{}: xattr {} not restored: {}",
                    entry_display(raw),
                    entry_display(name),
                    errno_io(e)
                );
                self.warn(msg);
            }
        }
    }

    fn times(meta: &Meta) -> Timestamps {
        Timestamps {
            last_access: meta.mtime,
            last_modification: meta.mtime,
        }
    }

    fn directory(
        &mut self,
        raw: &[u8],
        dir: &OwnedFd,
        base: &[u8],
        path: Vec<u8>,
        meta: &Meta,
    ) -> Result<(), LayerError> {
        if !self.clear_slot(raw, dir, base, true)? {
            rustix::fs::mkdirat(dir, os(base), Mode::from_raw_mode(0o700))
                .map_err(|e| Self::fail(raw, errno_io(e)))?;
        }
        let fd = rustix::fs::openat(
            dir,
            os(base),
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Self::fail(raw, errno_io(e)))?;
        if self.opts.chown {
            let (u, g) = self.ids(raw, meta)?;
            rustix::fs::fchown(&fd, Some(u), Some(g)).map_err(|e| Self::fail(raw, errno_io(e)))?;
        }
        self.set_xattrs_fd(raw, fd.as_fd(), meta);
        self.dirs.push(PendingDir {
            path,
            mode: meta.mode,
            mtime: meta.mtime,
        });
        self.stats.directories += 1;
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        raw: &[u8],
        dir: &OwnedFd,
        base: &[u8],
        meta: &Meta,
        data: &mut tar::Entry<'_, R>,
    ) -> Result<(), LayerError> {
        self.clear_slot(raw, dir, base, false)?;
        let fd = rustix::fs::openat(
            dir,
            os(base),
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Self::fail(raw, errno_io(e)))?;
        let mut file = File::from(fd);
        loop {
            let n = match data.read(&mut self.copy_buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LayerError::Input(e)),
            };
            file.write_all(&self.copy_buf[..n])
                .map_err(|e| Self::fail(raw, e))?;
            self.stats.bytes += n as u64;
        }
        self.finish_fd(raw, file.as_fd(), meta)?;
        self.stats.regular_files += 1;
        Ok(())
    }

    /// Owner, mode, xattrs, times of an entry we hold a descriptor for (chown first:
    /// it clears setuid/setgid).
    fn finish_fd(&mut self, raw: &[u8], fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), LayerError> {
        if self.opts.chown {
            let (u, g) = self.ids(raw, meta)?;
            rustix::fs::fchown(fd, Some(u), Some(g)).map_err(|e| Self::fail(raw, errno_io(e)))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| Self::fail(raw, errno_io(e)))?;
        self.set_xattrs_fd(raw, fd, meta);
        rustix::fs::futimens(fd, &Self::times(meta)).map_err(|e| Self::fail(raw, errno_io(e)))
    }

    /// The same for an entry reached by name (symlinks, devices, fifos).
    fn finish_at(
        &mut self,
        raw: &[u8],
        dir: &OwnedFd,
        base: &[u8],
        meta: &Meta,
        chmod: bool,
    ) -> Result<(), LayerError> {
        if self.opts.chown {
            let (u, g) = self.ids(raw, meta)?;
            rustix::fs::chownat(dir, os(base), Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| Self::fail(raw, errno_io(e)))?;
        }
        if chmod {
            // `base` was just created by mknodat and is not a symlink.
            rustix::fs::chmodat(
                dir,
                os(base),
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(|e| Self::fail(raw, errno_io(e)))?;
        }
        self.set_xattrs_at(raw, dir, base, meta);
        rustix::fs::utimensat(dir, os(base), &Self::times(meta), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| Self::fail(raw, errno_io(e)))
    }

    fn hard_link<R: Read>(
        &mut self,
        raw: &[u8],
        dir: &OwnedFd,
        base: &[u8],
        entry: &tar::Entry<'_, R>,
    ) -> Result<(), LayerError> {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| Self::refuse(raw, "hard link without a target"))?
            .into_owned();
        let tcomps = clean_name(&target).map_err(|reason| {
            Self::refuse(
                raw,
                format!("hard link target {:?}: {reason}", entry_display(&target)),
            )
        })?;
        let Some((&tbase, tparent)) = tcomps.split_last() else {
            return Err(Self::refuse(raw, "hard link to the layer root"));
        };
        let tdir = self.resolve(raw, tparent)?.ok_or_else(|| {
            Self::fail(
                raw,
                io::Error::other(format!(
                    "hard link target {:?} does not exist",
                    entry_display(&target)
                )),
            )
        })?;
        let st = rustix::fs::statat(&tdir, os(tbase), AtFlags::SYMLINK_NOFOLLOW).map_err(|e| {
            Self::fail(
                raw,
                io::Error::other(format!(
                    "hard link target {:?}: {}",
                    entry_display(&target),
                    errno_io(e)
                )),
            )
        })?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            return Err(Self::refuse(raw, "hard link to a directory"));
        }
        self.clear_slot(raw, dir, base, false)?;
        rustix::fs::linkat(&tdir, os(tbase), dir, os(base), AtFlags::empty())
            .map_err(|e| Self::fail(raw, errno_io(e)))?;
        self.stats.hard_links += 1;
        Ok(())
    }

    fn special<R: Read>(
        &mut self,
        raw: &[u8],
        dir: &OwnedFd,
        base: &[u8],
        etype: tar::EntryType,
        meta: &Meta,
        entry: &tar::Entry<'_, R>,
    ) -> Result<(), LayerError> {
        let h = entry.header();
        let (ft, dev) = match etype {
            tar::EntryType::Fifo => (FileType::Fifo, 0),
            t => {
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let ft = if t == tar::EntryType::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (ft, rustix::fs::makedev(major, minor))
            }
        };
        self.clear_slot(raw, dir, base, false)?;
        match rustix::fs::mknodat(
            dir,
            os(base),
            ft,
            Mode::from_raw_mode(meta.mode & 0o777),
            dev,
        ) {
            Ok(()) => {}
            Err(Errno::PERM) if ft != FileType::Fifo => {
                let msg = format!(
                    "{}: device node not created: no privilege to mknod",
                    entry_display(raw)
                );
                self.warn(msg);
                return Ok(());
            }
            Err(e) => return Err(Self::fail(raw, errno_io(e))),
        }
        self.finish_at(raw, dir, base, meta, true)?;
        if ft == FileType::Fifo {
            self.stats.fifos += 1;
        } else {
            self.stats.devices += 1;
        }
        Ok(())
    }

    fn whiteout(&mut self, raw: &[u8], parent: &[&[u8]], victim: &[u8]) -> Result<(), LayerError> {
        if victim.is_empty() || victim == b"." || victim == b".." {
            return Err(Self::refuse(raw, "whiteout names no file"));
        }
        self.stats.whiteouts += 1;
        match self.opts.whiteouts {
            WhiteoutMode::Delete => {
                // Nothing below to delete from when the directory does not exist.
                let Some(dir) = self.open_dir(raw, parent, false)? else {
                    return Ok(());
                };
                remove_all_at(dir.as_fd(), os(victim)).map_err(|e| Self::fail(raw, errno_io(e)))
            }
            WhiteoutMode::Overlay(_) => {
                let dir = self
                    .open_dir(raw, parent, true)?
                    .ok_or_else(|| Self::fail(raw, errno_io(Errno::NOENT)))?;
                self.clear_slot(raw, &dir, victim, false)?;
                overlay::make_whiteout_at(&dir, os(victim)).map_err(|e| Self::fail(raw, e))
            }
        }
    }

    fn opaque(&mut self, raw: &[u8], parent: &[&[u8]]) -> Result<(), LayerError> {
        self.stats.whiteouts += 1;
        match self.opts.whiteouts {
            WhiteoutMode::Delete => {
                let Some(dir) = self.open_dir(raw, parent, false)? else {
                    return Ok(());
                };
                let prefix = join(parent);
                for child in list_dir(dir.as_fd()).map_err(|e| Self::fail(raw, errno_io(e)))? {
                    let mut path = prefix.clone();
                    if !path.is_empty() {
                        path.push(b'/');
                    }
                    path.extend_from_slice(child.as_bytes());
                    if !self.written.contains(&path) {
                        remove_all_at(dir.as_fd(), &child)
                            .map_err(|e| Self::fail(raw, errno_io(e)))?;
                    }
                }
                Ok(())
            }
            WhiteoutMode::Overlay(ns) => {
                let dir = self
                    .open_dir(raw, parent, true)?
                    .ok_or_else(|| Self::fail(raw, errno_io(Errno::NOENT)))?;
                overlay::set_opaque_fd(&dir, ns).map_err(|e| Self::fail(raw, e))
            }
        }
    }

    /// Sets the deferred directory modes and mtimes, deepest first.
    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        let dirs = std::mem::take(&mut self.dirs);
        for d in dirs.iter().rev() {
            let comps: Vec<&[u8]> = d.path.split(|&b| b == b'/').collect();
            let fd = match rustix::fs::openat2(
                &self.root,
                os(&d.path),
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(fd) => fd,
                // Replaced or removed by a later entry of the same layer.
                Err(Errno::NOENT) | Err(Errno::LOOP) | Err(Errno::NOTDIR) => continue,
                Err(_) => {
                    self.resolve(&d.path, &comps)?;
                    continue;
                }
            };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode))
                .map_err(|e| Self::fail(&d.path, errno_io(e)))?;
            let t = Timestamps {
                last_access: d.mtime,
                last_modification: d.mtime,
            };
            rustix::fs::futimens(&fd, &t).map_err(|e| Self::fail(&d.path, errno_io(e)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_or_refused() {
        assert_eq!(
            clean_name(b"./a//b/./c/").unwrap(),
            vec![&b"a"[..], b"b", b"c"]
        );
        assert!(clean_name(b"./").unwrap().is_empty());
        assert!(clean_name(b"/etc/x").unwrap_err().contains("absolute"));
        assert!(clean_name(b"a/../../x").unwrap_err().contains(".."));
        assert!(clean_name(b"..").unwrap_err().contains(".."));
    }

    #[test]
    fn the_whole_stream_is_read_and_hashed() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(2);
        b.append_data(&mut h, "f", &b"hi"[..]).unwrap();
        let mut tar = b.into_inner().unwrap();
        // Padding after the end-of-archive blocks is part of the layer.
        tar.resize(tar.len() + 64 * 1024, 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        for blob in [&tar, &gz] {
            let dir = tempfile::tempdir().unwrap();
            let stats = apply_layer(&blob[..], dir.path()).unwrap();
            assert_eq!(stats.diff_id, Digest::of(&tar));
            assert_eq!(stats.regular_files, 1);
        }
        // A gzip stream cut in the padding the tar reader never needs is an error.
        let dir = tempfile::tempdir().unwrap();
        let err = apply_layer(&gz[..gz.len() - 12], dir.path()).unwrap_err();
        assert!(matches!(err, LayerError::Input(_)), "{err}");
    }

    #[test]
    fn pax_times_parse() {
        let t = parse_pax_time(b"1700000000.25").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 250_000_000));
        let t = parse_pax_time(b"-1.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (-2, 500_000_000));
        assert!(parse_pax_time(b"x").is_none());
    }
}
