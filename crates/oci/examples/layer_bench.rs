//! Layer benchmark driver (see bench/README.md): `gen DIR` writes a deterministic
//! ≥500 MB tree of mixed files; `write DIR gzip|zstd|uncompressed` times one
//! single-pass `write_layer` into a discarding writer and prints the result;
//! `apply BLOB DEST` times `apply_layer` of a layer blob onto a directory.

use kiln_oci::layer::{write_layer, Compression, DiffKind, LayerOptions};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// xorshift64*: deterministic, fast, good enough for test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const WORDS: &[&str] = &[
    "fn", "let", "mut", "return", "struct", "impl", "layer", "digest", "config", "the", "image",
    "build", "stage", "copy", "run", "error", "value", "self", "match", "None", "Some", "println",
    "include", "static", "const", "int", "char", "void", "while", "for",
];

fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        out.push(match rng.below(12) {
            0 => b'\n',
            1 => b'(',
            2 => b';',
            _ => b' ',
        });
    }
    out.truncate(len);
    out
}

/// Binary that compresses to roughly half: random runs alternating with repeats.
fn semi_binary(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let run = 64 + rng.below(4096) as usize;
        if rng.below(2) == 0 {
            for _ in 0..run / 8 {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
        } else {
            let b = rng.next().to_le_bytes();
            for i in 0..run {
                out.push(b[i % 4]);
            }
        }
    }
    out.truncate(len);
    out
}

fn generate(dir: &Path) -> std::io::Result<u64> {
    let mut rng = Rng(0x6b69_6c6e_6c61_7972);
    let mut total = 0u64;
    for i in 0..20_000u32 {
        let d = dir.join(format!("src/pkg{:03}/mod{:02}", i % 400, (i / 400) % 50));
        fs::create_dir_all(&d)?;
        let len = 512 + rng.below(8 * 1024) as usize;
        let data = text(&mut rng, len);
        total += data.len() as u64;
        fs::write(d.join(format!("file{i:05}.rs")), data)?;
    }
    fs::create_dir_all(dir.join("share/doc"))?;
    fs::create_dir_all(dir.join("lib"))?;
    for i in 0..200u32 {
        let len = 256 * 1024 + rng.below(768 * 1024) as usize;
        let data = if i % 2 == 0 {
            text(&mut rng, len)
        } else {
            semi_binary(&mut rng, len)
        };
        total += data.len() as u64;
        fs::write(dir.join(format!("share/doc/medium{i:03}.dat")), data)?;
    }
    for i in 0..4u32 {
        let data = semi_binary(&mut rng, 75 << 20);
        total += data.len() as u64;
        fs::write(dir.join(format!("lib/large{i}.so")), data)?;
    }
    Ok(total)
}

struct Discard;
impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: layer_bench gen DIR | layer_bench write DIR gzip|zstd|uncompressed \
                 | layer_bench apply BLOB DEST";
    match args.get(1).map(String::as_str) {
        Some("gen") if args.len() == 3 => match generate(Path::new(&args[2])) {
            Ok(total) => println!("generated {} MB in {}", total >> 20, args[2]),
            Err(e) => {
                eprintln!("layer_bench: {}: {e}", args[2]);
                std::process::exit(1);
            }
        },
        Some("write") if args.len() == 4 => {
            let compression: Compression = match args[3].parse() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("layer_bench: {e}");
                    std::process::exit(2);
                }
            };
            let opts = LayerOptions {
                compression,
                source_date_epoch: None,
            };
            let start = Instant::now();
            match write_layer(Path::new(&args[2]), DiffKind::Plain, &opts, Discard) {
                Ok(d) => println!(
                    "{compression}: {:.2} s, blob {} MB, {}",
                    start.elapsed().as_secs_f64(),
                    d.size >> 20,
                    d.digest
                ),
                Err(e) => {
                    eprintln!("layer_bench: {e}");
                    std::process::exit(1);
                }
            }
        }
        Some("apply") if args.len() == 4 => {
            let blob = match std::fs::File::open(&args[2]) {
                Ok(f) => std::io::BufReader::with_capacity(1 << 20, f),
                Err(e) => {
                    eprintln!("layer_bench: {}: {e}", args[2]);
                    std::process::exit(1);
                }
            };
            let start = Instant::now();
            match kiln_oci::layer::apply_layer(blob, Path::new(&args[3])) {
                Ok(stats) => println!(
                    "apply: {:.2} s, {} files, {} MB",
                    start.elapsed().as_secs_f64(),
                    stats.regular_files,
                    stats.bytes >> 20
                ),
                Err(e) => {
                    eprintln!("layer_bench: {e}");
                    std::process::exit(1);
                }
            }
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
