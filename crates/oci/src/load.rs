//! Loading images into the store: docker-archive and OCI archive tars (detected from
//! their content), and OCI layout directories.
//!
//! A tar is read in one pass: every file entry streams straight into the store as a
//! blob (entries under `blobs/sha256/` are verified against their names), and the
//! small metadata files are kept in memory. Nothing is extracted onto the
//! filesystem, so hostile paths in the archive cannot write anywhere.

use crate::canonical_json::canonical_json;
use crate::digest::Digest;
use crate::export::{io_err, ArchiveError, Result};
use crate::image::{
    build_manifest, load_image, media_type, referenced_blobs, LayerCompression, ManifestFormat,
};
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

/// Load every image of a docker-archive or OCI archive tar into `store`, and tag it.
pub fn load_archive(store: &Store, reader: impl Read) -> Result<Vec<LoadedImage>> {
    let mut archive = tar::Archive::new(reader);
    let mut metadata: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Archive path → stored blob (digest, size).
    let mut files: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    // Archive path → the path a (sym or hard) link points at.
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let bad = |e: io::Error| {
        ArchiveError::Format(format!("reading the archive (is it a tar file?): {e}"))
    };
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
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
                .map_err(bad)?;
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
                other => other.into(),
            })?;
        files.insert(path, stored);
    }
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
        return register_layout_images(store, index.manifests, &repo_tags);
    }

    let Some(entries) = docker_entries else {
        return Err(ArchiveError::Format(
            "not an image archive: it has neither index.json (OCI) nor manifest.json (docker)"
                .into(),
        ));
    };
    let mut loaded = Vec::new();
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
        // Check the config parses before recording the image.
        load_image(store, &target)?;
        let names = e.repo_tags.unwrap_or_default();
        register(store, &target, &names, &mut loaded)?;
    }
    Ok(loaded)
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
    names: &[String],
    loaded: &mut Vec<LoadedImage>,
) -> Result<()> {
    let mut target = target.clone();
    target.annotations.clear();
    let mut any = false;
    for n in names {
        let name: ImageName = n
            .parse()
            .map_err(|e| ArchiveError::Format(format!("the archive names an image {e}")))?;
        store.tag(&name, target.clone())?;
        loaded.push(LoadedImage {
            name: Some(name),
            target: target.clone(),
        });
        any = true;
    }
    if !any {
        store.add_untagged(target.clone())?;
        loaded.push(LoadedImage { name: None, target });
    }
    Ok(())
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
    let mut loaded = Vec::new();
    for d in manifests {
        if !media_type::is_manifest_or_index(&d.media_type) {
            return Err(ArchiveError::Unsupported(format!(
                "the archive's index lists {} with media type {:?}, which is not an image",
                d.digest, d.media_type
            )));
        }
        check_complete(store, &d, &mut BTreeSet::new())?;
        let mut names: Vec<String> = layout_name(&d).into_iter().collect();
        if names.is_empty() {
            let image = load_image(store, &d)?;
            names = repo_tags.get(&image.id()).cloned().unwrap_or_default();
        } else {
            load_image(store, &d)?;
        }
        register(store, &d, &names, &mut loaded)?;
    }
    Ok(loaded)
}

fn check_complete(store: &Store, d: &BlobRef, seen: &mut BTreeSet<Digest>) -> Result<()> {
    if !seen.insert(d.digest) {
        return Ok(());
    }
    if !store.has_blob(&d.digest) {
        return Err(ArchiveError::Format(format!(
            "the archive is incomplete: blob {} is missing",
            d.digest
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

    #[test]
    fn clean_path_normalises_and_refuses_escapes() {
        assert_eq!(clean_relative("./a/b/../c").as_deref(), Some("a/c"));
        assert_eq!(clean_relative("/abs//x").as_deref(), Some("abs/x"));
        assert_eq!(clean_relative("a/../../b"), None);
    }
}
