//! Context hashing benchmark: a synthetic context of N files (default 20000) hashed
//! cold (no metadata cache), warm (unchanged, cache present) and after changing one
//! file. Run with `bench/context/run.sh` (release build).

use kiln_builder::internal::Context;
use kiln_builder::internal::PatternMatcher;
use kiln_builder::internal::{cache_path, hash_context};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 20_000,
    };
    let ctx_dir = tempfile::tempdir()?;
    let store = tempfile::tempdir()?;
    let mut total_bytes = 0u64;
    for i in 0..n {
        let p = ctx_dir
            .path()
            .join(format!("pkg{}/mod{}/file{i}.txt", i % 50, i % 7));
        std::fs::create_dir_all(p.parent().ok_or("no parent")?)?;
        let len = 512 + (i * 7919) % 7680;
        let body: Vec<u8> = (0..len).map(|k| (k as u8) ^ (i as u8)).collect();
        total_bytes += len as u64;
        std::fs::write(p, body)?;
    }
    println!(
        "context: {n} files, {:.1} MiB, threads available: {}",
        total_bytes as f64 / 1048576.0,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let ignore = PatternMatcher::new(&["**/*.log", "!keep.log"])?;
    let cache = cache_path(store.path(), ctx_dir.path());
    let run = |label: &str| -> Result<(), Box<dyn std::error::Error>> {
        let t0 = Instant::now();
        let ctx = Context::load(ctx_dir.path(), &ignore)?;
        let t_walk = t0.elapsed();
        let d = hash_context(&ctx, Some(&cache))?;
        let total = t0.elapsed();
        println!(
            "{label:<22} walk+stat {:>8.1} ms  total {:>8.1} ms  files read {:>6}  cache hits {:>6}  tree {}",
            t_walk.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            d.stats.files_read,
            d.stats.cache_hits,
            &d.tree_digest(&ctx).to_string()[..19],
        );
        Ok(())
    };
    run("cold (no cache)")?;
    run("warm (no change)")?;
    std::fs::write(ctx_dir.path().join("pkg3/mod3/file3.txt"), b"changed")?;
    run("warm (1 file changed)")?;
    Ok(())
}
