//! `kiln build --cache-to/--cache-from`: fresh runners (empty stores) sharing
//! one build cache through the local test registry (started by
//! scripts/setup-test-env; these tests fail when none answers) or an OCI layout
//! directory. RUN steps run in the real sandbox, so this needs root (CI runs as
//! root). Blob downloads are counted in the registry's access log.

use crate::util::{kiln, store_busybox};
use kiln_oci::registry::{AuthFile, Reference, RegistryConfig, RegistryContext, Repo};
use kiln_oci::{Digest, Store};
use kiln_testkit::registry::{
    auth as auth_registry, auth_user, plain as plain_registry, plain_log, unique_repo,
};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// A multi-stage build on a busybox base pushed to the registry: a builder
/// stage with a dependency step and a source step, a final stage copying
/// its artifact.
fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base} AS builder\n\
         WORKDIR /build\n\
         COPY dep.txt .\n\
         RUN cat dep.txt > deps.out && echo installed >> deps.out\n\
         COPY src/ src/\n\
         RUN cat deps.out src/* > app.out\n\
         FROM {base}\n\
         WORKDIR /app\n\
         COPY --from=builder /build/app.out .\n\
         RUN echo runtime > rt.txt\n\
         CMD [\"cat\", \"/app/app.out\"]\n"
    )
}

/// The busybox image pushed once per test to a repository of its own.
fn push_base(dir: &Path, registry: &str) -> String {
    let seed = dir.join("seed");
    store_busybox(&seed);
    let base = format!("{registry}/{}:1", unique_repo("cache-base"));
    kiln()
        .root(&seed)
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .args(["push", "busybox:test", &base])
        .ok();
    base
}

/// A context directory with the Dockerfile and `src/main.txt` = `source`.
fn context(dir: &Path, name: &str, base: &str, source: &str) -> PathBuf {
    let ctx = dir.join(name);
    fs::create_dir_all(ctx.join("src")).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile(base)).unwrap();
    fs::write(ctx.join("dep.txt"), "dependency 1\n").unwrap();
    fs::write(ctx.join("src/main.txt"), source).unwrap();
    ctx
}

struct Built {
    image_id: String,
    steps_run: u64,
    started: Vec<String>,
    warnings: Vec<String>,
    root: PathBuf,
}

/// `kiln build` with a fresh store `dir/<runner>`, as a fresh CI runner.
fn build(dir: &Path, runner: &str, ctx: &Path, extra: &[String]) -> Built {
    build_at(dir, runner, ctx, extra, None)
}

/// [`build`] with `SOURCE_DATE_EPOCH` (file and history times clamped), so
/// that builds that run the same steps make the same image.
fn build_reproducibly(dir: &Path, runner: &str, ctx: &Path, extra: &[String]) -> Built {
    build_at(dir, runner, ctx, extra, Some("1700000000"))
}

fn build_at(dir: &Path, runner: &str, ctx: &Path, extra: &[String], epoch: Option<&str>) -> Built {
    let root = dir.join(runner);
    let iid = dir.join(format!("{runner}.iid"));
    let mut cmd = kiln();
    match epoch {
        Some(e) => cmd.env("SOURCE_DATE_EPOCH", e),
        None => cmd.env_remove("SOURCE_DATE_EPOCH"),
    };
    let out = cmd
        .root(&root)
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .env("KILN_CONFIG", dir.join("kiln.json"))
        .args(["build", "--progress=rawjson", "-t", "app:1", "--iidfile"])
        .arg(&iid)
        .args(extra)
        .arg(ctx)
        .ok();
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
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
    Built {
        image_id: fs::read_to_string(&iid).unwrap(),
        steps_run: summary["steps_run"].as_u64().unwrap(),
        started: of("step_started", "name")
            .into_iter()
            .filter(|n| !n.contains(" FROM "))
            .collect(),
        warnings: of("warning", "message"),
        root,
    }
}

/// The layer digests of the image `name` in the store at `root`.
pub(crate) fn image_layers(root: &Path, name: &str) -> BTreeSet<Digest> {
    let store = Store::open(root).unwrap();
    let m = store.resolve(&name.parse().unwrap()).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&m.digest).unwrap()).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Digests of the blobs GET from `repo` in the registry's access log so far.
pub(crate) fn blob_gets(repo: &str) -> Vec<Digest> {
    let needle = format!("\"GET /v2/{repo}/blobs/");
    fs::read_to_string(plain_log())
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(&needle))
        .filter_map(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .collect()
}

/// The cache config's digest under `reference`, read from the registry.
fn cache_config_digest(reference: &str) -> Digest {
    let ctx = RegistryContext {
        config: RegistryConfig::default(),
        auth: AuthFile::locate(Some(Path::new("/nonexistent/auth.json"))),
    };
    let r = Reference::parse(reference).unwrap();
    let (bytes, _) = Repo::open(&ctx, &r)
        .unwrap()
        .manifest(&r.manifest_reference())
        .unwrap()
        .expect("the cache manifest");
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        v["config"]["mediaType"],
        "application/vnd.kiln.cache.v1+json"
    );
    v["config"]["digest"].as_str().unwrap().parse().unwrap()
}

/// Runner A exports every step (mode=max); runner B, another empty store,
/// builds the same with --cache-from: nothing runs, the same image, and of
/// the cache's blobs B downloads only the config and the final image's own
/// layers (never the builder stage's). Runner C, after a one-line change in
/// src/, runs only `COPY src/` and the steps after it.
#[test]
fn a_fresh_runner_hits_everything_and_downloads_only_the_final_layers() {
    let registry = plain_registry();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = push_base(dir, &registry);
    let cache_repo = unique_repo("cache");
    let cache = format!("{registry}/{cache_repo}:main");
    let ctx = context(dir, "ctx", &base, "hello\n");

    let a = build(
        dir,
        "a",
        &ctx,
        &[format!("--cache-to=type=registry,ref={cache},mode=max")],
    );
    assert_eq!(a.steps_run, 8, "{:?}", a.started);

    let before = blob_gets(&cache_repo).len();
    let b = build(
        dir,
        "b",
        &ctx,
        &[format!("--cache-from=type=registry,ref={cache}")],
    );
    assert_eq!(b.steps_run, 0, "B ran {:?}", b.started);
    assert_eq!(b.image_id, a.image_id);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let got: Vec<Digest> = blob_gets(&cache_repo).split_off(before);
    let final_layers = image_layers(&b.root, "app:1");
    let config = cache_config_digest(&cache);
    let layers_got: Vec<&Digest> = got.iter().filter(|d| **d != config).collect();
    assert_eq!(
        got.len() - layers_got.len(),
        1,
        "the cache config once: {got:?}"
    );
    // The final stage's WORKDIR, COPY --from and RUN: its base layer came
    // from the base image's repository.
    assert_eq!(layers_got.len(), 3, "{layers_got:?}");
    for d in &layers_got {
        assert!(final_layers.contains(d), "{d} is not a layer of the image");
    }

    // B's store keeps the records it used: without --cache-from, the final
    // stage (whose layers B fetched) hits; the builder stage, whose layers
    // B never downloaded, runs.
    let again = build(dir, "b", &ctx, &[]);
    assert_eq!(again.steps_run, 5, "{:?}", again.started);
    assert!(
        again.started.iter().all(|s| s.starts_with("[builder")),
        "{:?}",
        again.started
    );
    assert_eq!(again.image_id, a.image_id);

    // A one-line change in src/: only COPY src/ and what follows run.
    let changed = context(dir, "ctx-changed", &base, "hello, world\n");
    let c = build(
        dir,
        "c",
        &changed,
        &[format!("--cache-from=type=registry,ref={cache}")],
    );
    assert_eq!(
        c.started,
        [
            "[builder 5/6] COPY src/ src/",
            "[builder 6/6] RUN cat deps.out src/* > app.out",
            "[stage-1 3/5] COPY --from=builder /build/app.out .",
            "[stage-1 4/5] RUN echo runtime > rt.txt",
        ],
        "{:?}",
        c.started
    );
}

/// Two runners export different branches to one tag, one after the other;
/// the export merges, so both branches hit from a fresh store afterwards.
/// mode=min exports only the final image's steps: a third runner with a
/// min cache still runs the builder stage.
#[test]
fn exports_of_two_branches_to_one_tag_both_stay() {
    let registry = plain_registry();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = push_base(dir, &registry);
    let cache = format!("{registry}/{}:shared", unique_repo("cache"));
    let one = context(dir, "branch-one", &base, "branch one\n");
    let two = context(dir, "branch-two", &base, "branch two\n");
    let to = format!("--cache-to=type=registry,ref={cache},mode=max");
    let from = format!("--cache-from=type=registry,ref={cache}");
    let d = build_reproducibly(dir, "d", &one, std::slice::from_ref(&to));
    let e = build_reproducibly(dir, "e", &two, &[to]);
    assert_eq!(e.steps_run, 8);
    let f = build_reproducibly(dir, "f", &one, std::slice::from_ref(&from));
    assert_eq!(
        f.steps_run, 0,
        "branch one after branch two's export: {:?}",
        f.started
    );
    assert_eq!(f.image_id, d.image_id);
    let g = build_reproducibly(dir, "g", &two, &[from]);
    assert_eq!(g.steps_run, 0, "{:?}", g.started);
    assert_eq!(g.image_id, e.image_id);

    // mode=min: the final stage's chain only.
    let min = format!("{registry}/{}:min", unique_repo("cache"));
    let h = build_reproducibly(
        dir,
        "h",
        &one,
        &[format!("--cache-to=type=registry,ref={min},mode=min")],
    );
    let i = build_reproducibly(
        dir,
        "i",
        &one,
        &[format!("--cache-from=type=registry,ref={min}")],
    );
    assert!(
        i.started.iter().all(|s| s.starts_with("[builder")),
        "only the builder stage runs: {:?}",
        i.started
    );
    assert_eq!(i.steps_run, 5, "{:?}", i.started);
    // COPY --from is keyed by what it copies: the same artifact, so the
    // final stage's records (and image) are h's.
    assert_eq!(i.image_id, h.image_id);
}

/// A cache tag holding a foreign manifest (an image), an OCI layout cache
/// with a corrupt config, and one with a missing layer blob: each a warning,
/// and a normal build (the same image).
#[test]
fn a_foreign_or_corrupt_cache_is_a_warning_and_a_normal_build() {
    let registry = plain_registry();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = push_base(dir, &registry);
    let ctx = context(dir, "ctx", &base, "hello\n");
    let plain = build_reproducibly(dir, "plain", &ctx, &[]);

    // The tag is an image, not a cache.
    let foreign = build_reproducibly(
        dir,
        "foreign",
        &ctx,
        &[format!("--cache-from=type=registry,ref={base}")],
    );
    assert_eq!(foreign.steps_run, 8);
    assert_eq!(foreign.image_id, plain.image_id);
    assert!(
        foreign
            .warnings
            .iter()
            .any(|w| w.contains("not a kiln cache")),
        "{:?}",
        foreign.warnings
    );
    // No such tag.
    let none = format!("{registry}/{}:none", unique_repo("cache"));
    let missing = build_reproducibly(dir, "missing", &ctx, &[format!("--cache-from={none}")]);
    assert_eq!(missing.steps_run, 8);
    assert!(
        missing.warnings.iter().any(|w| w.contains("not found")),
        "{:?}",
        missing.warnings
    );

    // An OCI layout directory cache, then broken in two ways.
    let layout = dir.join("layout");
    let l = layout.to_str().unwrap();
    build_reproducibly(
        dir,
        "export",
        &ctx,
        &[format!("--cache-to=type=local,dest={l},mode=max")],
    );
    let hit = build_reproducibly(
        dir,
        "hit",
        &ctx,
        &[format!("--cache-from=type=local,src={l}")],
    );
    assert_eq!(hit.steps_run, 0, "{:?}", hit.started);
    assert_eq!(hit.image_id, plain.image_id);

    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest: Digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let blob = |d: &Digest| layout.join("blobs/sha256").join(d.hex());
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    // A layer of the final stage's RUN is gone: that step (and what needs
    // it) runs; the rest still hits.
    let config_digest: Digest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(&config_digest)).unwrap()).unwrap();
    let records = config["records"].as_object().unwrap();
    assert_eq!(records.len(), 8, "mode=max: every step");
    let hit_layers = image_layers(&hit.root, "app:1");
    let gone: Digest = records
        .values()
        .find(|r| {
            r["parent"].is_string()
                && hit_layers.contains(&r["layer"]["digest"].as_str().unwrap().parse().unwrap())
        })
        .map(|r| r["layer"]["digest"].as_str().unwrap().parse().unwrap())
        .unwrap();
    fs::remove_file(blob(&gone)).unwrap();
    let partial = build_reproducibly(
        dir,
        "partial",
        &ctx,
        &[format!("--cache-from=type=local,src={l}")],
    );
    assert!(
        partial.steps_run >= 1 && partial.steps_run < 8,
        "{:?}",
        partial.started
    );
    assert_eq!(partial.image_id, plain.image_id);
    assert!(
        partial.warnings.iter().any(|w| w.contains("missing")),
        "{:?}",
        partial.warnings
    );

    // The config is garbage: no cache at all.
    fs::write(blob(&config_digest), b"{ not json").unwrap();
    let corrupt = build_reproducibly(
        dir,
        "corrupt",
        &ctx,
        &[format!("--cache-from=type=local,src={l}")],
    );
    assert_eq!(corrupt.steps_run, 8);
    assert_eq!(corrupt.image_id, plain.image_id);
    assert!(!corrupt.warnings.is_empty());
}

/// A CI fleet sets the cache once, in kiln's config file (`build.cacheTo`,
/// `build.cacheFrom`), here on the registry with Basic auth (credentials from
/// `kiln login`); flags on the command line replace the file's values.
#[test]
fn the_config_file_sets_the_cache_on_an_authenticated_registry() {
    let plain = plain_registry();
    let registry = auth_registry();
    let (user, password) = auth_user();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = push_base(dir, &plain);
    kiln()
        .root(dir.join("login"))
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .args(["login", "-u", &user, "--password-stdin", &registry])
        .stdin(password)
        .ok();
    let cache = format!("{registry}/{}:ci", unique_repo("cache"));
    let ctx = context(dir, "ctx", &base, "hello\n");
    let config = |build: serde_json::Value| {
        fs::write(
            dir.join("kiln.json"),
            serde_json::to_vec(&serde_json::json!({ "build": build })).unwrap(),
        )
        .unwrap()
    };
    config(serde_json::json!({
        "cacheTo": [format!("type=registry,ref={cache},mode=max")],
        "cacheFrom": [format!("type=registry,ref={cache}")],
    }));
    let a = build(dir, "a", &ctx, &[]);
    assert_eq!(a.steps_run, 8);
    let b = build(dir, "b", &ctx, &[]);
    assert_eq!(b.steps_run, 0, "{:?}", b.started);
    assert_eq!(b.image_id, a.image_id);
    // A --cache-from on the command line replaces the file's.
    let elsewhere = format!("{plain}/{}:none", unique_repo("cache"));
    let c = build(dir, "c", &ctx, &[format!("--cache-from={elsewhere}")]);
    assert_eq!(c.steps_run, 8);
    // A bad value in the file is an error naming the file and the setting.
    config(serde_json::json!({ "cacheTo": ["type=registry"] }));
    let err = kiln()
        .root(dir.join("d"))
        .env("KILN_CONFIG", dir.join("kiln.json"))
        .args(["build"])
        .arg(&ctx)
        .fails();
    assert!(
        err.contains("kiln.json") && err.contains("build.cacheTo"),
        "{err}"
    );
}

/// Bad --cache-to/--cache-from values: one error naming the flag, nothing built.
#[test]
fn bad_cache_flags_are_one_error_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    for (flag, value, want) in [
        ("--cache-to", "type=registry", "type=registry needs ref="),
        (
            "--cache-to",
            "type=registry,ref=r.example/c,mode=all",
            "mode=\"all\"",
        ),
        ("--cache-to", "type=inline", "not supported"),
        ("--cache-from", "type=local,dest=/x", "use src="),
        (
            "--cache-to",
            "type=registry,ref=r.example/c,max-age=soon",
            "max-age",
        ),
    ] {
        let err = kiln()
            .root(tmp.path().join("root"))
            .args(["build", flag, value])
            .arg(tmp.path())
            .fails();
        assert!(
            err.contains(flag) && err.contains(want),
            "{flag} {value}: {err}"
        );
    }
}

/// The repository of `REGISTRY/REPO:TAG`.
fn repo_of(reference: &str) -> String {
    let r = Reference::parse(reference).unwrap();
    r.repository
}

/// `--push` to the cache's registry: a fresh runner whose build hits every
/// step downloads no layer at all — not the cache's (the push mounts the
/// layers only the cache had from the cache repository), not the base
/// image's (a FROM reads its manifest and config only; the push mounts its
/// layers from the base's repository). The pushed image is whole (a pull
/// gives runner A's image); `kiln images`, `inspect` and `prune` work on the
/// stored image without those layers, and `analyze`, `save` and `run` fetch
/// what they need.
#[test]
fn a_push_to_the_caches_registry_downloads_no_layer() {
    let registry = plain_registry();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let base = push_base(dir, &registry);
    let cache_repo = unique_repo("cache");
    let cache = format!("{registry}/{cache_repo}:main");
    let ctx = context(dir, "ctx", &base, "hello\n");
    let a = build(
        dir,
        "a",
        &ctx,
        &[format!("--cache-to=type=registry,ref={cache},mode=max")],
    );
    let app_repo = unique_repo("app");
    let app = format!("{registry}/{app_repo}:1");
    let before = blob_gets(&cache_repo).len();
    let base_repo = repo_of(&base);
    let base_before = blob_gets(&base_repo).len();
    // Tagged with the pushed name only (build()'s app:1 would be pushed too).
    let b_root = dir.join("b");
    let out = kiln()
        .root(&b_root)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .args(["build", "--progress=rawjson", "--push", "-t", &app])
        .arg(format!("--cache-from=type=registry,ref={cache}"))
        .arg(&ctx)
        .ok();
    let log = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "build_finished")
        .expect("a build_finished event");
    assert_eq!(summary["summary"]["steps_run"], 0, "{log}");
    assert_eq!(summary["summary"]["image_id"], a.image_id.as_str(), "{log}");
    assert!(!log.contains("\"warning\""), "{log}");
    let got = blob_gets(&cache_repo).split_off(before);
    assert_eq!(got, [cache_config_digest(&cache)], "only the cache config");
    assert!(blob_gets(&app_repo).is_empty());
    // Of the base image: its config (for the cache key and ENV, WORKDIR…).
    let base_layers = image_layers(&b_root, &base);
    let base_got = blob_gets(&base_repo).split_off(base_before);
    assert_eq!(base_got.len(), 1, "only the base's config: {base_got:?}");
    assert!(!base_layers.contains(&base_got[0]), "{base_got:?}");
    let b_store = Store::open(&b_root).unwrap();
    for d in &base_layers {
        assert!(!b_store.has_blob(d), "base layer {d} was downloaded");
    }
    drop(b_store);

    let pulled = dir.join("pulled");
    kiln()
        .root(&pulled)
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .args(["pull", &app])
        .ok();
    let inspect = kiln().root(&pulled).args(["inspect", &app]).stdout();
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Id"].as_str(), Some(a.image_id.as_str()), "{inspect}");

    // The stored image without its layers: listed, inspected, kept by prune.
    let images = kiln().root(&b_root).args(["images"]).stdout();
    assert!(images.contains(&app_repo), "{images}");
    let inspect = kiln().root(&b_root).args(["inspect", &app]).stdout();
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Id"].as_str(), Some(a.image_id.as_str()), "{inspect}");
    kiln().root(&b_root).args(["prune"]).ok();
    let inspect = kiln().root(&b_root).args(["inspect", &base]).stdout();
    assert!(inspect.contains("\"Id\""), "{inspect}");
    // analyze reads every layer: it fetches the base's.
    let before = blob_gets(&base_repo).len();
    let report = kiln()
        .root(&b_root)
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .args(["analyze", "--format=json", &base])
        .stdout();
    assert!(report.contains("\"layers\""), "{report}");
    let fetched: BTreeSet<Digest> = blob_gets(&base_repo)
        .split_off(before)
        .into_iter()
        .collect();
    assert_eq!(fetched, base_layers, "analyze fetched the base's layers");

    // An archive needs the layers the push left in the registry: `kiln save`
    // fetches them, and the archive loads as the same image.
    let archive = dir.join("b.tar");
    kiln()
        .root(&b_root)
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .args(["save", "-o"])
        .arg(&archive)
        .arg(&app)
        .ok();
    let loaded = dir.join("loaded");
    kiln().root(&loaded).args(["load", "-i"]).arg(&archive).ok();
    let inspect = kiln().root(&loaded).args(["inspect", &app]).stdout();
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Id"].as_str(), Some(a.image_id.as_str()), "{inspect}");

    let out = kiln()
        .root(&b_root)
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .args(["run", "--rm", &app, "cat", "/app/app.out", "/app/rt.txt"])
        .stdout();
    assert!(out.contains("hello") && out.contains("runtime"), "{out}");
}
