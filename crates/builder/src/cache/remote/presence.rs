//! Which layer blobs the imported caches still have, found with HEAD requests
//! (nothing is downloaded).
//!
//! A step's lookup checks the blob it needs itself, and first queues the
//! blobs of up to [`BATCH`] − 1 nearby records whose presence is unknown (the
//! records after it, nearest first: see `RemoteCache::neighbours`), which
//! background threads check, [`AT_ONCE`] requests at a time with the
//! lookup's own. The steps after it then find their answer here, or wait for
//! the check under way, instead of each paying a round trip in turn. A lookup
//! that finds its blob still queued takes it out and checks it itself.
//!
//! A speculative check never warns or fails anything: a blob it finds missing
//! is warned about when a step that needs it is looked up (once); one whose
//! check failed is checked again by that step, and after such a failure no
//! more checks are queued (each lookup is one HEAD, as without this module).

use super::backend::Backend;
use kiln_oci::digest::Digest;
use kiln_oci::store::BlobRef;
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The most blobs one lookup gets checked: its own and its neighbours'.
pub const BATCH: usize = 64;
/// The most HEAD requests one lookup has in flight: its own and the
/// background threads'.
pub const AT_ONCE: usize = 8;

/// A blob to check, and the cache to check it in.
pub type Check = (BlobRef, Arc<dyn Backend>);

/// What a lookup learns of its blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    Present,
    /// Not in the cache; `first`: no step was told before this one.
    Missing {
        first: bool,
    },
    /// The check failed (the blob counts as missing; no step was told).
    Failed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In the queue of speculative checks.
    Queued,
    /// A HEAD is in flight.
    Checking,
    Present,
    /// `told`: a step that needs it has been told (warned).
    Missing {
        told: bool,
    },
}

#[derive(Debug, Default)]
struct Inner {
    blobs: HashMap<Digest, State>,
    queue: VecDeque<Check>,
    /// Background threads running.
    workers: usize,
    /// A speculative check failed: queue no more.
    stop: bool,
}

/// The answers so far and the checks under way (see the module doc).
#[derive(Debug, Default)]
pub struct Presence {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl Presence {
    /// Whether `blob` is in `backend`: a known answer, the answer of a check
    /// under way, or a HEAD now. Before a HEAD of its own (its blob's
    /// presence unknown), queues what `neighbours(unknown, n)` gives: up to
    /// `n` checks of blobs for which `unknown` holds.
    pub fn check(
        self: &Arc<Self>,
        blob: &BlobRef,
        backend: &dyn Backend,
        neighbours: impl FnOnce(&dyn Fn(&Digest) -> bool, usize) -> Vec<Check>,
    ) -> Found {
        let mut inner = self.lock();
        loop {
            match inner.blobs.get(&blob.digest).copied() {
                Some(State::Present) => return Found::Present,
                Some(State::Missing { told }) => {
                    inner
                        .blobs
                        .insert(blob.digest, State::Missing { told: true });
                    return Found::Missing { first: !told };
                }
                Some(State::Checking) => {
                    inner = self.changed.wait(inner).unwrap_or_else(|e| e.into_inner());
                }
                Some(State::Queued) => {
                    inner.queue.retain(|(b, _)| b.digest != blob.digest);
                    break;
                }
                None => {
                    if !inner.stop {
                        let more = neighbours(
                            &|d| *d != blob.digest && !inner.blobs.contains_key(d),
                            BATCH - 1,
                        );
                        for c in more {
                            if inner.blobs.contains_key(&c.0.digest) || c.0.digest == blob.digest {
                                continue;
                            }
                            inner.blobs.insert(c.0.digest, State::Queued);
                            inner.queue.push_back(c);
                        }
                    }
                    break;
                }
            }
        }
        inner.blobs.insert(blob.digest, State::Checking);
        let spawn = inner
            .queue
            .len()
            .min(AT_ONCE - 1)
            .saturating_sub(inner.workers);
        inner.workers += spawn;
        drop(inner);
        for _ in 0..spawn {
            let me = Arc::clone(self);
            let started = std::thread::Builder::new()
                .name("kiln-cache-head".into())
                .spawn(move || me.work());
            if started.is_err() {
                // What it would have checked stays queued: the lookups that
                // need it check it themselves.
                self.lock().workers -= 1;
            }
        }
        let (state, found) = match catch_unwind(AssertUnwindSafe(|| backend.has_blob(blob))) {
            Ok(Ok(true)) => (State::Present, Found::Present),
            Ok(Ok(false)) => (
                State::Missing { told: true },
                Found::Missing { first: true },
            ),
            Ok(Err(e)) => (State::Missing { told: true }, Found::Failed(e)),
            Err(_) => (
                State::Missing { told: true },
                Found::Failed("the check panicked".into()),
            ),
        };
        self.lock().blobs.insert(blob.digest, state);
        self.changed.notify_all();
        found
    }

    /// A background thread: checks queued blobs until the queue is empty.
    fn work(self: Arc<Self>) {
        loop {
            let (blob, backend) = {
                let mut inner = self.lock();
                let Some(c) = inner.queue.pop_front() else {
                    inner.workers -= 1;
                    return;
                };
                inner.blobs.insert(c.0.digest, State::Checking);
                c
            };
            let r = catch_unwind(AssertUnwindSafe(|| backend.has_blob(&blob)));
            let mut inner = self.lock();
            match r {
                Ok(Ok(true)) => {
                    inner.blobs.insert(blob.digest, State::Present);
                }
                Ok(Ok(false)) => {
                    inner
                        .blobs
                        .insert(blob.digest, State::Missing { told: false });
                }
                // A step that needs it checks it again; no more guessing.
                Ok(Err(_)) | Err(_) => {
                    inner.blobs.remove(&blob.digest);
                    inner.stop = true;
                    for (b, _) in std::mem::take(&mut inner.queue) {
                        inner.blobs.remove(&b.digest);
                    }
                }
            }
            drop(inner);
            self.changed.notify_all();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
