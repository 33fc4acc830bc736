//! Pull and push against the local registries started by scripts/setup-test-env
//! (these tests need them and fail, not skip, when none answers).

mod registry_support;

use kiln_oci::image::media_type;
use kiln_oci::registry::{
    pull, pull_if_missing, push, Credentials, Platform, PullPolicy, PushOptions, Reference,
    RegistryConfig, RegistryContext, RegistryError,
};
use kiln_oci::{BlobRef, Digest, ManifestFormat, Store};
use registry_support::*;
use std::collections::BTreeMap;
use std::process::Command;

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

#[test]
fn push_then_pull_into_an_empty_store_gives_identical_digests() {
    let registry = plain_registry();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let src = Store::open(dir.path().join("src")).unwrap();
    let image = store_image(
        &src,
        "amd64",
        &[busybox_layer(), layer(&[("app", b"app v1")])],
        ManifestFormat::Oci,
    );
    let dest = reference(&format!("{registry}/{}:1", unique_repo("roundtrip")));
    let report = push(&src, &image, &dest, &PushOptions::default(), &ctx).unwrap();
    assert_eq!(report.digest, Some(image.digest));
    assert_eq!(report.uploaded.len(), 3, "{report:?}");

    // "Delete local": a fresh store.
    let dst = Store::open(dir.path().join("dst")).unwrap();
    let pulled = pull(&dst, &dest, None, &ctx).unwrap();
    assert_eq!(pulled.manifest.digest, image.digest);
    assert_eq!(pulled.resolved_digest, image.digest);
    assert_eq!(blobs_of(&dst, &pulled.manifest), blobs_of(&src, &image));
    for d in blobs_of(&src, &image) {
        assert_eq!(dst.read_blob(&d).unwrap(), src.read_blob(&d).unwrap());
    }
    assert!(dst.verify().unwrap().is_ok());
    assert_eq!(
        dst.resolve(&dest.store_name().unwrap()).unwrap().digest,
        image.digest
    );
    assert_eq!(
        std::fs::read_dir(dst.root().join("tmp")).unwrap().count(),
        0
    );

    // Pulling again fetches no blob; by digest too.
    let again = pull(&dst, &dest, None, &ctx).unwrap();
    assert!(again.downloaded.is_empty(), "{:?}", again.downloaded);
    let by_digest = reference(&format!(
        "{}/{}@{}",
        dest.registry, dest.repository, image.digest
    ));
    assert!(pull(&dst, &by_digest, None, &ctx)
        .unwrap()
        .downloaded
        .is_empty());
    // pull_if_missing does not go to the registry for a stored image.
    let stored = pull_if_missing(&dst, &dest, None, PullPolicy::Never, &ctx).unwrap();
    assert_eq!(stored.digest, image.digest);
}

#[test]
fn second_image_sharing_a_base_uploads_only_new_blobs_and_mounts_across_repos() {
    let registry = plain_registry();
    let log = plain_registry_log();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let store = Store::open(dir.path().join("s")).unwrap();
    let base = busybox_layer();
    let a = store_image(
        &store,
        "amd64",
        &[base.clone(), layer(&[("a", b"image a")])],
        ManifestFormat::Oci,
    );
    let b = store_image(
        &store,
        "amd64",
        &[base.clone(), layer(&[("b", b"image b")])],
        ManifestFormat::Docker,
    );
    let repo = unique_repo("shared");
    push(
        &store,
        &a,
        &reference(&format!("{registry}/{repo}:a")),
        &PushOptions::default(),
        &ctx,
    )
    .unwrap();

    let uploads = |repo: &str| {
        count_log_lines(&log, &[&format!("\"PUT /v2/{repo}/blobs/uploads/")])
            + count_log_lines(&log, &[&format!("\"PATCH /v2/{repo}/blobs/uploads/")])
    };
    let before = uploads(&repo);
    assert_eq!(before, 3, "first push uploads base, layer and config");
    let report = push(
        &store,
        &b,
        &reference(&format!("{registry}/{repo}:b")),
        &PushOptions::default(),
        &ctx,
    )
    .unwrap();
    assert_eq!(report.skipped, vec![base_digest(&base)], "{report:?}");
    assert_eq!(report.uploaded.len(), 2);
    assert_eq!(
        uploads(&repo) - before,
        2,
        "only the new layer and config are uploaded"
    );

    // Another repository of the same registry: the shared layer is mounted, not sent.
    let other = unique_repo("mounted");
    let report = push(
        &store,
        &b,
        &reference(&format!("{registry}/{other}:b")),
        &PushOptions::default(),
        &ctx,
    )
    .unwrap();
    assert_eq!(report.mounted.len(), 3, "{report:?}");
    assert_eq!(uploads(&other), 0);
    assert_eq!(
        count_log_lines(
            &log,
            &[
                &format!("\"POST /v2/{other}/blobs/uploads/?mount="),
                "\" 201 "
            ]
        ),
        3
    );
    // And it pulls back whole.
    let fresh = Store::open(dir.path().join("fresh")).unwrap();
    let pulled = pull(
        &fresh,
        &reference(&format!("{registry}/{other}:b")),
        None,
        &ctx,
    )
    .unwrap();
    assert_eq!(pulled.manifest.digest, b.digest);
    assert_eq!(pulled.manifest.media_type, media_type::DOCKER_MANIFEST);
}

fn base_digest(l: &(Vec<u8>, Digest)) -> Digest {
    Digest::of(&l.0)
}

#[test]
fn chunked_upload_round_trips() {
    let registry = plain_registry();
    let log = plain_registry_log();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let store = Store::open(dir.path().join("s")).unwrap();
    // Incompressible content so the layer spans several chunks.
    let mut noise = Vec::with_capacity(600_000);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while noise.len() < 600_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    let image = store_image(
        &store,
        "amd64",
        &[layer(&[("noise", &noise)])],
        ManifestFormat::Oci,
    );
    let repo = unique_repo("chunked");
    let dest = reference(&format!("{registry}/{repo}:1"));
    push(
        &store,
        &image,
        &dest,
        &PushOptions {
            chunk_size: Some(128 * 1024),
        },
        &ctx,
    )
    .unwrap();
    assert!(count_log_lines(&log, &[&format!("\"PATCH /v2/{repo}/blobs/uploads/")]) >= 4);
    let fresh = Store::open(dir.path().join("fresh")).unwrap();
    assert_eq!(
        pull(&fresh, &dest, None, &ctx).unwrap().manifest.digest,
        image.digest
    );
    assert!(fresh.verify().unwrap().is_ok());
}

#[test]
fn multi_platform_index_resolves_to_the_host_platform() {
    let registry = plain_registry();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let store = Store::open(dir.path().join("s")).unwrap();
    let host = Platform::host();
    let other_arch = if host.architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let mine = store_image(
        &store,
        &host.architecture,
        &[layer(&[("arch", host.architecture.as_bytes())])],
        ManifestFormat::Oci,
    );
    let theirs = store_image(
        &store,
        other_arch,
        &[layer(&[("arch", other_arch.as_bytes())])],
        ManifestFormat::Oci,
    );
    let entry = |m: &BlobRef, arch: &str| {
        format!(
            r#"{{"mediaType":"{}","digest":"{}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
            m.media_type, m.digest, m.size
        )
    };
    // The other platform first, so "first entry" would be wrong.
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{},{}]}}"#,
        media_type::OCI_INDEX,
        entry(&theirs, other_arch),
        entry(&mine, &host.architecture)
    );
    let digest = store.put_blob(index.as_bytes()).unwrap();
    let target = BlobRef {
        media_type: media_type::OCI_INDEX.into(),
        digest,
        size: index.len() as u64,
        annotations: BTreeMap::new(),
    };
    let dest = reference(&format!("{registry}/{}:multi", unique_repo("index")));
    let report = push(&store, &target, &dest, &PushOptions::default(), &ctx).unwrap();
    assert_eq!(report.digest, Some(digest));

    let fresh = Store::open(dir.path().join("fresh")).unwrap();
    let pulled = pull(&fresh, &dest, None, &ctx).unwrap();
    assert_eq!(pulled.resolved_digest, digest);
    assert_eq!(pulled.manifest.digest, mine.digest);
    let other = Platform::parse(&format!("linux/{other_arch}")).unwrap();
    let pulled = pull(&fresh, &dest, Some(&other), &ctx).unwrap();
    assert_eq!(pulled.manifest.digest, theirs.digest);
    let err = pull(
        &fresh,
        &dest,
        Some(&Platform::parse("linux/s390x").unwrap()),
        &ctx,
    )
    .unwrap_err();
    assert!(
        matches!(err, RegistryError::NoMatchingPlatform { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("linux/s390x") && err.to_string().contains(&dest.to_string()),
        "{err}"
    );
}

#[test]
fn unknown_tag_and_unreachable_registry_are_clear_errors_leaving_nothing() {
    let registry = plain_registry();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let store = Store::open(dir.path().join("s")).unwrap();
    let r = reference(&format!("{registry}/{}:nope", unique_repo("missing")));
    let err = pull(&store, &r, None, &ctx).unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(&r.to_string()), "{err}");
    // Nothing listens on port 1 of loopback.
    let r = reference("127.0.0.1:1/x:1");
    let err = pull(&store, &r, None, &ctx).unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().starts_with("127.0.0.1:1/x:1: cannot reach"),
        "{err}"
    );
    assert!(store.images().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn basic_auth_registry_needs_the_right_password() {
    let registry = auth_registry();
    let (user, password) = auth_user();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let image = store_image(
        &store,
        "amd64",
        &[layer(&[("f", b"authenticated")])],
        ManifestFormat::Oci,
    );
    let dest = reference(&format!("{registry}/{}:1", unique_repo("auth")));

    let anonymous = context(dir.path());
    let err = push(&store, &image, &dest, &PushOptions::default(), &anonymous).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    let wrong = context(&dir.path().join("wrong"));
    wrong
        .auth
        .store(
            &registry,
            &Credentials {
                username: user.clone(),
                password: "wrong".into(),
            },
        )
        .unwrap();
    let err = push(&store, &image, &dest, &PushOptions::default(), &wrong).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(!err.to_string().contains("wrong\""), "{err}");
    assert!(kiln_oci::registry::verify_credentials(
        &registry,
        &Credentials {
            username: user.clone(),
            password: "wrong".into()
        }
    )
    .is_err());

    let right = context(&dir.path().join("right"));
    right
        .auth
        .store(
            &registry,
            &Credentials {
                username: user.clone(),
                password: password.clone(),
            },
        )
        .unwrap();
    kiln_oci::registry::verify_credentials(
        &registry,
        &Credentials {
            username: user,
            password,
        },
    )
    .unwrap();
    push(&store, &image, &dest, &PushOptions::default(), &right).unwrap();
    let fresh = Store::open(dir.path().join("fresh")).unwrap();
    assert_eq!(
        pull(&fresh, &dest, None, &right).unwrap().manifest.digest,
        image.digest
    );
}

#[test]
fn mirror_serves_docker_hub_references() {
    let registry = plain_registry();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let image = store_image(
        &store,
        "amd64",
        &[layer(&[("base", b"mirrored base")])],
        ManifestFormat::Docker,
    );
    let repo = unique_repo("mirror");
    let direct = context(dir.path());
    push(
        &store,
        &image,
        &reference(&format!("{registry}/library/{}:1", repo.replace('/', "-"))),
        &PushOptions::default(),
        &direct,
    )
    .unwrap();

    let mut config = RegistryConfig::default();
    config.registry.insert(
        "docker.io".into(),
        serde_json::from_str(&format!(r#"{{"mirrors":["{registry}"]}}"#)).unwrap(),
    );
    let ctx = RegistryContext {
        config,
        auth: direct.auth.clone(),
    };
    let fresh = Store::open(dir.path().join("fresh")).unwrap();
    let r = reference(&format!("library/{}:1", repo.replace('/', "-")));
    assert_eq!(r.registry, "docker.io");
    let pulled = pull(&fresh, &r, None, &ctx).unwrap();
    assert_eq!(pulled.source_registry, registry);
    assert_eq!(pulled.manifest.digest, image.digest);
    assert_eq!(
        fresh.resolve(&r.store_name().unwrap()).unwrap().digest,
        image.digest
    );
}

#[test]
fn skopeo_reads_what_kiln_pushed_and_kiln_pulls_what_skopeo_pushed() {
    let registry = plain_registry();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let store = Store::open(dir.path().join("s")).unwrap();
    let image = store_image(
        &store,
        "amd64",
        &[busybox_layer(), layer(&[("x", b"for skopeo")])],
        ManifestFormat::Oci,
    );
    let dest = reference(&format!("{registry}/{}:1", unique_repo("skopeo")));
    push(&store, &image, &dest, &PushOptions::default(), &ctx).unwrap();
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/{}:1", dest.registry, dest.repository),
        ])
        .output()
        .expect("skopeo is installed (scripts/setup-test-env)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Digest"], image.digest.to_string());
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);

    // skopeo copies the store's own OCI layout entry to the registry; kiln pulls it.
    store
        .tag(&"skopeo-src:1".parse().unwrap(), image.clone())
        .unwrap();
    let theirs = format!("{registry}/{}:1", unique_repo("by-skopeo"));
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", "--format", "v2s2"])
        .arg(format!("oci:{}:skopeo-src:1", store.root().display()))
        .arg(format!("docker://{theirs}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = Store::open(dir.path().join("fresh")).unwrap();
    let pulled = pull(&fresh, &reference(&theirs), None, &ctx).unwrap();
    assert_eq!(pulled.manifest.media_type, media_type::DOCKER_MANIFEST);
    let layers = kiln_oci::image::load_image(&fresh, &pulled.manifest)
        .unwrap()
        .layers;
    assert_eq!(layers.len(), 2);
    assert!(fresh.verify().unwrap().is_ok());
}
