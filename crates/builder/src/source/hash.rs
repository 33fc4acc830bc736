//! Content digests of context entries, with a persistent metadata cache.
//!
//! An entry's digest covers what a COPY of it depends on: its type, permission bits,
//! and its content (regular file) or target (symlink); never mtime, owner or inode.
//! Reading content is the expensive part, so content digests are cached on disk per
//! context directory, keyed by (path, dev, inode, size, mtime ns, ctime ns): when all
//! of those are unchanged the file is not opened again.
//!
//! Cache file (`<store>/cache/context/<sha256 of the absolute context path>`):
//! `KILNCTX1`, u32 record count, then per record u32 path length, path bytes,
//! u64 dev, u64 ino, u64 size, i64 mtime_ns, i64 ctime_ns, 32-byte digest (all
//! little-endian), then a sha256 of everything before it. Anything that does not
//! parse or verify is treated as an empty cache and rewritten.

use crate::source::context::{Context, Entry, FileKind};
use kiln_oci::{Digest, Hasher};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

const MAGIC: &[u8; 8] = b"KILNCTX1";

/// What one hashing run did (observable so tests and benchmarks can check it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Regular files whose content was read.
    pub files_read: u64,
    pub bytes_read: u64,
    /// Regular files whose content digest came from the metadata cache.
    pub cache_hits: u64,
}

/// Per-entry digests of a [`Context`], parallel to `Context::entries`.
#[derive(Debug, Clone)]
pub struct ContextDigests {
    pub digests: Vec<Digest>,
    pub stats: HashStats,
}

impl ContextDigests {
    /// The digest of a selection of entries (e.g. what `COPY src/ dst` reads), from
    /// their paths and digests in path order. Changes when any selected entry's
    /// name, type, mode or content changes.
    pub fn selection_digest(&self, ctx: &Context, indices: &[usize]) -> Digest {
        let mut sorted: Vec<usize> = indices.to_vec();
        sorted.sort_by(|&a, &b| ctx.entries[a].path.cmp(&ctx.entries[b].path));
        sorted.dedup();
        let mut h = Hasher::new();
        h.update(b"kiln-context-selection-v1\0");
        for i in sorted {
            let path = ctx.entries[i].path.as_bytes();
            h.update(&(path.len() as u64).to_le_bytes());
            h.update(path);
            h.update(self.digests[i].as_bytes());
        }
        h.finish()
    }

    /// The digest of the whole context.
    pub fn tree_digest(&self, ctx: &Context) -> Digest {
        let all: Vec<usize> = (0..ctx.entries.len()).collect();
        self.selection_digest(ctx, &all)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CacheRecord {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    content: Digest,
}

impl CacheRecord {
    fn for_entry(e: &Entry, content: Digest) -> Self {
        CacheRecord {
            dev: e.dev,
            ino: e.ino,
            size: e.size,
            mtime_ns: e.mtime_ns,
            ctime_ns: e.ctime_ns,
            content,
        }
    }
    fn fresh_for(&self, e: &Entry) -> bool {
        self.dev == e.dev
            && self.ino == e.ino
            && self.size == e.size
            && self.mtime_ns == e.mtime_ns
            && self.ctime_ns == e.ctime_ns
    }
}

/// Where the metadata cache of the context at `context_root` lives in the store.
pub fn cache_path(store_root: &Path, context_root: &Path) -> PathBuf {
    let abs = fs::canonicalize(context_root).unwrap_or_else(|_| context_root.to_path_buf());
    let key = Digest::of(abs.as_os_str().as_encoded_bytes());
    store_root.join("cache").join("context").join(key.hex())
}

fn load_cache(path: &Path) -> HashMap<String, CacheRecord> {
    fs::read(path)
        .ok()
        .and_then(|b| parse_cache(&b))
        .unwrap_or_default()
}

fn parse_cache(bytes: &[u8]) -> Option<HashMap<String, CacheRecord>> {
    if bytes.len() < MAGIC.len() + 4 + 32 {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Digest::of(body).as_bytes() != sum || &body[..8] != MAGIC {
        return None;
    }
    let mut r = Reader { b: &body[8..] };
    let count = r.u32()? as usize;
    let mut map = HashMap::with_capacity(count.min(1 << 20));
    for _ in 0..count {
        let len = r.u32()? as usize;
        let path = String::from_utf8(r.take(len)?.to_vec()).ok()?;
        let rec = CacheRecord {
            dev: r.u64()?,
            ino: r.u64()?,
            size: r.u64()?,
            mtime_ns: r.u64()? as i64,
            ctime_ns: r.u64()? as i64,
            content: Digest::from_bytes(r.take(32)?.try_into().ok()?),
        };
        map.insert(path, rec);
    }
    r.b.is_empty().then_some(map)
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn encode_cache(records: &[(&str, &CacheRecord)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + records.len() * 96);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for (path, r) in records {
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        for v in [r.dev, r.ino, r.size, r.mtime_ns as u64, r.ctime_ns as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(r.content.as_bytes());
    }
    let sum = Digest::of(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// Writes `data` to `path` atomically: temp file in the same directory, rename.
/// Not fsynced: the metadata cache is only a cache — after a power loss a lost or
/// unreadable file means the context is hashed from its contents again.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn content_digest(path: &Path) -> io::Result<(Digest, u64)> {
    let mut f = File::open(path)?;
    let mut h = Hasher::new();
    let n = io::copy(&mut f, &mut h)?;
    Ok((h.finish(), n))
}

fn entry_digest(e: &Entry, content: Option<&Digest>) -> Digest {
    let mut h = Hasher::new();
    h.update(b"kiln-context-entry-v1\0");
    h.update(&[match e.kind {
        FileKind::File => b'f',
        FileKind::Dir => b'd',
        FileKind::Symlink => b'l',
        FileKind::Other => b'o',
    }]);
    h.update(&e.mode.to_le_bytes());
    if let Some(c) = content {
        h.update(c.as_bytes());
    }
    if let Some(t) = &e.link_target {
        h.update(t.as_bytes());
    }
    h.finish()
}

/// Hashes every entry of `ctx`. With `cache_file`, content digests of files whose
/// metadata is unchanged come from the cache, and the cache is rewritten (only when
/// something changed) to hold exactly the current files.
pub fn hash_context(ctx: &Context, cache_file: Option<&Path>) -> io::Result<ContextDigests> {
    let cache = cache_file.map(load_cache).unwrap_or_default();
    let mut contents: Vec<Option<Digest>> = vec![None; ctx.entries.len()];
    let mut to_read = Vec::new();
    let mut stats = HashStats::default();
    for (i, e) in ctx.entries.iter().enumerate() {
        if e.kind != FileKind::File {
            continue;
        }
        match cache.get(&e.path) {
            Some(rec) if rec.fresh_for(e) => {
                contents[i] = Some(rec.content);
                stats.cache_hits += 1;
            }
            _ => to_read.push(i),
        }
    }

    let read = read_contents(ctx, &to_read)?;
    for (i, (d, n)) in to_read.iter().zip(read) {
        contents[*i] = Some(d);
        stats.files_read += 1;
        stats.bytes_read += n;
    }

    if let Some(path) = cache_file {
        let changed =
            !to_read.is_empty() || cache.len() as u64 != stats.cache_hits || !path.exists();
        if changed {
            let records: Vec<(String, CacheRecord)> = ctx
                .entries
                .iter()
                .zip(&contents)
                .filter_map(|(e, c)| c.map(|c| (e.path.clone(), CacheRecord::for_entry(e, c))))
                .collect();
            let refs: Vec<(&str, &CacheRecord)> =
                records.iter().map(|(p, r)| (p.as_str(), r)).collect();
            write_atomic(path, &encode_cache(&refs))?;
        }
    }

    let digests = ctx
        .entries
        .iter()
        .zip(&contents)
        .map(|(e, c)| entry_digest(e, c.as_ref()))
        .collect();
    Ok(ContextDigests { digests, stats })
}

/// A file's content digest and byte count.
type HashResult = io::Result<(Digest, u64)>;

/// Reads and hashes the given files, on several threads when there are many.
fn read_contents(ctx: &Context, indices: &[usize]) -> io::Result<Vec<(Digest, u64)>> {
    let hash_one = |i: usize| {
        let p = ctx.abs_path(&ctx.entries[i]);
        content_digest(&p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if threads < 2 || indices.len() < 64 {
        return indices.iter().map(|&i| hash_one(i)).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<HashResult>> = Vec::new();
    results.resize_with(indices.len(), || None);
    let parts: Vec<Vec<(usize, HashResult)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut local = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= indices.len() {
                            break;
                        }
                        local.push((k, hash_one(indices[k])));
                    }
                    local
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    for (k, r) in parts.into_iter().flatten() {
        results[k] = Some(r);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("hashing worker failed"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::dockerignore::PatternMatcher;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, SystemTime};

    fn load(root: &Path) -> Context {
        Context::load(root, &PatternMatcher::default()).unwrap()
    }

    fn setup(n: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..n {
            let p = dir.path().join(format!("d{}/f{i}.txt", i % 7));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, format!("content {i}")).unwrap();
        }
        dir
    }

    fn digest_of(root: &Path, path: &str) -> Digest {
        let ctx = load(root);
        let d = hash_context(&ctx, None).unwrap();
        let i = ctx.select(path).unwrap();
        d.selection_digest(&ctx, &i)
    }

    #[test]
    fn mtime_does_not_matter_but_mode_and_name_do() {
        let dir = setup(3);
        let r = dir.path();
        let f = r.join("d0/f0.txt");
        let before = digest_of(r, "d0");
        File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        assert_eq!(digest_of(r, "d0"), before);
        fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
        let after_mode = digest_of(r, "d0");
        assert_ne!(after_mode, before);
        fs::rename(&f, r.join("d0/g0.txt")).unwrap();
        assert_ne!(digest_of(r, "d0"), after_mode);
        // The same content in another context at the same path hashes the same.
        let other = setup(3);
        assert_eq!(digest_of(other.path(), "d1"), digest_of(r, "d1"));
    }

    #[test]
    fn metadata_cache_avoids_reading_unchanged_files() {
        let dir = setup(200);
        let store = tempfile::tempdir().unwrap();
        let cache = cache_path(store.path(), dir.path());
        let ctx = load(dir.path());
        let cold = hash_context(&ctx, Some(&cache)).unwrap();
        assert_eq!(cold.stats.files_read, 200);
        let warm = hash_context(&load(dir.path()), Some(&cache)).unwrap();
        assert_eq!(warm.stats.files_read, 0);
        assert_eq!(warm.stats.cache_hits, 200);
        assert_eq!(warm.tree_digest(&ctx), cold.tree_digest(&ctx));

        fs::write(dir.path().join("d3/f10.txt"), "changed").unwrap();
        let ctx2 = load(dir.path());
        let changed = hash_context(&ctx2, Some(&cache)).unwrap();
        assert_eq!(changed.stats.files_read, 1);
        assert_ne!(changed.tree_digest(&ctx2), cold.tree_digest(&ctx));
        // Only selections containing the file change.
        let d3 = ctx2.select("d3").unwrap();
        let d4 = ctx2.select("d4").unwrap();
        assert_ne!(
            changed.selection_digest(&ctx2, &d3),
            cold.selection_digest(&ctx, &ctx.select("d3").unwrap())
        );
        assert_eq!(
            changed.selection_digest(&ctx2, &d4),
            cold.selection_digest(&ctx, &ctx.select("d4").unwrap())
        );
        assert_eq!(
            hash_context(&ctx2, Some(&cache)).unwrap().stats.files_read,
            0
        );
    }

    #[test]
    fn corrupt_or_truncated_cache_is_rebuilt() {
        let dir = setup(20);
        let store = tempfile::tempdir().unwrap();
        let cache = cache_path(store.path(), dir.path());
        let ctx = load(dir.path());
        let good = hash_context(&ctx, Some(&cache)).unwrap();
        let bytes = fs::read(&cache).unwrap();
        for bad in [
            bytes[..bytes.len() / 2].to_vec(),
            Vec::new(),
            b"garbage".to_vec(),
            {
                let mut b = bytes.clone();
                b[20] ^= 0xff;
                b
            },
        ] {
            fs::write(&cache, &bad).unwrap();
            let again = hash_context(&ctx, Some(&cache)).unwrap();
            assert_eq!(again.stats.files_read, 20);
            assert_eq!(again.tree_digest(&ctx), good.tree_digest(&ctx));
            assert_eq!(
                hash_context(&ctx, Some(&cache)).unwrap().stats.files_read,
                0
            );
        }
        // Records of a cache with a valid checksum but bogus structure are refused too.
        assert!(parse_cache(&encode_cache(&[])).unwrap().is_empty());
        let mut lying = MAGIC.to_vec();
        lying.extend_from_slice(&5u32.to_le_bytes());
        let sum = Digest::of(&lying);
        lying.extend_from_slice(sum.as_bytes());
        assert!(parse_cache(&lying).is_none());
    }

    #[test]
    fn symlink_target_is_hashed() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("l")).unwrap();
        let one = digest_of(dir.path(), "l");
        fs::remove_file(dir.path().join("l")).unwrap();
        std::os::unix::fs::symlink("b", dir.path().join("l")).unwrap();
        assert_ne!(digest_of(dir.path(), "l"), one);
    }
}
