//! Shared by the layer and archive targets: make the tar header checksums of
//! fuzzer-made bytes right, so mutations reach what follows the checksum test
//! instead of all failing it.

/// Walks `buf` as a tar stream (header, data rounded up to 512 bytes, next
/// header, …) and rewrites each header's checksum field; stops at the first
/// all-zero block or a size that cannot be read.
pub fn fix_checksums(buf: &mut [u8]) {
    let mut off = 0usize;
    while off + 512 <= buf.len() {
        let block = &mut buf[off..off + 512];
        if block.iter().all(|&b| b == 0) {
            return;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let Ok(size) = tar::Header::from_byte_slice(block).entry_size() else {
            return;
        };
        let Some(next) = usize::try_from(size)
            .ok()
            .and_then(|s| s.checked_add(511))
            .map(|s| s / 512 * 512)
            .and_then(|s| s.checked_add(off + 512))
        else {
            return;
        };
        off = next;
    }
}
