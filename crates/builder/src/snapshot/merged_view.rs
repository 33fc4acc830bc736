//! A read-only merged view of a stack of snapshot directories in overlayfs upperdir
//! format, the way the kernel's overlayfs would show them, without mounting.
//!
//! - Layers are given top first (the order of overlay `lowerdir=`).
//! - A 0/0 character device is a whiteout: the name is deleted, lower layers'
//!   entries of that name are hidden.
//! - A directory carrying the xattr `trusted.overlay.opaque=y` (or
//!   `user.overlay.opaque=y`) is opaque: lower layers' contents of that directory
//!   are hidden.
//! - A directory merges with the directories of the same path below it, until an
//!   opaque one or a non-directory; a non-directory hides everything below it.
//!
//! Paths are resolved like in a chroot (containerd continuity's `fs.RootPath`, as
//! BuildKit uses it): symlinks met on the way are followed inside the view, an
//! absolute target starts again at the view's root, `..` never climbs above the
//! root, and components that do not exist are taken literally.
//!
//! In-view paths are `String`s; names that are not UTF-8 are carried as
//! [`crate::names`] encodes them.

use crate::names;
use kiln_oci::layer::overlay::{is_opaque_dir, is_whiteout};
use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The passwd/group files are read up to this size, as BuildKit does.
const MAX_USER_FILE: u64 = 10 << 20;

/// Why a user database file of a view could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UserFileError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not a regular file")]
    NotRegular(String),
    #[error("{0} exceeds {MAX_USER_FILE} bytes")]
    TooLarge(String),
}

/// How many symlinks one resolution may follow before failing with `ELOOP`
/// (continuity uses 255).
const MAX_SYMLINKS: usize = 255;

/// One visible file in a [`LayeredView`].
#[derive(Debug, Clone)]
pub struct ViewEntry {
    /// The resolved absolute path inside the view (`/` for the root), without
    /// symlinks in any component but (when not following) the last.
    pub path: String,
    /// Where the visible file really is.
    pub host_path: PathBuf,
    /// `lstat` of `host_path`.
    pub metadata: Metadata,
    /// Index of the layer (top = 0) the visible file comes from.
    pub layer: usize,
}

impl ViewEntry {
    pub fn is_dir(&self) -> bool {
        self.metadata.is_dir()
    }
    pub fn is_symlink(&self) -> bool {
        self.metadata.file_type().is_symlink()
    }
}

/// The same path in each layer that contributes to it, top first: one entry for a
/// non-directory, one or more merged directories otherwise; empty when the path is
/// not visible.
type Stack = Vec<Hit>;

#[derive(Debug, Clone)]
struct Hit {
    layer: usize,
    host: PathBuf,
    md: Metadata,
}

/// A read-only merged view of overlay-format layer directories (top first).
#[derive(Debug, Clone, Default)]
pub struct LayeredView {
    layers: Vec<PathBuf>,
}

/// `lstat`, with "does not exist" (also through a non-directory) as `None`.
fn lstat_opt(p: &Path) -> io::Result<Option<Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(md) => Ok(Some(md)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc_enotdir()) =>
        {
            Ok(None)
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
    }
}

fn libc_enotdir() -> i32 {
    rustix::io::Errno::NOTDIR.raw_os_error()
}

/// Splits an in-view path into its normal components (`.` and empty dropped; `..`
/// kept for the resolver).
fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// Joins resolved components into an absolute in-view path.
pub(crate) fn join_abs(comps: &[String]) -> String {
    if comps.is_empty() {
        "/".to_string()
    } else {
        let mut s = String::new();
        for c in comps {
            s.push('/');
            s.push_str(c);
        }
        s
    }
}

/// Resolves `path` the way continuity's `fs.RootPath` does, given a way to read a
/// symlink at an already-resolved path (`Ok(None)` when the path is not a symlink or
/// does not exist). Returns the resolved components.
pub(crate) fn resolve_with(
    path: &str,
    follow_last: bool,
    mut read_link: impl FnMut(&[String]) -> io::Result<Option<String>>,
) -> io::Result<Vec<String>> {
    let mut queue: VecDeque<String> = components(path).map(str::to_string).collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut followed = 0usize;
    while let Some(c) = queue.pop_front() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let last = queue.is_empty();
        resolved.push(c);
        if last && !follow_last {
            break;
        }
        if let Some(target) = read_link(&resolved)? {
            followed += 1;
            if followed > MAX_SYMLINKS {
                return Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::LOOP.raw_os_error(),
                ));
            }
            resolved.pop();
            if target.starts_with('/') {
                resolved.clear();
            }
            for t in components(&target).collect::<Vec<_>>().into_iter().rev() {
                queue.push_front(t.to_string());
            }
        }
    }
    Ok(resolved)
}

impl LayeredView {
    /// A view of `layers`, top first. No layers: an empty filesystem (just `/`).
    pub fn new(layers: Vec<PathBuf>) -> Self {
        LayeredView { layers }
    }

    /// The layer directories, top first.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// This view with `top` stacked above its layers.
    pub fn with_top(&self, top: PathBuf) -> LayeredView {
        let mut layers = Vec::with_capacity(self.layers.len() + 1);
        layers.push(top);
        layers.extend(self.layers.iter().cloned());
        LayeredView { layers }
    }

    fn root_stack(&self) -> io::Result<Stack> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let md = fs::symlink_metadata(l)
                .map_err(|e| io::Error::new(e.kind(), format!("layer {}: {e}", l.display())))?;
            if !md.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("layer {} is not a directory", l.display()),
                ));
            }
            let opaque = i + 1 < self.layers.len() && is_opaque_dir(l)?;
            out.push(Hit {
                layer: i,
                host: l.clone(),
                md,
            });
            if opaque {
                break;
            }
        }
        Ok(out)
    }

    /// The stack of `name` inside the directory whose stack is `parent`.
    fn child_stack(parent: &[Hit], name: &OsStr) -> io::Result<Stack> {
        let mut out: Stack = Vec::new();
        for (i, h) in parent.iter().enumerate() {
            if !h.md.is_dir() {
                break;
            }
            let p = h.host.join(name);
            let Some(md) = lstat_opt(&p)? else { continue };
            if is_whiteout(&md) {
                break;
            }
            if md.is_dir() {
                // Opaqueness only matters when a lower layer could add to it.
                let opaque = i + 1 < parent.len() && is_opaque_dir(&p)?;
                out.push(Hit {
                    layer: h.layer,
                    host: p,
                    md,
                });
                if opaque {
                    break;
                }
            } else {
                if out.is_empty() {
                    out.push(Hit {
                        layer: h.layer,
                        host: p,
                        md,
                    });
                }
                break;
            }
        }
        Ok(out)
    }

    /// Resolves `path` inside the view (see the module doc) to an absolute in-view
    /// path. Components that do not exist are kept literally.
    pub fn resolve(&self, path: &str, follow_last_symlink: bool) -> io::Result<String> {
        Ok(join_abs(&self.resolve_comps(path, follow_last_symlink)?))
    }

    fn resolve_comps(&self, path: &str, follow_last: bool) -> io::Result<Vec<String>> {
        Ok(self.resolve_stack(path, follow_last)?.0)
    }

    /// Resolves `path` (see [`Self::resolve`]) and returns its components with the
    /// stack of the file they name. Each component's stack is derived from its
    /// parent's, so a lookup costs one `lstat` per layer holding each directory
    /// on the way, not a walk from the root per component.
    fn resolve_stack(&self, path: &str, follow_last: bool) -> io::Result<(Vec<String>, Stack)> {
        let mut queue: VecDeque<String> = components(path).map(str::to_string).collect();
        let mut comps: Vec<String> = Vec::new();
        // stacks[i] is the stack of comps[..i].
        let mut stacks: Vec<Stack> = vec![self.root_stack()?];
        let mut followed = 0usize;
        while let Some(c) = queue.pop_front() {
            if c == ".." {
                if !comps.is_empty() {
                    comps.pop();
                    stacks.pop();
                }
                continue;
            }
            let last = queue.is_empty();
            let parent = stacks.last().map(Vec::as_slice).unwrap_or_default();
            let st = Self::child_stack(parent, OsStr::from_bytes(&names::decode(&c)))?;
            let is_link = st.first().is_some_and(|h| h.md.file_type().is_symlink());
            if is_link && (follow_last || !last) {
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(
                        rustix::io::Errno::LOOP.raw_os_error(),
                    ));
                }
                let host = &st[0].host;
                let t = fs::read_link(host)?;
                let target = names::encode_os(t.as_os_str());
                if target.starts_with('/') {
                    comps.clear();
                    stacks.truncate(1);
                }
                for t in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    queue.push_front(t.to_string());
                }
                continue;
            }
            comps.push(c);
            stacks.push(st);
        }
        let st = stacks.pop().unwrap_or_default();
        Ok((comps, st))
    }

    /// The visible file at `path`, symlinks in intermediate components resolved inside
    /// the view, the last one too when `follow_last_symlink`. `None` when nothing is
    /// visible there (also for `/` of a view without layers, which has no host path).
    pub fn lookup(&self, path: &str, follow_last_symlink: bool) -> io::Result<Option<ViewEntry>> {
        let (comps, st) = self.resolve_stack(path, follow_last_symlink)?;
        Ok(st.into_iter().next().map(|h| ViewEntry {
            path: join_abs(&comps),
            host_path: h.host,
            metadata: h.md,
            layer: h.layer,
        }))
    }

    /// The sorted names in the directory at `path` (symlinks followed), merged over
    /// the layers, without whiteouts and what they or opaque directories hide.
    pub fn read_dir(&self, path: &str) -> io::Result<Vec<String>> {
        let (comps, st) = self.resolve_stack(path, true)?;
        let shown = join_abs(&comps);
        if comps.is_empty() && self.layers.is_empty() {
            // The root of an empty filesystem is an empty directory.
            return Ok(Vec::new());
        }
        match st.first() {
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{shown}: not found"),
            )),
            Some(h) if !h.md.is_dir() => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{shown}: not a directory"),
            )),
            Some(_) => Ok(Self::merged_children(&st)?
                .into_iter()
                .map(|(name, _)| name)
                .collect()),
        }
    }

    /// The visible children of a directory stack, sorted by name, with their stacks.
    fn merged_children(st: &[Hit]) -> io::Result<Vec<(String, Stack)>> {
        let mut names = BTreeSet::new();
        for h in st {
            if !h.md.is_dir() {
                break;
            }
            let rd = fs::read_dir(&h.host)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", h.host.display())))?;
            for d in rd {
                let d = d?;
                names.insert(d.file_name());
            }
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let child = Self::child_stack(st, &name)?;
            if child.is_empty() {
                continue;
            }
            out.push((names::encode_os(&name).into_owned(), child));
        }
        Ok(out)
    }

    /// Everything visible below `path` (symlinks followed to reach it), depth first,
    /// each directory's children sorted by name, the directory before its children.
    /// `path` itself is not included; a non-directory has nothing below it.
    pub fn walk(&self, path: &str) -> io::Result<Vec<ViewEntry>> {
        let (comps, st) = self.resolve_stack(path, true)?;
        let mut out = Vec::new();
        if st.first().is_some_and(|h| h.md.is_dir()) {
            Self::walk_into(&st, &join_abs(&comps), &mut out)?;
        }
        Ok(out)
    }

    fn walk_into(st: &[Hit], dir: &str, out: &mut Vec<ViewEntry>) -> io::Result<()> {
        for (name, child) in Self::merged_children(st)? {
            let path = if dir == "/" {
                format!("/{name}")
            } else {
                format!("{dir}/{name}")
            };
            let top = &child[0];
            let is_dir = top.md.is_dir();
            out.push(ViewEntry {
                path: path.clone(),
                host_path: top.host.clone(),
                metadata: top.md.clone(),
                layer: top.layer,
            });
            if is_dir {
                Self::walk_into(&child, &path, out)?;
            }
        }
        Ok(())
    }
}

impl LayeredView {
    /// Reads a user database file (`/etc/passwd`, `/etc/group`) through the
    /// view, symlinks resolved inside it; `None` when it does not exist. Only a
    /// regular file of at most 10 MiB is read: the image decides what is there,
    /// and a FIFO or device node would be opened on the host.
    pub fn read_user_file(&self, path: &str) -> Result<Option<String>, UserFileError> {
        let io_err = |source| UserFileError::Io {
            path: path.to_string(),
            source,
        };
        let entry = match self.lookup(path, true) {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
                return Ok(None)
            }
            Err(e) => return Err(io_err(e)),
        };
        if !entry.metadata.is_file() {
            return Err(UserFileError::NotRegular(path.to_string()));
        }
        let read = || -> io::Result<Vec<u8>> {
            let mut buf = Vec::new();
            let fd = rustix::fs::open(
                &entry.host_path,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?;
            std::fs::File::from(fd)
                .take(MAX_USER_FILE + 1)
                .read_to_end(&mut buf)?;
            Ok(buf)
        };
        let buf = read().map_err(io_err)?;
        if buf.len() as u64 > MAX_USER_FILE {
            return Err(UserFileError::TooLarge(path.to_string()));
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_testkit::tree::write;
    use std::os::unix::fs::symlink;

    fn read(view: &LayeredView, p: &str, follow: bool) -> Option<String> {
        view.lookup(p, follow)
            .unwrap()
            .map(|e| fs::read_to_string(e.host_path).unwrap())
    }

    #[test]
    fn empty_view_has_only_root() {
        let v = LayeredView::new(Vec::new());
        assert!(v.lookup("/etc/passwd", true).unwrap().is_none());
        assert!(v.read_dir("/").unwrap().is_empty());
        assert!(v.walk("/").unwrap().is_empty());
        assert!(v.lookup("/", true).is_ok_and(|e| e.is_none()));
    }

    #[test]
    fn opaque_root_hides_all_lower_layers() {
        let top = tempfile::tempdir().unwrap();
        let low = tempfile::tempdir().unwrap();
        write(low.path(), "old", "o");
        write(top.path(), "new", "n");
        rustix::fs::lsetxattr(
            top.path(),
            "user.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let v = LayeredView::new(vec![top.path().into(), low.path().into()]);
        assert_eq!(v.read_dir("/").unwrap(), ["new"]);
        assert!(v.lookup("/old", true).unwrap().is_none());
    }

    #[test]
    fn non_directory_hides_lower_directory() {
        let top = tempfile::tempdir().unwrap();
        let low = tempfile::tempdir().unwrap();
        write(low.path(), "d/inner", "x");
        write(top.path(), "d", "now a file");
        let v = LayeredView::new(vec![top.path().into(), low.path().into()]);
        assert!(v.lookup("/d/inner", true).unwrap().is_none());
        assert!(!v.lookup("/d", true).unwrap().unwrap().is_dir());
        let err = v.read_dir("/d").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotADirectory);
        // A directory above a file in a lower layer hides the file.
        let top2 = tempfile::tempdir().unwrap();
        write(top2.path(), "d/new", "n");
        let v2 = LayeredView::new(vec![
            top2.path().into(),
            top.path().into(),
            low.path().into(),
        ]);
        assert_eq!(v2.read_dir("/d").unwrap(), ["new"]);
    }

    #[test]
    fn symlinks_resolve_inside_the_view() {
        let top = tempfile::tempdir().unwrap();
        let low = tempfile::tempdir().unwrap();
        write(low.path(), "out/sub/foo", "data");
        symlink("/out/sub", low.path().join("abs")).unwrap();
        symlink("out/sub", top.path().join("rel")).unwrap();
        symlink("../../../../out", top.path().join("up")).unwrap();
        symlink("/etc/passwd", top.path().join("hostfile")).unwrap();
        symlink("loop2", top.path().join("loop1")).unwrap();
        symlink("loop1", top.path().join("loop2")).unwrap();
        let v = LayeredView::new(vec![top.path().into(), low.path().into()]);
        assert_eq!(read(&v, "/abs/foo", true).as_deref(), Some("data"));
        assert_eq!(read(&v, "/rel/foo", false).as_deref(), Some("data"));
        assert_eq!(read(&v, "/up/sub/foo", true).as_deref(), Some("data"));
        assert_eq!(
            read(&v, "/out/sub/../../rel/./foo", true).as_deref(),
            Some("data")
        );
        assert_eq!(v.resolve("/abs/foo", true).unwrap(), "/out/sub/foo");
        assert_eq!(
            v.resolve("/rel/missing/x", true).unwrap(),
            "/out/sub/missing/x"
        );
        let link = v.lookup("/abs", false).unwrap().unwrap();
        assert!(link.is_symlink());
        assert_eq!(v.lookup("/abs", true).unwrap().unwrap().path, "/out/sub");
        // An absolute target never leaves the view.
        assert!(v.lookup("/hostfile", true).unwrap().is_none());
        assert_eq!(v.resolve("/hostfile", true).unwrap(), "/etc/passwd");
        let err = v.lookup("/loop1", true).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error())
        );
        assert_eq!(v.read_dir("/abs").unwrap(), ["foo"]);
        let walked: Vec<String> = v
            .walk("/rel")
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(walked, ["/out/sub/foo"]);
    }
}
