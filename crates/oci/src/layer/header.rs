//! Tar header policy for the layers kiln writes: ustar headers when every field
//! fits, otherwise a PAX extended header in front (the way Go's `archive/tar`, and
//! so containerd and BuildKit, decide). Fields are formatted byte for byte like Go's
//! writer: zero-padded octal with a trailing NUL, empty uname/gname, device numbers
//! always present.

use std::collections::BTreeMap;

pub(crate) const BLOCK: usize = 512;

/// The largest value an octal field of `len` bytes (with its NUL) can hold.
fn octal_max(len: usize) -> u64 {
    (1u64 << (3 * (len as u32 - 1))) - 1
}

fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

fn put_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// What a tar entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryType {
    Regular,
    HardLink,
    Symlink,
    Char,
    Block,
    Directory,
    Fifo,
}

impl EntryType {
    fn flag(self) -> u8 {
        match self {
            EntryType::Regular => b'0',
            EntryType::HardLink => b'1',
            EntryType::Symlink => b'2',
            EntryType::Char => b'3',
            EntryType::Block => b'4',
            EntryType::Directory => b'5',
            EntryType::Fifo => b'6',
        }
    }
}

/// Everything kiln records about one entry.
#[derive(Clone, Debug)]
pub(crate) struct EntryMeta {
    /// Path relative to the layer root; directories end in `/`.
    pub name: Vec<u8>,
    pub kind: EntryType,
    /// Permission bits plus setuid/setgid/sticky (no file type bits).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub link_name: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extended attributes, stored as `SCHILY.xattr.<name>` PAX records.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl EntryMeta {
    pub(crate) fn new(name: Vec<u8>, kind: EntryType) -> Self {
        EntryMeta {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            link_name: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
        }
    }
}

/// Splits a long name into ustar's prefix (≤155) and name (≤100) at a `/`, like Go's
/// `splitUSTARPath`.
fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 || !name.is_ascii() {
        return None;
    }
    let limit = name.len().min(156);
    let i = name[..limit].iter().rposition(|&b| b == b'/')?;
    let (prefix, rest) = (&name[..i], &name[i + 1..]);
    if i == 0 || prefix.len() > 155 || rest.is_empty() || rest.len() > 100 {
        return None;
    }
    Some((prefix, rest))
}

/// One PAX record, `"<len> <key>=<value>\n"` where `<len>` counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    loop {
        let total = body + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn base_header() -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h
}

fn finish_checksum(h: &mut [u8; BLOCK]) {
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}");
    h[148..154].copy_from_slice(s.as_bytes());
    h[154] = 0;
    h[155] = b' ';
}

/// The header block(s) for `meta`: either one ustar block, or a PAX `x` header, its
/// records padded to a block, and the ustar block. Errors name what cannot be
/// represented at all (device numbers beyond ustar's range).
pub(crate) fn encode(meta: &EntryMeta) -> Result<Vec<u8>, String> {
    let mut pax: BTreeMap<&[u8], Vec<u8>> = BTreeMap::new();
    let mut needs_pax = false;

    let split = split_ustar(&meta.name);
    if !meta.name.is_ascii() || meta.name.len() > 100 {
        pax.insert(b"path", meta.name.clone());
        if split.is_none() {
            needs_pax = true;
        }
    }
    if !meta.link_name.is_ascii() || meta.link_name.len() > 100 {
        pax.insert(b"linkpath", meta.link_name.clone());
        needs_pax = true;
    }
    let fits = |v: u64, len: usize| v <= octal_max(len);
    if !fits(meta.uid, 8) {
        pax.insert(b"uid", meta.uid.to_string().into_bytes());
        needs_pax = true;
    }
    if !fits(meta.gid, 8) {
        pax.insert(b"gid", meta.gid.to_string().into_bytes());
        needs_pax = true;
    }
    if !fits(meta.size, 12) {
        pax.insert(b"size", meta.size.to_string().into_bytes());
        needs_pax = true;
    }
    if meta.mtime < 0 || !fits(meta.mtime as u64, 12) {
        pax.insert(b"mtime", meta.mtime.to_string().into_bytes());
        needs_pax = true;
    }
    if !fits(u64::from(meta.dev_major), 8) || !fits(u64::from(meta.dev_minor), 8) {
        return Err(format!(
            "device number {}:{} is too large for a tar header",
            meta.dev_major, meta.dev_minor
        ));
    }
    let mut xattr_keys = Vec::new();
    for name in meta.xattrs.keys() {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name);
        xattr_keys.push(key);
    }
    if !meta.xattrs.is_empty() {
        needs_pax = true;
    }

    let mut out = Vec::with_capacity(BLOCK * 3);
    let mut h = base_header();
    // Numeric fields that overflow are written as 0; the PAX record carries them.
    let num = |h: &mut [u8; BLOCK], range: std::ops::Range<usize>, v: u64| {
        let len = range.len();
        put_octal(&mut h[range], if fits(v, len) { v } else { 0 });
    };

    if needs_pax {
        let mut records = Vec::new();
        // Go sorts the records by key; xattrs are interleaved by that same order.
        let mut all: BTreeMap<Vec<u8>, &[u8]> = BTreeMap::new();
        for (k, v) in &pax {
            all.insert(k.to_vec(), v);
        }
        for (key, (_, v)) in xattr_keys.into_iter().zip(meta.xattrs.iter()) {
            all.insert(key, v);
        }
        for (k, v) in &all {
            pax_record(&mut records, k, v);
        }
        // The extended header's own name, as Go writes it: dir/PaxHeaders.0/base.
        let trimmed = meta.name.strip_suffix(b"/").unwrap_or(&meta.name);
        let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
            Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
            None => (&b""[..], trimmed),
        };
        let mut xname = dir.to_vec();
        xname.extend_from_slice(b"PaxHeaders.0/");
        xname.extend_from_slice(base);
        let mut xh = base_header();
        put_bytes(&mut xh[0..100], &xname);
        put_octal(&mut xh[100..108], 0);
        put_octal(&mut xh[108..116], 0);
        put_octal(&mut xh[116..124], 0);
        put_octal(&mut xh[124..136], records.len() as u64);
        put_octal(&mut xh[136..148], 0);
        xh[156] = b'x';
        put_octal(&mut xh[329..337], 0);
        put_octal(&mut xh[337..345], 0);
        finish_checksum(&mut xh);
        out.extend_from_slice(&xh);
        out.extend_from_slice(&records);
        out.resize(out.len().next_multiple_of(BLOCK), 0);
        put_bytes(&mut h[0..100], &meta.name);
    } else if let Some((prefix, rest)) = split {
        put_bytes(&mut h[0..100], rest);
        put_bytes(&mut h[345..500], prefix);
    } else {
        put_bytes(&mut h[0..100], &meta.name);
    }

    num(&mut h, 100..108, u64::from(meta.mode & 0o7777));
    num(&mut h, 108..116, meta.uid);
    num(&mut h, 116..124, meta.gid);
    num(&mut h, 124..136, meta.size);
    num(
        &mut h,
        136..148,
        if meta.mtime < 0 { 0 } else { meta.mtime as u64 },
    );
    h[156] = meta.kind.flag();
    put_bytes(&mut h[157..257], &meta.link_name);
    put_octal(&mut h[329..337], u64::from(meta.dev_major));
    put_octal(&mut h[337..345], u64::from(meta.dev_minor));
    finish_checksum(&mut h);
    out.extend_from_slice(&h);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    type PaxList = Vec<(String, Vec<u8>)>;

    fn read_back(blocks: &[u8]) -> (Vec<u8>, tar::Header, PaxList) {
        let mut data = blocks.to_vec();
        data.extend_from_slice(&[0u8; 1024]);
        let mut ar = tar::Archive::new(&data[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        let pax = e
            .pax_extensions()
            .unwrap()
            .map(|exts| {
                exts.map(|x| {
                    let x = x.unwrap();
                    (x.key().unwrap().to_string(), x.value_bytes().to_vec())
                })
                .collect()
            })
            .unwrap_or_default();
        (e.path_bytes().into_owned(), e.header().clone(), pax)
    }

    #[test]
    fn short_entry_is_plain_ustar_formatted_like_go() {
        let mut m = EntryMeta::new(b"etc/passwd".to_vec(), EntryType::Regular);
        m.mode = 0o4755;
        m.uid = 1000;
        m.gid = 100;
        m.size = 1234;
        m.mtime = 1_700_000_000;
        let b = encode(&m).unwrap();
        assert_eq!(b.len(), BLOCK);
        assert_eq!(&b[100..108], b"0004755\0");
        assert_eq!(&b[108..116], b"0001750\0");
        assert_eq!(&b[124..136], b"00000002322\0");
        assert_eq!(&b[257..265], b"ustar\x0000");
        assert_eq!(&b[265..297], &[0u8; 32][..], "uname is empty");
        assert_eq!(&b[329..337], b"0000000\0");
        let (path, h, pax) = read_back(&b);
        assert_eq!(path, b"etc/passwd");
        assert_eq!(h.mode().unwrap(), 0o4755);
        assert_eq!(h.mtime().unwrap(), 1_700_000_000);
        assert!(pax.is_empty());
    }

    #[test]
    fn long_splittable_name_uses_the_ustar_prefix() {
        let name = format!("{}/{}", "d".repeat(120), "f".repeat(50));
        let m = EntryMeta::new(name.clone().into_bytes(), EntryType::Regular);
        let b = encode(&m).unwrap();
        assert_eq!(b.len(), BLOCK);
        assert_eq!(read_back(&b).0, name.as_bytes());
    }

    #[test]
    fn long_names_links_big_ids_and_xattrs_go_to_pax() {
        let name = "n".repeat(180);
        let mut m = EntryMeta::new(name.clone().into_bytes(), EntryType::Symlink);
        m.link_name = "t".repeat(150).into_bytes();
        m.uid = 5_000_000;
        m.xattrs.insert(
            b"security.capability".to_vec(),
            vec![1, 0, 0, 2, 0, 0x20, 0, 0],
        );
        let b = encode(&m).unwrap();
        let (path, h, pax) = read_back(&b);
        assert_eq!(path, name.as_bytes());
        assert_eq!(h.uid().unwrap(), 5_000_000);
        let keys: Vec<&str> = pax.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "SCHILY.xattr.security.capability",
                "linkpath",
                "path",
                "uid"
            ]
        );
        assert_eq!(pax[0].1, vec![1, 0, 0, 2, 0, 0x20, 0, 0]);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", &[b'a'; 93]);
        // 3 + 1 + 4 + 1 + 93 + 1 = 103 bytes, and "103" has three digits.
        assert!(out.starts_with(b"102 ") || out.starts_with(b"103 "));
        let len: usize = std::str::from_utf8(&out[..3]).unwrap().parse().unwrap();
        assert_eq!(len, out.len());
    }
}
