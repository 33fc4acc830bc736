//! Build records: what a build did, kept beside the image it made, so that
//! `kiln analyze` can speak about its stages after the fact.
//!
//! ```text
//! builds/<manifest digest hex>.json   {"version": 1, "stages": [...], ...}
//! ```
//!
//! A record is keyed by the digest of the stored manifest (the image as the
//! build stored it). It names each built stage's steps (the instruction as
//! written, its Dockerfile lines, whether it ran or came from the cache, how
//! long it took) and the layers of each stage's resulting filesystem, the
//! intermediate stages' too. Those layers are kept in the store as long as the
//! record is (gc treats them as reachable from the image), and the record goes
//! when its image goes ([`Store::gc`] removes records of manifests no stored
//! image reaches). The format is versioned: a reader ignores a record whose
//! `version` it does not know, rather than misread it.

use super::{io_err, BlobRef, Result, Store};
use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

/// The format version this code writes and reads.
pub const BUILD_RECORD_VERSION: u32 = 1;

/// What one build did (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    pub version: u32,
    /// The Dockerfile's name as the build gave it (`Dockerfile`, `build/app.Dockerfile`).
    pub dockerfile: String,
    /// Index into `stages` of the stage the image is (the target).
    pub target: usize,
    /// The stages that were built, in Dockerfile order.
    pub stages: Vec<StageRecord>,
    /// Wall time of the whole build.
    pub duration_ms: u64,
}

/// One built stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    /// The stage's index in the Dockerfile (0 for the first FROM).
    pub index: usize,
    /// `AS` name, or BuildKit's `stage-N`.
    pub name: String,
    /// The FROM instruction as written, and its line.
    pub from: String,
    pub from_line: usize,
    /// The stage this one is built on, if it is built on one (by Dockerfile index).
    pub base_stage: Option<usize>,
    /// The stage's resulting filesystem, base layer first.
    pub layers: Vec<LayerRecord>,
    /// The stage's instructions after FROM, in order.
    pub steps: Vec<StepRecord>,
    /// The stage's resulting image config's USER ("" when none).
    pub user: String,
    /// Bytes of the stage's image config (what `kiln images` adds to the
    /// layers' sizes for the stage built as the target).
    pub config_size: u64,
}

/// A layer of a stage's filesystem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The layer as the stage's image names it (for a layer the build made:
    /// uncompressed, its digest is the diff_id and its size the tar's).
    pub blob: BlobRef,
    pub diff_id: Digest,
    /// Index into the stage's `steps` of the step that made it; `None` for a
    /// layer the stage started with (its base image or base stage).
    pub step: Option<usize>,
}

/// One instruction of a stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The instruction as written, on one line.
    pub instruction: String,
    /// 1-based first and last Dockerfile line.
    pub line: usize,
    pub end_line: usize,
    /// `ran`, `cached`, or `config` (a metadata instruction: no layer, nothing ran).
    pub result: StepResult,
    /// Time the step took (0 for a cache hit or a metadata instruction).
    pub duration_ms: u64,
    /// For `COPY --from=<stage>`: that stage's Dockerfile index.
    pub from_stage: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepResult {
    Ran,
    Cached,
    Config,
}

impl BuildRecord {
    /// The target stage.
    pub fn target_stage(&self) -> Option<&StageRecord> {
        self.stages.iter().find(|s| s.index == self.target)
    }

    /// The stage with Dockerfile index `index`.
    pub fn stage(&self, index: usize) -> Option<&StageRecord> {
        self.stages.iter().find(|s| s.index == index)
    }
}

impl Store {
    fn builds_dir(&self) -> PathBuf {
        self.root.join("builds")
    }

    /// Keeps `record` as the build record of the image whose manifest is `manifest`.
    pub fn put_build_record(&self, manifest: &Digest, record: &BuildRecord) -> Result<()> {
        let data = serde_json::to_vec(record).unwrap_or_default();
        let dir = self.builds_dir();
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        self.write_atomic(&dir.join(format!("{}.json", manifest.hex())), &data)
    }

    /// The build record of the image whose manifest is `manifest`, if one is
    /// kept in a version this code reads.
    pub fn build_record(&self, manifest: &Digest) -> Option<BuildRecord> {
        let path = self.builds_dir().join(format!("{}.json", manifest.hex()));
        let data = fs::read(path).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
        if v.get("version")?.as_u64()? != u64::from(BUILD_RECORD_VERSION) {
            return None;
        }
        serde_json::from_value(v).ok()
    }

    /// The diff_ids of the layers the build records of stored images name (the
    /// stages' filesystems, which are kept while their image is).
    pub fn build_record_layers(&self) -> Result<BTreeSet<Digest>> {
        let mut out = BTreeSet::new();
        for image in self.images()? {
            if let Some(rec) = self.build_record(&image.target.digest) {
                out.extend(rec.stages.iter().flat_map(|s| &s.layers).map(|l| l.diff_id));
            }
        }
        Ok(out)
    }

    /// The manifests that have a build record.
    pub(super) fn build_record_manifests(&self) -> Vec<Digest> {
        let Ok(rd) = fs::read_dir(self.builds_dir()) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let hex = name.to_str()?.strip_suffix(".json")?;
                format!("sha256:{hex}").parse::<Digest>().ok()
            })
            .collect()
    }

    /// Removes the build records of manifests not in `keep`.
    pub(super) fn remove_build_records_except(&self, keep: &BTreeSet<Digest>) -> Result<()> {
        for m in self.build_record_manifests() {
            if !keep.contains(&m) {
                let p = self.builds_dir().join(format!("{}.json", m.hex()));
                fs::remove_file(&p).map_err(io_err("removing", &p))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> BuildRecord {
        BuildRecord {
            version: BUILD_RECORD_VERSION,
            dockerfile: "Dockerfile".into(),
            target: 0,
            stages: vec![StageRecord {
                index: 0,
                name: "stage-0".into(),
                from: "FROM scratch".into(),
                from_line: 1,
                base_stage: None,
                layers: Vec::new(),
                steps: vec![StepRecord {
                    instruction: "USER 1000".into(),
                    line: 2,
                    end_line: 2,
                    result: StepResult::Config,
                    duration_ms: 0,
                    from_stage: None,
                }],
                user: "1000".into(),
                config_size: 300,
            }],
            duration_ms: 5,
        }
    }

    #[test]
    fn a_record_reads_back_and_one_of_an_unknown_version_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let m = Digest::of(b"manifest");
        assert_eq!(store.build_record(&m), None);
        store.put_build_record(&m, &record()).unwrap();
        assert_eq!(store.build_record(&m), Some(record()));
        assert_eq!(store.build_record_manifests(), vec![m]);
        let mut newer = record();
        newer.version = BUILD_RECORD_VERSION + 1;
        store.put_build_record(&m, &newer).unwrap();
        assert_eq!(store.build_record(&m), None);
        store.remove_build_records_except(&BTreeSet::new()).unwrap();
        assert!(store.build_record_manifests().is_empty());
    }
}
