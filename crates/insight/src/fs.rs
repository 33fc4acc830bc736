//! Layers stacked into the filesystem an image shows, counting on the way
//! every copy of a file that a later layer hides (overwrites or deletes).
//!
//! Waste is counted per hidden copy: a path written in N layers and still
//! present wastes its N−1 earlier copies; one deleted at the end wastes all
//! of its copies. (dive counts all N copies of a path that appears more than
//! once, the visible one too: wagoodman/dive#684.) Every byte a layer holds is
//! then either visible or wasted, and the efficiency is
//! `visible / (visible + wasted)`: 1.0 when no layer hides anything.

use crate::layer::{Change, Entry, Kind, LayerScan};
use std::collections::BTreeMap;

/// A path of the stacked filesystem and the layer its visible copy is from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub entry: Entry,
    pub layer: usize,
}

/// A copy of a file that a later layer hid.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Hidden {
    pub path: String,
    pub size: u64,
    /// The layer holding the hidden copy, and the one that hid it.
    pub layer: usize,
    pub hidden_by: usize,
    /// Deleted (a whiteout) rather than overwritten.
    pub deleted: bool,
}

/// The stacked filesystem.
#[derive(Clone, Debug, Default)]
pub struct Merged {
    pub nodes: BTreeMap<String, Node>,
    pub hidden: Vec<Hidden>,
    /// Bytes of every regular file copy in every layer.
    pub all_bytes: u64,
}

fn is_below(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

impl Merged {
    pub fn new() -> Merged {
        Merged::default()
    }

    fn hide(&mut self, path: &str, layer: usize, deleted: bool) {
        if let Some(old) = self.nodes.remove(path) {
            if old.entry.kind == Kind::File {
                self.hidden.push(Hidden {
                    path: path.to_string(),
                    size: old.entry.size,
                    layer: old.layer,
                    hidden_by: layer,
                    deleted,
                });
            }
        }
    }

    /// Removes everything below `dir` that `keep` rejects.
    fn hide_below(&mut self, dir: &str, layer: usize, deleted: bool, only_lower: bool) {
        let start = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let below: Vec<String> = self
            .nodes
            .range(start.clone()..)
            .take_while(|(p, _)| p.starts_with(&start))
            .filter(|(p, n)| is_below(p, dir) && (!only_lower || n.layer < layer))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            self.hide(&p, layer, deleted);
        }
    }

    /// Stacks layer number `index` on what is there.
    pub fn apply(&mut self, index: usize, scan: &LayerScan) {
        for change in &scan.changes {
            match change {
                Change::Put(e) => {
                    if e.kind == Kind::File {
                        self.all_bytes += e.size;
                    }
                    if let Some(old) = self.nodes.get(&e.path) {
                        if old.entry.kind == Kind::Dir && e.kind != Kind::Dir {
                            self.hide_below(&e.path.clone(), index, false, false);
                        }
                    }
                    self.hide(&e.path, index, false);
                    self.nodes.insert(
                        e.path.clone(),
                        Node {
                            entry: e.clone(),
                            layer: index,
                        },
                    );
                }
                Change::Delete(p) => {
                    self.hide_below(p, index, true, false);
                    self.hide(p, index, true);
                }
                Change::Opaque(dir) => self.hide_below(dir, index, true, true),
            }
        }
    }

    /// Bytes of the regular files visible.
    pub fn visible_bytes(&self) -> u64 {
        self.nodes
            .values()
            .filter(|n| n.entry.kind == Kind::File)
            .map(|n| n.entry.size)
            .sum()
    }

    pub fn wasted_bytes(&self) -> u64 {
        self.hidden.iter().map(|h| h.size).sum()
    }

    /// `visible / all bytes the layers hold` (1.0 for an image without files).
    pub fn efficiency(&self) -> f64 {
        if self.all_bytes == 0 {
            1.0
        } else {
            self.visible_bytes() as f64 / self.all_bytes as f64
        }
    }

    /// Bytes of the regular files at or below `path`.
    pub fn size_below(&self, path: &str) -> u64 {
        let start = format!("{path}/");
        let own = self
            .nodes
            .get(path)
            .filter(|n| n.entry.kind == Kind::File)
            .map_or(0, |n| n.entry.size);
        own + self
            .nodes
            .range(start.clone()..)
            .take_while(|(p, _)| p.starts_with(&start))
            .filter(|(_, n)| n.entry.kind == Kind::File)
            .map(|(_, n)| n.entry.size)
            .sum::<u64>()
    }

    /// Every directory's total (the bytes of the files below it), by path;
    /// `""` is the root.
    pub fn dir_sizes(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for (p, n) in &self.nodes {
            if n.entry.kind == Kind::Dir {
                out.entry(p.clone()).or_insert(0);
            }
            if n.entry.kind != Kind::File {
                continue;
            }
            *out.entry(String::new()).or_insert(0) += n.entry.size;
            let mut at = p.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                *out.entry(parent.to_string()).or_insert(0) += n.entry.size;
                at = parent;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> Change {
        Change::Put(Entry {
            path: path.into(),
            kind: Kind::File,
            size,
            mode: 0o644,
            uid: 0,
        })
    }

    fn dir(path: &str) -> Change {
        Change::Put(Entry {
            path: path.into(),
            kind: Kind::Dir,
            size: 0,
            mode: 0o755,
            uid: 0,
        })
    }

    fn layer(changes: Vec<Change>) -> LayerScan {
        LayerScan {
            changes,
            ..LayerScan::default()
        }
    }

    fn stack(layers: &[LayerScan]) -> Merged {
        let mut m = Merged::new();
        for (i, l) in layers.iter().enumerate() {
            m.apply(i, l);
        }
        m
    }

    #[test]
    fn a_path_written_three_times_wastes_two_copies_not_three() {
        let m = stack(&[
            layer(vec![file("a", 100)]),
            layer(vec![file("a", 100)]),
            layer(vec![file("a", 100)]),
        ]);
        // dive would say 300 (all three copies, #684); two are hidden.
        assert_eq!(m.wasted_bytes(), 200);
        assert_eq!(m.visible_bytes(), 100);
        assert!((m.efficiency() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(m.hidden.len(), 2);
        assert_eq!((m.hidden[0].layer, m.hidden[0].hidden_by), (0, 1));
    }

    #[test]
    fn deleting_wastes_every_copy_and_a_deleted_directory_all_below_it() {
        let m = stack(&[
            layer(vec![
                dir("d"),
                file("d/x", 10),
                file("d/y", 20),
                file("keep", 5),
            ]),
            layer(vec![Change::Delete("d".into())]),
        ]);
        assert_eq!(m.wasted_bytes(), 30);
        assert!(m.hidden.iter().all(|h| h.deleted && h.hidden_by == 1));
        assert_eq!(m.nodes.keys().collect::<Vec<_>>(), vec!["keep"]);
        assert_eq!(m.efficiency(), 5.0 / 35.0);
    }

    #[test]
    fn opaque_directory_hides_only_lower_layers() {
        let m = stack(&[
            layer(vec![dir("d"), file("d/old", 7)]),
            layer(vec![dir("d"), Change::Opaque("d".into()), file("d/new", 3)]),
        ]);
        assert_eq!(m.wasted_bytes(), 7);
        assert!(m.nodes.contains_key("d/new") && !m.nodes.contains_key("d/old"));
    }

    #[test]
    fn nothing_hidden_is_fully_efficient_and_sizes_add_up() {
        let m = stack(&[layer(vec![
            dir("a"),
            dir("a/b"),
            file("a/b/c", 4),
            file("a/d", 6),
        ])]);
        assert_eq!(m.wasted_bytes(), 0);
        assert_eq!(m.efficiency(), 1.0);
        let d = m.dir_sizes();
        assert_eq!((d[""], d["a"], d["a/b"]), (10, 10, 4));
        assert_eq!(m.size_below("a/b"), 4);
    }
}
