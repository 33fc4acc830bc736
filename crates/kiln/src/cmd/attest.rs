//! `kiln build --sbom`, `--provenance`, `--attest`: the in-toto attestations
//! BuildKit attaches to an image, made by kiln: an SPDX 2.3 document of the
//! final image's packages (`kiln_insight::image_packages`, the records
//! `kiln analyze` reads) and SLSA provenance v1 in BuildKit's shape (its
//! `buildType`, `externalParameters.request`, `internalParameters`,
//! `runDetails.metadata.buildkit_*` fields). They are stored as one
//! attestation manifest per platform image in the image index
//! (`kiln_oci::attestation`).
//!
//! Secrets never appear: the request lists a secret's id only. Build args do,
//! as in BuildKit's provenance (`build-arg:NAME`).

use crate::flags::BuildxFlags;
use base64::Engine as _;
use kiln_builder::{BuildOutput, ResolvedBase};
use kiln_dockerfile::stages::Platform;
use kiln_dockerfile::Source;
use kiln_oci::attestation::{statement, SLSA_PROVENANCE_V1, SPDX_PREDICATE};
use kiln_oci::image::format_rfc3339;
use kiln_oci::registry::Reference;
use kiln_oci::{BlobRef, Digest, ImageName, Store};
use miette::miette;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// BuildKit's build type for SLSA provenance v1.
pub(crate) const BUILD_TYPE: &str =
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";

/// How much a provenance attestation says (BuildKit's `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProvenanceMode {
    /// The request, the base images, the timestamps.
    Min,
    /// And the Dockerfile's source and the build's steps.
    Max,
}

/// The attestations a build attaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Requested {
    pub sbom: bool,
    pub provenance: Option<ProvenanceMode>,
}

impl Requested {
    pub(crate) fn any(&self) -> bool {
        self.sbom || self.provenance.is_some()
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" => Some(true),
        "false" | "0" | "f" => Some(false),
        _ => None,
    }
}

/// Applies one attestation's options (`type=…` left out) to `req`.
fn apply(req: &mut Requested, kind: &str, opts: &[(&str, &str)], flag: &str) -> miette::Result<()> {
    let mut disabled = false;
    let mut mode = ProvenanceMode::Min;
    for (k, v) in opts {
        match (kind, *k) {
            (_, "disabled") => {
                disabled = parse_bool(v)
                    .ok_or_else(|| miette!("{flag}: disabled={v:?} is not true or false"))?
            }
            ("provenance", "mode") => {
                mode = match *v {
                    "min" => ProvenanceMode::Min,
                    "max" => ProvenanceMode::Max,
                    _ => return Err(miette!("{flag}: mode={v:?}: use mode=min or mode=max")),
                }
            }
            ("provenance", "version") if *v == "v1" => {}
            ("provenance", "version") => {
                return Err(miette!(
                    "{flag}: version={v:?}: kiln writes SLSA provenance v1 only (version=v1)"
                ))
            }
            ("sbom", "generator") => {
                return Err(miette!(
                    "{flag}: generator={v}: kiln makes the SBOM itself from the image's package records (dpkg, npm, pip, Go build info); it runs no scanner image"
                ))
            }
            _ => {
                return Err(miette!(
                    "{flag}: unknown option {k:?} for a {kind} attestation (kiln knows {})",
                    if kind == "provenance" {
                        "mode=min|max, version=v1, disabled="
                    } else {
                        "disabled="
                    }
                ))
            }
        }
    }
    match kind {
        "sbom" => req.sbom = !disabled,
        _ => req.provenance = (!disabled).then_some(mode),
    }
    Ok(())
}

fn pairs<'a>(s: &'a str, flag: &str) -> miette::Result<Vec<(&'a str, &'a str)>> {
    s.split(',')
        .filter(|f| !f.is_empty())
        .map(|f| {
            f.split_once('=')
                .ok_or_else(|| miette!("invalid {flag} {s:?}: {f:?} is not key=value"))
        })
        .collect()
}

/// A shorthand's value (`--sbom=true`, `--provenance=mode=max`): a boolean,
/// or the attestation's options.
fn shorthand(req: &mut Requested, kind: &str, value: &str) -> miette::Result<()> {
    let flag = format!("--{kind}");
    match parse_bool(value) {
        Some(true) => apply(req, kind, &[], &flag),
        Some(false) => apply(req, kind, &[("disabled", "true")], &flag),
        None => apply(req, kind, &pairs(value, &flag)?, &flag),
    }
}

/// The attestations `--attest`, `--sbom` and `--provenance` ask for (the
/// shorthands after `--attest`, as buildx reads them). None by default.
pub(crate) fn requested(flags: &BuildxFlags) -> miette::Result<Requested> {
    let mut req = Requested::default();
    for a in &flags.attest {
        let all = pairs(a, "--attest")?;
        let kind = all
            .iter()
            .find(|(k, _)| *k == "type")
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                miette!("invalid --attest {a:?}: type= is missing (type=sbom or type=provenance)")
            })?;
        if kind != "sbom" && kind != "provenance" {
            return Err(miette!(
                "invalid --attest {a:?}: unknown type {kind:?} (type=sbom or type=provenance)"
            ));
        }
        let rest: Vec<(&str, &str)> = all.into_iter().filter(|(k, _)| *k != "type").collect();
        apply(&mut req, kind, &rest, "--attest")?;
    }
    if let Some(v) = &flags.sbom {
        shorthand(&mut req, "sbom", v)?;
    }
    if let Some(v) = &flags.provenance {
        shorthand(&mut req, "provenance", v)?;
    }
    Ok(req)
}

/// What the provenance says about the build as a whole.
pub(crate) struct BuildFacts<'a> {
    pub src: &'a Source,
    /// The Dockerfile's path as given (relative to the context when it is in it).
    pub dockerfile_path: String,
    pub build_args: &'a BTreeMap<String, String>,
    /// The secret and SSH ids the build's RUN steps mount, with whether
    /// each is required (BuildKit lists them so, `optional` when not).
    pub secret_ids: Vec<(String, bool)>,
    pub ssh_ids: Vec<(String, bool)>,
    pub target: Option<&'a str>,
    pub labels: &'a [String],
    pub no_cache: bool,
    /// `--platform` as given.
    pub platform_flag: Option<&'a str>,
    pub names: &'a [ImageName],
    /// Unix seconds.
    pub started: i64,
    pub finished: i64,
    /// The build's id (BuildKit's invocation id: a random ref).
    pub invocation: String,
}

/// `pkg:docker/NAME@TAG?platform=os%2Farch`, as BuildKit names images.
pub(crate) fn docker_purl(reference: &str, platform: Option<&str>) -> String {
    let (name, version) = match Reference::parse(reference) {
        Ok(r) => {
            let name = match r.registry.as_str() {
                "docker.io" => r
                    .repository
                    .strip_prefix("library/")
                    .unwrap_or(&r.repository)
                    .to_string(),
                reg => format!("{}/{}", reg.replace(':', "%3A"), r.repository),
            };
            let version = match (&r.tag, &r.digest) {
                (Some(t), _) => t.clone(),
                (None, Some(d)) => d.to_string(),
                (None, None) => "latest".into(),
            };
            (name, version)
        }
        Err(_) => (reference.to_string(), "latest".into()),
    };
    let mut s = format!("pkg:docker/{name}@{version}");
    if let Some(p) = platform {
        s.push_str("?platform=");
        s.push_str(&p.replace('/', "%2F"));
    }
    s
}

/// The subjects of a platform image's statements: the image manifest, by
/// each name the build gives it (or by none).
pub(crate) fn subjects(
    names: &[ImageName],
    platform: &Platform,
    manifest: &Digest,
) -> Vec<(Option<String>, Digest)> {
    if names.is_empty() {
        return vec![(None, *manifest)];
    }
    names
        .iter()
        .map(|n| {
            (
                Some(docker_purl(&n.to_string(), Some(&platform.to_string()))),
                *manifest,
            )
        })
        .collect()
}

/// The SPDX 2.3 document of the packages in the stored image `manifest`.
pub(crate) fn sbom(
    store: &Store,
    manifest: &BlobRef,
    platform: &Platform,
    facts: &BuildFacts<'_>,
) -> miette::Result<Value> {
    let image = kiln_oci::image::load_image(store, manifest).map_err(|e| miette!("{e}"))?;
    let packages = kiln_insight::image_packages(store, &image)
        .map_err(|e| miette!("listing the image's packages for --sbom: {e}"))?;
    let arch = &platform.arch;
    let image_name = facts
        .names
        .first()
        .map(|n| n.to_string())
        .unwrap_or_else(|| manifest.digest.to_string());
    let mut out_packages = vec![json!({
        "name": image_name,
        "SPDXID": "SPDXRef-Image",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": manifest.digest.hex()}],
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": docker_purl(&image_name, Some(&platform.to_string())),
        }],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    for (i, p) in packages.iter().enumerate() {
        use kiln_insight::packages::Ecosystem;
        let (eco, purl, source) = match p.ecosystem {
            Ecosystem::Deb => (
                "deb",
                format!(
                    "pkg:deb/debian/{}@{}?arch={arch}",
                    p.name,
                    purl_escape(&p.version)
                ),
                "acquired package info from the dpkg status database",
            ),
            Ecosystem::Npm => (
                "npm",
                format!(
                    "pkg:npm/{}@{}",
                    p.name.replace('@', "%40"),
                    purl_escape(&p.version)
                ),
                "acquired package info from an installed node module's package.json",
            ),
            Ecosystem::Python => (
                "python",
                format!(
                    "pkg:pypi/{}@{}",
                    p.name.to_lowercase(),
                    purl_escape(&p.version)
                ),
                "acquired package info from installed Python package metadata",
            ),
            Ecosystem::Go => (
                "go",
                format!("pkg:golang/{}@{}", p.name, purl_escape(&p.version)),
                "acquired package info from a Go binary's build info",
            ),
        };
        let id = format!("SPDXRef-Package-{eco}-{}-{i}", spdx_id_part(&p.name));
        let mut pkg = json!({
            "name": p.name,
            "SPDXID": id,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "sourceInfo": format!("{source}: /{}", p.path),
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "supplier": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }],
        });
        if !p.version.is_empty() {
            pkg["versionInfo"] = json!(p.version);
        }
        out_packages.push(pkg);
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    Ok(json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("sbom-{image_name}"),
        "documentNamespace": format!("https://spdx.org/spdxdocs/kiln-sbom-{}", manifest.digest.hex()),
        "creationInfo": {
            "created": format_rfc3339(facts.finished),
            "creators": [format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": out_packages,
        "relationships": relationships,
    }))
}

fn purl_escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
}

/// A package name as the letters, digits, `.` and `-` an SPDX id allows.
fn spdx_id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The SLSA provenance v1 predicate of one platform's build, in BuildKit's shape.
pub(crate) fn provenance(facts: &BuildFacts<'_>, out: &BuildOutput, mode: ProvenanceMode) -> Value {
    let mut args = Map::new();
    for (k, v) in facts.build_args {
        args.insert(format!("build-arg:{k}"), json!(v));
    }
    for l in facts.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        args.insert(format!("label:{k}"), json!(v));
    }
    if let Some(t) = facts.target {
        args.insert("target".into(), json!(t));
    }
    if facts.no_cache {
        args.insert("no-cache".into(), json!(""));
    }
    if let Some(p) = facts.platform_flag {
        args.insert("platform".into(), json!(p));
    }
    if facts.dockerfile_path != "Dockerfile" {
        args.insert("filename".into(), json!(facts.dockerfile_path));
    }
    let mut request = json!({
        "frontend": "dockerfile.v0",
        "args": args,
        "locals": [{"name": "context"}, {"name": "dockerfile"}],
    });
    let ids = |list: &[(String, bool)]| -> Value {
        list.iter()
            .map(|(id, required)| {
                let mut v = json!({ "id": id });
                if !required {
                    v["optional"] = json!(true);
                }
                v
            })
            .collect()
    };
    if !facts.secret_ids.is_empty() {
        request["secrets"] = ids(&facts.secret_ids);
    }
    if !facts.ssh_ids.is_empty() {
        request["ssh"] = ids(&facts.ssh_ids);
    }
    let mut seen = std::collections::BTreeSet::new();
    let resolved: Vec<Value> = out
        .base_images
        .iter()
        .filter(|b| seen.insert((b.reference.clone(), b.manifest)))
        .map(|b: &ResolvedBase| {
            json!({
                "uri": docker_purl(&b.reference, Some(&b.platform)),
                "digest": {"sha256": b.manifest.hex()},
            })
        })
        .collect();
    let mut internal = json!({
        "builderPlatform": kiln_oci::registry::Platform::host().to_string(),
    });
    let mut metadata = json!({
        "invocationId": facts.invocation,
        "startedOn": format_rfc3339(facts.started),
        "finishedOn": format_rfc3339(facts.finished),
        "buildkit_completeness": {"request": true, "resolvedDependencies": false},
        "buildkit_metadata": {"vcs": {}},
    });
    if mode == ProvenanceMode::Max {
        let (steps, locations) = build_steps(out);
        internal["buildConfig"] = json!({ "llbDefinition": steps });
        metadata["buildkit_metadata"]["source"] = json!({
            "locations": locations,
            "infos": [{
                "filename": facts.dockerfile_path,
                "language": "Dockerfile",
                "data": base64::engine::general_purpose::STANDARD.encode(facts.src.text.as_bytes()),
            }],
        });
    }
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "configSource": {"path": facts.dockerfile_path},
                "request": request,
            },
            "internalParameters": internal,
            "resolvedDependencies": resolved,
        },
        "runDetails": {
            "builder": {"id": ""},
            "metadata": metadata,
        },
    })
}

/// The build's steps (BuildKit's `buildConfig.llbDefinition`: one entry per
/// vertex, `stepN`, with the ids of its inputs) and where each comes from in
/// the Dockerfile (`source.locations`). kiln has no LLB: an entry's `op` says
/// what the step is — the base image (`source`), a RUN (`exec`, its command),
/// a COPY/ADD (`file`) — in LLB's field names.
fn build_steps(out: &BuildOutput) -> (Vec<Value>, Map<String, Value>) {
    let mut steps = Vec::new();
    let mut locations = Map::new();
    let mut last_of_stage: BTreeMap<usize, String> = BTreeMap::new();
    for st in &out.record.stages {
        let id = format!("step{}", steps.len());
        let base = out.base_images.iter().find(|b| b.stage == st.index);
        let op = match (base, st.base_stage) {
            (Some(b), _) => json!({"Op": {"source": {"identifier": format!(
                "docker-image://{}@{}", b.reference, b.manifest)}}, "constraints": {}, "platform": llb_platform(&b.platform)}),
            (None, Some(_)) => Value::Null,
            (None, None) => json!({"Op": {"source": {"identifier": "scratch"}}, "constraints": {}}),
        };
        if op.is_null() {
            // A stage on another stage goes on from that stage's last step.
            let prev = st
                .base_stage
                .and_then(|p| last_of_stage.get(&p))
                .map(|p| p.split(':').next().unwrap_or(p).to_string());
            let prev = prev.unwrap_or_default();
            let prev = steps_of_stage(st, &mut steps, &mut locations, &last_of_stage, prev);
            last_of_stage.insert(st.index, prev);
            continue;
        }
        steps.push(json!({"id": id, "op": op}));
        locations.insert(id.clone(), range(st.from_line, st.from_line));
        let prev = steps_of_stage(st, &mut steps, &mut locations, &last_of_stage, id);
        last_of_stage.insert(st.index, prev);
    }
    (steps, locations)
}

fn range(start: usize, end: usize) -> Value {
    json!({"locations": [{"ranges": [{"start": {"line": start}, "end": {"line": end}}]}]})
}

/// `{"Architecture": "amd64", "OS": "linux"}` of `os/arch[/variant]`, as LLB writes it.
fn llb_platform(p: &str) -> Value {
    let mut parts = p.split('/');
    let mut v = json!({
        "OS": parts.next().unwrap_or_default(),
        "Architecture": parts.next().unwrap_or_default(),
    });
    if let Some(variant) = parts.next() {
        v["Variant"] = json!(variant);
    }
    v
}

/// The entries of a stage's steps that change its filesystem (RUN: LLB's
/// `exec`, its shell command; COPY/ADD: a `file` op's `copy` action, its
/// sources and destination), each taking the previous step's result (and a
/// `COPY --from` stage's); returns the id of the stage's last step.
fn steps_of_stage(
    st: &kiln_oci::store::StageRecord,
    steps: &mut Vec<Value>,
    locations: &mut Map<String, Value>,
    last_of_stage: &BTreeMap<usize, String>,
    mut prev: String,
) -> String {
    for step in &st.steps {
        if step.result == kiln_oci::store::StepResult::Config {
            continue;
        }
        let id = format!("step{}", steps.len());
        let (word, rest) = step
            .instruction
            .split_once(' ')
            .unwrap_or((step.instruction.as_str(), ""));
        let op = if word.eq_ignore_ascii_case("RUN") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let cmd_at = words
                .iter()
                .position(|w| !w.starts_with("--"))
                .unwrap_or(words.len());
            json!({"exec": {"meta": {"args": ["/bin/sh", "-c", words[cmd_at..].join(" ")]}}})
        } else {
            let args: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let (dest, src) = args
                .split_last()
                .map(|(d, s)| (*d, s.join(" ")))
                .unwrap_or(("", String::new()));
            json!({"file": {"actions": [{"Action": {"copy": {"src": src, "dest": dest}}}]}})
        };
        let mut inputs = vec![format!("{prev}:0")];
        if let Some(from) = step.from_stage.and_then(|f| last_of_stage.get(&f)) {
            if *from != prev {
                inputs.push(format!("{from}:0"));
            }
        }
        steps.push(json!({"id": id, "op": {"Op": op, "constraints": {}}, "inputs": inputs}));
        locations.insert(id.clone(), range(step.line, step.end_line));
        prev = id;
    }
    prev
}

/// The attestation manifest of one platform image (its statements in
/// BuildKit's order: provenance, then the SBOM), stored; `None` when none
/// is asked for.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attest_image(
    store: &Store,
    req: Requested,
    facts: &BuildFacts<'_>,
    platform: &Platform,
    manifest: &BlobRef,
    out: &BuildOutput,
) -> miette::Result<Option<BlobRef>> {
    if !req.any() {
        return Ok(None);
    }
    let subjects = subjects(facts.names, platform, &manifest.digest);
    let mut statements = Vec::new();
    if let Some(mode) = req.provenance {
        statements.push(statement(
            SLSA_PROVENANCE_V1,
            provenance(facts, out, mode),
            &subjects,
        ));
    }
    if req.sbom {
        statements.push(statement(
            SPDX_PREDICATE,
            sbom(store, manifest, platform, facts)?,
            &subjects,
        ));
    }
    kiln_oci::attestation::write_attestation_manifest(store, &statements, manifest)
        .map(Some)
        .map_err(|e| miette!("storing the attestations: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn req(args: &[&str]) -> miette::Result<Requested> {
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            b: BuildxFlags,
        }
        let mut argv = vec!["t"];
        argv.extend_from_slice(args);
        requested(&T::try_parse_from(argv).map_err(|e| miette!("{e}"))?.b)
    }

    #[test]
    fn attestation_flags_as_buildx_reads_them() {
        assert_eq!(req(&[]).unwrap(), Requested::default());
        let max = Requested {
            sbom: true,
            provenance: Some(ProvenanceMode::Max),
        };
        assert_eq!(req(&["--sbom=true", "--provenance=mode=max"]).unwrap(), max);
        assert_eq!(
            req(&[
                "--attest",
                "type=sbom",
                "--attest",
                "type=provenance,mode=max"
            ])
            .unwrap(),
            max
        );
        assert_eq!(
            req(&["--provenance=true"]).unwrap().provenance,
            Some(ProvenanceMode::Min)
        );
        assert_eq!(
            req(&["--attest=type=provenance,mode=max", "--provenance=false"]).unwrap(),
            Requested::default()
        );
        assert_eq!(
            req(&["--provenance=mode=min,version=v1"])
                .unwrap()
                .provenance,
            Some(ProvenanceMode::Min)
        );
        for bad in [
            &["--provenance=mode=most"][..],
            &["--provenance=version=v0.2"],
            &["--attest=type=vex"],
            &["--attest=mode=max"],
            &["--sbom=generator=docker/buildkit-syft-scanner"],
            &["--provenance=builder-id=x"],
        ] {
            assert!(req(bad).is_err(), "{bad:?}");
        }
        let e = req(&["--sbom=generator=x"]).unwrap_err().to_string();
        assert!(e.contains("no scanner image"), "{e}");
    }

    #[test]
    fn purls_as_buildkit_writes_them() {
        assert_eq!(
            docker_purl("node:20-bookworm-slim", Some("linux/amd64")),
            "pkg:docker/node@20-bookworm-slim?platform=linux%2Famd64"
        );
        assert_eq!(
            docker_purl("127.0.0.1:5000/team/api:1", None),
            "pkg:docker/127.0.0.1%3A5000/team/api@1"
        );
    }
}
