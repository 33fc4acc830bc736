//! `--progress=tty`: a live view of the build, redrawn in place at most ten times
//! a second from a render thread, like BuildKit's:
//!
//! ```text
//! [+] Building 12.3s (7/12)
//!  => CACHED [builder 1/5] FROM docker.io/library/node:20                0.0s
//!  => [builder 2/5] COPY package.json ./                                 0.1s
//!  => [builder 3/5] RUN npm install                                      5.2s
//!  => => # added 10 packages
//! ```
//!
//! Events only update a [`BuildView`] under a lock; all terminal writes happen on
//! the render thread. Output lines are cleaned of control characters (escape
//! sequences, carriage returns, tabs) before they reach the screen, and every line
//! is cut to the terminal's width so the cursor arithmetic of the redraw holds.
//! [`Tty::finish`] replaces the live view with a compact final one: every step
//! on one line, warnings, and the summary. (A failed RUN's output is the build
//! error's to show, below the view.)

use super::{seconds, summary_line, total_time};
use kiln_builder::progress::{Event, Millis, ProgressSink, Summary};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Output lines of a running RUN shown under it (and kept per step).
const LIVE_TAIL: usize = 6;
/// Columns of an output line or name kept for display.
const MAX_COLUMNS: usize = 1000;
/// Time between two redraws.
const FRAME_INTERVAL: Duration = Duration::from_millis(100);

/// A terminal's size in columns and rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermSize {
    pub width: usize,
    pub height: usize,
}

/// What is known about the build so far: the model the frames are drawn from.
#[derive(Debug, Default)]
pub struct BuildView {
    /// Steps announced by `BuildStarted` events (several builds may share
    /// one view: `kiln compose build`).
    total_steps: usize,
    /// `BuildStarted` events seen.
    builds: usize,
    started_ms: Millis,
    /// Steps and phases in the order they appeared.
    vertices: Vec<Vertex>,
    /// Step number → index in `vertices`.
    by_step: HashMap<usize, usize>,
    warnings: Vec<String>,
    /// `--explain-cache`: a step that ran, and why it missed.
    misses: Vec<(String, String)>,
    /// One per finished build.
    summaries: Vec<Summary>,
    /// The latest event time, and when the first event arrived (to tell the
    /// build's time between events).
    last_ms: Millis,
    anchor: Option<(Millis, Instant)>,
}

#[derive(Debug)]
struct Vertex {
    /// `None` for a phase (exporting, pushing).
    step: Option<usize>,
    name: String,
    started_ms: Millis,
    state: VertexState,
    /// The last output lines, already cleaned for the terminal.
    output: VecDeque<String>,
}

#[derive(Debug, PartialEq)]
enum VertexState {
    Running,
    Cached,
    Done(Millis),
    Failed(Millis),
    Cancelled(Millis),
}

impl BuildView {
    /// Takes in one event.
    pub fn apply(&mut self, event: &Event, received: Instant) {
        let at_ms = event.at_ms();
        self.anchor.get_or_insert((at_ms, received));
        self.last_ms = self.last_ms.max(at_ms);
        match event {
            Event::BuildStarted { at_ms, steps, .. } => {
                self.total_steps += *steps;
                if self.builds == 0 {
                    self.started_ms = *at_ms;
                }
                self.builds += 1;
            }
            Event::StepStarted {
                at_ms, step, name, ..
            } => {
                let v = self.step_vertex(*step, name, *at_ms);
                v.name = sanitize(name);
            }
            Event::StepCached {
                at_ms, step, name, ..
            } => {
                let v = self.step_vertex(*step, name, *at_ms);
                v.name = sanitize(name);
                v.state = VertexState::Cached;
            }
            Event::StepOutput {
                at_ms, step, line, ..
            } => {
                let v = self.step_vertex(*step, &format!("step {step}"), *at_ms);
                if v.output.len() == LIVE_TAIL {
                    v.output.pop_front();
                }
                v.output.push_back(sanitize(line));
            }
            Event::StepFinished {
                at_ms,
                step,
                duration_ms,
            } => {
                let v = self.step_vertex(*step, &format!("step {step}"), *at_ms);
                v.state = VertexState::Done(*duration_ms);
            }
            Event::StepFailed {
                at_ms,
                step,
                duration_ms,
                ..
            } => {
                // The message reaches the user as the build's error.
                let v = self.step_vertex(*step, &format!("step {step}"), *at_ms);
                v.state = VertexState::Failed(*duration_ms);
            }
            Event::StepCancelled {
                at_ms,
                step,
                duration_ms,
            } => {
                let v = self.step_vertex(*step, &format!("step {step}"), *at_ms);
                v.state = VertexState::Cancelled(*duration_ms);
            }
            Event::Warning { message, .. } => self.warnings.push(sanitize(message)),
            Event::CacheMiss { name, reason, .. } => {
                self.misses.push((sanitize(name), sanitize(reason)))
            }
            Event::Phase {
                at_ms,
                name,
                duration_ms,
            } => {
                let name = sanitize(name);
                let open = self.vertices.iter_mut().rev().find(|v| {
                    v.step.is_none() && v.name == name && v.state == VertexState::Running
                });
                match (open, duration_ms) {
                    (Some(v), Some(d)) => v.state = VertexState::Done(*d),
                    (Some(_), None) => {}
                    (None, d) => self.vertices.push(Vertex {
                        step: None,
                        name,
                        started_ms: at_ms.saturating_sub(d.unwrap_or(0)),
                        state: d.map_or(VertexState::Running, VertexState::Done),
                        output: VecDeque::new(),
                    }),
                }
            }
            Event::BuildFinished { summary, .. } => self.summaries.push(summary.clone()),
        }
    }

    /// The vertex of `step`, made (running since `at_ms`) on its first event.
    fn step_vertex(&mut self, step: usize, name: &str, at_ms: Millis) -> &mut Vertex {
        let i = *self.by_step.entry(step).or_insert_with(|| {
            self.vertices.push(Vertex {
                step: Some(step),
                name: sanitize(name),
                started_ms: at_ms,
                state: VertexState::Running,
                output: VecDeque::new(),
            });
            self.vertices.len() - 1
        });
        &mut self.vertices[i]
    }

    /// The build's time at `now`: the last event's time, moved on by the wall
    /// clock since the first event arrived.
    pub fn now_ms(&self, now: Instant) -> Millis {
        let moved = self.anchor.map_or(0, |(at, when)| {
            at.saturating_add(
                Millis::try_from(now.saturating_duration_since(when).as_millis())
                    .unwrap_or(Millis::MAX),
            )
        });
        moved.max(self.last_ms)
    }

    fn is_empty(&self) -> bool {
        self.vertices.is_empty() && self.warnings.is_empty() && self.summaries.is_empty()
    }

    fn header(&self, now_ms: Millis, finished: bool) -> String {
        let steps = self.vertices.iter().filter(|v| v.step.is_some());
        let ended = steps
            .clone()
            .filter(|v| v.state != VertexState::Running)
            .count();
        let total = self.total_steps.max(steps.count());
        let elapsed = match self.summaries.as_slice() {
            [s] if finished && self.builds == 1 => s.duration_ms,
            _ => now_ms.saturating_sub(self.started_ms),
        };
        format!(
            "[+] Building {} ({ended}/{total}){}",
            total_time(elapsed),
            if finished { " FINISHED" } else { "" }
        )
    }
}

/// One frame of the live view at `now_ms`: the header, then the steps and their
/// latest output, cut to `size.width` and to fewer than `size.height` lines
/// (finished steps scroll away first, then output lines).
pub fn render_frame(view: &BuildView, now_ms: Millis, size: TermSize, color: bool) -> Vec<String> {
    let width = size.width;
    // Rows for steps: leave one for the header and one so the frame never scrolls.
    let budget = size.height.saturating_sub(2).max(1);
    let running = |v: &Vertex| v.state == VertexState::Running;
    let mut shown: Vec<&Vertex> = view.vertices.iter().collect();
    let lines_with = |shown: &[&Vertex], tail: usize| -> usize {
        shown
            .iter()
            .map(|v| {
                1 + if running(v) {
                    v.output.len().min(tail)
                } else {
                    0
                }
            })
            .sum()
    };
    while lines_with(&shown, LIVE_TAIL) > budget {
        match shown.iter().position(|v| !running(v)) {
            Some(i) => {
                shown.remove(i);
            }
            None => break,
        }
    }
    let mut tail = LIVE_TAIL;
    while tail > 0 && lines_with(&shown, tail) > budget {
        tail -= 1;
    }
    let mut body = Vec::new();
    for v in shown {
        body.push(vertex_line(v, now_ms, width, color, false));
        if running(v) {
            let skip = v.output.len().saturating_sub(tail);
            for line in v.output.iter().skip(skip) {
                body.push(output_line(line, width));
            }
        }
    }
    let drop = body.len().saturating_sub(budget);
    let mut frame = vec![fit(&view.header(now_ms, false), usable(width))];
    frame.extend(body.into_iter().skip(drop));
    frame
}

/// The view left on the terminal when the build is over: every step on one line,
/// then the warnings and the summary (these whole: the final view is not
/// redrawn, so a long line may wrap).
pub fn render_final(view: &BuildView, now_ms: Millis, width: usize, color: bool) -> Vec<String> {
    if view.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![fit(&view.header(now_ms, true), usable(width))];
    for v in &view.vertices {
        lines.push(vertex_line(v, now_ms, width, color, true));
    }
    // Never redrawn, so these may wrap rather than lose words.
    for (name, reason) in &view.misses {
        lines.push(format!("CACHE MISS {name}: {reason}"));
    }
    for w in &view.warnings {
        lines.push(paint(&format!("WARNING: {w}"), YELLOW, color));
    }
    for summary in &view.summaries {
        lines.push(summary_line(summary, false));
    }
    lines
}

const BLUE: &str = "\x1b[34m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";

fn paint(line: &str, code: &str, color: bool) -> String {
    if color {
        format!("{code}{line}\x1b[0m")
    } else {
        line.to_string()
    }
}

/// Columns a line may use: all but the last, so no terminal wraps early.
fn usable(width: usize) -> usize {
    width.saturating_sub(1).max(1)
}

/// ` => [builder 3/5] RUN npm install            5.2s`, the time flush right.
/// A step still running when the build ended was cancelled.
fn vertex_line(v: &Vertex, now_ms: Millis, width: usize, color: bool, last: bool) -> String {
    let (label, ms, code) = match v.state {
        VertexState::Running if last => (
            format!("CANCELED {}", v.name),
            now_ms.saturating_sub(v.started_ms),
            Some(YELLOW),
        ),
        VertexState::Running => (v.name.clone(), now_ms.saturating_sub(v.started_ms), None),
        VertexState::Cached => (format!("CACHED {}", v.name), 0, Some(BLUE)),
        VertexState::Done(d) => (v.name.clone(), d, Some(BLUE)),
        VertexState::Failed(d) => (format!("ERROR {}", v.name), d, Some(RED)),
        VertexState::Cancelled(d) => (format!("CANCELED {}", v.name), d, Some(RED)),
    };
    let time = seconds(ms);
    let room = usable(width);
    let prefix = " => ";
    let line = if room < prefix.len() + time.len() + 2 {
        fit(&format!("{prefix}{label}"), room)
    } else {
        let label = fit(&label, room - prefix.len() - time.len() - 1);
        let pad = room - prefix.len() - text_width(&label) - time.len();
        format!("{prefix}{label}{}{time}", " ".repeat(pad))
    };
    match code {
        Some(code) => paint(&line, code, color),
        None => line,
    }
}

/// ` => => # added 10 packages`
fn output_line(line: &str, width: usize) -> String {
    fit(&format!(" => => # {line}"), usable(width))
}

/// Columns `c` may take on a terminal, never fewer than it does: 1 below U+1100,
/// where no character is wide, and 2 from there on, where East Asian wide
/// characters and emoji live. Overcounting only cuts a line early; undercounting
/// would wrap it and break the redraw.
fn columns(c: char) -> usize {
    if c < '\u{1100}' {
        1
    } else {
        2
    }
}

/// Columns `s` may take on a terminal (see [`columns`]).
fn text_width(s: &str) -> usize {
    s.chars().map(columns).sum()
}

/// `s` cut to at most `max` terminal columns, ending in `…` when cut.
fn fit(s: &str, max: usize) -> String {
    if text_width(s) <= max {
        return s.to_string();
    }
    let ellipsis = columns('…');
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = columns(c);
        if used + w + ellipsis > max {
            break;
        }
        out.push(c);
        used += w;
    }
    if max >= ellipsis {
        out.push('…');
    }
    out
}

/// What a terminal would show of one output line, as plain printable text: the
/// part after the last carriage return, escape sequences (colours, cursor moves,
/// titles) removed, tabs expanded to 8-column stops, other control characters and
/// bidirectional overrides dropped; no more than [`MAX_COLUMNS`] columns of it
/// (no terminal is wider, and a RUN may print megabytes on one line).
pub fn sanitize(line: &str) -> String {
    let line = line.trim_end_matches(['\r', '\n']);
    let line = line.rsplit('\r').next().unwrap_or(line);
    let mut out = String::with_capacity(line.len().min(MAX_COLUMNS));
    let mut col = 0;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if col >= MAX_COLUMNS {
            break;
        }
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: up to BEL or ESC \ (string terminator).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' {
                            if chars.peek() == Some(&'\\') {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                // Two-character sequences (ESC 7, ESC =, ESC ( B takes one more).
                Some('(' | ')' | '*' | '+') => {
                    chars.next();
                }
                _ => {}
            },
            '\t' => {
                let n = 8 - col % 8;
                out.extend(std::iter::repeat_n(' ', n));
                col += n;
            }
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c if c.is_control() => {}
            c => {
                out.push(c);
                col += columns(c);
            }
        }
    }
    out
}

/// The live renderer: events update the view; a thread draws it.
pub struct Tty {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    screen: Mutex<Screen>,
    wake: Condvar,
}

struct Screen {
    view: BuildView,
    stop: bool,
}

type SizeFn = Box<dyn Fn() -> TermSize + Send>;

impl Tty {
    /// Draws on stderr, sized by the terminal, coloured unless `NO_COLOR` is set.
    pub fn stderr() -> Tty {
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Tty::new(Box::new(io::stderr()), Box::new(stderr_size), color)
    }

    /// Draws on `out`, asking `size` for the terminal size before every frame.
    pub fn new(out: Box<dyn Write + Send>, size: SizeFn, color: bool) -> Tty {
        let shared = Arc::new(Shared {
            screen: Mutex::new(Screen {
                view: BuildView::default(),
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("kiln-progress".into())
            .spawn(move || draw_until_stopped(&for_thread, out, size, color));
        // Without a thread the build still runs; it just shows no live view.
        Tty {
            shared,
            thread: Mutex::new(thread.ok()),
        }
    }

    /// Stops redrawing and leaves the final view on the terminal. Idempotent.
    pub fn finish(&self) {
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            self.shared
                .screen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .stop = true;
            self.shared.wake.notify_all();
            let _ = handle.join();
        }
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        self.finish();
    }
}

impl ProgressSink for Tty {
    fn emit(&self, event: Event) {
        let now = Instant::now();
        self.shared
            .screen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .view
            .apply(&event, now);
    }
}

/// The render thread: a frame every [`FRAME_INTERVAL`], each drawn over the
/// previous one, then the final view.
fn draw_until_stopped(shared: &Shared, mut out: Box<dyn Write + Send>, size: SizeFn, color: bool) {
    let mut drawn = 0usize;
    loop {
        let (lines, stop) = {
            let mut screen = shared.screen.lock().unwrap_or_else(PoisonError::into_inner);
            if !screen.stop {
                screen = shared
                    .wake
                    .wait_timeout(screen, FRAME_INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            let now = screen.view.now_ms(Instant::now());
            if screen.stop {
                (render_final(&screen.view, now, size().width, color), true)
            } else if screen.view.is_empty() {
                // Nothing to show yet; a build that fails before its first
                // event leaves no empty frame behind.
                (Vec::new(), false)
            } else {
                (render_frame(&screen.view, now, size(), color), false)
            }
        };
        if !(lines.is_empty() && drawn == 0) {
            let _ = out.write_all(redraw(drawn, &lines).as_bytes());
            let _ = out.flush();
            drawn = lines.len();
        }
        if stop {
            return;
        }
    }
}

/// Terminal bytes that replace the `drawn` lines above the cursor by `lines`,
/// leaving the cursor on the line below them.
fn redraw(drawn: usize, lines: &[String]) -> String {
    let mut s = String::new();
    if drawn > 0 {
        s.push_str(&format!("\x1b[{drawn}A"));
    }
    for line in lines {
        s.push('\r');
        s.push_str(line);
        s.push_str("\x1b[K\n");
    }
    // Clear what is left of a taller previous frame.
    s.push_str("\r\x1b[J");
    s
}

/// stderr's terminal size; 80×24 when it cannot be told.
fn stderr_size() -> TermSize {
    match rustix::termios::tcgetwinsize(io::stderr()) {
        Ok(ws) if ws.ws_col > 0 && ws.ws_row > 0 => TermSize {
            width: usize::from(ws.ws_col),
            height: usize::from(ws.ws_row),
        },
        _ => TermSize {
            width: 80,
            height: 24,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_builder::progress::OutputStream;

    fn view(events: &[Event]) -> BuildView {
        let mut v = BuildView::default();
        let now = Instant::now();
        for e in events {
            v.apply(e, now);
        }
        v
    }

    fn started(at_ms: Millis, step: usize, name: &str) -> Event {
        Event::StepStarted {
            at_ms,
            step,
            stage: "builder".into(),
            name: name.into(),
        }
    }

    fn cached(at_ms: Millis, step: usize, name: &str) -> Event {
        Event::StepCached {
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

    fn finished(at_ms: Millis, step: usize, duration_ms: Millis) -> Event {
        Event::StepFinished {
            at_ms,
            step,
            duration_ms,
        }
    }

    fn build(steps: usize) -> Event {
        Event::BuildStarted {
            at_ms: 0,
            steps,
            stages: vec!["builder".into()],
        }
    }

    const WIDE: TermSize = TermSize {
        width: 61,
        height: 40,
    };

    #[test]
    fn a_frame_shows_every_step_and_the_output_of_running_ones() {
        let mut events = vec![
            build(4),
            cached(10, 0, "[builder 1/4] FROM docker.io/library/node:20"),
            started(20, 1, "[builder 2/4] COPY package.json ./"),
            finished(120, 1, 100),
            started(130, 2, "[builder 3/4] RUN npm install"),
        ];
        for i in 1..=8 {
            events.push(output(200 + i, 2, &format!("line {i}")));
        }
        let frame = render_frame(&view(&events), 5_330, WIDE, false);
        assert_eq!(
            frame,
            vec![
                "[+] Building 5.3s (2/4)",
                " => CACHED [builder 1/4] FROM docker.io/library/node:20 0.0s",
                " => [builder 2/4] COPY package.json ./                  0.1s",
                " => [builder 3/4] RUN npm install                       5.2s",
                " => => # line 3",
                " => => # line 4",
                " => => # line 5",
                " => => # line 6",
                " => => # line 7",
                " => => # line 8",
            ]
        );
        for line in &frame {
            assert!(text_width(line) < WIDE.width, "{line:?}");
        }
    }

    #[test]
    fn long_names_and_output_are_cut_to_the_width() {
        let v = view(&[
            build(1),
            started(0, 0, "[builder 1/1] RUN make -j8 all install DESTDIR=/out"),
            output(5, 0, &"x".repeat(100)),
            output(6, 0, "日本語のテキストがここにある"),
        ]);
        let size = TermSize {
            width: 31,
            height: 10,
        };
        let frame = render_frame(&v, 1_000, size, false);
        assert_eq!(
            frame,
            vec![
                "[+] Building 1.0s (0/1)",
                " => [builder 1/1] RUN m… 1.0s",
                " => => # xxxxxxxxxxxxxxxxxxx…",
                " => => # 日本語のテキストが…",
            ]
        );
        for line in &frame {
            assert!(
                text_width(line) <= 30,
                "{line:?} is {} wide",
                text_width(line)
            );
        }
    }

    #[test]
    fn a_short_terminal_drops_finished_steps_then_output_lines() {
        let mut events = vec![build(6)];
        for s in 0..4 {
            events.push(started(
                s as Millis,
                s,
                &format!("[{}/6] COPY f{s} .", s + 1),
            ));
            events.push(finished(s as Millis + 1, s, 1));
        }
        events.push(started(10, 4, "[5/6] RUN a"));
        events.push(started(10, 5, "[6/6] RUN b"));
        for i in 0..3 {
            events.push(output(20, 4, &format!("a{i}")));
            events.push(output(20, 5, &format!("b{i}")));
        }
        let v = view(&events);
        let frame = |height| render_frame(&v, 2_000, TermSize { width: 40, height }, false);
        // 12 rows: 10 for steps, and the two running ones need 8.
        assert_eq!(
            frame(12),
            vec![
                "[+] Building 2.0s (4/6)",
                " => [3/6] COPY f2 .                0.0s",
                " => [4/6] COPY f3 .                0.0s",
                " => [5/6] RUN a                    2.0s",
                " => => # a0",
                " => => # a1",
                " => => # a2",
                " => [6/6] RUN b                    2.0s",
                " => => # b0",
                " => => # b1",
                " => => # b2",
            ]
        );
        // 6 rows: no finished steps, one output line each.
        assert_eq!(
            frame(6),
            vec![
                "[+] Building 2.0s (4/6)",
                " => [5/6] RUN a                    2.0s",
                " => => # a2",
                " => [6/6] RUN b                    2.0s",
                " => => # b2",
            ]
        );
    }

    #[test]
    fn the_final_view_lists_steps_warnings_and_summary() {
        let v = view(&[
            build(3),
            cached(0, 0, "[1/3] FROM alpine"),
            Event::Warning {
                at_ms: 1,
                message: "JSONArgsRecommended: use JSON for CMD".into(),
            },
            started(5, 1, "[2/3] RUN make"),
            output(10, 1, "\x1b[31mcc: error\x1b[0m: x.c"),
            Event::StepFailed {
                at_ms: 1_505,
                step: 1,
                duration_ms: 1_500,
                message: "exit code: 2".into(),
            },
            started(6, 2, "[other 2/2] RUN sleep 9"),
        ]);
        assert_eq!(
            render_final(&v, 1_600, 50, false),
            vec![
                "[+] Building 1.6s (2/3) FINISHED",
                " => CACHED [1/3] FROM alpine                 0.0s",
                " => ERROR [2/3] RUN make                     1.5s",
                " => CANCELED [other 2/2] RUN sleep 9         1.6s",
                "WARNING: JSONArgsRecommended: use JSON for CMD",
            ]
        );
        let v = view(&[
            build(1),
            started(0, 0, "[1/1] COPY . ."),
            finished(20, 0, 20),
            Event::Phase {
                at_ms: 30,
                name: "exporting to image".into(),
                duration_ms: None,
            },
            Event::Phase {
                at_ms: 130,
                name: "exporting to image".into(),
                duration_ms: Some(100),
            },
            Event::BuildFinished {
                at_ms: 140,
                summary: Summary {
                    image_id: Some(format!("sha256:{}", "0f".repeat(32))),
                    image_size: Some(12_345),
                    steps_run: 1,
                    steps_cached: 0,
                    duration_ms: 140,
                    tags: vec!["app:1".into()],
                },
            },
        ]);
        assert_eq!(
            render_final(&v, 140, 80, true),
            vec![
                "[+] Building 0.1s (1/1) FINISHED".to_string(),
                format!("\x1b[34m => [1/1] COPY . .{}0.0s\x1b[0m", " ".repeat(57)),
                format!(
                    "\x1b[34m => exporting to image{}0.1s\x1b[0m",
                    " ".repeat(53)
                ),
                "built app:1 sha256:0f0f0f0f0f0f 12.3kB in 0.1s — 1 step run, 0 cached".to_string(),
            ]
        );
        let narrow = render_final(&v, 140, 30, false);
        assert_eq!(
            narrow.last().unwrap(),
            "built app:1 sha256:0f0f0f0f0f0f 12.3kB in 0.1s — 1 step run, 0 cached"
        );
        assert_eq!(narrow[1], " => [1/1] COPY . .       0.0s");
        assert!(render_final(&BuildView::default(), 0, 80, false).is_empty());
    }

    #[test]
    fn several_builds_share_one_view_with_a_summary_each() {
        let done = |at_ms: Millis, tag: &str| Event::BuildFinished {
            at_ms,
            summary: Summary {
                image_id: Some(format!("sha256:{}", "ab".repeat(32))),
                image_size: Some(1_000),
                steps_run: 1,
                steps_cached: 0,
                duration_ms: 100,
                tags: vec![tag.into()],
            },
        };
        let v = view(&[
            build(2),
            Event::BuildStarted {
                at_ms: 50,
                steps: 1,
                stages: vec!["web".into()],
            },
            started(60, 0, "[api 1/2] RUN a"),
            started(70, 5, "[web 1/1] RUN b"),
            finished(200, 0, 140),
            finished(300, 5, 230),
            done(310, "p-api"),
            done(320, "p-web"),
        ]);
        let lines = render_final(&v, 320, 80, false);
        assert_eq!(lines[0], "[+] Building 0.3s (2/3) FINISHED");
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(lines[3].starts_with("built p-api "), "{lines:?}");
        assert!(lines[4].starts_with("built p-web "), "{lines:?}");
    }

    #[test]
    fn output_is_cleaned_of_control_characters() {
        assert_eq!(sanitize("plain text"), "plain text");
        assert_eq!(sanitize("\x1b[1;32mgreen\x1b[0m done"), "green done");
        assert_eq!(sanitize("10%\r20%\r100%\r"), "100%");
        assert_eq!(sanitize("a\tb\tc"), "a       b       c");
        assert_eq!(sanitize("\x1b]0;title\x07text"), "text");
        assert_eq!(sanitize("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"), "link");
        assert_eq!(
            sanitize("bell\x07 bs\x08 nul\0 del\x7f c1\u{9b}"),
            "bell bs nul del c1"
        );
        assert_eq!(sanitize("\x1b(Bascii \x1b7saved"), "ascii saved");
        assert_eq!(sanitize("evil\u{202e}txt.exe"), "eviltxt.exe");
        assert_eq!(sanitize("trailing escape \x1b"), "trailing escape ");
        assert_eq!(sanitize("unterminated \x1b[12"), "unterminated ");
        assert_eq!(sanitize(&"y".repeat(5_000_000)), "y".repeat(MAX_COLUMNS));
    }

    #[test]
    fn the_clock_moves_on_between_events() {
        let mut v = BuildView::default();
        let t0 = Instant::now();
        v.apply(&build(1), t0);
        v.apply(&started(40, 0, "[1/1] RUN x"), t0);
        assert_eq!(v.now_ms(t0), 40);
        assert_eq!(v.now_ms(t0 + Duration::from_millis(250)), 250);
    }

    /// A writer the test can read while the render thread owns a clone.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_render_thread_redraws_in_place_and_ends_with_the_final_view() {
        let out = Shared::default();
        let size = || TermSize {
            width: 40,
            height: 20,
        };
        let tty = Tty::new(Box::new(out.clone()), Box::new(size), false);
        tty.emit(build(1));
        tty.emit(started(0, 0, "[1/1] RUN build"));
        tty.emit(output(1, 0, "compiling"));
        // Let at least two live frames be drawn.
        std::thread::sleep(FRAME_INTERVAL * 3);
        tty.emit(finished(300, 0, 300));
        tty.finish();
        tty.finish();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(text.starts_with("\r[+] Building"), "{text:?}");
        assert!(text.contains(" => => # compiling\x1b[K\n"), "{text:?}");
        // Every frame after the first moves up over the 3 lines of the one before.
        assert!(text.contains("\x1b[3A"), "{text:?}");
        let last = text.rsplit("\x1b[3A").next().unwrap();
        assert!(
            last.starts_with("\r[+] Building 0.3s (1/1) FINISHED\x1b[K\n"),
            "{last:?}"
        );
        assert!(
            last.contains(" => [1/1] RUN build                0.3s\x1b[K\n"),
            "{last:?}"
        );
        assert!(!last.contains("compiling"), "{last:?}");
        assert!(last.ends_with("\r\x1b[J"), "{last:?}");
    }
}
