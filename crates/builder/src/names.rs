//! File names that are not UTF-8, carried losslessly in `String`s.
//!
//! Linux file names are bytes, and BuildKit (Go strings are bytes) copies any
//! of them. kiln's build code handles paths as `/`-separated `String`s (for
//! `.dockerignore` rules, COPY globs, cache keys), so a name is *encoded* when
//! it is read from the file system and *decoded* where a path goes back to it:
//!
//! - every byte that is not part of a UTF-8 character becomes one character
//!   U+10FF00 + byte (U+10FF80..U+10FFFF, at the end of a private use plane);
//! - so do the bytes of a real character in that range (its four bytes
//!   become four such characters), which keeps the encoding one-to-one;
//! - everything else, `/` and all valid UTF-8, stays as it is.
//!
//! Names that are valid UTF-8 (nearly all) are their own encoding. A glob
//! sees each undecodable byte as one character, as Go's `filepath.Match`
//! and regexps see it as one `utf8.RuneError`. In messages, [`display`] shows
//! those bytes as U+FFFD.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The first character that stands for a byte (byte 0x80).
const FIRST: u32 = 0x10FF80;
/// What is added to a byte to make its character.
const BASE: u32 = 0x10FF00;

fn stands_for_byte(c: char) -> bool {
    (c as u32) >= FIRST
}

fn byte_char(b: u8) -> char {
    // 0x10FF80..=0x10FFFF: valid scalar values.
    char::from_u32(BASE + u32::from(b)).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The in-build name of the file name (or path) `bytes`.
pub fn encode(bytes: &[u8]) -> Cow<'_, str> {
    // Characters of the escape range start with 0xF4; without one, valid
    // UTF-8 is its own encoding.
    if let Ok(s) = std::str::from_utf8(bytes) {
        if !bytes.contains(&0xF4) || !s.chars().any(stands_for_byte) {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if stands_for_byte(c) {
                let mut buf = [0u8; 4];
                for &b in c.encode_utf8(&mut buf).as_bytes() {
                    out.push(byte_char(b));
                }
            } else {
                out.push(c);
            }
        }
        for &b in chunk.invalid() {
            out.push(byte_char(b));
        }
    }
    Cow::Owned(out)
}

/// [`encode`] of an OS string (a name from `read_dir`, a symlink target).
pub fn encode_os(name: &OsStr) -> Cow<'_, str> {
    encode(name.as_bytes())
}

/// The file name (or path) bytes that `name` (from [`encode`]) stands for.
pub fn decode(name: &str) -> Cow<'_, [u8]> {
    if !name.as_bytes().contains(&0xF4) {
        return Cow::Borrowed(name.as_bytes());
    }
    let mut out = Vec::with_capacity(name.len());
    for c in name.chars() {
        if stands_for_byte(c) {
            out.push((c as u32 - BASE) as u8);
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    Cow::Owned(out)
}

/// `name` decoded, as a relative or absolute path.
pub fn path(name: &str) -> Cow<'_, Path> {
    match decode(name) {
        Cow::Borrowed(b) => Cow::Borrowed(Path::new(OsStr::from_bytes(b))),
        Cow::Owned(v) => Cow::Owned(PathBuf::from(std::ffi::OsString::from_vec(v))),
    }
}

/// `name` for a message: each byte that is not UTF-8 shown as U+FFFD.
pub fn display(name: &str) -> Cow<'_, str> {
    if !name.chars().any(stands_for_byte) {
        return Cow::Borrowed(name);
    }
    Cow::Owned(String::from_utf8_lossy(&decode(name)).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_names_are_their_own_encoding() {
        for name in ["", "a/b.txt", "café/ü", "日本語", "\u{10FF7F}", "🚀"] {
            assert!(
                matches!(encode(name.as_bytes()), Cow::Borrowed(_)),
                "{name}"
            );
            assert_eq!(encode(name.as_bytes()), name);
            assert_eq!(decode(name), name.as_bytes());
            assert_eq!(display(name), name);
        }
    }

    #[test]
    fn other_bytes_round_trip() {
        let cases: &[&[u8]] = &[
            b"caf\xe9",
            b"a/\xff\xfe/b",
            b"\xf0\x9f\x9a",          // a truncated 4-byte character
            b"\xed\xa0\x80",          // an encoded surrogate
            b"x\xc3",                 // a lone lead byte at the end
            "\u{10FF80}".as_bytes(),  // a real character of the escape range
            b"a\xf4\x8f\xbf\xbf\xe9", // U+10FFFF, then a byte
        ];
        for &bytes in cases {
            let enc = encode(bytes);
            assert_eq!(decode(&enc).as_ref(), bytes, "{bytes:?} -> {enc:?}");
            assert_eq!(path(&enc).as_os_str().as_bytes(), bytes);
        }
        // One character per byte that is not UTF-8; `/` and ASCII unchanged.
        let enc = encode(b"d\xe9j\xe0/v\xf9");
        let chars: Vec<char> = enc.chars().collect();
        assert_eq!(chars.len(), 7);
        assert_eq!(
            (chars[0], chars[2], chars[4], chars[5]),
            ('d', 'j', '/', 'v')
        );
        assert_eq!(display(&enc), "d\u{FFFD}j\u{FFFD}/v\u{FFFD}");
        // Different names, different encodings.
        assert_ne!(encode(b"\xe9"), encode("\u{10FFE9}".as_bytes()));
        assert_ne!(encode(b"\xe9"), encode("é".as_bytes()));
    }
}
