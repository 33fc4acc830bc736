//! Helpers shared by the layer tests: building trees with every file type and
//! comparing trees by metadata.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// One file's metadata as compared by the tests.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Option<i64>,
    pub content: Option<kiln_oci::Digest>,
    pub link: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Index of the first path sharing this inode (hard links), if any other does.
    pub link_group: Option<String>,
}

pub fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        if name == b"security.selinux" || name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, std::ffi::OsStr::from_bytes(name), &mut value[..])
            .expect("lgetxattr");
        out.insert(name.to_vec(), value[..len].to_vec());
    }
    out
}

/// Every path below `root` (not `root` itself) with its metadata. Directory mtimes
/// are compared only when `dir_mtimes`.
pub fn snapshot(root: &Path, dir_mtimes: bool) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut first_of: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut all = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
            }
            all.push((p, md));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, md) in &all {
        if md.is_file() {
            *first_of.entry((md.dev(), md.ino())).or_default() += 1;
        }
    }
    for (p, md) in all {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "other"
        };
        let key = (md.dev(), md.ino());
        let link_group = if md.is_file() && first_of[&key] > 1 {
            Some(inodes.entry(key).or_insert_with(|| rel.clone()).clone())
        } else {
            None
        };
        out.insert(
            rel,
            Node {
                kind,
                mode: md.permissions().mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: if md.is_dir() && !dir_mtimes {
                    None
                } else {
                    Some(md.mtime())
                },
                content: md
                    .is_file()
                    .then(|| kiln_oci::Digest::of(&fs::read(&p).unwrap())),
                link: ft
                    .is_symlink()
                    .then(|| fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()),
                rdev: if ft.is_char_device() || ft.is_block_device() {
                    md.rdev()
                } else {
                    0
                },
                xattrs: xattrs(&p),
                link_group,
            },
        );
    }
    out
}

pub fn set_mtime(path: &Path, secs: i64) {
    let t = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &t,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// Lists the (name, type byte, link name) of every entry of an uncompressed or
/// compressed layer.
pub fn list_layer(blob: &[u8]) -> Vec<(String, u8, String)> {
    let (mut raw, mut plain) = (blob.to_vec(), Vec::new());
    if blob.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut plain)
            .unwrap();
        raw = plain;
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        raw = zstd::decode_all(blob).unwrap();
    }
    let mut ar = tar::Archive::new(&raw[..]);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().entry_type().as_byte(),
                e.link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default(),
            )
        })
        .collect()
}
