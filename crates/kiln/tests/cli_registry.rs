//! `kiln pull/push/login/logout` run as a user would, against the local registries
//! started by scripts/setup-test-env (these tests need them and fail when none
//! answers; `kiln_testkit::registry` says where they are).

use crate::util::kiln;
use kiln_oci::image::{media_type, write_image};
use kiln_oci::{BlobRef, Digest, ImageConfig, ManifestFormat, Store};
use kiln_testkit::registry::{auth as auth_registry, plain as plain_registry, unique_repo};
use kiln_testkit::Kiln;
use std::collections::BTreeMap;
use std::path::Path;

/// kiln with a store, an auth file and a config file inside `dir`, and `stdin`.
fn kiln_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> Kiln {
    let mut cmd = kiln();
    cmd.root(dir.join("root"))
        .args(args)
        .env("REGISTRY_AUTH_FILE", dir.join("auth.json"))
        .env("KILN_CONFIG", dir.join("kiln.json"))
        .env("HOME", dir)
        .stdin(stdin.unwrap_or_default());
    cmd
}

fn ok(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    kiln_in(dir, args, stdin).stdout()
}

fn fails(dir: &Path, args: &[&str], stdin: Option<&str>) -> String {
    kiln_in(dir, args, stdin).fails()
}

fn store_image(dir: &Path, name: &str, content: &[u8]) -> BlobRef {
    let store = Store::open(dir.join("root")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(content.len() as u64);
    h.set_mtime(0);
    b.append_data(&mut h, "file", content).unwrap();
    let data = b.into_inner().unwrap();
    let mut config = ImageConfig::for_host();
    config.rootfs.diff_ids.push(Digest::of(&data));
    let layer = BlobRef {
        media_type: media_type::OCI_LAYER.into(),
        digest: store.put_blob(&data).unwrap(),
        size: data.len() as u64,
        annotations: BTreeMap::new(),
    };
    let m = write_image(&store, &config, &[layer], ManifestFormat::Oci).unwrap();
    store.tag(&name.parse().unwrap(), m.clone()).unwrap();
    m
}

fn digest_line(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no digest in {out}"))
        .to_string()
}

#[test]
fn push_rmi_pull_keeps_the_digest() {
    let registry = plain_registry();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = store_image(d, "app:1", b"cli round trip");
    let dest = format!("{registry}/{}:1", unique_repo("rt"));
    let out = ok(d, &["push", "app:1", &dest], None);
    assert_eq!(digest_line(&out), m.digest.to_string());
    assert!(out.contains("2 uploaded"), "{out}");
    ok(d, &["rmi", "app:1"], None);
    ok(d, &["prune"], None);
    assert_eq!(
        std::fs::read_dir(d.join("root/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    let out = ok(d, &["pull", &dest], None);
    assert_eq!(digest_line(&out), m.digest.to_string());
    assert_eq!(out.matches(": Pull complete").count(), 1, "{out}");
    let out = ok(d, &["pull", &dest], None);
    assert_eq!(out.matches(": Already exists").count(), 1, "{out}");
    assert!(out.contains("0 blob(s) downloaded"), "{out}");
    let images = ok(d, &["images", "--format", "json"], None);
    assert!(
        images.contains(&dest.rsplit_once(':').unwrap().0.to_string()),
        "{images}"
    );
    // Pushing again uploads nothing; -q prints only the digest.
    let out = ok(d, &["push", "-q", &dest], None);
    assert_eq!(out.trim(), m.digest.to_string());
}

#[test]
fn errors_name_the_reference_in_one_line() {
    let registry = plain_registry();
    let dir = tempfile::tempdir().unwrap();
    let r = format!("{registry}/{}:missing", unique_repo("nope"));
    let err = fails(dir.path(), &["pull", &r], None);
    // One message (the terminal renderer may wrap it).
    let joined = err
        .split_whitespace()
        .filter(|w| !matches!(*w, "│" | "×"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        joined.contains(&format!(
            "{r}: not found: the registry has no manifest \"missing\""
        )),
        "{err}"
    );
    assert!(
        !err.contains("Caused by") && !err.contains("backtrace"),
        "{err}"
    );
    let err = fails(dir.path(), &["pull", "127.0.0.1:1/x:1"], None);
    assert!(
        err.contains("127.0.0.1:1/x:1: cannot reach the registry"),
        "{err}"
    );
    let err = fails(dir.path(), &["pull", "Bad:Name"], None);
    assert!(err.contains("invalid image reference"), "{err}");
    let err = fails(dir.path(), &["pull", "--platform", "linux", "x"], None);
    assert!(err.contains("invalid platform"), "{err}");
    let err = fails(
        dir.path(),
        &["push", "absent:1", &format!("{registry}/x:1")],
        None,
    );
    assert!(err.contains("no such image"), "{err}");
}

#[test]
fn login_with_wrong_password_fails_and_right_one_allows_push() {
    let registry = auth_registry();
    let (user, password) = kiln_testkit::registry::auth_user();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = fails(
        d,
        &["login", "-u", &user, "--password-stdin", &registry],
        Some("wrong-password\n"),
    );
    assert!(
        err.contains("unauthorized") && err.contains(&registry),
        "{err}"
    );
    assert!(
        !err.contains("wrong-password"),
        "the password is printed: {err}"
    );
    assert!(!d.join("auth.json").exists());

    store_image(d, "secret-app:1", b"needs auth");
    let dest = format!("{registry}/{}:1", unique_repo("auth"));
    let err = fails(d, &["push", "secret-app:1", &dest], None);
    assert!(err.contains("unauthorized") && err.contains(&dest), "{err}");

    let out = ok(
        d,
        &["login", "-u", &user, "--password-stdin", &registry],
        Some(&format!("{password}\n")),
    );
    assert!(out.contains("Login Succeeded"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(d.join("auth.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    ok(d, &["push", "secret-app:1", &dest], None);
    // --authfile overrides REGISTRY_AUTH_FILE.
    let elsewhere = d.join("other-auth.json");
    let err = fails(
        d,
        &["pull", "--authfile", elsewhere.to_str().unwrap(), &dest],
        None,
    );
    assert!(err.contains("unauthorized"), "{err}");
    ok(d, &["logout", &registry], None);
    let err = fails(d, &["pull", &dest], None);
    assert!(err.contains("unauthorized"), "{err}");
    let err = fails(d, &["logout", &registry], None);
    assert!(err.contains("not logged in"), "{err}");
}

#[test]
fn pull_through_a_docker_hub_mirror_from_the_config_file() {
    let registry = plain_registry();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = store_image(d, "base:1", b"base image from the mirror");
    let name = unique_repo("base").replace('/', "-");
    ok(
        d,
        &["push", "base:1", &format!("{registry}/library/{name}:1")],
        None,
    );
    ok(d, &["rmi", "base:1"], None);
    std::fs::write(
        d.join("kiln.json"),
        format!(r#"{{"registry":{{"docker.io":{{"mirrors":["{registry}"]}}}}}}"#),
    )
    .unwrap();
    let out = ok(d, &["pull", &format!("library/{name}:1")], None);
    assert!(
        out.contains(&format!("Pulled through mirror {registry}")),
        "{out}"
    );
    assert_eq!(digest_line(&out), m.digest.to_string());
    let images = ok(d, &["images"], None);
    assert!(images.contains(&name), "{images}");
}

#[test]
fn credentials_come_from_a_credential_helper() {
    let registry = auth_registry();
    let (user, password) = kiln_testkit::registry::auth_user();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = d.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-kilntest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\ncase \"$1\" in get) read server; echo \"{{\\\"ServerURL\\\":\\\"$server\\\",\\\"Username\\\":\\\"{user}\\\",\\\"Secret\\\":\\\"{password}\\\"}}\";; *) exit 1;; esac\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        d.join("auth.json"),
        format!(r#"{{"credHelpers":{{"{registry}":"kilntest"}}}}"#),
    )
    .unwrap();
    store_image(d, "helped:1", b"credentials from a helper");
    let dest = format!("{registry}/{}:1", unique_repo("helper"));
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    kiln()
        .root(d.join("root"))
        .args(["push", "helped:1", &dest])
        .env("REGISTRY_AUTH_FILE", d.join("auth.json"))
        .env("KILN_CONFIG", d.join("kiln.json"))
        .env("PATH", path)
        .ok();
    // Without the helper on PATH the same auth file cannot be used.
    let err = fails(d, &["push", "helped:1", &dest], None);
    assert!(err.contains("docker-credential-kilntest"), "{err}");
}

#[test]
fn dockerfile_from_library_image_builds_through_a_mirror() {
    let registry = plain_registry();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    store_image(d, "base:1", b"base image from the mirror");
    let name = unique_repo("base").replace('/', "-");
    ok(
        d,
        &["push", "base:1", &format!("{registry}/library/{name}:1")],
        None,
    );
    ok(d, &["rmi", "base:1"], None);
    std::fs::write(
        d.join("kiln.json"),
        format!(r#"{{"registry":{{"docker.io":{{"mirrors":["{registry}"]}}}}}}"#),
    )
    .unwrap();
    let ctx = d.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    // The Dockerfile names Docker Hub's library image; the mirror serves it.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM library/{name}:1\nCOPY hello.txt /\n"),
    )
    .unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello\n").unwrap();
    let out_dir = d.join("out");
    ok(
        d,
        &[
            "build",
            "--progress=plain",
            "-t",
            "app:1",
            "-o",
            &format!("type=local,dest={}", out_dir.display()),
            ctx.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        std::fs::read(out_dir.join("file")).unwrap(),
        b"base image from the mirror"
    );
    assert_eq!(
        std::fs::read(out_dir.join("hello.txt")).unwrap(),
        b"hello\n"
    );
}

#[test]
fn build_push_then_pull_gives_the_same_digest() {
    let registry = plain_registry();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    store_image(d, "base:1", b"base for build --push");
    let ctx = d.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1\nCOPY app.txt /app.txt\nCMD [\"/app\"]\n",
    )
    .unwrap();
    std::fs::write(ctx.join("app.txt"), "the app\n").unwrap();
    let dest = format!("{registry}/{}:1", unique_repo("built"));
    let built = build_and_push(d, &ctx, &dest);
    ok(d, &["rmi", &dest], None);
    let out = ok(d, &["pull", &dest], None);
    assert_eq!(digest_line(&out), built);
}

/// Builds `ctx` in the store under `d` with `--push -t dest`; the pushed
/// manifest's digest, from `--metadata-file`.
fn build_and_push(d: &Path, ctx: &Path, dest: &str) -> String {
    let meta = d.join("meta.json");
    ok(
        d,
        &[
            "build",
            "--progress=plain",
            "--push",
            "-t",
            dest,
            "--metadata-file",
            meta.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ],
        None,
    );
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    meta["containerimage.digest"].as_str().unwrap().to_string()
}

/// A layer of random bytes (gzip-compressed as stored deflate blocks, not run
/// through the deflater) is pushed and pulled into another store with the
/// digests it was built with, and the pulled blob is a gzip stream that the
/// system's gzip reads back to the file's bytes.
#[test]
fn a_random_layer_is_pushed_and_pulled_back_with_its_digests() {
    let registry = plain_registry();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    store_image(d, "base:1", b"base for a random layer");
    let ctx = d.join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM base:1\nCOPY weights.bin notes.txt /data/\n",
    )
    .unwrap();
    // 3 MiB and a bit of random-looking bytes (to the encoder's test).
    let weights = kiln_testkit::bytes::random((3 << 20) + 8000, 0x0077_6569_6768_7473);
    std::fs::write(ctx.join("weights.bin"), &weights).unwrap();
    std::fs::write(ctx.join("notes.txt"), "notes\n".repeat(5000)).unwrap();
    let dest = format!("{registry}/{}:1", unique_repo("random"));
    let built = build_and_push(d, &ctx, &dest);
    // The registry serves the manifest kiln built.
    let served = crate::util::skopeo_raw(&dest);
    assert_eq!(Digest::of(&served).to_string(), built);

    // Another store pulls it: same manifest digest, so same layer digests.
    let other = tempfile::tempdir().unwrap();
    let o = other.path();
    let out = ok(o, &["pull", &dest], None);
    assert_eq!(digest_line(&out), built);
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        std::fs::read(o.join("root/blobs/sha256").join(hex)).unwrap()
    };
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&built)).unwrap();
    assert_eq!(
        manifest,
        serde_json::from_slice::<serde_json::Value>(&served).unwrap()
    );
    let config: serde_json::Value =
        serde_json::from_slice(&blob(manifest["config"]["digest"].as_str().unwrap())).unwrap();
    let layer = manifest["layers"].as_array().unwrap().last().unwrap();
    let media_type = layer["mediaType"].as_str().unwrap();
    assert!(media_type.ends_with("gzip"), "{media_type}");
    let digest = layer["digest"].as_str().unwrap();
    let gz = blob(digest);
    assert_eq!(Digest::of(&gz).to_string(), digest);
    assert_eq!(layer["size"].as_u64().unwrap(), gz.len() as u64);

    // The system's gzip reads the blob; its tar is the diff_id and holds the file.
    let unzipped = kiln_testkit::bytes::system_gunzip(&gz);
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(
        diff_ids.last().unwrap().as_str().unwrap(),
        Digest::of(&unzipped).to_string()
    );
    let mut found = false;
    let mut archive = tar::Archive::new(&unzipped[..]);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().ends_with("data/weights.bin") {
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            assert!(
                content == weights,
                "weights.bin differs after the round trip"
            );
            found = true;
        }
    }
    assert!(found, "no data/weights.bin in the pulled layer");
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The HTTP library's trace output is a hex dump of the wire, Authorization
/// header included: `--log-level trace` (or any KILN_LOG) must not print it.
#[test]
fn trace_logging_never_prints_credentials() {
    let registry = auth_registry();
    let (user, password) = kiln_testkit::registry::auth_user();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        d,
        &["login", "-u", &user, "--password-stdin", &registry],
        Some(&format!("{password}\n")),
    );
    store_image(d, "traced:1", b"logged at trace level");
    let dest = format!("{registry}/{}:1", unique_repo("trace"));
    ok(d, &["push", "traced:1", &dest], None);
    let credential = base64(format!("{user}:{password}").as_bytes());
    for (args, env) in [
        (vec!["--log-level", "trace", "pull", &dest], vec![]),
        (
            vec!["pull", &dest],
            vec![("KILN_LOG", "trace,ureq_proto::util=trace")],
        ),
    ] {
        // An empty store, so that the pull downloads everything.
        std::fs::remove_dir_all(d.join("root")).unwrap();
        let mut cmd = kiln_in(d, &args, None);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        // Trace output is there (the test would pass vacuously otherwise) ...
        assert!(err.contains("TRACE"), "{err}");
        // ... but not the wire: no hex-dump rows, no header, no secret.
        let lower = err.to_lowercase();
        assert!(!lower.contains("authoriz"), "{err}");
        assert!(!err.contains(&credential[..credential.len() - 4]), "{err}");
        assert!(!err.contains(&password), "{err}");
        let hex_rows = err
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .skip_while(|w| *w != "TRACE")
                    .nth(1)
                    .is_some_and(|w| {
                        w.len() == 4 && w.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
                    })
            })
            .count();
        assert_eq!(hex_rows, 0, "{err}");
    }
}
