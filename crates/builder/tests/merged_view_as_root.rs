//! LayeredView over layers with overlay whiteouts (0/0 character devices) and
//! `trusted.overlay.opaque` directories. Needs root to make both (CI runs as root).

use kiln_builder::LayeredView;
use kiln_testkit::tree::{opaque, whiteout, write};
use std::fs;

fn read(view: &LayeredView, p: &str, follow: bool) -> Option<String> {
    view.lookup(p, follow)
        .unwrap()
        .map(|e| fs::read_to_string(e.host_path).unwrap())
}

#[test]
fn upper_layers_shadow_whiteouts_and_opaque_dirs_hide() {
    let top = tempfile::tempdir().unwrap();
    let mid = tempfile::tempdir().unwrap();
    let low = tempfile::tempdir().unwrap();
    write(low.path(), "etc/a", "low-a");
    write(low.path(), "etc/b", "low-b");
    write(low.path(), "etc/c", "low-c");
    write(low.path(), "opt/x/1", "low-1");
    write(low.path(), "opt/y", "low-y");
    write(low.path(), "gone/deep", "d");
    write(mid.path(), "etc/b", "mid-b");
    whiteout(mid.path(), "etc/c");
    opaque(mid.path(), "opt");
    write(mid.path(), "opt/z", "mid-z");
    write(top.path(), "etc/a", "top-a");
    whiteout(top.path(), "gone");
    write(top.path(), "etc/c", "top-c-again");
    let v = LayeredView::new(vec![
        top.path().into(),
        mid.path().into(),
        low.path().into(),
    ]);
    assert_eq!(read(&v, "/etc/a", true).as_deref(), Some("top-a"));
    assert_eq!(read(&v, "/etc/b", true).as_deref(), Some("mid-b"));
    assert_eq!(read(&v, "etc/c", true).as_deref(), Some("top-c-again"));
    assert_eq!(v.read_dir("/etc").unwrap(), ["a", "b", "c"]);
    assert_eq!(v.read_dir("/opt").unwrap(), ["z"]);
    assert!(v.lookup("/opt/x/1", true).unwrap().is_none());
    assert!(v.lookup("/gone", false).unwrap().is_none());
    assert!(v.lookup("/gone/deep", false).unwrap().is_none());
    assert_eq!(v.read_dir("/").unwrap(), ["etc", "opt"]);
    let e = v.lookup("/etc/b", false).unwrap().unwrap();
    assert_eq!((e.layer, e.path.as_str()), (1, "/etc/b"));
    let walked: Vec<String> = v.walk("/").unwrap().into_iter().map(|e| e.path).collect();
    assert_eq!(
        walked,
        ["/etc", "/etc/a", "/etc/b", "/etc/c", "/opt", "/opt/z"]
    );
}
