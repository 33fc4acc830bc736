//! `kiln build --explain-cache`: for each step that ran, why it missed — no
//! entry for its key, the step before it missed (and which missed first), or
//! what changed against the closest entry after the same step (instruction
//! text, a context file, a build arg, the base image), `--no-cache`, an entry
//! whose layer is gone — from the store's own records and from a registry
//! cache (`--cache-from`, the local test registry of scripts/setup-test-env).
//! RUN steps run in the sandbox: needs root.

use crate::util::{kiln, store_busybox, store_image};
use kiln_oci::image::ContainerConfig;
use kiln_testkit::registry::{plain as plain_registry, unique_repo};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn dockerfile(run: &str) -> String {
    format!(
        "FROM busybox:test\n\
         ARG MODE=a\n\
         WORKDIR /w\n\
         COPY a.txt .\n\
         RUN {run}\n\
         COPY b.txt .\n\
         RUN cat b.txt >> out\n"
    )
}

const RUN: &str = "echo $MODE > mode && cat a.txt > out";

fn context(dir: &Path, a: &str, run: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), dockerfile(run)).unwrap();
    fs::write(ctx.join("a.txt"), a).unwrap();
    fs::write(ctx.join("b.txt"), "b\n").unwrap();
    ctx
}

/// The steps that ran (instruction text, without the `[… n/m] ` prefix)
/// → why they missed.
fn misses(root: &Path, ctx: &Path, extra: &[&str]) -> BTreeMap<String, String> {
    let out = kiln()
        .root(root)
        .env("REGISTRY_AUTH_FILE", root.with_extension("auth.json"))
        .args(["build", "--explain-cache", "--progress=rawjson"])
        .args(extra)
        .arg(ctx)
        .ok();
    let mut m = BTreeMap::new();
    let mut started = 0;
    for l in String::from_utf8_lossy(&out.stderr).lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        if e["event"] == "step_started" && !e["name"].as_str().unwrap().contains(" FROM ") {
            started += 1;
        }
        if e["event"] == "cache_miss" {
            let name = e["name"].as_str().unwrap();
            let name = name.split_once("] ").map(|(_, s)| s).unwrap_or(name);
            m.insert(name.to_string(), e["reason"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(m.len(), started, "one reason per step that ran: {m:?}");
    m
}

fn reason<'a>(m: &'a BTreeMap<String, String>, step: &str) -> &'a str {
    m.get(step)
        .unwrap_or_else(|| panic!("{step} did not run: {m:#?}"))
}

#[test]
fn each_reason_from_the_stores_own_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = dir.join("root");
    store_busybox(&root);
    let ctx = context(dir, "a\n", RUN);

    // Nothing cached: the first step has no entry; the rest cascade from it.
    let m = misses(&root, &ctx, &[]);
    assert_eq!(m.len(), 5, "{m:#?}");
    assert_eq!(
        reason(&m, "WORKDIR /w"),
        "no cache entry for its key at all"
    );
    assert_eq!(
        reason(&m, "COPY a.txt ."),
        "the step before it missed (the first miss: [stage-0 3/7] WORKDIR /w)"
    );

    // A context file: that COPY, then a cascade from it.
    fs::write(ctx.join("a.txt"), "a, changed\n").unwrap();
    let m = misses(&root, &ctx, &[]);
    assert_eq!(
        reason(&m, "COPY a.txt ."),
        "changed against the closest entry after the same step: context file a.txt changed"
    );
    assert_eq!(
        reason(&m, &format!("RUN {RUN}")),
        "the step before it missed (the first miss: [stage-0 4/7] COPY a.txt .)"
    );
    assert_eq!(m.len(), 4, "{m:#?}");

    // A build arg: by name, never by value.
    let m = misses(&root, &ctx, &["--build-arg", "MODE=secret-value"]);
    let r = reason(&m, &format!("RUN {RUN}"));
    assert_eq!(
        r,
        "changed against the closest entry after the same step: build arg MODE changed"
    );
    assert_eq!(m.len(), 3, "{m:#?}");

    // The instruction text.
    let ctx = context(dir, "a, changed\n", &format!("{RUN} && true"));
    let m = misses(&root, &ctx, &[]);
    assert_eq!(
        reason(&m, &format!("RUN {RUN} && true")),
        "changed against the closest entry after the same step: the instruction text changed"
    );

    // --no-cache.
    let m = misses(&root, &ctx, &["--no-cache"]);
    assert_eq!(m.len(), 5);
    assert!(
        reason(&m, "WORKDIR /w").starts_with("--no-cache: "),
        "{m:#?}"
    );

    // Another base image under the same name: its digest changed.
    let rootfs = tempfile::tempdir().unwrap();
    kiln_testkit::busybox::rootfs(rootfs.path()).unwrap();
    store_image(
        &root,
        "busybox:test",
        rootfs.path(),
        ContainerConfig {
            env: vec!["PATH=/bin".into(), "NEW=1".into()],
            ..ContainerConfig::default()
        },
        "another busybox",
    );
    let m = misses(&root, &ctx, &[]);
    assert!(
        reason(&m, "WORKDIR /w").starts_with(
            "changed against the closest entry of this stage's first step: base image digest changed (sha256:"
        ),
        "{m:#?}"
    );

    // --progress=plain says the same without the flag.
    fs::write(ctx.join("b.txt"), "b, changed\n").unwrap();
    let out = kiln()
        .root(&root)
        .args(["build", "--progress=plain"])
        .arg(&ctx)
        .ok();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("CACHE MISS: changed against the closest entry after the same step: context file b.txt changed"),
        "{log}"
    );
}

#[test]
fn reasons_from_a_registry_cache_and_a_cache_whose_layer_is_gone() {
    let registry = plain_registry();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cache = format!("{registry}/{}:main", unique_repo("explain"));
    let ctx = context(dir, "a\n", RUN);
    let a = dir.join("a");
    store_busybox(&a);
    misses(
        &a,
        &ctx,
        &[&format!("--cache-to=type=registry,ref={cache},mode=max")],
    );

    // A fresh runner: the records (and their inputs) come from the registry.
    fs::write(ctx.join("a.txt"), "a, changed\n").unwrap();
    let b = dir.join("b");
    store_busybox(&b);
    let from = format!("--cache-from=type=registry,ref={cache}");
    let m = misses(&b, &ctx, &[&from, "--build-arg", "MODE=b"]);
    assert_eq!(m.len(), 4, "{m:#?}");
    assert_eq!(
        reason(&m, "COPY a.txt ."),
        "changed against the closest entry after the same step: context file a.txt changed"
    );
    assert!(reason(&m, &format!("RUN {RUN}")).starts_with("the step before it missed"));

    fs::write(ctx.join("a.txt"), "a\n").unwrap();
    let c = dir.join("c");
    store_busybox(&c);
    let m = misses(&c, &ctx, &[&from, "--build-arg", "MODE=b"]);
    assert_eq!(
        reason(&m, &format!("RUN {RUN}")),
        "changed against the closest entry after the same step: build arg MODE changed"
    );

    // The instruction text, --no-cache, and another base image under the
    // same name, each against the registry's records only.
    let ctx2 = context(&dir.join("other"), "a\n", &format!("{RUN} && true"));
    let c2 = dir.join("c2");
    store_busybox(&c2);
    let m = misses(&c2, &ctx2, &[&from]);
    assert_eq!(
        reason(&m, &format!("RUN {RUN} && true")),
        "changed against the closest entry after the same step: the instruction text changed"
    );
    let c3 = dir.join("c3");
    store_busybox(&c3);
    let m = misses(&c3, &ctx, &[&from, "--no-cache"]);
    assert_eq!(m.len(), 5);
    assert!(
        reason(&m, "COPY a.txt .").starts_with("--no-cache: "),
        "{m:#?}"
    );
    let c4 = dir.join("c4");
    let rootfs = tempfile::tempdir().unwrap();
    kiln_testkit::busybox::rootfs(rootfs.path()).unwrap();
    store_image(
        &c4,
        "busybox:test",
        rootfs.path(),
        ContainerConfig {
            env: vec!["PATH=/bin".into(), "NEW=1".into()],
            ..ContainerConfig::default()
        },
        "another busybox",
    );
    let m = misses(&c4, &ctx, &[&from]);
    assert!(
        reason(&m, "WORKDIR /w").starts_with(
            "changed against the closest entry of this stage's first step: base image digest changed (sha256:"
        ),
        "{m:#?}"
    );

    // An OCI layout cache whose layer blob of `COPY a.txt .` is gone.
    let layout = dir.join("layout");
    let l = layout.to_str().unwrap().to_string();
    let d = dir.join("d");
    store_busybox(&d);
    misses(
        &d,
        &ctx,
        &[&format!("--cache-to=type=local,dest={l},mode=max")],
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let config: serde_json::Value = serde_json::from_slice(
        &fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(config["inputsFormat"], 1, "{config}");
    let copy_a = config["records"]
        .as_object()
        .unwrap()
        .values()
        .find(|r| r["inputs"].get("file:a.txt").is_some())
        .expect("the record of COPY a.txt, with its inputs");
    fs::remove_file(blob(copy_a["layer"]["digest"].as_str().unwrap())).unwrap();
    let e = dir.join("e");
    store_busybox(&e);
    let m = misses(&e, &ctx, &[&format!("--cache-from=type=local,src={l}")]);
    assert_eq!(
        reason(&m, "COPY a.txt ."),
        "its key has a cache entry, but the entry's layer is gone (garbage-collected, or missing from the cache)"
    );
}
