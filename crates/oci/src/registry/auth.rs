//! Registry credentials and authentication challenges.
//!
//! Credentials come from docker's config file (`auths` with base64 `auth`,
//! `credsStore`, `credHelpers`), at `--authfile`, else `$REGISTRY_AUTH_FILE`, else
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. `kiln login` and
//! `kiln logout` write the same file (mode 0600, in directories created 0700).
//! Secrets are never logged: the [`Credentials`] type's `Debug` hides them.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{Map, Value};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A user name and password (or identity token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: <hidden> }}",
            self.username
        )
    }
}

impl Credentials {
    /// The value of a Basic `Authorization` header.
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            B64.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed auth file {path}: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("credential helper docker-credential-{helper} failed: {message}")]
    Helper { helper: String, message: String },
    #[error("not logged in to {0}")]
    NotLoggedIn(String),
}

/// The docker-style auth file kiln reads and writes.
#[derive(Clone, Debug)]
pub struct AuthFile {
    pub path: PathBuf,
}

/// The key docker uses for Docker Hub in `auths`.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// The credential helper `doc` names for `registry`: its `credHelpers` entry,
/// else a non-empty `credsStore`.
fn configured_helper(doc: &Map<String, Value>, registry: &str) -> Option<String> {
    doc.get("credHelpers")
        .and_then(|h| h.get(registry))
        .and_then(Value::as_str)
        .or_else(|| {
            doc.get("credsStore")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .map(str::to_string)
}

fn auth_key(registry: &str) -> String {
    if registry == super::reference::DOCKER_HUB {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// Normalise an `auths` key (`https://host/v1/`, `host`) to a registry name.
fn registry_of_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => super::reference::DOCKER_HUB,
        other => other,
    }
}

impl AuthFile {
    /// `explicit` (from `--authfile`), else `$REGISTRY_AUTH_FILE`, else docker's config.
    pub fn locate(explicit: Option<&Path>) -> AuthFile {
        if let Some(p) = explicit {
            return AuthFile {
                path: p.to_path_buf(),
            };
        }
        if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
            return AuthFile {
                path: PathBuf::from(p),
            };
        }
        let dir = std::env::var_os("DOCKER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into()))
                    .join(".docker")
            });
        AuthFile {
            path: dir.join("config.json"),
        }
    }

    fn read(&self) -> Result<Map<String, Value>, AuthFileError> {
        let data = match std::fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(source) => {
                return Err(AuthFileError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        if data.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        match serde_json::from_slice(&data) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(self.malformed("not a JSON object".into())),
            Err(e) => Err(self.malformed(e.to_string())),
        }
    }

    fn malformed(&self, message: String) -> AuthFileError {
        AuthFileError::Malformed {
            path: self.path.clone(),
            message,
        }
    }

    fn write(&self, doc: &Map<String, Value>) -> Result<(), AuthFileError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let werr = |source| AuthFileError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // Missing directories are private, as docker makes `~/.docker` (0700).
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(werr)?;
        let tmp = dir.join(format!(
            ".{}.kiln-{}",
            file_name(&self.path),
            std::process::id()
        ));
        let mut bytes =
            serde_json::to_vec_pretty(doc).map_err(|e| werr(std::io::Error::other(e)))?;
        bytes.push(b'\n');
        let res = (|| {
            // Created anew (O_EXCL): a symlink left at the name is not followed.
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res.map_err(werr)
    }

    /// The credentials stored for `registry`, if any.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, AuthFileError> {
        let doc = self.read()?;
        if let Some(helper) = doc
            .get("credHelpers")
            .and_then(|h| h.get(registry))
            .and_then(Value::as_str)
        {
            return helper_get(helper, &auth_key(registry));
        }
        if let Some(auths) = doc.get("auths").and_then(Value::as_object) {
            for (key, entry) in auths {
                if registry_of_key(key) != registry {
                    continue;
                }
                if let Some(auth) = entry
                    .get("auth")
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                {
                    let decoded = B64
                        .decode(auth.trim())
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| {
                            self.malformed(format!(
                                "the auth entry for {key} is not base64 of user:password"
                            ))
                        })?;
                    let (u, p) = decoded.split_once(':').ok_or_else(|| {
                        self.malformed(format!(
                            "the auth entry for {key} is not base64 of user:password"
                        ))
                    })?;
                    return Ok(Some(Credentials {
                        username: u.to_string(),
                        password: p.to_string(),
                    }));
                }
                if let (Some(u), Some(p)) = (
                    entry.get("username").and_then(Value::as_str),
                    entry.get("password").and_then(Value::as_str),
                ) {
                    return Ok(Some(Credentials {
                        username: u.to_string(),
                        password: p.to_string(),
                    }));
                }
            }
        }
        if let Some(store) = doc
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return helper_get(store, &auth_key(registry));
        }
        Ok(None)
    }

    /// Record credentials for `registry` (in its helper if one is configured).
    pub fn store(&self, registry: &str, creds: &Credentials) -> Result<(), AuthFileError> {
        let mut doc = self.read()?;
        let key = auth_key(registry);
        let helper = configured_helper(&doc, registry);
        let auths = doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .ok_or_else(|| self.malformed("\"auths\" is not an object".into()))?;
        if let Some(helper) = helper {
            let input = serde_json::json!({"ServerURL": key, "Username": creds.username, "Secret": creds.password});
            run_helper(&helper, "store", input.to_string().as_bytes())?;
            auths.insert(key, Value::Object(Map::new()));
        } else {
            let auth = B64.encode(format!("{}:{}", creds.username, creds.password));
            auths.insert(key, serde_json::json!({ "auth": auth }));
        }
        self.write(&doc)
    }

    /// Forget the credentials for `registry`.
    pub fn remove(&self, registry: &str) -> Result<(), AuthFileError> {
        let mut doc = self.read()?;
        let key = auth_key(registry);
        let helper = configured_helper(&doc, registry);
        let mut removed = false;
        if let Some(auths) = doc.get_mut("auths").and_then(Value::as_object_mut) {
            let keys: Vec<String> = auths
                .keys()
                .filter(|k| registry_of_key(k) == registry)
                .cloned()
                .collect();
            for k in keys {
                auths.remove(&k);
                removed = true;
            }
        }
        if let Some(helper) = helper {
            if run_helper(&helper, "erase", key.as_bytes()).is_ok() {
                removed = true;
            }
        }
        if !removed {
            return Err(AuthFileError::NotLoggedIn(registry.to_string()));
        }
        self.write(&doc)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "auth".into())
}

fn run_helper(helper: &str, verb: &str, input: &[u8]) -> Result<Vec<u8>, AuthFileError> {
    let err = |message: String| AuthFileError::Helper {
        helper: helper.to_string(),
        message,
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        // Helpers print their error on stdout; it never contains the secret.
        let msg = String::from_utf8_lossy(if out.stdout.is_empty() {
            &out.stderr
        } else {
            &out.stdout
        });
        return Err(err(msg.trim().to_string()));
    }
    Ok(out.stdout)
}

fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>, AuthFileError> {
    match run_helper(helper, "get", server.as_bytes()) {
        Ok(out) => {
            let v: Value = serde_json::from_slice(&out).map_err(|e| AuthFileError::Helper {
                helper: helper.to_string(),
                message: format!("unreadable answer: {e}"),
            })?;
            let u = v
                .get("Username")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let p = v.get("Secret").and_then(Value::as_str).unwrap_or_default();
            if p.is_empty() {
                return Ok(None);
            }
            Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }))
        }
        Err(AuthFileError::Helper { message, .. }) if message.contains("credentials not found") => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// One `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parse a `WWW-Authenticate` header value (`Bearer realm="…",service="…"` or `Basic realm="…"`).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_auth_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `k="v", k2=v2` with quoted strings that may contain commas and `\"`.
fn parse_auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n)
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((name.trim().to_string(), value.trim().to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/a:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/a:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("bearer realm=http://127.0.0.1:1/t"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn auth_file_round_trip_and_docker_forms() {
        let dir = tempfile::tempdir().unwrap();
        let f = AuthFile::locate(Some(&dir.path().join("sub/auth.json")));
        assert_eq!(f.credentials("127.0.0.1:5001").unwrap(), None);
        let c = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        f.store("127.0.0.1:5001", &c).unwrap();
        f.store("docker.io", &c).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f.path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(f.credentials("127.0.0.1:5001").unwrap(), Some(c.clone()));
        assert_eq!(f.credentials("docker.io").unwrap(), Some(c.clone()));
        let text = std::fs::read_to_string(&f.path).unwrap();
        assert!(text.contains("https://index.docker.io/v1/"), "{text}");
        assert!(!text.contains("p:w"), "password stored in clear: {text}");
        f.remove("127.0.0.1:5001").unwrap();
        assert_eq!(f.credentials("127.0.0.1:5001").unwrap(), None);
        assert!(matches!(
            f.remove("127.0.0.1:5001"),
            Err(AuthFileError::NotLoggedIn(_))
        ));
        // docker's "https://host/v1/" keys and username/password entries.
        std::fs::write(
            &f.path,
            r#"{"auths":{"https://reg.example:444/v1/":{"username":"a","password":"b"}}}"#,
        )
        .unwrap();
        assert_eq!(
            f.credentials("reg.example:444").unwrap(),
            Some(Credentials {
                username: "a".into(),
                password: "b".into()
            })
        );
        assert!(!format!("{c:?}").contains("p:w"));
    }

    /// `kiln login` creating `~/.docker` makes it 0700, as docker does: the
    /// directory holds credentials.
    #[test]
    fn directories_made_for_the_auth_file_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = AuthFile::locate(Some(&dir.path().join("home/.docker/config.json")));
        let c = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        f.store("127.0.0.1:5001", &c).unwrap();
        for d in ["home", "home/.docker"] {
            let mode = std::fs::metadata(dir.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
        // An existing directory keeps its mode.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        AuthFile::locate(Some(&shared.join("auth.json")))
            .store("127.0.0.1:5001", &c)
            .unwrap();
        let mode = std::fs::metadata(&shared).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
}
