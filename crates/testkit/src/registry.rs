//! The local test registries `scripts/setup-test-env` starts: one without auth and
//! one with htpasswd Basic auth, each logging its requests under [`dir`].
//!
//! Each setting is read from its environment variable, else from the file
//! [`ENV_FILE`] in [`dir`] (where `scripts/setup-test-env` writes the addresses it
//! chose: the default ports when they are free, other free ports when they are
//! taken), else the default. So `cargo test` by hand after the set-up finds them too.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file in [`dir`] with `NAME=VALUE` lines for the variables below.
pub const ENV_FILE: &str = "registries.env";

/// The registry directory: `$KILN_TEST_REGISTRY_DIR`, else `/tmp/kiln-test-registries`.
pub fn dir() -> PathBuf {
    std::env::var_os("KILN_TEST_REGISTRY_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/kiln-test-registries"))
}

/// `name` from the environment, else from [`ENV_FILE`], else `default`.
pub fn setting(name: &str, default: &str) -> String {
    if let Some(v) = std::env::var(name).ok().filter(|v| !v.is_empty()) {
        return v;
    }
    from_file(&dir().join(ENV_FILE), name).unwrap_or_else(|| default.to_string())
}

/// The value of `NAME=VALUE` for `name` in `file`, if it has one.
fn from_file(file: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().rev().find_map(|line| {
        let (k, v) = line.trim().split_once('=')?;
        (k.trim() == name && !v.trim().is_empty()).then(|| v.trim().to_string())
    })
}

/// The address of the registry without auth (`KILN_TEST_REGISTRY`, default
/// `127.0.0.1:5000`), after checking that something answers there.
pub fn plain() -> String {
    plain_or_why().unwrap_or_else(|why| panic!("{why}"))
}

/// [`plain`], or why it cannot be used.
pub fn plain_or_why() -> Result<String, String> {
    require(
        &setting("KILN_TEST_REGISTRY", "127.0.0.1:5000"),
        "unauthenticated",
    )
}

/// The address of the registry with Basic auth (`KILN_TEST_AUTH_REGISTRY`,
/// default `127.0.0.1:5001`), after checking that something answers there.
pub fn auth() -> String {
    require(
        &setting("KILN_TEST_AUTH_REGISTRY", "127.0.0.1:5001"),
        "authenticated",
    )
    .unwrap_or_else(|why| panic!("{why}"))
}

/// The user and password the auth registry accepts
/// (`KILN_TEST_AUTH_USER`/`KILN_TEST_AUTH_PASSWORD`, default `kiln`/`kiln-secret`).
pub fn auth_user() -> (String, String) {
    (
        setting("KILN_TEST_AUTH_USER", "kiln"),
        setting("KILN_TEST_AUTH_PASSWORD", "kiln-secret"),
    )
}

/// The access log of the registry without auth.
pub fn plain_log() -> PathBuf {
    dir().join("plain/registry.log")
}

fn require(addr: &str, what: &str) -> Result<String, String> {
    let answers = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|sock| TcpStream::connect_timeout(&sock, Duration::from_secs(2)).is_ok());
    if !answers {
        return Err(format!(
            "this test needs the {what} test registry on {addr}, and none answers: run \
             scripts/setup-test-env (as root) to start it, or point KILN_TEST_REGISTRY / \
             KILN_TEST_AUTH_REGISTRY at one"
        ));
    }
    Ok(addr.to_string())
}

/// Lines of the access log `log` that contain every one of `needles`; read it
/// again after a request to count what the request added.
pub fn count_log_lines(log: &Path, needles: &[&str]) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("cannot read the registry log {}: {e}", log.display()))
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

/// A repository name (`kiln-test/PREFIX-PID-NANOS`) no earlier run used.
pub fn unique_repo(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("kiln-test/{prefix}-{}-{nanos}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_the_file_when_the_environment_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(ENV_FILE);
        std::fs::write(
            &file,
            "KILN_TEST_REGISTRY=127.0.0.1:41000\nKILN_TEST_AUTH_REGISTRY=\n# comment\n",
        )
        .unwrap();
        assert_eq!(
            from_file(&file, "KILN_TEST_REGISTRY").as_deref(),
            Some("127.0.0.1:41000")
        );
        assert_eq!(from_file(&file, "KILN_TEST_AUTH_REGISTRY"), None);
        assert_eq!(from_file(&file, "KILN_TEST_AUTH_USER"), None);
        assert_eq!(
            from_file(&dir.path().join("missing"), "KILN_TEST_REGISTRY"),
            None
        );
    }
}
