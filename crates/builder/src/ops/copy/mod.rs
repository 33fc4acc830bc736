//! The file system half of `COPY` and `ADD`: what gets written into a step's upper
//! snapshot directory, with BuildKit's semantics.
//!
//! Where the rules come from (read, not copied): the Dockerfile frontend
//! (`frontend/dockerfile/dockerfile2llb/convert_copy.go` `dispatchCopy`: every local
//! source is copied with `FollowSymlinks`, `CopyDirContentsOnly`, `AllowWildcard`,
//! `AllowEmptyWildcard`, `CreateDestPath`, and ADD's `AttemptUnpack`), the file op
//! backend (`solver/llbsolver/file/backend.go` `docopy`, `unpack.go`) and
//! tonistiigi/fsutil `copy/copy.go` (`Copy`, `prepareTargetDir`, `copier.copy`,
//! `MkdirAll`). In short, per source and per wildcard match:
//!
//! - the destination is `dest` joined to WORKDIR when relative, a trailing `/`
//!   kept; symlinks in it are resolved inside the step's filesystem;
//! - the directory part of the destination (all of it when it ends in `/` or `/.`)
//!   is created like `mkdir -p`, new directories getting the octal `--chmod` (else
//!   0755) and the `--chown` owner (else root);
//! - the source is followed if it is a symlink; a directory's *contents* are
//!   copied into the destination; a non-directory goes to `dest/<name>` when the
//!   destination is an existing directory, else to `dest` itself;
//! - entries keep their mode, times and xattrs; owner is `--chown` when given, else
//!   the source's (root for the build context, whose owners BuildKit's client
//!   resets: `client/solve.go` `resetUIDAndGID`); `--chmod` applies to every copied
//!   entry, directories included;
//! - below the top, a directory merges into an existing one and takes the source's
//!   metadata; a file over a directory, or a directory over a non-directory, is an
//!   error; hard links inside one source are kept;
//! - `--exclude` patterns (and `--parents` include patterns) match paths relative
//!   to the copied source, with `.dockerignore` rules.
//!
//! Nothing is mounted: reads go through [`LayeredView`]s, writes into the upper
//! directory (see [`upper`]).

pub mod chown;
mod download;
mod unpack;
pub mod upper;

use crate::names;
use crate::snapshot::merged_view::LayeredView;
use crate::source::context::{Context, FileKind};
use crate::source::dockerignore::{MatchInfo, PatternMatcher};
use crate::source::glob::{go_match, has_wildcards};
use crate::source::hash::ContextDigests;
use kiln_dockerfile::instructions::Chmod;
use kiln_oci::path::clean;
use kiln_oci::{Digest, Hasher};
use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use upper::{Meta, Times, Upper, WriteError};

/// Where a COPY reads from.
#[derive(Debug, Clone, Copy)]
pub enum CopySource<'a> {
    /// The build context (already `.dockerignore`-filtered).
    Context(&'a Context),
    /// Another stage's or image's filesystem (`COPY --from`).
    View(&'a LayeredView),
}

/// One COPY or ADD instruction, variables already expanded.
#[derive(Debug, Clone, Default)]
pub struct CopyOp {
    /// Sources as written (may be globs; for ADD http(s) URLs or local archives).
    pub sources: Vec<String>,
    /// Heredoc files (`COPY <<EOF /dst`): (name, content).
    pub inline: Vec<(String, Vec<u8>)>,
    /// Destination as written (relative to `workdir` unless absolute; may end in `/`).
    pub dest: String,
    /// The stage's WORKDIR.
    pub workdir: String,
    /// `--chown`: `user`, `user:group`, `uid:gid`.
    pub chown: Option<String>,
    /// `--chmod`: octal or symbolic.
    pub chmod: Option<String>,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// ADD (archives unpacked, URLs downloaded) rather than COPY.
    pub is_add: bool,
    /// ADD `--checksum=sha256:…` (URL sources only).
    pub checksum: Option<String>,
    /// ADD `--unpack`: overrides whether local archives are unpacked (default:
    /// yes for ADD) and whether a downloaded archive is (default: no).
    pub unpack: Option<bool>,
}

/// What a copy wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Non-directory entries written (files, symlinks, hard links, special files).
    pub files: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Why a COPY/ADD failed. Messages name the source or destination path as seen
/// inside the build (context root or stage root = `/`; bytes of a name that
/// are not UTF-8 shown as U+FFFD).
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source without wildcards does not exist (BuildKit: `"/x": not found`).
    #[error("\"{}\": not found", names::display(.0))]
    NotFound(String),
    /// A bad flag or source for this instruction (`--chmod`, `--checksum`, a URL
    /// for COPY, …), with BuildKit's wording where it has one.
    #[error("{0}")]
    Invalid(String),
    #[error("invalid source pattern {0:?}: syntax error in pattern")]
    BadPattern(String),
    #[error("invalid --exclude pattern: {0}")]
    BadExclude(String),
    /// A file would replace a directory (fsutil: "cannot replace to directory … with file").
    #[error("cannot replace directory {} with a file", names::display(.0))]
    FileOverDirectory(String),
    /// A directory would be written over a non-directory.
    #[error("cannot copy to non-directory: {}", names::display(.0))]
    DirectoryOverFile(String),
    #[error("{}: {source}", names::display(path))]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("downloading {url}: {message}")]
    Download { url: String, message: String },
    #[error("digest mismatch for {url}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("extracting {archive}: {message}")]
    Unpack { archive: String, message: String },
    /// `--chown` names an id that is no number, or the image's user database
    /// could not be read.
    #[error(transparent)]
    Chown(#[from] chown::ChownError),
}

impl From<WriteError> for CopyError {
    fn from(e: WriteError) -> Self {
        CopyError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

fn io_err(path: &str) -> impl FnOnce(io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.to_string(),
        source,
    }
}

/// Copies what `op` names from `source` into `upper` (an empty directory that
/// becomes the step's layer, overlay upperdir format), with `parent` the step's
/// filesystem before the copy.
pub fn copy(
    op: &CopyOp,
    source: CopySource,
    parent: &LayeredView,
    upper: &Path,
) -> Result<CopyStats, CopyError> {
    validate(op)?;
    let chmod = op
        .chmod
        .as_deref()
        .map(Chmod::parse)
        .transpose()
        .map_err(CopyError::Invalid)?;
    let chown = op
        .chown
        .as_deref()
        .map(|s| chown::resolve(s, parent))
        .transpose()?;
    let excludes =
        PatternMatcher::new(&op.excludes).map_err(|e| CopyError::BadExclude(e.to_string()))?;
    let dest = dest_path(&op.workdir, &op.dest);
    let mut cx = Copier {
        up: Upper::new(upper, parent),
        chmod,
        chown,
        excludes: (!excludes.is_empty()).then_some(excludes),
        stats: CopyStats::default(),
    };
    let stage;
    let tree = match source {
        CopySource::Context(ctx) => Tree::Ctx(ctx),
        CopySource::View(v) => {
            stage = readable_view(v)?;
            Tree::View(&stage.0)
        }
    };
    for src in &op.sources {
        if download::is_url(src) {
            let fetched = download::download(src, op.checksum.as_deref())?;
            let unpack = op.unpack.unwrap_or(false);
            cx.copy_scratch_file(fetched.dir.path(), &fetched.name, &dest, unpack)?;
        } else {
            cx.copy_local(&tree, src, op, &dest)?;
        }
    }
    for (name, content) in &op.inline {
        let dir = scratch_file(name, content)?;
        let base = Path::new(name)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("__unnamed__")
            .to_string();
        cx.copy_scratch_file(dir.path(), &base, &dest, false)?;
    }
    let stats = cx.stats;
    cx.up.finish()?;
    Ok(stats)
}

/// The view to read a stage through. A stage without layers is an empty root
/// directory, which needs a directory to stand for it: an empty temporary one,
/// returned too so it lives as long as the view is used.
fn readable_view(v: &LayeredView) -> Result<(LayeredView, Option<tempfile::TempDir>), CopyError> {
    if !v.layers().is_empty() {
        return Ok((v.clone(), None));
    }
    let root = tempfile::tempdir().map_err(io_err("/"))?;
    Ok((
        LayeredView::new(vec![root.path().to_path_buf()]),
        Some(root),
    ))
}

/// WORKDIR's directory: BuildKit's `Mkdir(wd, 0755, WithParents, WithUser)`
/// (`solver/llbsolver/file/backend.go` `mkdir` → fsutil `MkdirAll`). `path` is
/// resolved inside the step's filesystem (symlinks followed); each missing
/// directory is created 0755 and owned by `owner`, existing ones are left as
/// they are (copied up unchanged when something is created below them). Returns
/// whether anything was created; if not, `upper` stays empty.
pub fn make_workdir(
    parent: &LayeredView,
    upper: &Path,
    path: &str,
    owner: (u32, u32),
) -> Result<bool, CopyError> {
    let mut up = Upper::new(upper, parent);
    let abs = clean(&format!("/{path}"));
    let resolved = up.state().resolve(&abs, true).map_err(io_err(&abs))?;
    up.mkdir_all(&resolved, 0o755, owner)?;
    up.finish()?;
    let created = fs::read_dir(upper).map_err(io_err(&abs))?.next().is_some();
    Ok(created)
}

/// The frontend's checks on flags and sources (`dispatchCopy`).
fn validate(op: &CopyOp) -> Result<(), CopyError> {
    for src in &op.sources {
        if download::is_git(src) {
            return Err(CopyError::Invalid(if op.is_add {
                format!("{src}: ADD from a git repository is not supported by kiln")
            } else {
                "source can't be a git ref for COPY".into()
            }));
        }
        if download::is_url(src) && !op.is_add {
            return Err(CopyError::Invalid("source can't be a URL for COPY".into()));
        }
    }
    if let Some(sum) = &op.checksum {
        if !op.is_add {
            return Err(CopyError::Invalid(
                "checksum can't be specified for COPY".into(),
            ));
        }
        if op.sources.len() != 1 {
            return Err(CopyError::Invalid(
                "checksum can't be specified for multiple sources".into(),
            ));
        }
        if !download::is_url(&op.sources[0]) {
            return Err(CopyError::Invalid(
                "checksum requires HTTP(S) or Git sources".into(),
            ));
        }
        download::parse_checksum(sum)?;
    }
    Ok(())
}

/// BuildKit's `pathRelativeToWorkingDir`: the absolute, cleaned destination, a
/// trailing `/` (or `/.`) kept as written.
pub fn dest_path(workdir: &str, dest: &str) -> String {
    let dest = if dest.is_empty() || dest == "." {
        "./"
    } else {
        dest
    };
    let joined = if dest.starts_with('/') {
        clean(dest)
    } else {
        let wd = if workdir.is_empty() { "/" } else { workdir };
        clean(&format!("/{wd}/{dest}"))
    };
    if dest.ends_with('/') && !joined.ends_with('/') {
        format!("{joined}/")
    } else if dest.ends_with("/.") {
        if joined == "/" {
            "/.".to_string()
        } else {
            format!("{joined}/.")
        }
    } else {
        joined
    }
}

/// A one-file scratch filesystem holding a heredoc's content (mode 0644, as
/// BuildKit's `llb.Mkfile` for inline sources).
fn scratch_file(name: &str, content: &[u8]) -> Result<tempfile::TempDir, CopyError> {
    let dir = tempfile::tempdir().map_err(io_err(name))?;
    let base = Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("__unnamed__");
    let p = dir.path().join(base);
    fs::write(&p, content).map_err(io_err(name))?;
    fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(io_err(name))?;
    Ok(dir)
}

// ---------------------------------------------------------------------------
// Source trees: the build context or a layered view, read the same way.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One file of a source tree.
#[derive(Debug, Clone)]
struct Node {
    /// Absolute, resolved path inside the source (`/` = its root).
    path: String,
    host: PathBuf,
    kind: Kind,
    /// The context entry, for context sources (`None` for the context root).
    entry: Option<usize>,
    /// `lstat` of `host` when already known.
    md: Option<Metadata>,
}

impl Node {
    fn metadata(&self) -> io::Result<Metadata> {
        match &self.md {
            Some(m) => Ok(m.clone()),
            None => fs::symlink_metadata(&self.host),
        }
    }
}

fn kind_of(md: &Metadata) -> Kind {
    let ft = md.file_type();
    if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else {
        Kind::Other
    }
}

#[derive(Clone, Copy)]
enum Tree<'a> {
    Ctx(&'a Context),
    View(&'a LayeredView),
}

impl Tree<'_> {
    /// Whether files from this tree belong to root regardless of their owner on
    /// disk (the build context).
    fn resets_owner(&self) -> bool {
        matches!(self, Tree::Ctx(_))
    }

    fn ctx_node(ctx: &Context, rel: &str) -> Option<Node> {
        if rel.is_empty() {
            return Some(Node {
                path: "/".into(),
                host: ctx.root.clone(),
                kind: Kind::Dir,
                entry: None,
                md: None,
            });
        }
        let i = ctx
            .entries
            .binary_search_by(|e| e.path.as_str().cmp(rel))
            .ok()?;
        Some(Self::ctx_entry_node(ctx, i))
    }

    fn ctx_entry_node(ctx: &Context, i: usize) -> Node {
        let e = &ctx.entries[i];
        Node {
            path: format!("/{}", e.path),
            host: ctx.abs_path(e),
            kind: match e.kind {
                FileKind::File => Kind::File,
                FileKind::Dir => Kind::Dir,
                FileKind::Symlink => Kind::Symlink,
                FileKind::Other => Kind::Other,
            },
            entry: Some(i),
            md: None,
        }
    }

    /// The file at `path`, symlinks resolved inside the tree (the last one only
    /// when `follow`).
    fn lookup(&self, path: &str, follow: bool) -> io::Result<Option<Node>> {
        match self {
            Tree::View(v) => Ok(v.lookup(path, follow)?.map(|e| Node {
                kind: kind_of(&e.metadata),
                path: e.path,
                host: e.host_path,
                entry: None,
                md: Some(e.metadata),
            })),
            Tree::Ctx(ctx) => Ok(Self::ctx_node(ctx, &ctx.resolve(path, follow)?)),
        }
    }

    /// Everything below the directory `dir`, parents before children.
    fn descendants(&self, dir: &Node) -> io::Result<Vec<Node>> {
        match self {
            Tree::View(v) => Ok(v
                .walk(&dir.path)?
                .into_iter()
                .map(|e| Node {
                    kind: kind_of(&e.metadata),
                    path: e.path,
                    host: e.host_path,
                    entry: None,
                    md: Some(e.metadata),
                })
                .collect()),
            Tree::Ctx(ctx) => {
                let range = if dir.path == "/" {
                    0..ctx.entries.len()
                } else {
                    let prefix = format!("{}/", &dir.path[1..]);
                    let start = ctx
                        .entries
                        .partition_point(|e| e.path.as_str() < prefix.as_str());
                    let end = start
                        + ctx.entries[start..].partition_point(|e| e.path.starts_with(&prefix));
                    start..end
                };
                Ok(range.map(|i| Self::ctx_entry_node(ctx, i)).collect())
            }
        }
    }
}

/// fsutil `splitWildcards`: the leading components without wildcards, and the rest.
fn split_wildcards(p: &str) -> (String, String) {
    let cleaned = clean(p);
    let mut base = Vec::new();
    let mut rest = Vec::new();
    for c in cleaned.split('/').filter(|c| !c.is_empty()) {
        if rest.is_empty() && !has_wildcards(c) {
            base.push(c);
        } else {
            rest.push(c);
        }
    }
    (format!("/{}", base.join("/")), rest.join("/"))
}

/// One wildcard match (or the plain source): the path as matched (its last
/// component names the copy in a destination directory) and the file it leads to
/// with symlinks followed.
struct Match {
    name: String,
    node: Node,
}

/// Resolves a normalized absolute source path to its matches (fsutil
/// `ResolveWildcards`, then `rootPath` with FollowLinks). A plain path must
/// exist; a pattern may match nothing, but the directory it starts in must exist.
fn select(tree: &Tree, src: &str) -> Result<Vec<Match>, CopyError> {
    let (base, pattern) = split_wildcards(src);
    if pattern.is_empty() {
        let node = tree
            .lookup(&base, true)
            .map_err(io_err(&base))?
            .ok_or_else(|| CopyError::NotFound(base.clone()))?;
        return Ok(vec![Match { name: base, node }]);
    }
    if go_match(&pattern, "").is_err() {
        return Err(CopyError::BadPattern(src.to_string()));
    }
    // The part before the first wildcard must exist (fsutil walks it: "lstat
    // /nodir: no such file or directory"); a non-directory just matches nothing.
    let Some(root) = tree.lookup(&base, true).map_err(io_err(&base))? else {
        return Err(CopyError::NotFound(base));
    };
    if root.kind != Kind::Dir {
        return Ok(Vec::new());
    }
    let prefix_len = if root.path == "/" {
        1
    } else {
        root.path.len() + 1
    };
    let mut out = Vec::new();
    let mut skip: Option<String> = None;
    for n in tree.descendants(&root).map_err(io_err(&root.path))? {
        if let Some(s) = &skip {
            if n.path.starts_with(s.as_str()) {
                continue;
            }
            skip = None;
        }
        let rel = &n.path[prefix_len..];
        let matched =
            go_match(&pattern, rel).map_err(|_| CopyError::BadPattern(src.to_string()))?;
        if !matched {
            continue;
        }
        if n.kind == Kind::Dir {
            skip = Some(format!("{}/", n.path));
        }
        let followed = if n.kind == Kind::Symlink {
            match tree.lookup(&n.path, true).map_err(io_err(&n.path))? {
                Some(f) => f,
                // A dangling symlink: fsutil's Lstat of the followed path fails.
                None => return Err(CopyError::NotFound(n.path.clone())),
            }
        } else {
            n.clone()
        };
        out.push(Match {
            name: n.path.clone(),
            node: followed,
        });
    }
    Ok(out)
}

/// One entry below a copied directory.
struct Below {
    /// Path relative to the copied directory.
    rel: String,
    node: Node,
    /// A directory listed only because something below it matched (fsutil's
    /// delayed `createParentDirs`): an existing one only takes the source's mode.
    parent_only: bool,
}

/// The entries below a copied directory that pass the include (`--parents`) and
/// exclude patterns, parents first. Directories that do not match themselves but
/// hold a match are listed too, before it.
fn filter_below(
    tree: &Tree,
    root: &Node,
    include: Option<&PatternMatcher>,
    exclude: Option<&PatternMatcher>,
) -> Result<Vec<Below>, CopyError> {
    let prefix_len = if root.path == "/" {
        1
    } else {
        root.path.len() + 1
    };
    let all = tree.descendants(root).map_err(io_err(&root.path))?;
    if include.is_none() && exclude.is_none() {
        return Ok(all
            .into_iter()
            .map(|n| Below {
                rel: n.path[prefix_len..].to_string(),
                node: n,
                parent_only: false,
            })
            .collect());
    }
    let exclusions = exclude.is_some_and(|m| m.has_exclusions());
    let mut out = Vec::new();
    let mut infos: HashMap<String, (MatchInfo, MatchInfo)> = HashMap::new();
    // Directories on the current path not yet listed: (rel, node, listed).
    let mut pending: Vec<(String, Node, bool)> = Vec::new();
    let mut skip: Option<String> = None;
    let bad = |e: crate::source::dockerignore::PatternError| CopyError::BadExclude(e.to_string());
    for n in all {
        let rel = n.path[prefix_len..].to_string();
        if let Some(s) = &skip {
            if rel.starts_with(s.as_str()) {
                continue;
            }
            skip = None;
        }
        while pending
            .last()
            .is_some_and(|(p, _, _)| !rel.starts_with(&format!("{p}/")))
        {
            pending.pop();
        }
        let parent_rel = rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        let (pi, pe) = infos.get(parent_rel).cloned().unwrap_or_default();
        let mut included = true;
        let mut excluded = false;
        let (mut ni, mut ne) = (MatchInfo::default(), MatchInfo::default());
        if let Some(m) = include {
            let (hit, info) = m.matches_using_parent_results(&rel, &pi).map_err(bad)?;
            included = hit;
            ni = info;
        }
        if let Some(m) = exclude {
            let (hit, info) = m.matches_using_parent_results(&rel, &pe).map_err(bad)?;
            if hit {
                included = false;
                excluded = true;
            }
            ne = info;
        }
        let is_dir = n.kind == Kind::Dir;
        if !included && include.is_none() && !exclusions {
            if is_dir {
                skip = Some(format!("{rel}/"));
            }
            continue;
        }
        if included {
            for (p, node, listed) in pending.iter_mut() {
                if !*listed {
                    out.push(Below {
                        rel: p.clone(),
                        node: node.clone(),
                        parent_only: true,
                    });
                    *listed = true;
                }
            }
            out.push(Below {
                rel: rel.clone(),
                node: n.clone(),
                parent_only: false,
            });
        }
        if is_dir {
            infos.insert(rel.clone(), (ni, ne));
            if excluded && !exclusions {
                skip = Some(format!("{rel}/"));
            }
            pending.push((rel, n, included));
        }
    }
    Ok(out)
}

/// A local source's plan: its root (the directory holding `--parents`
/// patterns, or the source itself), and how it is copied.
struct LocalSource {
    /// Source path normalized to an absolute path (BuildKit `NormalizePath("/", …)`).
    path: String,
    /// `--parents`: the include pattern relative to `path`.
    include: Option<String>,
    /// `--parents` without wildcards: this path must exist.
    required: Option<String>,
}

/// [`local_source`] checked against `tree`: a `--parents` path without
/// wildcards must exist; the include pattern compiled.
fn checked_source(
    tree: &Tree,
    src: &str,
    parents: bool,
) -> Result<(LocalSource, Option<PatternMatcher>), CopyError> {
    let ls = local_source(src, parents);
    if let Some(req) = &ls.required {
        if tree.lookup(req, true).map_err(io_err(req))?.is_none() {
            return Err(CopyError::NotFound(req.clone()));
        }
    }
    let include = match &ls.include {
        Some(p) => Some(
            PatternMatcher::new(&[p.as_str()])
                .map_err(|_| CopyError::BadPattern(src.to_string()))?,
        ),
        None => None,
    };
    Ok((ls, include))
}

fn local_source(src: &str, parents: bool) -> LocalSource {
    if !parents {
        return LocalSource {
            path: clean(&format!("/{src}")),
            include: None,
            required: None,
        };
    }
    // dispatchCopy: an optional `/./` pivot splits the kept parents from the root.
    let (root, pattern) = match src.split_once("/./") {
        Some((root, pattern)) => (root, pattern),
        None => ("/", src),
    };
    let pattern = clean(&format!("/{pattern}"));
    let root = clean(&format!("/{root}"));
    let required = (!has_wildcards(&root) && !has_wildcards(&pattern))
        .then(|| clean(&format!("{root}/{pattern}")));
    LocalSource {
        path: root,
        include: Some(pattern.trim_start_matches('/').to_string()),
        required,
    }
}

// ---------------------------------------------------------------------------
// The copier.

struct Copier<'a> {
    up: Upper<'a>,
    chmod: Option<Chmod>,
    chown: Option<(u32, u32)>,
    excludes: Option<PatternMatcher>,
    stats: CopyStats,
}

/// How one match is copied.
struct MatchOpts<'p> {
    /// Copy a directory's contents into the destination (always, for COPY/ADD).
    dir_contents: bool,
    include: Option<&'p PatternMatcher>,
    /// Files of this tree are owned by root whatever their owner on disk.
    reset_owner: bool,
}

impl Copier<'_> {
    /// Mode for directories a COPY creates on the way to its destination.
    fn new_dir_mode(&self) -> u32 {
        self.chmod.as_ref().and_then(Chmod::octal).unwrap_or(0o755) & 0o777
    }

    fn new_dir_owner(&self) -> (u32, u32) {
        self.chown.unwrap_or((0, 0))
    }

    fn copy_local(
        &mut self,
        tree: &Tree,
        src: &str,
        op: &CopyOp,
        dest: &str,
    ) -> Result<(), CopyError> {
        let (ls, include) = checked_source(tree, src, op.parents)?;
        let matches = select(tree, &ls.path)?;
        let unpack = op.unpack.unwrap_or(op.is_add);
        for m in matches {
            if unpack && m.node.kind == Kind::File && unpack::is_archive(&m.node.host) {
                self.unpack(&m.node.host, &m.name, dest)?;
                continue;
            }
            let opts = MatchOpts {
                dir_contents: true,
                include: include.as_ref(),
                reset_owner: tree.resets_owner(),
            };
            self.copy_match(tree, &m, dest, &opts)?;
        }
        Ok(())
    }

    /// Copies the single file `name` of the scratch directory `dir` (a download or
    /// a heredoc), owned by root.
    fn copy_scratch_file(
        &mut self,
        dir: &Path,
        name: &str,
        dest: &str,
        unpack: bool,
    ) -> Result<(), CopyError> {
        let host = dir.join(name);
        if unpack && unpack::is_archive(&host) {
            return self.unpack(&host, name, dest);
        }
        let view = LayeredView::new(vec![dir.to_path_buf()]);
        let tree = Tree::View(&view);
        let path = format!("/{name}");
        let node = tree
            .lookup(&path, false)
            .map_err(io_err(&path))?
            .ok_or_else(|| CopyError::NotFound(path.clone()))?;
        let m = Match { name: path, node };
        let opts = MatchOpts {
            dir_contents: false,
            include: None,
            reset_owner: true,
        };
        self.copy_match(&tree, &m, dest, &opts)
    }

    /// fsutil `Copy` for one source: make the destination's directory, pick the
    /// target (`prepareTargetDir`), copy.
    fn copy_match(
        &mut self,
        tree: &Tree,
        m: &Match,
        dest: &str,
        opts: &MatchOpts,
    ) -> Result<(), CopyError> {
        // The directory part of the destination (all of it with a trailing `/`
        // or `/.`) is created first.
        let ensure = match dest.rsplit_once('/') {
            Some((dir, last)) if !last.is_empty() && last != "." => dir,
            _ => dest,
        };
        let (mode, owner) = (self.new_dir_mode(), self.new_dir_owner());
        if !ensure.is_empty() {
            let resolved = self.resolve_dest(ensure)?;
            self.up.mkdir_all(&resolved, mode, owner)?;
        }
        let mut target = self.resolve_dest(&clean(dest))?;
        let src_is_dir = m.node.kind == Kind::Dir;
        let dest_entry = self
            .up
            .state()
            .lookup(&target, true)
            .map_err(io_err(&target))?;
        let dest_is_dir = dest_entry.as_ref().map(|e| e.is_dir());
        if (!opts.dir_contents && src_is_dir && dest_is_dir.is_some())
            || (!src_is_dir && dest_is_dir == Some(true))
        {
            let base = m.name.rsplit('/').next().unwrap_or_default();
            target = if target == "/" {
                format!("/{base}")
            } else {
                format!("{target}/{base}")
            };
        }
        let make = if opts.dir_contents && src_is_dir && dest_is_dir.is_none() {
            target.clone()
        } else {
            parent_of(&target)
        };
        self.up.mkdir_all(&make, mode, owner)?;

        if src_is_dir {
            self.copy_top_dir(&m.node, &target, opts)?;
            let below = filter_below(tree, &m.node, opts.include, self.excludes.as_ref())?;
            let mut links: HashMap<(u64, u64), String> = HashMap::new();
            for b in below {
                let to = if target == "/" {
                    format!("/{}", b.rel)
                } else {
                    format!("{target}/{}", b.rel)
                };
                self.copy_entry(&b.node, &to, opts, b.parent_only, &mut links)?;
            }
        } else {
            let mut links = HashMap::new();
            self.copy_entry(&m.node, &target, opts, false, &mut links)?;
        }
        Ok(())
    }

    /// Resolves a destination path inside the step's filesystem (all symlinks,
    /// the last one too, like continuity `fs.RootPath`).
    fn resolve_dest(&self, path: &str) -> Result<String, CopyError> {
        self.up.state().resolve(path, true).map_err(io_err(path))
    }

    /// The metadata a copied entry gets.
    fn meta_for(&self, md: &Metadata, is_dir: bool, host: &Path, reset_owner: bool) -> Meta {
        let (uid, gid) = self.chown.unwrap_or(if reset_owner {
            (0, 0)
        } else {
            (md.uid(), md.gid())
        });
        let mode = md.mode() & 0o7777;
        let mode = match &self.chmod {
            Some(c) => c.apply(mode, is_dir),
            None => mode,
        };
        Meta {
            uid,
            gid,
            mode,
            times: Times::of(md),
            xattrs: upper::read_xattrs(host),
        }
    }

    /// The top of a copied directory: the destination directory exists now
    /// (created or pre-existing); like fsutil with `overwriteTargetMetadata`
    /// false, it keeps its metadata and only takes the source's times.
    fn copy_top_dir(
        &mut self,
        src: &Node,
        target: &str,
        opts: &MatchOpts,
    ) -> Result<(), CopyError> {
        let md = src.metadata().map_err(io_err(&src.path))?;
        match self.up.lstat(target)? {
            Some(e) if e.is_dir() => {
                self.up.set_dir_times(target, Times::of(&md))?;
                Ok(())
            }
            Some(_) => Err(CopyError::DirectoryOverFile(target.to_string())),
            None => {
                let meta = self.meta_for(&md, true, &src.host, opts.reset_owner);
                self.up.create_dir(target, &meta)?;
                Ok(())
            }
        }
    }

    /// One entry (below the top, or a single non-directory source) to `to`.
    fn copy_entry(
        &mut self,
        node: &Node,
        to: &str,
        opts: &MatchOpts,
        parent_only: bool,
        links: &mut HashMap<(u64, u64), String>,
    ) -> Result<(), CopyError> {
        let md = node.metadata().map_err(io_err(&node.path))?;
        let existing = self.up.lstat(to)?;
        if node.kind == Kind::Dir {
            let meta = self.meta_for(&md, true, &node.host, opts.reset_owner);
            match existing {
                Some(e) if e.is_dir() && parent_only => {
                    // fsutil `createParentDirs` → `copyDirectoryOnly`: an existing
                    // directory only gets the source's own mode.
                    let old = &e.metadata;
                    let keep = Meta {
                        uid: old.uid(),
                        gid: old.gid(),
                        mode: md.mode() & 0o7777,
                        times: Times::of(old),
                        xattrs: Vec::new(),
                    };
                    self.up.update_dir(to, &keep)?
                }
                Some(e) if e.is_dir() => self.up.update_dir(to, &meta)?,
                Some(_) => return Err(CopyError::DirectoryOverFile(to.to_string())),
                None => self.up.create_dir(to, &meta)?,
            }
            return Ok(());
        }
        if existing.as_ref().is_some_and(|e| e.is_dir()) {
            return Err(CopyError::FileOverDirectory(to.to_string()));
        }
        let meta = self.meta_for(&md, false, &node.host, opts.reset_owner);
        let ft = md.file_type();
        if ft.is_file() {
            // Hard links within one source stay hard links (fsutil `getLinkSource`).
            if md.nlink() > 1 {
                let key = (md.dev(), md.ino());
                if let Some(first) = links.get(&key) {
                    let first = first.clone();
                    self.up.hard_link(to, &first)?;
                    self.stats.files += 1;
                    return Ok(());
                }
                links.insert(key, to.to_string());
            }
            let n = self.up.copy_file(to, &node.host, &meta)?;
            self.stats.bytes += n;
        } else if ft.is_symlink() {
            let t = fs::read_link(&node.host).map_err(io_err(&node.path))?;
            self.up.symlink(to, &t, &meta)?;
        } else if ft.is_socket() {
            // A socket becomes an empty regular file with its mode, as in
            // BuildKit: the context transfer sends it as one (fsutil `mkstat`
            // clears the socket bit; opening it for content fails, so none
            // is sent) and fsutil's copy makes a "stub" (`copyDevice` clears
            // S_IFSOCK before mknod), so COPY --from does the same.
            self.up.write_file(to, &mut io::empty(), &meta)?;
        } else {
            self.up.special(to, md.mode(), md.rdev(), &meta)?;
        }
        self.stats.files += 1;
        Ok(())
    }

    /// ADD of a local (or, with `--unpack`, downloaded) archive: extracted into the
    /// destination directory (BuildKit `unpack`: `MkdirAll(dest, 0755)` with the
    /// `--chown` owner, then the archive's entries, owned by `--chown` when given).
    fn unpack(&mut self, archive: &Path, name: &str, dest: &str) -> Result<(), CopyError> {
        let resolved = self.resolve_dest(&clean(dest))?;
        self.up.mkdir_all(&resolved, 0o755, self.new_dir_owner())?;
        let st =
            unpack::extract(archive, &resolved, &mut self.up, self.chown).map_err(|message| {
                CopyError::Unpack {
                    archive: name.to_string(),
                    message,
                }
            })?;
        self.stats.files += st.files;
        self.stats.bytes += st.bytes;
        Ok(())
    }
}

fn parent_of(p: &str) -> String {
    match p.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((d, _)) => d.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Cache keys.

/// The digest of exactly the build-context files `op` would read: for each local
/// source and match, the match path and then every copied entry's path (relative
/// to what is copied) with its entry digest (type, mode, content or link target).
/// `--exclude`d files and files outside the sources do not affect it; URL sources
/// and heredocs are not context files and are left to the caller's key.
pub fn context_sources_digest(
    op: &CopyOp,
    ctx: &Context,
    digests: &ContextDigests,
) -> Result<Digest, CopyError> {
    context_sources_digest_listed(op, ctx, digests, None)
}

/// [`context_sources_digest`], also listing each file and directory read
/// (its path in the context, without the leading `/`, and its digest) in
/// `listed`: what `--explain-cache` compares.
pub fn context_sources_digest_listed(
    op: &CopyOp,
    ctx: &Context,
    digests: &ContextDigests,
    listed: Option<&mut Vec<(String, [u8; 32])>>,
) -> Result<Digest, CopyError> {
    let listed = listed.map(std::cell::RefCell::new);
    let d = sources_digest(op, &Tree::Ctx(ctx), &|n: &Node| {
        let d = match n.entry {
            Some(i) => *digests.digests[i].as_bytes(),
            None => [0u8; 32],
        };
        if let Some(l) = &listed {
            if n.kind != Kind::Dir {
                l.borrow_mut()
                    .push((n.path.trim_start_matches('/').to_string(), d));
            }
        }
        Ok(d)
    })?;
    Ok(d)
}

/// For ADD of http(s) URLs without `--checksum`: the digest of what the URLs
/// serve now (name, content, Last-Modified time), so a changed download is a
/// cache miss and an unchanged one a hit, as BuildKit re-checks remote files
/// on every build. `None` when the step has no such source (a `--checksum`
/// already pins the content, and is part of the caller's key).
pub fn url_sources_digest(op: &CopyOp) -> Result<Option<Digest>, CopyError> {
    if !op.is_add || op.checksum.is_some() {
        return Ok(None);
    }
    let urls: Vec<&String> = op.sources.iter().filter(|s| download::is_url(s)).collect();
    if urls.is_empty() {
        return Ok(None);
    }
    let mut h = Hasher::new();
    h.update(b"kiln-url-sources-v1\0");
    for url in urls {
        let fetched = download::download(url, None)?;
        let path = fetched.dir.path().join(&fetched.name);
        let data = fs::read(&path).map_err(io_err(url))?;
        let mtime = fs::metadata(&path).map(|m| m.mtime()).unwrap_or(0);
        h.update(&(url.len() as u64).to_le_bytes());
        h.update(url.as_bytes());
        h.update(Digest::of(&data).as_bytes());
        h.update(&mtime.to_le_bytes());
    }
    Ok(Some(h.finish()))
}

/// [`context_sources_digest`] for `COPY --from`: the digest of exactly the files
/// `op` would read from another stage's filesystem, each by type, mode, owner and
/// content (or link target), so an unchanged artifact of a rebuilt stage keeps
/// the steps after the COPY cached (BuildKit's content-based cache keys).
pub fn view_sources_digest(op: &CopyOp, view: &LayeredView) -> Result<Digest, CopyError> {
    let (view, _empty_root) = readable_view(view)?;
    sources_digest(op, &Tree::View(&view), &|n: &Node| {
        let md = n.metadata().map_err(io_err(&n.path))?;
        let mut h = Hasher::new();
        h.update(&md.mode().to_le_bytes());
        h.update(&md.uid().to_le_bytes());
        h.update(&md.gid().to_le_bytes());
        match n.kind {
            Kind::File => {
                let mut f = fs::File::open(&n.host).map_err(io_err(&n.path))?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let k = std::io::Read::read(&mut f, &mut buf).map_err(io_err(&n.path))?;
                    if k == 0 {
                        break;
                    }
                    h.update(&buf[..k]);
                }
            }
            Kind::Symlink => {
                let t = fs::read_link(&n.host).map_err(io_err(&n.path))?;
                h.update(t.as_os_str().as_encoded_bytes());
            }
            Kind::Dir | Kind::Other => h.update(&md.rdev().to_le_bytes()),
        }
        Ok(*h.finish().as_bytes())
    })
}

fn sources_digest(
    op: &CopyOp,
    tree: &Tree,
    entry_digest: &dyn Fn(&Node) -> Result<[u8; 32], CopyError>,
) -> Result<Digest, CopyError> {
    let tree = *tree;
    let excludes =
        PatternMatcher::new(&op.excludes).map_err(|e| CopyError::BadExclude(e.to_string()))?;
    let excludes = (!excludes.is_empty()).then_some(excludes);
    let mut h = Hasher::new();
    h.update(b"kiln-copy-sources-v1\0");
    let put = |h: &mut Hasher, b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    for src in &op.sources {
        if download::is_url(src) || download::is_git(src) {
            continue;
        }
        put(&mut h, b"source");
        put(&mut h, src.as_bytes());
        let (ls, include) = checked_source(&tree, src, op.parents)?;
        for m in select(&tree, &ls.path)? {
            put(&mut h, b"match");
            put(&mut h, m.name.as_bytes());
            h.update(&entry_digest(&m.node)?);
            if m.node.kind == Kind::Dir {
                for b in filter_below(&tree, &m.node, include.as_ref(), excludes.as_ref())? {
                    put(&mut h, b.rel.as_bytes());
                    h.update(&entry_digest(&b.node)?);
                }
            }
        }
    }
    Ok(h.finish())
}
