//! Stopping a build: the first stage that fails cancels the build (and the
//! builds standing with it, the other platforms of one `--platform a,b`
//! build); no step starts after that, and the RUN steps running are killed,
//! as BuildKit cancels a solve on its first error.

use kiln_sandbox::{OutputLine, RunOutcome, RunSpec, SandboxError, StepKiller};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Shared by the stages of a build, and by builds that stand or fall
/// together ([`crate::BuildOptions::cancel`]).
#[derive(Default)]
pub struct Cancel {
    set: AtomicBool,
    /// The RUN steps running now, by a number of this token's.
    running: Mutex<HashMap<u64, StepKiller>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("set", &self.is_set())
            .finish_non_exhaustive()
    }
}

impl Cancel {
    /// Cancels: no step starts from now on, and every RUN step running is
    /// killed (it ends with [`SandboxError::Cancelled`]).
    pub fn cancel(&self) {
        self.set.store(true, Ordering::SeqCst);
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for killer in running.values() {
            killer.kill();
        }
    }

    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Runs a RUN step's sandbox ([`kiln_sandbox::run`]), killed if the build
    /// is cancelled while it runs.
    pub(crate) fn run(
        &self,
        spec: &RunSpec,
        on_line: &mut dyn FnMut(&OutputLine),
    ) -> Result<RunOutcome, SandboxError> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let result = kiln_sandbox::run_with(spec, on_line, |killer| {
            // Registered first, then the flag read: a `cancel` either sees
            // this step in `running` or set the flag before this reads it.
            self.running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, killer.clone());
            if self.is_set() {
                killer.kill();
            }
        });
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        result
    }
}
