//! `--progress=rawjson`: every event as one JSON object on its own line, exactly
//! as `kiln_builder::progress::Event` serializes (documented in the README).

use kiln_builder::progress::{Event, ProgressSink};
use std::io::Write;
use std::sync::{Mutex, PoisonError};

/// Writes one JSON line per event to `W` (stderr in the CLI, a buffer in tests).
pub struct RawJson<W: Write + Send> {
    out: Mutex<W>,
}

impl<W: Write + Send> RawJson<W> {
    pub fn new(out: W) -> RawJson<W> {
        RawJson {
            out: Mutex::new(out),
        }
    }

    /// The writer back (tests read what was written).
    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<W: Write + Send> ProgressSink for RawJson<W> {
    fn emit(&self, event: Event) {
        // The event types are plain data: serializing them cannot fail.
        let Ok(mut line) = serde_json::to_string(&event) else {
            return;
        };
        line.push('\n');
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        // A log that cannot be written (closed stderr) must not fail the build.
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_builder::progress::{OutputStream, Summary};

    #[test]
    fn one_json_object_per_event_and_line() {
        let json = RawJson::new(Vec::new());
        for e in [
            Event::BuildStarted {
                at_ms: 0,
                steps: 2,
                stages: vec!["builder".into(), "stage-1".into()],
            },
            Event::StepCached {
                at_ms: 1,
                step: 0,
                stage: "builder".into(),
                name: "[builder 1/2] FROM docker.io/library/alpine:3".into(),
            },
            Event::StepStarted {
                at_ms: 2,
                step: 1,
                stage: "builder".into(),
                name: "[builder 2/2] RUN echo \"hi\"".into(),
            },
            Event::StepOutput {
                at_ms: 30,
                step: 1,
                stream: OutputStream::Stdout,
                line: "hi\u{1b}[0m\ttab".into(),
            },
            Event::StepFinished {
                at_ms: 40,
                step: 1,
                duration_ms: 38,
            },
            Event::StepFailed {
                at_ms: 41,
                step: 2,
                duration_ms: 0,
                message: "exit code: 1".into(),
            },
            Event::Warning {
                at_ms: 42,
                message: "w".into(),
            },
            Event::Phase {
                at_ms: 50,
                name: "exporting to image".into(),
                duration_ms: None,
            },
            Event::BuildFinished {
                at_ms: 60,
                summary: Summary {
                    image_id: None,
                    image_size: None,
                    steps_run: 1,
                    steps_cached: 1,
                    duration_ms: 60,
                    tags: vec![],
                },
            },
        ] {
            json.emit(e);
        }
        let text = String::from_utf8(json.into_inner()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"event":"build_started","at_ms":0,"steps":2,"stages":["builder","stage-1"]}"#,
                "\n",
                r#"{"event":"step_cached","at_ms":1,"step":0,"stage":"builder","name":"[builder 1/2] FROM docker.io/library/alpine:3"}"#,
                "\n",
                r#"{"event":"step_started","at_ms":2,"step":1,"stage":"builder","name":"[builder 2/2] RUN echo \"hi\""}"#,
                "\n",
                r#"{"event":"step_output","at_ms":30,"step":1,"stream":"stdout","line":"hi\u001b[0m\ttab"}"#,
                "\n",
                r#"{"event":"step_finished","at_ms":40,"step":1,"duration_ms":38}"#,
                "\n",
                r#"{"event":"step_failed","at_ms":41,"step":2,"duration_ms":0,"message":"exit code: 1"}"#,
                "\n",
                r#"{"event":"warning","at_ms":42,"message":"w"}"#,
                "\n",
                r#"{"event":"phase","at_ms":50,"name":"exporting to image","duration_ms":null}"#,
                "\n",
                r#"{"event":"build_finished","at_ms":60,"summary":{"image_id":null,"image_size":null,"steps_run":1,"steps_cached":1,"duration_ms":60,"tags":[]}}"#,
                "\n",
            )
        );
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["event"].is_string() && v["at_ms"].is_u64(), "{line}");
        }
    }
}
