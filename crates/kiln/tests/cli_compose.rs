//! `kiln compose config` and the mistakes `kiln compose build` refuses before
//! building anything, on small projects the tests write. No image is built, so
//! nothing here needs a base image or the network.

use crate::util::{kiln, make_base_images};
use std::fs;
use std::path::Path;
use std::process::Output;

/// kiln with the store `dir/store`, in `dir`, without the Compose variables of the
/// environment the tests run in.
fn kiln_in(dir: &Path, args: &[&str]) -> Output {
    kiln()
        .root(dir.join("store"))
        .args(args)
        .current_dir(dir)
        .env_remove("COMPOSE_PROJECT_NAME")
        .env_remove("COMPOSE_FILE")
        .env_remove("COMPOSE_PROFILES")
        .env("NO_COLOR", "1")
        .output()
}

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kiln failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error of a failed run, with the headline miette wrapped at 80
/// columns joined again.
fn stderr(o: &Output) -> String {
    assert!(!o.status.success(), "kiln succeeded but should not have");
    let text = String::from_utf8_lossy(&o.stderr);
    let mut out = String::new();
    for line in text.lines() {
        match line.strip_prefix("  │ ") {
            Some(rest) => {
                out.push(' ');
                out.push_str(rest);
            }
            None => {
                out.push('\n');
                out.push_str(line);
            }
        }
    }
    out
}

#[test]
fn config_merges_the_override_file_interpolates_dotenv_and_applies_profiles() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("My Shop");
    write(
        &dir,
        "compose.yaml",
        "services:\n  api:\n    build: ./api\n    image: ${REGISTRY}/api:${TAG:-dev}\n  debug:\n    image: busybox\n    profiles: [debug]\n",
    );
    write(
        &dir,
        "compose.override.yaml",
        "services:\n  api:\n    build:\n      target: prod\n      args: [VERSION=$VERSION]\n",
    );
    write(&dir, ".env", "REGISTRY=registry.local\nVERSION=1.2\n");
    let out = stdout(&kiln_in(&dir, &["compose", "config"]));
    let want = format!(
        "name: myshop\n\
         services:\n  \
         api:\n    \
         build:\n      \
         args:\n        \
         VERSION: \"1.2\"\n      \
         context: {dir}/api\n      \
         dockerfile: Dockerfile\n      \
         target: prod\n    \
         image: registry.local/api:dev\n    \
         networks:\n      \
         default: null\n\
         networks:\n  \
         default:\n    \
         name: myshop_default\n",
        dir = dir.display()
    );
    assert_eq!(out, want);
    let names = stdout(&kiln_in(
        &dir,
        &[
            "compose",
            "--profile",
            "debug",
            "-p",
            "other",
            "config",
            "--services",
        ],
    ));
    assert_eq!(names, "api\ndebug\n");
    // -f replaces discovery (no override file then); --env-file replaces .env.
    write(&dir, "ci.env", "REGISTRY=ci\nTAG=7\n");
    let out = stdout(&kiln_in(
        &dir,
        &[
            "compose",
            "-f",
            "compose.yaml",
            "--env-file",
            "ci.env",
            "config",
        ],
    ));
    assert!(out.contains("image: ci/api:7\n"), "{out}");
    assert!(!out.contains("target: prod"), "{out}");
}

#[test]
fn mistakes_are_one_located_message() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("p");
    let case = |compose: &str, args: &[&str]| {
        write(&dir, "compose.yaml", compose);
        write(&dir, "Dockerfile", "FROM busybox:test\n");
        let mut a = vec!["compose"];
        a.extend_from_slice(args);
        stderr(&kiln_in(&dir, &a))
    };
    let e = case(
        "services:\n  api:\n    build:\n      context: .\n      args:\n        TOKEN: ${TOKEN:?set TOKEN in .env}\n",
        &["config"],
    );
    assert!(
        e.contains("compose.yaml:6: services.api.build.args.TOKEN: required variable TOKEN is missing a value: set TOKEN in .env"),
        "{e}"
    );
    assert!(
        e.contains("TOKEN: ${TOKEN:?set TOKEN in .env}"),
        "no excerpt: {e}"
    );
    let e = case(
        "services:\n  api:\n    build:\n      context: .\n      platforms: [linux/amd64, linux/s390x]\n",
        &["build"],
    );
    assert!(
        e.contains("compose.yaml:5: services.api.build.platforms: kiln builds only for this machine's platform"),
        "{e}"
    );
    let e = case(
        "services:\n  api:\n    build:\n      context: .\n      ssh: [default=/nonexistent/key]\n",
        &["build"],
    );
    assert!(
        e.contains("compose.yaml:5: services.api.build.ssh: --ssh default: /nonexistent/key:"),
        "{e}"
    );
    let e = case(
        "services:\n  a:\n    build:\n      context: .\n      additional_contexts: {b: 'service:b'}\n  b:\n    build:\n      context: .\n      additional_contexts:\n        a: service:a\n",
        &["build"],
    );
    assert!(
        e.contains("services.b.build.additional_contexts.a: service:a makes a cycle: a -> b -> a"),
        "{e}"
    );
    let e = case("services:\n  a:\n    build: .\n", &["build", "nope"]);
    assert!(e.contains("no such service: nope"), "{e}");
    let e = case(
        "services:\n  a:\n    build:\n      context: .\n      network: my_net\n",
        &["build"],
    );
    assert!(
        e.contains("compose.yaml:5: services.a.build.network: kiln builds use the network default, host or none"),
        "{e}"
    );
    let e = case(
        "services:\n  a:\n    build:\n      context: .\n      dockerfile: Missing.Dockerfile\n",
        &["build"],
    );
    assert!(
        e.contains("compose.yaml:5: services.a.build.dockerfile: cannot read"),
        "{e}"
    );
    // Nothing was built.
    assert_eq!(stdout(&kiln_in(&dir, &["images", "-q"])), "");
}

/// A busybox-only project whose RUN steps print what the build: keys gave
/// them. Needs root (the sandbox) and Debian's busybox-static (for
/// scripts/make-base-images); no network.
#[test]
fn build_keys_reach_the_run_steps_and_the_image_needs_root() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("keys");
    make_base_images(&dir.join("store"), Some("busybox"));
    write(
        &dir,
        "compose.yaml",
        concat!(
            "services:\n",
            "  base:\n",
            "    build:\n",
            "      dockerfile_inline: |\n",
            "        FROM busybox:test\n",
            "        RUN echo from-base > /base.txt\n",
            "  app:\n",
            "    build:\n",
            "      context: app\n",
            "      args: [GREETING=hello]\n",
            "      extra_hosts: ['db.internal=10.1.2.3', 'v6.internal=[fd00::1]']\n",
            "      shm_size: 32m\n",
            "      network: none\n",
            "      secrets: [token]\n",
            "      labels: {com.example.team: builders}\n",
            "      tags: ['app:extra']\n",
            "      additional_contexts: {base: 'service:base', files: ./files}\n",
            "      cache_from: ['type=local,src=./app-cache']\n",
            "      cache_to: ['type=local,dest=./app-cache,mode=max']\n",
            "secrets:\n",
            "  token:\n",
            "    file: ./token.txt\n",
        ),
    );
    write(
        &dir,
        "app/Dockerfile",
        "FROM base\nARG GREETING\nCOPY --from=files note.txt /note.txt\n\
         RUN --mount=type=secret,id=token echo \"$GREETING $(cat /run/secrets/token) $(cat /base.txt) $(cat /note.txt)\" && \
         grep internal /etc/hosts && df -k /dev/shm | tail -1 && (ping -c1 -W1 10.1.2.3 >/dev/null 2>&1 || echo no-network)\n",
    );
    write(&dir, "files/note.txt", "a-note");
    write(&dir, "token.txt", "s3cret");
    let out = kiln_in(&dir, &["compose", "build", "--progress=plain"]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("hello s3cret from-base a-note"), "{log}");
    assert!(log.contains("10.1.2.3\tdb.internal"), "{log}");
    assert!(log.contains("fd00::1\tv6.internal"), "{log}");
    assert!(log.contains("no-network"), "{log}");
    // The first build finds no cache there and exports one into the project.
    assert!(log.contains("app-cache:latest: not found"), "{log}");
    assert!(dir.join("app-cache/index.json").is_file(), "{log}");
    // /dev/shm of 32 MiB: 32768 1K-blocks.
    let shm = log
        .lines()
        .find(|l| l.contains("/dev/shm") && !l.contains("RUN"))
        .unwrap_or_else(|| panic!("no df line: {log}"));
    assert!(shm.contains(" 32768 "), "{shm}");
    let inspect = stdout(&kiln_in(&dir, &["inspect", "app:extra"]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Config"]["Labels"]["com.example.team"], "builders");
    assert!(stdout(&kiln_in(&dir, &["images"])).contains("keys-app"));
}
