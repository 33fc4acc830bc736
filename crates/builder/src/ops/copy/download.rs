//! ADD of an `http://` / `https://` URL, as BuildKit's HTTP source does it
//! (`source/http`, named by `dispatchCopy`): the file is named after the last
//! segment of the URL path (`__unnamed__` when there is none), gets mode 0600 and
//! the `Last-Modified` time (the Unix epoch when the server sends none, as
//! BuildKit's files show), and `--checksum` is checked against the downloaded
//! bytes.

use super::CopyError;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

/// Whether `src` names a git repository (which kiln's ADD does not fetch).
pub fn is_git(src: &str) -> bool {
    if src.starts_with("git@") || src.starts_with("git://") || src.starts_with("ssh://") {
        return true;
    }
    if !(src.starts_with("http://") || src.starts_with("https://")) {
        return false;
    }
    let path = src.split(['#', '?']).next().unwrap_or(src);
    path.ends_with(".git") || path.ends_with(".git/")
}

/// Whether `src` is an http(s) URL (and not a git repository).
pub fn is_url(src: &str) -> bool {
    (src.starts_with("http://") || src.starts_with("https://")) && !is_git(src)
}

/// A parsed `--checksum`: `algorithm:hex` (go-digest: sha256, sha384, sha512).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: String,
    pub hex: String,
}

pub fn parse_checksum(s: &str) -> Result<Checksum, CopyError> {
    let bad = || {
        CopyError::Invalid(format!(
            "invalid checksum {s:?}: expected sha256:<hex digest>"
        ))
    };
    let (alg, hex) = s.split_once(':').ok_or_else(bad)?;
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(CopyError::Invalid(format!(
                "invalid checksum {s:?}: unsupported digest algorithm {alg:?}"
            )))
        }
    };
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    Ok(Checksum {
        algorithm: alg.to_string(),
        hex: hex.to_string(),
    })
}

enum AnyHasher {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl AnyHasher {
    fn new(alg: &str) -> AnyHasher {
        match alg {
            "sha384" => AnyHasher::Sha384(Sha384::new()),
            "sha512" => AnyHasher::Sha512(Sha512::new()),
            _ => AnyHasher::Sha256(Sha256::new()),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            AnyHasher::Sha256(h) => h.update(b),
            AnyHasher::Sha384(h) => h.update(b),
            AnyHasher::Sha512(h) => h.update(b),
        }
    }
    fn hex(self) -> String {
        match self {
            AnyHasher::Sha256(h) => hex::encode(h.finalize()),
            AnyHasher::Sha384(h) => hex::encode(h.finalize()),
            AnyHasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// A downloaded file, alone in a scratch directory.
pub struct Fetched {
    pub dir: tempfile::TempDir,
    pub name: String,
}

/// The file name BuildKit gives a download: `path.Base` of the URL's (decoded) path.
pub fn file_name(url: &str) -> String {
    let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = match after_scheme.find('/') {
        Some(i) => &after_scheme[i..],
        None => "",
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path);
    let trimmed = decoded.trim_end_matches('/');
    let base = trimmed.rsplit('/').next().unwrap_or("");
    if base.is_empty() || base == "." || base == ".." {
        "__unnamed__".to_string()
    } else {
        base.to_string()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Downloads `url` into a scratch directory, checking `checksum` when given.
pub fn download(url: &str, checksum: Option<&str>) -> Result<Fetched, CopyError> {
    let want = checksum.map(parse_checksum).transpose()?;
    let fail = |message: String| CopyError::Download {
        url: url.to_string(),
        message,
    };
    let mut resp = kiln_oci::registry::client::agent()
        .get(url)
        .call()
        .map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(fail(format!("server answered {status}")));
    }
    let modified = resp
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    let name = file_name(url);
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let path = dir.path().join(&name);
    let mut hasher = AnyHasher::new(want.as_ref().map_or("sha256", |c| c.algorithm.as_str()));
    {
        let mut out = File::create(&path).map_err(|e| fail(e.to_string()))?;
        let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(fail(e.to_string())),
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| fail(e.to_string()))?;
        }
    }
    let got = hasher.hex();
    if let Some(want) = want {
        if want.hex != got {
            return Err(CopyError::ChecksumMismatch {
                url: url.to_string(),
                expected: format!("{}:{}", want.algorithm, want.hex),
                actual: format!("{}:{got}", want.algorithm),
            });
        }
    }
    set_mode_and_time(&path, modified).map_err(|e| fail(e.to_string()))?;
    Ok(Fetched { dir, name })
}

fn set_mode_and_time(path: &Path, modified: Option<i64>) -> io::Result<()> {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    super::upper::set_times_at(path, super::upper::Times::at(modified.unwrap_or(0)))
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 7231 IMF-fixdate) to
/// Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let day: i64 = parts[1].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])? as i64
        + 1;
    let year: i64 = parts[3].parse().ok()?;
    let hms: Vec<i64> = parts[4]
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if hms.len() != 3 || !(1..=31).contains(&day) || hms[0] > 23 || hms[1] > 59 || hms[2] > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_dates_and_checksums() {
        assert_eq!(
            file_name("https://example.com/a/b/tool.tar.gz?x=1#f"),
            "tool.tar.gz"
        );
        assert_eq!(file_name("http://127.0.0.1:8080/"), "__unnamed__");
        assert_eq!(file_name("http://127.0.0.1:8080"), "__unnamed__");
        assert_eq!(file_name("http://h/dir/a%20b.txt"), "a b.txt");
        assert_eq!(file_name("http://h/dir/"), "dir");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("garbage"), None);
        assert!(is_git("https://github.com/moby/buildkit.git#v0.1"));
        assert!(is_git("git@github.com:moby/buildkit.git"));
        assert!(!is_url("git@github.com:moby/buildkit.git"));
        assert!(is_url("https://example.com/file.txt"));
        assert!(!is_url("file.txt"));
        let ok = format!("sha256:{}", "a".repeat(64));
        assert!(parse_checksum(&ok).is_ok());
        assert!(parse_checksum("sha256:abc").is_err());
        assert!(parse_checksum("md5:abc").is_err());
        assert!(parse_checksum("nocolon").is_err());
    }
}
