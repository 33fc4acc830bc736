//! Trees of the copying snapshotter ([`kiln_sandbox::CopySnapshot`]: chroot
//! isolation, or a store where overlay cannot keep its upper directory) kept
//! from one RUN step for the next.
//!
//! Without overlay, a RUN step runs on a plain directory holding the merged
//! view of its layers. Copying the whole base into a fresh directory for every
//! step was most of such a build's time, so after a step the directory is
//! kept, made exactly what a fresh copy of the layers including the step's own
//! would be ([`kiln_sandbox::CopySnapshot::settle`]), and the next step that
//! runs on those layers and more (the same stage's next RUN, after any COPY,
//! WORKDIR…) takes it and applies only the layers made since
//! ([`kiln_sandbox::CopySnapshot::resume_with`]).
//!
//! Snapshots are never written: a kept tree is a copy of its own in
//! `snapshots/tmp/` (removed when dropped, when the build ends, or by
//! `kiln prune` after a killed build), and a tree is taken by one step at a
//! time (taking removes it from the pool): a second stage on the same layers
//! copies afresh.

use super::{Snapshots, WorkDir};
use kiln_oci::digest::Digest;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A tree that holds a fresh copy of `layers` (and what provisioning a chroot
/// step added: mount points, device nodes, `/etc/hosts`, which are in no
/// layer unless a step changes them).
pub(crate) struct CopiedRoot {
    /// The diff_ids of the layers it holds, base first.
    layers: Vec<Digest>,
    dir: PathBuf,
    _work: WorkDir,
}

impl CopiedRoot {
    /// A new, not yet existing tree in a work dir of `snapshots`, to be a
    /// copy of `layers`.
    pub fn new(
        snapshots: &Snapshots,
        layers: Vec<Digest>,
    ) -> Result<CopiedRoot, super::SnapshotError> {
        let work = snapshots.work_dir()?;
        Ok(CopiedRoot {
            layers,
            dir: work.path().join("root"),
            _work: work,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many of its layers it holds.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// It now holds these layers too (the caller made it so).
    pub fn holds(&mut self, layers: impl IntoIterator<Item = Digest>) {
        self.layers.extend(layers);
    }
}

impl Drop for CopiedRoot {
    fn drop(&mut self) {
        // Nothing of the caller's stays bound in it when it is removed.
        kiln_sandbox::chroot::release(&self.dir);
        // Removing a tree is bound by the filesystem's latency (a journal
        // commit per batch of unlinks: seconds for a Debian base on a busy
        // disk), so its second-level directories go in parallel; the work
        // dir's drop removes what is left.
        let mut dirs = Vec::new();
        if let Ok(top) = std::fs::read_dir(&self.dir) {
            for t in top.flatten() {
                if !t.file_type().is_ok_and(|f| f.is_dir()) {
                    continue;
                }
                match std::fs::read_dir(t.path()) {
                    Ok(rd) => dirs.extend(rd.flatten().map(|e| e.path())),
                    Err(_) => continue,
                }
            }
        }
        let threads = REMOVERS.min(dirs.len());
        if threads > 1 {
            let dirs = Mutex::new(dirs);
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| loop {
                        let next = dirs.lock().unwrap_or_else(|e| e.into_inner()).pop();
                        match next {
                            Some(d) => super::remove_tree(&d),
                            None => break,
                        }
                    });
                }
            });
        }
    }
}

/// Threads that remove one tree.
const REMOVERS: usize = 8;

/// The trees kept for later steps, at most `cap` (the oldest go first).
pub(crate) struct CopiedRoots {
    kept: Mutex<VecDeque<CopiedRoot>>,
    cap: usize,
    /// Trees no step will take, being removed meanwhile.
    removing: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl CopiedRoots {
    pub fn new(cap: usize) -> CopiedRoots {
        CopiedRoots {
            kept: Mutex::new(VecDeque::new()),
            cap: cap.max(1),
            removing: Mutex::new(Vec::new()),
        }
    }

    /// Removes `roots` on a thread of their own; the build waits for it at
    /// its end (when `self` is dropped).
    fn remove_meanwhile(&self, roots: Vec<CopiedRoot>) {
        if roots.is_empty() {
            return;
        }
        let handle = std::thread::spawn(move || drop(roots));
        self.removing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    /// A stage that no other stage is built on has finished with `layers`:
    /// the trees its steps left (those holding nothing but some of its
    /// layers) are of no use to any step still to come, and go now.
    pub fn stage_done(&self, layers: &[Digest]) {
        let done: Vec<CopiedRoot> = {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            let mut done = Vec::new();
            for r in std::mem::take(&mut *kept) {
                if layers.starts_with(&r.layers) {
                    done.push(r);
                } else {
                    kept.push_back(r);
                }
            }
            done
        };
        self.remove_meanwhile(done);
    }

    /// Takes the kept tree that holds the most of `layers` (base first) and
    /// nothing else, if any.
    pub fn take(&self, layers: &[Digest]) -> Option<CopiedRoot> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let best = kept
            .iter()
            .enumerate()
            .filter(|(_, r)| layers.starts_with(&r.layers))
            .max_by_key(|(_, r)| r.layers.len())
            .map(|(i, _)| i)?;
        kept.remove(best)
    }

    /// Keeps `root` for a later step.
    pub fn keep(&self, root: CopiedRoot) {
        let evicted = {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.push_back(root);
            if kept.len() > self.cap {
                kept.pop_front()
            } else {
                None
            }
        };
        self.remove_meanwhile(evicted.into_iter().collect());
    }
}

impl Drop for CopiedRoots {
    /// At the build's end: the trees left are removed in parallel, and the
    /// removals begun earlier are waited for.
    fn drop(&mut self) {
        let left: Vec<CopiedRoot> = self
            .kept
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for root in left {
            self.remove_meanwhile(vec![root]);
        }
        let handles = std::mem::take(self.removing.get_mut().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(snaps: &Snapshots, layers: &[&[u8]]) -> CopiedRoot {
        let r = CopiedRoot::new(snaps, layers.iter().map(|l| Digest::of(l)).collect()).unwrap();
        std::fs::create_dir(r.dir()).unwrap();
        r
    }

    #[test]
    fn the_tree_holding_most_of_the_layers_is_taken_once() {
        let tmp = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(tmp.path()).unwrap();
        let pool = CopiedRoots::new(3);
        pool.keep(root(&snaps, &[b"base"]));
        pool.keep(root(&snaps, &[b"base", b"a"]));
        pool.keep(root(&snaps, &[b"other"]));
        let want: Vec<Digest> = [&b"base"[..], b"a", b"b"]
            .iter()
            .map(|l| Digest::of(l))
            .collect();
        let got = pool.take(&want).unwrap();
        assert_eq!(got.depth(), 2);
        // Taken: the next one gets the shorter tree.
        assert_eq!(pool.take(&want).unwrap().depth(), 1);
        assert!(pool.take(&want).is_none());
        // Never a tree with a layer the step does not have.
        assert!(pool.take(&want[..1]).is_none());
        let dir = got.dir().to_path_buf();
        assert!(dir.is_dir());
        drop(got);
        assert!(!dir.exists(), "a dropped tree is removed");
    }

    #[test]
    fn the_oldest_tree_goes_when_too_many_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(tmp.path()).unwrap();
        let pool = CopiedRoots::new(2);
        let first = root(&snaps, &[b"1"]);
        let first_dir = first.dir().to_path_buf();
        pool.keep(first);
        pool.keep(root(&snaps, &[b"2"]));
        pool.keep(root(&snaps, &[b"3"]));
        assert!(pool.take(&[Digest::of(b"1")]).is_none());
        assert!(pool.take(&[Digest::of(b"3")]).is_some());
        drop(pool);
        assert!(!first_dir.exists(), "an evicted tree is removed");
        assert_eq!(
            std::fs::read_dir(tmp.path().join("snapshots/tmp"))
                .unwrap()
                .count(),
            0,
            "every tree is removed when the build ends"
        );
    }

    #[test]
    fn a_finished_stages_trees_go_and_others_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(tmp.path()).unwrap();
        let pool = CopiedRoots::new(4);
        pool.keep(root(&snaps, &[b"base", b"build"]));
        pool.keep(root(&snaps, &[b"base", b"run"]));
        let build: Vec<Digest> = [&b"base"[..], b"build", b"copy"]
            .iter()
            .map(|l| Digest::of(l))
            .collect();
        pool.stage_done(&build);
        assert!(pool.take(&build).is_none());
        let run: Vec<Digest> = [&b"base"[..], b"run"]
            .iter()
            .map(|l| Digest::of(l))
            .collect();
        assert!(pool.take(&run).is_some());
        drop(pool);
        assert_eq!(
            std::fs::read_dir(tmp.path().join("snapshots/tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    /// A big tree is removed by several threads, to the last file.
    #[test]
    fn a_dropped_tree_is_removed_entirely() {
        let tmp = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(tmp.path()).unwrap();
        let r = root(&snaps, &[b"x"]);
        for i in 0..20 {
            let d = r.dir().join(format!("usr/d{i}/sub"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("f"), "f").unwrap();
        }
        std::fs::write(r.dir().join("top"), "t").unwrap();
        drop(r);
        assert_eq!(
            std::fs::read_dir(tmp.path().join("snapshots/tmp"))
                .unwrap()
                .count(),
            0
        );
    }
}
