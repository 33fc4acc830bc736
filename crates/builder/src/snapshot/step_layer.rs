//! Layers of a stage being built: finished (the diff_id known), or made by a
//! step whose diff_id is still being computed in the background.
//!
//! A step's upper directory is final once its process ended and the differ
//! dropped what is unchanged ([`super::drop_unchanged`]); hashing it (one walk
//! of its tar, one sha256 pass) is what takes long. So the directory moves at
//! once to a stable name of its own, `snapshots/step-<unique>/`, where the
//! next step (of this stage, or of a stage built on it, or a `COPY --from`)
//! stacks it as a lower right away: no cache key depends on a layer's diff_id
//! (keys chain on step keys), only the image config, the build record and the
//! step's cache record do. The hash then names the directory by its diff_id:
//! `snapshots/<diff_id hex>` becomes a symlink to it ([`Snapshots::name_step`]).

use super::{io_err, Layer, SnapshotError, Snapshots};
use kiln_oci::digest::Digest;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// A layer in a stage's list.
#[derive(Clone, Debug)]
pub enum StageLayer {
    Done(Layer),
    Pending(Arc<PendingLayer>),
}

impl StageLayer {
    /// The layer, once its diff_id is known (`None` while it is hashed, or
    /// when hashing it failed).
    pub fn done(&self) -> Option<Layer> {
        match self {
            StageLayer::Done(l) => Some(l.clone()),
            StageLayer::Pending(p) => p.get().and_then(Result::ok),
        }
    }

    /// The layer, waiting for its hash if needed; `Err` when hashing it failed
    /// (the build reports why).
    pub fn wait(&self) -> Result<Layer, ()> {
        match self {
            StageLayer::Done(l) => Ok(l.clone()),
            StageLayer::Pending(p) => p.wait(),
        }
    }
}

/// A step's layer whose diff_id is being computed: its directory is there to
/// be stacked; its [`Layer`] comes when the hash is done.
#[derive(Debug)]
pub struct PendingLayer {
    dir: PathBuf,
    result: Mutex<Option<Result<Layer, ()>>>,
    done: Condvar,
}

impl PendingLayer {
    pub fn new(dir: PathBuf) -> PendingLayer {
        PendingLayer {
            dir,
            result: Mutex::new(None),
            done: Condvar::new(),
        }
    }

    /// The step's directory (`snapshots/step-…`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The hash's outcome, if it is done.
    pub fn get(&self) -> Option<Result<Layer, ()>> {
        self.result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the hash is done.
    pub fn wait(&self) -> Result<Layer, ()> {
        let mut r = self.result.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(res) = &*r {
                return res.clone();
            }
            r = self.done.wait(r).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Publishes the hash's outcome (`Err`: it failed or was cancelled).
    pub fn finish(&self, res: Result<Layer, ()>) {
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(res);
        self.done.notify_all();
    }
}

impl Snapshots {
    /// Moves a finished step's upper directory to a new `snapshots/step-…`
    /// directory of its own (to be named by its diff_id once it is hashed).
    pub fn keep_step(&self, upper: &Path) -> Result<PathBuf, SnapshotError> {
        // An empty directory reserves the name; renaming onto it replaces it.
        let dir = super::unique_dir(&self.root, "step-")?;
        fs::rename(upper, &dir).map_err(io_err(&dir))?;
        Ok(dir)
    }

    /// Names the step directory `dir` by its layer's `diff_id`: the symlink
    /// `snapshots/<diff_id hex>` → `step-…`. `Ok(false)` when a snapshot of
    /// that diff_id exists already (it is kept; `dir` is then a copy to remove
    /// once no step of this build stacks it).
    pub fn name_step(&self, dir: &Path, diff_id: &Digest) -> Result<bool, SnapshotError> {
        let dest = self.path_of(diff_id);
        let target = dir.file_name().map(PathBuf::from).unwrap_or_default();
        loop {
            match std::os::unix::fs::symlink(&target, &dest) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if dest.is_dir() {
                        return Ok(false);
                    }
                    // A name whose step directory is gone.
                    remove_dangling(&dest).map_err(io_err(&dest))?;
                }
                Err(e) => return Err(io_err(&dest)(e)),
            }
        }
    }
}

/// Removes `path` if it is a symlink that leads nowhere.
pub(crate) fn remove_dangling(path: &Path) -> io::Result<()> {
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if is_link && !path.exists() {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_dir_is_named_by_its_diff_id_once() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = Snapshots::open(dir.path()).unwrap();
        let d = Digest::of(b"layer");
        let mk = |content: &str| {
            let w = snaps.work_dir().unwrap();
            let upper = w.path().join("upper");
            fs::create_dir(&upper).unwrap();
            fs::write(upper.join("f"), content).unwrap();
            let kept = snaps.keep_step(&upper).unwrap();
            assert!(!upper.exists());
            kept
        };
        let first = mk("one");
        let second = mk("one");
        assert_ne!(first, second);
        assert!(first
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("step-"));
        assert!(snaps.name_step(&first, &d).unwrap());
        // The second copy of the same layer is not its snapshot.
        assert!(!snaps.name_step(&second, &d).unwrap());
        assert_eq!(
            fs::read_to_string(snaps.path_of(&d).join("f")).unwrap(),
            "one"
        );
        assert_eq!(
            fs::read_link(snaps.path_of(&d)).unwrap(),
            PathBuf::from(first.file_name().unwrap())
        );
        // A name whose directory went is replaced.
        super::super::remove_tree(&first);
        assert!(snaps.name_step(&second, &d).unwrap());
        assert_eq!(
            fs::read_link(snaps.path_of(&d)).unwrap(),
            PathBuf::from(second.file_name().unwrap())
        );
    }

    #[test]
    fn a_pending_layer_is_waited_for() {
        let p = Arc::new(PendingLayer::new(PathBuf::from("/x")));
        let l = StageLayer::Pending(p.clone());
        assert!(l.done().is_none());
        let layer = Layer {
            blob: kiln_oci::store::BlobRef {
                media_type: kiln_oci::image::media_type::OCI_LAYER.into(),
                digest: Digest::of(b"t"),
                size: 1,
                annotations: Default::default(),
            },
            diff_id: Digest::of(b"t"),
        };
        std::thread::scope(|s| {
            let w = s.spawn(|| l.wait());
            std::thread::sleep(std::time::Duration::from_millis(50));
            p.finish(Ok(layer.clone()));
            assert_eq!(w.join().unwrap(), Ok(layer.clone()));
        });
        assert_eq!(l.done(), Some(layer));
    }
}
