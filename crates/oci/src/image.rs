//! The image model: config, manifest and index, in OCI and Docker v2 schema 2 form.
//!
//! Manifests and indexes use `oci-spec`'s types. The config is kiln's own serde
//! struct ([`ImageConfig`]) because `oci-spec`'s `ImageConfiguration` has no place for
//! the docker-format fields kiln must keep (Healthcheck, OnBuild, Shell); fields
//! kiln does not know are carried in `extra` maps so a config round-trips intact.
//! Everything written goes through [`canonical_json`], so the same image always
//! has the same digests.

use crate::canonical_json::canonical_json;
use crate::digest::Digest;
use crate::store::{BlobRef, Result, Store, StoreError};
use oci_spec::image::{Descriptor, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub use crate::descriptor::{media_type, referenced_blobs};

/// Which family of media types a manifest uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    /// `application/vnd.oci.image.manifest.v1+json`
    Oci,
    /// Docker v2 schema 2 (`application/vnd.docker.distribution.manifest.v2+json`).
    Docker,
}

impl ManifestFormat {
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => media_type::OCI_MANIFEST,
            ManifestFormat::Docker => media_type::DOCKER_MANIFEST,
        }
    }
    pub fn config_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => media_type::OCI_CONFIG,
            ManifestFormat::Docker => media_type::DOCKER_CONFIG,
        }
    }
}

/// How a layer blob is compressed, as named by its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

impl LayerCompression {
    pub fn of_media_type(mt: &str) -> Option<LayerCompression> {
        use media_type::*;
        match mt {
            OCI_LAYER | DOCKER_LAYER => Some(LayerCompression::None),
            OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Some(LayerCompression::Gzip),
            OCI_LAYER_ZSTD => Some(LayerCompression::Zstd),
            _ => None,
        }
    }
    /// Recognise compression from the first bytes of a blob.
    pub fn sniff(head: &[u8]) -> LayerCompression {
        if head.starts_with(&[0x1f, 0x8b]) {
            LayerCompression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            LayerCompression::Zstd
        } else {
            LayerCompression::None
        }
    }
    /// The layer media type for this compression in `format`; Docker schema 2 has no zstd.
    pub fn media_type(self, format: ManifestFormat) -> Option<&'static str> {
        use media_type::*;
        Some(match (format, self) {
            (ManifestFormat::Oci, LayerCompression::None) => OCI_LAYER,
            (ManifestFormat::Oci, LayerCompression::Gzip) => OCI_LAYER_GZIP,
            (ManifestFormat::Oci, LayerCompression::Zstd) => OCI_LAYER_ZSTD,
            (ManifestFormat::Docker, LayerCompression::None) => DOCKER_LAYER,
            (ManifestFormat::Docker, LayerCompression::Gzip) => DOCKER_LAYER_GZIP,
            (ManifestFormat::Docker, LayerCompression::Zstd) => return None,
        })
    }
}

/// Reads JSON `null` as the empty value: docker writes `"Volumes": null`,
/// `"Env": null`, `"Labels": null`, … in the configs of imported and committed
/// images (`docker import`, `docker commit`, older builders).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An image config blob (OCI image config, with docker's extra fields).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub history: Vec<History>,
    /// Fields kiln does not interpret (e.g. docker's `container_config`), kept as-is.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The execution parameters of an image (`config` in the image config JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub exposed_ports: BTreeMap<String, EmptyObject>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub volumes: BTreeMap<String, EmptyObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// Docker format only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// Docker format only: triggers run when this image is used in `FROM`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub on_build: Vec<String>,
    /// Docker format only: the shell for shell-form instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `{}`: the value type of ExposedPorts and Volumes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyObject {}

/// Docker's HEALTHCHECK settings; durations are nanoseconds as in docker's JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    /// `null` (BuildKit's for an image without layers) reads as none.
    #[serde(default, deserialize_with = "null_as_default")]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry; `empty_layer` entries add no layer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub empty_layer: bool,
}

impl ImageConfig {
    /// An empty config for the given platform (`linux`, `amd64`).
    pub fn new(os: &str, architecture: &str) -> ImageConfig {
        ImageConfig {
            os: os.to_string(),
            architecture: architecture.to_string(),
            ..ImageConfig::default()
        }
    }

    /// A config for the platform kiln runs on.
    pub fn for_host() -> ImageConfig {
        ImageConfig::new("linux", host_architecture())
    }

    /// The canonical bytes of this config (what is stored and hashed).
    pub fn to_bytes(&self) -> Vec<u8> {
        canonical_json(self)
    }

    pub fn from_bytes(data: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        serde_json::from_slice(data)
    }
}

/// The GOARCH name of the machine kiln runs on.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

pub(crate) fn blob_ref_of(d: &Descriptor) -> std::result::Result<BlobRef, String> {
    let digest: Digest = d
        .digest()
        .to_string()
        .parse()
        .map_err(|e: crate::digest::DigestParseError| e.to_string())?;
    Ok(BlobRef {
        media_type: d.media_type().to_string(),
        digest,
        size: d.size(),
        annotations: d
            .annotations()
            .as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    })
}

pub(crate) fn descriptor_of(b: &BlobRef) -> Descriptor {
    let digest: oci_spec::image::Digest = b
        .digest
        .to_string()
        .parse()
        .expect("a sha256 digest is a valid OCI digest");
    let mut d = Descriptor::new(MediaType::from(b.media_type.as_str()), b.size, digest);
    if !b.annotations.is_empty() {
        d.set_annotations(Some(
            b.annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    d
}

/// Build a manifest for `config` and `layers` (base layer first) in `format`.
/// Layer media types are translated to `format`'s family.
pub fn build_manifest(
    config: &BlobRef,
    layers: &[BlobRef],
    format: ManifestFormat,
) -> std::result::Result<ImageManifest, String> {
    let mut config = config.clone();
    config.media_type = format.config_media_type().to_string();
    let mut descs = Vec::with_capacity(layers.len());
    for l in layers {
        let comp = LayerCompression::of_media_type(&l.media_type)
            .ok_or_else(|| format!("unknown layer media type {:?}", l.media_type))?;
        let mt = comp.media_type(format).ok_or_else(|| {
            "zstd-compressed layers cannot be described by a Docker schema 2 manifest".to_string()
        })?;
        let mut l = l.clone();
        l.media_type = mt.to_string();
        descs.push(descriptor_of(&l));
    }
    oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(format.manifest_media_type()))
        .config(descriptor_of(&config))
        .layers(descs)
        .build()
        .map_err(|e| e.to_string())
}

/// Store a config and a manifest for already-stored `layers`; returns the manifest's
/// descriptor (to tag). Same inputs, same digests. A layer is stored when its blob
/// is, or when it is an uncompressed layer the store holds as a directory
/// ([`Store::local_layer`]): its blob is made when an output needs it.
pub fn write_image(
    store: &Store,
    config: &ImageConfig,
    layers: &[BlobRef],
    format: ManifestFormat,
) -> Result<BlobRef> {
    write_image_with(store, config, layers, format, &BTreeMap::new(), &|_| false)
}

/// [`write_image`] with the manifest's `annotations` (`kiln build
/// --annotation`; none: the same manifest as `write_image`), where a layer the
/// store lacks but `elsewhere` holds (a layer left in a registry: `kiln build
/// --push` of layers only a registry build cache had) may be named too.
pub fn write_image_with(
    store: &Store,
    config: &ImageConfig,
    layers: &[BlobRef],
    format: ManifestFormat,
    annotations: &BTreeMap<String, String>,
    elsewhere: &dyn Fn(&Digest) -> bool,
) -> Result<BlobRef> {
    for l in layers {
        if !store.has_layer(l) && !elsewhere(&l.digest) {
            return Err(StoreError::BlobNotFound(l.digest));
        }
    }
    let config_bytes = config.to_bytes();
    let config_digest = store.put_blob(&config_bytes)?;
    let config_ref = BlobRef {
        media_type: format.config_media_type().to_string(),
        digest: config_digest,
        size: config_bytes.len() as u64,
        annotations: BTreeMap::new(),
    };
    write_manifest(store, &config_ref, layers, format, annotations)
}

/// Store the manifest for a stored config and `layers` (not checked here).
pub(crate) fn write_manifest(
    store: &Store,
    config_ref: &BlobRef,
    layers: &[BlobRef],
    format: ManifestFormat,
    annotations: &BTreeMap<String, String>,
) -> Result<BlobRef> {
    let mut manifest =
        build_manifest(config_ref, layers, format).map_err(|message| StoreError::Malformed {
            what: "image config",
            digest: config_ref.digest,
            message,
        })?;
    if !annotations.is_empty() {
        manifest.set_annotations(Some(annotations.clone().into_iter().collect()));
    }
    let bytes = canonical_json(&manifest);
    let digest = store.put_blob(&bytes)?;
    Ok(BlobRef {
        media_type: format.manifest_media_type().to_string(),
        digest,
        size: bytes.len() as u64,
        annotations: BTreeMap::new(),
    })
}

/// An image read back from the store.
#[derive(Clone, Debug)]
pub struct Image {
    /// The manifest's descriptor.
    pub manifest_ref: BlobRef,
    pub manifest: ImageManifest,
    pub config_ref: BlobRef,
    pub config: ImageConfig,
    /// Layer descriptors, base layer first.
    pub layers: Vec<BlobRef>,
}

impl Image {
    /// Docker's image id: the config digest.
    pub fn id(&self) -> Digest {
        self.config_ref.digest
    }
    /// Bytes the image's blobs take in the store (config + layers as stored).
    pub fn stored_size(&self) -> u64 {
        self.config_ref.size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// Parses an image manifest. `"layers": null` is read as no layers: BuildKit
/// writes it for an image without any (`FROM scratch` and only metadata).
pub fn parse_manifest(data: &[u8]) -> std::result::Result<ImageManifest, String> {
    let mut v: serde_json::Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    if let Some(layers) = v.get_mut("layers").filter(|l| l.is_null()) {
        *layers = serde_json::Value::Array(Vec::new());
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// Read the image `target` names. An index resolves to its manifest for this host's
/// platform (else its first image manifest).
pub fn load_image(store: &Store, target: &BlobRef) -> Result<Image> {
    load_image_for(store, target, None)
}

/// Read the image `target` names for `platform`: an index resolves to its
/// manifest for that platform (an error naming the platforms it has when it has
/// none); `None` means the host's, falling back to the index's first image
/// manifest. A manifest is the image whatever its platform.
pub fn load_image_for(
    store: &Store,
    target: &BlobRef,
    platform: Option<&crate::registry::Platform>,
) -> Result<Image> {
    let malformed = |digest: Digest, message: String| StoreError::Malformed {
        what: "manifest",
        digest,
        message,
    };
    let mut target = target.clone();
    for _ in 0..4 {
        if media_type::is_index(&target.media_type) {
            let entries = crate::index::read_index(store, &target)?;
            let host = crate::registry::Platform::host();
            let chosen = match platform {
                Some(p) => crate::index::choose(&entries, p).ok_or_else(|| {
                    malformed(
                        target.digest,
                        format!(
                            "no image for platform {p} (the index has {})",
                            listed(&crate::index::platforms(&entries))
                        ),
                    )
                })?,
                None => crate::index::choose(&entries, &host)
                    .or_else(|| entries.iter().find(|e| e.is_image()))
                    .or_else(|| entries.first())
                    .ok_or_else(|| {
                        malformed(target.digest, "the index lists no manifest".into())
                    })?,
            };
            target = chosen.manifest.clone();
            continue;
        }
        let data = store.read_blob(&target.digest)?;
        let manifest = parse_manifest(&data).map_err(|e| malformed(target.digest, e))?;
        let config_ref = blob_ref_of(manifest.config()).map_err(|m| malformed(target.digest, m))?;
        let layers = manifest
            .layers()
            .iter()
            .map(blob_ref_of)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|m| malformed(target.digest, m))?;
        let config_bytes = store.read_blob(&config_ref.digest)?;
        let config = ImageConfig::from_bytes(&config_bytes).map_err(|e| StoreError::Malformed {
            what: "image config",
            digest: config_ref.digest,
            message: e.to_string(),
        })?;
        return Ok(Image {
            manifest_ref: target,
            manifest,
            config_ref,
            config,
            layers,
        });
    }
    Err(malformed(target.digest, "indexes nested too deeply".into()))
}

/// Every image `target` names: the image of a manifest, or each platform's
/// image of an index (attestations left out), in index order.
pub fn load_all_images(store: &Store, target: &BlobRef) -> Result<Vec<Image>> {
    if !media_type::is_index(&target.media_type) {
        return Ok(vec![load_image(store, target)?]);
    }
    let mut out = Vec::new();
    for e in crate::index::read_index(store, target)? {
        if e.is_image() && media_type::is_manifest(&e.manifest.media_type) {
            out.push(load_image(store, &e.manifest)?);
        }
    }
    Ok(out)
}

fn listed(platforms: &[String]) -> String {
    if platforms.is_empty() {
        "none".to_string()
    } else {
        platforms.join(", ")
    }
}

/// The platform an image config says it is for (`os/arch[/variant]`).
pub fn config_platform(config: &ImageConfig) -> crate::registry::Platform {
    crate::registry::Platform {
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        variant: config.variant.clone(),
    }
}

const DAYS_BEFORE_MONTH: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Days since 1970-01-01 (proleptic Gregorian).
    let y0 = y - 1;
    let days_before_year =
        365 * (y0 - 1969) + (y0 / 4 - 1969 / 4) - (y0 / 100 - 1969 / 100) + (y0 / 400 - 1969 / 400);
    let leap = if m > 2 && is_leap(y) { 1 } else { 0 };
    days_before_year + DAYS_BEFORE_MONTH[(m - 1) as usize] + leap + d - 1
}

/// Format Unix seconds as RFC 3339 UTC (`2024-01-02T03:04:05Z`), as image configs use.
pub fn format_rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86400);
    let secs = unix.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Parse an RFC 3339 timestamp (as found in image configs) to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(|c| c.is_ascii_digit()).count();
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hh: i64 = rest.get(1..3)?.parse().ok()?;
            let mm: i64 = rest.get(4..6)?.parse().ok()?;
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (hh * 3600 + mm * 60)
        }
    };
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_CONFIG_JSON: &str = r#"{
      "architecture": "amd64",
      "os": "linux",
      "created": "2024-05-06T07:08:09.123456789Z",
      "author": "someone",
      "container_config": {"Hostname": "abc"},
      "docker_version": "24.0.7",
      "config": {
        "User": "1000:1000",
        "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
        "Env": ["PATH=/usr/bin:/bin", "A=b"],
        "Entrypoint": ["/entry"],
        "Cmd": ["serve", "--port", "80"],
        "Volumes": {"/data": {}},
        "WorkingDir": "/app",
        "Labels": {"org.example": "yes"},
        "StopSignal": "SIGQUIT",
        "Healthcheck": {"Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 30000000000,
                        "Timeout": 5000000000, "StartPeriod": 1000000000, "Retries": 3},
        "OnBuild": ["RUN echo child"],
        "Shell": ["/bin/bash", "-c"],
        "Hostname": "kept-unknown-field"
      },
      "rootfs": {"type": "layers", "diff_ids": [
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},
      "history": [
        {"created": "2024-05-06T07:08:09Z", "created_by": "ADD rootfs /", "comment": "base"},
        {"created": "2024-05-06T07:08:10Z", "created_by": "ENV A=b", "empty_layer": true}
      ]
    }"#;

    /// The config `docker import` writes (dockerd 20.10): null instead of empty
    /// maps and lists.
    const DOCKER_IMPORT_CONFIG_JSON: &str = r#"{"architecture":"amd64","comment":"Imported from -",
      "config":{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"Tty":false,
        "Env":["NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt"],"Cmd":null,"Image":"",
        "Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null,
        "ExposedPorts":null,"Healthcheck":{"Test":null}},
      "container_config":{"Env":null,"Cmd":null,"Volumes":null,"Labels":null},
      "created":"2026-11-26T23:17:35.410341742Z","docker_version":"20.10.24+dfsg1",
      "history":[{"created":"2026-11-26T23:17:35.410341742Z","comment":"Imported from -"}],
      "os":"linux","rootfs":{"type":"layers","diff_ids":[
        "sha256:5135881b44a73690d9c7713d8cf3c9ce86b3bce8f49644e385fd7800ba58d63b"]}}"#;

    #[test]
    fn docker_import_config_with_nulls_reads_as_empty() {
        let c = ImageConfig::from_bytes(DOCKER_IMPORT_CONFIG_JSON.as_bytes()).unwrap();
        let cc = c.config.as_ref().unwrap();
        assert_eq!(
            cc.env,
            ["NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt"]
        );
        assert!(cc.volumes.is_empty());
        assert!(cc.labels.is_empty());
        assert!(cc.on_build.is_empty());
        assert!(cc.exposed_ports.is_empty());
        assert_eq!(cc.cmd, None);
        assert_eq!(cc.entrypoint, None);
        assert!(cc.healthcheck.as_ref().unwrap().test.is_empty());
        assert_eq!(c.history.len(), 1);
        let with_null_history = r#"{"architecture":"amd64","os":"linux","history":null,
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = ImageConfig::from_bytes(with_null_history.as_bytes()).unwrap();
        assert!(c.history.is_empty());
    }

    #[test]
    fn docker_config_round_trips_with_extras() {
        let c = ImageConfig::from_bytes(DOCKER_CONFIG_JSON.as_bytes()).unwrap();
        let cc = c.config.as_ref().unwrap();
        let hc = cc.healthcheck.as_ref().unwrap();
        assert_eq!(hc.test, ["CMD-SHELL", "curl -f localhost"]);
        assert_eq!(hc.interval, Some(30_000_000_000));
        assert_eq!(hc.retries, Some(3));
        assert_eq!(cc.on_build, ["RUN echo child"]);
        assert_eq!(
            cc.shell.as_deref(),
            Some(&["/bin/bash".to_string(), "-c".into()][..])
        );
        assert_eq!(cc.user.as_deref(), Some("1000:1000"));
        assert_eq!(cc.exposed_ports.len(), 2);
        assert_eq!(cc.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(cc.extra["Hostname"], "kept-unknown-field");
        assert_eq!(c.extra["docker_version"], "24.0.7");
        assert!(c.history[1].empty_layer);
        assert!(!c.history[0].empty_layer);
        assert_eq!(c.rootfs.diff_ids.len(), 1);

        // Serialise → parse gives the same value; and the JSON keeps every field.
        let bytes = c.to_bytes();
        let back = ImageConfig::from_bytes(&bytes).unwrap();
        assert_eq!(back, c);
        let original: Value = serde_json::from_str(DOCKER_CONFIG_JSON).unwrap();
        let written: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(written, original);
        // Canonical: serialising again is byte-identical.
        assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn minimal_config_omits_empty_fields() {
        let mut c = ImageConfig::new("linux", "arm64");
        c.rootfs.diff_ids.push(Digest::of(b"x"));
        let s = String::from_utf8(c.to_bytes()).unwrap();
        assert_eq!(
            s,
            format!(
                r#"{{"architecture":"arm64","os":"linux","rootfs":{{"diff_ids":["{}"],"type":"layers"}}}}"#,
                Digest::of(b"x")
            )
        );
    }

    fn layer(mt: &str, data: &[u8]) -> BlobRef {
        BlobRef {
            media_type: mt.into(),
            digest: Digest::of(data),
            size: data.len() as u64,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn manifests_use_the_right_media_types() {
        let cfg = layer(media_type::OCI_CONFIG, b"{}");
        let layers = [
            layer(media_type::OCI_LAYER_GZIP, b"l1"),
            layer(media_type::OCI_LAYER, b"l2"),
        ];
        let m = build_manifest(&cfg, &layers, ManifestFormat::Docker).unwrap();
        let v: Value = serde_json::from_slice(&canonical_json(&m)).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], media_type::DOCKER_MANIFEST);
        assert_eq!(v["config"]["mediaType"], media_type::DOCKER_CONFIG);
        assert_eq!(v["layers"][0]["mediaType"], media_type::DOCKER_LAYER_GZIP);
        assert_eq!(v["layers"][1]["mediaType"], media_type::DOCKER_LAYER);
        assert_eq!(v["layers"][0]["digest"], Digest::of(b"l1").to_string());
        assert_eq!(v["layers"][0]["size"], 2);

        let m = build_manifest(&cfg, &layers, ManifestFormat::Oci).unwrap();
        let v: Value = serde_json::from_slice(&canonical_json(&m)).unwrap();
        assert_eq!(v["mediaType"], media_type::OCI_MANIFEST);
        assert_eq!(v["config"]["mediaType"], media_type::OCI_CONFIG);
        assert_eq!(v["layers"][0]["mediaType"], media_type::OCI_LAYER_GZIP);
        assert_eq!(v["layers"][1]["mediaType"], media_type::OCI_LAYER);

        let zstd = [layer(media_type::OCI_LAYER_ZSTD, b"z")];
        assert!(build_manifest(&cfg, &zstd, ManifestFormat::Docker).is_err());
        assert!(build_manifest(&cfg, &zstd, ManifestFormat::Oci).is_ok());
    }

    #[test]
    fn same_image_written_twice_has_the_same_digests() {
        let dir = tempfile::tempdir().unwrap();
        let mut refs = Vec::new();
        for i in 0..2 {
            let store = Store::open(dir.path().join(format!("s{i}"))).unwrap();
            let data = b"layer bytes";
            store.put_blob(data).unwrap();
            let mut c = ImageConfig::for_host();
            c.created = Some(format_rfc3339(0));
            let mut cc = ContainerConfig::default();
            cc.labels.insert("b".into(), "2".into());
            cc.labels.insert("a".into(), "1".into());
            cc.env = vec!["X=1".into()];
            c.config = Some(cc);
            c.rootfs.diff_ids.push(Digest::of(data));
            let l = layer(media_type::OCI_LAYER, data);
            let m = write_image(&store, &c, &[l], ManifestFormat::Oci).unwrap();
            let img = load_image(&store, &m).unwrap();
            assert_eq!(img.config, c);
            assert_eq!(img.layers.len(), 1);
            refs.push((m.digest, img.id()));
        }
        assert_eq!(refs[0], refs[1]);
    }

    #[test]
    fn referenced_blobs_of_manifest_and_index() {
        let m = br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
        let r = referenced_blobs(m, &Digest::of(m)).unwrap();
        assert_eq!(r.len(), 1);
        assert!(referenced_blobs(b"not json", &Digest::of(b"")).is_err());
    }

    #[test]
    fn rfc3339_both_ways() {
        for (unix, s) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_714_979_289, "2024-05-06T07:08:09Z"),
            (4_107_542_399, "2100-02-28T23:59:59Z"),
        ] {
            assert_eq!(format_rfc3339(unix), s);
            assert_eq!(parse_rfc3339(s), Some(unix));
        }
        assert_eq!(
            parse_rfc3339("2024-05-06T09:08:09.123456789+02:00"),
            Some(1_714_979_289)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2024-13-06T07:08:09Z"), None);
    }

    #[test]
    fn null_layers_and_diff_ids_are_none() {
        let m = parse_manifest(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:bd89a3dc274fdb90bd9fde7ff4406db05d7f068a3873c899ba03489e4b7d7313","size":2},"layers":null}"#,
        )
        .expect("BuildKit's manifest of an image without layers");
        assert!(m.layers().is_empty());
        assert!(parse_manifest(br#"{"schemaVersion":2,"layers":[]}"#).is_err());
        let c = ImageConfig::from_bytes(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":null}}"#,
        )
        .expect("BuildKit's config of an image without layers");
        assert!(c.rootfs.diff_ids.is_empty());
    }
}
