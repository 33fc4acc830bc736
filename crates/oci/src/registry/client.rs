//! The HTTP side of the distribution protocol for one repository: authentication
//! (anonymous, Basic, Bearer tokens per scope), bounded retries with backoff (and
//! `Retry-After` on 429/503), and mapping of registry error bodies to [`RegistryError`].
//!
//! Synchronous on purpose: kiln has no async runtime; parallel transfers use threads.

use super::auth::{parse_challenge, Challenge, Credentials};
use super::RegistryError;
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use ureq::http::{self, Response};

/// Attempts for one request on transient failures (connection errors, 429, 5xx).
const MAX_ATTEMPTS: u32 = 5;
/// The longest `Retry-After` kiln is willing to wait.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Where the system's trusted CA certificates are.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn system_roots() -> ureq::tls::RootCerts {
    let mut paths: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        paths.push(p.into());
    }
    paths.extend(SYSTEM_CA_BUNDLES.iter().map(PathBuf::from));
    for p in paths {
        if let Ok(pem) = std::fs::read(&p) {
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if !certs.is_empty() {
                return ureq::tls::RootCerts::new_with_certs(&certs);
            }
        }
    }
    // No bundle at all: trust nothing rather than something the system did not choose.
    ureq::tls::RootCerts::new_with_certs(&[])
}

/// One HTTP agent per process (connection pool shared by all transfers; also used
/// by ADD's URL downloads). HTTP error statuses are answers, not errors.
pub fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(system_roots())
            .build();
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .max_idle_connections_per_host(16)
            .accept_encoding("identity")
            .build()
            .new_agent()
    })
}

/// A request body that can be sent again on retry.
#[derive(Clone)]
pub(crate) enum Body {
    Empty,
    Bytes(Arc<Vec<u8>>),
    /// `len` bytes of a file from `offset`.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File { len, .. } => *len,
        }
    }
}

#[derive(Default)]
struct AuthState {
    /// The registry asked for Basic: send credentials on every request.
    basic: bool,
    /// Bearer tokens by scope string.
    tokens: HashMap<String, String>,
}

/// A client for one repository of one registry.
pub struct RepoClient {
    /// Registry name as the user wrote it (for messages and the auth file).
    pub registry: String,
    pub repository: String,
    /// `http://host:port` or `https://host`.
    base: String,
    creds: Option<Credentials>,
    auth: Mutex<AuthState>,
    /// The reference this client works for, named in every error.
    pub(crate) label: String,
}

impl std::fmt::Debug for RepoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoClient")
            .field("base", &self.base)
            .field("repository", &self.repository)
            .finish()
    }
}

/// What a request is allowed to do, as a token scope.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Pull,
    Push,
}

impl RepoClient {
    pub(crate) fn new(
        registry: &str,
        repository: &str,
        insecure: bool,
        creds: Option<Credentials>,
        label: String,
    ) -> RepoClient {
        let host = super::reference::api_host(registry);
        let scheme = if insecure { "http" } else { "https" };
        RepoClient {
            registry: registry.to_string(),
            repository: repository.to_string(),
            base: format!("{scheme}://{host}"),
            creds,
            auth: Mutex::new(AuthState::default()),
            label,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    /// Resolve a `Location` header against the registry's base URL.
    pub(crate) fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            format!("{}/{location}", self.base)
        }
    }

    fn scope(&self, access: Access, extra_pull: Option<&str>) -> String {
        let mut s = format!(
            "repository:{}:{}",
            self.repository,
            if access == Access::Push {
                "pull,push"
            } else {
                "pull"
            }
        );
        if let Some(from) = extra_pull {
            s.push_str(&format!(" repository:{from}:pull"));
        }
        s
    }

    fn auth_header(&self, scope: &str) -> Option<String> {
        let st = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = st.tokens.get(scope) {
            return Some(format!("Bearer {t}"));
        }
        if st.basic {
            return self.creds.as_ref().map(Credentials::basic_header);
        }
        None
    }

    /// React to a 401 to a request sent with `sent` as its Authorization: learn the
    /// scheme, fetch a token. Returns whether to try again.
    fn authenticate(
        &self,
        resp: &Response<ureq::Body>,
        scope: &str,
        sent: Option<&str>,
    ) -> Result<bool, RegistryError> {
        // Another thread authenticated since this request was sent: use that.
        let current = self.auth_header(scope);
        if current.is_some() && current.as_deref() != sent {
            return Ok(true);
        }
        let Some(challenge) = resp
            .headers()
            .get_all(http::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_challenge)
        else {
            return Ok(false);
        };
        match challenge {
            Challenge::Basic => Ok(self.accept_basic_challenge(sent)),
            Challenge::Bearer { realm, service, .. } => {
                // No token yet, or the one sent was refused (expired): get a new one.
                let token = self.fetch_token(&realm, service.as_deref(), scope)?;
                self.auth
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .tokens
                    .insert(scope.to_string(), token);
                Ok(true)
            }
        }
    }

    /// A 401 with a Basic challenge to a request sent with `sent` as its
    /// Authorization: from now on every request carries the credentials. Try again
    /// unless this request already carried them (then they are wrong). Decided from
    /// what the request carried, not from the shared state: parallel uploads all get
    /// their first 401 at once, and one of them may switch to Basic between another's
    /// look at the state and its own (that one then gave up with "unauthorized").
    fn accept_basic_challenge(&self, sent: Option<&str>) -> bool {
        let Some(creds) = &self.creds else {
            return false;
        };
        let header = creds.basic_header();
        self.auth.lock().unwrap_or_else(|e| e.into_inner()).basic = true;
        sent != Some(header.as_str())
    }

    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, RegistryError> {
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(s) = service {
            url.push_str(&format!("{sep}service={}", encode(s)));
            sep = '&';
        }
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            url.push_str(&format!("{sep}scope={}", encode(s)));
            sep = '&';
        }
        let mut req = http::Request::get(&url);
        if let Some(c) = &self.creds {
            req = req.header(http::header::AUTHORIZATION, c.basic_header());
        }
        let req = req
            .body(())
            .map_err(|e| self.protocol(format!("token request: {e}")))?;
        let mut resp = agent().run(req).map_err(|e| RegistryError::Unreachable {
            reference: self.label.clone(),
            message: format!("token service {realm}: {e}"),
        })?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(RegistryError::Unauthorized {
                reference: self.label.clone(),
            });
        }
        if status == 429 {
            return Err(RegistryError::RateLimited {
                reference: self.label.clone(),
            });
        }
        if status != 200 {
            return Err(self.protocol(format!("token service {realm} answered {status}")));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| self.protocol(format!("token service answer: {e}")))?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| self.protocol(format!("token service answer: {e}")))?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| self.protocol("the token service answered without a token".into()))
    }

    pub(crate) fn protocol(&self, message: String) -> RegistryError {
        RegistryError::Protocol {
            reference: self.label.clone(),
            message,
        }
    }

    /// Send a request, authenticating and retrying as needed. Statuses other than
    /// 401/429/5xx are returned to the caller to interpret.
    pub(crate) fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Body,
        access: Access,
        mount_from: Option<&str>,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let scope = self.scope(access, mount_from);
        let mut attempt = 0;
        let mut auth_rounds = 0;
        loop {
            attempt += 1;
            let mut req = http::Request::builder().method(method.clone()).uri(url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let sent_auth = self.auth_header(&scope);
            if let Some(a) = &sent_auth {
                req = req.header(http::header::AUTHORIZATION, a);
            }
            if !matches!(body, Body::Empty)
                || matches!(
                    method,
                    http::Method::PUT | http::Method::PATCH | http::Method::POST
                )
            {
                req = req.header(http::header::CONTENT_LENGTH, body.len().to_string());
            }
            let result = match &body {
                Body::Empty => req
                    .body(())
                    .map_err(|e| self.protocol(e.to_string()))
                    .map(|r| agent().run(r)),
                Body::Bytes(b) => req
                    .body(ureq::SendBody::from_owned_reader(std::io::Cursor::new(
                        Vec::clone(b),
                    )))
                    .map_err(|e| self.protocol(e.to_string()))
                    .map(|r| agent().run(r)),
                Body::File { path, offset, len } => {
                    let f = open_range(path, *offset, *len)
                        .map_err(|e| self.protocol(format!("reading {}: {e}", path.display())))?;
                    req.body(ureq::SendBody::from_owned_reader(f))
                        .map_err(|e| self.protocol(e.to_string()))
                        .map(|r| agent().run(r))
                }
            }?;
            let resp = match result {
                Ok(r) => r,
                Err(e) => {
                    if attempt < MAX_ATTEMPTS && transient(&e) {
                        tracing::debug!("{method} {url}: {e}; retrying");
                        std::thread::sleep(backoff(attempt));
                        continue;
                    }
                    return Err(RegistryError::Unreachable {
                        reference: self.label.clone(),
                        message: format!("{}: {e}", self.registry),
                    });
                }
            };
            let status = resp.status().as_u16();
            tracing::debug!("{method} {url} → {status}");
            if status == 401 && auth_rounds < 2 {
                auth_rounds += 1;
                if self.authenticate(&resp, &scope, sent_auth.as_deref())? {
                    attempt -= 1;
                    continue;
                }
            }
            if (status == 429 || status == 502 || status == 503 || status == 504)
                && attempt < MAX_ATTEMPTS
            {
                let wait = retry_after(&resp).unwrap_or_else(|| backoff(attempt));
                if wait <= MAX_RETRY_AFTER {
                    tracing::debug!("{method} {url}: {status}; retrying in {wait:?}");
                    std::thread::sleep(wait);
                    continue;
                }
            }
            return Ok(resp);
        }
    }

    /// Turn an unexpected response into the right error.
    pub(crate) fn error_from(&self, mut resp: Response<ureq::Body>, what: &str) -> RegistryError {
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .unwrap_or_default();
        let (code, message) = error_code(&body);
        let reference = self.label.clone();
        match (status, code.as_deref()) {
            (401, _) | (_, Some("UNAUTHORIZED")) => RegistryError::Unauthorized { reference },
            (403, _) | (_, Some("DENIED")) => RegistryError::Denied { reference },
            (429, _) | (_, Some("TOOMANYREQUESTS")) => RegistryError::RateLimited { reference },
            (404, _) | (_, Some("MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "BLOB_UNKNOWN")) => {
                RegistryError::NotFound {
                    reference,
                    what: what.to_string(),
                }
            }
            _ => RegistryError::Protocol {
                reference,
                message: format!(
                    "{what}: the registry answered {status}{}",
                    message.map(|m| format!(" ({m})")).unwrap_or_default()
                ),
            },
        }
    }
}

fn error_code(body: &str) -> (Option<String>, Option<String>) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let first = v.get("errors").and_then(|e| e.get(0));
    (
        first
            .and_then(|e| e.get("code"))
            .and_then(|c| c.as_str())
            .map(str::to_string),
        first
            .and_then(|e| e.get("message"))
            .and_then(|c| c.as_str())
            .map(str::to_string),
    )
}

fn open_range(path: &PathBuf, offset: u64, len: u64) -> std::io::Result<impl Read + 'static> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    Ok(std::io::BufReader::with_capacity(256 * 1024, f.take(len)))
}

fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
    )
}

pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(5))
}

fn retry_after(resp: &Response<ureq::Body>) -> Option<Duration> {
    let v = resp
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Percent-encode a query value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl RepoClient {
    /// `GET /v2/` with the credentials; a 401 after authenticating means they are wrong.
    pub(crate) fn check_login(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        let mut resp = self.send(
            http::Method::GET,
            &url,
            &[],
            Body::Empty,
            Access::Pull,
            None,
        )?;
        if resp.status() == http::StatusCode::UNAUTHORIZED {
            // Registries that challenge with Bearer accept a token for any scope at /v2/.
            if let Some(Challenge::Bearer { realm, service, .. }) = resp
                .headers()
                .get_all(http::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(parse_challenge)
            {
                let token = self.fetch_token(&realm, service.as_deref(), "")?;
                let req = http::Request::get(&url)
                    .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(())
                    .map_err(|e| self.protocol(e.to_string()))?;
                resp = agent().run(req).map_err(|e| RegistryError::Unreachable {
                    reference: self.label.clone(),
                    message: e.to_string(),
                })?;
            }
        }
        match resp.status().as_u16() {
            200 => Ok(()),
            _ => Err(self.error_from(resp, "login")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values_and_backs_off_boundedly() {
        assert_eq!(
            encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert!(backoff(1) < backoff(2));
        assert_eq!(backoff(30), Duration::from_secs(5));
        let (code, msg) =
            error_code(r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#);
        assert_eq!(code.as_deref(), Some("MANIFEST_UNKNOWN"));
        assert_eq!(msg.as_deref(), Some("manifest unknown"));
    }

    /// Two parallel requests both sent without credentials get a Basic challenge;
    /// the first to react switches the client to Basic. The second must still try
    /// again with the credentials, however late it looks at the shared state, and a
    /// request that carried the credentials must not be retried.
    #[test]
    fn a_basic_challenge_is_retried_once_with_credentials_by_every_thread() {
        let creds = Credentials {
            username: "kiln".into(),
            password: "kiln-secret".into(),
        };
        let c = RepoClient::new("127.0.0.1:5001", "a", true, Some(creds.clone()), "x".into());
        assert!(c.accept_basic_challenge(None), "first thread");
        // The second thread's request was sent before the switch, without credentials.
        assert!(c.accept_basic_challenge(None), "second thread");
        assert_eq!(
            c.auth_header("repository:a:pull").as_deref(),
            Some(creds.basic_header().as_str())
        );
        // Sent with the credentials and refused: wrong credentials, no retry.
        assert!(!c.accept_basic_challenge(Some(&creds.basic_header())));
        // Without credentials there is nothing to retry with.
        let anonymous = RepoClient::new("127.0.0.1:5001", "a", true, None, "x".into());
        assert!(!anonymous.accept_basic_challenge(None));
        assert_eq!(anonymous.auth_header("repository:a:pull"), None);
    }

    #[test]
    fn trusts_the_system_bundle_and_uses_https_except_for_loopback() {
        if std::path::Path::new(SYSTEM_CA_BUNDLES[0]).is_file() {
            match system_roots() {
                ureq::tls::RootCerts::Specific(certs) => {
                    assert!(certs.len() > 10, "{}", certs.len())
                }
                _ => panic!("the system bundle should be what is trusted"),
            }
        }
        let config = super::super::RegistryConfig::default();
        let c = RepoClient::new(
            "ghcr.io",
            "o/p",
            config.is_insecure("ghcr.io"),
            None,
            "x".into(),
        );
        assert_eq!(c.url("manifests/1"), "https://ghcr.io/v2/o/p/manifests/1");
        let c = RepoClient::new(
            "docker.io",
            "library/a",
            config.is_insecure("docker.io"),
            None,
            "x".into(),
        );
        assert_eq!(
            c.url("tags/list"),
            "https://registry-1.docker.io/v2/library/a/tags/list"
        );
        let c = RepoClient::new(
            "127.0.0.1:5000",
            "a",
            config.is_insecure("127.0.0.1:5000"),
            None,
            "x".into(),
        );
        assert_eq!(
            c.url("blobs/uploads/"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/"
        );
        assert_eq!(
            c.absolute("/v2/a/blobs/uploads/u?x=1"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?x=1"
        );
        assert_eq!(c.absolute("https://cdn.example/u"), "https://cdn.example/u");
    }
}
