//! A normalized description of an image, for comparing two builders' results:
//! the merged file tree of its layers (paths, types, modes, owners, sizes, content
//! hashes, symlink targets) and the runtime part of its config — nothing that
//! depends on when or by whom the image was built (no timestamps, no layer digests).
//!
//! The tree is computed straight from the layers' tar streams with OCI layer
//! semantics: entries of later layers replace earlier ones, `.wh.NAME` deletes
//! `NAME` (and everything below it) from the layers underneath, and
//! `.wh..wh..opq` in a directory hides everything the layers underneath had in it.
//! A hard link is described as the regular file it links to.

use kiln_oci::image::{ContainerConfig, ImageConfig};
use kiln_oci::layer::whiteout::{classify, Whiteout};
use kiln_oci::path::clean_relative;
use kiln_oci::Hasher;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read;

/// What a path in the merged tree is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { size: u64, sha256: String },
    Symlink { target: String },
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
    Fifo,
}

/// One path of the merged tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Extended attributes (PAX `SCHILY.xattr.*`), values shown lossily as text.
    pub xattrs: BTreeMap<String, String>,
}

/// The merged file tree of an image; keys are paths without a leading `/`
/// (`etc/passwd`), the root itself is not listed.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// Paths strictly below `dir` (`""` is the root).
    fn descendants(&self, dir: &str) -> Vec<String> {
        if dir.is_empty() {
            return self.nodes.keys().cloned().collect();
        }
        let prefix = format!("{dir}/");
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn remove_below(&mut self, dir: &str, keep: &BTreeSet<String>) {
        for p in self.descendants(dir) {
            if !keep.contains(&p) {
                self.nodes.remove(&p);
            }
        }
    }

    /// Make every ancestor of `path` a directory (missing ones as 0755 root:root,
    /// the way layer extraction creates them).
    fn ensure_parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let dir = &path[..end + i];
            let is_dir = matches!(self.nodes.get(dir), Some(n) if n.kind == Kind::Dir);
            if !is_dir {
                self.remove_below(dir, &BTreeSet::new());
                self.nodes.insert(
                    dir.to_string(),
                    Node {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        xattrs: BTreeMap::new(),
                    },
                );
            }
            end += i + 1;
        }
    }

    fn insert(&mut self, path: String, node: Node) {
        self.ensure_parents(&path);
        let replaces_dir_children = node.kind != Kind::Dir
            && matches!(self.nodes.get(&path), Some(old) if old.kind == Kind::Dir);
        if replaces_dir_children {
            self.remove_below(&path, &BTreeSet::new());
        }
        self.nodes.insert(path, node);
    }

    /// Apply one layer given as its (uncompressed) tar stream.
    pub fn apply_layer(&mut self, tar_stream: impl Read) -> Result<(), String> {
        let mut archive = tar::Archive::new(tar_stream);
        // Paths this layer itself wrote: whiteouts and opaque markers only hide
        // what the layers underneath had.
        let mut written: BTreeSet<String> = BTreeSet::new();
        let entries = archive
            .entries()
            .map_err(|e| format!("reading the layer: {e}"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("reading the layer: {e}"))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path =
                clean_relative(&raw).ok_or_else(|| format!("{raw}: the name leaves the root"))?;
            if path.is_empty() {
                // The root directory itself: not part of the description.
                continue;
            }
            let (parent, base) = split_parent(&path);
            match classify(base.as_bytes()) {
                Whiteout::None => {}
                Whiteout::Opaque => {
                    self.remove_below(parent, &written);
                    continue;
                }
                Whiteout::Delete(hidden) => {
                    let hidden = String::from_utf8_lossy(hidden);
                    let victim = if parent.is_empty() {
                        hidden.into_owned()
                    } else {
                        format!("{parent}/{hidden}")
                    };
                    if !written.contains(&victim) {
                        self.remove_below(&victim, &written);
                        self.nodes.remove(&victim);
                    }
                    continue;
                }
                // AUFS metadata (`.wh..wh.plnk`, …) is no file of the image.
                Whiteout::Meta => continue,
            }
            let header = entry.header().clone();
            let mode = header.mode().map_err(|e| format!("{raw}: bad mode: {e}"))? & 0o7777;
            let mut uid = header.uid().map_err(|e| format!("{raw}: bad uid: {e}"))?;
            let mut gid = header.gid().map_err(|e| format!("{raw}: bad gid: {e}"))?;
            let mut xattrs = BTreeMap::new();
            if let Some(exts) = entry
                .pax_extensions()
                .map_err(|e| format!("{raw}: bad PAX header: {e}"))?
            {
                for ext in exts {
                    let ext = ext.map_err(|e| format!("{raw}: bad PAX header: {e}"))?;
                    let key = String::from_utf8_lossy(ext.key_bytes()).into_owned();
                    let number = || {
                        std::str::from_utf8(ext.value_bytes())
                            .ok()
                            .and_then(|v| v.parse::<u64>().ok())
                            .ok_or_else(|| format!("{raw}: bad PAX {key}"))
                    };
                    if key == "uid" {
                        uid = number()?;
                    } else if key == "gid" {
                        gid = number()?;
                    } else if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        xattrs.insert(
                            name.to_string(),
                            String::from_utf8_lossy(ext.value_bytes()).into_owned(),
                        );
                    }
                }
            }
            let device = || -> Result<(u32, u32), String> {
                let major = header
                    .device_major()
                    .map_err(|e| format!("{raw}: bad device number: {e}"))?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(|e| format!("{raw}: bad device number: {e}"))?
                    .unwrap_or(0);
                Ok((major, minor))
            };
            let link_target = || -> String {
                entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            let et = header.entry_type();
            let kind = if et.is_dir() {
                Kind::Dir
            } else if et.is_symlink() {
                Kind::Symlink {
                    target: link_target(),
                }
            } else if et.is_hard_link() {
                let target = link_target();
                let node = clean_relative(&target)
                    .filter(|t| !t.is_empty())
                    .and_then(|t| self.nodes.get(&t).cloned())
                    .ok_or_else(|| format!("{raw}: hard link to missing {target:?}"))?;
                written.insert(path.clone());
                self.insert(path, node);
                continue;
            } else if et.is_character_special() {
                let (major, minor) = device()?;
                Kind::Char { major, minor }
            } else if et.is_block_special() {
                let (major, minor) = device()?;
                Kind::Block { major, minor }
            } else if et.is_fifo() {
                Kind::Fifo
            } else if et.is_file() || et.is_contiguous() {
                let mut hasher = Hasher::new();
                let mut size = 0u64;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = entry
                        .read(&mut buf)
                        .map_err(|e| format!("{raw}: reading: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    size += n as u64;
                    hasher.update(&buf[..n]);
                }
                Kind::File {
                    size,
                    sha256: hasher.finish().hex().to_string(),
                }
            } else {
                // PAX/GNU metadata entries are consumed by the tar reader; anything
                // else (e.g. GNU sparse) is not something an image layer holds.
                return Err(format!("{raw}: unsupported tar entry type {et:?}"));
            };
            written.insert(path.clone());
            self.insert(
                path,
                Node {
                    kind,
                    mode,
                    uid,
                    gid,
                    xattrs,
                },
            );
        }
        Ok(())
    }
}

/// One tree entry as a one-line JSON object, keys in a fixed order (path first).
fn node_line(path: &str, n: &Node) -> String {
    let (ty, extra): (&str, Vec<(&str, Value)>) = match &n.kind {
        Kind::Dir => ("dir", vec![]),
        Kind::File { size, sha256 } => (
            "file",
            vec![("size", json!(size)), ("sha256", json!(sha256))],
        ),
        Kind::Symlink { target } => ("symlink", vec![("target", json!(target))]),
        Kind::Char { major, minor } => (
            "char",
            vec![("major", json!(major)), ("minor", json!(minor))],
        ),
        Kind::Block { major, minor } => (
            "block",
            vec![("major", json!(major)), ("minor", json!(minor))],
        ),
        Kind::Fifo => ("fifo", vec![]),
    };
    let mut fields: Vec<(&str, Value)> = vec![
        ("path", json!(format!("/{path}"))),
        ("type", json!(ty)),
        ("mode", json!(format!("{:04o}", n.mode))),
        ("uid", json!(n.uid)),
        ("gid", json!(n.gid)),
    ];
    fields.extend(extra);
    if !n.xattrs.is_empty() {
        fields.push(("xattrs", json!(n.xattrs)));
    }
    let body: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("{}:{v}", json!(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// The config fields that decide how a container of the image runs.
pub fn config_json(config: &ImageConfig) -> Value {
    let empty = ContainerConfig::default();
    let c = config.config.as_ref().unwrap_or(&empty);
    let keys = |m: &BTreeMap<String, kiln_oci::image::EmptyObject>| -> Value {
        if m.is_empty() {
            Value::Null
        } else {
            json!(m.keys().collect::<Vec<_>>())
        }
    };
    let list = |v: &Vec<String>| -> Value {
        if v.is_empty() {
            Value::Null
        } else {
            json!(v)
        }
    };
    let mut m = Map::new();
    m.insert("Env".into(), list(&c.env));
    m.insert("Cmd".into(), json!(c.cmd));
    m.insert("Entrypoint".into(), json!(c.entrypoint));
    m.insert("WorkingDir".into(), json!(c.working_dir));
    m.insert("User".into(), json!(c.user));
    m.insert("ExposedPorts".into(), keys(&c.exposed_ports));
    m.insert(
        "Labels".into(),
        if c.labels.is_empty() {
            Value::Null
        } else {
            json!(c.labels)
        },
    );
    m.insert("Volumes".into(), keys(&c.volumes));
    m.insert("StopSignal".into(), json!(c.stop_signal));
    m.insert(
        "Healthcheck".into(),
        serde_json::to_value(&c.healthcheck).unwrap_or(Value::Null),
    );
    m.insert("OnBuild".into(), list(&c.on_build));
    m.insert("Shell".into(), json!(c.shell));
    Value::Object(m)
}

/// How the image was built, as far as it is stable across builds: the number of
/// layers, `ArgsEscaped`, and each history entry's `created_by`, `empty_layer` and
/// `comment` (no timestamps). One history entry per line.
pub fn render_history(config: &ImageConfig, layer_count: usize) -> String {
    let args_escaped = config
        .config
        .as_ref()
        .and_then(|c| c.args_escaped)
        .unwrap_or(false);
    let mut out = format!(
        "{{\n  \"layers\": {layer_count},\n  \"args_escaped\": {args_escaped},\n  \"history\": ["
    );
    for (i, h) in config.history.iter().enumerate() {
        out.push_str(if i == 0 { "\n    " } else { ",\n    " });
        let _ = write!(
            out,
            "{{\"created_by\":{},\"empty_layer\":{},\"comment\":{}}}",
            json!(h.created_by),
            h.empty_layer,
            json!(h.comment)
        );
    }
    out.push_str(if config.history.is_empty() {
        "]\n}\n"
    } else {
        "\n  ]\n}\n"
    });
    out
}

/// The description as text: a JSON object with `config` (pretty-printed) and
/// `files` (one compact object per line, sorted by path) so that a line diff of
/// two descriptions shows each differing file on its own line.
pub fn render(config: &ImageConfig, tree: &Tree) -> String {
    let mut out = String::from("{\n  \"config\": ");
    let cfg = serde_json::to_string_pretty(&config_json(config)).unwrap_or_default();
    out.push_str(&cfg.replace('\n', "\n  "));
    out.push_str(",\n  \"files\": [");
    let mut first = true;
    for (path, node) in tree.nodes() {
        out.push_str(if first { "\n    " } else { ",\n    " });
        first = false;
        out.push_str(&node_line(path, node));
    }
    out.push_str(if first { "]\n}\n" } else { "\n  ]\n}\n" });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, u32, &'a [u8]),
        Link(&'a str, &'a str),
        Hard(&'a str, &'a str),
        Owned(&'a str, u32, u64, u64),
        /// A regular file whose name is written as-is (the tar crate refuses `..`).
        RawName(&'a str),
    }

    fn layer(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_ustar();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match e {
                E::Dir(p, mode) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    b.append_data(&mut h, p, &[][..]).unwrap();
                }
                E::File(p, mode, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, *data).unwrap();
                }
                E::Owned(p, mode, uid, gid) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_uid(*uid);
                    h.set_gid(*gid);
                    h.set_size(1);
                    b.append_data(&mut h, p, &b"x"[..]).unwrap();
                }
                E::Link(p, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, p, target).unwrap();
                }
                E::RawName(p) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(0);
                    h.as_old_mut().name[..p.len()].copy_from_slice(p.as_bytes());
                    h.set_cksum();
                    b.append(&h, &[][..]).unwrap();
                }
                E::Hard(p, target) => {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_mode(0o644);
                    h.set_size(0);
                    b.append_link(&mut h, p, target).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn tree(layers: &[Vec<u8>]) -> Tree {
        let mut t = Tree::new();
        for l in layers {
            t.apply_layer(&l[..]).unwrap();
        }
        t
    }

    fn paths(t: &Tree) -> Vec<&str> {
        t.nodes().keys().map(String::as_str).collect()
    }

    #[test]
    fn later_layers_replace_and_whiteouts_delete() {
        let t = tree(&[
            layer(&[
                E::Dir("a/", 0o755),
                E::File("a/one", 0o644, b"1"),
                E::Dir("a/sub/", 0o700),
                E::File("a/sub/deep", 0o600, b"d"),
                E::File("keep", 0o644, b"k"),
            ]),
            layer(&[E::Dir("a/", 0o755), E::File("a/.wh.sub", 0, b"")]),
            layer(&[E::File("keep", 0o4755, b"new")]),
        ]);
        assert_eq!(paths(&t), ["a", "a/one", "keep"]);
        let keep = &t.nodes()["keep"];
        assert_eq!(keep.mode, 0o4755);
        assert_eq!(
            keep.kind,
            Kind::File {
                size: 3,
                sha256: "11507a0e2f5e69d5dfa40a62a1bd7b6ee57e6bcd85c67c9b8431b36fff21c437".into()
            }
        );
    }

    #[test]
    fn opaque_directory_hides_only_lower_layers() {
        let t = tree(&[
            layer(&[
                E::Dir("d/", 0o755),
                E::File("d/old", 0o644, b"o"),
                E::Dir("d/olddir/", 0o755),
                E::File("d/olddir/x", 0o644, b"x"),
                E::File("other", 0o644, b"z"),
            ]),
            // The new file comes before the marker: it must survive.
            layer(&[
                E::Dir("d/", 0o750),
                E::File("d/new", 0o644, b"n"),
                E::File("d/.wh..wh..opq", 0, b""),
            ]),
        ]);
        assert_eq!(paths(&t), ["d", "d/new", "other"]);
        assert_eq!(t.nodes()["d"].mode, 0o750);
    }

    #[test]
    fn file_replaced_by_directory_and_back() {
        let t = tree(&[
            layer(&[E::File("x", 0o644, b"f")]),
            layer(&[E::Dir("x/", 0o755), E::File("x/in", 0o644, b"i")]),
        ]);
        assert_eq!(paths(&t), ["x", "x/in"]);
        assert_eq!(t.nodes()["x"].kind, Kind::Dir);
        let t2 = tree(&[
            layer(&[E::Dir("y/", 0o755), E::File("y/in", 0o644, b"i")]),
            layer(&[E::Link("y", "elsewhere")]),
        ]);
        assert_eq!(paths(&t2), ["y"]);
        assert_eq!(
            t2.nodes()["y"].kind,
            Kind::Symlink {
                target: "elsewhere".into()
            }
        );
    }

    #[test]
    fn hard_links_are_the_file_they_link_to_and_parents_are_implied() {
        let t = tree(&[layer(&[
            E::Owned("p/q/orig", 0o640, 1000, 1000),
            E::Hard("p/q/link", "p/q/orig"),
        ])]);
        assert_eq!(paths(&t), ["p", "p/q", "p/q/link", "p/q/orig"]);
        assert_eq!(t.nodes()["p/q/link"], t.nodes()["p/q/orig"]);
        assert_eq!(t.nodes()["p"].mode, 0o755);
        let mut escaping = Tree::new();
        let err = escaping
            .apply_layer(&layer(&[E::RawName("a/../../etc/x")])[..])
            .unwrap_err();
        assert!(err.contains("leaves the root"), "{err}");
        let mut dotted = Tree::new();
        dotted
            .apply_layer(&layer(&[E::Dir("./", 0o755), E::RawName("./a/../b")])[..])
            .unwrap();
        assert_eq!(paths(&dotted), ["b"]);
        let mut broken = Tree::new();
        let err = broken
            .apply_layer(&layer(&[E::Hard("l", "missing")])[..])
            .unwrap_err();
        assert!(err.contains("hard link to missing"), "{err}");
    }

    #[test]
    fn history_lists_layers_and_entries_without_timestamps() {
        let mut cfg = ImageConfig::new("linux", "amd64");
        cfg.config = Some(ContainerConfig {
            args_escaped: Some(true),
            ..ContainerConfig::default()
        });
        cfg.history = vec![
            kiln_oci::image::History {
                created: Some("2024-01-01T00:00:00Z".into()),
                created_by: Some("RUN /bin/sh -c true # buildkit".into()),
                comment: Some("buildkit.dockerfile.v0".into()),
                ..Default::default()
            },
            kiln_oci::image::History {
                created_by: Some("ENV A=1".into()),
                empty_layer: true,
                ..Default::default()
            },
        ];
        let text = render_history(&cfg, 1);
        assert!(!text.contains("2024"), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({
                "layers": 1,
                "args_escaped": true,
                "history": [
                    {"created_by": "RUN /bin/sh -c true # buildkit", "empty_layer": false,
                     "comment": "buildkit.dockerfile.v0"},
                    {"created_by": "ENV A=1", "empty_layer": true, "comment": null},
                ]
            })
        );
        assert_eq!(text.lines().count(), 8, "one entry a line: {text}");
        let empty = render_history(&ImageConfig::new("linux", "amd64"), 0);
        assert_eq!(
            serde_json::from_str::<Value>(&empty).unwrap(),
            json!({"layers": 0, "args_escaped": false, "history": []})
        );
    }

    #[test]
    fn render_lists_config_subset_and_one_file_per_line() {
        let mut cfg = ImageConfig::new("linux", "amd64");
        cfg.created = Some("2024-01-01T00:00:00Z".into());
        let mut c = ContainerConfig {
            env: vec!["PATH=/bin".into()],
            cmd: Some(vec!["sh".into()]),
            user: Some("app".into()),
            ..ContainerConfig::default()
        };
        c.exposed_ports.insert("80/tcp".into(), Default::default());
        c.healthcheck = Some(kiln_oci::image::HealthConfig {
            test: vec!["CMD-SHELL".into(), "true".into()],
            interval: Some(5_000_000_000),
            ..Default::default()
        });
        cfg.config = Some(c);
        let t = tree(&[layer(&[
            E::Dir("bin/", 0o755),
            E::Link("bin/sh", "busybox"),
        ])]);
        let text = render(&cfg, &t);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["config"]["Env"], json!(["PATH=/bin"]));
        assert_eq!(v["config"]["ExposedPorts"], json!(["80/tcp"]));
        assert_eq!(v["config"]["Entrypoint"], Value::Null);
        assert_eq!(
            v["config"]["Healthcheck"],
            json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000i64})
        );
        assert!(!text.contains("2024"), "no timestamps: {text}");
        assert!(text.contains(
            "\n    {\"path\":\"/bin/sh\",\"type\":\"symlink\",\"mode\":\"0777\",\"uid\":0,\"gid\":0,\"target\":\"busybox\"}\n"
        ), "{text}");
    }
}
