//! `USER` resolution against a rootfs's `/etc/passwd` and `/etc/group`, with
//! the rules of BuildKit (moby/sys/user `GetExecUser` plus its numeric fast path).

/// A USER that names a user or group the image does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
}

/// The ids a step runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (only for the `name` / `uid` form without a group).
    pub groups: Vec<u32>,
    /// The user's home directory from passwd, `/` when unknown (runc's default
    /// for `HOME` when the environment has none).
    pub home: String,
}

impl ResolvedUser {
    /// The groups to `setgroups`: the primary gid first, then the supplementary
    /// ones (BuildKit's `ensureAdditionalGids`, from containerd).
    pub fn additional_gids(&self) -> Vec<u32> {
        let mut g = self.groups.clone();
        if !g.contains(&self.gid) {
            g.insert(0, self.gid);
        }
        g
    }
}

/// One line of `/etc/passwd` (the fields kiln uses).
pub struct PasswdEntry<'a> {
    pub name: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub home: &'a str,
}

/// One line of `/etc/group`.
pub struct GroupEntry<'a> {
    pub name: &'a str,
    pub gid: u32,
    pub members: Vec<&'a str>,
}

/// The entries of a passwd file: blank and `#` lines and lines whose ids are
/// not numbers skipped. The one parser of the format in kiln.
pub fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut f = line.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        let _gecos = f.next();
        let home = f.next().unwrap_or("");
        Some(PasswdEntry {
            name,
            uid,
            gid,
            home,
        })
    })
}

/// The entries of a group file, as [`passwd_entries`] reads passwd.
pub fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut f = line.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        let gid = f.next()?.parse().ok()?;
        let members = f
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        Some(GroupEntry { name, gid, members })
    })
}

/// Resolves `spec` (`name|uid[:group|gid]`, empty = root). `passwd`/`group`
/// are the files' contents, None when the rootfs lacks them.
pub fn resolve_user(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, UserError> {
    if spec.is_empty() {
        // Default user: root, but with root's supplementary groups when known.
        return resolve_user("0", passwd, group).or(Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            home: "/".into(),
        }));
    }
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = passwd.unwrap_or("");
    let home_of = |uid: u32| {
        passwd_entries(passwd)
            .find(|e| e.uid == uid)
            .map(|e| e.home)
            .filter(|h| !h.is_empty())
            .unwrap_or("/")
            .to_string()
    };
    // Fast path: both numeric → no group lookups, no supplementary groups.
    if let Some(g) = group_arg {
        if let (Ok(uid), Ok(gid)) = (user_arg.parse::<u32>(), g.parse::<u32>()) {
            return Ok(ResolvedUser {
                uid,
                gid,
                groups: Vec::new(),
                home: home_of(uid),
            });
        }
    }
    let numeric_user = user_arg.parse::<u32>().ok();
    let found = passwd_entries(passwd).find(|e| e.name == user_arg || Some(e.uid) == numeric_user);
    let home = found
        .as_ref()
        .map(|e| e.home)
        .filter(|h| !h.is_empty())
        .unwrap_or("/")
        .to_string();
    let (uid, mut gid, name) = match (&found, numeric_user) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name)),
        (None, Some(uid)) => (uid, 0, None),
        (None, None) => return Err(UserError::UnknownUser(user_arg.to_string())),
    };
    let mut groups = Vec::new();
    let group_text = group.unwrap_or("");
    match group_arg {
        Some(g) => {
            let numeric = g.parse::<u32>().ok();
            match group_entries(group_text).find(|e| e.name == g || Some(e.gid) == numeric) {
                Some(e) => gid = e.gid,
                None => match numeric {
                    Some(n) => gid = n,
                    None => return Err(UserError::UnknownGroup(g.to_string())),
                },
            }
        }
        None => {
            if let Some(name) = name {
                groups = group_entries(group_text)
                    .filter(|e| e.members.contains(&name))
                    .map(|e| e.gid)
                    .collect();
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nuser:x:1001:1001::/home/user:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nuser:x:1001:\nextra:x:2000:user,other\nwheel:x:10:root\n";

    fn r(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve_user(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(
            r("user").unwrap(),
            ResolvedUser {
                uid: 1001,
                gid: 1001,
                groups: vec![2000],
                home: "/home/user".into()
            }
        );
        assert_eq!(
            r("1001").unwrap(),
            ResolvedUser {
                uid: 1001,
                gid: 1001,
                groups: vec![2000],
                home: "/home/user".into()
            }
        );
        assert_eq!(
            r("").unwrap(),
            ResolvedUser {
                uid: 0,
                gid: 0,
                groups: vec![10],
                home: "/root".into()
            }
        );
        assert_eq!(
            r("4242").unwrap(),
            ResolvedUser {
                uid: 4242,
                gid: 0,
                groups: vec![],
                home: "/".into()
            }
        );
        assert_eq!(
            r("1001:1001").unwrap(),
            ResolvedUser {
                uid: 1001,
                gid: 1001,
                groups: vec![],
                home: "/home/user".into()
            }
        );
        assert_eq!(
            r("user:extra").unwrap(),
            ResolvedUser {
                uid: 1001,
                gid: 2000,
                groups: vec![],
                home: "/home/user".into()
            }
        );
        assert_eq!(
            r("user:77").unwrap(),
            ResolvedUser {
                uid: 1001,
                gid: 77,
                groups: vec![],
                home: "/home/user".into()
            }
        );
    }

    #[test]
    fn additional_gids_start_with_the_primary_gid() {
        assert_eq!(r("user").unwrap().additional_gids(), vec![1001, 2000]);
        assert_eq!(r("1001:1001").unwrap().additional_gids(), vec![1001]);
        assert_eq!(r("").unwrap().additional_gids(), vec![0, 10]);
    }

    #[test]
    fn unknown_names_are_errors() {
        assert!(r("nobody")
            .unwrap_err()
            .to_string()
            .contains("unable to find user nobody"));
        assert!(r("user:nogroup")
            .unwrap_err()
            .to_string()
            .contains("unable to find group nogroup"));
        assert_eq!(
            resolve_user("", None, None).unwrap(),
            ResolvedUser {
                uid: 0,
                gid: 0,
                groups: vec![],
                home: "/".into()
            }
        );
    }
}
