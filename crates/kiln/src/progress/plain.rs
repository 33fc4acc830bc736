//! `--progress=plain`: BuildKit's plain text lines, for logs.
//!
//! ```text
//! #1 [builder 1/3] FROM docker.io/library/node:20
//! #1 CACHED
//!
//! #2 [builder 2/3] RUN npm install
//! #2 0.512 added 10 packages
//! #2 DONE 1.2s
//! ```
//!
//! Steps are numbered `#1`, `#2`, … in the order they first appear, as BuildKit
//! numbers vertices. When another step's output arrives while one is still
//! running, the running one is left with `#N ...` and the other one's header is
//! printed again (BuildKit does the same), so every line says which step it
//! belongs to. Output lines are written as the RUN printed them.

use super::{seconds, summary_line};
use kiln_builder::progress::{Event, Millis, ProgressSink};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, PoisonError};

/// Writes plain progress lines to `W` (stderr in the CLI, a buffer in tests).
pub struct Plain<W: Write + Send> {
    state: Mutex<State<W>>,
}

struct State<W> {
    out: W,
    /// Display number of the next new vertex.
    next_index: usize,
    /// Step number (from the events) → its vertex.
    steps: HashMap<usize, Vertex>,
    /// Phases still running, by name → display number and start.
    phases: Vec<(String, Vertex)>,
    /// The vertex whose header was printed last and that has not ended since.
    current: Option<usize>,
    printed_any: bool,
}

#[derive(Clone)]
struct Vertex {
    index: usize,
    name: String,
    started_ms: Millis,
}

impl<W: Write + Send> Plain<W> {
    pub fn new(out: W) -> Plain<W> {
        Plain {
            state: Mutex::new(State {
                out,
                next_index: 1,
                steps: HashMap::new(),
                phases: Vec::new(),
                current: None,
                printed_any: false,
            }),
        }
    }

    /// The writer back (tests read what was written).
    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .out
    }
}

impl<W: Write + Send> ProgressSink for Plain<W> {
    fn emit(&self, event: Event) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let text = state.render(event);
        if !text.is_empty() {
            // A log that cannot be written (closed stderr) must not fail the build.
            let _ = state.out.write_all(text.as_bytes());
            let _ = state.out.flush();
        }
    }
}

impl<W> State<W> {
    /// The lines `event` adds to the log.
    fn render(&mut self, event: Event) -> String {
        let mut out = String::new();
        match event {
            Event::BuildStarted { .. } => {}
            Event::StepStarted {
                at_ms, step, name, ..
            } => {
                let v = self.step_vertex(step, &name, at_ms);
                self.enter(&mut out, &v);
            }
            Event::StepCached {
                at_ms, step, name, ..
            } => {
                let v = self.step_vertex(step, &name, at_ms);
                self.enter(&mut out, &v);
                line(&mut out, v.index, "CACHED");
                self.current = None;
            }
            Event::StepOutput {
                at_ms,
                step,
                line: text,
                ..
            } => {
                let v = self.step_vertex(step, &format!("step {step}"), at_ms);
                self.enter(&mut out, &v);
                let t = at_ms.saturating_sub(v.started_ms);
                line(
                    &mut out,
                    v.index,
                    &format!("{}.{:03} {text}", t / 1000, t % 1000),
                );
            }
            Event::StepFinished {
                at_ms,
                step,
                duration_ms,
            } => {
                let v = self.step_vertex(step, &format!("step {step}"), at_ms);
                self.enter(&mut out, &v);
                line(&mut out, v.index, &format!("DONE {}", seconds(duration_ms)));
                self.current = None;
            }
            Event::StepFailed {
                at_ms,
                step,
                message,
                ..
            } => {
                let v = self.step_vertex(step, &format!("step {step}"), at_ms);
                self.enter(&mut out, &v);
                line(&mut out, v.index, &format!("ERROR: {message}"));
                self.current = None;
            }
            Event::StepCancelled { at_ms, step, .. } => {
                let v = self.step_vertex(step, &format!("step {step}"), at_ms);
                self.enter(&mut out, &v);
                line(&mut out, v.index, "CANCELED");
                self.current = None;
            }
            Event::CacheMiss {
                at_ms,
                step,
                reason,
                ..
            } => {
                let v = self.step_vertex(step, &format!("step {step}"), at_ms);
                self.enter(&mut out, &v);
                line(&mut out, v.index, &format!("CACHE MISS: {reason}"));
            }
            Event::Warning { message, .. } => {
                out.push_str(&format!("WARNING: {message}\n"));
            }
            Event::Phase {
                at_ms,
                name,
                duration_ms,
            } => {
                let open = self.phases.iter().position(|(n, _)| *n == name);
                match (open, duration_ms) {
                    // The phase started.
                    (None, None) => {
                        let v = self.new_vertex(&name, at_ms);
                        self.phases.push((name, v.clone()));
                        self.enter(&mut out, &v);
                    }
                    // Started again while running: nothing new to say.
                    (Some(_), None) => {}
                    (open, Some(d)) => {
                        let v = match open {
                            Some(i) => self.phases.remove(i).1,
                            None => self.new_vertex(&name, at_ms),
                        };
                        self.enter(&mut out, &v);
                        line(&mut out, v.index, &format!("DONE {}", seconds(d)));
                        self.current = None;
                    }
                }
            }
            Event::BuildFinished { summary, .. } => {
                if self.printed_any {
                    out.push('\n');
                }
                out.push_str(&summary_line(&summary, true));
                out.push('\n');
                self.current = None;
                self.printed_any = true;
            }
        }
        out
    }

    fn new_vertex(&mut self, name: &str, at_ms: Millis) -> Vertex {
        let v = Vertex {
            index: self.next_index,
            name: name.to_string(),
            started_ms: at_ms,
        };
        self.next_index += 1;
        v
    }

    /// The vertex of `step`, made (numbered, started now) on its first event.
    fn step_vertex(&mut self, step: usize, name: &str, at_ms: Millis) -> Vertex {
        if let Some(v) = self.steps.get(&step) {
            return v.clone();
        }
        let v = self.new_vertex(name, at_ms);
        self.steps.insert(step, v.clone());
        v
    }

    /// Makes `v` the vertex the next lines belong to: leaves the current one with
    /// `#N ...` and prints `v`'s header, unless `v` is already current (a repeated
    /// start prints its header once).
    fn enter(&mut self, out: &mut String, v: &Vertex) {
        if self.current == Some(v.index) {
            return;
        }
        if let Some(c) = self.current {
            line(out, c, "...");
        }
        if self.printed_any {
            out.push('\n');
        }
        line(out, v.index, &v.name);
        self.current = Some(v.index);
        self.printed_any = true;
    }
}

fn line(out: &mut String, index: usize, text: &str) {
    out.push_str(&format!("#{index} {text}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_builder::progress::{OutputStream, Summary};

    fn run(events: Vec<Event>) -> String {
        let plain = Plain::new(Vec::new());
        for e in events {
            plain.emit(e);
        }
        String::from_utf8(plain.into_inner()).unwrap()
    }

    fn started(at_ms: Millis, step: usize, name: &str) -> Event {
        Event::StepStarted {
            at_ms,
            step,
            stage: "builder".into(),
            name: name.into(),
        }
    }

    fn output(at_ms: Millis, step: usize, line: &str) -> Event {
        Event::StepOutput {
            at_ms,
            step,
            stream: OutputStream::Stdout,
            line: line.into(),
        }
    }

    #[test]
    fn a_build_reads_like_buildkit_plain_output() {
        let text = run(vec![
            Event::BuildStarted {
                at_ms: 0,
                steps: 3,
                stages: vec!["builder".into()],
            },
            Event::StepCached {
                at_ms: 3,
                step: 0,
                stage: "builder".into(),
                name: "[builder 1/3] FROM docker.io/library/node:20".into(),
            },
            started(10, 1, "[builder 2/3] RUN npm install"),
            output(522, 1, "added 10 packages"),
            Event::StepOutput {
                at_ms: 1_010,
                step: 1,
                stream: OutputStream::Stderr,
                line: "npm warn deprecated x".into(),
            },
            Event::StepFinished {
                at_ms: 1_210,
                step: 1,
                duration_ms: 1_200,
            },
            Event::Warning {
                at_ms: 1_300,
                message: "rootless: RUN steps share one uid".into(),
            },
            started(1_300, 2, "[builder 3/3] RUN false"),
            Event::StepFailed {
                at_ms: 1_350,
                step: 2,
                duration_ms: 50,
                message: "process \"/bin/sh -c false\" did not complete successfully: exit code: 1"
                    .into(),
            },
        ]);
        assert_eq!(
            text,
            "#1 [builder 1/3] FROM docker.io/library/node:20\n\
             #1 CACHED\n\
             \n\
             #2 [builder 2/3] RUN npm install\n\
             #2 0.512 added 10 packages\n\
             #2 1.000 npm warn deprecated x\n\
             #2 DONE 1.2s\n\
             WARNING: rootless: RUN steps share one uid\n\
             \n\
             #3 [builder 3/3] RUN false\n\
             #3 ERROR: process \"/bin/sh -c false\" did not complete successfully: exit code: 1\n"
        );
    }

    #[test]
    fn interleaved_steps_leave_and_reenter_with_their_header() {
        let text = run(vec![
            started(0, 4, "[a 2/2] RUN make"),
            started(5, 7, "[b 2/2] RUN make"),
            output(1_000, 4, "a says"),
            output(2_005, 7, "b says"),
            Event::StepFinished {
                at_ms: 2_500,
                step: 4,
                duration_ms: 2_500,
            },
            Event::StepFinished {
                at_ms: 2_600,
                step: 7,
                duration_ms: 2_595,
            },
        ]);
        assert_eq!(
            text,
            "#1 [a 2/2] RUN make\n\
             #1 ...\n\
             \n\
             #2 [b 2/2] RUN make\n\
             #2 ...\n\
             \n\
             #1 [a 2/2] RUN make\n\
             #1 1.000 a says\n\
             #1 ...\n\
             \n\
             #2 [b 2/2] RUN make\n\
             #2 2.000 b says\n\
             #2 ...\n\
             \n\
             #1 [a 2/2] RUN make\n\
             #1 DONE 2.5s\n\
             \n\
             #2 [b 2/2] RUN make\n\
             #2 DONE 2.6s\n"
        );
    }

    #[test]
    fn phases_and_the_summary_end_the_log() {
        let text = run(vec![
            started(0, 0, "[1/1] COPY . /app"),
            Event::StepFinished {
                at_ms: 40,
                step: 0,
                duration_ms: 40,
            },
            Event::Phase {
                at_ms: 50,
                name: "exporting to image".into(),
                duration_ms: None,
            },
            Event::Phase {
                at_ms: 250,
                name: "exporting to image".into(),
                duration_ms: Some(200),
            },
            Event::Phase {
                at_ms: 300,
                name: "naming to api:1".into(),
                duration_ms: Some(0),
            },
            Event::BuildFinished {
                at_ms: 300,
                summary: Summary {
                    image_id: Some("sha256:0123456789abcdef".into()),
                    image_size: Some(4_260_000),
                    steps_run: 1,
                    steps_cached: 0,
                    duration_ms: 300,
                    tags: vec!["api:1".into()],
                },
            },
        ]);
        assert_eq!(
            text,
            "#1 [1/1] COPY . /app\n\
             #1 DONE 0.0s\n\
             \n\
             #2 exporting to image\n\
             #2 DONE 0.2s\n\
             \n\
             #3 naming to api:1\n\
             #3 DONE 0.0s\n\
             \n\
             built api:1 sha256:0123456789abcdef 4.26MB in 0.3s — 1 step run, 0 cached\n"
        );
    }
}
