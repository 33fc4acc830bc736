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

use crate::snapshot::merged_view::{LayeredView, UserFileError};
use kiln_sandbox::user::{group_entries, passwd_entries};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Id(u32),
    Name(String),
}

/// Why a `--chown` value could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ChownError {
    #[error("invalid --chown id {0:?}")]
    BadId(String),
    #[error(transparent)]
    UserFile(#[from] UserFileError),
}

fn parse_part(s: &str) -> Result<Part, ChownError> {
    if s == "root" {
        return Ok(Part::Id(0));
    }
    // Go's strconv.ParseInt(s, 10, 32): optional sign, decimal digits.
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<i32>() {
            Ok(v) if v >= 0 => Ok(Part::Id(v as u32)),
            _ => Err(ChownError::BadId(s.to_string())),
        };
    }
    Ok(Part::Name(s.to_string()))
}

/// Resolves a `--chown` value to (uid, gid) against `view`'s user database.
pub fn resolve(spec: &str, view: &LayeredView) -> Result<(u32, u32), ChownError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (mut uid, mut gid) = (0u32, 0u32);
    match parse_part(user)? {
        Part::Id(id) => (uid, gid) = (id, id),
        Part::Name(name) => {
            if let Some(text) = view.read_user_file("/etc/passwd")? {
                if let Some(e) = passwd_entries(&text).find(|e| e.name == name) {
                    (uid, gid) = (e.uid, e.gid);
                }
            }
        }
    }
    if let Some(group) = group {
        match parse_part(group)? {
            Part::Id(id) => gid = id,
            Part::Name(name) => {
                if let Some(text) = view.read_user_file("/etc/group")? {
                    if let Some(e) = group_entries(&text).find(|e| e.name == name) {
                        gid = e.gid;
                    }
                }
            }
        }
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_testkit::tree::write;

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
