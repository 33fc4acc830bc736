//! The registry client: pull and push images over the OCI distribution protocol,
//! with docker-style references, credentials, mirrors and platform selection.
//!
//! Synchronous: nothing here runs until a network operation is asked for, and
//! parallel transfers use a few threads (no async runtime at kiln start-up).

pub mod auth;
pub mod client;
pub mod config;
pub mod platform;
pub mod pull;
pub mod push;
pub mod reference;
pub mod repo;
pub mod sources;
pub mod unpack;

pub use auth::{AuthFile, Credentials};
pub use config::RegistryConfig;
pub use platform::Platform;
pub use pull::{
    pull, pull_if_missing, pull_if_missing_with, pull_metadata_if_missing, pull_with, PullPolicy,
    Pulled,
};
pub use push::{push, PushOptions, PushReport};
pub use reference::Reference;
pub use repo::Repo;
pub use unpack::{LayerUnpacker, UnpackTarget};

use crate::store::StoreError;

/// Everything a network operation needs besides the store.
#[derive(Clone, Debug)]
pub struct RegistryContext {
    pub config: RegistryConfig,
    pub auth: AuthFile,
}

impl RegistryContext {
    /// kiln's config file and the auth file (`authfile` overrides the default).
    pub fn load(authfile: Option<&std::path::Path>) -> Result<RegistryContext, RegistryError> {
        Ok(RegistryContext {
            config: RegistryConfig::load().map_err(|e| RegistryError::Config(e.to_string()))?,
            auth: AuthFile::locate(authfile),
        })
    }

    /// A client for `repository` on `registry`, with stored credentials if any.
    pub(crate) fn client(
        &self,
        registry: &str,
        repository: &str,
        label: String,
    ) -> Result<client::RepoClient, RegistryError> {
        let creds = self
            .auth
            .credentials(registry)
            .map_err(|e| RegistryError::Credentials {
                reference: label.clone(),
                message: e.to_string(),
            })?;
        Ok(client::RepoClient::new(
            registry,
            repository,
            self.config.is_insecure(registry),
            creds,
            label,
        ))
    }
}

/// A failed registry operation; every message names the image reference.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{reference}: not found: the registry has no {what}")]
    NotFound { reference: String, what: String },
    #[error("{reference}: not in the local store, and the pull policy is \"never\"")]
    NotInStore { reference: String },
    #[error("{reference}: unauthorized: authentication required or wrong user name/password (try `kiln login`)")]
    Unauthorized { reference: String },
    #[error("{reference}: access denied by the registry")]
    Denied { reference: String },
    #[error("{reference}: rate-limited by the registry (429 Too Many Requests); try again later")]
    RateLimited { reference: String },
    #[error("{reference}: cannot reach the registry: {message}")]
    Unreachable { reference: String, message: String },
    #[error("{reference}: {message}")]
    Protocol { reference: String, message: String },
    #[error("{reference}: no image for platform {platform} (available: {available})")]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("{reference}: reading credentials: {message}")]
    Credentials { reference: String, message: String },
    #[error("{reference}: {source}")]
    Store {
        reference: String,
        #[source]
        source: StoreError,
    },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
}

/// Check `creds` against `registry` (what `kiln login` does before storing them):
/// `GET /v2/` and, if challenged, Basic or a Bearer token for the registry.
pub fn verify_credentials(registry: &str, creds: &Credentials) -> Result<(), RegistryError> {
    let config = RegistryConfig::load().map_err(|e| RegistryError::Config(e.to_string()))?;
    let c = client::RepoClient::new(
        registry,
        "",
        config.is_insecure(registry),
        Some(creds.clone()),
        registry.to_string(),
    );
    c.check_login()
}
