//! User-namespace id mappings for rootless runs.
//!
//! As root the sandbox uses the host's ids directly ([`IdMap::identity`]). As
//! another user it runs in a user namespace where container uid 0 is the user
//! and, when `/etc/subuid`/`/etc/subgid` give a subordinate range and
//! `newuidmap`/`newgidmap` exist, container ids 1..=N are that range. Files the
//! step writes into the upperdir then carry *host* ids; [`IdMap::to_container_uid`]
//! / [`IdMap::to_container_gid`] turn them back into the in-container ids a
//! layer must record, so a rootless layer is identical to a root one.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// One contiguous range: container ids `container..container+size` are host
/// ids `host..host+size`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

impl IdRange {
    fn to_container(self, host: u32) -> Option<u32> {
        (host >= self.host && host - self.host < self.size)
            .then(|| self.container + (host - self.host))
    }
    fn to_host(self, container: u32) -> Option<u32> {
        (container >= self.container && container - self.container < self.size)
            .then(|| self.host + (container - self.container))
    }
}

/// How container ids map to host ids for a run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMap {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
    /// Set when only one id could be mapped: what that limits, for the user.
    pub limitation: Option<String>,
}

const FULL: IdRange = IdRange {
    container: 0,
    host: 0,
    size: u32::MAX,
};

impl IdMap {
    /// No user namespace: container ids are host ids (running as root).
    pub fn identity() -> IdMap {
        IdMap {
            uids: vec![FULL],
            gids: vec![FULL],
            limitation: None,
        }
    }

    pub fn is_identity(&self) -> bool {
        self.uids == [FULL] && self.gids == [FULL]
    }

    /// The mapping the sandbox uses for the current effective user.
    ///
    /// - root of the initial user namespace: identity;
    /// - root of another user namespace (kiln's own, see [`crate::userns`]):
    ///   the ids mapped in that namespace, each to itself (the upperdir already
    ///   holds in-container ids); [`IdMap::limitation`] is set when only one
    ///   id is mapped;
    /// - any other user: 0 → the user plus the subordinate ranges from
    ///   `/etc/subuid` and `/etc/subgid` when `newuidmap`/`newgidmap` are
    ///   installed; otherwise only 0 → the user (with [`IdMap::limitation`] set).
    pub fn for_current_user() -> IdMap {
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        if uid == 0 {
            return match current_maps() {
                None => IdMap::identity(),
                Some(maps) => IdMap::inside_namespace(maps),
            };
        }
        match subordinate_ranges(uid) {
            Ok(((us, un), (gs, gn))) => IdMap {
                uids: vec![
                    IdRange {
                        container: 0,
                        host: uid,
                        size: 1,
                    },
                    IdRange {
                        container: 1,
                        host: us,
                        size: un,
                    },
                ],
                gids: vec![
                    IdRange {
                        container: 0,
                        host: gid,
                        size: 1,
                    },
                    IdRange {
                        container: 1,
                        host: gs,
                        size: gn,
                    },
                ],
                limitation: None,
            },
            Err(why) => IdMap::single_id(uid, gid, &why),
        }
    }

    /// Only `uid`/`gid` mapped, as 0; `why` says why no more could be.
    pub(crate) fn single_id(uid: u32, gid: u32, why: &str) -> IdMap {
        IdMap {
            uids: vec![IdRange {
                container: 0,
                host: uid,
                size: 1,
            }],
            gids: vec![IdRange {
                container: 0,
                host: gid,
                size: 1,
            }],
            limitation: Some(single_id_limitation(why)),
        }
    }

    /// The map of a process that is root in a non-initial user namespace:
    /// every id mapped there stands for itself.
    fn inside_namespace(maps: NamespaceMaps) -> IdMap {
        let own = |lines: &[MapLine]| -> Vec<IdRange> {
            lines
                .iter()
                .map(|l| IdRange {
                    container: l.inside,
                    host: l.inside,
                    size: l.count,
                })
                .collect()
        };
        let mut map = IdMap {
            uids: own(&maps.uids),
            gids: own(&maps.gids),
            limitation: None,
        };
        if map.is_single_id() {
            // Why the namespace got only one id: ask about the user outside it.
            let why = match maps.uids.first() {
                Some(l) => match subordinate_ranges(l.outside) {
                    Ok(_) => "the user namespace was made with one id".to_string(),
                    Err(why) => why,
                },
                None => "the user namespace maps no id".to_string(),
            };
            map.limitation = Some(single_id_limitation(&why));
        }
        map
    }

    /// True when a user namespace with a single mapped id is needed.
    pub fn is_single_id(&self) -> bool {
        !self.is_identity() && self.uids.len() == 1 && self.uids[0].size == 1
    }

    pub fn to_container_uid(&self, host: u32) -> Option<u32> {
        self.uids.iter().find_map(|r| r.to_container(host))
    }
    pub fn to_container_gid(&self, host: u32) -> Option<u32> {
        self.gids.iter().find_map(|r| r.to_container(host))
    }
    pub fn to_host_uid(&self, container: u32) -> Option<u32> {
        self.uids.iter().find_map(|r| r.to_host(container))
    }
    pub fn to_host_gid(&self, container: u32) -> Option<u32> {
        self.gids.iter().find_map(|r| r.to_host(container))
    }
}

fn single_id_limitation(why: &str) -> String {
    format!(
        "rootless: only uid/gid 0 is mapped ({why}); steps cannot run as another USER \
         or chown files to other ids"
    )
}

/// A subordinate id range: (first id, count).
type SubRange = (u32, u32);

/// The subordinate uid and gid ranges of host user `uid`, or why there are
/// none usable.
fn subordinate_ranges(uid: u32) -> Result<(SubRange, SubRange), String> {
    let name = user_name(uid);
    let who = name.clone().unwrap_or_else(|| uid.to_string());
    if find_in_path("newuidmap").is_none() || find_in_path("newgidmap").is_none() {
        return Err("newuidmap/newgidmap (package uidmap) are not installed".into());
    }
    let sub_u = read_subordinate(Path::new("/etc/subuid"), name.as_deref(), uid)
        .ok_or_else(|| format!("/etc/subuid has no range for {who}"))?;
    let sub_g = read_subordinate(Path::new("/etc/subgid"), name.as_deref(), uid)
        .ok_or_else(|| format!("/etc/subgid has no range for {who}"))?;
    Ok((sub_u, sub_g))
}

/// Name of `uid` in the host's /etc/passwd.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _pw = f.next()?;
        (f.next()?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

/// First `name:start:count` (or `uid:start:count`) line of a subordinate-id file.
fn read_subordinate(file: &Path, name: Option<&str>, uid: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_subordinate(&text, name, uid)
}

pub(crate) fn parse_subordinate(text: &str, name: Option<&str>, uid: u32) -> Option<(u32, u32)> {
    let uid_s = uid.to_string();
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let who = f.next()?;
        if Some(who) != name && who != uid_s {
            return None;
        }
        let start = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        (count > 0).then_some((start, count))
    })
}

pub(crate) fn find_in_path(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin:/usr/sbin:/sbin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// One line of `/proc/self/uid_map` or `gid_map`: ids `inside..inside+count`
/// of this namespace are `outside..` of the parent namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLine {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The id maps of the user namespace this process is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceMaps {
    pub uids: Vec<MapLine>,
    pub gids: Vec<MapLine>,
}

fn parse_map(text: &str) -> Vec<MapLine> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace().map(|n| n.parse::<u32>());
            match (f.next(), f.next(), f.next()) {
                (Some(Ok(inside)), Some(Ok(outside)), Some(Ok(count))) => Some(MapLine {
                    inside,
                    outside,
                    count,
                }),
                _ => None,
            }
        })
        .collect()
}

/// The initial user namespace maps every id to itself in one line.
fn is_initial(uids: &[MapLine]) -> bool {
    uids == [MapLine {
        inside: 0,
        outside: 0,
        count: u32::MAX,
    }]
}

/// The maps of this process's user namespace, or None in the initial one
/// (also when `/proc` cannot tell: then nothing suggests a namespace).
pub fn current_maps() -> Option<NamespaceMaps> {
    let uids = parse_map(&std::fs::read_to_string("/proc/self/uid_map").ok()?);
    if uids.is_empty() || is_initial(&uids) {
        return None;
    }
    let gids = std::fs::read_to_string("/proc/self/gid_map")
        .map(|t| parse_map(&t))
        .unwrap_or_default();
    Some(NamespaceMaps { uids, gids })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_lookup_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:300000:1000\nbob:0:0\n";
        assert_eq!(
            parse_subordinate(text, Some("alice"), 5),
            Some((100000, 65536))
        );
        assert_eq!(
            parse_subordinate(text, Some("carol"), 1001),
            Some((300000, 1000))
        );
        assert_eq!(parse_subordinate(text, Some("bob"), 7), None);
    }

    #[test]
    fn maps_host_ids_back_to_container_ids() {
        let m = IdMap {
            uids: vec![
                IdRange {
                    container: 0,
                    host: 1001,
                    size: 1,
                },
                IdRange {
                    container: 1,
                    host: 100000,
                    size: 65536,
                },
            ],
            gids: vec![IdRange {
                container: 0,
                host: 1001,
                size: 1,
            }],
            limitation: None,
        };
        assert_eq!(m.to_container_uid(1001), Some(0));
        assert_eq!(m.to_container_uid(100000), Some(1));
        assert_eq!(m.to_container_uid(101000), Some(1001));
        assert_eq!(m.to_container_uid(165536), None);
        assert_eq!(m.to_host_uid(1001), Some(101000));
        assert_eq!(m.to_container_gid(5), None);
        assert!(!m.is_identity());
        assert!(IdMap::identity().is_identity());
        assert_eq!(IdMap::identity().to_container_uid(4242), Some(4242));
    }

    #[test]
    fn parses_id_maps() {
        let lines =
            parse_map("         0       1001          1\n         1     100000      65536\n");
        assert_eq!(
            lines,
            vec![
                MapLine {
                    inside: 0,
                    outside: 1001,
                    count: 1
                },
                MapLine {
                    inside: 1,
                    outside: 100000,
                    count: 65536
                }
            ]
        );
        assert!(!is_initial(&lines));
        assert!(is_initial(&parse_map("         0          0 4294967295\n")));
    }
}
