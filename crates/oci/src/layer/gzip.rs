//! A gzip writer that stores incompressible data instead of deflating it.
//!
//! deflate (zlib-rs, level 6) runs at about 30 MB/s on random bytes and gains
//! nothing there: model weights, media, already-compressed archives. This
//! encoder looks at its input in fixed [`JUDGE`]-byte chunks (whatever the
//! caller's writes were): a chunk whose byte histogram is as flat as random
//! bytes' ([`looks_random`]) is written as deflate stored blocks, at memcpy
//! speed; every other chunk goes through the deflater as before.
//!
//! The member is what flate2's `GzEncoder` writes (the same header: mtime 0, no
//! name, XFL from the level, OS 255) and, when no chunk looks random, the same
//! stream byte for byte as `GzEncoder` given the input in [`FEED`]-byte writes,
//! which is how [`super::write_layer`] has always fed it. That matters: zlib-rs's
//! deflate output at levels 0, 1, 5 and 6 depends on how its input was split
//! into calls (levels 5–6 are zlib-ng's "medium" strategy), so this encoder
//! feeds the deflater the same way, at fixed offsets, whatever the writes were.
//! Layers that have no random-looking chunk keep their digests.
//!
//! Before a random chunk the deflate stream is sync-flushed (to a byte boundary;
//! zlib ends the flush with an empty stored block), and after it the deflater
//! starts over: one that went on would not know of the stored bytes in the
//! decompressed history, and its back-references would land on the wrong data.
//! A reset deflater has no history, so it never refers back across them. The
//! stream ends with the deflater's final block.

use flate2::{Compress, Crc, FlushCompress, Status};
use std::io::{self, Write};

/// The deflater is given the input in pieces of this size, at multiples of it
/// (the last one shorter), as `write_layer` gave flate2's `GzEncoder`.
pub(crate) const FEED: usize = 1 << 20;

/// The unit of input judged random or not; it divides [`FEED`].
pub(crate) const JUDGE: usize = 128 * 1024;

/// A chunk whose byte histogram has a chi² (against 256 equally likely values)
/// at most this is stored. Random bytes give 255 ± 23 at any size; at this
/// bound, Huffman coding could make a 128 KiB chunk about 0.1% smaller (the
/// gain is about chi² / (2 n ln 2) bits a byte). Text, code and binaries give
/// tens of thousands and more; a tar header inside a random chunk adds ~300.
const CHI2_RANDOM: f64 = 1000.0;

/// Output buffer of the deflater: 32 KiB, as flate2's `GzEncoder` has.
const OUT_BUF: usize = 32 * 1024;

/// Longest stored block (LEN is 16 bits).
const STORED_MAX: usize = 65535;

/// Whether `data` looks like random bytes (see [`CHI2_RANDOM`]).
pub(crate) fn looks_random(data: &[u8]) -> bool {
    if data.is_empty() {
        return false;
    }
    // Four tables, so that runs of one byte value do not wait on each other's
    // increments.
    let mut counts = [[0u32; 256]; 4];
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        counts[0][q[0] as usize] += 1;
        counts[1][q[1] as usize] += 1;
        counts[2][q[2] as usize] += 1;
        counts[3][q[3] as usize] += 1;
    }
    for &b in quads.remainder() {
        counts[0][b as usize] += 1;
    }
    let expected = data.len() as f64 / 256.0;
    let [a, b, c, d] = &counts;
    let chi2: f64 = (0..256)
        .map(|v| {
            let n = (a[v] + b[v] + c[v] + d[v]) as f64;
            (n - expected) * (n - expected)
        })
        .sum();
    chi2 / expected <= CHI2_RANDOM
}

/// The 10-byte gzip header flate2's `GzEncoder` writes: no flags, mtime 0, XFL
/// 2 at level 9, 4 at levels 0 and 1, 0 otherwise; OS 255.
fn header(level: u32) -> [u8; 10] {
    let xfl = if level >= 9 {
        2
    } else if level <= 1 {
        4
    } else {
        0
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]
}

/// A gzip writer (one member) at a zlib level 0–9; see the module doc.
pub(crate) struct GzipEncoder<W: Write> {
    out: W,
    level: u32,
    deflater: Compress,
    /// The deflater was given input since it was made or last reset.
    deflater_used: bool,
    crc: Crc,
    /// Input short of a whole [`FEED`].
    pending: Vec<u8>,
    /// Deflater output: [`OUT_BUF`] bytes, as flate2's `GzEncoder` gives it.
    zbuf: Box<[u8]>,
    /// Stored blocks being put together.
    sbuf: Vec<u8>,
}

impl<W: Write> GzipEncoder<W> {
    /// Writes the gzip header to `out`.
    pub(crate) fn new(mut out: W, level: u32) -> io::Result<Self> {
        let level = level.min(9);
        out.write_all(&header(level))?;
        Ok(GzipEncoder {
            out,
            level,
            deflater: Compress::new(flate2::Compression::new(level), false),
            deflater_used: false,
            crc: Crc::new(),
            pending: Vec::new(),
            zbuf: vec![0; OUT_BUF].into_boxed_slice(),
            sbuf: Vec::with_capacity(JUDGE + 5 * JUDGE.div_ceil(STORED_MAX)),
        })
    }

    /// Compresses what is buffered, ends the deflate stream, writes the CRC32
    /// and size trailer, and returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        let tail = std::mem::take(&mut self.pending);
        self.feed(&tail)?;
        self.deflate(&[], FlushCompress::Finish)?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.out.write_all(&trailer)?;
        Ok(self.out)
    }

    /// One [`FEED`] (or the shorter last piece): its random-looking whole
    /// [`JUDGE`] chunks are stored, and each run of other bytes goes to the
    /// deflater in one piece (the whole feed when nothing looks random). A last
    /// partial chunk is not judged: a histogram of few bytes says little.
    fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        self.crc.update(data);
        let mut run = 0;
        // Level 0 is zlib's own stored blocks; keep them as they are.
        if self.level > 0 {
            for (i, chunk) in data.chunks_exact(JUDGE).enumerate() {
                if looks_random(chunk) {
                    let at = i * JUDGE;
                    self.deflate(&data[run..at], FlushCompress::None)?;
                    self.store(chunk)?;
                    run = at + JUDGE;
                }
            }
        }
        self.deflate(&data[run..], FlushCompress::None)
    }

    /// Feeds `input` to the deflater with `flush`, writing out what it gives,
    /// as flate2's `GzEncoder` does.
    fn deflate(&mut self, mut input: &[u8], flush: FlushCompress) -> io::Result<()> {
        if matches!(flush, FlushCompress::None) {
            if input.is_empty() {
                return Ok(());
            }
            self.deflater_used = true;
        }
        loop {
            let (in0, out0) = (self.deflater.total_in(), self.deflater.total_out());
            let status = self
                .deflater
                .compress(input, &mut self.zbuf, flush)
                .map_err(io::Error::other)?;
            input = &input[(self.deflater.total_in() - in0) as usize..];
            let n = (self.deflater.total_out() - out0) as usize;
            self.out.write_all(&self.zbuf[..n])?;
            let done = match flush {
                FlushCompress::Finish => status == Status::StreamEnd,
                // Until the input is taken in.
                FlushCompress::None => input.is_empty(),
                // zlib: a flush is complete when the output was not filled.
                _ => input.is_empty() && n < OUT_BUF,
            };
            if done {
                return Ok(());
            }
        }
    }

    /// `data` as stored blocks (not final), after what the deflater holds.
    fn store(&mut self, data: &[u8]) -> io::Result<()> {
        if self.deflater_used {
            // Out with everything the deflater holds, up to a byte boundary,
            // and start a deflater without history.
            self.deflate(&[], FlushCompress::Sync)?;
            self.deflater.reset();
            self.deflater_used = false;
        }
        self.sbuf.clear();
        for block in data.chunks(STORED_MAX) {
            let len = block.len() as u16;
            // BFINAL 0, BTYPE 00, and the rest of the byte is padding.
            self.sbuf.push(0);
            self.sbuf.extend_from_slice(&len.to_le_bytes());
            self.sbuf.extend_from_slice(&(!len).to_le_bytes());
            self.sbuf.extend_from_slice(block);
        }
        self.out.write_all(&self.sbuf)
    }
}

impl<W: Write> Write for GzipEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        if !self.pending.is_empty() {
            let take = (FEED - self.pending.len()).min(buf.len());
            self.pending.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.pending.len() < FEED {
                return Ok(());
            }
            let whole = std::mem::take(&mut self.pending);
            let r = self.feed(&whole);
            self.pending = whole;
            self.pending.clear();
            r?;
        }
        // Whole feeds straight from the caller's buffer.
        let mut whole = buf.chunks_exact(FEED);
        for feed in &mut whole {
            self.feed(feed)?;
        }
        if !whole.remainder().is_empty() {
            self.pending.reserve_exact(FEED);
            self.pending.extend_from_slice(whole.remainder());
        }
        Ok(())
    }

    /// Flushes the underlying writer. Input short of a whole [`FEED`] stays
    /// buffered until more comes or [`GzipEncoder::finish`]: the output
    /// depends only on the bytes, not on when they were flushed.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_testkit::bytes::{random, system_gunzip};
    use std::io::Read;

    /// Words in a changing order, with numbers: text deflate shrinks ~3×.
    fn text(len: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "layer", "image", "build", "the", "of", "digest", "manifest", "registry", "snapshot",
            "kiln", "RUN", "COPY", "FROM", "a", "to", "stage", "cache",
        ];
        let mut out = Vec::with_capacity(len + 32);
        let picks = random(len, 7);
        let mut i = 0;
        while out.len() < len {
            let p = picks[i % picks.len()] as usize;
            out.extend_from_slice(WORDS[p % WORDS.len()].as_bytes());
            if p % 11 == 0 {
                out.extend_from_slice(format!(" {}\n", i * 37).as_bytes());
            } else {
                out.push(b' ');
            }
            i += 1;
        }
        out.truncate(len);
        out
    }

    /// A tar of files as a layer has them: text, a zero-filled file, an
    /// executable-like file, small random files (each under a chunk), and
    /// directories and symlinks.
    fn typical_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], mode: u32| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(&mut h, path, data).unwrap();
        };
        add("etc/os-release", b"NAME=\"Test\"\nID=test\n", 0o644);
        add("usr/share/doc/README", &text(300_000), 0o644);
        add("var/lib/empty.img", &vec![0u8; 200_000], 0o600);
        // An "executable": short random runs among zeros and repeated code.
        let mut exe = Vec::new();
        for i in 0..40u64 {
            exe.extend_from_slice(b"\x7fELF\x02\x01\x01\0");
            exe.extend_from_slice(&random(3000, i));
            exe.extend_from_slice(&[0u8; 2000]);
            exe.extend_from_slice(&text(1500));
        }
        add("usr/bin/tool", &exe, 0o755);
        for i in 0..20 {
            add(
                &format!("usr/lib/small{i}.bin"),
                &random(1000 + i * 97, 100 + i as u64),
                0o644,
            );
        }
        add("usr/share/data.txt", &text(50_000), 0o644);
        b.into_inner().unwrap()
    }

    fn inputs_without_random_chunks() -> Vec<(&'static str, Vec<u8>)> {
        let mut mixed = text(150_000);
        mixed.extend(vec![0u8; 70_000]);
        mixed.extend(random(20_000, 3)); // short: its chunk is mostly text
        mixed.extend(text(400_000));
        mixed.extend(vec![b'x'; JUDGE]);
        mixed.extend(typical_tar());
        vec![
            ("empty", Vec::new()),
            ("short", b"hello layer".to_vec()),
            ("text", text(FEED + 300_000)),
            ("tar", typical_tar()),
            ("zeros", vec![0u8; 3 * JUDGE + 17]),
            ("mixed", mixed),
        ]
    }

    fn flate2_gzip(data: &[u8], level: u32, split: &[usize]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        write_split(&mut e, data, split);
        e.finish().unwrap()
    }

    fn ours(data: &[u8], level: u32, split: &[usize]) -> Vec<u8> {
        let mut e = GzipEncoder::new(Vec::new(), level).unwrap();
        write_split(&mut e, data, split);
        e.finish().unwrap()
    }

    /// Writes `data` in pieces of the sizes in `split`, over and over.
    fn write_split(w: &mut impl Write, mut data: &[u8], split: &[usize]) {
        let mut i = 0;
        while !data.is_empty() {
            let n = split[i % split.len()].min(data.len());
            w.write_all(&data[..n]).unwrap();
            data = &data[n..];
            i += 1;
        }
    }

    const SPLITS: &[&[usize]] = &[
        &[usize::MAX],
        &[7, 33_333, 250_001],
        &[512, 4096, 1, 100_000],
        &[JUDGE + 1],
        &[FEED + 1],
        &[65_536],
    ];

    /// Decompresses with flate2 and with the system's gzip, checking both
    /// give `want`, and that the trailer has its CRC32 and size.
    fn check_roundtrip(gz: &[u8], want: &[u8]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        assert!(
            out == want,
            "flate2 decoded {} bytes, want {}",
            out.len(),
            want.len()
        );

        let unzipped = system_gunzip(gz);
        assert!(
            unzipped == want,
            "gzip -dc gave {} bytes, want {}",
            unzipped.len(),
            want.len()
        );

        let mut crc = Crc::new();
        crc.update(want);
        let trailer = &gz[gz.len() - 8..];
        assert_eq!(trailer[..4], crc.sum().to_le_bytes());
        assert_eq!(trailer[4..], (want.len() as u32).to_le_bytes());
    }

    /// Without random-looking chunks, the blob is what flate2's GzEncoder
    /// made of the input written to it in 1 MiB pieces (as `write_layer` did),
    /// at every level, however the input is written to this encoder.
    #[test]
    fn compressible_input_gives_flate2s_bytes_at_every_level() {
        for (name, data) in inputs_without_random_chunks() {
            assert!(
                !data.chunks_exact(JUDGE).any(looks_random),
                "{name}: a chunk looks random, the input does not test the deflater"
            );
            for level in 0..=9 {
                let want = flate2_gzip(&data, level, &[FEED]);
                // Every way of writing at the levels in use, two at the others.
                let splits = if [1, 6, 9].contains(&level) {
                    SPLITS
                } else {
                    &SPLITS[..2]
                };
                for split in splits {
                    assert!(
                        ours(&data, level, split) == want,
                        "{name} level {level} split {split:?}: not flate2's bytes"
                    );
                }
            }
        }
    }

    #[test]
    fn the_header_is_flate2s() {
        for level in 0..=9 {
            let ours = ours(b"x", level, &[1]);
            let theirs = flate2_gzip(b"x", level, &[1]);
            assert_eq!(ours[..10], theirs[..10], "level {level}");
        }
    }

    #[test]
    fn random_input_is_stored_and_decompresses() {
        let data = random(5 * JUDGE + 1234, 1);
        for level in [1, 6, 9] {
            let gz = ours(&data, level, &[usize::MAX]);
            check_roundtrip(&gz, &data);
            // Stored: 5 bytes per 64 KiB block, plus header, tail and trailer.
            assert!(
                gz.len() < data.len() + 1500,
                "level {level}: {} bytes for {}",
                gz.len(),
                data.len()
            );
        }
    }

    #[test]
    fn mixed_random_and_text_decompresses() {
        // Text before and after random chunks repeats itself, so that a
        // deflater that kept its history across the stored data would refer
        // back to the wrong bytes.
        let t = text(300_000);
        let mut data = t.clone();
        data.extend(random(3 * JUDGE, 2));
        data.extend(&t);
        data.extend(random(JUDGE + 10, 3));
        data.extend(&t[..1000]);
        data.extend(random(2 * JUDGE, 4));
        for level in [0, 1, 6, 9] {
            let gz = ours(&data, level, &[usize::MAX]);
            check_roundtrip(&gz, &data);
            if level > 0 {
                let plain = flate2_gzip(&data, level, &[usize::MAX]);
                assert!(gz != plain, "level {level}: no chunk was stored");
                assert!(
                    gz.len() <= plain.len() + plain.len() / 100,
                    "level {level}: {} bytes, flate2 {}",
                    gz.len(),
                    plain.len()
                );
            }
        }
        // Ending on a stored chunk, at a chunk boundary.
        let mut data = text(JUDGE);
        data.extend(random(2 * JUDGE, 5));
        check_roundtrip(&ours(&data, 6, &[usize::MAX]), &data);
        // Only stored chunks, no deflated byte at all.
        let data = random(2 * JUDGE, 6);
        check_roundtrip(&ours(&data, 6, &[usize::MAX]), &data);
    }

    #[test]
    fn output_does_not_depend_on_how_the_input_was_written() {
        let mut data = random(JUDGE + 500, 8);
        data.extend(text(2 * JUDGE));
        data.extend(random(4 * JUDGE, 9));
        data.extend(text(1000));
        for level in [1, 6] {
            let want = ours(&data, level, &[usize::MAX]);
            for split in SPLITS {
                assert!(
                    ours(&data, level, split) == want,
                    "level {level} split {split:?}"
                );
            }
        }
    }

    #[test]
    fn looks_random_tells_random_from_structured_bytes() {
        assert!(looks_random(&random(JUDGE, 10)));
        assert!(!looks_random(&text(JUDGE)));
        assert!(!looks_random(&vec![0u8; JUDGE]));
        assert!(!looks_random(&typical_tar()[..JUDGE]));
        // A tar header (mostly zeros) in random data does not stop it.
        let mut chunk = random(JUDGE, 11);
        chunk[5000..5512].copy_from_slice(&typical_tar()[..512]);
        assert!(looks_random(&chunk));
    }
}
