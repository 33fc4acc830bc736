//! Attestation manifests, as the newest BuildKit stores them (its "attestation
//! storage" layout, as an OCI 1.1 artifact): per platform image, one OCI image
//! manifest in the image index whose layers are in-toto statements
//! (`application/vnd.in-toto+json`, each with the `in-toto.io/predicate-type`
//! annotation), with `artifactType:
//! application/vnd.docker.attestation.manifest.v1+json`, the empty config
//! (`application/vnd.oci.empty.v1+json`, `{}`) and the image manifest as its
//! `subject` (so the OCI referrers API finds it too), and whose index entry
//! (platform `unknown/unknown`,
//! `vnd.docker.reference.type: attestation-manifest`,
//! `vnd.docker.reference.digest: <image manifest>`, see
//! [`crate::index::IndexEntry::attestation`]) names the image it is about.
//!
//! A statement names the image manifest as its subject; when an output
//! rewrites that manifest (its layers' blobs compressed, see
//! `export::complete`), [`retarget`] rewrites the statements and the
//! attestation manifest to name the new one.

use crate::canonical_json::canonical_json;
use crate::descriptor::media_type;
use crate::digest::Digest;
use crate::store::{BlobRef, Result, Store, StoreError};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The media type of an in-toto statement layer.
pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";
/// The layer annotation naming the statement's predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// The in-toto statement type kiln writes.
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// The predicate type of an SPDX document.
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
/// The artifact type of an attestation manifest.
pub const ATTESTATION_ARTIFACT_TYPE: &str = "application/vnd.docker.attestation.manifest.v1+json";
/// The media type of the empty config (`{}`) of an artifact manifest.
pub const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The predicate type of SLSA provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";

fn malformed(digest: Digest, message: impl Into<String>) -> StoreError {
    StoreError::Malformed {
        what: "attestation manifest",
        digest,
        message: message.into(),
    }
}

/// An in-toto statement v1 about `subjects` (name — a package URL, or none —
/// and the manifest digest).
pub fn statement(
    predicate_type: &str,
    predicate: Value,
    subjects: &[(Option<String>, Digest)],
) -> Value {
    let subject: Vec<Value> = subjects
        .iter()
        .map(|(name, digest)| {
            let mut s = json!({ "digest": { "sha256": digest.hex() } });
            if let Some(n) = name {
                s["name"] = json!(n);
            }
            s
        })
        .collect();
    json!({
        "_type": STATEMENT_V1,
        "predicateType": predicate_type,
        "subject": subject,
        "predicate": predicate,
    })
}

/// Stores the attestation manifest about the image manifest `subject` whose
/// layers are `statements` (in that order) and returns its descriptor (no
/// annotations: the index entry's come from
/// [`crate::index::IndexEntry::attestation`]).
pub fn write_attestation_manifest(
    store: &Store,
    statements: &[Value],
    subject: &BlobRef,
) -> Result<BlobRef> {
    let mut layers = Vec::with_capacity(statements.len());
    for s in statements {
        let predicate_type = s
            .get("predicateType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let bytes = canonical_json(s);
        let digest = store.put_blob(&bytes)?;
        layers.push(json!({
            "mediaType": IN_TOTO_MEDIA_TYPE,
            "digest": digest.to_string(),
            "size": bytes.len(),
            "annotations": { PREDICATE_TYPE_ANNOTATION: predicate_type },
        }));
    }
    let empty = b"{}";
    let config_digest = store.put_blob(empty)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "artifactType": ATTESTATION_ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_CONFIG_MEDIA_TYPE,
            "digest": config_digest.to_string(),
            "size": empty.len(),
            "data": "e30=",
        },
        "layers": layers,
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest.to_string(),
            "size": subject.size,
        },
    });
    let bytes = canonical_json(&manifest);
    let digest = store.put_blob(&bytes)?;
    Ok(BlobRef {
        media_type: media_type::OCI_MANIFEST.to_string(),
        digest,
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
    })
}

/// The in-toto statements of the stored attestation manifest `manifest`, in
/// layer order (layers of other media types are skipped, as readers must).
pub fn read_statements(store: &Store, manifest: &BlobRef) -> Result<Vec<Value>> {
    let doc: Value = serde_json::from_slice(&store.read_blob(&manifest.digest)?)
        .map_err(|e| malformed(manifest.digest, e.to_string()))?;
    let layers = doc
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(manifest.digest, "no layers"))?;
    let mut out = Vec::new();
    for l in layers {
        if l.get("mediaType").and_then(Value::as_str) != Some(IN_TOTO_MEDIA_TYPE) {
            continue;
        }
        let digest: Digest = l
            .get("digest")
            .and_then(Value::as_str)
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| malformed(manifest.digest, "a layer without a digest"))?;
        let v: Value = serde_json::from_slice(&store.read_blob(&digest)?)
            .map_err(|e| malformed(digest, e.to_string()))?;
        out.push(v);
    }
    Ok(out)
}

/// The attestation manifest `manifest` about `new` instead of `old` (the image
/// manifest it is about was rewritten): its subject, and every statement
/// subject naming `old`.
pub fn retarget(store: &Store, manifest: &BlobRef, old: &Digest, new: &BlobRef) -> Result<BlobRef> {
    let mut statements = read_statements(store, manifest)?;
    for s in &mut statements {
        for subject in s
            .get_mut("subject")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if subject["digest"]["sha256"] == json!(old.hex()) {
                subject["digest"]["sha256"] = json!(new.digest.hex());
            }
        }
    }
    write_attestation_manifest(store, &statements, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attestation_manifest_has_buildkits_layout_and_retargets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let image_ref = BlobRef {
            media_type: media_type::OCI_MANIFEST.into(),
            digest: Digest::of(b"image"),
            size: 5,
            annotations: BTreeMap::new(),
        };
        let image = image_ref.digest;
        let s = statement(
            SPDX_PREDICATE,
            json!({"spdxVersion": "SPDX-2.3"}),
            &[(Some("pkg:docker/api@1".into()), image)],
        );
        let m = write_attestation_manifest(&store, std::slice::from_ref(&s), &image_ref).unwrap();
        let doc: Value = serde_json::from_slice(&store.read_blob(&m.digest).unwrap()).unwrap();
        assert_eq!(doc["layers"][0]["mediaType"], IN_TOTO_MEDIA_TYPE);
        assert_eq!(
            doc["layers"][0]["annotations"][PREDICATE_TYPE_ANNOTATION],
            SPDX_PREDICATE
        );
        assert_eq!(doc["artifactType"], ATTESTATION_ARTIFACT_TYPE);
        assert_eq!(doc["config"]["mediaType"], EMPTY_CONFIG_MEDIA_TYPE);
        let config = store
            .read_blob(&doc["config"]["digest"].as_str().unwrap().parse().unwrap())
            .unwrap();
        assert_eq!(config, b"{}");
        assert_eq!(doc["subject"]["digest"], image.to_string());
        assert_eq!(read_statements(&store, &m).unwrap(), vec![s.clone()]);

        let other_ref = BlobRef {
            digest: Digest::of(b"compressed image"),
            size: 16,
            ..image_ref.clone()
        };
        let other = other_ref.digest;
        let moved = retarget(&store, &m, &image, &other_ref).unwrap();
        assert_ne!(moved.digest, m.digest);
        let read = read_statements(&store, &moved).unwrap();
        assert_eq!(read[0]["subject"][0]["digest"]["sha256"], other.hex());
        assert_eq!(read[0]["subject"][0]["name"], "pkg:docker/api@1");
        assert_eq!(read[0]["predicate"], s["predicate"]);
        let doc: Value = serde_json::from_slice(&store.read_blob(&moved.digest).unwrap()).unwrap();
        assert_eq!(doc["subject"]["digest"], other.to_string());
        assert_eq!(doc["subject"]["size"], 16);
    }
}
