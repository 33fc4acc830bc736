//! The analysis of one stored image: [`analyze`] reads its layers (and those
//! of its build's other stages) once each and puts every measured figure in a
//! [`Report`], which `kiln analyze --format json` prints as it is.

use crate::findings::{self, Finding};
use crate::fs::{Hidden, Merged};
use crate::layer::{scan_layer, Change, Kind, LayerScan};
use crate::packages::{self, Package};
use kiln_oci::image::{media_type, Image};
use kiln_oci::layer::Compression;
use kiln_oci::store::{BuildRecord, StageRecord, StepResult, Store};
use kiln_oci::{BlobRef, Digest};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The JSON format's version (`"version"` of the report).
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("layer {digest} of {what} is not in the store any more")]
    LayerGone { digest: Digest, what: String },
    #[error("reading layer {digest}: {message}")]
    Read { digest: Digest, message: String },
}

/// Everything `kiln analyze` measured about an image.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub version: u32,
    pub image: ImageInfo,
    pub size: Sizes,
    pub layers: Vec<LayerInfo>,
    /// The build's stages (empty for an image kiln did not build).
    pub stages: Vec<StageInfo>,
    pub saving: Option<Saving>,
    pub waste: Waste,
    pub biggest: Biggest,
    pub findings: Vec<Finding>,
    /// The packages installed in the final image (what `kiln build --sbom` lists).
    pub packages: Vec<Package>,
    /// The final image's tree for the treemap: directories down to 1/500 of
    /// the total, the rest of each directory as one `…` entry.
    pub tree: TreeNode,
}

#[derive(Clone, Debug, Serialize)]
pub struct ImageInfo {
    pub name: String,
    pub id: String,
    pub manifest: String,
    pub user: String,
    /// The Dockerfile and target stage of its build, when kiln built it.
    pub dockerfile: Option<String>,
    pub stage: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sizes {
    /// As `kiln images` counts it: the config and the layers as stored (a
    /// layer kiln built is stored uncompressed).
    pub stored: u64,
    /// The layers' tars, uncompressed.
    pub unpacked: u64,
    /// The files the image shows (regular files, each once).
    pub files: u64,
    /// The config and every layer compressed (gzip as pushed), when every
    /// layer has a compressed blob; `None` when some are not compressed yet.
    pub compressed: Option<u64>,
    /// How many layers have no compressed blob yet (made at push/export).
    pub layers_not_compressed: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerInfo {
    pub index: usize,
    pub diff_id: String,
    /// Size as stored (the descriptor's size).
    pub stored_size: u64,
    pub unpacked_size: u64,
    pub compressed_size: Option<u64>,
    /// Bytes of the regular files this layer adds or replaces.
    pub files_size: u64,
    pub instruction: String,
    pub line: Option<usize>,
    pub stage: Option<String>,
    /// `ran`, `cached`, or `base` (came with the base image).
    pub result: String,
    pub duration_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageInfo {
    pub index: usize,
    pub name: String,
    pub from: String,
    pub line: usize,
    pub final_stage: bool,
    /// As `kiln images` would show the stage built with `--target`.
    pub stored_size: u64,
    pub unpacked_size: u64,
    /// The files its filesystem shows.
    pub files_size: u64,
    pub layers: usize,
    pub steps: Vec<StepInfo>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepInfo {
    pub instruction: String,
    pub line: usize,
    pub result: StepResult,
    pub duration_ms: u64,
    /// Size of the layer the step made, if it made one.
    pub layer_size: Option<u64>,
}

/// The final image against the stage a single-stage build would have shipped.
#[derive(Clone, Debug, Serialize)]
pub struct Saving {
    pub final_stage: String,
    pub compared_with: String,
    /// Why that stage: the final stage copies most bytes from it.
    pub copied_bytes: u64,
    pub final_stored: u64,
    pub stage_stored: u64,
    pub final_files: u64,
    pub stage_files: u64,
    /// `stage_stored - final_stored` (negative when the final image is bigger).
    pub saved: i64,
    pub saved_percent: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Waste {
    /// Bytes of file copies a later layer hid (each hidden copy once).
    pub wasted_bytes: u64,
    /// `visible / (visible + wasted)`; 1.0 when nothing is hidden.
    pub efficiency: f64,
    /// The paths wasting most, biggest first (at most 20).
    pub top: Vec<WastedPath>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WastedPath {
    pub path: String,
    /// Hidden copies and their bytes.
    pub copies: usize,
    pub wasted: u64,
    /// Still in the final image (else deleted).
    pub present: bool,
    pub layers: Vec<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Biggest {
    pub directories: Vec<PathSize>,
    pub files: Vec<PathSize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PathSize {
    pub path: String,
    pub size: u64,
    pub layer: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TreeNode {
    pub name: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TreeNode>,
}

/// Reads layers, each once.
/// The packages installed in `image`'s filesystem: the package records
/// (dpkg's status, `node_modules/**/package.json`, Python metadata, Go
/// binaries' build info) visible in its stacked layers, as [`packages::list`]
/// reads them. What `kiln build --sbom` lists.
pub fn image_packages(store: &Store, image: &Image) -> Result<Vec<Package>, AnalyzeError> {
    let mut layers = Layers {
        store,
        scans: HashMap::new(),
    };
    let diff_ids = &image.config.rootfs.diff_ids;
    let mut merged = Merged::new();
    let mut scans = Vec::new();
    for (i, blob) in image.layers.iter().enumerate() {
        let diff_id = diff_ids.get(i).copied().unwrap_or(blob.digest);
        let scan = layers.get(blob, &diff_id, "the image")?;
        merged.apply(i, &scan);
        scans.push(scan);
    }
    Ok(visible_packages(&merged, &scans))
}

/// The packages the records visible in `merged` name (layer `i` read as `scans[i]`).
fn visible_packages(merged: &Merged, scans: &[Arc<LayerScan>]) -> Vec<Package> {
    let mut manifests: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (path, node) in &merged.nodes {
        if let Some(data) = scans.get(node.layer).and_then(|s| s.manifests.get(path)) {
            manifests.insert(path.clone(), data.clone());
        }
    }
    packages::list(&manifests)
}

struct Layers<'a> {
    store: &'a Store,
    scans: HashMap<Digest, Arc<LayerScan>>,
}

impl Layers<'_> {
    fn get(
        &mut self,
        blob: &BlobRef,
        diff_id: &Digest,
        what: &str,
    ) -> Result<Arc<LayerScan>, AnalyzeError> {
        if let Some(s) = self.scans.get(diff_id) {
            return Ok(s.clone());
        }
        let read = |e: &dyn std::fmt::Display| AnalyzeError::Read {
            digest: *diff_id,
            message: e.to_string(),
        };
        let scan = if self.store.has_blob(&blob.digest) {
            let f = self.store.open_blob(&blob.digest).map_err(|e| read(&e))?;
            let r =
                kiln_oci::layer::decompressed(std::io::BufReader::new(f)).map_err(|e| read(&e))?;
            scan_layer(r).map_err(|e| read(&e))?
        } else if let Some(local) = self.store.local_layer(&blob.digest) {
            let r = kiln_oci::export::local_layer_tar(blob.digest, &local).map_err(|e| read(&e))?;
            scan_layer(r).map_err(|e| read(&e))?
        } else {
            return Err(AnalyzeError::LayerGone {
                digest: blob.digest,
                what: what.to_string(),
            });
        };
        let scan = Arc::new(scan);
        self.scans.insert(*diff_id, scan.clone());
        Ok(scan)
    }
}

fn files_size(scan: &LayerScan) -> u64 {
    scan.changes
        .iter()
        .map(|c| match c {
            Change::Put(e) if e.kind == Kind::File => e.size,
            _ => 0,
        })
        .sum()
}

/// The compressed size of a layer: its blob's if that is compressed, else a
/// compressed blob made from it before (by an export or a push).
fn compressed_size(store: &Store, blob: &BlobRef) -> Option<u64> {
    if !media_type::is_uncompressed_layer(&blob.media_type) {
        return Some(blob.size);
    }
    [Compression::default(), Compression::Zstd { level: 3 }]
        .into_iter()
        .find_map(|c| store.layer_variant(&blob.digest, c))
        .map(|b| b.size)
}

/// Where a layer of `stage` came from: (stage, step) of the build record,
/// following base stages; `None` for a base image's layer.
fn origin_of<'r>(
    record: &'r BuildRecord,
    stage: &'r StageRecord,
    diff_id: &Digest,
) -> Option<(&'r StageRecord, usize)> {
    let l = stage.layers.iter().find(|l| &l.diff_id == diff_id)?;
    match l.step {
        Some(s) => Some((stage, s)),
        None => {
            let base = record.stage(stage.base_stage?)?;
            origin_of(record, base, diff_id)
        }
    }
}

/// The stage whose FROM brought in a base image layer.
fn from_stage<'r>(record: &'r BuildRecord, stage: &'r StageRecord) -> &'r StageRecord {
    match stage.base_stage.and_then(|b| record.stage(b)) {
        Some(b) => from_stage(record, b),
        None => stage,
    }
}

/// Analyzes the stored image `image` named `name`, with its build record if it has one.
pub fn analyze(store: &Store, image: &Image, name: &str) -> Result<Report, AnalyzeError> {
    let record = store.build_record(&image.manifest_ref.digest);
    let mut layers = Layers {
        store,
        scans: HashMap::new(),
    };
    let diff_ids = &image.config.rootfs.diff_ids;
    let target = record.as_ref().and_then(|r| r.target_stage());
    // The final image.
    let mut merged = Merged::new();
    let mut scans = Vec::new();
    for (i, blob) in image.layers.iter().enumerate() {
        let diff_id = diff_ids.get(i).copied().unwrap_or(blob.digest);
        let scan = layers.get(blob, &diff_id, "the image")?;
        merged.apply(i, &scan);
        scans.push(scan);
    }
    // History entries that made layers, for an image without a build record.
    let history: Vec<String> = image
        .config
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .map(|h| h.created_by.clone().unwrap_or_default())
        .collect();
    let mut layer_infos = Vec::new();
    for (i, blob) in image.layers.iter().enumerate() {
        let diff_id = diff_ids.get(i).copied().unwrap_or(blob.digest);
        let scan = &scans[i];
        let mut info = LayerInfo {
            index: i,
            diff_id: diff_id.to_string(),
            stored_size: blob.size,
            unpacked_size: scan.tar_size,
            compressed_size: compressed_size(store, blob),
            files_size: files_size(scan),
            instruction: history.get(i).cloned().unwrap_or_default(),
            line: None,
            stage: None,
            result: "base".into(),
            duration_ms: None,
        };
        if let (Some(rec), Some(t)) = (&record, target) {
            match origin_of(rec, t, &diff_id) {
                Some((st, s)) => {
                    let step = &st.steps[s];
                    info.instruction = step.instruction.clone();
                    info.line = Some(step.line);
                    info.stage = Some(st.name.clone());
                    info.result = match step.result {
                        StepResult::Cached => "cached".into(),
                        _ => "ran".into(),
                    };
                    info.duration_ms = Some(step.duration_ms);
                }
                None => {
                    let st = from_stage(rec, t);
                    info.instruction = st.from.clone();
                    info.line = Some(st.from_line);
                    info.stage = Some(st.name.clone());
                }
            }
        }
        layer_infos.push(info);
    }
    // The stages.
    let mut stages = Vec::new();
    let mut stage_files: BTreeMap<usize, u64> = BTreeMap::new();
    if let Some(rec) = &record {
        for st in &rec.stages {
            let is_final = st.index == rec.target;
            let (files, unpacked) = if is_final {
                (
                    merged.visible_bytes(),
                    scans.iter().map(|s| s.tar_size).sum(),
                )
            } else {
                let mut m = Merged::new();
                let mut unpacked = 0;
                for (i, l) in st.layers.iter().enumerate() {
                    let scan = layers.get(&l.blob, &l.diff_id, &format!("stage {}", st.name))?;
                    unpacked += scan.tar_size;
                    m.apply(i, &scan);
                }
                (m.visible_bytes(), unpacked)
            };
            stage_files.insert(st.index, files);
            let stored_size = if is_final {
                image.stored_size()
            } else {
                st.config_size + st.layers.iter().map(|l| l.blob.size).sum::<u64>()
            };
            let steps = st
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| StepInfo {
                    instruction: s.instruction.clone(),
                    line: s.line,
                    result: s.result,
                    duration_ms: s.duration_ms,
                    layer_size: st
                        .layers
                        .iter()
                        .find(|l| l.step == Some(i))
                        .and_then(|l| layers.scans.get(&l.diff_id))
                        .map(|s| s.tar_size),
                })
                .collect();
            stages.push(StageInfo {
                index: st.index,
                name: st.name.clone(),
                from: st.from.clone(),
                line: st.from_line,
                final_stage: is_final,
                stored_size,
                unpacked_size: unpacked,
                files_size: files,
                layers: st.layers.len(),
                steps,
            });
        }
    }
    let saving = record.as_ref().and_then(|rec| {
        let t = rec.target_stage()?;
        // Bytes the final stage copies from each stage.
        let mut copied: BTreeMap<usize, u64> = BTreeMap::new();
        for (i, step) in t.steps.iter().enumerate() {
            let Some(from) = step.from_stage else {
                continue;
            };
            let bytes: u64 = t
                .layers
                .iter()
                .filter(|l| l.step == Some(i))
                .filter_map(|l| layers.scans.get(&l.diff_id))
                .map(|s| files_size(s))
                .sum();
            *copied.entry(from).or_insert(0) += bytes;
        }
        let (&from, &bytes) = copied.iter().max_by_key(|(i, b)| (**b, usize::MAX - **i))?;
        let fin = stages.iter().find(|s| s.final_stage)?;
        let other = stages.iter().find(|s| s.index == from)?;
        let saved = other.stored_size as i64 - fin.stored_size as i64;
        Some(Saving {
            final_stage: fin.name.clone(),
            compared_with: other.name.clone(),
            copied_bytes: bytes,
            final_stored: fin.stored_size,
            stage_stored: other.stored_size,
            final_files: fin.files_size,
            stage_files: other.files_size,
            saved,
            saved_percent: if other.stored_size == 0 {
                0.0
            } else {
                saved as f64 * 100.0 / other.stored_size as f64
            },
        })
    });
    // Waste.
    let mut by_path: BTreeMap<&str, Vec<&Hidden>> = BTreeMap::new();
    for h in &merged.hidden {
        by_path.entry(&h.path).or_default().push(h);
    }
    let mut top: Vec<WastedPath> = by_path
        .into_iter()
        .map(|(p, hs)| WastedPath {
            path: format!("/{p}"),
            copies: hs.len(),
            wasted: hs.iter().map(|h| h.size).sum(),
            present: merged.nodes.contains_key(p),
            layers: hs.iter().map(|h| h.layer).collect(),
        })
        .filter(|w| w.wasted > 0)
        .collect();
    top.sort_by(|a, b| b.wasted.cmp(&a.wasted).then(a.path.cmp(&b.path)));
    top.truncate(20);
    let waste = Waste {
        wasted_bytes: merged.wasted_bytes(),
        efficiency: merged.efficiency(),
        top,
    };
    // Biggest directories and files.
    let dirs = merged.dir_sizes();
    let mut directories: Vec<PathSize> = dirs
        .iter()
        .filter(|(p, _)| !p.is_empty())
        .map(|(p, s)| PathSize {
            path: format!("/{p}"),
            size: *s,
            layer: None,
        })
        .collect();
    directories.sort_by(|a, b| b.size.cmp(&a.size).then(a.path.cmp(&b.path)));
    directories.truncate(15);
    let mut files: Vec<PathSize> = merged
        .nodes
        .iter()
        .filter(|(_, n)| n.entry.kind == Kind::File)
        .map(|(p, n)| PathSize {
            path: format!("/{p}"),
            size: n.entry.size,
            layer: Some(n.layer),
        })
        .collect();
    files.sort_by(|a, b| b.size.cmp(&a.size).then(a.path.cmp(&b.path)));
    files.truncate(15);
    // Findings, traced to their Dockerfile line.
    let user = image
        .config
        .config
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    let scan_refs: Vec<&LayerScan> = scans.iter().map(|s| s.as_ref()).collect();
    let mut found = findings::find(&merged, &scan_refs, &user);
    for f in &mut found {
        if let Some(l) = f.layer.and_then(|l| layer_infos.get(l)) {
            f.line = l.line;
            f.instruction = Some(l.instruction.clone());
            f.stage = l.stage.clone();
        } else if f.kind == findings::FindingKind::Root {
            if let Some(t) = target {
                let user_step = t
                    .steps
                    .iter()
                    .rev()
                    .find(|s| s.instruction.to_ascii_uppercase().starts_with("USER"));
                let st = from_stage(record.as_ref().expect("target implies a record"), t);
                let (line, instr) = match user_step {
                    Some(s) => (s.line, s.instruction.clone()),
                    None => (st.from_line, st.from.clone()),
                };
                f.line = Some(line);
                f.instruction = Some(instr);
                f.stage = Some(t.name.clone());
            }
        }
    }
    let compressed: Vec<Option<u64>> = layer_infos.iter().map(|l| l.compressed_size).collect();
    let size = Sizes {
        stored: image.stored_size(),
        unpacked: scans.iter().map(|s| s.tar_size).sum(),
        files: merged.visible_bytes(),
        compressed: compressed
            .iter()
            .copied()
            .sum::<Option<u64>>()
            .map(|s| s + image.config_ref.size),
        layers_not_compressed: compressed.iter().filter(|c| c.is_none()).count(),
    };
    let tree = tree_of(&dirs, &merged, size.files);
    Ok(Report {
        version: REPORT_VERSION,
        image: ImageInfo {
            name: name.to_string(),
            id: image.id().to_string(),
            manifest: image.manifest_ref.digest.to_string(),
            user,
            dockerfile: record.as_ref().map(|r| r.dockerfile.clone()),
            stage: target.map(|t| t.name.clone()),
        },
        size,
        layers: layer_infos,
        stages,
        saving,
        waste,
        biggest: Biggest { directories, files },
        findings: found,
        packages: visible_packages(&merged, &scans),
        tree,
    })
}

/// The treemap's tree: entries of at least `total / 500` bytes, to depth 12.
fn tree_of(dirs: &BTreeMap<String, u64>, merged: &Merged, total: u64) -> TreeNode {
    let min = (total / 500).max(1);
    // Children of each directory: (name, size, is_dir).
    let mut children: BTreeMap<&str, Vec<(&str, u64, bool)>> = BTreeMap::new();
    for (p, n) in &merged.nodes {
        let (parent, base) = p.rsplit_once('/').unwrap_or(("", p));
        let size = match n.entry.kind {
            Kind::Dir => dirs.get(p).copied().unwrap_or(0),
            Kind::File => n.entry.size,
            _ => continue,
        };
        children
            .entry(parent)
            .or_default()
            .push((base, size, n.entry.kind == Kind::Dir));
    }
    // Directories only implied by their files' paths (no entry of their own).
    for (d, size) in dirs {
        if !d.is_empty() && !merged.nodes.contains_key(d) {
            let (parent, base) = d.rsplit_once('/').unwrap_or(("", d));
            children
                .entry(parent)
                .or_default()
                .push((base, *size, true));
        }
    }
    fn build(
        path: &str,
        name: &str,
        size: u64,
        depth: usize,
        min: u64,
        children: &BTreeMap<&str, Vec<(&str, u64, bool)>>,
    ) -> TreeNode {
        let mut node = TreeNode {
            name: name.to_string(),
            size,
            children: Vec::new(),
        };
        if depth >= 12 {
            return node;
        }
        let mut rest = 0;
        for (base, s, is_dir) in children.get(path).into_iter().flatten() {
            if *s < min {
                rest += s;
                continue;
            }
            let child_path = if path.is_empty() {
                base.to_string()
            } else {
                format!("{path}/{base}")
            };
            if *is_dir {
                node.children
                    .push(build(&child_path, base, *s, depth + 1, min, children));
            } else {
                node.children.push(TreeNode {
                    name: base.to_string(),
                    size: *s,
                    children: Vec::new(),
                });
            }
        }
        node.children.sort_by_key(|c| std::cmp::Reverse(c.size));
        if rest > 0 && !node.children.is_empty() {
            node.children.push(TreeNode {
                name: "…".into(),
                size: rest,
                children: Vec::new(),
            });
        }
        node
    }
    build("", "/", total, 0, min, &children)
}
