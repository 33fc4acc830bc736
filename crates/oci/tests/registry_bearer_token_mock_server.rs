//! The Bearer token flow, rate limiting and resumed downloads, against a small
//! registry and token service this test runs itself on 127.0.0.1.

use base64::Engine;
use kiln_oci::image::media_type;
use kiln_oci::registry::{
    pull, AuthFile, Credentials, Reference, RegistryConfig, RegistryContext, RegistryError,
};
use kiln_oci::{Digest, Store};
use kiln_testkit::http::{self, respond, Request};
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

const TOKEN: &str = "t0k3n-for-tests";

#[derive(Default)]
struct Seen {
    token_requests: Vec<(String, Option<String>)>,
    blob_requests: Vec<Option<String>>,
}

struct Mock {
    addr: String,
    blobs: HashMap<String, Vec<u8>>,
    manifest: Vec<u8>,
    /// A manifest whose blobs the server answers with the wrong content.
    bad_manifest: Vec<u8>,
    /// A manifest giving its (real) config a size of 2^62.
    sized_manifest: Vec<u8>,
    layer: String,
    seen: Mutex<Seen>,
}

fn handle(mock: &Mock, req: Request, s: &mut TcpStream) {
    let path = req.path.as_str();
    let headers = &req.headers;
    let auth = headers.get("authorization").cloned();
    if let Some(query) = path.strip_prefix("/token?") {
        mock.seen
            .lock()
            .unwrap()
            .token_requests
            .push((query.to_string(), auth.clone()));
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        );
        if auth.as_deref() == Some(good.as_str()) {
            respond(
                s,
                "200 OK",
                &[],
                format!(r#"{{"token":"{TOKEN}"}}"#).as_bytes(),
            );
        } else {
            respond(s, "401 Unauthorized", &[], b"{}");
        }
        return;
    }
    if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        let challenge = format!(
            r#"Bearer realm="http://{}/token",service="mock-registry",scope="repository:team/app:pull""#,
            mock.addr
        );
        respond(
            s,
            "401 Unauthorized",
            &[("WWW-Authenticate", challenge)],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
        return;
    }
    if path.starts_with("/v2/team/limited/") {
        respond(
            s,
            "429 Too Many Requests",
            &[("Retry-After", "3600".into())],
            br#"{"errors":[{"code":"TOOMANYREQUESTS","message":"pull rate limit"}]}"#,
        );
        return;
    }
    if path.starts_with("/v2/team/denied/") {
        respond(
            s,
            "403 Forbidden",
            &[],
            br#"{"errors":[{"code":"DENIED","message":"no"}]}"#,
        );
        return;
    }
    if path == "/v2/team/bad/manifests/1" {
        respond(
            s,
            "200 OK",
            &[("Content-Type", media_type::OCI_MANIFEST.into())],
            &mock.bad_manifest,
        );
        return;
    }
    if path == "/v2/team/sized/manifests/1" {
        respond(
            s,
            "200 OK",
            &[("Content-Type", media_type::OCI_MANIFEST.into())],
            &mock.sized_manifest,
        );
        return;
    }
    if path.starts_with("/v2/team/bad/blobs/") {
        // Whatever is asked for, the same wrong bytes of the right length.
        respond(s, "200 OK", &[], b"evil-data");
        return;
    }
    if path == "/v2/team/app/manifests/1" {
        respond(
            s,
            "200 OK",
            &[("Content-Type", media_type::OCI_MANIFEST.into())],
            &mock.manifest,
        );
        return;
    }
    if let Some(d) = path.strip_prefix("/v2/team/app/blobs/") {
        let Some(data) = mock.blobs.get(d) else {
            respond(
                s,
                "404 Not Found",
                &[],
                br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#,
            );
            return;
        };
        let range = headers.get("range").cloned();
        let n = {
            let mut seen = mock.seen.lock().unwrap();
            if d == mock.layer {
                seen.blob_requests.push(range.clone());
            }
            seen.blob_requests.len()
        };
        if d == mock.layer && n == 1 {
            respond(
                s,
                "429 Too Many Requests",
                &[("Retry-After", "1".into())],
                b"{}",
            );
            return;
        }
        if d == mock.layer && n == 2 {
            // Promise everything, send half, hang up.
            let head = format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                data.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&data[..data.len() / 2]);
            return;
        }
        match range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
        {
            Some(start) => {
                let start: usize = start.parse().unwrap();
                let cr = format!("bytes {start}-{}/{}", data.len() - 1, data.len());
                respond(
                    s,
                    "206 Partial Content",
                    &[("Content-Range", cr)],
                    &data[start..],
                );
            }
            None => respond(s, "200 OK", &[], data),
        }
        return;
    }
    respond(s, "404 Not Found", &[], b"{}");
}

fn start_mock() -> Arc<Mock> {
    let (listener, addr) = http::listen();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let mut layer = Vec::new();
    let mut x: u32 = 7;
    for _ in 0..300_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        layer.push((x >> 16) as u8);
    }
    let (cd, ld) = (Digest::of(&config), Digest::of(&layer));
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"{}","digest":"{ld}","size":{}}}]}}"#,
        media_type::OCI_MANIFEST,
        media_type::OCI_CONFIG,
        config.len(),
        media_type::OCI_LAYER,
        layer.len()
    );
    let promised = Digest::of(b"good-data");
    let bad_manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{promised}","size":9}},"layers":[]}}"#,
        media_type::OCI_MANIFEST,
        media_type::OCI_CONFIG,
    );
    let sized_manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{cd}","size":{}}},"layers":[]}}"#,
        media_type::OCI_MANIFEST,
        media_type::OCI_CONFIG,
        1u64 << 62
    );
    let mock = Arc::new(Mock {
        bad_manifest: bad_manifest.into_bytes(),
        sized_manifest: sized_manifest.into_bytes(),
        addr,
        blobs: HashMap::from([(cd.to_string(), config), (ld.to_string(), layer)]),
        manifest: manifest.into_bytes(),
        layer: ld.to_string(),
        seen: Mutex::new(Seen::default()),
    });
    http::serve(listener, mock.clone(), handle);
    mock
}

fn context(dir: &std::path::Path, registry: &str, password: &str) -> RegistryContext {
    let auth = AuthFile::locate(Some(&dir.join("auth.json")));
    auth.store(
        registry,
        &Credentials {
            username: "alice".into(),
            password: password.into(),
        },
    )
    .unwrap();
    RegistryContext {
        config: RegistryConfig::default(),
        auth,
    }
}

#[test]
fn bearer_token_flow_with_rate_limit_and_resumed_download() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let reference = Reference::parse(&format!("{}/team/app:1", mock.addr)).unwrap();

    // Wrong password: the token service refuses, a clear error, nothing stored.
    let store = Store::open(dir.path().join("s")).unwrap();
    let err = pull(
        &store,
        &reference,
        None,
        &context(&dir.path().join("bad"), &mock.addr, "nope"),
    )
    .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains(&reference.to_string()));
    assert!(store.images().unwrap().is_empty());

    let ctx = context(&dir.path().join("ok"), &mock.addr, "s3cret");
    let pulled = pull(&store, &reference, None, &ctx).unwrap();
    assert_eq!(pulled.manifest.digest, Digest::of(&mock.manifest));
    assert!(store.verify().unwrap().is_ok());
    let seen = mock.seen.lock().unwrap();
    // The token was asked for the pull scope, with the user's Basic credentials.
    let (query, _) = seen.token_requests.last().unwrap();
    assert!(query.contains("service=mock-registry"), "{query}");
    assert!(
        query.contains("scope=repository%3Ateam%2Fapp%3Apull"),
        "{query}"
    );
    // 429 → retried after Retry-After; cut-off transfer → resumed with Range.
    assert_eq!(seen.blob_requests.len(), 3, "{:?}", seen.blob_requests);
    assert_eq!(seen.blob_requests[2].as_deref(), Some("bytes=150000-"));
}

#[test]
fn content_not_matching_its_digest_is_refused_and_nothing_is_stored() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &mock.addr, "s3cret");
    let store = Store::open(dir.path().join("s")).unwrap();
    let reference = Reference::parse(&format!("{}/team/bad:1", mock.addr)).unwrap();
    let err = pull(&store, &reference, None, &ctx).unwrap_err();
    assert!(
        err.to_string().contains("does not match its digest"),
        "{err}"
    );
    assert!(err.to_string().starts_with(&reference.to_string()), "{err}");
    assert!(store.images().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn rate_limit_beyond_the_retry_budget_and_denied_are_clear_errors() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &mock.addr, "s3cret");
    let store = Store::open(dir.path().join("s")).unwrap();
    let limited = Reference::parse(&format!("{}/team/limited:1", mock.addr)).unwrap();
    let started = std::time::Instant::now();
    let err = pull(&store, &limited, None, &ctx).unwrap_err();
    assert!(matches!(err, RegistryError::RateLimited { .. }), "{err}");
    assert!(err.to_string().starts_with(&limited.to_string()), "{err}");
    // A Retry-After of an hour is not waited for.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let denied = Reference::parse(&format!("{}/team/denied:1", mock.addr)).unwrap();
    let err = pull(&store, &denied, None, &ctx).unwrap_err();
    assert!(matches!(err, RegistryError::Denied { .. }), "{err}");
    assert!(err.to_string().contains("denied"), "{err}");
    assert!(store.images().unwrap().is_empty());
}

/// A descriptor's size is checked against the blob also when the blob is
/// already stored (it is never downloaded then): `kiln images` adds sizes up.
#[test]
fn a_manifest_size_that_is_not_the_stored_blobs_is_refused() {
    let mock = start_mock();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), &mock.addr, "s3cret");
    let store = Store::open(dir.path().join("s")).unwrap();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    store.put_blob(config).unwrap();
    let reference = Reference::parse(&format!("{}/team/sized:1", mock.addr)).unwrap();
    let err = pull(&store, &reference, None, &ctx).unwrap_err();
    assert!(err.to_string().contains(&(1u64 << 62).to_string()), "{err}");
    assert!(store.images().unwrap().is_empty());
}
