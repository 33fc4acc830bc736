//! Image indexes (OCI image index / Docker manifest list): one entry per
//! platform-specific manifest, read by platform and written for a
//! multi-platform build.
//!
//! An entry is a descriptor ([`BlobRef`], whose annotations are the entry's
//! annotations) plus the platform it serves. Entries that serve no platform
//! (BuildKit's attestation manifests: platform `unknown/unknown` and the
//! annotation `vnd.docker.reference.type: attestation-manifest`) are carried
//! as they are: [`write_index`] writes them, [`read_index`] returns them,
//! choosing an image by platform skips them, and [`rewrite_index`] keeps them
//! naming their image (`crate::attestation` writes them).

use crate::canonical_json::canonical_json;
use crate::descriptor::media_type;
use crate::digest::Digest;
use crate::image::ManifestFormat;
use crate::registry::Platform;
use crate::store::{BlobRef, Result, Store, StoreError};
use serde_json::{json, Map, Value};

/// The annotation BuildKit puts on an attestation manifest's index entry.
pub const REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";
/// Its value for an attestation manifest.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
/// The annotation naming the image manifest an attestation is about.
pub const REFERENCE_DIGEST_ANNOTATION: &str = "vnd.docker.reference.digest";

/// One entry of an image index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The manifest's descriptor; its annotations are the entry's.
    pub manifest: BlobRef,
    /// The platform the manifest serves; `None` for an entry that serves none
    /// (written as `unknown/unknown`, as BuildKit writes attestation manifests).
    pub platform: Option<Platform>,
}

impl IndexEntry {
    /// An attestation manifest (BuildKit's layout): no platform, its annotations
    /// naming the image manifest it describes.
    pub fn attestation(mut manifest: BlobRef, subject: &Digest) -> IndexEntry {
        manifest.annotations.insert(
            REFERENCE_TYPE_ANNOTATION.to_string(),
            ATTESTATION_MANIFEST.to_string(),
        );
        manifest
            .annotations
            .insert(REFERENCE_DIGEST_ANNOTATION.to_string(), subject.to_string());
        IndexEntry {
            manifest,
            platform: None,
        }
    }

    /// The image manifest an attestation entry is about (`None` for an image).
    pub fn attestation_subject(&self) -> Option<Digest> {
        let a = &self.manifest.annotations;
        if a.get(REFERENCE_TYPE_ANNOTATION).map(String::as_str) != Some(ATTESTATION_MANIFEST) {
            return None;
        }
        a.get(REFERENCE_DIGEST_ANNOTATION)?.parse().ok()
    }

    /// Whether this entry is an image for a platform (not an attestation).
    pub fn is_image(&self) -> bool {
        self.platform.is_some()
            && self
                .manifest
                .annotations
                .get(REFERENCE_TYPE_ANNOTATION)
                .is_none_or(|t| t != ATTESTATION_MANIFEST)
    }
}

fn malformed(digest: Digest, message: impl Into<String>) -> StoreError {
    StoreError::Malformed {
        what: "index",
        digest,
        message: message.into(),
    }
}

/// The entries of the index `data` (stored as `digest`).
pub fn parse_index(data: &[u8], digest: &Digest) -> Result<Vec<IndexEntry>> {
    let v: Value = serde_json::from_slice(data).map_err(|e| malformed(*digest, e.to_string()))?;
    let entries = v
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(*digest, "no manifests list"))?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let manifest: BlobRef =
            serde_json::from_value(e.clone()).map_err(|err| malformed(*digest, err.to_string()))?;
        let p = e.get("platform");
        let field = |k: &str| p.and_then(|p| p.get(k)).and_then(Value::as_str);
        let platform = match (field("os"), field("architecture")) {
            (Some(os), Some(arch)) if os != "unknown" && arch != "unknown" => Some(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: field("variant").map(str::to_string),
            }),
            _ => None,
        };
        out.push(IndexEntry { manifest, platform });
    }
    Ok(out)
}

/// The entries of the stored index `target`.
pub fn read_index(store: &Store, target: &BlobRef) -> Result<Vec<IndexEntry>> {
    parse_index(&store.read_blob(&target.digest)?, &target.digest)
}

/// The index's image entry for `platform` (a missing variant on either side
/// matches), skipping attestations.
pub fn choose<'a>(entries: &'a [IndexEntry], platform: &Platform) -> Option<&'a IndexEntry> {
    entries.iter().find(|e| {
        e.is_image()
            && e.platform
                .as_ref()
                .is_some_and(|p| platform.matches(&p.os, &p.architecture, p.variant.as_deref()))
    })
}

/// The platforms an index's images serve, as `os/arch[/variant]`.
pub fn platforms(entries: &[IndexEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.is_image())
        .filter_map(|e| e.platform.as_ref().map(|p| p.to_string()))
        .collect()
}

/// The index document for `entries` in `format` (an OCI image index, or a
/// Docker manifest list, whose entries must be Docker manifests).
pub fn build_index(entries: &[IndexEntry], format: ManifestFormat) -> Value {
    build_index_with(entries, format, &Default::default())
}

/// [`build_index`] with the index's own `annotations` (none: the same document).
pub fn build_index_with(
    entries: &[IndexEntry],
    format: ManifestFormat,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Value {
    let manifests: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut d = Map::new();
            d.insert("mediaType".into(), json!(e.manifest.media_type));
            d.insert("digest".into(), json!(e.manifest.digest.to_string()));
            d.insert("size".into(), json!(e.manifest.size));
            if !e.manifest.annotations.is_empty() {
                d.insert("annotations".into(), json!(e.manifest.annotations));
            }
            let platform = match &e.platform {
                Some(p) => {
                    let mut m = Map::new();
                    m.insert("os".into(), json!(p.os));
                    m.insert("architecture".into(), json!(p.architecture));
                    if let Some(v) = &p.variant {
                        m.insert("variant".into(), json!(v));
                    }
                    Value::Object(m)
                }
                None => json!({"os": "unknown", "architecture": "unknown"}),
            };
            d.insert("platform".into(), platform);
            Value::Object(d)
        })
        .collect();
    let media = match format {
        ManifestFormat::Oci => media_type::OCI_INDEX,
        ManifestFormat::Docker => media_type::DOCKER_MANIFEST_LIST,
    };
    let mut doc = json!({"schemaVersion": 2, "mediaType": media, "manifests": manifests});
    if !annotations.is_empty() {
        doc["annotations"] = json!(annotations);
    }
    doc
}

/// Stores the index for `entries` (whose manifests must be stored) and returns
/// its descriptor. Same entries, same digest.
pub fn write_index(
    store: &Store,
    entries: &[IndexEntry],
    format: ManifestFormat,
) -> Result<BlobRef> {
    write_index_with(store, entries, format, &Default::default())
}

/// [`write_index`] with the index's own `annotations` (`kiln build
/// --annotation index:…`).
pub fn write_index_with(
    store: &Store,
    entries: &[IndexEntry],
    format: ManifestFormat,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Result<BlobRef> {
    for e in entries {
        if !store.has_blob(&e.manifest.digest) {
            return Err(StoreError::BlobNotFound(e.manifest.digest));
        }
    }
    let bytes = canonical_json(&build_index_with(entries, format, annotations));
    let digest = store.put_blob(&bytes)?;
    Ok(BlobRef {
        media_type: format_media_type(format).to_string(),
        digest,
        size: bytes.len() as u64,
        annotations: Default::default(),
    })
}

fn format_media_type(format: ManifestFormat) -> &'static str {
    match format {
        ManifestFormat::Oci => media_type::OCI_INDEX,
        ManifestFormat::Docker => media_type::DOCKER_MANIFEST_LIST,
    }
}

/// The stored index `target` with some entries' manifests replaced (`replace`
/// gives the new descriptor of an entry's manifest, or `None` to keep it); the
/// rest of the document is kept as it is. `replace` is not asked about
/// attestation entries: one about a replaced manifest is rewritten to name the
/// new one ([`crate::attestation::retarget`]). Returns `target` when nothing changed.
pub fn rewrite_index<E: From<StoreError>>(
    store: &Store,
    target: &BlobRef,
    mut replace: impl FnMut(&IndexEntry) -> std::result::Result<Option<BlobRef>, E>,
) -> std::result::Result<BlobRef, E> {
    let data = store.read_blob(&target.digest)?;
    let entries = parse_index(&data, &target.digest)?;
    let mut v: Value =
        serde_json::from_slice(&data).map_err(|e| malformed(target.digest, e.to_string()))?;
    let list = v
        .get_mut("manifests")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| malformed(target.digest, "no manifests list"))?;
    if list.len() != entries.len() {
        return Err(malformed(target.digest, "entries changed while read").into());
    }
    let mut changed = false;
    // Image manifests replaced: old digest → new.
    let mut moved: std::collections::BTreeMap<Digest, BlobRef> = Default::default();
    for (entry, doc) in entries.iter().zip(list.iter_mut()) {
        if entry.attestation_subject().is_some() {
            continue;
        }
        let Some(new) = replace(entry)? else { continue };
        if new.digest == entry.manifest.digest {
            continue;
        }
        changed = true;
        moved.insert(entry.manifest.digest, new.clone());
        doc["mediaType"] = json!(new.media_type);
        doc["digest"] = json!(new.digest.to_string());
        doc["size"] = json!(new.size);
    }
    // An attestation about a replaced manifest now names the new one.
    for (entry, doc) in entries.iter().zip(list.iter_mut()) {
        let Some(subject) = entry.attestation_subject() else {
            continue;
        };
        let Some(new_subject) = moved.get(&subject) else {
            continue;
        };
        let new = crate::attestation::retarget(store, &entry.manifest, &subject, new_subject)?;
        doc["digest"] = json!(new.digest.to_string());
        doc["size"] = json!(new.size);
        doc["annotations"][REFERENCE_DIGEST_ANNOTATION] = json!(new_subject.digest.to_string());
    }
    if !changed {
        return Ok(target.clone());
    }
    let bytes = canonical_json(&v);
    let digest = store.put_blob(&bytes)?;
    Ok(BlobRef {
        media_type: target.media_type.clone(),
        digest,
        size: bytes.len() as u64,
        annotations: target.annotations.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn manifest(store: &Store, n: u8) -> BlobRef {
        let data = format!(r#"{{"schemaVersion":2,"n":{n}}}"#);
        let digest = store.put_blob(data.as_bytes()).unwrap();
        BlobRef {
            media_type: media_type::OCI_MANIFEST.into(),
            digest,
            size: data.len() as u64,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn written_index_reads_back_by_platform_with_attestations_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let amd = manifest(&store, 1);
        let arm = manifest(&store, 2);
        let att = manifest(&store, 3);
        let entries = vec![
            IndexEntry {
                manifest: amd.clone(),
                platform: Some(Platform::parse("linux/amd64").unwrap()),
            },
            IndexEntry {
                manifest: arm.clone(),
                platform: Some(Platform::parse("linux/arm64").unwrap()),
            },
            IndexEntry::attestation(att.clone(), &arm.digest),
        ];
        let index = write_index(&store, &entries, ManifestFormat::Oci).unwrap();
        assert_eq!(index.media_type, media_type::OCI_INDEX);
        let again = write_index(&store, &entries, ManifestFormat::Oci).unwrap();
        assert_eq!(index, again, "same entries, same digest");
        let read = read_index(&store, &index).unwrap();
        assert_eq!(read, entries);
        let doc: Value = serde_json::from_slice(&store.read_blob(&index.digest).unwrap()).unwrap();
        assert_eq!(doc["manifests"][2]["platform"]["os"], "unknown");
        assert_eq!(
            doc["manifests"][2]["annotations"][REFERENCE_TYPE_ANNOTATION],
            ATTESTATION_MANIFEST
        );
        let arm64 = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(choose(&read, &arm64).unwrap().manifest, arm);
        assert!(choose(&read, &Platform::parse("linux/s390x").unwrap()).is_none());
        assert_eq!(platforms(&read), ["linux/amd64", "linux/arm64"]);

        // Replacing one entry's manifest keeps the rest of the document.
        let amd2 = manifest(&store, 4);
        let rewritten = rewrite_index(&store, &index, |e| {
            Ok::<_, StoreError>((e.manifest.digest == amd.digest).then(|| amd2.clone()))
        })
        .unwrap();
        assert_ne!(rewritten.digest, index.digest);
        let read = read_index(&store, &rewritten).unwrap();
        assert_eq!(read[0].manifest.digest, amd2.digest);
        assert_eq!(read[1..], entries[1..]);
        let unchanged = rewrite_index(&store, &index, |_| Ok::<_, StoreError>(None)).unwrap();
        assert_eq!(unchanged, index);
    }
}
