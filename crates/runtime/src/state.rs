//! Containers on disk: `<store>/containers/<id>/` holds `config.json` (what
//! to run, written once), `state.json` (status, pids, exit code, health;
//! rewritten atomically by the supervisor), `log` (every output line as
//! `1 text` or `2 text` for stdout/stderr) and the overlay's `upper`/`work`.
//! Names are unique among the containers in the store (checked under a lock).

use crate::health::{Health, Healthcheck};
use crate::network::NetworkChoice;
use crate::ports::PortMapping;
use crate::{err, Result, RuntimeError};
use kiln_sandbox::RunSpec;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// What a container runs, fixed when it is created.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: String,
    pub name: String,
    /// The image as the user named it, and its id.
    pub image: String,
    pub image_id: String,
    /// Seconds since the epoch.
    pub created: u64,
    /// The Compose project and service it belongs to, if any.
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    /// The sandbox run; its rootfs upper/work dirs are in the container's directory.
    pub spec: RunSpec,
    pub network: NetworkChoice,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
    /// Remove the container when it ends (`--rm`).
    #[serde(default)]
    pub auto_remove: bool,
    /// The signal that asks it to stop (None: SIGTERM): `--stop-signal`,
    /// Compose's `stop_signal`, the image's `STOPSIGNAL`.
    #[serde(default)]
    pub stop_signal: Option<i32>,
    /// How long it gets to stop before it is killed (None: 10 s):
    /// `--stop-timeout`, Compose's `stop_grace_period`.
    #[serde(default)]
    pub stop_grace_ms: Option<u64>,
}

impl ContainerConfig {
    /// The signal that asks it to stop.
    pub fn stop_signal(&self) -> i32 {
        self.stop_signal.unwrap_or(libc::SIGTERM)
    }
    /// How long it gets to stop before it is killed.
    pub fn stop_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.stop_grace_ms.unwrap_or(10_000))
    }
}

/// A signal by name (`SIGTERM`, `TERM`, any case) or number, as docker's
/// `--stop-signal` and `STOPSIGNAL` take it.
pub fn parse_signal(s: &str) -> Option<i32> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            let rt = name.strip_prefix("RTMIN")?;
            let off = match rt {
                "" => 0,
                r => r.strip_prefix('+')?.parse::<i32>().ok()?,
            };
            let n = libc::SIGRTMIN() + off;
            return (n <= libc::SIGRTMAX()).then_some(n);
        }
    })
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum Status {
    #[default]
    Created,
    Running,
    Exited,
}

/// What happened to a container so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ContainerState {
    pub status: Status,
    /// The supervisor process running it.
    pub supervisor_pid: Option<u32>,
    /// The sandbox helper: SIGTERM stops the container.
    pub helper_pid: Option<u32>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// Exit code (128 + signal when killed).
    pub exit_code: Option<i32>,
    /// Why it could not start.
    pub error: Option<String>,
    pub health: Option<Health>,
    /// Its address on its network, if it has one of its own.
    pub ip: Option<String>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A new random id (64 hex digits, as docker's).
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    hex::encode(b)
}

/// Writes `data` to `path` through a temporary name in the same directory.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| RuntimeError(format!("writing {}: {e}", path.display())))
}

/// Whether a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    rustix::process::Pid::from_raw(pid as i32)
        .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

/// The containers of one store.
#[derive(Clone, Debug)]
pub struct Containers {
    dir: PathBuf,
}

/// A container as listed: its configuration and its state.
#[derive(Clone, Debug)]
pub struct Listed {
    pub config: ContainerConfig,
    pub state: ContainerState,
}

impl Containers {
    pub fn open(store_root: &Path) -> Result<Containers> {
        let dir = store_root.join("containers");
        std::fs::create_dir_all(&dir)
            .map_err(|e| RuntimeError(format!("creating {}: {e}", dir.display())))?;
        Ok(Containers { dir })
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("log")
    }
    pub fn pid_file(&self, id: &str) -> PathBuf {
        self.dir(id).join("pid")
    }

    /// Holds the store's container lock (names, creation, removal).
    pub fn lock(&self) -> Result<std::fs::File> {
        let path = self.dir.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| RuntimeError(format!("opening {}: {e}", path.display())))?;
        rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| RuntimeError(format!("locking {}: {e}", path.display())))?;
        Ok(f)
    }

    /// Makes the container's directory (with `upper`/`work` for its overlay)
    /// and records it. The name must not be taken.
    pub fn create(&self, config: &ContainerConfig) -> Result<()> {
        let _lock = self.lock()?;
        if self.list()?.iter().any(|c| c.config.name == config.name) {
            return err(format!(
                "the container name {:?} is already in use; remove that container (kiln rm) or choose another name",
                config.name
            ));
        }
        let dir = self.dir(&config.id);
        std::fs::create_dir(&dir)
            .map_err(|e| RuntimeError(format!("creating {}: {e}", dir.display())))?;
        for d in ["upper", "work"] {
            std::fs::create_dir(dir.join(d))
                .map_err(|e| RuntimeError(format!("creating {}: {e}", dir.display())))?;
        }
        let json = serde_json::to_vec_pretty(config)
            .map_err(|e| RuntimeError(format!("encoding the container: {e}")))?;
        write_atomic(&dir.join("config.json"), &json)?;
        self.set_state(&config.id, &ContainerState::default())
    }

    pub fn set_state(&self, id: &str, state: &ContainerState) -> Result<()> {
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| RuntimeError(format!("encoding the state: {e}")))?;
        write_atomic(&self.dir(id).join("state.json"), &json)
    }

    /// Reads, changes and writes a container's state (only its supervisor
    /// writes it while it runs).
    pub fn update(&self, id: &str, f: impl FnOnce(&mut ContainerState)) -> Result<ContainerState> {
        let mut s = self.state(id)?;
        f(&mut s);
        self.set_state(id, &s)?;
        Ok(s)
    }

    pub fn config(&self, id: &str) -> Result<ContainerConfig> {
        let p = self.dir(id).join("config.json");
        let data =
            std::fs::read(&p).map_err(|e| RuntimeError(format!("reading {}: {e}", p.display())))?;
        serde_json::from_slice(&data)
            .map_err(|e| RuntimeError(format!("reading {}: {e}", p.display())))
    }

    /// The recorded state, corrected when its supervisor is gone (killed):
    /// then the container is not running whatever the file says.
    pub fn state(&self, id: &str) -> Result<ContainerState> {
        let p = self.dir(id).join("state.json");
        let data =
            std::fs::read(&p).map_err(|e| RuntimeError(format!("reading {}: {e}", p.display())))?;
        let mut s: ContainerState = serde_json::from_slice(&data)
            .map_err(|e| RuntimeError(format!("reading {}: {e}", p.display())))?;
        if s.status == Status::Running && !s.supervisor_pid.is_some_and(alive) {
            s.status = Status::Exited;
            s.error
                .get_or_insert_with(|| "its supervisor was killed".into());
        }
        Ok(s)
    }

    /// Every container, oldest first.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| RuntimeError(format!("reading {}: {e}", self.dir.display())))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() != 64 {
                continue;
            }
            // A container being created or removed right now may lack its files.
            if let (Ok(config), Ok(state)) = (self.config(&name), self.state(&name)) {
                out.push(Listed { config, state });
            }
        }
        out.sort_by(|a, b| {
            (a.config.created, &a.config.name).cmp(&(b.config.created, &b.config.name))
        });
        Ok(out)
    }

    /// A container by name, full id or unique id prefix.
    pub fn find(&self, what: &str) -> Result<Listed> {
        let all = self.list()?;
        if let Some(c) = all
            .iter()
            .find(|c| c.config.name == what || c.config.id == what)
        {
            return Ok(c.clone());
        }
        let by_prefix: Vec<&Listed> = all
            .iter()
            .filter(|c| !what.is_empty() && c.config.id.starts_with(what))
            .collect();
        match by_prefix.len() {
            1 => Ok(by_prefix[0].clone()),
            0 => err(format!("no such container: {what}")),
            _ => err(format!(
                "container id prefix {what:?} matches more than one container; give more digits"
            )),
        }
    }

    /// The containers of a Compose project.
    pub fn of_project(&self, project: &str) -> Result<Vec<Listed>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|c| c.config.project.as_deref() == Some(project))
            .collect())
    }

    /// Removes a container that is not running (its directory, including
    /// what is left of its upper dir: files of a rootless container's ids
    /// need kiln's user namespace).
    pub fn remove(&self, id: &str) -> Result<()> {
        let _lock = self.lock()?;
        let s = self.state(id)?;
        if s.status == Status::Running {
            return err("the container is running; stop it first (kiln stop)");
        }
        let dir = self.dir(id);
        std::fs::remove_dir_all(&dir)
            .map_err(|e| RuntimeError(format!("removing {}: {e}", dir.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_signal;

    #[test]
    fn signals_by_name_in_any_case_with_or_without_sig_or_by_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("term"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("usr1"), Some(libc::SIGUSR1));
        assert_eq!(parse_signal("9"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("SIGRTMIN"), Some(libc::SIGRTMIN()));
        for bad in ["", "0", "65", "SIGNOPE", "RTMIN+99", "TERM9"] {
            assert_eq!(parse_signal(bad), None, "{bad:?}");
        }
    }
}
