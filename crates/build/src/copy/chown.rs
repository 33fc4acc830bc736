//! `--chown`: `user`, `user:group`, `uid`, `uid:gid` (mixable), with names looked up
//! in the `/etc/passwd` and `/etc/group` of the filesystem being copied into.
//!
//! BuildKit's rules (client/llb `WithUser` splits and parses; the worker's
//! `solver/llbsolver/ops/user_linux.go` `readUser` resolves):
//! - `root` and decimal numbers are ids; anything else is a name.
//! - a user id alone gives uid = gid = that id; a user name gives that user's uid
//!   and primary gid from `/etc/passwd`;
//! - a group (after `:`) replaces the gid: a number directly, a name via
//!   `/etc/group`;
//! - a name that is not found (or a missing passwd/group file) leaves 0 in its
//!   place — BuildKit does not fail there, and neither do we.

use crate::fsview::LayeredView;
use std::io::{self, Read};

/// The passwd/group files are read up to this size, as BuildKit does.
const MAX_USER_FILE: u64 = 10 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Id(u32),
    Name(String),
}

fn parse_part(s: &str) -> Result<Part, String> {
    if s == "root" {
        return Ok(Part::Id(0));
    }
    // Go's strconv.ParseInt(s, 10, 32): optional sign, decimal digits.
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<i32>() {
            Ok(v) if v >= 0 => Ok(Part::Id(v as u32)),
            _ => Err(format!("invalid --chown id {s:?}")),
        };
    }
    Ok(Part::Name(s.to_string()))
}

/// Resolves a `--chown` value to (uid, gid) against `view`'s user database.
pub fn resolve(spec: &str, view: &LayeredView) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (mut uid, mut gid) = (0u32, 0u32);
    match parse_part(user)? {
        Part::Id(id) => (uid, gid) = (id, id),
        Part::Name(name) => {
            if let Some(text) = read_user_file(view, "/etc/passwd")? {
                if let Some((u, g)) = find_in(&text, &name, |f| {
                    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
                }) {
                    (uid, gid) = (u, g);
                }
            }
        }
    }
    if let Some(group) = group {
        match parse_part(group)? {
            Part::Id(id) => gid = id,
            Part::Name(name) => {
                if let Some(text) = read_user_file(view, "/etc/group")? {
                    if let Some(g) = find_in(&text, &name, |f| f.get(2)?.parse().ok()) {
                        gid = g;
                    }
                }
            }
        }
    }
    Ok((uid, gid))
}

/// The first line of a passwd/group file whose name field is `name`, parsed by `f`.
fn find_in<T>(text: &str, name: &str, f: impl Fn(&[&str]) -> Option<T>) -> Option<T> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|fields| fields.first() == Some(&name))
        .find_map(|fields| f(&fields))
}

/// Reads a user database file (`/etc/passwd`, `/etc/group`) through the
/// view, symlinks resolved inside it; `None` when it does not exist. Only a
/// regular file of at most 10 MiB is read: the image decides what is there,
/// and a FIFO or device node would be opened on the host.
pub fn read_user_file(view: &LayeredView, path: &str) -> Result<Option<String>, String> {
    let entry = match view.lookup(path, true) {
        Ok(Some(e)) => e,
        Ok(None) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
            return Ok(None)
        }
        Err(e) => return Err(format!("reading {path}: {e}")),
    };
    if !entry.metadata.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    let read = || -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        let fd = rustix::fs::open(
            &entry.host_path,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        std::fs::File::from(fd)
            .take(MAX_USER_FILE + 1)
            .read_to_end(&mut buf)?;
        Ok(buf)
    };
    let buf = read().map_err(|e| format!("reading {path}: {e}"))?;
    if buf.len() as u64 > MAX_USER_FILE {
        return Err(format!("{path} exceeds {MAX_USER_FILE} bytes"));
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsview::tests::write;

    #[test]
    fn names_and_ids() {
        let l = tempfile::tempdir().unwrap();
        write(
            l.path(),
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\n# comment\ndaemon:x:1:1::/:/sbin/nologin\napp:x:1000:1001::/home/app:/bin/sh\n",
        );
        write(
            l.path(),
            "etc/group",
            "root:x:0:\nstaff:x:50:app\napp:x:1001:\n",
        );
        let v = LayeredView::new(vec![l.path().into()]);
        assert_eq!(resolve("app", &v).unwrap(), (1000, 1001));
        assert_eq!(resolve("app:staff", &v).unwrap(), (1000, 50));
        assert_eq!(resolve("daemon", &v).unwrap(), (1, 1));
        assert_eq!(resolve("1000", &v).unwrap(), (1000, 1000));
        assert_eq!(resolve("1000:nobody", &v).unwrap(), (1000, 1000));
        assert_eq!(resolve("300:400", &v).unwrap(), (300, 400));
        assert_eq!(resolve("root:staff", &v).unwrap(), (0, 50));
        assert_eq!(resolve("ghost", &v).unwrap(), (0, 0));
        assert_eq!(resolve("app:", &v).unwrap(), (1000, 1001));
        assert!(resolve("-5", &v).is_err());
        let empty = LayeredView::new(Vec::new());
        assert_eq!(resolve("app:staff", &empty).unwrap(), (0, 0));
    }
}
