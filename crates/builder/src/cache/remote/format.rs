//! The cache's format: one OCI image manifest (not an index, so every registry
//! takes it) whose config, of media type [`CONFIG_MEDIA_TYPE`], is a
//! [`CacheConfig`], and whose layers are the layer blobs the records name — the
//! same blobs as the images', so a registry holding both keeps one copy.
//! Merging two configs and pruning by age and count are here too.

use kiln_oci::canonical_json::canonical_json;
use kiln_oci::digest::Digest;
use kiln_oci::image::media_type;
use kiln_oci::store::BlobRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The config media type that marks a manifest as kiln's build cache.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.kiln.cache.v1+json";
/// The format version in [`CacheConfig::kiln_cache`].
pub const VERSION: u32 = 1;

/// A step's layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerEntry {
    pub media_type: String,
    /// Of the compressed blob.
    pub digest: Digest,
    pub size: u64,
    /// Of the uncompressed tar.
    #[serde(rename = "diffID")]
    pub diff_id: Digest,
}

/// One step's record: what a step key produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub layer: LayerEntry,
    /// When the step first ran (Unix seconds; its history entry's `created`).
    pub created: i64,
    /// The key of the filesystem step before it (absent: the stage's base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
    /// The step's change to the image config, when its record holds one
    /// (kiln's step records hold none: config instructions are not steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// What went into the step's key, compactly (input name → short digest;
    /// see `crate::cache::explain`), for `--explain-cache`. Read only when
    /// the config's `inputsFormat` is one this kiln knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<BTreeMap<String, String>>,
    /// When a build last used (ran or hit) it (Unix seconds).
    pub last_used: i64,
}

/// A remembered digest (what a `COPY --from` reads from a stage result), so a
/// runner finds the COPY's key without the stage's files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoEntry {
    pub digest: Digest,
    pub last_used: i64,
}

/// The cache manifest's config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheConfig {
    pub kiln_cache: u32,
    /// The version of the records' `inputs` (absent: none recorded). An
    /// addition to version 1: a kiln that does not know it ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_format: Option<u32>,
    /// Step key → record.
    #[serde(default)]
    pub records: BTreeMap<Digest, CacheEntry>,
    /// Memo key → digest.
    #[serde(default)]
    pub memos: BTreeMap<Digest, MemoEntry>,
}

impl CacheConfig {
    pub fn new() -> CacheConfig {
        CacheConfig {
            kiln_cache: VERSION,
            inputs_format: Some(crate::cache::explain::INPUTS_FORMAT),
            ..CacheConfig::default()
        }
    }

    /// Adds `other`'s entries: a key in both keeps the later `last_used` (and
    /// that side's record).
    pub fn merge(&mut self, other: &CacheConfig) {
        if self.inputs_format.is_none() {
            self.inputs_format = other.inputs_format;
        }
        for (k, e) in &other.records {
            match self.records.get(k) {
                Some(mine) if mine.last_used >= e.last_used => {}
                _ => {
                    self.records.insert(*k, e.clone());
                }
            }
        }
        for (k, m) in &other.memos {
            match self.memos.get(k) {
                Some(mine) if mine.last_used >= m.last_used => {}
                _ => {
                    self.memos.insert(*k, m.clone());
                }
            }
        }
    }

    /// Drops entries unused for more than `max_age` seconds before `now`, then
    /// all but the `max_entries` most recently used records (and as many memos).
    pub fn prune(&mut self, now: i64, max_age: Option<i64>, max_entries: Option<usize>) {
        if let Some(age) = max_age {
            self.records.retain(|_, e| now - e.last_used <= age);
            self.memos.retain(|_, m| now - m.last_used <= age);
        }
        if let Some(n) = max_entries {
            fn keep_newest<V>(map: &mut BTreeMap<Digest, V>, n: usize, used: impl Fn(&V) -> i64) {
                if map.len() <= n {
                    return;
                }
                let mut by_age: Vec<(i64, Digest)> =
                    map.iter().map(|(k, v)| (used(v), *k)).collect();
                // Newest first; equal times in key order, so every runner keeps the same.
                by_age.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                for (_, k) in by_age.into_iter().skip(n) {
                    map.remove(&k);
                }
            }
            keep_newest(&mut self.records, n, |e| e.last_used);
            keep_newest(&mut self.memos, n, |m| m.last_used);
        }
    }

    /// Whether every record and memo of `mine` is here.
    pub fn contains_all(&self, mine: &CacheConfig) -> bool {
        mine.records.keys().all(|k| self.records.contains_key(k))
            && mine.memos.keys().all(|k| self.memos.contains_key(k))
    }

    /// The distinct layer blobs of the records, in key order.
    pub fn layers(&self) -> Vec<BlobRef> {
        let mut seen = std::collections::HashSet::new();
        self.records
            .values()
            .filter(|e| seen.insert(e.layer.digest))
            .map(|e| e.layer.blob())
            .collect()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        canonical_json(self)
    }
}

impl LayerEntry {
    pub fn blob(&self) -> BlobRef {
        BlobRef {
            media_type: self.media_type.clone(),
            digest: self.digest,
            size: self.size,
            annotations: BTreeMap::new(),
        }
    }
}

/// The manifest for a config stored as `config` (its bytes' descriptor).
pub fn manifest(config: &BlobRef, layers: &[BlobRef]) -> Vec<u8> {
    let v = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": config,
        "layers": layers,
        "annotations": { "org.opencontainers.image.title": "kiln build cache" },
    });
    canonical_json(&v)
}

/// The config descriptor of a cache manifest; an error says why `bytes` is
/// not one (not JSON, an index, another config type: a foreign manifest).
pub fn parse_manifest(bytes: &[u8]) -> Result<BlobRef, String> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    if v.get("manifests").is_some() {
        return Err("it is an index, not kiln's cache manifest".into());
    }
    let config: BlobRef = v
        .get("config")
        .cloned()
        .ok_or_else(|| "the manifest has no config".to_string())
        .and_then(|c| serde_json::from_value(c).map_err(|e| format!("its config: {e}")))?;
    if config.media_type != CONFIG_MEDIA_TYPE {
        return Err(format!(
            "not a kiln cache (its config is {:?}, not {CONFIG_MEDIA_TYPE})",
            config.media_type
        ));
    }
    Ok(config)
}

/// A cache config from its bytes; an error says what is wrong with it.
pub fn parse_config(bytes: &[u8]) -> Result<CacheConfig, String> {
    let mut c: CacheConfig =
        serde_json::from_slice(bytes).map_err(|e| format!("the cache config is malformed: {e}"))?;
    // Inputs in a format this kiln does not know would be misread: dropped.
    if c.inputs_format != Some(crate::cache::explain::INPUTS_FORMAT) {
        for e in c.records.values_mut() {
            e.inputs = None;
        }
    }
    if c.kiln_cache != VERSION {
        return Err(format!(
            "the cache config is version {} (this kiln reads {VERSION})",
            c.kiln_cache
        ));
    }
    for e in c.records.values() {
        if !is_layer(&e.layer.media_type) {
            return Err(format!(
                "a record's layer has media type {:?}, which is not a layer",
                e.layer.media_type
            ));
        }
    }
    Ok(c)
}

/// The layer media types kiln reads.
fn is_layer(mt: &str) -> bool {
    [
        media_type::OCI_LAYER,
        media_type::OCI_LAYER_GZIP,
        media_type::OCI_LAYER_ZSTD,
        media_type::DOCKER_LAYER,
        media_type::DOCKER_LAYER_GZIP,
    ]
    .contains(&mt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, used: i64) -> CacheEntry {
        CacheEntry {
            layer: LayerEntry {
                media_type: media_type::OCI_LAYER_GZIP.into(),
                digest: Digest::of(&[n]),
                size: n as u64,
                diff_id: Digest::of(&[n, n]),
            },
            created: 1,
            parent: None,
            config: None,
            inputs: None,
            last_used: used,
        }
    }

    fn key(n: u8) -> Digest {
        Digest::of(&[b'k', n])
    }

    #[test]
    fn merging_adds_and_keeps_the_newer_use() {
        let mut a = CacheConfig::new();
        a.records.insert(key(1), entry(1, 100));
        a.records.insert(key(2), entry(2, 100));
        let mut b = CacheConfig::new();
        b.records.insert(key(2), entry(2, 200));
        b.records.insert(key(3), entry(3, 50));
        b.memos.insert(
            key(9),
            MemoEntry {
                digest: Digest::of(b"m"),
                last_used: 5,
            },
        );
        a.merge(&b);
        assert_eq!(a.records.len(), 3);
        assert_eq!(a.records[&key(2)].last_used, 200);
        assert_eq!(a.memos.len(), 1);
        assert!(a.contains_all(&b));
        assert!(!b.contains_all(&a));
        // The same layer blob twice is one manifest layer.
        a.records.insert(key(4), entry(1, 1));
        assert_eq!(a.layers().len(), 3);
    }

    #[test]
    fn pruning_by_age_and_count_drops_the_oldest() {
        let mut c = CacheConfig::new();
        for n in 0..10u8 {
            c.records.insert(key(n), entry(n, 1000 + n as i64 * 10));
        }
        c.prune(1100, Some(50), None);
        // Used at 1050 … 1090 are within 50 s of 1100.
        assert_eq!(c.records.len(), 5);
        c.prune(1100, None, Some(2));
        let kept: Vec<i64> = c.records.values().map(|e| e.last_used).collect();
        assert_eq!(kept.len(), 2);
        assert!(kept.contains(&1090) && kept.contains(&1080), "{kept:?}");
    }

    #[test]
    fn foreign_and_corrupt_manifests_are_told_apart() {
        let cfg = CacheConfig::new().to_bytes();
        let desc = BlobRef {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest: Digest::of(&cfg),
            size: cfg.len() as u64,
            annotations: BTreeMap::new(),
        };
        let m = manifest(&desc, &[]);
        assert_eq!(parse_manifest(&m).unwrap(), desc);
        assert_eq!(parse_config(&cfg).unwrap(), CacheConfig::new());
        assert!(parse_manifest(b"garbage").unwrap_err().contains("not JSON"));
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
        assert!(parse_manifest(image)
            .unwrap_err()
            .contains("not a kiln cache"));
        assert!(parse_manifest(br#"{"manifests":[]}"#)
            .unwrap_err()
            .contains("index"));
        assert!(parse_config(br#"{"kilnCache":7}"#)
            .unwrap_err()
            .contains("version 7"));
        assert!(parse_config(b"{").unwrap_err().contains("malformed"));
    }
}
