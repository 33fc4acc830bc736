//! Layers held as directories, and the blobs made from them.
//!
//! A build does not compress: a layer it makes is a directory (its snapshot, in
//! overlayfs upperdir format) plus the diff_id and size of the tar that directory
//! gives. The stored manifest names such a layer uncompressed, by its diff_id
//! (`application/vnd.oci.image.layer.v1.tar`, digest = diff_id, size = tar size),
//! and the blob under that digest need not exist: the store records where the
//! directory is. When an output needs blobs (an archive, a push), each such layer
//! is written from its directory with the compression asked for (see
//! [`crate::export::complete_image`]), and the blob is remembered per
//! compression, so a second export reuses it.
//!
//! ```text
//! layers/<diff_id hex>/local.json     {"dir": <path under the store root>, "size": N,
//!                                      "source_date_epoch": N|null}
//! layers/<diff_id hex>/<gzip-6|zstd-3|…>.json   the blob made with that compression
//! ```
//!
//! Records are written like blobs (temp file, rename), so a killed writer leaves
//! either the old record or the new one; a variant record is written only after
//! its blob is committed, and a record whose blob is gone is ignored.

use super::{create_temp, io_err, BlobRef, Result, Store};
use crate::digest::Digest;
use crate::layer::Compression;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A layer held as a directory ([`Store::local_layer`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalLayer {
    /// The directory (absolute), in overlayfs upperdir format.
    pub dir: PathBuf,
    /// Size of the layer's tar.
    pub size: u64,
    /// The `SOURCE_DATE_EPOCH` its tar was written with (entries' mtimes clamped).
    pub source_date_epoch: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct LocalRecord {
    dir: PathBuf,
    size: u64,
    source_date_epoch: Option<i64>,
}

/// The file name of a compression's variant record.
fn variant_name(c: Compression) -> String {
    match c {
        Compression::None => "uncompressed.json".into(),
        Compression::Gzip { level } => format!("gzip-{level}.json"),
        Compression::Zstd { level } => format!("zstd-{level}.json"),
    }
}

impl Store {
    pub(super) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layers_dir().join(diff_id.hex())
    }

    /// Writes a small record file: temp file, rename; fsynced unless blob
    /// syncs are deferred ([`Store::defer_sync`]: then the next sync covers it).
    fn write_record(&self, path: &Path, data: &[u8]) -> Result<()> {
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
        if !self.sync_deferred() {
            return self.write_atomic(path, data);
        }
        let (mut f, tmp) = create_temp(&self.tmp_dir(), "record")?;
        let res = f
            .write_all(data)
            .map_err(io_err("writing", &tmp))
            .and_then(|_| fs::rename(&tmp, path).map_err(io_err("renaming into", path)));
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    /// Records that the layer `diff_id` is the directory `dir` (inside the store
    /// root), whose tar is `size` bytes when written with `source_date_epoch`.
    pub fn record_local_layer(
        &self,
        diff_id: &Digest,
        dir: &Path,
        size: u64,
        source_date_epoch: Option<i64>,
    ) -> Result<()> {
        let rel = dir.strip_prefix(&self.root).unwrap_or(dir).to_path_buf();
        let rec = LocalRecord {
            dir: rel,
            size,
            source_date_epoch,
        };
        let data = serde_json::to_vec(&rec).unwrap_or_default();
        self.write_record(&self.layer_dir(diff_id).join("local.json"), &data)
    }

    /// The directory holding the layer `diff_id`, if the store has one recorded
    /// and it still exists.
    pub fn local_layer(&self, diff_id: &Digest) -> Option<LocalLayer> {
        let data = fs::read(self.layer_dir(diff_id).join("local.json")).ok()?;
        let rec: LocalRecord = serde_json::from_slice(&data).ok()?;
        let dir = self.root.join(rec.dir);
        dir.is_dir().then_some(LocalLayer {
            dir,
            size: rec.size,
            source_date_epoch: rec.source_date_epoch,
        })
    }

    /// Whether a layer descriptor's content is here: its blob, or (for an
    /// uncompressed descriptor, whose digest is the diff_id) a recorded directory.
    pub fn has_layer(&self, layer: &BlobRef) -> bool {
        self.has_blob(&layer.digest) || self.local_layer(&layer.digest).is_some()
    }

    /// The blob already made from the layer `diff_id` with `compression`, if it
    /// is still stored whole.
    pub fn layer_variant(&self, diff_id: &Digest, compression: Compression) -> Option<BlobRef> {
        let path = self.layer_dir(diff_id).join(variant_name(compression));
        let data = fs::read(path).ok()?;
        let blob: BlobRef = serde_json::from_slice(&data).ok()?;
        (self.blob_size(&blob.digest).ok()? == blob.size).then_some(blob)
    }

    /// Remembers `blob` (already committed) as the layer `diff_id` written with
    /// `compression`.
    pub fn record_layer_variant(
        &self,
        diff_id: &Digest,
        compression: Compression,
        blob: &BlobRef,
    ) -> Result<()> {
        let data = serde_json::to_vec(blob).unwrap_or_default();
        self.write_record(
            &self.layer_dir(diff_id).join(variant_name(compression)),
            &data,
        )
    }

    /// The blobs recorded as variants of the layer `diff_id` (for gc: they are
    /// kept while the layer is).
    pub(super) fn layer_variant_blobs(&self, diff_id: &Digest) -> Vec<Digest> {
        let Ok(rd) = fs::read_dir(self.layer_dir(diff_id)) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.file_name() != "local.json")
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|d| serde_json::from_slice::<BlobRef>(&d).ok())
            .map(|b| b.digest)
            .collect()
    }

    /// Removes the records of layers not in `keep` (under the exclusive lock).
    pub(super) fn remove_layer_records_except(&self, keep: &BTreeSet<Digest>) -> Result<()> {
        let dir = self.layers_dir();
        let Ok(rd) = fs::read_dir(&dir) else {
            return Ok(());
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let known = name
                .to_str()
                .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok())
                .is_some_and(|d| keep.contains(&d));
            if !known {
                let p = e.path();
                fs::remove_dir_all(&p).map_err(io_err("removing", &p))?;
            }
        }
        Ok(())
    }
}
