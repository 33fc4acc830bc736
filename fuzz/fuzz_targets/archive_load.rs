//! Fuzz target: arbitrary bytes as `kiln load` input (`kiln_oci::load::
//! load_archive`) into a fresh store. Loading must return `Ok` or an error —
//! never panic — and leave the store consistent: after an error no image is
//! named; after `Ok` every blob verifies, and every loaded image reads back with
//! as many diff_ids as layers.
//!
//! The first byte chooses how the rest is used: bit 0 fixes the tar header
//! checksums first, bit 1 gzip-compresses the archive.

#![no_main]

mod tar_fixup;

use kiln_oci::image::load_image;
use kiln_oci::load::load_archive;
use kiln_oci::Store;
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut archive = rest.to_vec();
    if mode & 1 != 0 {
        tar_fixup::fix_checksums(&mut archive);
    }
    if mode & 2 != 0 {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&archive).unwrap();
        archive = e.finish().unwrap();
    }
    // A memory filesystem when there is one: the store fsyncs every write.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    match load_archive(&store, &archive[..]) {
        Ok(loaded) => {
            assert!(!loaded.is_empty(), "Ok without an image");
            let report = store.verify().unwrap();
            assert!(report.is_ok(), "{report:?}");
            for l in &loaded {
                let image = load_image(&store, &l.target).unwrap();
                assert_eq!(image.layers.len(), image.config.rootfs.diff_ids.len());
            }
        }
        Err(e) => {
            let _ = e.to_string();
            assert!(store.images().unwrap().is_empty(), "named after {e}");
        }
    }
});
