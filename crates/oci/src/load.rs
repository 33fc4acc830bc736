//! Loading images into the store: docker-archive and OCI archive tars (detected from
//! their content), and OCI layout directories.
//!
//! A tar (plain, or compressed as `docker load` accepts: gzip, bzip2, xz, zstd) is
//! read in one pass: every file entry streams straight into the store as a blob
//! (entries under `blobs/sha256/` are verified against their names), and the
//! small metadata files are kept in memory. Nothing is extracted onto the
//! filesystem, so hostile paths in the archive cannot write anywhere.
//!
//! Before any image is named, everything it references must be stored with the
//! size its descriptor gives, and each layer must be what its descriptor and its
//! config say: a complete stream of its media type's compression whose
//! uncompressed content hashes to its diff_id.

use crate::canonical_json::canonical_json;
use crate::digest::Digest;
use crate::export::{io_err, ArchiveError, Result};
use crate::image::{
    build_manifest, load_image, media_type, referenced_blobs, LayerCompression, ManifestFormat,
};
use crate::layer::{tarball_decoder, verify_image_layer, TarballCompression};
use crate::path::clean_relative;
use crate::reference::ImageName;
use crate::store::{BlobRef, Store, StoreError, CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::path::Path;

/// An image a load added to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    pub name: Option<ImageName>,
    pub target: BlobRef,
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct LayoutIndex {
    #[serde(default)]
    manifests: Vec<BlobRef>,
}

const METADATA_FILES: [&str; 4] = ["index.json", "manifest.json", "oci-layout", "repositories"];
const METADATA_LIMIT: u64 = 64 << 20;

fn blob_name(path: &str) -> Option<Digest> {
    let hex = path.strip_prefix("blobs/sha256/")?;
    format!("sha256:{hex}").parse().ok()
}

/// `text` with control characters and undecodable bytes (U+FFFD after a lossy
/// decoding) escaped, and cut to a line's length: what an error message may quote
/// of an input that is not text.
fn printable(text: &str) -> String {
    const MAX: usize = 300;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() || c == '\u{fffd}' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Load every image of a docker-archive or OCI archive tar into `store`, and tag it.
/// The tar may be compressed (gzip, bzip2, xz or zstd), as `docker load` allows.
/// Every layer is checked against its descriptor and the diff_id its image's
/// config gives it before any image is named.
pub fn load_archive(store: &Store, reader: impl Read) -> Result<Vec<LoadedImage>> {
    let Some((compression, mut stream)) = tarball_decoder(reader).map_err(|e| {
        ArchiveError::Format(format!(
            "reading the archive: {}",
            printable(&e.to_string())
        ))
    })?
    else {
        return Err(ArchiveError::Format(
            "the input is empty, not an image archive".into(),
        ));
    };
    let mut archive = tar::Archive::new(&mut stream);
    let mut metadata: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Archive path → stored blob (digest, size).
    let mut files: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    // Archive path → the path a (sym or hard) link points at.
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut entries_read = 0usize;
    let bad = |e: io::Error, entries_read: usize| {
        let what = match (entries_read, compression) {
            // What the tar reader says about bytes that are no tar header is
            // noise (it quotes them): say what the input is not.
            (0, TarballCompression::None) => {
                return ArchiveError::Format(
                    "not an image archive: the input is not a tar file (nor a gzip, bzip2, \
                     xz or zstd compressed one)"
                        .into(),
                )
            }
            (0, c) => format!("reading the {c} compressed archive (is it a tar file inside?)"),
            (_, TarballCompression::None) => "reading the archive".to_string(),
            (_, c) => format!("reading the {c} compressed archive"),
        };
        ArchiveError::Format(format!("{what}: {}", printable(&e.to_string())))
    };
    for entry in archive.entries().map_err(|e| bad(e, 0))? {
        let mut entry = entry.map_err(|e| bad(e, entries_read))?;
        entries_read += 1;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = clean_relative(&raw) else {
            return Err(ArchiveError::Format(format!(
                "archive entry {raw:?} points outside the archive"
            )));
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let resolved = if entry.header().entry_type() == tar::EntryType::Symlink {
                    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    clean_relative(&format!("{dir}/{target}"))
                } else {
                    clean_relative(&target)
                };
                if let Some(r) = resolved {
                    links.insert(path, r);
                }
                continue;
            }
            _ => continue,
        }
        if METADATA_FILES.contains(&path.as_str()) {
            let mut data = Vec::new();
            (&mut entry)
                .take(METADATA_LIMIT)
                .read_to_end(&mut data)
                .map_err(|e| bad(e, entries_read))?;
            metadata.insert(path, data);
            continue;
        }
        let expected = blob_name(&path);
        let stored = store
            .put_blob_from(&mut entry, expected)
            .map_err(|e| match e {
                StoreError::DigestMismatch { expected, actual } => ArchiveError::Format(format!(
                "archive entry {path} does not match its digest (expected {expected}, got {actual})"
            )),
                StoreError::Input(e) => bad(e, entries_read),
                other => other.into(),
            })?;
        files.insert(path, stored);
    }
    // What follows the tar's end (padding, the compression trailer): a compressed
    // archive must be complete.
    io::copy(&mut stream, &mut io::sink()).map_err(|e| bad(e, entries_read))?;
    let lookup = |path: &str| -> Result<(Digest, u64)> {
        let mut p = clean_relative(path).unwrap_or_default();
        for _ in 0..16 {
            if let Some(f) = files.get(&p) {
                return Ok(*f);
            }
            match links.get(&p) {
                Some(next) => p = next.clone(),
                None => break,
            }
        }
        Err(ArchiveError::Format(format!(
            "the archive's manifest names {path:?}, which the archive does not contain"
        )))
    };

    let docker_entries: Option<Vec<DockerManifestEntry>> = match metadata.get("manifest.json") {
        Some(d) if d.iter().all(u8::is_ascii_whitespace) => {
            return Err(ArchiveError::Format(
                "the archive's manifest.json is empty: it names no image".into(),
            ))
        }
        Some(d) => Some(serde_json::from_slice(d).map_err(|e| {
            ArchiveError::Format(format!("malformed manifest.json in the archive: {e}"))
        })?),
        None => None,
    };

    if let Some(index) = metadata.get("index.json") {
        let index: LayoutIndex = serde_json::from_slice(index).map_err(|e| {
            ArchiveError::Format(format!("malformed index.json in the archive: {e}"))
        })?;
        // Names docker's manifest.json gives each config, for index entries without one.
        let mut repo_tags: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for e in docker_entries.iter().flatten() {
            let (config, _) = lookup(&e.config)?;
            repo_tags
                .entry(config)
                .or_default()
                .extend(e.repo_tags.clone().unwrap_or_default());
        }
        if index.manifests.is_empty() {
            return Err(ArchiveError::Format(
                "the archive holds no image: its index.json lists none".into(),
            ));
        }
        return register_layout_images(store, index.manifests, &repo_tags);
    }

    let Some(entries) = docker_entries else {
        return Err(ArchiveError::Format(
            "not an image archive: it has neither index.json (OCI) nor manifest.json (docker)"
                .into(),
        ));
    };
    if entries.is_empty() {
        return Err(ArchiveError::Format(
            "the archive holds no image: its manifest.json lists none".into(),
        ));
    }
    // Every image is checked before any is named.
    let mut checked = Vec::new();
    let mut verified = BTreeSet::new();
    for e in entries {
        let (config_digest, config_size) = lookup(&e.config)?;
        let config_ref = BlobRef {
            media_type: media_type::DOCKER_CONFIG.into(),
            digest: config_digest,
            size: config_size,
            annotations: BTreeMap::new(),
        };
        let mut layers = Vec::new();
        for l in &e.layers {
            let (digest, size) = lookup(l)?;
            let mut head = [0u8; 4];
            let n = read_head(store, &digest, &mut head)?;
            let comp = LayerCompression::sniff(&head[..n]);
            let mt = comp
                .media_type(ManifestFormat::Docker)
                .unwrap_or(media_type::OCI_LAYER_ZSTD);
            layers.push(BlobRef {
                media_type: mt.to_string(),
                digest,
                size,
                annotations: BTreeMap::new(),
            });
        }
        let format = if layers
            .iter()
            .any(|l| l.media_type == media_type::OCI_LAYER_ZSTD)
        {
            ManifestFormat::Oci
        } else {
            ManifestFormat::Docker
        };
        let manifest = build_manifest(&config_ref, &layers, format)
            .map_err(|m| ArchiveError::Format(format!("image {}: {m}", e.config)))?;
        let bytes = canonical_json(&manifest);
        let digest = store.put_blob(&bytes)?;
        let target = BlobRef {
            media_type: format.manifest_media_type().into(),
            digest,
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
        };
        verify_layers(store, &target, &mut verified)?;
        checked.push((target, parse_names(&e.repo_tags.unwrap_or_default())?));
    }
    let mut loaded = Vec::new();
    for (target, names) in checked {
        register(store, &target, names, &mut loaded)?;
    }
    Ok(loaded)
}

/// Checks every layer of the image `target` (of each image of an index) against
/// its descriptor and against the diff_id its config gives it, as `docker load`
/// does: snapshots are named by diff_id, so an archive whose config claims
/// another image's diff_ids must not get in. Manifests that are not images
/// (attestations, artifacts) have no diff_ids to check. `verified` holds the
/// (blob, diff_id) pairs already checked.
fn verify_layers(
    store: &Store,
    target: &BlobRef,
    verified: &mut BTreeSet<(Digest, Digest)>,
) -> Result<()> {
    if media_type::is_index(&target.media_type) {
        let data = store.read_blob(&target.digest)?;
        for child in referenced_blobs(&data, &target.digest).map_err(StoreError::from)? {
            if media_type::is_manifest_or_index(&child.media_type) {
                verify_layers(store, &child, verified)?;
            }
        }
        return Ok(());
    }
    let data = store.read_blob(&target.digest)?;
    let config = referenced_blobs(&data, &target.digest)
        .map_err(StoreError::from)?
        .into_iter()
        .next()
        .filter(|c| {
            c.media_type == media_type::OCI_CONFIG || c.media_type == media_type::DOCKER_CONFIG
        });
    if config.is_none() {
        return Ok(());
    }
    // Parses the manifest and the config (an error here is a broken image).
    let image = load_image(store, target)?;
    let diff_ids = &image.config.rootfs.diff_ids;
    if diff_ids.len() != image.layers.len() {
        return Err(ArchiveError::Format(format!(
            "image {}: the manifest has {} layers but the config lists {} diff_ids",
            image.id(),
            image.layers.len(),
            diff_ids.len()
        )));
    }
    for (layer, diff_id) in image.layers.iter().zip(diff_ids) {
        if !verified.insert((layer.digest, *diff_id)) {
            continue;
        }
        verify_image_layer(store, layer, diff_id)
            .map_err(|e| ArchiveError::Format(format!("image {}: {e}", image.id())))?;
    }
    Ok(())
}

fn read_head(store: &Store, digest: &Digest, buf: &mut [u8]) -> Result<usize> {
    let mut f = store.open_blob(digest)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("reading", store.blob_path(digest))(e)),
        }
    }
    Ok(n)
}

/// Tag `target` with each of `names` (or record it untagged if there are none).
fn register(
    store: &Store,
    target: &BlobRef,
    names: Vec<ImageName>,
    loaded: &mut Vec<LoadedImage>,
) -> Result<()> {
    let mut target = target.clone();
    target.annotations.clear();
    if names.is_empty() {
        store.add_untagged(target.clone())?;
        loaded.push(LoadedImage { name: None, target });
        return Ok(());
    }
    for name in names {
        store.tag(&name, target.clone())?;
        loaded.push(LoadedImage {
            name: Some(name),
            target: target.clone(),
        });
    }
    Ok(())
}

/// The names an archive gives an image, checked (before anything is named).
fn parse_names(names: &[String]) -> Result<Vec<ImageName>> {
    names
        .iter()
        .map(|n| {
            n.parse()
                .map_err(|e| ArchiveError::Format(format!("the archive names an image {e}")))
        })
        .collect()
}

/// The name an OCI index entry gives its image: `io.containerd.image.name`, else a
/// `org.opencontainers.image.ref.name` that is a full reference (a bare tag names no
/// repository, so it does not count).
fn layout_name(d: &BlobRef) -> Option<String> {
    if let Some(n) = d.annotations.get(CONTAINERD_NAME_ANNOTATION) {
        return Some(n.clone());
    }
    let r = d.annotations.get(REF_NAME_ANNOTATION)?;
    if r.contains(':') || r.contains('/') {
        Some(r.clone())
    } else {
        None
    }
}

/// Check every blob of the layout's images is present, then tag them.
fn register_layout_images(
    store: &Store,
    manifests: Vec<BlobRef>,
    repo_tags: &BTreeMap<Digest, Vec<String>>,
) -> Result<Vec<LoadedImage>> {
    // Every image is checked before any is named.
    let mut checked = Vec::new();
    let mut verified = BTreeSet::new();
    for d in manifests {
        if !media_type::is_manifest_or_index(&d.media_type) {
            return Err(ArchiveError::Unsupported(format!(
                "the archive's index lists {} with media type {:?}, which is not an image",
                d.digest, d.media_type
            )));
        }
        check_complete(store, &d, &mut BTreeSet::new())?;
        let mut names: Vec<String> = layout_name(&d).into_iter().collect();
        let image = load_image(store, &d)?;
        if names.is_empty() {
            names = repo_tags.get(&image.id()).cloned().unwrap_or_default();
        }
        verify_layers(store, &d, &mut verified)?;
        checked.push((d, parse_names(&names)?));
    }
    let mut loaded = Vec::new();
    for (d, names) in checked {
        register(store, &d, names, &mut loaded)?;
    }
    Ok(loaded)
}

/// Checks that every blob `d` references is stored, with the size its
/// descriptor gives (a size is what `kiln images` adds up: it must be the blob's).
fn check_complete(store: &Store, d: &BlobRef, seen: &mut BTreeSet<Digest>) -> Result<()> {
    if !seen.insert(d.digest) {
        return Ok(());
    }
    let size = match store.blob_size(&d.digest) {
        Ok(size) => size,
        Err(StoreError::BlobNotFound(_)) => {
            return Err(ArchiveError::Format(format!(
                "the archive is incomplete: blob {} is missing",
                d.digest
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if size != d.size {
        return Err(ArchiveError::Format(format!(
            "blob {} has {size} bytes, but the descriptor naming it says {}",
            d.digest, d.size
        )));
    }
    if media_type::is_manifest_or_index(&d.media_type) {
        let data = store.read_blob(&d.digest)?;
        for c in referenced_blobs(&data, &d.digest).map_err(StoreError::from)? {
            check_complete(store, &c, seen)?;
        }
    }
    Ok(())
}

/// Copy the images of an OCI layout directory into `store` (blobs verified) and tag them.
/// With `only`, import just the image whose tag or name equals it, untagged unless
/// the layout names it.
pub fn import_oci_dir(store: &Store, dir: &Path, only: Option<&str>) -> Result<Vec<LoadedImage>> {
    let index_path = dir.join("index.json");
    let data = fs::read(&index_path).map_err(io_err("reading", &index_path))?;
    let index: LayoutIndex = serde_json::from_slice(&data)
        .map_err(|e| ArchiveError::Format(format!("malformed {}: {e}", index_path.display())))?;
    let mut manifests = index.manifests;
    if let Some(want) = only {
        manifests.retain(|d| {
            d.annotations.get(REF_NAME_ANNOTATION).map(String::as_str) == Some(want)
                || d.annotations
                    .get(CONTAINERD_NAME_ANNOTATION)
                    .map(String::as_str)
                    == Some(want)
        });
        if manifests.is_empty() {
            return Err(ArchiveError::Format(format!(
                "the OCI layout {} has no image named {want:?}",
                dir.display()
            )));
        }
    }
    let mut seen = BTreeSet::new();
    for d in &manifests {
        copy_from_layout(store, dir, d, &mut seen)?;
    }
    register_layout_images(store, manifests, &BTreeMap::new())
}

fn copy_from_layout(
    store: &Store,
    dir: &Path,
    d: &BlobRef,
    seen: &mut BTreeSet<Digest>,
) -> Result<()> {
    if !seen.insert(d.digest) {
        return Ok(());
    }
    if !store.has_blob(&d.digest) {
        let path = dir.join("blobs/sha256").join(d.digest.hex());
        let f = fs::File::open(&path).map_err(io_err("opening", &path))?;
        store
            .put_blob_from(f, Some(d.digest))
            .map_err(|e| match e {
                StoreError::DigestMismatch { .. } => {
                    ArchiveError::Format(format!("{} does not match its digest", path.display()))
                }
                other => other.into(),
            })?;
    }
    if media_type::is_manifest_or_index(&d.media_type) {
        let data = store.read_blob(&d.digest)?;
        for c in referenced_blobs(&data, &d.digest).map_err(StoreError::from)? {
            copy_from_layout(store, dir, &c, seen)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageConfig;

    fn entry(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, path, target).unwrap();
    }

    fn layer_tar(name: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, name, name.as_bytes());
        b.into_inner().unwrap()
    }

    /// A docker ≤ 24 `docker save` archive: `<id>/layer.tar` directories, the config
    /// as `<hex>.json`, a duplicated layer stored as a symlink, `repositories`.
    #[test]
    fn loads_a_legacy_docker_save_archive() {
        let l1 = layer_tar("a");
        let l2 = layer_tar("b");
        let mut config = ImageConfig::new("linux", "amd64");
        config.rootfs.diff_ids = vec![Digest::of(&l1), Digest::of(&l2), Digest::of(&l1)];
        let config_bytes = config.to_bytes();
        let cfg_name = format!("{}.json", Digest::of(&config_bytes).hex());
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "111/VERSION", b"1.0");
        entry(&mut b, "111/json", b"{}");
        entry(&mut b, "111/layer.tar", &l1);
        entry(&mut b, "222/layer.tar", &l2);
        symlink(&mut b, "333/layer.tar", "../111/layer.tar");
        entry(&mut b, &cfg_name, &config_bytes);
        let manifest = format!(
            r#"[{{"Config":"{cfg_name}","RepoTags":["docker.io/library/legacy:7"],"Layers":["111/layer.tar","222/layer.tar","333/layer.tar"]}}]"#
        );
        entry(&mut b, "manifest.json", manifest.as_bytes());
        entry(&mut b, "repositories", br#"{"legacy":{"7":"333"}}"#);
        let archive = b.into_inner().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let loaded = load_archive(&store, &archive[..]).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].name.as_ref().unwrap().to_string(), "legacy:7");
        assert_eq!(loaded[0].target.media_type, media_type::DOCKER_MANIFEST);
        let img = load_image(&store, &loaded[0].target).unwrap();
        assert_eq!(img.id(), Digest::of(&config_bytes));
        let digests: Vec<Digest> = img.layers.iter().map(|l| l.digest).collect();
        assert_eq!(digests, config.rootfs.diff_ids);
        assert!(img
            .layers
            .iter()
            .all(|l| l.media_type == media_type::DOCKER_LAYER));
        // Loading the same archive again gives the same manifest.
        let again = load_archive(&store, &archive[..]).unwrap();
        assert_eq!(again[0].target, loaded[0].target);
    }

    #[test]
    fn refuses_bad_archives() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();

        // A blob whose content does not match its name.
        let mut b = tar::Builder::new(Vec::new());
        entry(
            &mut b,
            &format!("blobs/sha256/{}", Digest::of(b"x").hex()),
            b"y",
        );
        let err = load_archive(&store, &b.into_inner().unwrap()[..]).unwrap_err();
        assert!(
            err.to_string().contains("does not match its digest"),
            "{err}"
        );

        // A path climbing out of the archive.
        let mut data = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        // `append_data` refuses "..", so write the name into the header directly.
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        data.append(&h, &b"z"[..]).unwrap();
        let err = load_archive(&store, &data.into_inner().unwrap()[..]).unwrap_err();
        assert!(err.to_string().contains("outside the archive"), "{err}");

        // Neither index.json nor manifest.json.
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "hello.txt", b"hi");
        let err = load_archive(&store, &b.into_inner().unwrap()[..]).unwrap_err();
        assert!(err.to_string().contains("not an image archive"), "{err}");

        // A manifest.json naming a file the archive lacks.
        let mut b = tar::Builder::new(Vec::new());
        entry(
            &mut b,
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":null,"Layers":[]}]"#,
        );
        let err = load_archive(&store, &b.into_inner().unwrap()[..]).unwrap_err();
        assert!(err.to_string().contains("does not contain"), "{err}");

        // An index whose image is incomplete.
        let mut b = tar::Builder::new(Vec::new());
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":3}}]}}"#,
            media_type::OCI_MANIFEST,
            Digest::of(b"abc")
        );
        entry(&mut b, "index.json", idx.as_bytes());
        let err = load_archive(&store, &b.into_inner().unwrap()[..]).unwrap_err();
        assert!(err.to_string().contains("incomplete"), "{err}");
        // Nothing was named.
        assert!(store.images().unwrap().is_empty());
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A layer tar with zero padding after its end (as GNU tar pads to its record
    /// size): what follows the tar's end is never needed by a tar reader.
    fn padded_layer_tar(name: &str) -> Vec<u8> {
        let mut t = layer_tar(name);
        t.resize(t.len() + (1 << 20), 0);
        t
    }

    struct ArchiveLayer {
        media_type: &'static str,
        blob: Vec<u8>,
        /// What the descriptor says the size is.
        size: u64,
        diff_id: Digest,
    }

    impl ArchiveLayer {
        fn new(media_type: &'static str, blob: Vec<u8>, diff_id: Digest) -> Self {
            ArchiveLayer {
                media_type,
                size: blob.len() as u64,
                blob,
                diff_id,
            }
        }
    }

    /// An OCI archive (`index.json` → manifest → config + layers) naming `name`.
    fn oci_archive(name: &str, layers: &[ArchiveLayer]) -> Vec<u8> {
        let mut config = ImageConfig::for_host();
        config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id).collect();
        let config_bytes = config.to_bytes();
        let descs: Vec<String> = layers
            .iter()
            .map(|l| {
                format!(
                    r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#,
                    l.media_type,
                    Digest::of(&l.blob),
                    l.size
                )
            })
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":{}}},"layers":[{}]}}"#,
            media_type::OCI_MANIFEST,
            media_type::OCI_CONFIG,
            Digest::of(&config_bytes),
            config_bytes.len(),
            descs.join(",")
        );
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":{},"annotations":{{"{}":"{name}"}}}}]}}"#,
            media_type::OCI_MANIFEST,
            Digest::of(manifest.as_bytes()),
            manifest.len(),
            CONTAINERD_NAME_ANNOTATION
        );
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        entry(&mut b, "index.json", index.as_bytes());
        for data in [manifest.as_bytes(), &config_bytes[..]]
            .into_iter()
            .chain(layers.iter().map(|l| &l.blob[..]))
        {
            let path = format!("blobs/sha256/{}", Digest::of(data).hex());
            entry(&mut b, &path, data);
        }
        b.into_inner().unwrap()
    }

    fn load_fails(archive: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = load_archive(&store, archive).unwrap_err().to_string();
        assert!(store.images().unwrap().is_empty(), "{err}");
        err
    }

    #[test]
    fn loads_an_oci_archive_whose_layers_are_what_its_config_says() {
        let tar = padded_layer_tar("a");
        let archive = oci_archive(
            "docker.io/library/fine:1",
            &[ArchiveLayer::new(
                media_type::OCI_LAYER_GZIP,
                gzip(&tar),
                Digest::of(&tar),
            )],
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let loaded = load_archive(&store, &archive[..]).unwrap();
        assert_eq!(loaded[0].name.as_ref().unwrap().to_string(), "fine:1");
    }

    /// An archive whose config claims another image's diff_ids for its own
    /// layers is refused, as docker refuses it ("invalid diffID").
    #[test]
    fn refuses_layers_that_are_not_their_diff_ids() {
        let genuine = layer_tar("genuine");
        let evil = layer_tar("evil");
        // OCI archive.
        let err = load_fails(&oci_archive(
            "docker.io/library/evil:1",
            &[ArchiveLayer::new(
                media_type::OCI_LAYER_GZIP,
                gzip(&evil),
                Digest::of(&genuine),
            )],
        ));
        assert!(err.contains(&Digest::of(&genuine).to_string()), "{err}");
        assert!(err.contains(&Digest::of(&evil).to_string()), "{err}");
        // docker-archive.
        let mut config = ImageConfig::for_host();
        config.rootfs.diff_ids = vec![Digest::of(&genuine)];
        let config_bytes = config.to_bytes();
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "layer.tar", &evil);
        entry(&mut b, "config.json", &config_bytes);
        entry(
            &mut b,
            "manifest.json",
            br#"[{"Config":"config.json","RepoTags":["evil:2"],"Layers":["layer.tar"]}]"#,
        );
        let err = load_fails(&b.into_inner().unwrap());
        assert!(err.contains(&Digest::of(&genuine).to_string()), "{err}");
        // A config listing fewer diff_ids than there are layers.
        let mut b = tar::Builder::new(Vec::new());
        config.rootfs.diff_ids.clear();
        entry(&mut b, "layer.tar", &evil);
        entry(&mut b, "config.json", &config.to_bytes());
        entry(
            &mut b,
            "manifest.json",
            br#"[{"Config":"config.json","RepoTags":["evil:3"],"Layers":["layer.tar"]}]"#,
        );
        let err = load_fails(&b.into_inner().unwrap());
        assert!(err.contains("diff_id"), "{err}");
    }

    #[test]
    fn refuses_descriptors_that_do_not_match_their_blobs() {
        let tar = layer_tar("a");
        let mut huge = ArchiveLayer::new(media_type::OCI_LAYER, tar.clone(), Digest::of(&tar));
        huge.size = 1 << 62;
        let err = load_fails(&oci_archive("docker.io/library/huge:1", &[huge]));
        assert!(err.contains(&(1u64 << 62).to_string()), "{err}");

        // A 0-byte blob is no gzip layer (it is not an empty one either).
        let err = load_fails(&oci_archive(
            "docker.io/library/empty:1",
            &[ArchiveLayer::new(
                media_type::OCI_LAYER_GZIP,
                Vec::new(),
                Digest::of(b""),
            )],
        ));
        assert!(err.contains("gzip"), "{err}");

        // Compressed streams must be complete, even where only padding is cut.
        let tar = padded_layer_tar("a");
        let gz = gzip(&tar);
        let err = load_fails(&oci_archive(
            "docker.io/library/cut:1",
            &[ArchiveLayer::new(
                media_type::OCI_LAYER_GZIP,
                gz[..gz.len() - 20].to_vec(),
                Digest::of(&tar),
            )],
        ));
        assert!(err.contains("incomplete"), "{err}");
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        let err = load_fails(&oci_archive(
            "docker.io/library/cut:2",
            &[ArchiveLayer::new(
                media_type::OCI_LAYER_ZSTD,
                zst[..zst.len() - 8].to_vec(),
                Digest::of(&tar),
            )],
        ));
        assert!(err.contains("incomplete"), "{err}");
    }

    #[test]
    fn an_archive_without_images_is_an_error() {
        for manifest in [&b"[]"[..], b"", b"  \n"] {
            let mut b = tar::Builder::new(Vec::new());
            entry(&mut b, "manifest.json", manifest);
            let err = load_fails(&b.into_inner().unwrap());
            assert!(err.contains("manifest.json"), "{err}");
        }
        let mut b = tar::Builder::new(Vec::new());
        entry(
            &mut b,
            "index.json",
            br#"{"schemaVersion":2,"manifests":[]}"#,
        );
        let err = load_fails(&b.into_inner().unwrap());
        assert!(err.contains("no image"), "{err}");
    }

    #[test]
    fn compressed_archives_load_as_docker_load_reads_them() {
        let tar = layer_tar("a");
        let archive = oci_archive(
            "docker.io/library/packed:1",
            &[ArchiveLayer::new(
                media_type::OCI_LAYER,
                tar.clone(),
                Digest::of(&tar),
            )],
        );
        let mut xz =
            lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::default()).unwrap();
        std::io::Write::write_all(&mut xz, &archive).unwrap();
        let xz = xz.finish().unwrap();
        for packed in [
            gzip(&archive),
            zstd::encode_all(&archive[..], 3).unwrap(),
            xz,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let loaded = load_archive(&store, &packed[..]).unwrap();
            assert_eq!(loaded[0].name.as_ref().unwrap().to_string(), "packed:1");
        }
        // A compressed archive cut short is an error, not a partial load.
        let gz = gzip(&archive);
        let err = load_fails(&gz[..gz.len() - 20]);
        assert!(err.contains("reading the gzip compressed archive"), "{err}");
    }

    #[test]
    fn errors_about_binary_input_are_printable() {
        let mut junk = vec![0u8; 4096];
        let mut x: u32 = 1;
        for b in junk.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
        // A tar header checksum that matches, over a header of random bytes.
        let mut h = [0u8; 512];
        h.copy_from_slice(&junk[..512]);
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        for input in [&junk[..], &[&h[..], &junk[512..]].concat()[..]] {
            let err = load_fails(input);
            assert!(
                err.chars().all(|c| !c.is_control() && c != '\u{fffd}'),
                "{err:?}"
            );
        }
    }

    #[test]
    fn clean_path_normalises_and_refuses_escapes() {
        assert_eq!(clean_relative("./a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(clean_relative("/abs//x").as_deref(), Some("abs/x"));
        assert_eq!(clean_relative("a/../../b"), None);
    }
}
