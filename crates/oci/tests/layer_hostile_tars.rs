//! Hand-crafted hostile layers: each must be refused with an error naming the
//! entry, and nothing may appear outside the target (a sentinel directory beside
//! it is checked after every case).

use kiln_oci::layer::{apply_layer, LayerError};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

/// A tar built from raw headers (the `tar` crate's builder refuses `..`, which is
/// the point of these tests).
fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_ustar();
        let (name, kind, link, data): (&str, tar::EntryType, &str, &[u8]) = match e {
            E::File(n, d) => (n, tar::EntryType::Regular, "", d),
            E::Dir(n) => (n, tar::EntryType::Directory, "", b""),
            E::Symlink(n, l) => (n, tar::EntryType::Symlink, l, b""),
            E::HardLink(n, l) => (n, tar::EntryType::Link, l, b""),
        };
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// `<tmp>/root` is the target, `<tmp>/sentinel/secret` must survive untouched.
struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("root")).unwrap();
        fs::create_dir(tmp.path().join("sentinel")).unwrap();
        fs::write(tmp.path().join("sentinel/secret"), b"secret").unwrap();
        Sandbox { tmp }
    }
    fn root(&self) -> std::path::PathBuf {
        self.tmp.path().join("root")
    }
    fn sentinel(&self) -> String {
        self.tmp.path().join("sentinel").display().to_string()
    }
    /// Nothing but `root/` and the untouched sentinel outside the target.
    fn assert_outside_untouched(&self) {
        let mut top: Vec<String> = fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(top, ["root", "sentinel"]);
        let sentinel: Vec<String> = fs::read_dir(self.tmp.path().join("sentinel"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(sentinel, ["secret"]);
        assert_eq!(
            fs::read(self.tmp.path().join("sentinel/secret")).unwrap(),
            b"secret"
        );
        let parent_leak = self.tmp.path().parent().unwrap().join("kiln-hostile-x");
        assert!(!parent_leak.exists());
    }
}

fn assert_refused(result: Result<kiln_oci::layer::ApplyStats, LayerError>, entry: &str, why: &str) {
    match result {
        Err(LayerError::Refused { entry: e, reason }) => {
            assert_eq!(e, entry);
            assert!(reason.contains(why), "{reason:?} should mention {why:?}");
        }
        other => panic!("expected {entry:?} to be refused, got {other:?}"),
    }
}

#[test]
fn path_traversal_is_refused() {
    let sb = Sandbox::new();
    let r = apply_layer(&tar_of(&[E::File("../sentinel/x", b"pwn")])[..], &sb.root());
    assert_refused(r, "../sentinel/x", "..");
    let r = apply_layer(
        &tar_of(&[E::File("a/../../kiln-hostile-x", b"pwn")])[..],
        &sb.root(),
    );
    assert_refused(r, "a/../../kiln-hostile-x", "..");
    let r = apply_layer(&tar_of(&[E::File("../../etc/x", b"pwn")])[..], &sb.root());
    assert_refused(r, "../../etc/x", "..");
    sb.assert_outside_untouched();
}

#[test]
fn absolute_paths_are_refused() {
    let sb = Sandbox::new();
    let abs = format!("{}/abs", sb.sentinel());
    let r = apply_layer(&tar_of(&[E::File(&abs, b"pwn")])[..], &sb.root());
    assert_refused(r, &abs, "absolute");
    let r = apply_layer(
        &tar_of(&[E::File("/etc/kiln-hostile-x", b"pwn")])[..],
        &sb.root(),
    );
    assert_refused(r, "/etc/kiln-hostile-x", "absolute");
    assert!(!Path::new("/etc/kiln-hostile-x").exists());
    sb.assert_outside_untouched();
}

#[test]
fn writing_through_a_symlink_that_leaves_the_target_is_refused() {
    let sb = Sandbox::new();
    let sentinel = sb.sentinel();
    // Absolute symlink to a directory outside, then a file below it.
    let r = apply_layer(
        &tar_of(&[E::Symlink("link", &sentinel), E::File("link/x", b"pwn")])[..],
        &sb.root(),
    );
    assert_refused(r, "link/x", "outside the target");
    // `link -> /` then `link/etc/x`.
    let r = apply_layer(
        &tar_of(&[
            E::Symlink("slash", "/"),
            E::File("slash/tmp/kiln-hostile-x", b"pwn"),
        ])[..],
        &sb.root(),
    );
    assert_refused(r, "slash/tmp/kiln-hostile-x", "outside the target");
    assert!(!Path::new("/tmp/kiln-hostile-x").exists());
    // Relative symlink climbing out.
    let r = apply_layer(
        &tar_of(&[
            E::Symlink("up", "../.."),
            E::File("up/kiln-hostile-x", b"pwn"),
        ])[..],
        &sb.root(),
    );
    assert_refused(r, "up/kiln-hostile-x", "outside the target");
    let r = apply_layer(
        &tar_of(&[
            E::Symlink("d/up", "../../sentinel"),
            E::File("d/up/y", b"pwn"),
        ])[..],
        &sb.root(),
    );
    assert_refused(r, "d/up/y", "outside the target");
    // A symlink already in the target (from a lower layer) pointing out.
    symlink(&sentinel, sb.root().join("lower-link")).unwrap();
    let r = apply_layer(&tar_of(&[E::File("lower-link/z", b"pwn")])[..], &sb.root());
    assert_refused(r, "lower-link/z", "outside the target");
    sb.assert_outside_untouched();
}

#[test]
fn an_existing_symlink_is_replaced_not_written_through() {
    let sb = Sandbox::new();
    symlink(format!("{}/secret", sb.sentinel()), sb.root().join("evil")).unwrap();
    symlink("../sentinel", sb.root().join("evildir")).unwrap();
    apply_layer(
        &tar_of(&[E::File("evil", b"replaced"), E::Dir("evildir/")])[..],
        &sb.root(),
    )
    .unwrap();
    assert_eq!(fs::read(sb.root().join("evil")).unwrap(), b"replaced");
    assert!(fs::symlink_metadata(sb.root().join("evildir"))
        .unwrap()
        .is_dir());
    sb.assert_outside_untouched();
}

#[test]
fn hard_links_to_outside_are_refused() {
    let sb = Sandbox::new();
    let r = apply_layer(&tar_of(&[E::HardLink("pw", "/etc/passwd")])[..], &sb.root());
    assert_refused(r, "pw", "absolute");
    let r = apply_layer(
        &tar_of(&[E::HardLink("s", "../sentinel/secret")])[..],
        &sb.root(),
    );
    assert_refused(r, "s", "..");
    let r = apply_layer(
        &tar_of(&[
            E::Symlink("l", "../sentinel"),
            E::HardLink("s2", "l/secret"),
        ])[..],
        &sb.root(),
    );
    assert_refused(r, "s2", "outside the target");
    assert!(!sb.root().join("pw").exists() && !sb.root().join("s").exists());
    assert!(!sb.root().join("s2").exists());
    sb.assert_outside_untouched();
}

#[test]
fn whiteouts_cannot_delete_outside() {
    let sb = Sandbox::new();
    let r = apply_layer(
        &tar_of(&[E::File("../sentinel/.wh.secret", b"")])[..],
        &sb.root(),
    );
    assert_refused(r, "../sentinel/.wh.secret", "..");
    let r = apply_layer(&tar_of(&[E::File("../.wh.sentinel", b"")])[..], &sb.root());
    assert_refused(r, "../.wh.sentinel", "..");
    let r = apply_layer(
        &tar_of(&[E::Symlink("l", "../sentinel"), E::File("l/.wh.secret", b"")])[..],
        &sb.root(),
    );
    assert_refused(r, "l/.wh.secret", "outside the target");
    let r = apply_layer(
        &tar_of(&[
            E::Symlink("o", "../sentinel"),
            E::File("o/.wh..wh..opq", b""),
        ])[..],
        &sb.root(),
    );
    assert_refused(r, "o/.wh..wh..opq", "outside the target");
    let r = apply_layer(&tar_of(&[E::File(".wh...", b"")])[..], &sb.root());
    assert_refused(r, ".wh...", "whiteout");
    sb.assert_outside_untouched();
}

#[test]
fn whiteouts_delete_inside_and_opaque_keeps_this_layers_entries() {
    let sb = Sandbox::new();
    let root = sb.root();
    fs::create_dir_all(root.join("etc/sub")).unwrap();
    fs::write(root.join("etc/old"), b"old").unwrap();
    fs::write(root.join("etc/sub/deep"), b"deep").unwrap();
    fs::create_dir_all(root.join("opq")).unwrap();
    fs::write(root.join("opq/lower"), b"lower").unwrap();
    fs::write(root.join("keep"), b"keep").unwrap();
    let stats = apply_layer(
        &tar_of(&[
            E::File("etc/.wh.old", b""),
            E::File("etc/.wh.sub", b""),
            E::Dir("opq/"),
            E::File("opq/-first", b"new"),
            E::File("opq/.wh..wh..opq", b""),
            E::File("opq/new", b"new"),
            E::File(".wh.does-not-exist", b""),
        ])[..],
        &root,
    )
    .unwrap();
    assert_eq!(stats.whiteouts, 4);
    assert!(!root.join("etc/old").exists() && !root.join("etc/sub").exists());
    assert!(root.join("etc").is_dir());
    let mut opq: Vec<String> = fs::read_dir(root.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    opq.sort();
    assert_eq!(opq, ["-first", "new"]);
    assert_eq!(fs::read(root.join("keep")).unwrap(), b"keep");
    sb.assert_outside_untouched();
}

#[test]
fn garbage_input_is_an_error_not_a_panic() {
    let sb = Sandbox::new();
    let err = apply_layer(&b"\x1f\x8b\x08\x00garbage"[..], &sb.root()).unwrap_err();
    assert!(matches!(err, LayerError::Input(_)), "{err}");
    let mut truncated = tar_of(&[E::File("f", &[7u8; 4000])]);
    truncated.truncate(1500);
    let err = apply_layer(&truncated[..], &sb.root()).unwrap_err();
    assert!(matches!(err, LayerError::Input(_)), "{err}");
    sb.assert_outside_untouched();
}
