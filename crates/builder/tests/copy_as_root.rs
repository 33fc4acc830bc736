//! COPY/ADD and WORKDIR into an upper directory, against hand-made build contexts
//! and overlay-format layer stacks. Needs root: it sets owners, `trusted.*`
//! xattrs and makes whiteout device nodes (CI runs as root).

use kiln_builder::internal::Context;
use kiln_builder::internal::PatternMatcher;
use kiln_builder::internal::{
    context_sources_digest, copy, dest_path, make_workdir, view_sources_digest, CopyError, CopyOp,
    CopySource, CopyStats,
};
use kiln_builder::internal::{set_times_at, Times};
use kiln_builder::LayeredView;
use kiln_oci::Digest;
use kiln_testkit::tree::{opaque, whiteout, write};
use std::fs::{self, Metadata};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use tempfile::TempDir;

fn op(sources: &[&str], dest: &str) -> CopyOp {
    CopyOp {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_string(),
        workdir: "/".to_string(),
        ..CopyOp::default()
    }
}

fn ctx_of(root: &Path) -> Context {
    Context::load(root, &PatternMatcher::default()).unwrap()
}

/// A sample build context.
fn sample_context() -> TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    write(r, "dir/a.txt", "A");
    write(r, "dir/sub/b.txt", "B");
    write(r, "dir/debug.log", "L");
    write(r, "f.txt", "F");
    write(r, "g.txt", "G");
    write(r, "app/src/main.rs", "fn main() {}");
    write(r, "app/src/lib/util.rs", "util");
    write(r, "app/README.md", "readme");
    symlink("f.txt", r.join("link")).unwrap();
    symlink("../f.txt", r.join("dir/rel-link")).unwrap();
    fs::set_permissions(r.join("dir/sub"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(r.join("g.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    d
}

fn run(o: &CopyOp, src: CopySource, parent: &LayeredView) -> (TempDir, CopyStats) {
    let up = tempfile::tempdir().unwrap();
    let st = copy(o, src, parent, up.path()).unwrap_or_else(|e| panic!("copy failed: {e}"));
    (up, st)
}

fn run_err(o: &CopyOp, src: CopySource, parent: &LayeredView) -> CopyError {
    let up = tempfile::tempdir().unwrap();
    match copy(o, src, parent, up.path()) {
        Ok(_) => panic!("copy of {:?} to {} succeeded", o.sources, o.dest),
        Err(e) => e,
    }
}

fn read(up: &TempDir, p: &str) -> String {
    fs::read_to_string(up.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn md(up: &TempDir, p: &str) -> Metadata {
    fs::symlink_metadata(up.path().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// All paths in a directory, sorted, `/`-separated, relative.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

fn empty() -> LayeredView {
    LayeredView::new(Vec::new())
}

#[test]
fn directory_sources_copy_their_contents() {
    let c = sample_context();
    let ctx = ctx_of(c.path());
    let (up, st) = run(&op(&["dir"], "/dst"), CopySource::Context(&ctx), &empty());
    assert_eq!(
        tree(up.path()),
        [
            "dst",
            "dst/a.txt",
            "dst/debug.log",
            "dst/rel-link",
            "dst/sub",
            "dst/sub/b.txt"
        ]
    );
    assert_eq!(read(&up, "dst/sub/b.txt"), "B");
    assert_eq!(st, CopyStats { files: 4, bytes: 3 });
    // Symlinks inside a copied directory stay symlinks.
    assert_eq!(
        fs::read_link(up.path().join("dst/rel-link")).unwrap(),
        Path::new("../f.txt")
    );
    // Modes are kept; the created destination directory is 0755 root.
    assert_eq!(md(&up, "dst/sub").mode() & 0o7777, 0o750);
    assert_eq!(md(&up, "dst").mode() & 0o7777, 0o755);

    // `dir/`, `dir/.` and a relative destination under WORKDIR: the same contents.
    for src in ["dir/", "./dir/.", "dir/sub/.."] {
        let mut o = op(&[src], "dst");
        o.workdir = "/app".into();
        let (up, _) = run(&o, CopySource::Context(&ctx), &empty());
        assert_eq!(read(&up, "app/dst/a.txt"), "A", "{src}");
    }
    // `COPY . /` copies the whole context.
    let (up, _) = run(&op(&["."], "/"), CopySource::Context(&ctx), &empty());
    assert_eq!(read(&up, "app/src/lib/util.rs"), "util");
}

#[test]
fn file_destination_rules() {
    let c = sample_context();
    let ctx = ctx_of(c.path());
    let parent_layer = tempfile::tempdir().unwrap();
    write(parent_layer.path(), "existing/keep", "k");
    let parent = LayeredView::new(vec![parent_layer.path().into()]);
    // Trailing slash: into a new directory.
    let (up, _) = run(&op(&["f.txt"], "/x/"), CopySource::Context(&ctx), &parent);
    assert_eq!(read(&up, "x/f.txt"), "F");
    // No slash: the file itself, parents created.
    let (up, _) = run(
        &op(&["f.txt"], "/a/b/renamed"),
        CopySource::Context(&ctx),
        &parent,
    );
    assert_eq!(read(&up, "a/b/renamed"), "F");
    assert_eq!(tree(up.path()), ["a", "a/b", "a/b/renamed"]);
    // An existing directory of the parent: into it.
    let (up, _) = run(
        &op(&["f.txt"], "/existing"),
        CopySource::Context(&ctx),
        &parent,
    );
    assert_eq!(tree(up.path()), ["existing", "existing/f.txt"]);
    // A symlink as source is followed; mode kept.
    let (up, _) = run(
        &op(&["link", "g.txt"], "/out/"),
        CopySource::Context(&ctx),
        &parent,
    );
    assert!(md(&up, "out/link").is_file());
    assert_eq!(read(&up, "out/link"), "F");
    assert_eq!(md(&up, "out/g.txt").mode() & 0o7777, 0o640);
    // Several sources to a path without a slash: BuildKit copies them one after
    // the other onto it (no "must end with /" error); the last file wins.
    let (up, _) = run(
        &op(&["f.txt", "g.txt"], "/one"),
        CopySource::Context(&ctx),
        &parent,
    );
    assert_eq!(read(&up, "one"), "G");
    // `.` as destination is WORKDIR.
    let mut o = op(&["f.txt"], ".");
    o.workdir = "/work/dir".into();
    let (up, _) = run(&o, CopySource::Context(&ctx), &parent);
    assert_eq!(read(&up, "work/dir/f.txt"), "F");
}

#[test]
fn dest_path_normalization() {
    assert_eq!(dest_path("/", "/x/"), "/x/");
    assert_eq!(dest_path("/app", "x"), "/app/x");
    assert_eq!(dest_path("/app", ""), "/app/");
    assert_eq!(dest_path("/app", "."), "/app/");
    assert_eq!(dest_path("/app/sub", "../y/"), "/app/y/");
    assert_eq!(dest_path("/app", "x/."), "/app/x/.");
    assert_eq!(dest_path("", "x"), "/x");
    assert_eq!(dest_path("/", "/../../etc"), "/etc");
}

#[test]
fn wildcards_and_missing_sources() {
    let c = sample_context();
    let ctx = ctx_of(c.path());
    let (up, _) = run(
        &op(&["*.txt"], "/out/"),
        CopySource::Context(&ctx),
        &empty(),
    );
    assert_eq!(tree(up.path()), ["out", "out/f.txt", "out/g.txt"]);
    // A matched directory brings its contents, not itself.
    let (up, _) = run(&op(&["di?"], "/out/"), CopySource::Context(&ctx), &empty());
    assert_eq!(read(&up, "out/a.txt"), "A");
    // One match without a trailing slash names the file (BuildKit's `COPY f*.go foo2.go`).
    let (up, _) = run(
        &op(&["f*.txt"], "/single"),
        CopySource::Context(&ctx),
        &empty(),
    );
    assert_eq!(read(&up, "single"), "F");
    // Patterns below a directory.
    let (up, _) = run(
        &op(&["app/*/main.rs"], "/m/"),
        CopySource::Context(&ctx),
        &empty(),
    );
    assert_eq!(tree(up.path()), ["m", "m/main.rs"]);
    // An empty wildcard next to a real source is fine (AllowEmptyWildcard).
    let (up, _) = run(
        &op(&["f.txt", "nomatch*"], "/"),
        CopySource::Context(&ctx),
        &empty(),
    );
    assert_eq!(tree(up.path()), ["f.txt"]);
    // An empty wildcard alone copies nothing.
    let (up, st) = run(
        &op(&["nomatch*"], "/dst/"),
        CopySource::Context(&ctx),
        &empty(),
    );
    assert!(tree(up.path()).is_empty());
    assert_eq!(st, CopyStats::default());
    // The directory a pattern starts in must exist; a file there matches nothing.
    let e = run_err(
        &op(&["nodir/*.txt"], "/x/"),
        CopySource::Context(&ctx),
        &empty(),
    );
    assert_eq!(e.to_string(), "\"/nodir\": not found");
    let (up, _) = run(
        &op(&["f.txt/*.txt"], "/x/"),
        CopySource::Context(&ctx),
        &empty(),
    );
    assert!(tree(up.path()).is_empty());
    // A plain missing path is an error naming it.
    let e = run_err(
        &op(&["f.txt", "nope"], "/"),
        CopySource::Context(&ctx),
        &empty(),
    );
    assert_eq!(e.to_string(), "\"/nope\": not found");
    let e = run_err(
        &op(&["dir/missing/x"], "/"),
        CopySource::Context(&ctx),
        &empty(),
    );
    assert_eq!(e.to_string(), "\"/dir/missing/x\": not found");
    // Ignored files are not there.
    write(c.path(), ".dockerignore", "**/*.log\n");
    let ctx = Context::load_with_ignore_file(c.path(), None).unwrap();
    let e = run_err(
        &op(&["dir/debug.log"], "/"),
        CopySource::Context(&ctx),
        &empty(),
    );
    assert!(matches!(e, CopyError::NotFound(_)), "{e}");
    assert!(matches!(
        run_err(&op(&["a["], "/"), CopySource::Context(&ctx), &empty()),
        CopyError::BadPattern(_)
    ));
}

#[test]
fn symlinks_in_the_context_are_resolved_inside_it() {
    let c = sample_context();
    symlink("dir", c.path().join("dirlink")).unwrap();
    symlink("/dir/sub", c.path().join("abslink")).unwrap();
    let ctx = ctx_of(c.path());
    let (up, _) = run(
        &op(&["dirlink/a.txt"], "/"),
        CopySource::Context(&ctx),
        &empty(),
    );
    assert_eq!(read(&up, "a.txt"), "A");
    let (up, _) = run(&op(&["abslink"], "/s"), CopySource::Context(&ctx), &empty());
    assert_eq!(tree(up.path()), ["s", "s/b.txt"]);
}

#[test]
fn owners_chown_and_chmod() {
    let c = sample_context();
    rustix::fs::chown(
        c.path().join("f.txt").as_path(),
        Some(rustix::fs::Uid::from_raw(1234)),
        Some(rustix::fs::Gid::from_raw(1234)),
    )
    .unwrap();
    let ctx = ctx_of(c.path());
    let etc = tempfile::tempdir().unwrap();
    write(
        etc.path(),
        "etc/passwd",
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
    );
    write(
        etc.path(),
        "etc/group",
        "root:x:0:\nstaff:x:50:\napp:x:1001:\n",
    );
    let parent = LayeredView::new(vec![etc.path().into()]);

    // The context's owners are reset to root.
    let (up, _) = run(&op(&["f.txt"], "/"), CopySource::Context(&ctx), &parent);
    assert_eq!((md(&up, "f.txt").uid(), md(&up, "f.txt").gid()), (0, 0));

    // --chown by name, user:group, resolved in the parent's /etc files; also
    // the directories the copy creates.
    let mut o = op(&["dir"], "/new/dst");
    o.chown = Some("app:staff".into());
    let (up, _) = run(&o, CopySource::Context(&ctx), &parent);
    for p in [
        "new",
        "new/dst",
        "new/dst/a.txt",
        "new/dst/sub",
        "new/dst/rel-link",
    ] {
        let m = md(&up, p);
        assert_eq!((m.uid(), m.gid()), (1000, 50), "{p}");
    }
    let mut o = op(&["f.txt"], "/u");
    o.chown = Some("app".into());
    let (up, _) = run(&o, CopySource::Context(&ctx), &parent);
    assert_eq!((md(&up, "u").uid(), md(&up, "u").gid()), (1000, 1001));

    // Octal --chmod: every copied entry, directories too, and new parents.
    let mut o = op(&["dir"], "/p/q/");
    o.chmod = Some("755".into());
    let (up, _) = run(&o, CopySource::Context(&ctx), &parent);
    for p in ["p", "p/q", "p/q/a.txt", "p/q/sub", "p/q/sub/b.txt"] {
        assert_eq!(md(&up, p).mode() & 0o7777, 0o755, "{p}");
    }
    let mut o = op(&["f.txt"], "/parent/foo");
    o.chmod = Some("777".into());
    let (up, _) = run(&o, CopySource::Context(&ctx), &parent);
    assert_eq!(md(&up, "parent").mode() & 0o7777, 0o777);
    assert_eq!(md(&up, "parent/foo").mode() & 0o7777, 0o777);

    // Symbolic --chmod applies to each file's own mode; new parents stay 0755.
    let mut o = op(&["dir", "g.txt"], "/s/");
    o.chmod = Some("u+x,g-r".into());
    let (up, _) = run(&o, CopySource::Context(&ctx), &parent);
    assert_eq!(md(&up, "s").mode() & 0o7777, 0o755);
    assert_eq!(md(&up, "s/a.txt").mode() & 0o7777, 0o704);
    assert_eq!(md(&up, "s/g.txt").mode() & 0o7777, 0o700);
    assert_eq!(md(&up, "s/sub").mode() & 0o7777, 0o710);

    let mut o = op(&["f.txt"], "/");
    o.chmod = Some("64a".into());
    let e = run_err(&o, CopySource::Context(&ctx), &parent);
    assert_eq!(
        e.to_string(),
        "invalid chmod parameter: '64a'. it should be octal string and between 0 and 07777"
    );
}

#[test]
fn existing_parent_directories_are_copied_up_unchanged() {
    let c = sample_context();
    let ctx = ctx_of(c.path());
    let low = tempfile::tempdir().unwrap();
    write(low.path(), "usr/local/bin/other", "o");
    let bin = low.path().join("usr/local/bin");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o2751)).unwrap();
    rustix::fs::chown(
        bin.as_path(),
        Some(rustix::fs::Uid::from_raw(7)),
        Some(rustix::fs::Gid::from_raw(8)),
    )
    .unwrap();
    rustix::fs::lsetxattr(&bin, "user.note", b"kept", rustix::fs::XattrFlags::empty()).unwrap();
    set_times_at(&bin, Times::at(1_000_000)).unwrap();
    set_times_at(&low.path().join("usr"), Times::at(2_000_000)).unwrap();
    let parent = LayeredView::new(vec![low.path().into()]);
    let (up, _) = run(
        &op(&["f.txt"], "/usr/local/bin/"),
        CopySource::Context(&ctx),
        &parent,
    );
    assert_eq!(
        tree(up.path()),
        ["usr", "usr/local", "usr/local/bin", "usr/local/bin/f.txt"]
    );
    let m = md(&up, "usr/local/bin");
    assert_eq!(m.mode() & 0o7777, 0o2751);
    assert_eq!((m.uid(), m.gid()), (7, 8));
    assert_eq!(m.mtime(), 1_000_000);
    assert_eq!(md(&up, "usr").mtime(), 2_000_000);
    let mut buf = [0u8; 16];
    let n = rustix::fs::lgetxattr(up.path().join("usr/local/bin"), "user.note", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"kept");
    // Only what changed is in the upper.
    assert!(!up.path().join("usr/local/bin/other").exists());

    // Copying a directory's contents into an existing directory keeps that
    // directory's mode and owner; it takes the source directory's times (fsutil
    // restores them on the top directory).
    let (up, _) = run(
        &op(&["dir/sub"], "/usr/local/bin"),
        CopySource::Context(&ctx),
        &parent,
    );
    let m = md(&up, "usr/local/bin");
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o2751, 7));
    let src_mtime = fs::metadata(c.path().join("dir/sub")).unwrap().mtime();
    assert_eq!(m.mtime(), src_mtime);
    assert_eq!(read(&up, "usr/local/bin/b.txt"), "B");
}

#[test]
fn type_conflicts_follow_buildkit() {
    let c = sample_context();
    let ctx = ctx_of(c.path());
    let low = tempfile::tempdir().unwrap();
    write(low.path(), "d/x/inner", "i");
    write(low.path(), "file", "f");
    symlink("/target", low.path().join("sym")).unwrap();
    let parent = LayeredView::new(vec![low.path().into()]);
    // A directory below the top meets a file: error.
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "x", "file where a dir is");
    let sctx = ctx_of(src.path());
    let e = run_err(&op(&["."], "/d/"), CopySource::Context(&sctx), &parent);
    assert!(
        matches!(e, CopyError::FileOverDirectory(ref p) if p == "/d/x"),
        "{e}"
    );
    // A directory onto a file.
    let e = run_err(&op(&["dir"], "/file"), CopySource::Context(&ctx), &parent);
    assert_eq!(e.to_string(), "cannot copy to non-directory: /file");
    // A file over a file or a symlink just replaces it in the upper.
    let (up, _) = run(&op(&["f.txt"], "/file"), CopySource::Context(&ctx), &parent);
    assert_eq!(read(&up, "file"), "F");
    // The destination symlink is followed (dangling here: the target is created).
    let (up, _) = run(&op(&["g.txt"], "/sym"), CopySource::Context(&ctx), &parent);
    assert_eq!(read(&up, "target"), "G");
    assert!(!up.path().join("sym").exists());
}

#[test]
fn parents_keep_source_paths() {
    let c = sample_context();
    let ctx = ctx_of(c.path());
    let mut o = op(&["app/src/lib/util.rs", "dir/sub"], "/out/");
    o.parents = true;
    let (up, _) = run(&o, CopySource::Context(&ctx), &empty());
    assert_eq!(
        tree(up.path()),
        [
            "out",
            "out/app",
            "out/app/src",
            "out/app/src/lib",
            "out/app/src/lib/util.rs",
            "out/dir",
            "out/dir/sub",
            "out/dir/sub/b.txt"
        ]
    );
    // Parent directories get the source's metadata.
    assert_eq!(md(&up, "out/dir/sub").mode() & 0o7777, 0o750);
    // A `/./` pivot keeps only what follows it.
    let mut o = op(&["app/./src/*.rs"], "/pv/");
    o.parents = true;
    let (up, _) = run(&o, CopySource::Context(&ctx), &empty());
    assert_eq!(tree(up.path()), ["pv", "pv/src", "pv/src/main.rs"]);
    // Parent directories that already exist only take the source's mode.
    let low = tempfile::tempdir().unwrap();
    fs::create_dir_all(low.path().join("out/dir/sub")).unwrap();
    fs::set_permissions(
        low.path().join("out/dir"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    rustix::fs::chown(
        low.path().join("out/dir").as_path(),
        Some(rustix::fs::Uid::from_raw(9)),
        None,
    )
    .unwrap();
    let parent = LayeredView::new(vec![low.path().into()]);
    let mut o = op(&["dir/sub/b.txt"], "/out/");
    o.parents = true;
    o.chown = Some("1:1".into());
    let (up, _) = run(&o, CopySource::Context(&ctx), &parent);
    let m = md(&up, "out/dir");
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o755, 9));
    let m = md(&up, "out/dir/sub/b.txt");
    assert_eq!((m.uid(), m.gid()), (1, 1));
    // Without wildcards the path must exist.
    let mut o = op(&["app/nope.rs"], "/x/");
    o.parents = true;
    let e = run_err(&o, CopySource::Context(&ctx), &empty());
    assert_eq!(e.to_string(), "\"/app/nope.rs\": not found");
}

#[test]
fn exclude_patterns_are_relative_to_each_source() {
    let c = sample_context();
    let ctx = ctx_of(c.path());
    let mut o = op(&["."], "/app");
    o.excludes = vec!["*.txt".into(), "app/src/lib".into(), "**/*.log".into()];
    let (up, _) = run(&o, CopySource::Context(&ctx), &empty());
    let t = tree(up.path());
    assert!(
        !t.iter().any(|p| p.ends_with(".log") || p == "app/f.txt"),
        "{t:?}"
    );
    assert!(t.contains(&"app/dir/a.txt".to_string()), "{t:?}");
    assert!(!t.contains(&"app/app/src/lib".to_string()), "{t:?}");
    assert!(t.contains(&"app/app/src/main.rs".to_string()), "{t:?}");
    // Relative to the matched directory, with an exception re-including a file.
    let mut o = op(&["dir"], "/d/");
    o.excludes = vec!["sub".into(), "!sub/b.txt".into(), "a.txt".into()];
    let (up, _) = run(&o, CopySource::Context(&ctx), &empty());
    assert_eq!(
        tree(up.path()),
        ["d", "d/debug.log", "d/rel-link", "d/sub", "d/sub/b.txt"]
    );
    // Everything excluded: the destination directory is still made.
    let mut o = op(&["dir*"], "/all");
    o.excludes = vec!["*".into()];
    let (up, _) = run(&o, CopySource::Context(&ctx), &empty());
    assert_eq!(tree(up.path()), ["all"]);
}

#[test]
fn copy_from_a_layered_view() {
    let top = tempfile::tempdir().unwrap();
    let low = tempfile::tempdir().unwrap();
    write(low.path(), "out/sub/foo", "data");
    write(low.path(), "out/sub/gone", "deleted later");
    write(low.path(), "out/old/x", "hidden by opaque");
    fs::hard_link(
        low.path().join("out/sub/foo"),
        low.path().join("out/sub/foo-link"),
    )
    .unwrap();
    rustix::fs::chown(
        low.path().join("out/sub/foo").as_path(),
        Some(rustix::fs::Uid::from_raw(100)),
        Some(rustix::fs::Gid::from_raw(200)),
    )
    .unwrap();
    symlink("/out/sub", low.path().join("sub")).unwrap();
    whiteout(top.path(), "out/sub/gone");
    opaque(top.path(), "out/old");
    write(top.path(), "out/old/new", "n");
    let stage = LayeredView::new(vec![top.path().into(), low.path().into()]);
    // Through an absolute symlink of the stage, owners kept.
    let (up, _) = run(&op(&["/sub/foo"], "/"), CopySource::View(&stage), &empty());
    assert_eq!(read(&up, "foo"), "data");
    assert_eq!((md(&up, "foo").uid(), md(&up, "foo").gid()), (100, 200));
    // Whiteouts and opaque directories of the source are respected; hard links kept.
    let (up, st) = run(&op(&["/out"], "/copy"), CopySource::View(&stage), &empty());
    assert_eq!(
        tree(up.path()),
        [
            "copy",
            "copy/old",
            "copy/old/new",
            "copy/sub",
            "copy/sub/foo",
            "copy/sub/foo-link"
        ]
    );
    assert_eq!(
        md(&up, "copy/sub/foo").ino(),
        md(&up, "copy/sub/foo-link").ino()
    );
    assert_eq!(st, CopyStats { files: 3, bytes: 5 });
    // The overlay xattr of the source's opaque directory is not copied.
    let mut buf = [0u8; 4];
    assert!(rustix::fs::lgetxattr(
        up.path().join("copy/old"),
        "trusted.overlay.opaque",
        &mut buf
    )
    .is_err());
    // The created destination is root's even though the source dir is not.
    assert_eq!(md(&up, "copy").uid(), 0);
}

#[test]
fn heredoc_sources() {
    let mut o = op(&[], "/etc/motd");
    o.inline = vec![("EOF".into(), b"hello\n".to_vec())];
    let (up, st) = run(&o, CopySource::View(&empty()), &empty());
    assert_eq!(read(&up, "etc/motd"), "hello\n");
    assert_eq!(md(&up, "etc/motd").mode() & 0o7777, 0o644);
    assert_eq!(st, CopyStats { files: 1, bytes: 6 });
    let mut o = op(&[], "/scripts/");
    o.inline = vec![
        ("run.sh".into(), b"#!/bin/sh\n".to_vec()),
        ("b".into(), b"x".to_vec()),
    ];
    o.chmod = Some("755".into());
    let (up, _) = run(&o, CopySource::View(&empty()), &empty());
    assert_eq!(tree(up.path()), ["scripts", "scripts/b", "scripts/run.sh"]);
    assert_eq!(md(&up, "scripts/run.sh").mode() & 0o7777, 0o755);
}

/// A tar with a directory, a file, a symlink and a hard link.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_uid(5);
    h.set_gid(6);
    h.set_mtime(1_500_000_000);
    h.set_size(0);
    b.append_data(&mut h, "pkg/", io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_uid(5);
    h.set_gid(6);
    h.set_mtime(1_500_000_000);
    h.set_size(4);
    b.append_data(&mut h, "pkg/bin/tool", &b"tool"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "pkg/latest", "bin/tool").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_mode(0o755);
    b.append_link(&mut h, "pkg/tool-hard", "pkg/bin/tool")
        .unwrap();
    b.into_inner().unwrap()
}

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e =
                lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::default()).unwrap();
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zst" => zstd::encode_all(data, 1).unwrap(),
        _ => data.to_vec(),
    }
}

#[test]
fn add_extracts_local_archives() {
    let tar = sample_tar();
    for kind in ["tar", "gz", "bz2", "xz", "zst"] {
        let c = tempfile::tempdir().unwrap();
        let name = format!("a.{kind}");
        fs::write(c.path().join(&name), compress(kind, &tar)).unwrap();
        let ctx = ctx_of(c.path());
        let mut o = op(&[&name], "/opt");
        o.is_add = true;
        let (up, st) = run(&o, CopySource::Context(&ctx), &empty());
        assert_eq!(
            tree(up.path()),
            [
                "opt",
                "opt/pkg",
                "opt/pkg/bin",
                "opt/pkg/bin/tool",
                "opt/pkg/latest",
                "opt/pkg/tool-hard"
            ],
            "{kind}"
        );
        assert_eq!(read(&up, "opt/pkg/bin/tool"), "tool");
        let m = md(&up, "opt/pkg");
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
            (0o750, 5, 6, 1_500_000_000)
        );
        // The implied parent `pkg/bin` is made 0755 by root.
        let m = md(&up, "opt/pkg/bin");
        assert_eq!((m.mode() & 0o7777, m.uid()), (0o755, 0));
        assert_eq!(
            md(&up, "opt/pkg/tool-hard").ino(),
            md(&up, "opt/pkg/bin/tool").ino()
        );
        assert_eq!(
            fs::read_link(up.path().join("opt/pkg/latest")).unwrap(),
            Path::new("bin/tool")
        );
        assert_eq!(st, CopyStats { files: 3, bytes: 4 });
    }
    let c = tempfile::tempdir().unwrap();
    fs::write(c.path().join("a.tar.gz"), compress("gz", &tar)).unwrap();
    write(c.path(), "plain.gz", "");
    fs::write(
        c.path().join("notatar.gz"),
        compress("gz", b"just text, no tar here"),
    )
    .unwrap();
    let ctx = ctx_of(c.path());
    // --chown applies to the extracted entries.
    let mut o = op(&["a.tar.gz"], "/");
    o.is_add = true;
    o.chown = Some("33:44".into());
    let (up, _) = run(&o, CopySource::Context(&ctx), &empty());
    assert_eq!(
        (md(&up, "pkg/bin/tool").uid(), md(&up, "pkg/bin/tool").gid()),
        (33, 44)
    );
    // Not archives: copied as they are.
    let mut o = op(&["plain.gz", "notatar.gz"], "/f/");
    o.is_add = true;
    let (up, _) = run(&o, CopySource::Context(&ctx), &empty());
    assert_eq!(tree(up.path()), ["f", "f/notatar.gz", "f/plain.gz"]);
    // COPY, and ADD --unpack=false, copy the archive itself.
    let (up, _) = run(
        &op(&["a.tar.gz"], "/c/"),
        CopySource::Context(&ctx),
        &empty(),
    );
    assert_eq!(tree(up.path()), ["c", "c/a.tar.gz"]);
    let mut o = op(&["a.tar.gz"], "/c/");
    o.is_add = true;
    o.unpack = Some(false);
    let (up, _) = run(&o, CopySource::Context(&ctx), &empty());
    assert_eq!(tree(up.path()), ["c", "c/a.tar.gz"]);
}

#[test]
fn add_archive_through_absolute_symlink_and_refuses_escapes() {
    // BuildKit's testDockerfileAddArchiveThroughAbsoluteSymlink: `var/run -> /run`.
    let low = tempfile::tempdir().unwrap();
    fs::create_dir_all(low.path().join("run")).unwrap();
    fs::create_dir_all(low.path().join("var")).unwrap();
    symlink("/run", low.path().join("var/run")).unwrap();
    let parent = LayeredView::new(vec![low.path().into()]);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, "var/run/act/", io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(4);
    b.append_data(&mut h, "var/run/act/HEAD", &b"head"[..])
        .unwrap();
    let c = tempfile::tempdir().unwrap();
    fs::write(c.path().join("p.tar"), b.into_inner().unwrap()).unwrap();
    let ctx = ctx_of(c.path());
    let mut o = op(&["p.tar"], "/");
    o.is_add = true;
    let (up, _) = run(&o, CopySource::Context(&ctx), &parent);
    assert_eq!(read(&up, "run/act/HEAD"), "head");
    assert!(!up.path().join("var").exists());

    // `../` names are refused and nothing outside is written.
    let mut raw = tar::Header::new_old();
    raw.as_old_mut().name[..9].copy_from_slice(b"../escape");
    raw.set_mode(0o644);
    raw.set_size(1);
    raw.set_cksum();
    let mut bytes = raw.as_bytes().to_vec();
    bytes.extend_from_slice(b"x");
    bytes.resize(1024, 0);
    bytes.extend_from_slice(&[0u8; 1024]);
    fs::write(c.path().join("evil.tar"), bytes).unwrap();
    let ctx = ctx_of(c.path());
    let mut o = op(&["evil.tar"], "/sub/");
    o.is_add = true;
    let up2 = tempfile::tempdir().unwrap();
    let e2 = copy(&o, CopySource::Context(&ctx), &empty(), up2.path()).unwrap_err();
    assert!(e2.to_string().contains("leaves the destination"), "{e2}");
    assert!(!up2.path().join("escape").exists());
}

/// Serves one canned answer per connection on 127.0.0.1, for `n` connections.
fn serve(answers: Vec<Vec<u8>>) -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for answer in answers {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut buf = [0u8; 4096];
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(&answer);
        }
    });
    (format!("http://{addr}"), h)
}

fn http_ok(body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn add_downloads_urls_with_checksums() {
    let body = b"downloaded content";
    let good = format!("sha256:{}", Digest::of(body).hex());
    let bad = format!("sha256:{}", "0".repeat(64));
    let tar = compress("gz", &sample_tar());
    let (base, server) = serve(vec![
        http_ok(body, "Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
        http_ok(body, ""),
        http_ok(&tar, ""),
        http_ok(&tar, ""),
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
    ]);
    let ctx = ctx_of(tempfile::tempdir().unwrap().path());
    let url = format!("{base}/files/tool.bin?x=1");

    let mut o = op(&[&url], "/dl/");
    o.is_add = true;
    o.checksum = Some(good.clone());
    let (up, st) = run(&o, CopySource::Context(&ctx), &empty());
    assert_eq!(read(&up, "dl/tool.bin"), "downloaded content");
    let m = md(&up, "dl/tool.bin");
    assert_eq!(
        (m.mode() & 0o7777, m.mtime(), m.uid()),
        (0o600, 784111777, 0)
    );
    assert_eq!(
        st,
        CopyStats {
            files: 1,
            bytes: body.len() as u64
        }
    );

    o.checksum = Some(bad.clone());
    let e = run_err(&o, CopySource::Context(&ctx), &empty());
    assert_eq!(
        e.to_string(),
        format!("digest mismatch for {url}: expected {bad}, got {good}")
    );

    // A downloaded archive is not unpacked unless --unpack says so.
    let turl = format!("{base}/t.tar.gz");
    let mut o = op(&[&turl], "/t");
    o.is_add = true;
    let (up, _) = run(&o, CopySource::Context(&ctx), &empty());
    assert_eq!(tree(up.path()), ["t"]);
    // Without Last-Modified the file gets the Unix epoch, as in BuildKit.
    assert_eq!(md(&up, "t").mtime(), 0);
    o.unpack = Some(true);
    let (up, _) = run(&o, CopySource::Context(&ctx), &empty());
    assert_eq!(read(&up, "t/pkg/bin/tool"), "tool");

    let mut o = op(&[&format!("{base}/missing")], "/");
    o.is_add = true;
    let e = run_err(&o, CopySource::Context(&ctx), &empty());
    assert!(e.to_string().contains("404"), "{e}");
    server.join().unwrap();

    // Flag checks from the frontend.
    let mut o = op(&[&url], "/");
    assert_eq!(
        run_err(&o, CopySource::Context(&ctx), &empty()).to_string(),
        "source can't be a URL for COPY"
    );
    o.is_add = true;
    o.checksum = Some("sha256:xyz".into());
    assert!(run_err(&o, CopySource::Context(&ctx), &empty())
        .to_string()
        .contains("invalid checksum"));
    let mut o = op(&["f"], "/");
    o.is_add = true;
    o.checksum = Some(good);
    assert_eq!(
        run_err(&o, CopySource::Context(&ctx), &empty()).to_string(),
        "checksum requires HTTP(S) or Git sources"
    );
}

#[test]
fn upper_becomes_the_expected_layer() {
    use kiln_oci::layer::{write_layer, DiffKind, LayerOptions};
    let c = sample_context();
    let ctx = ctx_of(c.path());
    let low = tempfile::tempdir().unwrap();
    write(low.path(), "app/old.txt", "old");
    fs::set_permissions(low.path().join("app"), fs::Permissions::from_mode(0o700)).unwrap();
    let parent = LayeredView::new(vec![low.path().into()]);
    let mut o = op(&["dir/sub", "f.txt"], "/app/");
    o.chown = Some("10:20".into());
    let (up, _) = run(&o, CopySource::Context(&ctx), &parent);
    let mut blob = Vec::new();
    write_layer(
        up.path(),
        DiffKind::OverlayUpper,
        &LayerOptions::default(),
        &mut blob,
    )
    .unwrap();
    let mut dec = flate2::read::GzDecoder::new(&blob[..]);
    let mut tar_bytes = Vec::new();
    dec.read_to_end(&mut tar_bytes).unwrap();
    let mut ar = tar::Archive::new(&tar_bytes[..]);
    let entries: Vec<(String, u32, u64, u64)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                h.mode().unwrap() & 0o7777,
                h.uid().unwrap(),
                h.gid().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("app/".to_string(), 0o700, 0, 0),
            ("app/b.txt".to_string(), 0o644, 10, 20),
            ("app/f.txt".to_string(), 0o644, 10, 20),
        ]
    );
}

#[test]
fn context_digest_covers_exactly_what_is_copied() {
    let c = sample_context();
    let digest = |o: &CopyOp| {
        let ctx = ctx_of(c.path());
        let d = kiln_builder::internal::hash_context(&ctx, None).unwrap();
        context_sources_digest(o, &ctx, &d).unwrap()
    };
    let mut o = op(&["dir"], "/d");
    o.excludes = vec!["*.log".into()];
    let before = digest(&o);
    let plain_before = digest(&op(&["dir"], "/d"));
    // An excluded file changes: same key; the unexcluded key changes.
    write(c.path(), "dir/debug.log", "changed");
    assert_eq!(digest(&o), before);
    assert_ne!(digest(&op(&["dir"], "/d")), plain_before);
    // A file outside the sources changes: same key.
    write(c.path(), "g.txt", "other");
    assert_eq!(digest(&o), before);
    // A copied file changes: new key.
    write(c.path(), "dir/a.txt", "A2");
    assert_ne!(digest(&o), before);
    // Wildcards, --parents and missing paths.
    let w = digest(&op(&["*.txt"], "/"));
    write(c.path(), "h.txt", "new match");
    assert_ne!(digest(&op(&["*.txt"], "/")), w);
    let ctx = ctx_of(c.path());
    let d = kiln_builder::internal::hash_context(&ctx, None).unwrap();
    assert!(matches!(
        context_sources_digest(&op(&["nope"], "/"), &ctx, &d),
        Err(CopyError::NotFound(_))
    ));
}

#[test]
fn workdir_creates_only_what_is_missing() {
    let low = tempfile::tempdir().unwrap();
    fs::create_dir_all(low.path().join("srv/data")).unwrap();
    fs::set_permissions(low.path().join("srv"), fs::Permissions::from_mode(0o700)).unwrap();
    set_times_at(&low.path().join("srv"), Times::at(1_234_567)).unwrap();
    symlink("/srv", low.path().join("link")).unwrap();
    let parent = LayeredView::new(vec![low.path().into()]);
    let up = tempfile::tempdir().unwrap();
    assert!(!make_workdir(&parent, up.path(), "/srv/data", (0, 0)).unwrap());
    assert!(tree(up.path()).is_empty());
    let up = tempfile::tempdir().unwrap();
    assert!(make_workdir(&parent, up.path(), "/link/app/./x/", (1000, 1000)).unwrap());
    assert_eq!(tree(up.path()), ["srv", "srv/app", "srv/app/x"]);
    let m = md(&up, "srv");
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.mtime()),
        (0o700, 0, 1_234_567)
    );
    let m = md(&up, "srv/app/x");
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 1000, 1000));
    let file = tempfile::tempdir().unwrap();
    write(file.path(), "f", "x");
    let parent = LayeredView::new(vec![file.path().into()]);
    let up = tempfile::tempdir().unwrap();
    let e = make_workdir(&parent, up.path(), "/f/sub", (0, 0)).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
}

#[test]
fn copy_from_an_empty_stage() {
    let (up, st) = run(&op(&["/"], "/x"), CopySource::View(&empty()), &empty());
    assert_eq!(tree(up.path()), ["x"]);
    assert_eq!(st, CopyStats::default());
    let e = run_err(
        &op(&["/bin/sh"], "/x"),
        CopySource::View(&empty()),
        &empty(),
    );
    assert_eq!(e.to_string(), "\"/bin/sh\": not found");
    // The cache key of such a copy can be computed too.
    let a = view_sources_digest(&op(&["/"], "/x"), &empty()).unwrap();
    assert_eq!(a, view_sources_digest(&op(&["/"], "/x"), &empty()).unwrap());
    assert!(matches!(
        view_sources_digest(&op(&["/bin/sh"], "/x"), &empty()),
        Err(CopyError::NotFound(_))
    ));
}

#[test]
fn many_files_hard_links_and_set_id_bits() {
    let c = tempfile::tempdir().unwrap();
    for i in 0..300 {
        write(
            c.path(),
            &format!("big/d{}/f{i}.txt", i % 9),
            &format!("content {i}"),
        );
    }
    for i in 0..20 {
        fs::hard_link(
            c.path().join(format!("big/d{}/f{i}.txt", i % 9)),
            c.path().join(format!("big/hl{i}")),
        )
        .unwrap();
        symlink(format!("d0/f{i}.txt"), c.path().join(format!("big/sl{i}"))).unwrap();
    }
    fs::set_permissions(
        c.path().join("big/d3/f3.txt"),
        fs::Permissions::from_mode(0o4711),
    )
    .unwrap();
    let ctx = ctx_of(c.path());
    let mut o = op(&["big"], "/out/");
    o.chown = Some("5:6".into());
    let (up, st) = run(&o, CopySource::Context(&ctx), &empty());
    assert_eq!(st.files, 340);
    let expected_bytes: u64 = (0..300).map(|i| format!("content {i}").len() as u64).sum();
    assert_eq!(st.bytes, expected_bytes);
    for i in 0..300 {
        let p = format!("out/d{}/f{i}.txt", i % 9);
        assert_eq!(read(&up, &p), format!("content {i}"));
        let m = md(&up, &p);
        assert_eq!((m.uid(), m.gid()), (5, 6), "{p}");
    }
    for i in 0..20 {
        let first = md(&up, &format!("out/d{}/f{i}.txt", i % 9));
        assert_eq!(md(&up, &format!("out/hl{i}")).ino(), first.ino());
        assert!(md(&up, &format!("out/sl{i}")).file_type().is_symlink());
    }
    // The set-uid bit survives the chown (owner first, then mode).
    assert_eq!(md(&up, "out/d3/f3.txt").mode() & 0o7777, 0o4711);
    // Times of copied directories are the source's, set after their files.
    let src = fs::metadata(c.path().join("big/d4")).unwrap();
    assert_eq!(md(&up, "out/d4").mtime(), src.mtime());

    // A file that vanished after the context was read: an error naming it.
    fs::remove_file(c.path().join("big/d5/f50.txt")).unwrap();
    let e = run_err(&op(&["big"], "/out/"), CopySource::Context(&ctx), &empty());
    assert!(e.to_string().starts_with("/big/d5/f50.txt: "), "{e}");
}

#[test]
fn view_digest_covers_exactly_what_is_copied() {
    let low = tempfile::tempdir().unwrap();
    write(low.path(), "app/bin/tool", "v1");
    write(low.path(), "app/notes.md", "n");
    write(low.path(), "other", "o");
    let view = LayeredView::new(vec![low.path().into()]);
    let mut o = op(&["/app"], "/dst");
    o.excludes = vec!["*.md".into()];
    let before = view_sources_digest(&o, &view).unwrap();
    write(low.path(), "app/notes.md", "changed");
    write(low.path(), "other", "changed");
    assert_eq!(view_sources_digest(&o, &view).unwrap(), before);
    write(low.path(), "app/bin/tool", "v2");
    let changed = view_sources_digest(&o, &view).unwrap();
    assert_ne!(changed, before);
    rustix::fs::chown(
        low.path().join("app/bin/tool").as_path(),
        Some(rustix::fs::Uid::from_raw(3)),
        None,
    )
    .unwrap();
    assert_ne!(view_sources_digest(&o, &view).unwrap(), changed);
}

/// A unix socket is copied as an empty regular file with the socket's mode,
/// from the build context and from a stage alike, by COPY and by ADD: what
/// BuildKit does (fsutil sends a context socket as a regular file without
/// content, and its copy makes a socket into such a "stub").
#[test]
fn sockets_become_empty_files_with_their_mode() {
    let ctx_dir = tempfile::tempdir().unwrap();
    let stage_dir = tempfile::tempdir().unwrap();
    for dir in [ctx_dir.path(), stage_dir.path()] {
        write(dir, "d/f", "x");
        let _listener = std::os::unix::net::UnixListener::bind(dir.join("d/sock")).unwrap();
        fs::set_permissions(dir.join("d/sock"), fs::Permissions::from_mode(0o751)).unwrap();
        rustix::fs::chown(
            dir.join("d/sock").as_path(),
            Some(rustix::fs::Uid::from_raw(7)),
            Some(rustix::fs::Gid::from_raw(8)),
        )
        .unwrap();
    }
    let ctx = ctx_of(ctx_dir.path());
    let stage = LayeredView::new(vec![stage_dir.path().into()]);
    let sources = [
        (CopySource::Context(&ctx), (0, 0)),
        (CopySource::View(&stage), (7, 8)),
    ];
    for (source, owner) in sources {
        for is_add in [false, true] {
            for (src, dest, at) in [("d", "/out/", "out/sock"), ("d/sock", "/s", "s")] {
                let mut o = op(&[src], dest);
                o.is_add = is_add;
                let (up, st) = run(&o, source, &empty());
                let m = md(&up, at);
                assert!(m.file_type().is_file(), "{src} (ADD: {is_add}): {m:?}");
                assert_eq!((m.len(), m.mode() & 0o7777), (0, 0o751), "{src}");
                assert_eq!((m.uid(), m.gid()), owner, "{src}");
                assert_eq!(st.bytes, if src == "d" { 1 } else { 0 });
            }
        }
    }
}

/// Names that are not UTF-8 are copied with their exact bytes: from the
/// context (`COPY .`, a glob), from a stage, out of an archive (ADD), and
/// into the layer's tar (a PAX `path` record holds the bytes, as Go's
/// archive/tar writes them). One that `.dockerignore` excludes is not read.
#[test]
fn names_that_are_not_utf8_keep_their_bytes() {
    use kiln_oci::layer::{write_layer, DiffKind, LayerOptions};
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let raw = |root: &Path, b: &[u8]| root.join(OsStr::from_bytes(b));
    let c = tempfile::tempdir().unwrap();
    fs::create_dir(raw(c.path(), b"d\xe9")).unwrap();
    fs::write(raw(c.path(), b"d\xe9/caf\xe9"), "latin-1").unwrap();
    fs::write(raw(c.path(), b"skip\xff"), "excluded").unwrap();
    symlink(OsStr::from_bytes(b"d\xe9/caf\xe9"), raw(c.path(), b"l\xfe")).unwrap();
    write(c.path(), ".dockerignore", "skip*\n");
    let ctx = Context::load_with_ignore_file(c.path(), None).unwrap();
    let digests = kiln_builder::internal::hash_context(&ctx, None).unwrap();
    assert_eq!(digests.digests.len(), ctx.entries.len());

    let (up, _) = run(&op(&["."], "/out/"), CopySource::Context(&ctx), &empty());
    assert_eq!(
        fs::read_to_string(raw(up.path(), b"out/d\xe9/caf\xe9")).unwrap(),
        "latin-1"
    );
    assert_eq!(
        fs::read_link(raw(up.path(), b"out/l\xfe"))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"d\xe9/caf\xe9"
    );
    assert!(!raw(up.path(), b"out/skip\xff").exists());
    // A glob matches the odd byte as one character.
    let (up2, _) = run(&op(&["d?/*"], "/g/"), CopySource::Context(&ctx), &empty());
    assert!(raw(up2.path(), b"g/caf\xe9").exists());

    // The layer holds the exact bytes.
    let mut blob = Vec::new();
    write_layer(
        up.path(),
        DiffKind::OverlayUpper,
        &LayerOptions::default(),
        &mut blob,
    )
    .unwrap();
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let mut ar = tar::Archive::new(&tar_bytes[..]);
    let names: Vec<(Vec<u8>, Option<Vec<u8>>)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let link = e.link_name_bytes().map(|l| l.into_owned());
            (e.path_bytes().into_owned(), link)
        })
        .collect();
    let want: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![
        (b"out/".to_vec(), None),
        (b"out/.dockerignore".to_vec(), None),
        (b"out/d\xe9/".to_vec(), None),
        (b"out/d\xe9/caf\xe9".to_vec(), None),
        (b"out/l\xfe".to_vec(), Some(b"d\xe9/caf\xe9".to_vec())),
    ];
    assert_eq!(names, want);

    // From a stage, through its odd directory name.
    let stage = LayeredView::new(vec![c.path().into()]);
    let (up, _) = run(&op(&["/d*"], "/s/"), CopySource::View(&stage), &empty());
    assert!(raw(up.path(), b"s/caf\xe9").exists());

    // ADD of an archive whose entries have such names.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(1);
    b.append_data(&mut h, Path::new(OsStr::from_bytes(b"x\xe9")), &b"1"[..])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, "link", Path::new(OsStr::from_bytes(b"x\xe9")))
        .unwrap();
    let a = tempfile::tempdir().unwrap();
    fs::write(a.path().join("a.tar"), b.into_inner().unwrap()).unwrap();
    let actx = ctx_of(a.path());
    let mut o = op(&["a.tar"], "/x/");
    o.is_add = true;
    let (up, _) = run(&o, CopySource::Context(&actx), &empty());
    assert_eq!(fs::read(raw(up.path(), b"x/x\xe9")).unwrap(), b"1");
    assert_eq!(
        fs::read_link(up.path().join("x/link"))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"x\xe9"
    );
}
