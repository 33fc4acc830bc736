//! Pulling an image into the store: resolve the manifest (choosing a platform from
//! an index), download the missing blobs in parallel straight into the store's
//! [`crate::store::BlobWriter`] (digest and size checked; an interrupted download
//! resumes with a `Range` request), then store the manifest and name it. Nothing is
//! named until every blob is present, and a blob is only ever visible complete.

use super::client::{backoff, Access, Body, RepoClient};
use super::unpack::{self, LayerUnpacker, Tee};
use super::{Platform, Reference, RegistryContext, RegistryError};
use crate::digest::Digest;
use crate::image::media_type;
use crate::store::{BlobRef, Store, StoreError};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use ureq::http::{self, StatusCode};

/// Concurrent blob downloads.
const PARALLEL_DOWNLOADS: usize = 6;
/// Attempts to finish one blob download (each resumes where the last stopped).
const BLOB_ATTEMPTS: u32 = 5;
/// The largest manifest or index kiln accepts.
const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// When `FROM`/`pull_if_missing` goes to the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only when the image is not in the store.
    Missing,
    /// Always ask the registry (blobs already stored are still not fetched again).
    Always,
    /// Never: an image not in the store is an error.
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "missing" => Ok(PullPolicy::Missing),
            "always" | "true" => Ok(PullPolicy::Always),
            "never" | "false" => Ok(PullPolicy::Never),
            _ => Err(format!(
                "invalid pull policy {s:?}: use missing, always or never"
            )),
        }
    }
}

/// What a pull produced.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The platform-specific manifest that was stored (and named).
    pub manifest: BlobRef,
    /// The digest the registry resolved the reference to (the index's, for a
    /// multi-platform image).
    pub resolved_digest: Digest,
    /// Blobs downloaded by this pull (others were already stored).
    pub downloaded: Vec<Digest>,
    /// The registry the content came from (a mirror, or the reference's own).
    pub source_registry: String,
    /// diff_ids of the layers this pull unpacked while downloading them.
    pub unpacked: Vec<Digest>,
}

/// The stored image for `reference` if any (by name, or by manifest digest).
fn stored(store: &Store, reference: &Reference) -> Option<BlobRef> {
    if let Some(name) = reference.store_name() {
        if let Ok(r) = store.resolve(&name) {
            if reference.digest.is_none_or(|d| d == r.digest) {
                return Some(r);
            }
        }
    }
    let d = reference.digest?;
    store
        .images()
        .ok()?
        .into_iter()
        .map(|i| i.target)
        .find(|t| t.digest == d)
}

/// Whether the stored image `target` has an image for `platform`: `Err` with
/// the platforms it has when not (an index without an entry for it, or a
/// manifest whose config names another platform).
fn stored_platforms(store: &Store, target: &BlobRef, platform: &Platform) -> Result<(), String> {
    if media_type::is_index(&target.media_type) {
        let entries = crate::index::read_index(store, target).map_err(|e| e.to_string())?;
        if crate::index::choose(&entries, platform).is_some() {
            return Ok(());
        }
        return Err(crate::index::platforms(&entries).join(", "));
    }
    let Ok(image) = crate::image::load_image(store, target) else {
        // Unreadable: the build says why when it reads it.
        return Ok(());
    };
    let c = &image.config;
    if c.os.is_empty() || c.architecture.is_empty() {
        return Ok(());
    }
    if platform.matches(&c.os, &c.architecture, c.variant.as_deref()) {
        Ok(())
    } else {
        Err(crate::image::config_platform(c).to_string())
    }
}

/// What the build engine calls for `FROM ref`: the stored image, pulling it
/// according to `policy`.
pub fn pull_if_missing(
    store: &Store,
    reference: &Reference,
    platform: Option<&Platform>,
    policy: PullPolicy,
    ctx: &RegistryContext,
) -> Result<BlobRef, RegistryError> {
    pull_if_missing_with(store, reference, platform, policy, ctx, None)
}

/// [`pull_if_missing`], unpacking the layers it downloads through `unpacker`.
pub fn pull_if_missing_with(
    store: &Store,
    reference: &Reference,
    platform: Option<&Platform>,
    policy: PullPolicy,
    ctx: &RegistryContext,
    unpacker: Option<&dyn LayerUnpacker>,
) -> Result<BlobRef, RegistryError> {
    if let Some(r) = stored_per_policy(store, reference, platform, policy)? {
        return Ok(r);
    }
    Ok(pull_with(store, reference, platform, ctx, unpacker)?.manifest)
}

/// The stored image a pull with `policy` uses instead of pulling (`None`: pull),
/// or the error `PullPolicy::Never` gives when the store lacks it.
fn stored_per_policy(
    store: &Store,
    reference: &Reference,
    platform: Option<&Platform>,
    policy: PullPolicy,
) -> Result<Option<BlobRef>, RegistryError> {
    let mut other_platforms = None;
    if policy != PullPolicy::Always {
        if let Some(r) = stored(store, reference) {
            match platform.map(|p| stored_platforms(store, &r, p)) {
                None | Some(Ok(())) => return Ok(Some(r)),
                // Stored for other platforms only: pulled for this one.
                Some(Err(have)) => other_platforms = Some(have),
            }
        }
    }
    if policy == PullPolicy::Never {
        return Err(match (other_platforms, platform) {
            (Some(available), Some(p)) => RegistryError::NoMatchingPlatform {
                reference: reference.to_string(),
                platform: p.to_string(),
                available,
            },
            _ => RegistryError::NotInStore {
                reference: reference.to_string(),
            },
        });
    }
    Ok(None)
}

/// What a build's `FROM ref` calls: [`pull_if_missing`], but a pull reads the
/// image's manifest and config only, and records where its layer blobs are
/// ([`super::sources`]): the layers are fetched when something needs them (a
/// step that runs on the image, an output), and a push to the same registry
/// mounts them instead. An image stored so is named like a pulled one; the
/// store lacks the layer blobs until then.
pub fn pull_metadata_if_missing(
    store: &Store,
    reference: &Reference,
    platform: Option<&Platform>,
    policy: PullPolicy,
    ctx: &RegistryContext,
) -> Result<BlobRef, RegistryError> {
    if let Some(r) = stored_per_policy(store, reference, platform, policy)? {
        return Ok(r);
    }
    let platform = platform.cloned().unwrap_or_else(Platform::host);
    Ok(pull_sources(store, reference, &platform, ctx, None, false)?.manifest)
}

/// Pull `reference` (from a configured mirror first, if any) into `store`.
pub fn pull(
    store: &Store,
    reference: &Reference,
    platform: Option<&Platform>,
    ctx: &RegistryContext,
) -> Result<Pulled, RegistryError> {
    pull_with(store, reference, platform, ctx, None)
}

/// [`pull`], unpacking each layer it downloads through `unpacker` while the
/// layer streams in (see [`super::unpack`]).
pub fn pull_with(
    store: &Store,
    reference: &Reference,
    platform: Option<&Platform>,
    ctx: &RegistryContext,
    unpacker: Option<&dyn LayerUnpacker>,
) -> Result<Pulled, RegistryError> {
    let platform = platform.cloned().unwrap_or_else(Platform::host);
    pull_sources(store, reference, &platform, ctx, unpacker, true)
}

/// [`pull_from`] each configured mirror, then the reference's own registry.
fn pull_sources(
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    ctx: &RegistryContext,
    unpacker: Option<&dyn LayerUnpacker>,
    layers: bool,
) -> Result<Pulled, RegistryError> {
    let label = reference.to_string();
    let mut last_err = None;
    for mirror in ctx.config.mirrors(&reference.registry) {
        let client = ctx.client(mirror, &reference.repository, label.clone())?;
        match pull_from(store, reference, platform, &client, unpacker, layers) {
            Ok(p) => return Ok(p),
            Err(e) => {
                tracing::warn!("mirror {mirror} failed, trying the next source: {e}");
                last_err = Some(e);
            }
        }
    }
    let client = ctx.client(&reference.registry, &reference.repository, label)?;
    match pull_from(store, reference, platform, &client, unpacker, layers) {
        // A mirror's error says more than the origin being unreachable (offline).
        Err(e @ RegistryError::Unreachable { .. }) => Err(last_err.unwrap_or(e)),
        other => other,
    }
}

fn store_err(client: &RepoClient) -> impl Fn(StoreError) -> RegistryError + '_ {
    move |source| RegistryError::Store {
        reference: client.label.clone(),
        source,
    }
}

/// GET a manifest or index by tag or digest; returns (bytes, media type, digest).
pub(crate) fn fetch_manifest(
    client: &RepoClient,
    reference: &str,
    expected: Option<Digest>,
) -> Result<(Vec<u8>, String, Digest), RegistryError> {
    let accept = [
        media_type::OCI_INDEX,
        media_type::OCI_MANIFEST,
        media_type::DOCKER_MANIFEST_LIST,
        media_type::DOCKER_MANIFEST,
    ]
    .join(", ");
    let url = client.url(&format!("manifests/{reference}"));
    let mut resp = client.send(
        http::Method::GET,
        &url,
        &[("Accept", accept)],
        Body::Empty,
        Access::Pull,
        None,
    )?;
    if resp.status() != StatusCode::OK {
        return Err(client.error_from(resp, &format!("manifest {reference:?}")));
    }
    let header_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(MAX_MANIFEST_SIZE)
        .read_to_vec()
        .map_err(|e| client.protocol(format!("reading manifest {reference}: {e}")))?;
    let digest = Digest::of(&bytes);
    if let Some(want) = expected {
        if want != digest {
            return Err(client.protocol(format!(
                "manifest content does not match {want} (got {digest})"
            )));
        }
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| client.protocol(format!("manifest {reference} is not JSON: {e}")))?;
    let media = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .or(header_type)
        .unwrap_or_else(|| {
            // An OCI manifest/index may omit mediaType: tell them apart by shape.
            if v.get("manifests").is_some() {
                media_type::OCI_INDEX
            } else {
                media_type::OCI_MANIFEST
            }
            .to_string()
        });
    if !media_type::is_manifest_or_index(&media) {
        return Err(client.protocol(format!(
            "unsupported manifest type {media:?} (kiln reads OCI and Docker schema 2 manifests)"
        )));
    }
    Ok((bytes, media, digest))
}

/// The index entry for `platform`.
fn choose_platform(
    client: &RepoClient,
    index: &[u8],
    platform: &Platform,
) -> Result<BlobRef, RegistryError> {
    let v: serde_json::Value =
        serde_json::from_slice(index).map_err(|e| client.protocol(e.to_string()))?;
    let entries = v
        .get("manifests")
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    let mut available = Vec::new();
    for e in &entries {
        let p = e.get("platform");
        let field = |k: &str| p.and_then(|p| p.get(k)).and_then(|x| x.as_str());
        let (os, arch, variant) = (
            field("os").unwrap_or(""),
            field("architecture").unwrap_or(""),
            field("variant"),
        );
        if os.is_empty() || os == "unknown" {
            continue; // attestations and the like
        }
        available.push(match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        });
        if platform.matches(os, arch, variant) {
            let b: BlobRef = serde_json::from_value(e.clone())
                .map_err(|err| client.protocol(format!("index entry: {err}")))?;
            return Ok(b);
        }
    }
    Err(RegistryError::NoMatchingPlatform {
        reference: client.label.clone(),
        platform: platform.to_string(),
        available: if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        },
    })
}

fn pull_from(
    store: &Store,
    reference: &Reference,
    platform: &Platform,
    client: &RepoClient,
    unpacker: Option<&dyn LayerUnpacker>,
    layers: bool,
) -> Result<Pulled, RegistryError> {
    let (mut bytes, mut media, resolved) =
        fetch_manifest(client, &reference.manifest_reference(), reference.digest)?;
    let mut chosen_platform = None;
    if media_type::is_index(&media) {
        let entry = choose_platform(client, &bytes, platform)?;
        chosen_platform = entry_platform(&bytes, &entry.digest);
        let (b, m, _) = fetch_manifest(client, &entry.digest.to_string(), Some(entry.digest))?;
        if b.len() as u64 != entry.size {
            return Err(client.protocol(format!(
                "manifest {} has {} bytes, but the index says {}",
                entry.digest,
                b.len(),
                entry.size
            )));
        }
        if !media_type::is_manifest(&m) {
            return Err(
                client.protocol("an index entry for the platform is not an image manifest".into())
            );
        }
        bytes = b;
        media = m;
    }
    let manifest_digest = Digest::of(&bytes);
    let blobs = crate::image::referenced_blobs(&bytes, &manifest_digest)
        .map_err(|e| store_err(client)(e.into()))?;
    if blobs.is_empty() {
        return Err(client.protocol("the manifest names no config".into()));
    }
    let mut missing: Vec<BlobRef> = Vec::new();
    for b in &blobs {
        match store.blob_size(&b.digest) {
            // Stored already: the manifest's size must be its size (it is what
            // `kiln images` adds up), as it must be for a downloaded one.
            Ok(size) if size != b.size => {
                return Err(client.protocol(format!(
                    "the manifest says blob {} has {} bytes, but it has {size}",
                    b.digest, b.size
                )))
            }
            Ok(_) => {}
            Err(StoreError::BlobNotFound(_)) => {
                if !missing.iter().any(|m| m.digest == b.digest) {
                    missing.push(b.clone());
                }
            }
            Err(e) => return Err(store_err(client)(e)),
        }
    }
    if !layers {
        // The config only (blobs[0]); the layers stay where they are.
        missing.retain(|b| b.digest == blobs[0].digest);
    }
    let mut downloaded = Vec::new();
    let mut diff_ids = BTreeMap::new();
    if let (Some(_), Some(config)) = (unpacker, unpack::config_of(&bytes)) {
        // Layers are unpacked as they come, under the diff_ids the config
        // gives them: the config (small) is downloaded before the layers.
        if let Some(i) = missing.iter().position(|b| b.digest == config.digest) {
            let c = missing.remove(i);
            downloaded.extend(download_all(store, client, &[c], None)?.0);
        }
        if let Ok(config_bytes) = store.read_blob(&config.digest) {
            diff_ids.extend(
                unpack::layer_diff_ids(&bytes, &config_bytes)
                    .into_iter()
                    .flatten(),
            );
        }
    }
    let unpacking = unpacker.map(|u| (u, &diff_ids));
    let (more, unpacked) = download_all(store, client, &missing, unpacking)?;
    downloaded.extend(more);
    for b in &blobs {
        super::sources::record(store, &client.registry, &client.repository, &b.digest);
    }
    store.put_blob(&bytes).map_err(store_err(client))?;
    let manifest = BlobRef {
        media_type: media,
        digest: manifest_digest,
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
    };
    match reference.store_name() {
        Some(name) => {
            let tagged = match &chosen_platform {
                Some(p) => with_other_platforms(store, &name, &manifest, p),
                None => Ok(manifest.clone()),
            };
            tagged.and_then(|t| store.tag(&name, t))
        }
        None => store.add_untagged(manifest.clone()),
    }
    .map_err(store_err(client))?;
    Ok(Pulled {
        manifest,
        resolved_digest: resolved,
        downloaded,
        source_registry: client.registry.clone(),
        unpacked,
    })
}

/// Layers to unpack while they download: the unpacker and each layer blob's
/// diff_id (a blob not in the map is only downloaded).
type Unpacking<'a> = (&'a dyn LayerUnpacker, &'a BTreeMap<Digest, Digest>);

/// The platform the index `data` gives its entry `digest`.
fn entry_platform(data: &[u8], digest: &Digest) -> Option<Platform> {
    let entries = crate::index::parse_index(data, digest).ok()?;
    entries
        .into_iter()
        .find(|e| e.manifest.digest == *digest)
        .and_then(|e| e.platform)
}

/// What `name` names after pulling `manifest` for `platform` from a
/// multi-platform image: the manifest itself when the name held nothing, or the
/// same platform; else an index of what the name held for other platforms plus
/// this one (as containerd keeps several platforms of one image), so that a
/// multi-platform build pulling a base for each platform keeps them all.
fn with_other_platforms(
    store: &Store,
    name: &crate::ImageName,
    manifest: &BlobRef,
    platform: &Platform,
) -> Result<BlobRef, StoreError> {
    use crate::index::{write_index, IndexEntry};
    let Ok(held) = store.resolve(name) else {
        return Ok(manifest.clone());
    };
    let mut entries: Vec<IndexEntry> = if media_type::is_index(&held.media_type) {
        match crate::index::read_index(store, &held) {
            Ok(entries) => entries,
            Err(_) => return Ok(manifest.clone()),
        }
    } else {
        match crate::image::load_image(store, &held) {
            Ok(image) if !image.config.architecture.is_empty() => vec![IndexEntry {
                manifest: held.clone(),
                platform: Some(crate::image::config_platform(&image.config)),
            }],
            _ => return Ok(manifest.clone()),
        }
    };
    let same = |p: &Option<Platform>| {
        p.as_ref()
            .is_some_and(|p| platform.matches(&p.os, &p.architecture, p.variant.as_deref()))
    };
    entries.retain(|e| e.is_image() && !same(&e.platform) && store.has_blob(&e.manifest.digest));
    if entries.is_empty() {
        return Ok(manifest.clone());
    }
    entries.push(IndexEntry {
        manifest: manifest.clone(),
        platform: Some(platform.clone()),
    });
    write_index(store, &entries, crate::image::ManifestFormat::Oci)
}

/// Download `blobs` with a few threads; the first error stops the others early.
/// Returns the blobs downloaded and the diff_ids of the layers unpacked.
fn download_all(
    store: &Store,
    client: &RepoClient,
    blobs: &[BlobRef],
    unpacking: Option<Unpacking<'_>>,
) -> Result<(Vec<Digest>, Vec<Digest>), RegistryError> {
    if blobs.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    // Largest first, so the long downloads start at once.
    let mut queue: Vec<&BlobRef> = blobs.iter().collect();
    queue.sort_by_key(|b| std::cmp::Reverse(b.size));
    let done = std::sync::Mutex::new((Vec::new(), Vec::new()));
    crate::parallel::try_for_each(
        &queue,
        PARALLEL_DOWNLOADS,
        |blob| {
            let layer = unpacking.and_then(|(u, ids)| Some((u, *ids.get(&blob.digest)?)));
            let unpacked = match layer {
                Some((u, diff_id)) => download_and_unpack(store, client, blob, &diff_id, u)?,
                None => {
                    download_blob(store, client, blob)?;
                    None
                }
            };
            let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
            done.0.push(blob.digest);
            done.1.extend(unpacked);
            Ok(())
        },
        || client.protocol("a download thread panicked".into()),
    )?;
    Ok(done.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Downloads one layer blob into the store and extracts it through `unpacker`
/// in the same pass: the blob's digest is checked by the blob writer, its
/// compression and diff_id by the extracting thread, and the extracted layer is
/// named only when both matched. Returns the diff_id if this pull unpacked it.
///
/// A download that resumes an earlier one (or restarts on a broken transfer)
/// is not one stream from the first byte: the layer is then extracted from the
/// stored blob once it is complete.
pub(crate) fn download_and_unpack(
    store: &Store,
    client: &RepoClient,
    blob: &BlobRef,
    diff_id: &Digest,
    unpacker: &dyn LayerUnpacker,
) -> Result<Option<Digest>, RegistryError> {
    let layer_err = |message: String| RegistryError::Protocol {
        reference: client.label.clone(),
        message: format!("layer {}: {message}", blob.digest),
    };
    let Some(target) = unpacker.begin(diff_id).map_err(layer_err)? else {
        download_blob(store, client, blob)?;
        return Ok(None);
    };
    let opts = unpacker.options();
    let mut writer = store
        .resumable_blob_writer(&blob.digest, blob.size)
        .map_err(store_err(client))?;
    let (fetched, abandoned, applied) = if writer.size() > 0 {
        (Ok(()), true, None)
    } else {
        std::thread::scope(|s| {
            let (mut tee, reader) = Tee::channel();
            let dir = target.dir();
            let extracting = s.spawn(move || {
                crate::layer::apply_image_layer_stream(reader, blob, diff_id, dir, &opts)
            });
            let fetched = fetch_blob(client, blob, &mut writer, &mut tee);
            tee.finish();
            let applied = extracting.join().unwrap_or_else(|_| {
                Err(crate::layer::LayerError::Input(std::io::Error::other(
                    "the extracting thread panicked",
                )))
            });
            (fetched, tee.abandoned, Some(applied))
        })
    };
    let mut target = target;
    if abandoned {
        // Not one stream: finish the download as a plain one, then extract
        // the stored blob into a fresh target (dropping the old one removes
        // what it holds).
        drop(writer);
        drop(target);
        download_blob(store, client, blob)?;
        let Some(fresh) = unpacker.begin(diff_id).map_err(layer_err)? else {
            return Ok(None);
        };
        target = fresh;
        crate::layer::apply_image_layer(store, blob, diff_id, target.dir(), &opts)
            .map_err(|e| layer_err(e.to_string()))?;
    } else {
        fetched?;
        // The blob's digest first: a tampered blob is reported as such (and
        // is not stored), whatever the extraction made of it.
        writer.commit().map_err(store_err(client))?;
        if let Some(applied) = applied {
            applied.map_err(|e| layer_err(e.to_string()))?;
        }
    }
    target.commit().map_err(layer_err)?;
    Ok(Some(*diff_id))
}

/// Stream one blob into the store, resuming with `Range` after a broken transfer.
/// The download goes to the store's partial file for this digest, so a pull that
/// fails or is killed leaves what it got for the next pull to continue. If the
/// finished content does not match the digest and part of it came from such a
/// file (written by a process that may have died at any point), the blob is
/// downloaded once more from nothing.
pub(crate) fn download_blob(
    store: &Store,
    client: &RepoClient,
    blob: &BlobRef,
) -> Result<(), RegistryError> {
    let what = format!("blob {}", blob.digest);
    let mut writer = store
        .resumable_blob_writer(&blob.digest, blob.size)
        .map_err(store_err(client))?;
    let resumed = writer.size();
    if resumed > 0 {
        tracing::info!(
            "{what}: continuing an earlier download at {resumed} of {} bytes",
            blob.size
        );
    }
    fetch_blob(client, blob, &mut writer, &mut Tee::none())?;
    match writer.commit() {
        Ok(_) => Ok(()),
        Err(StoreError::DigestMismatch { .. }) if resumed > 0 => {
            tracing::warn!("{what}: the continued download does not match; downloading it again");
            let mut writer = store
                .resumable_blob_writer(&blob.digest, blob.size)
                .map_err(store_err(client))?;
            writer.restart().map_err(store_err(client))?;
            fetch_blob(client, blob, &mut writer, &mut Tee::none())?;
            writer.commit().map_err(store_err(client))?;
            Ok(())
        }
        Err(e) => Err(store_err(client)(e)),
    }
}

/// The first byte offset of a `Content-Range: bytes FIRST-LAST/SIZE` header.
fn content_range_start(resp: &http::Response<ureq::Body>) -> Option<u64> {
    let v = resp
        .headers()
        .get(http::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let range = v.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// Fetches the rest of `blob` (from `writer.size()`) into `writer`, with
/// bounded attempts, each continuing where the last one stopped. What is
/// written also goes to `tee` while it is the blob from its first byte on.
fn fetch_blob(
    client: &RepoClient,
    blob: &BlobRef,
    writer: &mut crate::store::BlobWriter<'_>,
    tee: &mut Tee,
) -> Result<(), RegistryError> {
    let what = format!("blob {}", blob.digest);
    let url = client.url(&format!("blobs/{}", blob.digest));
    let mut attempt = 0;
    loop {
        let have = writer.size();
        if have > 0 && have == blob.size {
            // All there (a pull killed just before committing it).
            return Ok(());
        }
        attempt += 1;
        let headers: Vec<(&str, String)> = if have > 0 {
            tee.abandon();
            vec![("Range", format!("bytes={have}-"))]
        } else {
            Vec::new()
        };
        let mut resp = client.send(
            http::Method::GET,
            &url,
            &headers,
            Body::Empty,
            Access::Pull,
            None,
        )?;
        match resp.status() {
            StatusCode::OK if have > 0 => {
                // The server ignored Range: start over.
                tee.abandon();
                writer.restart().map_err(store_err(client))?;
            }
            StatusCode::PARTIAL_CONTENT if content_range_start(&resp) != Some(have) => {
                // Not the part that was asked for: ask for all of it.
                tracing::debug!("{what}: the registry answered a range request with another range");
                tee.abandon();
                writer.restart().map_err(store_err(client))?;
                if attempt >= BLOB_ATTEMPTS {
                    return Err(client.protocol(format!(
                        "{what}: the registry does not answer range requests correctly"
                    )));
                }
                continue;
            }
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
            _ => return Err(client.error_from(resp, &what)),
        }
        let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
        match copy_limited(&mut reader, writer, tee, blob.size) {
            Ok(()) if writer.size() == blob.size => return Ok(()),
            Ok(()) => {
                return Err(client.protocol(format!(
                    "{what}: the registry sent more than the {} bytes the manifest says",
                    blob.size
                )))
            }
            Err(CopyError::Write(e)) => {
                return Err(client.protocol(format!("{what}: writing to the store: {e}")));
            }
            Err(CopyError::Read(e)) => {
                if attempt >= BLOB_ATTEMPTS {
                    return Err(RegistryError::Unreachable {
                        reference: client.label.clone(),
                        message: format!("{what}: download failed after {attempt} attempts: {e}"),
                    });
                }
                tracing::debug!("{what}: {e}; resuming at {} bytes", writer.size());
                std::thread::sleep(backoff(attempt));
            }
        }
    }
}

enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copy until EOF; stop with Ok if more than `limit` bytes in total would be written
/// (the caller sees the size mismatch). A short stream is a read error (to resume).
fn copy_limited(
    r: &mut impl Read,
    w: &mut crate::store::BlobWriter<'_>,
    tee: &mut Tee,
    limit: u64,
) -> Result<(), CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        w.write_all(&buf[..n]).map_err(CopyError::Write)?;
        if w.size() > limit {
            return Ok(());
        }
        tee.send(&buf[..n]);
    }
    if w.size() < limit {
        return Err(CopyError::Read(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("stream ended after {} of {limit} bytes", w.size()),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_never_and_missing_use_the_store_without_network() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let ctx = RegistryContext {
            config: super::super::RegistryConfig::default(),
            auth: super::super::AuthFile::locate(Some(&dir.path().join("auth.json"))),
        };
        // Port 1 of loopback: any network use would fail as unreachable.
        let r = Reference::parse("127.0.0.1:1/app:1").unwrap();
        let err = pull_if_missing(&store, &r, None, PullPolicy::Never, &ctx).unwrap_err();
        assert!(matches!(err, RegistryError::NotInStore { .. }), "{err}");
        let m = store
            .put_blob(br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":0},"layers":[]}"#)
            .unwrap();
        let target = BlobRef {
            media_type: media_type::OCI_MANIFEST.into(),
            digest: m,
            size: 0,
            annotations: BTreeMap::new(),
        };
        store.tag(&r.store_name().unwrap(), target.clone()).unwrap();
        for policy in [PullPolicy::Never, PullPolicy::Missing] {
            assert_eq!(
                pull_if_missing(&store, &r, None, policy, &ctx).unwrap(),
                target
            );
        }
        let by_digest = Reference::parse(&format!("127.0.0.1:1/app@{m}")).unwrap();
        assert_eq!(
            pull_if_missing(&store, &by_digest, None, PullPolicy::Missing, &ctx).unwrap(),
            target
        );
        let err = pull_if_missing(&store, &r, None, PullPolicy::Always, &ctx).unwrap_err();
        assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
        assert_eq!("always".parse::<PullPolicy>(), Ok(PullPolicy::Always));

        // A stored multi-platform image serves the platforms it has; for
        // another one it is not there (never: an error naming what it has).
        let entries: Vec<crate::index::IndexEntry> = ["linux/amd64", "linux/arm64"]
            .iter()
            .map(|p| crate::index::IndexEntry {
                manifest: target.clone(),
                platform: Some(Platform::parse(p).unwrap()),
            })
            .collect();
        let index =
            crate::index::write_index(&store, &entries, crate::image::ManifestFormat::Oci).unwrap();
        let multi = Reference::parse("127.0.0.1:1/multi:1").unwrap();
        store
            .tag(&multi.store_name().unwrap(), index.clone())
            .unwrap();
        let arm = Platform::parse("linux/arm64").unwrap();
        assert_eq!(
            pull_if_missing(&store, &multi, Some(&arm), PullPolicy::Never, &ctx).unwrap(),
            index
        );
        let s390x = Platform::parse("linux/s390x").unwrap();
        let err =
            pull_if_missing(&store, &multi, Some(&s390x), PullPolicy::Never, &ctx).unwrap_err();
        assert!(
            err.to_string().contains(
                "no image for platform linux/s390x (available: linux/amd64, linux/arm64)"
            ),
            "{err}"
        );
        // Missing: pulled for that platform (here: unreachable, so it tried).
        let err =
            pull_if_missing(&store, &multi, Some(&s390x), PullPolicy::Missing, &ctx).unwrap_err();
        assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
        assert!("sometimes".parse::<PullPolicy>().is_err());
    }
}
