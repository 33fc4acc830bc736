//! `kiln build --platform a,b,…`: one build per target platform, run at the
//! same time on one store (their common steps — a `FROM --platform=$BUILDPLATFORM`
//! stage before its `ARG TARGETARCH` — have the same cache keys, so the step
//! claim runs each once and the other build reuses it), and one image index
//! naming each platform's manifest.

use super::compose::{ServiceProgress, StepIds};
use kiln_builder::progress::{Clock, ProgressSink};
use kiln_builder::{BuildError, BuildOptions, BuildOutput};
use kiln_dockerfile::stages::{Plan, Platform};
use kiln_dockerfile::Source;
use kiln_oci::image::ManifestFormat;
use kiln_oci::index::{write_index_with, IndexEntry};
use kiln_oci::store::{BlobRef, Store};
use kiln_oci::Digest;
use miette::miette;
use std::collections::BTreeMap;

/// Runs each plan (one per platform) and returns their outputs in plan order.
/// With several, the builds run in parallel and each one's progress is named
/// by its platform (`[linux/arm64 build 3/6] RUN go build`, as BuildKit shows it).
pub(crate) fn build_all(
    plans: &[Plan],
    src: &Source,
    opts: &BuildOptions,
    store: &Store,
    progress: &dyn ProgressSink,
    clock: &Clock,
) -> Result<Vec<BuildOutput>, BuildError> {
    if let [plan] = plans {
        return Ok(vec![kiln_builder::build(plan, src, opts, store, progress)?]);
    }
    let names: Vec<String> = plans
        .iter()
        .map(|p| p.target_platform.to_string())
        .collect();
    let ids = StepIds::default();
    let results: Vec<Result<BuildOutput, BuildError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = plans
            .iter()
            .zip(&names)
            .enumerate()
            .map(|(index, (plan, name))| {
                let ids = &ids;
                scope.spawn(move || {
                    let sink = ServiceProgress::new(name, index, progress, ids, *clock);
                    kiln_builder::build(plan, src, opts, store, &sink)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(BuildError::Cancelled)))
            .collect()
    });
    let mut outs = Vec::with_capacity(results.len());
    let mut cancelled = None;
    for r in results {
        match r {
            Ok(out) => outs.push(out),
            Err(BuildError::Cancelled) => cancelled = Some(BuildError::Cancelled),
            Err(e) => return Err(e),
        }
    }
    match cancelled {
        Some(e) => Err(e),
        None => Ok(outs),
    }
}

/// The platform as an image index names it.
pub(crate) fn oci_platform(p: &Platform) -> kiln_oci::registry::Platform {
    kiln_oci::registry::Platform {
        os: p.os.clone(),
        architecture: p.arch.clone(),
        variant: (!p.variant.is_empty()).then(|| p.variant.clone()),
    }
}

/// Stores the OCI image index of a multi-platform build: one entry per
/// platform's manifest, in the order the platforms were given (with its
/// `manifest-descriptor:` annotations), then the attestation manifests (each
/// with the digest of the image it is about); `index:` annotations on the index.
pub(crate) fn write_platform_index(
    store: &Store,
    images: &[(Platform, BlobRef, BuildOutput)],
    attestations: &[(BlobRef, Digest)],
    descriptor_annotations: &[BTreeMap<String, String>],
    index_annotations: &BTreeMap<String, String>,
) -> miette::Result<BlobRef> {
    let mut entries: Vec<IndexEntry> = images
        .iter()
        .zip(descriptor_annotations)
        .map(|((platform, manifest, _), annotations)| {
            let mut manifest = manifest.clone();
            manifest.annotations.extend(annotations.clone());
            IndexEntry {
                manifest,
                platform: Some(oci_platform(platform)),
            }
        })
        .collect();
    entries.extend(
        attestations
            .iter()
            .map(|(a, subject)| IndexEntry::attestation(a.clone(), subject)),
    );
    write_index_with(store, &entries, ManifestFormat::Oci, index_annotations)
        .map_err(|e| miette!("storing the image index: {e}"))
}

/// A platform's directory in a multi-platform `-o type=local` output
/// (`linux_arm64`, `linux_arm_v7`), as BuildKit names it.
pub(crate) fn dir_name(p: &Platform) -> String {
    let mut s = format!("{}_{}", p.os, p.arch);
    if !p.variant.is_empty() {
        s.push('_');
        s.push_str(&p.variant);
    }
    s
}
