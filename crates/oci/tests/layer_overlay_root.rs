//! overlayfs upperdir → layer → applied onto a copy of the lowerdir equals the
//! merged view. Needs root (mounts a real overlay), as CI runs.

mod support;

use kiln_oci::layer::{
    apply_layer, apply_layer_with, write_layer, ApplyOptions, DiffKind, LayerOptions, OverlayXattr,
    WhiteoutMode,
};
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Command;
use support::{list_layer, snapshot};

fn run(cmd: &mut Command) {
    let st = cmd.status().unwrap();
    assert!(st.success(), "{cmd:?}");
}

fn mount_overlay(lower: &str, upper: &Path, work: &Path, merged: &Path) {
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={lower},upperdir={},workdir={}",
            upper.display(),
            work.display()
        ))
        .arg(merged));
}

#[test]
fn overlay_upperdir_becomes_whiteouts_and_applies_to_the_merged_view_as_root() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (lower, upper, work, merged) = (
        t.join("lower"),
        t.join("upper"),
        t.join("work"),
        t.join("merged"),
    );
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    fs::create_dir_all(lower.join("etc/conf.d")).unwrap();
    fs::write(lower.join("etc/keep"), b"keep").unwrap();
    fs::write(lower.join("etc/gone"), b"gone").unwrap();
    fs::write(lower.join("etc/conf.d/a"), b"a").unwrap();
    fs::create_dir_all(lower.join("var/cache/old")).unwrap();
    fs::write(lower.join("var/cache/old/x"), b"x").unwrap();
    fs::write(lower.join("var/cache/stale"), b"stale").unwrap();
    fs::create_dir_all(lower.join("deleted-dir/sub")).unwrap();
    fs::write(lower.join("deleted-dir/sub/f"), b"f").unwrap();

    mount_overlay(&lower.display().to_string(), &upper, &work, &merged);
    let changes = || -> std::io::Result<()> {
        fs::remove_file(merged.join("etc/gone"))?;
        fs::remove_dir_all(merged.join("deleted-dir"))?;
        // Removing a directory and creating it again makes it opaque.
        fs::remove_dir_all(merged.join("var/cache"))?;
        fs::create_dir(merged.join("var/cache"))?;
        fs::write(merged.join("var/cache/fresh"), b"fresh")?;
        fs::write(merged.join("etc/keep"), b"changed")?;
        fs::write(merged.join("etc/new"), b"new")?;
        Ok(())
    };
    let changed = changes();
    let want = snapshot(&merged, false);
    run(Command::new("umount").arg(&merged));
    changed.unwrap();
    assert!(fs::symlink_metadata(upper.join("etc/gone"))
        .unwrap()
        .file_type()
        .is_char_device());

    let mut blob = Vec::new();
    write_layer(
        &upper,
        DiffKind::OverlayUpper,
        &LayerOptions::default(),
        &mut blob,
    )
    .unwrap();
    let names: Vec<String> = list_layer(&blob).into_iter().map(|e| e.0).collect();
    for expected in [
        "etc/.wh.gone",
        ".wh.deleted-dir",
        "var/cache/",
        "var/cache/.wh..wh..opq",
        "var/cache/fresh",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n.ends_with("etc/gone")), "{names:?}");

    // Applied onto a copy of the lower layer: the merged view.
    let applied = t.join("applied");
    run(Command::new("cp").arg("-a").arg(&lower).arg(&applied));
    apply_layer(&blob[..], &applied).unwrap();
    let got = snapshot(&applied, false);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (path, node) in &want {
        assert_eq!(&got[path], node, "{path}");
    }

    // Applied as its own lowerdir (overlay whiteouts) and stacked: the merged view too.
    let layer_dir = t.join("layer-dir");
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay(OverlayXattr::Trusted),
        chown: true,
    };
    apply_layer_with(&blob[..], &layer_dir, &opts).unwrap();
    let stacked = t.join("stacked");
    fs::create_dir(&stacked).unwrap();
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={}:{}",
            layer_dir.display(),
            lower.display()
        ))
        .arg(&stacked));
    let seen = snapshot(&stacked, false);
    run(Command::new("umount").arg(&stacked));
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (path, node) in &want {
        assert_eq!(seen[path].content, node.content, "{path}");
        assert_eq!(seen[path].kind, node.kind, "{path}");
    }
}
