//! Claims: "only one at a time does this" across the threads of one build and
//! the kiln processes sharing a store. A claim is an exclusive `flock` on a
//! lock file; each claim opens the file itself, so two claims in one process
//! exclude each other just as two processes do. The kernel releases the lock
//! when its holder exits or is killed, so a crashed holder blocks nobody.
//!
//! The holder removes the lock file before it unlocks, so lock files do not
//! pile up; a waiter that then gets the lock of a file no longer at its path
//! opens the path again.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A held claim; released when dropped.
pub struct Claim {
    path: PathBuf,
    _file: File,
}

impl Claim {
    /// Waits until nobody else holds the claim at `path`, then takes it.
    pub fn acquire(path: &Path) -> io::Result<Claim> {
        loop {
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            loop {
                match rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive) {
                    Ok(()) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            // A lock on a file no longer at `path` protects nothing.
            let held = file.metadata()?;
            match fs::metadata(path) {
                Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => {
                    return Ok(Claim {
                        path: path.to_path_buf(),
                        _file: file,
                    })
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Still locked here: a waiter that gets the lock next sees the file
        // gone and locks a new one, so two holders never overlap.
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Claims of one path exclude each other across threads (each claim is its
    /// own open file, as another process's would be); another path is free;
    /// the lock file is gone once the last claim is dropped.
    #[test]
    fn claims_of_one_path_run_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (path, other) = (dir.path().join("k.lock"), dir.path().join("o.lock"));
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..5 {
                        let _claim = Claim::acquire(&path).unwrap();
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        drop(Claim::acquire(&other).unwrap());
                        std::thread::sleep(Duration::from_millis(2));
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
