//! Rendering of build progress: the executor emits [`Event`]s through a
//! [`ProgressSink`]; [`sink_for`] picks how they are shown (`--progress`):
//!
//! - `tty`: a live view redrawn from a render thread (one line per step, the last
//!   output lines of each running RUN), replaced by a compact final view;
//! - `plain`: BuildKit's `--progress=plain` lines, for CI logs;
//! - `rawjson`: one JSON object per event and line, for programs;
//! - `auto`: `tty` when stderr is a terminal, else `plain`.
//!
//! Everything goes to stderr; stdout stays free for the command's own output.

mod plain;
mod rawjson;
mod tty;

use kiln_builder::progress::{Event, Millis, ProgressSink, Summary};
use std::io::{self, IsTerminal};
use std::sync::Arc;

pub use plain::Plain;
pub use rawjson::RawJson;
pub use tty::Tty;

/// The renderer chosen by `--progress`. Share it with the executor as an
/// `Arc<dyn ProgressSink>` and call [`Progress::finish`] when the build is over
/// (it stops the tty render thread and prints the final view).
pub struct Progress {
    renderer: Renderer,
}

enum Renderer {
    Plain(Plain<io::Stderr>),
    Tty(Tty),
    RawJson(RawJson<io::Stderr>),
    /// `kiln build -q`: nothing but the image id at the end.
    Quiet,
}

/// `--progress`: how to show the build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// `tty` on a terminal, else `plain`.
    Auto,
    Tty,
    Plain,
    Rawjson,
}

/// The renderer for `mode`, writing to stderr.
pub fn sink_for(mode: ProgressMode) -> Arc<Progress> {
    let renderer = match resolve(mode) {
        ProgressMode::Tty => Renderer::Tty(Tty::stderr()),
        ProgressMode::Rawjson => Renderer::RawJson(RawJson::new(io::stderr())),
        ProgressMode::Plain | ProgressMode::Auto => Renderer::Plain(Plain::new(io::stderr())),
    };
    Arc::new(Progress { renderer })
}

/// Whether `mode` renders BuildKit's plain lines (`auto` on no terminal too).
pub fn is_plain(mode: ProgressMode) -> bool {
    resolve(mode) == ProgressMode::Plain
}

/// No progress output at all (`kiln build -q`).
pub fn quiet() -> Arc<Progress> {
    Arc::new(Progress {
        renderer: Renderer::Quiet,
    })
}

/// `auto` becomes `tty` when stderr is a terminal that can move the cursor
/// (`TERM` is not `dumb`), else `plain`; other modes stay as they are.
fn resolve(mode: ProgressMode) -> ProgressMode {
    match mode {
        ProgressMode::Auto => {
            let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
            if io::stderr().is_terminal() && !dumb {
                ProgressMode::Tty
            } else {
                ProgressMode::Plain
            }
        }
        other => other,
    }
}

impl Progress {
    /// Ends the output: the tty view stops redrawing and is replaced by the final
    /// view and summary. Plain and rawjson output is already complete. Calling it
    /// again does nothing.
    pub fn finish(&self) {
        if let Renderer::Tty(tty) = &self.renderer {
            tty.finish();
        }
    }
}

impl ProgressSink for Progress {
    fn emit(&self, event: Event) {
        match &self.renderer {
            Renderer::Plain(r) => r.emit(event),
            Renderer::Tty(r) => r.emit(event),
            Renderer::RawJson(r) => r.emit(event),
            Renderer::Quiet => {}
        }
    }
}

/// A step's duration as BuildKit prints it: seconds rounded to one decimal ("1.2s").
fn seconds(ms: Millis) -> String {
    let tenths = ms.saturating_add(50) / 100;
    format!("{}.{}s", tenths / 10, tenths % 10)
}

/// A whole build's duration: "12.3s", or "2m03.4s" from a minute on.
fn total_time(ms: Millis) -> String {
    let tenths = ms.saturating_add(50) / 100;
    if tenths < 600 {
        seconds(ms)
    } else {
        format!(
            "{}m{:02}.{}s",
            tenths / 600,
            (tenths % 600) / 10,
            tenths % 10
        )
    }
}

/// The one-line result of a build:
/// `built api:1 sha256:ab12cd34ef56 184MB in 12.3s — 5 steps run, 7 cached`.
/// `full_id` prints the whole image id (logs) instead of its first 12 hex digits.
fn summary_line(summary: &Summary, full_id: bool) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !summary.tags.is_empty() {
        parts.push(summary.tags.join(", "));
    }
    if let Some(id) = &summary.image_id {
        parts.push(if full_id { id.clone() } else { short_id(id) });
    }
    if let Some(size) = summary.image_size {
        parts.push(crate::render::human_size(size));
    }
    let what = if parts.is_empty() {
        "built".to_string()
    } else {
        format!("built {}", parts.join(" "))
    };
    let run = match summary.steps_run {
        1 => "1 step run".to_string(),
        n => format!("{n} steps run"),
    };
    format!(
        "{what} in {} — {run}, {} cached",
        total_time(summary.duration_ms),
        summary.steps_cached
    )
}

/// `sha256:` and the first 12 hex digits of an image id.
fn short_id(id: &str) -> String {
    match id.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", hex.get(..12).unwrap_or(hex)),
        None => id.get(..12).unwrap_or(id).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_name_modes() {
        use clap::ValueEnum;
        let mode = |v: &str| ProgressMode::from_str(v, false).ok();
        assert_eq!(mode("auto"), Some(ProgressMode::Auto));
        assert_eq!(mode("tty"), Some(ProgressMode::Tty));
        assert_eq!(mode("plain"), Some(ProgressMode::Plain));
        assert_eq!(mode("rawjson"), Some(ProgressMode::Rawjson));
        assert_eq!(mode("fancy"), None);
        assert_eq!(resolve(ProgressMode::Rawjson), ProgressMode::Rawjson);
        assert_ne!(resolve(ProgressMode::Auto), ProgressMode::Auto);
    }

    #[test]
    fn durations_have_one_decimal_and_minutes_from_sixty_seconds() {
        assert_eq!(seconds(0), "0.0s");
        assert_eq!(seconds(1_249), "1.2s");
        assert_eq!(seconds(61_000), "61.0s");
        assert_eq!(total_time(12_345), "12.3s");
        assert_eq!(seconds(2_595), "2.6s");
        assert_eq!(total_time(59_949), "59.9s");
        assert_eq!(total_time(59_999), "1m00.0s");
        assert_eq!(total_time(123_456), "2m03.5s");
        assert_eq!(total_time(123_449), "2m03.4s");
    }

    #[test]
    fn summary_names_tags_id_size_time_and_counts() {
        let mut s = Summary {
            image_id: Some(format!("sha256:{}", "ab12".repeat(16))),
            image_size: Some(184_200_000),
            steps_run: 5,
            steps_cached: 7,
            duration_ms: 12_300,
            tags: vec!["api:1".into(), "api:latest".into()],
        };
        assert_eq!(
            summary_line(&s, false),
            "built api:1, api:latest sha256:ab12ab12ab12 184MB in 12.3s — 5 steps run, 7 cached"
        );
        assert!(summary_line(&s, true).contains(&format!("sha256:{}", "ab12".repeat(16))));
        s.tags.clear();
        s.image_id = None;
        s.image_size = None;
        s.steps_run = 1;
        assert_eq!(
            summary_line(&s, false),
            "built in 12.3s — 1 step run, 7 cached"
        );
    }
}
