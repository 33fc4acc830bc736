//! The overlayfs upperdir format, as kiln's snapshots store layers: a deleted
//! name is a *whiteout*, a 0/0 character device; a directory that hides what
//! the layers below have in it is *opaque*, marked with the xattr
//! `trusted.overlay.opaque=y` (overlay mounted by host root) or
//! `user.overlay.opaque=y` (mounted with `userxattr`, rootless). Everything
//! that reads or writes snapshots (the layer writer and applier here, the
//! builder's merged view and COPY writer, the sandbox's copying snapshotter,
//! `kiln run`) asks this module.

use rustix::fs::{FileType, Mode, XattrFlags};
use std::fs::Metadata;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Which overlayfs xattr namespace marks opaque directories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlayXattr {
    /// `trusted.overlay.opaque` (overlay mounted by real root).
    Trusted,
    /// `user.overlay.opaque` (overlay mounted with `userxattr`, rootless).
    User,
}

impl OverlayXattr {
    /// The xattr that marks an opaque directory in this namespace.
    pub fn opaque(self) -> &'static str {
        match self {
            OverlayXattr::Trusted => "trusted.overlay.opaque",
            OverlayXattr::User => "user.overlay.opaque",
        }
    }
}

/// The xattrs marking an opaque directory, in either namespace.
pub const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// The value of an opaque marker.
const OPAQUE_VALUE: &[u8] = b"y";

/// overlayfs' own extended attributes (`trusted.overlay.*`, or `user.overlay.*`
/// with `userxattr`): internal state of the mount, never part of an image.
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// The xattr of a whiteout kept as a file: where the snapshots' filesystem
/// refuses 0/0 character devices (overlayfs itself: a store on a container's
/// root filesystem), a whiteout is an empty regular file of mode 0 carrying
/// `user.overlay.whiteout=y` (the name overlayfs ≥ 6.7 gives its xattr
/// whiteouts; an overlay xattr, so never copied into a layer).
pub const FILE_WHITEOUT_XATTR: &str = "user.overlay.whiteout";

/// Whether `md` (of an `lstat`) is a whiteout device; see [`is_whiteout_at`]
/// for whiteouts kept as files.
pub fn is_whiteout(md: &Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Whether the entry at `path`, whose `lstat` is `md`, is a whiteout: a 0/0
/// character device, or a file whiteout ([`FILE_WHITEOUT_XATTR`]).
pub fn is_whiteout_at(path: &Path, md: &Metadata) -> bool {
    if is_whiteout(md) {
        return true;
    }
    if !(md.file_type().is_file() && md.len() == 0 && md.mode() & 0o7777 == 0) {
        return false;
    }
    let mut buf = [0u8; 8];
    matches!(rustix::fs::lgetxattr(path, FILE_WHITEOUT_XATTR, &mut buf), Ok(n) if &buf[..n] == OPAQUE_VALUE)
}

/// Whether the directory at `path` carries an opaque marker (in either
/// namespace). Filesystems without xattrs have none.
pub fn is_opaque_dir(path: &Path) -> io::Result<bool> {
    let mut buf = [0u8; 8];
    for name in OPAQUE_XATTRS {
        match rustix::fs::lgetxattr(path, name, &mut buf) {
            Ok(n) => {
                if &buf[..n] == OPAQUE_VALUE {
                    return Ok(true);
                }
            }
            Err(rustix::io::Errno::NODATA)
            | Err(rustix::io::Errno::NOTSUP)
            | Err(rustix::io::Errno::RANGE) => {}
            Err(e) => return Err(io::Error::from_raw_os_error(e.raw_os_error())),
        }
    }
    Ok(false)
}

/// Makes a whiteout at `path`.
pub fn make_whiteout(path: &Path) -> io::Result<()> {
    make_whiteout_at(rustix::fs::CWD, path)
}

/// Makes a whiteout named `name` in the directory `dir`.
pub fn make_whiteout_at(dir: impl AsFd, name: impl rustix::path::Arg + Copy) -> io::Result<()> {
    match rustix::fs::mknodat(
        &dir,
        name,
        FileType::CharacterDevice,
        Mode::empty(),
        rustix::fs::makedev(0, 0),
    ) {
        // overlayfs refuses whiteout devices: a file whiteout instead.
        Err(rustix::io::Errno::PERM) => {
            use rustix::fs::OFlags;
            let fd = rustix::fs::openat(
                &dir,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            rustix::fs::fsetxattr(&fd, FILE_WHITEOUT_XATTR, OPAQUE_VALUE, XattrFlags::empty())?;
            Ok(())
        }
        r => r.map_err(io::Error::from),
    }
}

/// Marks the directory at `path` opaque.
pub fn set_opaque(path: &Path, xattr: OverlayXattr) -> io::Result<()> {
    rustix::fs::lsetxattr(path, xattr.opaque(), OPAQUE_VALUE, XattrFlags::empty())
        .map_err(io::Error::from)
}

/// Marks the open directory `dir` opaque.
pub fn set_opaque_fd(dir: impl AsFd, xattr: OverlayXattr) -> io::Result<()> {
    rustix::fs::fsetxattr(dir, xattr.opaque(), OPAQUE_VALUE, XattrFlags::empty())
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_xattr_names() {
        assert!(is_overlay_xattr(b"trusted.overlay.opaque"));
        assert!(is_overlay_xattr(b"user.overlay.redirect"));
        assert!(!is_overlay_xattr(b"security.capability"));
        assert_eq!(OverlayXattr::Trusted.opaque(), OPAQUE_XATTRS[0]);
        assert_eq!(OverlayXattr::User.opaque(), OPAQUE_XATTRS[1]);
    }

    #[test]
    fn whiteouts_and_opaque_markers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        assert!(!is_whiteout(&std::fs::symlink_metadata(&plain).unwrap()));
        assert!(!is_opaque_dir(dir.path()).unwrap());
        // As root the whiteout and the user.* marker can be made anywhere (tmpfs
        // or ext4 take user xattrs); elsewhere these need privileges.
        if rustix::process::geteuid().is_root() {
            let wh = dir.path().join("gone");
            make_whiteout(&wh).unwrap();
            assert!(is_whiteout(&std::fs::symlink_metadata(&wh).unwrap()));
            let sub = dir.path().join("sub");
            std::fs::create_dir(&sub).unwrap();
            if set_opaque(&sub, OverlayXattr::User).is_ok() {
                assert!(is_opaque_dir(&sub).unwrap());
            }
        }
    }
}
