//! Layer codec round trips and reproducibility. Needs root (device nodes, chown,
//! `security.capability`), as CI runs.

mod support;

use kiln_oci::layer::{apply_layer, write_layer, Compression, DiffKind, LayerOptions};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use support::{list_layer, set_mtime, snapshot};

const ALL: [Compression; 3] = [
    Compression::None,
    Compression::DEFAULT_GZIP,
    Compression::DEFAULT_ZSTD,
];

fn chown(path: &Path, uid: u32, gid: u32) {
    rustix::fs::chownat(
        rustix::fs::CWD,
        path,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with every kind of entry a layer can hold.
fn build_tree(root: &Path) {
    let long_component = "c".repeat(150);
    let deep = root
        .join("long")
        .join(&long_component)
        .join(&long_component);
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("file-with-a-long-path.txt"), b"deep\n").unwrap();
    fs::write(root.join("long").join("n".repeat(200)), b"long name\n").unwrap();
    symlink("t".repeat(180), root.join("long/long-target-link")).unwrap();

    fs::create_dir(root.join("etc")).unwrap();
    fs::write(root.join("etc/hostname"), b"kiln\n").unwrap();
    fs::write(root.join("etc/empty"), b"").unwrap();
    fs::write(root.join("etc/unicode-ünïcødé"), b"utf-8 name\n").unwrap();

    // Large and mostly holes: reading it must still produce every byte.
    let mut big = fs::File::create(root.join("big.bin")).unwrap();
    big.set_len(12 << 20).unwrap();
    use std::io::{Seek, SeekFrom};
    big.seek(SeekFrom::Start(5 << 20)).unwrap();
    big.write_all(&[0xab; 70_000]).unwrap();
    drop(big);

    fs::create_dir(root.join("bin")).unwrap();
    fs::write(root.join("bin/tool"), b"#!/bin/sh\necho tool\n").unwrap();
    fs::hard_link(root.join("bin/tool"), root.join("bin/tool-link")).unwrap();
    fs::hard_link(root.join("bin/tool"), root.join("etc/tool-again")).unwrap();
    fs::write(root.join("bin/suid"), b"suid\n").unwrap();
    chmod(&root.join("bin/suid"), 0o4755);
    fs::write(root.join("bin/sgid"), b"sgid\n").unwrap();
    chmod(&root.join("bin/sgid"), 0o2711);
    fs::write(root.join("bin/ping"), b"cap\n").unwrap();
    // cap_net_raw+ep, VFS_CAP_REVISION_2.
    let cap: [u8; 20] = [
        0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    rustix::fs::setxattr(
        root.join("bin/ping"),
        "security.capability",
        &cap,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        root.join("etc/hostname"),
        "user.kiln.note",
        b"hello",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();

    fs::create_dir(root.join("tmp")).unwrap();
    chmod(&root.join("tmp"), 0o1777);
    fs::create_dir(root.join("shared")).unwrap();
    chmod(&root.join("shared"), 0o2775);
    chown(&root.join("shared"), 1234, 5678);
    fs::write(root.join("shared/owned"), b"owned\n").unwrap();
    chown(&root.join("shared/owned"), 1234, 5678);
    // Ids beyond ustar's 7 octal digits need PAX records.
    fs::write(root.join("shared/big-ids"), b"ids\n").unwrap();
    chown(&root.join("shared/big-ids"), 3_000_000, 4_000_000);

    symlink("hostname", root.join("etc/relative-link")).unwrap();
    symlink("/etc/hostname", root.join("etc/absolute-link")).unwrap();
    symlink("../nowhere", root.join("etc/dangling-link")).unwrap();
    chown(&root.join("etc/dangling-link"), 42, 43);

    fs::create_dir(root.join("dev")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("dev/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("dev/loop9"),
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o660),
        rustix::fs::makedev(7, 9),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("dev/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o620),
        0,
    )
    .unwrap();
    // Sockets are not layer content.
    let _sock = std::os::unix::net::UnixListener::bind(root.join("dev/socket")).unwrap();

    // Read-only directory: applying must still be able to fill it.
    fs::create_dir(root.join("ro")).unwrap();
    fs::write(root.join("ro/inside"), b"x").unwrap();
    chmod(&root.join("ro"), 0o555);

    // Fixed mtimes everywhere (directories last: creating children changes them).
    let mut paths = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                stack.push(p.clone());
            }
            paths.push(p);
        }
    }
    for (i, p) in paths.iter().rev().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64 * 1000);
    }
}

#[test]
fn round_trip_of_every_file_type_as_root() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    let mut expected = snapshot(&src, true);
    expected.remove("dev/socket");

    for compression in ALL {
        let mut blob = Vec::new();
        let opts = LayerOptions {
            compression,
            source_date_epoch: None,
        };
        let desc = write_layer(&src, DiffKind::Plain, &opts, &mut blob).unwrap();
        assert_eq!(desc.size, blob.len() as u64);
        assert_eq!(desc.digest, kiln_oci::Digest::of(&blob));
        assert_eq!(desc.media_type, compression.media_type());
        if compression == Compression::None {
            assert_eq!(desc.diff_id, desc.digest);
        }

        let entries = list_layer(&blob);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert!(!names.iter().any(|n| n.contains("socket")), "{names:?}");
        let links: Vec<_> = entries.iter().filter(|e| e.1 == b'1').collect();
        assert_eq!(links.len(), 2, "two hard links to bin/tool: {links:?}");
        assert!(links.iter().all(|l| l.2 == "bin/tool"), "{links:?}");

        let dst = tmp.path().join(format!("dst-{compression}"));
        let stats = apply_layer(&blob[..], &dst).unwrap();
        assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
        assert_eq!(
            stats.compression.map(|c| c.to_string()),
            Some(compression.to_string())
        );
        assert_eq!(stats.hard_links, 2);
        assert_eq!(stats.devices, 2);
        assert_eq!(stats.fifos, 1);
        let got = snapshot(&dst, true);
        for (path, node) in &expected {
            assert_eq!(got.get(path), Some(node), "{path} after {compression}");
        }
        assert_eq!(got.len(), expected.len(), "{compression}");
    }
}

#[test]
fn layer_digests_are_reproducible_with_source_date_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    // Older than every file, as in a build: every mtime is clamped to it.
    let sde = 1_500_000_000;
    for compression in [Compression::DEFAULT_GZIP, Compression::DEFAULT_ZSTD] {
        let opts = LayerOptions {
            compression,
            source_date_epoch: Some(sde),
        };
        let write = || {
            let mut blob = Vec::new();
            let d = write_layer(&src, DiffKind::Plain, &opts, &mut blob).unwrap();
            (d, blob)
        };
        let (first, first_blob) = write();
        let (second, second_blob) = write();
        assert_eq!(first, second, "{compression}");
        assert_eq!(first_blob, second_blob);

        // Touch everything (mtime = now, later than the epoch): same bytes.
        for p in [
            "etc/hostname",
            "bin/tool",
            "big.bin",
            "etc",
            "bin",
            "etc/relative-link",
        ] {
            let path = src.join(p);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            set_mtime(&path, now);
        }
        let (touched, _) = write();
        assert_eq!(touched.diff_id, first.diff_id, "{compression}");
        assert_eq!(touched.digest, first.digest, "{compression}");

        // Without the clamp the touched mtimes show (so the test above means something).
        let mut unclamped = Vec::new();
        let plain = LayerOptions {
            compression,
            source_date_epoch: None,
        };
        let d = write_layer(&src, DiffKind::Plain, &plain, &mut unclamped).unwrap();
        assert_ne!(d.diff_id, first.diff_id);
    }
}

#[test]
fn output_write_errors_are_reported_not_hung() {
    struct Broken(usize);
    impl Write for Broken {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk full"));
            }
            self.0 -= 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path());
    let opts = LayerOptions {
        compression: Compression::None,
        source_date_epoch: None,
    };
    let err = write_layer(tmp.path(), DiffKind::Plain, &opts, Broken(3)).unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
}

#[test]
fn missing_directory_is_a_clear_error() {
    let opts = LayerOptions::default();
    let err = write_layer(
        Path::new("/nonexistent/kiln-layer"),
        DiffKind::Plain,
        &opts,
        Vec::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/kiln-layer"), "{err}");
}
