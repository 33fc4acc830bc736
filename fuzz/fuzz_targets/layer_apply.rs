//! Fuzz target: arbitrary bytes applied as a layer by `kiln_oci::layer` onto a
//! temporary root. Applying must return `Ok` or an error — never panic — and
//! must never create, change or remove anything outside the root, whatever
//! names, symlinks, hard links, whiteouts or devices the layer holds.
//!
//! The first byte chooses how the rest is used: bit 0 gzip-compresses it first
//! (so tar mutations also go through the gzip path), bit 1 applies with overlay
//! whiteouts (a snapshot) instead of deleting ones, bit 2 fixes the tar header
//! checksums first. On `Ok` the reported diff_id must be the sha256 of the tar.
//!
//! Outside the root, two sentinel trees are watched: `<work>/outside` (reachable
//! as `../outside` from the root) and `/tmp/kiln-fuzz-outside` (an absolute path a
//! symlink can name); plus the work directory's own listing.

#![no_main]

mod tar_fixup;

use kiln_oci::layer::{apply_layer_with, ApplyOptions, Compression, OverlayXattr, WhiteoutMode};
use kiln_oci::Digest;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const ABSOLUTE_SENTINEL: &str = "/tmp/kiln-fuzz-outside";

struct Work {
    dir: PathBuf,
    watched: Vec<PathBuf>,
    before: Vec<BTreeMap<PathBuf, String>>,
}

/// Every path below `p` (and `p`) with its type, mode, owner, size, mtime, link
/// target and content digest.
fn state(p: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(md) = fs::symlink_metadata(p) else {
            return;
        };
        let extra = if md.file_type().is_symlink() {
            format!("{:?}", fs::read_link(p).ok())
        } else if md.is_file() {
            Digest::of(&fs::read(p).unwrap_or_default()).to_string()
        } else {
            String::new()
        };
        out.insert(
            p.to_path_buf(),
            format!(
                "{:o} {}:{} {} {}.{} {extra}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.len(),
                md.mtime(),
                md.mtime_nsec()
            ),
        );
        if md.is_dir() {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(p, &mut out);
    out
}

fn make_sentinels(dir: &Path) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("file"), b"sentinel").unwrap();
    fs::write(dir.join("sub/file"), b"sentinel").unwrap();
}

fn work() -> &'static Work {
    static WORK: OnceLock<Work> = OnceLock::new();
    WORK.get_or_init(|| {
        // A memory filesystem when there is one (faster; it has the xattrs and
        // device nodes a layer makes).
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("kiln-fuzz-layer-apply-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        make_sentinels(&dir.join("outside"));
        make_sentinels(Path::new(ABSOLUTE_SENTINEL));
        // The work directory's own entries (not its subtrees) are watched too.
        let watched = vec![dir.join("outside"), PathBuf::from(ABSOLUTE_SENTINEL)];
        let before = watched.iter().map(|p| state(p)).collect();
        Work {
            dir,
            watched,
            before,
        }
    })
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Removes a tree whatever modes a layer gave its directories.
fn remove_tree(p: &Path) {
    if fs::remove_dir_all(p).is_ok() || !p.exists() {
        return;
    }
    fn writable(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(md) = fs::symlink_metadata(p) {
            if md.is_dir() {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                if let Ok(rd) = fs::read_dir(p) {
                    for e in rd.flatten() {
                        writable(&e.path());
                    }
                }
            }
        }
    }
    writable(p);
    fs::remove_dir_all(p).unwrap();
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let w = work();
    let mut tar = rest.to_vec();
    if mode & 4 != 0 {
        tar_fixup::fix_checksums(&mut tar);
    }
    let blob = if mode & 1 != 0 {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&tar).unwrap();
        e.finish().unwrap()
    } else {
        tar.clone()
    };
    let opts = ApplyOptions {
        whiteouts: if mode & 2 != 0 {
            WhiteoutMode::Overlay(OverlayXattr::Trusted)
        } else {
            WhiteoutMode::Delete
        },
        chown: true,
    };
    let root = w.dir.join("root");
    let result = apply_layer_with(&blob[..], &root, &opts);
    if let Ok(stats) = &result {
        // Unless the fuzzer's own bytes were compressed (then the diff_id is
        // of what they decompress to), the diff_id is the tar's digest.
        let wrapped = mode & 1 != 0;
        if wrapped || stats.compression == Some(Compression::None) {
            assert_eq!(
                stats.diff_id,
                Digest::of(&tar),
                "diff_id of an applied layer"
            );
        }
    }
    for (p, before) in w.watched.iter().zip(&w.before) {
        assert_eq!(&state(p), before, "{} changed: {result:?}", p.display());
    }
    assert_eq!(listing(&w.dir), ["outside", "root"], "{result:?}");
    remove_tree(&root);
});
