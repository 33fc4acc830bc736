//! kiln-insight: analysis of built images. It reads an image's layers from
//! the store (and, for an image kiln built, the build record kept beside it)
//! and measures: sizes per layer and per stage, what the multi-stage build
//! saved against the stage the final one copies most from, bytes hidden by
//! later layers (waste) and the efficiency score, the biggest directories and
//! files, and findings (secrets, devDependencies, sources, toolchains,
//! package-manager caches, USER root, set-uid and world-writable files), each
//! traced to its layer and Dockerfile line. It renders nothing: the [`Report`]
//! is data (serialized as `kiln analyze --format json`); text and HTML are the
//! CLI's. It does not parse Dockerfiles: lines and instructions come from the
//! build record.

pub mod findings;
pub mod fs;
pub mod layer;
pub mod packages;
pub mod report;
pub mod secrets;

pub use findings::{Finding, FindingKind, Severity};
pub use report::{analyze, image_packages, AnalyzeError, Report};
