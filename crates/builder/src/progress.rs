//! Progress events of a build. The executor emits them through a [`ProgressSink`];
//! the CLI renders them (tty, plain, JSON). Nothing here writes to a terminal.
//!
//! Steps are numbered by the executor (`step`), unique within one build; every
//! event about a step carries that number. Times are milliseconds since the build
//! started, taken from one [`Clock`].
//!
//! Order per step: `StepStarted`, any `StepOutput`, then `StepFinished` or
//! `StepFailed`; a cache hit is a lone `StepCached` (renderers also accept it after
//! a `StepStarted`). A `Phase` is emitted with `duration_ms: None` when it begins
//! and again, same `name`, with `Some(duration)` when it ends; one that is only
//! reported when done is emitted once, with `Some`. `BuildFinished` comes last,
//! only for a build that succeeded.
//!
//! While a terminal renderer is active it owns stderr: report warnings as
//! [`Event::Warning`] rather than printing them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Milliseconds since the build started.
pub type Millis = u64;

/// One thing that happened during a build. Serialized (for `--progress=rawjson`)
/// as a JSON object with an `"event"` field naming the variant in snake_case.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// `stages`: display names of the stages that will be built, in plan order.
    BuildStarted {
        at_ms: Millis,
        steps: usize,
        stages: Vec<String>,
    },
    /// A step (vertex) begins; `name` is BuildKit-style: "[builder 3/6] RUN npm install".
    StepStarted {
        at_ms: Millis,
        step: usize,
        stage: String,
        name: String,
    },
    /// The step's result came from the cache; nothing ran.
    StepCached {
        at_ms: Millis,
        step: usize,
        stage: String,
        name: String,
    },
    /// Why a step that runs missed the cache (`--explain-cache`,
    /// `--progress=plain`): after its `StepStarted`.
    CacheMiss {
        at_ms: Millis,
        step: usize,
        name: String,
        reason: String,
    },
    /// One line of output of a running RUN.
    StepOutput {
        at_ms: Millis,
        step: usize,
        stream: OutputStream,
        line: String,
    },
    StepFinished {
        at_ms: Millis,
        step: usize,
        duration_ms: Millis,
    },
    StepFailed {
        at_ms: Millis,
        step: usize,
        duration_ms: Millis,
        message: String,
    },
    /// A step that was running when the build was cancelled (another stage
    /// or platform failed) and was stopped: BuildKit's `CANCELED`.
    StepCancelled {
        at_ms: Millis,
        step: usize,
        duration_ms: Millis,
    },
    /// Something the user should know that isn't an error (lint warnings, rootless limits).
    Warning {
        at_ms: Millis,
        message: String,
    },
    /// Work beside or after the steps: "exporting to image", "pushing 127.0.0.1:5000/x:1",
    /// "layer diff of [stage n/m] RUN …" (a step's layer hashed while the next steps run).
    Phase {
        at_ms: Millis,
        name: String,
        duration_ms: Option<Millis>,
    },
    BuildFinished {
        at_ms: Millis,
        summary: Summary,
    },
}

impl Event {
    /// When the event happened, in milliseconds since the build started.
    pub fn at_ms(&self) -> Millis {
        match self {
            Event::BuildStarted { at_ms, .. }
            | Event::StepStarted { at_ms, .. }
            | Event::StepCached { at_ms, .. }
            | Event::CacheMiss { at_ms, .. }
            | Event::StepOutput { at_ms, .. }
            | Event::StepFinished { at_ms, .. }
            | Event::StepFailed { at_ms, .. }
            | Event::StepCancelled { at_ms, .. }
            | Event::Warning { at_ms, .. }
            | Event::Phase { at_ms, .. }
            | Event::BuildFinished { at_ms, .. } => *at_ms,
        }
    }
}

/// Which output stream of a RUN a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// What a finished build produced, for the final summary line.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// `sha256:…` of the image (config digest), if an image was produced.
    pub image_id: Option<String>,
    /// The image's size in bytes as `kiln images` counts it (config and layer
    /// blobs), if an image was produced.
    pub image_size: Option<u64>,
    pub steps_run: usize,
    pub steps_cached: usize,
    pub duration_ms: Millis,
    /// Names the image was tagged with (`-t`).
    pub tags: Vec<String>,
}

/// Receives events from any thread, in the order they happen.
pub trait ProgressSink: Send + Sync {
    fn emit(&self, event: Event);
}

impl<S: ProgressSink + ?Sized> ProgressSink for Arc<S> {
    fn emit(&self, event: Event) {
        (**self).emit(event)
    }
}

impl<S: ProgressSink + ?Sized> ProgressSink for Box<S> {
    fn emit(&self, event: Event) {
        (**self).emit(event)
    }
}

impl<S: ProgressSink + ?Sized> ProgressSink for &S {
    fn emit(&self, event: Event) {
        (**self).emit(event)
    }
}

/// Collects every event it receives (for tests).
#[derive(Debug, Default)]
pub struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// The events received so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ProgressSink for Recorder {
    fn emit(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }
}

/// Drops every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl ProgressSink for Discard {
    fn emit(&self, _event: Event) {}
}

/// The build's time base: `Clock::start()` when the build starts, then
/// `clock.now_ms()` for every event's `at_ms`.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    /// Milliseconds since [`Clock::start`].
    pub fn now_ms(&self) -> Millis {
        Millis::try_from(self.0.elapsed().as_millis()).unwrap_or(Millis::MAX)
    }

    /// Milliseconds from the clock's start to `instant` (0 if earlier).
    pub fn ms_at(&self, instant: Instant) -> Millis {
        Millis::try_from(instant.saturating_duration_since(self.0).as_millis())
            .unwrap_or(Millis::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_a_snake_case_tag() {
        let e = Event::StepOutput {
            at_ms: 1200,
            step: 3,
            stream: OutputStream::Stderr,
            line: "added 10 packages".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"step_output","at_ms":1200,"step":3,"stream":"stderr","line":"added 10 packages"}"#
        );
        let e = Event::BuildFinished {
            at_ms: 5,
            summary: Summary {
                image_id: Some("sha256:ab".into()),
                image_size: Some(10),
                steps_run: 1,
                steps_cached: 2,
                duration_ms: 5,
                tags: vec!["api:1".into()],
            },
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"build_finished","at_ms":5,"summary":{"image_id":"sha256:ab","image_size":10,"steps_run":1,"steps_cached":2,"duration_ms":5,"tags":["api:1"]}}"#
        );
    }

    #[test]
    fn recorder_keeps_events_in_order_across_threads_and_through_arc() {
        let rec = Arc::new(Recorder::new());
        let sink: Arc<dyn ProgressSink> = rec.clone();
        std::thread::scope(|s| {
            s.spawn(|| {
                sink.emit(Event::Warning {
                    at_ms: 1,
                    message: "a".into(),
                })
            });
        });
        sink.emit(Event::Warning {
            at_ms: 2,
            message: "b".into(),
        });
        let at: Vec<Millis> = rec.events().iter().map(Event::at_ms).collect();
        assert_eq!(at, vec![1, 2]);
        Discard.emit(Event::Warning {
            at_ms: 3,
            message: "c".into(),
        });
    }

    #[test]
    fn clock_counts_up_from_start() {
        let clock = Clock::start();
        let a = clock.now_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = clock.now_ms();
        assert!(b >= a + 5, "{a} then {b}");
        assert_eq!(clock.ms_at(clock.0), 0);
    }
}
