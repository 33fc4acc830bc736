//! Test data: bytes that look random to a compressor, and the system's gzip.

use std::io::Write;
use std::process::{Command, Stdio};

/// `len` bytes of xorshift output from `seed`: the same bytes for the same
/// seed, as flat a byte histogram as random bytes have (a compressor stores
/// them, it cannot shrink them).
pub fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What the system's `gzip -dc` makes of `gz` (panics if it fails).
pub fn system_gunzip(gz: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running gzip -dc");
    let mut stdin = child.stdin.take().unwrap();
    let input = gz.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let result = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(result.status.success(), "gzip -dc: {:?}", result.status);
    result.stdout
}
