//! Issue 13's acceptance, on the seed's TypeScript API (`examples/api`: npm
//! install + tsc in `builder`, `npm install --omit=dev` and a non-root user in
//! `runner`): fresh CI runners share one build cache through the local test
//! registry (scripts/setup-test-env; the test fails when none answers).
//!
//! Every runner's store starts as a copy of one store holding only the
//! `node:20-bookworm-slim` base that `scripts/make-base-images` makes (a CI
//! runner image with the base pre-pulled): no step record, no layer of the
//! project. Needs root (mmdebstrap, the sandbox) and the npm registry, as
//! `example_api` does. Blob downloads are counted in the registry's access log.
//!
//! One test, in phases, so the cold build and its export (about 80 s on two
//! cores) are made once: runner A exports; B hits everything and downloads
//! only the final image's layers; B' pushes the image to the same registry and
//! downloads no layer; C (a one-line change) runs only `COPY src/` and what
//! follows and exports too, so A and C are the issue's runners D and E (two
//! branches exported to one ref, one after the other); fresh runners then hit
//! both branches.

use crate::cli_registry_cache::{blob_gets, image_layers};
use crate::util::{kiln, make_base_images};
use kiln_oci::{Digest, Store};
use kiln_testkit::registry::{plain as plain_registry, unique_repo};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A copy of `examples/api`; `line`, when given, is appended to `src/index.ts`
/// (a one-line change: another branch).
fn api_context(dir: &Path, name: &str, line: Option<&str>) -> PathBuf {
    let ctx = dir.join(name);
    let ok = Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("examples/api"))
        .arg(&ctx)
        .status()
        .unwrap();
    assert!(ok.success(), "cp -r examples/api");
    if let Some(line) = line {
        let index = ctx.join("src/index.ts");
        let mut text = fs::read_to_string(&index).unwrap();
        text.push_str(line);
        text.push('\n');
        fs::write(index, text).unwrap();
    }
    ctx
}

/// A fresh runner's store: a copy of `seed` (the base image only).
fn fresh_store(dir: &Path, seed: &Path, runner: &str) -> PathBuf {
    let root = dir.join(runner);
    let ok = Command::new("cp")
        .arg("-a")
        .arg(seed)
        .arg(&root)
        .status()
        .unwrap();
    assert!(ok.success(), "cp -a {}", seed.display());
    root
}

struct Built {
    image_id: String,
    steps_run: u64,
    /// The steps that ran, without their `[stage n/m] ` prefix.
    started: Vec<String>,
    warnings: Vec<String>,
}

fn build(root: &Path, ctx: &Path, tag: &str, extra: &[String]) -> Built {
    let iid = root.with_extension("iid");
    let out = kiln()
        .root(root)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("REGISTRY_AUTH_FILE", root.with_extension("auth.json"))
        .env("KILN_CONFIG", root.with_extension("kiln.json"))
        .args(["build", "--progress=rawjson", "-t", tag, "--iidfile"])
        .arg(&iid)
        .args(extra)
        .arg(ctx)
        .ok();
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = events
        .iter()
        .find(|e| e["event"] == "build_finished")
        .map(|e| e["summary"].clone())
        .expect("a build_finished event");
    let of = |kind: &str, field: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["event"] == kind)
            .map(|e| e[field].as_str().unwrap_or_default().to_string())
            .collect()
    };
    // The example's Dockerfile has build-check findings (`FROM … as …`):
    // the other warnings are the ones these runners must not see.
    let warnings = of("warning", "message")
        .into_iter()
        .filter(|w| !w.starts_with("Dockerfile:"))
        .collect();
    let mut started: Vec<String> = of("step_started", "name")
        .into_iter()
        .filter(|n| !n.contains(" FROM "))
        .map(|n| n.split_once("] ").map(|(_, s)| s.to_string()).unwrap_or(n))
        .collect();
    started.sort();
    Built {
        image_id: fs::read_to_string(&iid).unwrap(),
        steps_run: summary["steps_run"].as_u64().unwrap(),
        started,
        warnings,
    }
}

/// Whether the store at `root` has the blob `d`.
fn has_blob(root: &Path, d: &Digest) -> bool {
    Store::open(root).unwrap().has_blob(d)
}

#[test]
fn example_api_fresh_runners_share_a_registry_cache() {
    let registry = plain_registry();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seed = dir.join("seed");
    make_base_images(&seed, Some("node"));
    let base_layers = image_layers(&seed, "node:20-bookworm-slim");
    let cache_repo = unique_repo("api-cache");
    let cache = format!("{registry}/{cache_repo}:main");
    let to = format!("--cache-to=type=registry,ref={cache},mode=max");
    let from = format!("--cache-from=type=registry,ref={cache}");
    let one = api_context(dir, "branch-one", None);
    let two = api_context(dir, "branch-two", Some("export const branch = \"two\";"));

    // Runner A: a cold build, every step exported.
    let a_root = fresh_store(dir, &seed, "a");
    let a = build(&a_root, &one, "api:1", std::slice::from_ref(&to));
    assert_eq!(a.steps_run, 12, "{:?}", a.started);
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);

    // Runner B: nothing runs, A's image; of the cache's blobs only the config
    // and the final stage's layers come down (never the builder stage's).
    let b_root = fresh_store(dir, &seed, "b");
    let before = blob_gets(&cache_repo).len();
    let b = build(&b_root, &one, "api:1", std::slice::from_ref(&from));
    assert_eq!(b.steps_run, 0, "B ran {:?}", b.started);
    assert_eq!(b.image_id, a.image_id);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let final_layers = image_layers(&b_root, "api:1");
    let own: BTreeSet<Digest> = final_layers.difference(&base_layers).copied().collect();
    let got: Vec<Digest> = blob_gets(&cache_repo).split_off(before);
    let layers_got: BTreeSet<Digest> = got
        .iter()
        .filter(|d| final_layers.contains(d))
        .copied()
        .collect();
    assert_eq!(
        layers_got, own,
        "B fetched the final stage's layers: {got:?}"
    );
    assert_eq!(
        got.len(),
        own.len() + 1,
        "each once, and the cache config: {got:?}"
    );

    // Runner B': the same with --push to the same registry: no layer is
    // downloaded at all (the push mounts them from the cache repository),
    // and the image in the registry is whole: a pull gives A's image.
    let app_repo = unique_repo("api");
    let app = format!("{registry}/{app_repo}:1");
    let p_root = fresh_store(dir, &seed, "b-push");
    let before = blob_gets(&cache_repo).len();
    let p = build(&p_root, &one, &app, &[from.clone(), "--push".into()]);
    assert_eq!(p.steps_run, 0, "{:?}", p.started);
    assert_eq!(p.image_id, a.image_id);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let got: Vec<Digest> = blob_gets(&cache_repo).split_off(before);
    assert_eq!(got.len(), 1, "only the cache config: {got:?}");
    assert!(blob_gets(&app_repo).is_empty());
    for d in &own {
        assert!(!has_blob(&p_root, d), "{d} was downloaded");
    }
    let v_root = dir.join("verify");
    kiln()
        .root(&v_root)
        .args(["pull", &app])
        .env("REGISTRY_AUTH_FILE", dir.join("verify.auth.json"))
        .ok();
    let inspect = kiln().root(&v_root).args(["inspect", &app]).stdout();
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Id"].as_str(), Some(a.image_id.as_str()), "{inspect}");
    // B' stored the image without those layers; running it fetches them.
    let out = kiln()
        .root(&p_root)
        .env("REGISTRY_AUTH_FILE", p_root.with_extension("auth.json"))
        .args(["run", "--rm", &app, "ls", "/home/app/dist"])
        .stdout();
    assert!(out.contains("index.js"), "{out}");

    // Runner C (the other branch: one line more in src/): only COPY src/ and
    // the steps after it run; its export merges into the same ref.
    let c_root = fresh_store(dir, &seed, "c");
    let c = build(&c_root, &two, "api:1", &[from.clone(), to.clone()]);
    let mut want = vec![
        "COPY src/ src/",
        "RUN npm run build",
        "COPY --from=builder /home/build/dist dist/",
        "COPY --from=builder /home/build/package*.json .",
        "RUN npm install --omit=dev",
        "RUN addgroup --system --gid 1001 nodejs",
        "RUN adduser --system --uid 1001 nodejs",
    ];
    want.sort();
    assert_eq!(c.started, want);
    assert_ne!(c.image_id, a.image_id);

    // Both branches now hit from fresh stores: C's export kept A's records
    // of the runner stage, which C did not use.
    for (runner, ctx, id) in [("f", &one, &a.image_id), ("g", &two, &c.image_id)] {
        let root = fresh_store(dir, &seed, runner);
        let r = build(&root, ctx, "api:1", std::slice::from_ref(&from));
        assert_eq!(r.steps_run, 0, "runner {runner} ran {:?}", r.started);
        assert_eq!(&r.image_id, id, "runner {runner}");
    }
}
