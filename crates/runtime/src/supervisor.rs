//! The supervisor: runs a group of containers to their end.
//!
//! One thread per container waits for its dependencies, attaches it to its
//! network, starts its sandbox (spawned and waited on that thread: the helper
//! dies with the thread that started it), runs its healthcheck on a second
//! thread, writes its output to its log (and to the terminal in the
//! foreground), and records its state. A stop request (a signal, or
//! [`StopFlag::stop`]) sends SIGTERM to every sandbox helper; `kiln stop`
//! does the same for one container from another process. When every
//! container has ended, the group's network goes and their upper dirs are
//! removed.

use crate::health::{Health, HealthStatus};
use crate::network::{Attached, NetavarkAttachment, NetworkChoice, SlirpNetwork};
use crate::state::{now, ContainerConfig, Containers, Status};
use crate::{err, Result, RuntimeError};
use kiln_sandbox::{ExecSpec, ExitStatus, OutputLine, OutputStream, SandboxError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// argv[1] of a detached supervisor.
const SUPERVISE_ARG: &str = "__kiln-supervise";

/// When a dependent container may start.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Condition {
    /// `service_started`: once it runs.
    Started,
    /// `service_healthy`: once its healthcheck passed.
    Healthy,
    /// `service_completed_successfully`: once it exited with 0.
    CompletedSuccessfully,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Dependency {
    /// The container's id, and the name to show (the service).
    pub id: String,
    pub name: String,
    pub condition: Condition,
    /// Not required: a dependency that fails does not stop the dependent.
    pub required: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub depends_on: Vec<Dependency>,
}

/// Containers run by one supervisor, in the order they were planned.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Group {
    pub members: Vec<Member>,
}

/// Where a supervisor in the foreground shows what happens.
pub trait Output: Sync {
    /// A line a container printed.
    fn line(&self, container: &ContainerConfig, line: &OutputLine);
    /// Something about a container ("exited with code 0").
    fn note(&self, container: &ContainerConfig, message: &str);
}

/// Output that goes only to the logs (a detached supervisor).
pub struct LogsOnly;

impl Output for LogsOnly {
    fn line(&self, _: &ContainerConfig, _: &OutputLine) {}
    fn note(&self, _: &ContainerConfig, _: &str) {}
}

/// Asks a supervisor to stop all its containers: at once ([`StopFlag::stop`])
/// or as `docker stop` does ([`StopFlag::stop_gracefully`]).
#[derive(Clone, Default)]
pub struct StopFlag(Arc<StopRequest>);

#[derive(Default)]
struct StopRequest {
    kill: AtomicBool,
    /// When a graceful stop was asked for.
    graceful: Mutex<Option<Instant>>,
}

impl StopFlag {
    /// Kill every container now.
    pub fn stop(&self) {
        self.0.kill.store(true, Ordering::SeqCst);
    }
    /// Each container's stop signal (SIGTERM) to its main process, killed
    /// if still running after its grace period (10 s). Asked again, it kills
    /// them now; returns whether this was the first request.
    pub fn stop_gracefully(&self) -> bool {
        let mut g = self
            .0
            .graceful
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if g.is_some() || self.0.kill.load(Ordering::SeqCst) {
            self.stop();
            return false;
        }
        *g = Some(Instant::now());
        true
    }
    /// A stop of either kind was asked for.
    pub fn is_set(&self) -> bool {
        self.0.kill.load(Ordering::SeqCst) || self.graceful().is_some()
    }
    fn graceful(&self) -> Option<Instant> {
        *self
            .0
            .graceful
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
    /// A container with this grace period is to be killed now.
    fn must_kill(&self, grace: Duration) -> bool {
        self.0.kill.load(Ordering::SeqCst)
            || self.graceful().is_some_and(|at| at.elapsed() >= grace)
    }
}

/// The pid (as this process sees it) of a running container's main process.
fn main_pid(pid_file: &Path) -> Option<i32> {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
}

/// The file that tells a supervisor its container was killed by `kiln stop`
/// after its grace period (exit code 137, as docker reports it).
fn killed_marker(containers: &Containers, id: &str) -> PathBuf {
    containers.dir(id).join("killed")
}

/// The file that asks a supervisor to send its container the stop signal.
/// Only the supervisor may: rootless, the container's processes run as
/// subordinate ids in a user namespace under the supervisor's, and another
/// kiln command (`compose down`, in a user namespace of its own) is not
/// allowed to signal them.
fn stop_request(containers: &Containers, id: &str) -> PathBuf {
    containers.dir(id).join("stop")
}

#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Waiting,
    Running {
        health: Option<HealthStatus>,
    },
    Ended {
        code: i32,
    },
    /// Never started (a dependency failed, setup failed).
    Failed(String),
}

#[derive(Default)]
struct Board {
    phases: Mutex<HashMap<String, Phase>>,
    changed: Condvar,
    helpers: Mutex<HashMap<String, u32>>,
}

impl Board {
    fn set(&self, id: &str, phase: Phase) {
        self.phases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string(), phase);
        self.changed.notify_all();
    }
    fn get(&self, id: &str) -> Phase {
        self.phases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .unwrap_or(Phase::Waiting)
    }
    /// Waits for a change (or a short while, to look at the stop flag).
    fn wait(&self) {
        let g = self.phases.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self
            .changed
            .wait_timeout(g, Duration::from_millis(200))
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// How one container ended.
#[derive(Clone, Debug)]
pub struct Ended {
    pub id: String,
    /// Exit code (128 + signal; 125–127 when it could not start).
    pub code: i32,
    pub error: Option<String>,
}

/// docker's exit code for a container that could not start: 126/127 when
/// the command itself could not be executed / found, else 125.
pub fn setup_failure_code(message: &str) -> i32 {
    if message.starts_with("exec") {
        if message.contains("not found") || message.contains("No such file") {
            127
        } else {
            126
        }
    } else {
        125
    }
}

/// Runs `group` until every container ended. `on_started` is called once,
/// when each container has started or failed to (with the first failure).
/// `stdin` is the first container's standard input or terminal (its spec
/// says `stdin`/`tty`: `kiln run -i/-t` in the foreground).
pub fn supervise(
    containers: &Containers,
    group: &Group,
    out: &dyn Output,
    stop: &StopFlag,
    on_started: &mut dyn FnMut(std::result::Result<(), String>),
    stdin: Option<std::os::fd::OwnedFd>,
) -> Result<Vec<Ended>> {
    let stdin = Mutex::new(stdin);
    let configs: Vec<ContainerConfig> = group
        .members
        .iter()
        .map(|m| containers.config(&m.id))
        .collect::<Result<_>>()?;
    let board = Board::default();
    let rootless = !kiln_sandbox::userns::is_host_root();
    // Rootless: one namespace for the group, its ports forwarded by slirp4netns.
    let bridged: Vec<&ContainerConfig> = configs
        .iter()
        .filter(|c| matches!(c.network, NetworkChoice::Bridge { .. }))
        .collect();
    let mut group_net = None;
    let mut group_hosts: Vec<(String, Vec<String>)> = Vec::new();
    if rootless && !bridged.is_empty() {
        let mut seen: HashMap<(u16, String), &str> = HashMap::new();
        for c in &bridged {
            for p in &c.ports {
                if let Some(other) = seen.insert((p.container_port, p.protocol.clone()), &c.name) {
                    let msg = format!(
                        "{} and {other} both publish container port {}/{}: rootless, the containers of a project share one network namespace",
                        c.name, p.container_port, p.protocol
                    );
                    on_started(Err(msg.clone()));
                    return err(msg);
                }
            }
        }
        // A unix socket path must be short (< 108 bytes): not under the store.
        let socket = std::env::temp_dir().join(format!("kiln-slirp-{}.sock", &configs[0].id[..16]));
        let net = match SlirpNetwork::setup(&socket) {
            Ok(n) => n,
            Err(e) => {
                on_started(Err(e.0.clone()));
                return Err(e);
            }
        };
        for c in &bridged {
            for p in &c.ports {
                if let Err(e) = net.publish(p) {
                    net.teardown();
                    on_started(Err(e.0.clone()));
                    return Err(e);
                }
            }
        }
        let mut names = Vec::new();
        for c in &bridged {
            names.push(c.name.clone());
            if let NetworkChoice::Bridge { aliases, .. } = &c.network {
                names.extend(aliases.iter().cloned());
            }
        }
        group_hosts.push(("127.0.0.1".into(), names));
        group_net = Some(net);
    }
    let group_netns = group_net.as_ref().map(SlirpNetwork::netns);

    let ended: Mutex<Vec<Ended>> = Mutex::new(Vec::new());
    let all_done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for (i, (member, config)) in group.members.iter().zip(&configs).enumerate() {
            let (board, ended) = (&board, &ended);
            let stdin = if i == 0 {
                stdin.lock().unwrap_or_else(PoisonError::into_inner).take()
            } else {
                None
            };
            let (group_netns, group_hosts) = (&group_netns, &group_hosts);
            scope.spawn(move || {
                let result = run_member(
                    containers,
                    member,
                    config,
                    board,
                    out,
                    stop,
                    group_netns.as_deref(),
                    group_hosts,
                    scope,
                    stdin,
                );
                ended
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(result);
            });
        }
        // Stop requests: a graceful one (of the group, or of one container
        // by `kiln stop`) sends the container's stop signal to its main
        // process once; killing is SIGTERM to its sandbox helper (which
        // kills its step and cleans up), now and later.
        let board = &board;
        let all_done = &all_done;
        let configs = &configs;
        scope.spawn(move || {
            let mut termed = std::collections::HashSet::new();
            while !all_done.load(Ordering::SeqCst) {
                let helpers = board
                    .helpers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                for (id, helper) in &helpers {
                    let Some(config) = configs.iter().find(|c| &c.id == id) else {
                        continue;
                    };
                    if stop.must_kill(config.stop_grace()) {
                        // SAFETY: kill(2) on a pid of ours.
                        unsafe { libc::kill(*helper as i32, libc::SIGTERM) };
                    } else if !termed.contains(id)
                        && (stop.is_set() || stop_request(containers, id).exists())
                    {
                        // Its pid file appears once its process has started.
                        if let Some(pid) = main_pid(&containers.pid_file(id)) {
                            // SAFETY: kill(2).
                            unsafe { libc::kill(pid, config.stop_signal()) };
                            termed.insert(id.clone());
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // Started: every container running or ended.
        let mut reported = false;
        loop {
            let phases: Vec<Phase> = group.members.iter().map(|m| board.get(&m.id)).collect();
            if !reported && phases.iter().all(|p| *p != Phase::Waiting) {
                let failure = group
                    .members
                    .iter()
                    .zip(&phases)
                    .find_map(|(m, p)| match p {
                        Phase::Failed(msg) => Some(format!(
                            "{}: {msg}",
                            configs
                                .iter()
                                .find(|c| c.id == m.id)
                                .map(|c| c.name.as_str())
                                .unwrap_or("?")
                        )),
                        _ => None,
                    });
                on_started(failure.map_or(Ok(()), Err));
                reported = true;
            }
            if phases
                .iter()
                .all(|p| matches!(p, Phase::Ended { .. } | Phase::Failed(_)))
            {
                all_done.store(true, Ordering::SeqCst);
                break;
            }
            board.wait();
        }
    });
    if let Some(net) = group_net {
        net.teardown();
    }
    for c in &configs {
        let dir = containers.dir(&c.id);
        for d in ["upper", "work"] {
            let _ = std::fs::remove_dir_all(dir.join(d));
        }
        if c.auto_remove {
            let _ = containers.remove(&c.id);
        }
    }
    Ok(ended.into_inner().unwrap_or_else(PoisonError::into_inner))
}

/// Waits until `member`'s dependencies allow it to start.
fn wait_for_dependencies(
    member: &Member,
    board: &Board,
    stop: &StopFlag,
) -> std::result::Result<(), String> {
    loop {
        if stop.is_set() {
            return Err("stopped before it started".into());
        }
        let mut ready = true;
        for d in &member.depends_on {
            let phase = board.get(&d.id);
            let failed = |why: String| -> std::result::Result<(), String> {
                Err(format!("dependency failed to start: {why}"))
            };
            let ok = match (d.condition, &phase) {
                (_, Phase::Waiting) => false,
                (_, Phase::Failed(m)) => {
                    if d.required {
                        return failed(format!("{} did not start: {m}", d.name));
                    }
                    true
                }
                (Condition::Started, _) => true,
                (Condition::Healthy, Phase::Running { health }) => match health {
                    Some(HealthStatus::Healthy) => true,
                    Some(HealthStatus::Unhealthy) if d.required => {
                        return failed(format!("container {} is unhealthy", d.name))
                    }
                    None if d.required => {
                        return failed(format!("container {} has no healthcheck", d.name))
                    }
                    Some(HealthStatus::Unhealthy) | None => true,
                    Some(HealthStatus::Starting) => false,
                },
                (Condition::Healthy, Phase::Ended { code }) => {
                    if d.required {
                        return failed(format!(
                            "container {} exited ({code}) before it was healthy",
                            d.name
                        ));
                    }
                    true
                }
                (Condition::CompletedSuccessfully, Phase::Running { .. }) => false,
                (Condition::CompletedSuccessfully, Phase::Ended { code }) => {
                    if *code != 0 && d.required {
                        return failed(format!(
                            "container {} didn't complete successfully: exit {code}",
                            d.name
                        ));
                    }
                    true
                }
            };
            ready &= ok;
        }
        if ready {
            return Ok(());
        }
        board.wait();
    }
}

fn hosts_file(hostname: &str, entries: &[(String, Vec<String>)]) -> Vec<u8> {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (ip, names) in entries {
        text.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    if !entries.iter().any(|(_, n)| n.iter().any(|n| n == hostname)) {
        text.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    text.into_bytes()
}

#[allow(clippy::too_many_arguments)]
fn run_member<'scope, 'env>(
    containers: &'env Containers,
    member: &'env Member,
    config: &'env ContainerConfig,
    board: &'env Board,
    out: &'env dyn Output,
    stop: &'env StopFlag,
    group_netns: Option<&'env Path>,
    group_hosts: &'env [(String, Vec<String>)],
    scope: &'scope std::thread::Scope<'scope, 'env>,
    stdin: Option<std::os::fd::OwnedFd>,
) -> Ended {
    let id = &config.id;
    let fail = |msg: String, code: i32| -> Ended {
        let _ = containers.update(id, |s| {
            s.status = Status::Exited;
            s.finished_at = Some(now());
            s.exit_code = Some(code);
            s.error = Some(msg.clone());
        });
        out.note(config, &msg);
        board.set(id, Phase::Failed(msg.clone()));
        Ended {
            id: id.clone(),
            code,
            error: Some(msg),
        }
    };
    if let Err(msg) = wait_for_dependencies(member, board, stop) {
        return fail(msg, 1);
    }
    // The network.
    let mut attachment = None;
    let mut attached = Attached::default();
    if let NetworkChoice::Bridge { .. } = &config.network {
        match group_netns {
            Some(ns) => {
                attached.netns = Some(ns.to_path_buf());
                attached.resolv_conf = Some(SlirpNetwork::resolv_conf());
                attached.hosts = group_hosts.to_vec();
            }
            None => {
                match NetavarkAttachment::setup(id, &config.name, &config.network, &config.ports) {
                    Ok((a, info)) => {
                        attachment = Some(a);
                        attached = info;
                    }
                    Err(e) => return fail(format!("network: {e}"), 125),
                }
            }
        }
    }
    let mut spec = config.spec.clone();
    // Out of the terminal's foreground process group (its Ctrl-C is the
    // supervisor's to handle), unless the container reads kiln's stdin.
    spec.own_process_group = !(spec.stdin || spec.tty);
    let pid_file = containers.pid_file(id);
    spec.pid_file = Some(pid_file.clone());
    spec.tail_lines = 0;
    if attached.netns.is_some() {
        spec.join_netns = attached.netns.clone();
        spec.hosts = Some(hosts_file(&spec.hostname, &attached.hosts));
        if let Some(r) = &attached.resolv_conf {
            spec.resolv_conf = Some(r.clone());
        }
    }
    let teardown = |a: Option<NetavarkAttachment>| {
        if let Some(a) = a {
            if let Err(e) = a.teardown() {
                out.note(config, &format!("network teardown: {e}"));
            }
        }
    };
    if stop.is_set() {
        teardown(attachment);
        return fail("stopped before it started".into(), 1);
    }
    let stdin = stdin.filter(|_| spec.stdin || spec.tty);
    if (spec.stdin || spec.tty) && stdin.is_none() {
        teardown(attachment);
        return fail(
            "no standard input to attach (-i/-t need the foreground)".into(),
            125,
        );
    }
    let step = match kiln_sandbox::spawn_with_stdin(&spec, stdin) {
        Ok(s) => s,
        Err(e) => {
            teardown(attachment);
            return fail(format!("cannot start: {e}"), 125);
        }
    };
    let helper = step.helper_pid();
    if let Some(pid) = helper {
        board
            .helpers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), pid);
    }
    let _ = containers.update(id, |s| {
        s.status = Status::Running;
        s.supervisor_pid = Some(std::process::id());
        s.helper_pid = helper;
        s.started_at = Some(now());
        s.ip = attached.ip.clone();
        s.health = config.healthcheck.as_ref().map(|_| Health::default());
    });
    board.set(
        id,
        Phase::Running {
            health: config.healthcheck.as_ref().map(|_| HealthStatus::Starting),
        },
    );
    let finished = Arc::new(AtomicBool::new(false));
    if let Some(hc) = config.healthcheck.clone() {
        let finished = finished.clone();
        let exec = ExecSpec {
            args: hc.test.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            user: spec.user.clone(),
        };
        scope.spawn(move || {
            let started = Instant::now();
            let mut health = Health::default();
            let sleep_until = |d: Duration| {
                let end = Instant::now() + d;
                while Instant::now() < end {
                    if finished.load(Ordering::SeqCst) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                !finished.load(Ordering::SeqCst)
            };
            loop {
                let in_start = started.elapsed() < Duration::from_millis(hc.start_period_ms);
                let wait = if in_start && hc.start_interval_ms > 0 {
                    Duration::from_millis(hc.start_interval_ms)
                } else {
                    hc.interval()
                };
                if !sleep_until(wait) {
                    return;
                }
                let pid = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse::<u32>().ok());
                let Some(pid) = pid else { continue };
                let (ok, output) = match kiln_sandbox::exec_in(pid, &exec, hc.timeout()) {
                    Ok(o) => (o.status == ExitStatus::Code(0), o.output),
                    Err(e) => (false, e.to_string()),
                };
                if finished.load(Ordering::SeqCst) {
                    return;
                }
                let before = health.status;
                health.record(ok, output, in_start, hc.retries);
                let snapshot = health.clone();
                let _ = containers.update(id, |s| s.health = Some(snapshot));
                if health.status != before {
                    board.set(
                        id,
                        Phase::Running {
                            health: Some(health.status),
                        },
                    );
                }
            }
        });
    }
    // Output: the log, and the terminal in the foreground.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(containers.log_path(id));
    let log = Mutex::new(log.ok().map(std::io::BufWriter::new));
    let result = step.wait(&mut |line| {
        if let Some(w) = log.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            let n = if line.stream == OutputStream::Stdout {
                1
            } else {
                2
            };
            let _ = writeln!(w, "{n} {}", line.line);
            let _ = w.flush();
        }
        out.line(config, line);
    });
    finished.store(true, Ordering::SeqCst);
    board
        .helpers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(id);
    let (code, error) = match result {
        Ok(_) => (0, None),
        Err(SandboxError::StepFailed(f)) => match f.status {
            ExitStatus::Code(c) => (c & 0xff, None),
            ExitStatus::Signal(s) => (128 + s, None),
        },
        // Killed: after a graceful stop's grace period (here or by `kiln
        // stop`) with SIGKILL, else by the signal the foreground command got.
        Err(SandboxError::Cancelled)
            if stop.graceful().is_some() || killed_marker(containers, id).exists() =>
        {
            (128 + libc::SIGKILL, None)
        }
        Err(SandboxError::Cancelled) => (128 + STOP_SIGNAL.load(Ordering::SeqCst), None),
        Err(SandboxError::Setup(m)) => (setup_failure_code(&m), Some(m)),
        Err(e) => (125, Some(e.to_string())),
    };
    teardown(attachment);
    let _ = containers.update(id, |s| {
        s.status = Status::Exited;
        s.finished_at = Some(now());
        s.exit_code = Some(code);
        s.error = error.clone();
        s.helper_pid = None;
    });
    match &error {
        Some(m) => out.note(config, &format!("could not start: {m}")),
        None => out.note(config, &format!("exited with code {code}")),
    }
    board.set(id, Phase::Ended { code });
    Ended {
        id: id.clone(),
        code,
        error,
    }
}

/// The signal a stopped container is reported killed by (128 + it): the
/// signal the foreground command received, SIGTERM otherwise (`kiln stop`).
pub static STOP_SIGNAL: AtomicI32 = AtomicI32::new(libc::SIGTERM);

/// Starts `group` under a supervisor of its own that outlives this process
/// (`-d`), and returns once every container has started (or an error saying
/// which could not). The supervisor's own messages go to
/// `supervisor.log` in the first container's directory.
pub fn start_detached(store_root: &Path, group: &Group) -> Result<()> {
    let containers = Containers::open(store_root)?;
    let first = group
        .members
        .first()
        .ok_or_else(|| RuntimeError("nothing to start".into()))?;
    let log_path = containers.dir(&first.id).join("supervisor.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| RuntimeError(format!("creating {}: {e}", log_path.display())))?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(SUPERVISE_ARG)
        .arg(store_root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    // SAFETY: setsid(2) only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| RuntimeError(format!("starting the supervisor: {e}")))?;
    let json =
        serde_json::to_vec(group).map_err(|e| RuntimeError(format!("encoding the group: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&json)
            .map_err(|e| RuntimeError(format!("starting the supervisor: {e}")))?;
    }
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    // Reaped by init once it ends; it is not ours to wait for.
    std::mem::forget(child);
    match line.trim_end().strip_prefix("error: ") {
        _ if line.trim_end() == "ok" => Ok(()),
        Some(msg) => err(msg.to_string()),
        None => {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            err(format!(
                "the supervisor ended before the containers started: {}",
                log.trim()
            ))
        }
    }
}

/// Call first in `main()` (after the sandbox's): when this process is a
/// detached supervisor, it supervises and exits.
pub fn supervisor_main_if_requested() {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_none_or(|a| a != SUPERVISE_ARG) {
        return;
    }
    let root = PathBuf::from(args.next().unwrap_or_default());
    let code = match supervisor_main(&root) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kiln supervisor: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn supervisor_main(root: &Path) -> Result<()> {
    let mut input = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut input)
        .map_err(|e| RuntimeError(format!("reading the group: {e}")))?;
    let group: Group = serde_json::from_slice(&input)
        .map_err(|e| RuntimeError(format!("reading the group: {e}")))?;
    let containers = Containers::open(root)?;
    let stop = StopFlag::default();
    let s = stop.clone();
    crate::signals::on_stop(move |_| s.stop())
        .map_err(|e| RuntimeError(format!("installing signal handlers: {e}")))?;
    let mut ready = Some(std::io::stdout());
    let mut on_started = |r: std::result::Result<(), String>| {
        if let Some(mut out) = ready.take() {
            let _ = match r {
                Ok(()) => writeln!(out, "ok"),
                Err(m) => writeln!(out, "error: {}", m.replace('\n', " ")),
            };
            let _ = out.flush();
            // Let the starting command's pipe close.
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                // SAFETY: dup2 onto fd 1.
                unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1) };
            }
        }
    };
    supervise(&containers, &group, &LogsOnly, &stop, &mut on_started, None)?;
    Ok(())
}

/// Stops a running container from any process, as `docker stop` does: its
/// stop signal (SIGTERM) to its main process (sent by its supervisor, asked
/// through a file in the container's directory), and if it still runs after
/// `grace` (None: its own grace period, 10 s), SIGTERM to its sandbox
/// helper, which kills it (SIGKILL) and cleans up. Returns once it is
/// recorded as ended (an error if that takes 20 s more).
pub fn stop_container(containers: &Containers, id: &str, grace: Option<Duration>) -> Result<()> {
    let running = |containers: &Containers| -> Result<bool> {
        Ok(containers.state(id)?.status == Status::Running)
    };
    if !running(containers)? {
        return Ok(());
    }
    let config = containers.config(id)?;
    let grace = grace.unwrap_or_else(|| config.stop_grace());
    if !grace.is_zero() {
        // Its supervisor sends the signal (within 100 ms).
        let _ = std::fs::write(stop_request(containers, id), b"");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !running(containers)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = std::fs::write(killed_marker(containers, id), b"");
    if let Some(pid) = containers.state(id)?.helper_pid {
        // SAFETY: kill(2).
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if !running(containers)? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    err(format!(
        "the container {id} did not stop within 20 s of being killed"
    ))
}

/// Waits until a supervisor process has ended (it tears the network down last).
pub fn wait_supervisor(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while crate::state::alive(pid) {
        // A zombie of ours counts as ended.
        if std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        }) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
