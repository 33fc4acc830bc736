//! SSH forwarding: `kiln build --ssh ID[=SOCKET|KEY[,KEY…]]` and `RUN
//! --mount=type=ssh`, as BuildKit does it.
//!
//! An [`SshAgent`] is where one `--ssh` id's signatures come from: the user's
//! agent socket (`default` alone: `$SSH_AUTH_SOCK`), or, for key files, an
//! OpenSSH `ssh-agent` kiln starts for the build (in a private 0700 directory,
//! killed when the build ends, and when kiln dies) and loads with `ssh-add`.
//! kiln does not parse or use the keys itself: OpenSSH reads every key type and
//! asks for a passphrase on the terminal, and kiln needs no cryptography.
//!
//! A step never sees that socket. Each `RUN --mount=type=ssh` gets a socket of
//! its own ([`StepSocket`], in a 0711 temporary directory, owned and moded as the
//! mount's `uid`/`gid`/`mode` say, BuildKit's `MountSSHSocket`), bind-mounted at
//! the target, and a thread proxies each connection to the agent, message by
//! message: only "list identities" and "sign" pass; adding, removing, locking
//! and extensions are refused (`SSH_AGENT_FAILURE`), like BuildKit's read-only
//! agent. The socket is removed when the step ends; nothing of it is in the
//! step's layer (the mount point is removed) or in its cache key (only the id,
//! target, owner and mode are).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// BuildKit's default ssh id.
pub const DEFAULT_ID: &str = "default";

/// Where one `--ssh` id's agent is.
#[derive(Debug)]
pub struct SshAgent {
    id: String,
    socket: PathBuf,
    _spawned: Option<SpawnedAgent>,
}

/// The `--ssh` ids of a build and their agents.
pub type SshAgents = BTreeMap<String, Arc<SshAgent>>;

impl SshAgent {
    /// The id `RUN --mount=type=ssh,id=…` names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The agent's socket (the user's, or the one kiln started).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One `--ssh` value, docker's syntax: `ID` (the agent of
    /// `$SSH_AUTH_SOCK`, given as `auth_sock`), `ID=SOCKET`, or
    /// `ID=KEY[,KEY…]` (private key files, loaded into an `ssh-agent` kiln
    /// starts). A leading `~/` in a path is the home directory.
    pub fn from_flag(value: &str, auth_sock: Option<&Path>) -> Result<SshAgent, String> {
        let (id, paths) = match value.split_once('=') {
            Some((id, paths)) => (id, paths.split(',').filter(|p| !p.is_empty()).collect()),
            None => (value, Vec::new()),
        };
        if id.is_empty() {
            return Err(format!(
                "invalid --ssh {value:?}: the id is empty (default, or ID[=SOCKET|KEY,…])"
            ));
        }
        let id = id.to_string();
        if paths.is_empty() {
            let socket = auth_sock.filter(|p| !p.as_os_str().is_empty()).ok_or_else(|| {
                format!(
                    "--ssh {id}: SSH_AUTH_SOCK is not set: start an agent (eval $(ssh-agent); ssh-add) or give key files (--ssh {id}=~/.ssh/id_ed25519)"
                )
            })?;
            check_socket(&id, socket)?;
            return Ok(SshAgent {
                id,
                socket: socket.to_path_buf(),
                _spawned: None,
            });
        }
        let paths: Vec<PathBuf> = paths.iter().map(|p| expand_home(p)).collect();
        let mut socket = None;
        let mut keys = Vec::new();
        for p in &paths {
            let meta =
                std::fs::metadata(p).map_err(|e| format!("--ssh {id}: {}: {e}", p.display()))?;
            if meta.file_type().is_socket() {
                if socket.is_some() {
                    return Err(format!("--ssh {id}: only one agent socket may be given"));
                }
                socket = Some(p.clone());
            } else if meta.is_file() {
                keys.push(p.clone());
            } else {
                return Err(format!(
                    "--ssh {id}: {} is neither an agent socket nor a key file",
                    p.display()
                ));
            }
        }
        match (socket, keys.is_empty()) {
            (Some(_), false) => Err(format!(
                "--ssh {id}: give either one agent socket or key files, not both"
            )),
            (Some(socket), true) => Ok(SshAgent {
                id,
                socket,
                _spawned: None,
            }),
            (None, _) => {
                let spawned = SpawnedAgent::start(&id, &keys)?;
                Ok(SshAgent {
                    id,
                    socket: spawned.socket.clone(),
                    _spawned: Some(spawned),
                })
            }
        }
    }
}

/// Every `--ssh` value of a build, by id (an id given twice is an error).
pub fn agents_from_flags(values: &[String], auth_sock: Option<&Path>) -> Result<SshAgents, String> {
    let mut out = SshAgents::new();
    for v in values {
        let agent = SshAgent::from_flag(v, auth_sock)?;
        if out.contains_key(agent.id()) {
            return Err(format!("--ssh {}: the id is given twice", agent.id()));
        }
        out.insert(agent.id().to_string(), Arc::new(agent));
    }
    Ok(out)
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}

fn check_socket(id: &str, socket: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(socket)
        .map_err(|e| format!("--ssh {id}: agent socket {}: {e}", socket.display()))?;
    if !meta.file_type().is_socket() {
        return Err(format!("--ssh {id}: {} is not a socket", socket.display()));
    }
    Ok(())
}

/// An OpenSSH `ssh-agent -D` holding the `--ssh` key files, for the build.
#[derive(Debug)]
struct SpawnedAgent {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl SpawnedAgent {
    fn start(id: &str, keys: &[PathBuf]) -> Result<SpawnedAgent, String> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-ssh-agent-")
            .tempdir()
            .map_err(|e| format!("--ssh {id}: creating a directory for ssh-agent: {e}"))?;
        let socket = dir.path().join("agent.sock");
        let mut cmd = Command::new("ssh-agent");
        cmd.arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // The agent holds keys: it goes when kiln goes, even killed.
        // SAFETY: only an async-signal-safe system call between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ))
                .map_err(io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(|e| {
            format!(
                "--ssh {id}: key files are served by OpenSSH's ssh-agent, which cannot be started ({e}); install openssh-client, or give an agent socket"
            )
        })?;
        let mut agent = SpawnedAgent {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::fs::metadata(&agent.socket).is_ok_and(|m| m.file_type().is_socket()) {
                break;
            }
            if let Ok(Some(status)) = agent.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = agent.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("--ssh {id}: ssh-agent {status}: {}", err.trim()));
            }
            if Instant::now() > deadline {
                return Err(format!("--ssh {id}: ssh-agent did not start within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = Command::new("ssh-add")
            .args(keys)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("--ssh {id}: running ssh-add: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "--ssh {id}: ssh-add could not load the key files: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(agent)
    }
}

impl Drop for SpawnedAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent protocol's messages (draft-miller-ssh-agent).
const SSH_AGENT_FAILURE: u8 = 5;
const SSH_AGENTC_REQUEST_IDENTITIES: u8 = 11;
const SSH_AGENTC_SIGN_REQUEST: u8 = 13;
/// OpenSSH's limit on one message.
const MAX_MESSAGE: usize = 256 * 1024;

/// One step's agent socket: a listening socket in a directory of its own,
/// proxying to an [`SshAgent`] (read-only operations) until dropped.
pub(crate) struct StepSocket {
    dir: tempfile::TempDir,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The socket's name in [`StepSocket::dir`].
pub(crate) const STEP_SOCKET_NAME: &str = "ssh_auth_sock";

impl StepSocket {
    pub fn start(agent: &Arc<SshAgent>, uid: u32, gid: u32, mode: u32) -> io::Result<StepSocket> {
        let dir = tempfile::Builder::new().prefix("kiln-ssh-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
        let path = dir.path().join(STEP_SOCKET_NAME);
        let listener = UnixListener::bind(&path)?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let upstream = agent.socket.clone();
            std::thread::Builder::new()
                .name("kiln-ssh-proxy".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(conn) = conn else { continue };
                        let upstream = upstream.clone();
                        let _ = std::thread::Builder::new()
                            .name("kiln-ssh-conn".into())
                            .spawn(move || {
                                // A broken connection ends only itself.
                                let _ = serve(conn, &upstream);
                            });
                    }
                })?
        };
        Ok(StepSocket {
            dir,
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// The directory holding the socket (named [`STEP_SOCKET_NAME`]).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for StepSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread, which then sees `stop`.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one agent message (its body, without the length); None at the end.
fn read_message(r: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("agent message of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

fn write_message(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf)
}

/// Whether a step may send this request to the agent: listing and signing only.
fn allowed(body: &[u8]) -> bool {
    matches!(
        body.first(),
        Some(&SSH_AGENTC_REQUEST_IDENTITIES) | Some(&SSH_AGENTC_SIGN_REQUEST)
    )
}

/// Serves one connection of a step: each allowed request goes to the agent
/// (one connection to it, made at the first), its answer back; others are
/// answered with a failure.
fn serve(mut client: UnixStream, upstream: &Path) -> io::Result<()> {
    let mut agent: Option<UnixStream> = None;
    while let Some(request) = read_message(&mut client)? {
        if !allowed(&request) {
            write_message(&mut client, &[SSH_AGENT_FAILURE])?;
            continue;
        }
        if agent.is_none() {
            match UnixStream::connect(upstream) {
                Ok(a) => agent = Some(a),
                // The step sees "agent refused operation".
                Err(_) => {
                    write_message(&mut client, &[SSH_AGENT_FAILURE])?;
                    continue;
                }
            }
        }
        let a = agent.as_mut().expect("connected above");
        write_message(a, &request)?;
        let answer = read_message(a)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the agent closed the connection",
            )
        })?;
        write_message(&mut client, &answer)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake agent: answers every message with `[6, <type>]`, counting them.
    fn fake_agent(dir: &Path) -> (PathBuf, Arc<std::sync::Mutex<Vec<u8>>>) {
        let path = dir.join("agent");
        let l = UnixListener::bind(&path).unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let mut c = c.unwrap();
                let s = s.clone();
                std::thread::spawn(move || {
                    while let Ok(Some(m)) = read_message(&mut c) {
                        s.lock().unwrap().push(m[0]);
                        write_message(&mut c, &[6, m[0]]).unwrap();
                    }
                });
            }
        });
        (path, seen)
    }

    #[test]
    fn only_list_and_sign_reach_the_agent() {
        let tmp = tempfile::tempdir().unwrap();
        let (sock, seen) = fake_agent(tmp.path());
        let agent = Arc::new(SshAgent::from_flag("default", Some(&sock)).unwrap());
        assert_eq!(agent.id(), "default");
        let step = StepSocket::start(&agent, 0, 0, 0o600).unwrap();
        let path = step.dir().join(STEP_SOCKET_NAME);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let mut c = UnixStream::connect(&path).unwrap();
        for (ty, expect) in [
            (11u8, vec![6, 11]),
            (17, vec![5]),
            (13, vec![6, 13]),
            (27, vec![5]),
        ] {
            write_message(&mut c, &[ty, 1, 2, 3]).unwrap();
            assert_eq!(read_message(&mut c).unwrap().unwrap(), expect, "type {ty}");
        }
        drop(c);
        assert_eq!(*seen.lock().unwrap(), vec![11, 13]);
        let dir = step.dir().to_path_buf();
        drop(step);
        assert!(!dir.exists(), "the step's socket directory is removed");
    }

    #[test]
    fn flag_values() {
        let tmp = tempfile::tempdir().unwrap();
        let (sock, _) = fake_agent(tmp.path());
        let a = SshAgent::from_flag(&format!("git={}", sock.display()), None).unwrap();
        assert_eq!((a.id(), a.socket()), ("git", sock.as_path()));
        let e = SshAgent::from_flag("default", None).unwrap_err();
        assert!(e.contains("SSH_AUTH_SOCK is not set"), "{e}");
        let e = SshAgent::from_flag("x=/nonexistent/key", None).unwrap_err();
        assert!(e.starts_with("--ssh x: /nonexistent/key:"), "{e}");
        let key = tmp.path().join("key");
        std::fs::write(&key, "not a key").unwrap();
        let e = SshAgent::from_flag(&format!("x={},{}", sock.display(), key.display()), None)
            .unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = agents_from_flags(
            &[
                format!("a={}", sock.display()),
                format!("a={}", sock.display()),
            ],
            None,
        )
        .unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        let e = SshAgent::from_flag("=x", None).unwrap_err();
        assert!(e.contains("the id is empty"), "{e}");
    }
}
