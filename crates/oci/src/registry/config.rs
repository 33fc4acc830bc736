//! kiln's own registry settings: mirrors and insecure (plain HTTP) registries.
//!
//! Read from `$KILN_CONFIG`, else `$XDG_CONFIG_HOME/kiln/config.json`, else
//! `~/.config/kiln/config.json`; a missing file means no mirrors and no insecure
//! registries. Format:
//!
//! ```json
//! { "registry": { "docker.io": { "mirrors": ["127.0.0.1:5000"] },
//!                 "registry.lan:5000": { "insecure": true } } }
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RegistryConfig {
    #[serde(default)]
    pub registry: BTreeMap<String, RegistrySettings>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Registries (host[:port]) to try, in order, before this one when pulling.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Speak plain HTTP to this registry.
    #[serde(default)]
    pub insecure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read kiln config {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed kiln config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Where kiln's config file is looked for.
pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_CONFIG").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into())).join(".config")
        });
    base.join("kiln/config.json")
}

impl RegistryConfig {
    /// Load the config file; absent means defaults.
    pub fn load() -> Result<RegistryConfig, ConfigError> {
        let path = config_path();
        match std::fs::read(&path) {
            Ok(data) => {
                serde_json::from_slice(&data).map_err(|source| ConfigError::Parse { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RegistryConfig::default()),
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    pub fn mirrors(&self, registry: &str) -> &[String] {
        self.registry
            .get(registry)
            .map(|s| s.mirrors.as_slice())
            .unwrap_or(&[])
    }

    /// Whether `registry` is spoken to over plain HTTP: loopback hosts always, others
    /// only when configured insecure.
    pub fn is_insecure(&self, registry: &str) -> bool {
        is_loopback(registry) || self.registry.get(registry).is_some_and(|s| s.insecure)
    }
}

/// `localhost`, `127.0.0.1`, `[::1]` (with or without a port).
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(registry)
    };
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_insecure() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "127.0.0.1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.evil.com",
            "ghcr.io",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
        let c: RegistryConfig = serde_json::from_str(
            r#"{"registry":{"docker.io":{"mirrors":["127.0.0.1:5000"]},"lan:5000":{"insecure":true}}}"#,
        )
        .unwrap();
        assert_eq!(c.mirrors("docker.io"), ["127.0.0.1:5000"]);
        assert!(c.mirrors("ghcr.io").is_empty());
        assert!(c.is_insecure("lan:5000"));
        assert!(!c.is_insecure("docker.io"));
    }
}
