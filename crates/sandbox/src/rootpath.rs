//! Paths inside a root directory, resolved as if that directory were `/`.
//!
//! A path that comes from a Dockerfile or an image (a bind mount's source in
//! the build context or a stage, a mount target in the rootfs) must never
//! reach a file outside its root, whatever symlinks the root holds. Here it
//! is resolved the way BuildKit resolves such paths (containerd continuity's
//! `fs.RootPath`) and the kernel's `RESOLVE_IN_ROOT` does: each symlink met on
//! the way is followed *inside* the root (an absolute target starts again at
//! the root, a relative one at the symlink's directory), and `..` never climbs
//! above the root.
//!
//! The result is an `O_PATH` descriptor of the file itself, so the caller
//! mounts, stats or opens exactly what was resolved (through
//! `/proc/self/fd/N`), with no window in which a path could be swapped for a
//! symlink. `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` does the work
//! where the kernel has it (Linux ≥ 5.6); elsewhere a walk does it one
//! component at a time, each opened with `O_PATH | O_NOFOLLOW` relative to the
//! descriptor of its (already resolved) directory, symlinks read with
//! `readlinkat` and followed by hand.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The most symlinks one resolution follows before failing with `ELOOP`
/// (the kernel's own limit).
pub const MAX_SYMLINKS: usize = 40;

/// Set once `openat2` turned out to be missing (`ENOSYS`).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// How a walk treats symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Links {
    /// Followed inside the root; the last component too when `follow_last`.
    InRoot { follow_last: bool },
    /// Never followed: `ELOOP` on the way, the symlink itself as the last
    /// component; `..` may not leave the root (`EXDEV`). Like
    /// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` with `O_NOFOLLOW`.
    Refused,
}

/// Opens `dir` (a trusted host path) as the root of later resolutions.
pub fn open_root(dir: &Path) -> Result<OwnedFd, Errno> {
    rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `path` (absolute or not, both meaning "from the root") opened inside
/// `root` as an `O_PATH` descriptor, every symlink followed inside the root,
/// the last one only when `follow_last`.
pub fn open_in_root(
    root: impl AsFd,
    path: impl AsRef<Path>,
    follow_last: bool,
) -> Result<OwnedFd, Errno> {
    let root = root.as_fd();
    let path = path.as_ref();
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if !follow_last {
        flags |= OFlags::NOFOLLOW;
    }
    if let Some(r) = try_openat2(
        root,
        path,
        flags,
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        return r;
    }
    walk_open(root, path, Links::InRoot { follow_last })
}

/// `path` opened below `root` as an `O_PATH` descriptor without following
/// any symlink: one on the way is `ELOOP`, one as the last component is
/// opened itself; `..` may not leave the root (`EXDEV`). For paths kiln made
/// itself and expects unchanged.
pub fn open_beneath(root: impl AsFd, path: impl AsRef<Path>) -> Result<OwnedFd, Errno> {
    let root = root.as_fd();
    let path = path.as_ref();
    if let Some(r) = try_openat2(
        root,
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        return r;
    }
    walk_open(root, path, Links::Refused)
}

/// `path` resolved inside `root` as continuity's `fs.RootPath` does: every
/// symlink followed inside the root (the last one too), components that do
/// not exist kept as written. Returns the path relative to the root (empty for
/// the root itself), without `.`, `..` or symlinks in the existing part.
pub fn resolve_in_root(root: impl AsFd, path: impl AsRef<Path>) -> Result<PathBuf, Errno> {
    let walked = walk(
        root.as_fd(),
        path.as_ref(),
        Links::InRoot { follow_last: true },
        true,
    )?;
    Ok(walked.iter().map(|c| c.name.as_os_str()).collect())
}

/// Re-opens an `O_PATH` directory descriptor for reading its entries.
pub fn reopen_dir(dir: impl AsFd) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `openat2`, or None where the kernel lacks it (then the walk is used).
fn try_openat2(
    root: BorrowedFd<'_>,
    path: &Path,
    flags: OFlags,
    resolve: ResolveFlags,
) -> Option<Result<OwnedFd, Errno>> {
    if NO_OPENAT2.load(Ordering::Relaxed) {
        return None;
    }
    let rel = relative(path);
    // The kernel asks to retry (EAGAIN) when a rename elsewhere raced a `..`.
    for _ in 0..64 {
        match rustix::fs::openat2(root, rel, flags, Mode::empty(), resolve) {
            Err(Errno::NOSYS) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
                return None;
            }
            Err(Errno::AGAIN) => continue,
            r => return Some(r),
        }
    }
    Some(Err(Errno::AGAIN))
}

/// `path` without leading slashes; `.` for the root.
fn relative(path: &Path) -> &OsStr {
    let b = path.as_os_str().as_bytes();
    let start = b.iter().position(|&c| c != b'/').unwrap_or(b.len());
    if start == b.len() {
        OsStr::new(".")
    } else {
        OsStr::from_bytes(&b[start..])
    }
}

/// One resolved component: its name and, when it exists, its descriptor.
struct Comp {
    name: OsString,
    fd: Option<OwnedFd>,
}

fn walk_open(root: BorrowedFd<'_>, path: &Path, links: Links) -> Result<OwnedFd, Errno> {
    let mut walked = walk(root, path, links, false)?;
    match walked.pop() {
        Some(Comp { fd: Some(fd), .. }) => Ok(fd),
        Some(Comp { fd: None, .. }) => Err(Errno::NOENT),
        None => rustix::fs::openat(root, ".", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()),
    }
}

/// The walk behind both resolutions. With `missing_ok`, a component that
/// does not exist is kept by name (and everything after it), as `RootPath`
/// does; otherwise it is `ENOENT`.
fn walk(
    root: BorrowedFd<'_>,
    path: &Path,
    links: Links,
    missing_ok: bool,
) -> Result<Vec<Comp>, Errno> {
    let mut queue: VecDeque<OsString> = components(path.as_os_str().as_bytes()).collect();
    let mut resolved: Vec<Comp> = Vec::new();
    let mut followed = 0usize;
    while let Some(name) = queue.pop_front() {
        if name == ".." {
            if resolved.pop().is_none() && links == Links::Refused {
                return Err(Errno::XDEV);
            }
            continue;
        }
        let last = queue.is_empty();
        let parent = match resolved.last() {
            None => root,
            Some(Comp { fd: Some(fd), .. }) => fd.as_fd(),
            // Below a missing component everything is missing.
            Some(Comp { fd: None, .. }) => {
                resolved.push(Comp { name, fd: None });
                continue;
            }
        };
        let fd = match rustix::fs::openat(
            parent,
            &name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if missing_ok => {
                resolved.push(Comp { name, fd: None });
                continue;
            }
            Err(e) => return Err(e),
        };
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            let follow = match links {
                Links::Refused if !last => return Err(Errno::LOOP),
                Links::Refused => false,
                Links::InRoot { follow_last } => !last || follow_last,
            };
            if follow {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(Errno::LOOP);
                }
                let target = rustix::fs::readlinkat(&fd, "", Vec::new())?;
                let target = target.as_bytes();
                if target.first() == Some(&b'/') {
                    resolved.clear();
                }
                for c in components(target).collect::<Vec<_>>().into_iter().rev() {
                    queue.push_front(c);
                }
                continue;
            }
        }
        resolved.push(Comp { name, fd: Some(fd) });
    }
    Ok(resolved)
}

/// The components of a path, without empty ones and `.` (`..` kept).
fn components(path: &[u8]) -> impl Iterator<Item = OsString> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_os_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt};

    /// A root with files, and symlinks of every kind pointing out of it;
    /// `outside` holds what a host-side resolution would reach.
    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "host").unwrap();
        fs::write(root.join("etc/shadow"), "inside").unwrap();
        fs::write(root.join("a/b/file"), "file").unwrap();
        // The same absolute path inside the root as `outside/secret` on the host.
        let inside_copy = root.join(outside.strip_prefix("/").unwrap());
        fs::create_dir_all(&inside_copy).unwrap();
        fs::write(inside_copy.join("secret"), "decoy").unwrap();
        symlink("/etc/shadow", root.join("abs")).unwrap();
        symlink(outside.join("secret"), root.join("host-abs")).unwrap();
        symlink(&outside, root.join("host-dir")).unwrap();
        symlink("../../../../../../../../../etc/shadow", root.join("climb")).unwrap();
        symlink("b/file", root.join("a/rel")).unwrap();
        symlink("..", root.join("a/b/up")).unwrap();
        symlink("/a/b", root.join("ab")).unwrap();
        symlink("/nowhere/x", root.join("dangling")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        symlink("/proc/self/root", root.join("magic")).unwrap();
        Fixture {
            _tmp: tmp,
            root,
            outside,
        }
    }

    fn ino(fd: &OwnedFd) -> (u64, u64) {
        let st = rustix::fs::fstat(fd).unwrap();
        (st.st_dev, st.st_ino)
    }

    fn ino_of(p: &Path) -> (u64, u64) {
        let m = fs::symlink_metadata(p).unwrap();
        (m.dev(), m.ino())
    }

    /// Both implementations (the kernel's and the walk) give the same answer.
    fn both(f: &Fixture, path: &str, follow_last: bool) -> Result<(u64, u64), Errno> {
        let root = open_root(&f.root).unwrap();
        let kernel = rustix::fs::openat2(
            &root,
            relative(Path::new(path)),
            OFlags::PATH
                | OFlags::CLOEXEC
                | if follow_last {
                    OFlags::empty()
                } else {
                    OFlags::NOFOLLOW
                },
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .map(|fd| ino(&fd));
        let walked = walk_open(root.as_fd(), Path::new(path), Links::InRoot { follow_last })
            .map(|fd| ino(&fd));
        assert_eq!(kernel, walked, "{path} (follow_last {follow_last})");
        open_in_root(&root, path, follow_last).map(|fd| ino(&fd))
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let f = fixture();
        let r = &f.root;
        let decoy = r.join(f.outside.strip_prefix("/").unwrap()).join("secret");
        for (path, want) in [
            ("abs", r.join("etc/shadow")),
            ("/abs", r.join("etc/shadow")),
            ("climb", r.join("etc/shadow")),
            ("host-abs", decoy.clone()),
            ("host-dir/secret", decoy.clone()),
            ("a/rel", r.join("a/b/file")),
            ("a/b/up/rel", r.join("a/b/file")),
            ("ab/../b/./file", r.join("a/b/file")),
            ("../../..", r.clone()),
            ("", r.clone()),
            ("/", r.clone()),
            ("a/b/../../../etc/shadow", r.join("etc/shadow")),
        ] {
            assert_eq!(both(&f, path, true), Ok(ino_of(&want)), "{path}");
        }
        // Not following the last symlink gives the symlink itself.
        assert_eq!(both(&f, "abs", false), Ok(ino_of(&r.join("abs"))));
        assert_eq!(both(&f, "ab/file", false), Ok(ino_of(&r.join("a/b/file"))));
        assert_eq!(both(&f, "dangling", true), Err(Errno::NOENT));
        assert_eq!(both(&f, "loop1", true), Err(Errno::LOOP));
        assert_eq!(both(&f, "etc/shadow/x", true), Err(Errno::NOTDIR));
        // A symlink to /proc/self/root is no way out: it means the root's own
        // /proc, which does not exist here.
        assert_eq!(both(&f, "magic", true), Err(Errno::NOENT));
    }

    #[test]
    fn the_walk_alone_gives_the_same_results() {
        // What kernels without openat2 get.
        let f = fixture();
        let root = open_root(&f.root).unwrap();
        let decoy = f
            .root
            .join(f.outside.strip_prefix("/").unwrap())
            .join("secret");
        let walked = |p: &str| {
            walk_open(
                root.as_fd(),
                Path::new(p),
                Links::InRoot { follow_last: true },
            )
            .map(|fd| ino(&fd))
        };
        assert_eq!(walked("host-dir/secret"), Ok(ino_of(&decoy)));
        assert_eq!(walked("climb"), Ok(ino_of(&f.root.join("etc/shadow"))));
        assert_eq!(walked("loop1"), Err(Errno::LOOP));
        assert_eq!(walked("dangling"), Err(Errno::NOENT));
    }

    #[test]
    fn beneath_refuses_symlinks_and_climbing() {
        let f = fixture();
        let root = open_root(&f.root).unwrap();
        for (path, want) in [
            ("a/b/file", Ok(ino_of(&f.root.join("a/b/file")))),
            ("a/b/../b/file", Ok(ino_of(&f.root.join("a/b/file")))),
            ("ab/file", Err(Errno::LOOP)),
            ("host-dir/secret", Err(Errno::LOOP)),
            // A symlink as the last component is the symlink itself.
            ("abs", Ok(ino_of(&f.root.join("abs")))),
            ("../root/a", Err(Errno::XDEV)),
            ("a/missing", Err(Errno::NOENT)),
        ] {
            let kernel = open_beneath(&root, path).map(|fd| ino(&fd));
            let walked =
                walk_open(root.as_fd(), Path::new(path), Links::Refused).map(|fd| ino(&fd));
            assert_eq!(kernel, want, "{path}");
            assert_eq!(walked, want, "{path} (walk)");
        }
    }

    #[test]
    fn resolve_keeps_missing_components_like_root_path() {
        let f = fixture();
        let root = open_root(&f.root).unwrap();
        let host = f.outside.strip_prefix("/").unwrap();
        for (path, want) in [
            ("dangling", PathBuf::from("nowhere/x")),
            ("dangling/../y", PathBuf::from("nowhere/y")),
            ("ab/new/deeper", PathBuf::from("a/b/new/deeper")),
            ("host-dir/secret", host.join("secret")),
            ("host-dir/new", host.join("new")),
            ("/../etc", PathBuf::from("etc")),
            ("/", PathBuf::new()),
        ] {
            assert_eq!(resolve_in_root(&root, path), Ok(want), "{path}");
        }
        assert_eq!(resolve_in_root(&root, "loop1"), Err(Errno::LOOP));
        assert_eq!(resolve_in_root(&root, "etc/shadow/x"), Err(Errno::NOTDIR));
    }
}
