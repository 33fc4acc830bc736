//! Issue 16's attestation acceptance, on the seed's TypeScript API
//! (`examples/api`, with one step added that reads a `--secret` and a build
//! arg, and express as a runtime dependency, which the seed app lacks): `--sbom=true --provenance=mode=max` pushed to the local test registry
//! gives, in the pushed image index, one attestation manifest for the image
//! where BuildKit puts it, whose in-toto statements validate against their
//! schemas (tests/data/attestation: in-toto statement v1, SLSA provenance v1,
//! SPDX 2.3), list express and the Debian packages of the base, name the base
//! image by digest, carry the Dockerfile (mode=max) and the build arg (as
//! BuildKit's provenance does), and hold no trace of the secret's value.
//! skopeo and buildah read the index. Needs root (mmdebstrap, the sandbox),
//! the npm registry, and the local registry, as `example_api` does.

use crate::util::{buildah_manifest_inspect, kiln, make_base_images, skopeo_raw};
use base64::Engine as _;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

const SECRET: &str = "kiln-attest-secret-7f3a9c51";
const BUILD_ARG: &str = "visible-build-note-2b8e";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn data(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/attestation")
        .join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// Errors of `doc` against the JSON schema `schema`, one a line.
fn schema_errors(schema: &Value, doc: &Value) -> String {
    let validator = jsonschema::validator_for(schema).expect("a valid schema");
    validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// GET `path` of the registry at `addr` (plain HTTP/1.0): the body.
fn registry_get(addr: &str, path: &str, accept: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&all[..at]).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "GET {path}: {head}"
    );
    all[at + 4..].to_vec()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn sbom_and_max_provenance_of_the_api_pushed_validate_and_hold_no_secret() {
    let registry = kiln_testkit::registry::plain();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    make_base_images(&root, Some("node"));

    // examples/api, with a step in `builder` that uses a secret and a build arg.
    let ctx = dir.path().join("api");
    let ok = Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("examples/api"))
        .arg(&ctx)
        .status()
        .unwrap();
    assert!(ok.success());
    let dockerfile = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap().replace(
        "FROM base as builder\n",
        "FROM base as builder\nARG BUILD_NOTE\nRUN --mount=type=secret,id=npm_token test -s /run/secrets/npm_token && echo \"note: $BUILD_NOTE\"\n",
    );
    assert!(dockerfile.contains("id=npm_token"));
    std::fs::write(ctx.join("Dockerfile"), &dockerfile).unwrap();
    // The seed app has no runtime dependency; the issue's SBOM lists express:
    // made one here (installed by `npm install --omit=dev` in `runner`).
    let package = ctx.join("package.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&package).unwrap()).unwrap();
    manifest["dependencies"] = serde_json::json!({"express": "^4.19.2"});
    std::fs::write(&package, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    let secret = dir.path().join("npm_token");
    std::fs::write(&secret, SECRET).unwrap();

    let repo = kiln_testkit::registry::unique_repo("attest");
    let name = format!("{registry}/{repo}:1");
    let built = kiln()
        .root(&root)
        .args([
            "build",
            "--progress=plain",
            "--sbom=true",
            "--provenance=mode=max",
        ])
        .arg("--secret")
        .arg(format!("id=npm_token,src={}", secret.display()))
        .args(["--build-arg", &format!("BUILD_NOTE={BUILD_ARG}")])
        .args(["-t", &name, "--push"])
        .arg(&ctx)
        .output();
    let log = String::from_utf8_lossy(&built.stderr).into_owned();
    assert!(built.status.success(), "kiln build failed:\n{log}");
    assert!(!log.contains(SECRET), "the secret in the build's output");

    // The pushed index: the image, then its attestation manifest (BuildKit's layout).
    let raw = skopeo_raw(&name);
    assert!(!contains(&raw, SECRET));
    let index: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index:#}");
    let image = &entries[0];
    assert_eq!(image["platform"]["os"], "linux");
    let att = &entries[1];
    assert_eq!(att["platform"]["os"], "unknown", "{att:#}");
    assert_eq!(att["platform"]["architecture"], "unknown");
    assert_eq!(
        att["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        att["annotations"]["vnd.docker.reference.digest"],
        image["digest"]
    );

    // The attestation manifest, as skopeo reads it.
    let raw = skopeo_raw(&format!(
        "{registry}/{repo}@{}",
        att["digest"].as_str().unwrap()
    ));
    assert!(!contains(&raw, SECRET));
    let manifest: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.docker.attestation.manifest.v1+json"
    );
    assert_eq!(manifest["subject"]["digest"], image["digest"]);
    let layers = manifest["layers"].as_array().unwrap();
    let types: Vec<&str> = layers
        .iter()
        .map(|l| {
            l["annotations"]["in-toto.io/predicate-type"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        types,
        [
            "https://slsa.dev/provenance/v1",
            "https://spdx.dev/Document"
        ]
    );

    let statement_schema = data("in-toto-statement-v1.schema.json");
    let mut provenance = Value::Null;
    let mut sbom = Value::Null;
    for l in layers {
        assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
        let digest = l["digest"].as_str().unwrap();
        let bytes = registry_get(
            &registry,
            &format!("/v2/{repo}/blobs/{digest}"),
            "application/vnd.in-toto+json",
        );
        assert_eq!(kiln_oci::Digest::of(&bytes).to_string(), digest);
        assert!(
            !contains(&bytes, SECRET),
            "the secret's value in {}",
            l["annotations"]
        );
        let s: Value = serde_json::from_slice(&bytes).unwrap();
        let errors = schema_errors(&statement_schema, &s);
        assert!(errors.is_empty(), "in-toto statement v1:\n{errors}");
        assert_eq!(
            s["subject"][0]["digest"]["sha256"],
            image["digest"].as_str().unwrap()[7..]
        );
        match s["predicateType"].as_str().unwrap() {
            "https://slsa.dev/provenance/v1" => provenance = s,
            _ => sbom = s,
        }
    }

    // SLSA provenance v1, BuildKit's fields, mode=max.
    let errors = schema_errors(&data("slsa-provenance-v1.schema.json"), &provenance);
    assert!(errors.is_empty(), "SLSA provenance v1:\n{errors}");
    let p = &provenance["predicate"];
    let def = &p["buildDefinition"];
    assert_eq!(
        def["buildType"],
        "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
    );
    let request = &def["externalParameters"]["request"];
    assert_eq!(request["frontend"], "dockerfile.v0");
    assert_eq!(request["args"]["build-arg:BUILD_NOTE"], BUILD_ARG);
    // The secret the Dockerfile mounts, by id (optional: no required=true), as BuildKit lists it.
    assert_eq!(
        request["secrets"],
        serde_json::json!([{"id": "npm_token", "optional": true}])
    );
    let deps = def["resolvedDependencies"].as_array().unwrap();
    let base_digest: Value = serde_json::from_str(
        &kiln()
            .root(&root)
            .args(["inspect", "node:20-bookworm-slim"])
            .stdout(),
    )
    .unwrap();
    let base_digest = base_digest[0]["Descriptor"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        deps.iter().any(|d| d["uri"]
            .as_str()
            .unwrap()
            .starts_with("pkg:docker/node@20-bookworm-slim")
            && d["digest"]["sha256"] == base_digest[7..]),
        "the base image {base_digest} in {deps:#?}"
    );
    let source = &p["runDetails"]["metadata"]["buildkit_metadata"]["source"];
    let text = base64::engine::general_purpose::STANDARD
        .decode(source["infos"][0]["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(text).unwrap(), dockerfile);
    let steps = p["buildDefinition"]["internalParameters"]["buildConfig"]["llbDefinition"]
        .as_array()
        .unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s["op"]["Op"]["exec"]["meta"]["args"][2] == "npm install --omit=dev"),
        "{steps:#?}"
    );
    assert!(source["locations"]["step0"].is_object());

    // SPDX 2.3: express and the Debian base's packages.
    let doc = &sbom["predicate"];
    let errors = schema_errors(&data("spdx-2.3.schema.json"), doc);
    assert!(errors.is_empty(), "SPDX 2.3:\n{errors}");
    let packages = doc["packages"].as_array().unwrap();
    let purls: Vec<&str> = packages
        .iter()
        .flat_map(|p| p["externalRefs"].as_array().unwrap())
        .map(|r| r["referenceLocator"].as_str().unwrap())
        .collect();
    assert!(
        purls.iter().any(|p| p.starts_with("pkg:npm/express@4.")),
        "express in {purls:?}"
    );
    for deb in ["libc6", "base-files", "bash", "dpkg"] {
        assert!(
            purls
                .iter()
                .any(|p| p.starts_with(&format!("pkg:deb/debian/{deb}@"))),
            "{deb} in {purls:?}"
        );
    }
    assert!(purls.iter().filter(|p| p.starts_with("pkg:deb/")).count() > 50);

    // buildah reads the index too.
    let seen = buildah_manifest_inspect(dir.path(), &registry, &name);
    assert_eq!(seen["manifests"].as_array().unwrap().len(), 2, "{seen:#}");

    // The store names the index; inspect and run use the image, not the attestation.
    let inspected: Value =
        serde_json::from_str(&kiln().root(&root).args(["inspect", &name]).stdout()).unwrap();
    assert_eq!(inspected[0]["Config"]["User"], "nodejs", "{inspected:#}");
    let ran = kiln()
        .root(&root)
        .args([
            "run",
            "--rm",
            &name,
            "node",
            "-e",
            "console.log(require('express/package.json').name)",
        ])
        .stdout();
    assert_eq!(ran, "express\n");
}
