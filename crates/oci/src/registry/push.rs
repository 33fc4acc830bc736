//! Pushing an image from the store: every blob is first checked with HEAD (present
//! → skipped), then mounted from another repository of the same registry where kiln
//! knows it to be, else uploaded — in one PUT, or in PATCH chunks for large blobs.
//! Manifests go last (an index's manifests before the index).

use super::client::{Access, Body, RepoClient};
use super::{Reference, RegistryContext, RegistryError};
use crate::digest::Digest;
use crate::image::media_type;
use crate::store::{BlobRef, Store, StoreError};
use std::sync::Arc;
use ureq::http::{self, StatusCode};

/// Concurrent blob uploads.
const PARALLEL_UPLOADS: usize = 4;
/// Attempts at one blob upload (each restarts the upload session).
const UPLOAD_ATTEMPTS: u32 = 3;

#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Blobs larger than this are sent in PATCH chunks of this size; smaller ones
    /// in a single PUT. `None`: always a single PUT.
    pub chunk_size: Option<u64>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            chunk_size: Some(64 << 20),
        }
    }
}

/// What a push did.
#[derive(Clone, Debug, Default)]
pub struct PushReport {
    /// Digest of the pushed manifest (or index): what `name@digest` names.
    pub digest: Option<Digest>,
    pub uploaded: Vec<Digest>,
    pub mounted: Vec<Digest>,
    /// Blobs the registry already had.
    pub skipped: Vec<Digest>,
}

pub(crate) enum BlobOutcome {
    Uploaded,
    Mounted,
    Skipped,
}

/// Push the stored image `target` (manifest or index) to `dest`.
pub fn push(
    store: &Store,
    target: &BlobRef,
    dest: &Reference,
    options: &PushOptions,
    ctx: &RegistryContext,
) -> Result<PushReport, RegistryError> {
    let client = ctx.client(&dest.registry, &dest.repository, dest.to_string())?;
    let mut report = PushReport::default();
    push_target(
        store,
        &client,
        target,
        &dest.manifest_reference(),
        options,
        &mut report,
    )?;
    report.digest = Some(target.digest);
    Ok(report)
}

fn store_err(client: &RepoClient) -> impl Fn(StoreError) -> RegistryError + '_ {
    move |source| RegistryError::Store {
        reference: client.label.clone(),
        source,
    }
}

fn push_target(
    store: &Store,
    client: &RepoClient,
    target: &BlobRef,
    reference: &str,
    options: &PushOptions,
    report: &mut PushReport,
) -> Result<(), RegistryError> {
    let bytes = store.read_blob(&target.digest).map_err(store_err(client))?;
    let children = crate::image::referenced_blobs(&bytes, &target.digest)
        .map_err(|e| store_err(client)(e.into()))?;
    if media_type::is_index(&target.media_type) {
        for child in &children {
            push_target(
                store,
                client,
                child,
                &child.digest.to_string(),
                options,
                report,
            )?;
        }
    } else {
        upload_blobs(store, client, &children, options, report)?;
    }
    put_manifest(client, &target.media_type, bytes, reference)
}

pub(crate) fn put_manifest(
    client: &RepoClient,
    media: &str,
    bytes: Vec<u8>,
    reference: &str,
) -> Result<(), RegistryError> {
    let expected = Digest::of(&bytes);
    let url = client.url(&format!("manifests/{reference}"));
    let resp = client.send(
        http::Method::PUT,
        &url,
        &[("Content-Type", media.to_string())],
        Body::Bytes(Arc::new(bytes)),
        Access::Push,
        None,
    )?;
    if resp.status() != StatusCode::CREATED && resp.status() != StatusCode::OK {
        return Err(client.error_from(resp, &format!("manifest {reference}")));
    }
    // The registry names what it stored; it must be exactly the bytes sent.
    if let Some(said) = resp
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("sha256:"))
    {
        if said != expected.to_string() {
            return Err(client.protocol(format!(
                "manifest {reference}: the registry stored {said}, not {expected}"
            )));
        }
    }
    Ok(())
}

fn upload_blobs(
    store: &Store,
    client: &RepoClient,
    blobs: &[BlobRef],
    options: &PushOptions,
    report: &mut PushReport,
) -> Result<(), RegistryError> {
    let done = std::sync::Mutex::new(Vec::new());
    crate::parallel::try_for_each(
        blobs,
        PARALLEL_UPLOADS,
        |blob| {
            let outcome = push_blob(store, client, blob, options)?;
            super::sources::record(store, &client.registry, &client.repository, &blob.digest);
            done.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((blob.digest, outcome));
            Ok(())
        },
        || client.protocol("an upload thread panicked".into()),
    )?;
    for (d, outcome) in done.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match outcome {
            BlobOutcome::Uploaded => report.uploaded.push(d),
            BlobOutcome::Mounted => report.mounted.push(d),
            BlobOutcome::Skipped => report.skipped.push(d),
        }
    }
    Ok(())
}

pub(crate) fn push_blob(
    store: &Store,
    client: &RepoClient,
    blob: &BlobRef,
    options: &PushOptions,
) -> Result<BlobOutcome, RegistryError> {
    let url = client.url(&format!("blobs/{}", blob.digest));
    let head = client.send(
        http::Method::HEAD,
        &url,
        &[],
        Body::Empty,
        Access::Push,
        None,
    )?;
    match head.status() {
        StatusCode::OK => return Ok(BlobOutcome::Skipped),
        StatusCode::NOT_FOUND => {}
        // Unauthorized, denied, …: no point uploading.
        _ => return Err(client.error_from(head, &format!("blob {}", blob.digest))),
    }
    // A blob the store never had (a layer only a registry build cache holds):
    // the registry must take it from a repository known to have it; nothing
    // is downloaded to be uploaded again.
    let absent = !store.has_blob(&blob.digest);
    if !absent {
        // The blob must be whole and right before it leaves the machine.
        store.verify_blob(&blob.digest).map_err(store_err(client))?;
    }
    let mut upload_url = None;
    for from in super::sources::known(store, &client.registry, &blob.digest) {
        if from == client.repository {
            continue;
        }
        let url = client.url(&format!(
            "blobs/uploads/?mount={}&from={}",
            blob.digest,
            super::client::encode(&from)
        ));
        let resp = client.send(
            http::Method::POST,
            &url,
            &[],
            Body::Empty,
            Access::Push,
            Some(&from),
        )?;
        match resp.status() {
            StatusCode::CREATED => return Ok(BlobOutcome::Mounted),
            // Mount refused: the registry opened an ordinary upload instead.
            StatusCode::ACCEPTED => {
                upload_url = location(client, &resp);
                break;
            }
            _ => continue,
        }
    }
    if absent {
        return Err(client.protocol(format!(
            "blob {} is not in the store, and the registry mounted it from none of the \
             repositories known to hold it",
            blob.digest
        )));
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match upload(store, client, blob, options, upload_url.take()) {
            Ok(()) => return Ok(BlobOutcome::Uploaded),
            Err(e @ RegistryError::Unreachable { .. })
            | Err(e @ RegistryError::Protocol { .. })
                if attempt < UPLOAD_ATTEMPTS =>
            {
                tracing::debug!("upload of {} failed ({e}); starting over", blob.digest);
                std::thread::sleep(super::client::backoff(attempt));
            }
            Err(e) => return Err(e),
        }
    }
}

fn location(client: &RepoClient, resp: &http::Response<ureq::Body>) -> Option<String> {
    resp.headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| client.absolute(l))
}

fn with_digest(url: &str, digest: &Digest) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}digest={digest}")
}

fn upload(
    store: &Store,
    client: &RepoClient,
    blob: &BlobRef,
    options: &PushOptions,
    session: Option<String>,
) -> Result<(), RegistryError> {
    let what = format!("upload of blob {}", blob.digest);
    let mut loc = match session {
        Some(l) => l,
        None => {
            let resp = client.send(
                http::Method::POST,
                &client.url("blobs/uploads/"),
                &[],
                Body::Empty,
                Access::Push,
                None,
            )?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(client.error_from(resp, &what));
            }
            location(client, &resp)
                .ok_or_else(|| client.protocol(format!("{what}: no upload location")))?
        }
    };
    let path = store.blob_path(&blob.digest);
    let size = store.blob_size(&blob.digest).map_err(store_err(client))?;
    let octet = ("Content-Type", "application/octet-stream".to_string());
    let chunked = options.chunk_size.filter(|c| *c > 0 && size > *c);
    let final_body = if let Some(chunk) = chunked {
        let mut offset = 0;
        while offset < size {
            let len = chunk.min(size - offset);
            let resp = client.send(
                http::Method::PATCH,
                &loc,
                &[
                    octet.clone(),
                    ("Content-Range", format!("{offset}-{}", offset + len - 1)),
                ],
                Body::File {
                    path: path.clone(),
                    offset,
                    len,
                },
                Access::Push,
                None,
            )?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(client.error_from(resp, &what));
            }
            loc = location(client, &resp).unwrap_or(loc);
            offset += len;
        }
        Body::Empty
    } else {
        Body::File {
            path,
            offset: 0,
            len: size,
        }
    };
    let resp = client.send(
        http::Method::PUT,
        &with_digest(&loc, &blob.digest),
        &[octet],
        final_body,
        Access::Push,
        None,
    )?;
    if resp.status() != StatusCode::CREATED {
        return Err(client.error_from(resp, &what));
    }
    Ok(())
}
