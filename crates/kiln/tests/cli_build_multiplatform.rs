//! `kiln build --platform linux/amd64,linux/arm64`: a Go HTTP service in the
//! cross-compilation pattern (`FROM --platform=$BUILDPLATFORM golang` + `ARG
//! TARGETOS TARGETARCH` + `GOOS=$TARGETOS GOARCH=$TARGETARCH go build`, a final
//! `FROM scratch` stage per platform) builds into one image index; the index
//! pushed to the local registry is read by `skopeo inspect --raw` and `buildah
//! manifest inspect`; the arm64 binary runs under `kiln run --platform
//! linux/arm64` and in a RUN step of an arm64 build (QEMU through
//! binfmt_misc); the build stage's steps that do not
//! depend on the target run once, natively; pulling both platforms into
//! another store keeps both under the name.
//!
//! Needs root, the local registry, qemu-user-static registered with binfmt_misc
//! and the golang base image (all from `scripts/setup-test-env` and
//! `scripts/make-base-images`).

use crate::util::{buildah_manifest_inspect, kiln, make_base_images, skopeo_raw};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const MAIN_GO: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
)

func main() {
	arch := runtime.GOOS + "/" + runtime.GOARCH
	if len(os.Args) > 1 && os.Args[1] == "arch" {
		fmt.Println(arch)
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "write" {
		if err := os.WriteFile("/arch", []byte(arch+"\n"), 0o644); err != nil {
			panic(err)
		}
		return
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, arch) })
	if err := http.ListenAndServe(":8080", nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
"#;

/// `/stamp` is random: the same bytes in both platforms' images means the
/// step that wrote it ran once. `/built-on` is the machine the go build ran on.
const DOCKERFILE: &str = r#"FROM --platform=$BUILDPLATFORM golang:1.19-bookworm AS build
WORKDIR /src
COPY go.mod ./
RUN go mod download && head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > /stamp
COPY main.go ./
ARG TARGETOS TARGETARCH
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/archsvc . \
 && uname -m > /out/built-on

FROM scratch
COPY --from=build /stamp /stamp
COPY --from=build /out/ /
EXPOSE 8080
ENTRYPOINT ["/archsvc"]
"#;

/// The ELF machine of an executable (62 x86-64, 183 aarch64).
fn elf_machine(path: &Path) -> u16 {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&data[..4], b"\x7fELF", "{} is not ELF", path.display());
    u16::from_le_bytes([data[18], data[19]])
}

fn platforms_of(index: &Value) -> Vec<String> {
    let mut out: Vec<String> = index["manifests"]
        .as_array()
        .expect("an index lists manifests")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or(""),
                m["platform"]["architecture"].as_str().unwrap_or("")
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn go_service_cross_compiled_for_amd64_and_arm64_into_one_pushed_index() {
    kiln_testkit::root::require_root("multi-platform builds (base image, sandbox)");
    let registry = kiln_testkit::registry::plain();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    make_base_images(&root, Some("golang"));

    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("main.go"), MAIN_GO).unwrap();
    std::fs::write(
        ctx.join("go.mod"),
        "module example.com/archsvc\n\ngo 1.19\n",
    )
    .unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    let repo = kiln_testkit::registry::unique_repo("multiplatform");
    let name = format!("{registry}/{repo}:1");
    let out = dir.path().join("out");
    let built = kiln()
        .root(&root)
        .args([
            "build",
            "--progress=plain",
            "--platform",
            "linux/amd64,linux/arm64",
        ])
        .args(["-t", &name, "--push", "-o"])
        .arg(format!("type=local,dest={}", out.display()))
        .arg(&ctx)
        .output();
    let log = String::from_utf8_lossy(&built.stderr).into_owned();
    assert!(built.status.success(), "kiln build failed:\n{log}");

    // The platform-independent step of the native stage: two vertices (one
    // per platform's build), one ran, the other was the same key, cached.
    // (A vertex's header is printed again when its output resumes after another's.)
    let vertices: std::collections::BTreeSet<&str> = log
        .lines()
        .filter_map(|l| {
            // A vertex header is "#N [platform stage i/n] INSTRUCTION"; a
            // CACHE MISS explanation may name this step too, but not as its header.
            let (vertex, rest) = l.split_once(' ')?;
            let (_, instruction) = rest.strip_prefix('[')?.split_once("] ")?;
            (rest.contains("build 4/7]") && instruction.starts_with("RUN go mod download"))
                .then_some(vertex)
        })
        .collect();
    assert_eq!(vertices.len(), 2, "one vertex per platform:\n{log}");
    let cached = vertices
        .iter()
        .filter(|v| log.lines().any(|l| l == format!("{v} CACHED")))
        .count();
    assert_eq!(cached, 1, "the step ran once and was reused once:\n{log}");
    // Each platform's filesystem in its own directory, as BuildKit writes them.
    let amd = out.join("linux_amd64");
    let arm = out.join("linux_arm64");
    let read =
        |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(read(&amd.join("stamp")).len(), 32);
    assert_eq!(
        read(&amd.join("stamp")),
        read(&arm.join("stamp")),
        "run once"
    );
    // The go build ran natively for both targets and cross-compiled.
    let host_machine = format!("{}\n", std::env::consts::ARCH);
    assert_eq!(read(&amd.join("built-on")), host_machine);
    assert_eq!(read(&arm.join("built-on")), host_machine);
    assert_eq!(elf_machine(&amd.join("archsvc")), 62);
    assert_eq!(elf_machine(&arm.join("archsvc")), 183);

    // The pushed index, as skopeo and buildah read it.
    let index: Value = serde_json::from_slice(&skopeo_raw(&name)).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(platforms_of(&index), ["linux/amd64", "linux/arm64"]);
    let seen = buildah_manifest_inspect(dir.path(), &registry, &name);
    assert_eq!(platforms_of(&seen), ["linux/amd64", "linux/arm64"]);
    // Each platform's manifest is the image of its platform.
    for m in index["manifests"].as_array().unwrap() {
        let digest = m["digest"].as_str().unwrap();
        let config = Command::new("skopeo")
            .args(["inspect", "--config", "--tls-verify=false"])
            .arg(format!("docker://{registry}/{repo}@{digest}"))
            .output()
            .unwrap();
        assert!(config.status.success());
        let config: Value = serde_json::from_slice(&config.stdout).unwrap();
        assert_eq!(config["architecture"], m["platform"]["architecture"]);
    }

    // The store names the index (the build's own: its layers named by
    // diff_id, so not the pushed document); inspect lists its manifests.
    let inspected: Value =
        serde_json::from_str(&kiln().root(&root).args(["inspect", &name]).stdout()).unwrap();
    assert_eq!(
        inspected[0]["Descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let listed: Vec<&str> = inspected[0]["Manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["linux/amd64", "linux/arm64"]);

    // The arm64 binary runs under emulation; the default is the host's.
    let arm_run = kiln()
        .root(&root)
        .args(["run", "--rm", "--platform", "linux/arm64", &name, "arch"])
        .stdout();
    assert_eq!(arm_run, "linux/arm64\n");
    let host_run = kiln()
        .root(&root)
        .args(["run", "--rm", &name, "arch"])
        .stdout();
    assert_eq!(
        host_run,
        format!("linux/{}\n", kiln_oci::image::host_architecture())
    );

    // A RUN step of the arm64 image runs under emulation too, on the stored
    // index's arm64 image (found by platform, not pulled).
    let run_ctx = dir.path().join("run-ctx");
    std::fs::create_dir(&run_ctx).unwrap();
    std::fs::write(
        run_ctx.join("Dockerfile"),
        format!("FROM {name}\nRUN [\"/archsvc\", \"write\"]\n"),
    )
    .unwrap();
    let run_out = dir.path().join("run-out");
    kiln()
        .root(&root)
        .args(["build", "--pull=never", "--platform", "linux/arm64", "-o"])
        .arg(format!("type=local,dest={}", run_out.display()))
        .arg(&run_ctx)
        .ok();
    assert_eq!(read(&run_out.join("arch")), "linux/arm64\n");

    // Pulling two platforms of the pushed index into another store keeps both
    // under the name (a multi-platform build pulls its base once per platform).
    let other = dir.path().join("other");
    for p in ["linux/arm64", "linux/amd64"] {
        kiln()
            .root(&other)
            .args(["pull", "-q", "--platform", p, &name])
            .ok();
    }
    let pulled: Value =
        serde_json::from_str(&kiln().root(&other).args(["inspect", &name]).stdout()).unwrap();
    let listed: Vec<&str> = pulled[0]["Manifests"]
        .as_array()
        .expect("both platforms under one name")
        .iter()
        .map(|m| m["platform"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["linux/arm64", "linux/amd64"]);
    let arm_run = kiln()
        .root(&other)
        .args(["run", "--rm", "--platform", "linux/arm64", &name, "arch"])
        .stdout();
    assert_eq!(arm_run, "linux/arm64\n");
}

/// A platform whose programs this host cannot run: one clear error, located at
/// the RUN, naming the platform and how to add an emulator.
#[test]
fn a_platform_without_an_emulator_is_one_clear_error() {
    kiln_testkit::root::require_root("the sandbox");
    if Path::new("/proc/sys/fs/binfmt_misc/qemu-mips64el").exists() {
        eprintln!("qemu-mips64el is registered here: nothing to refuse");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\nRUN true\n").unwrap();
    let err = kiln()
        .root(dir.path().join("store"))
        .args(["build", "--platform", "linux/mips64le"])
        .arg(dir.path())
        .fails();
    assert!(err.contains("RUN for linux/mips64le"), "{err}");
    assert!(err.contains("cannot run linux/mips64le programs"), "{err}");
    assert!(err.contains("qemu-user-static"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
}

/// One platform's failed build stops the others early: their next steps do
/// not start, a step that runs is killed, and the error is the failure's.
#[test]
fn a_failed_platform_stops_the_other_platforms_build() {
    kiln_testkit::root::require_root("the sandbox");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    crate::util::store_busybox(&root);
    // Both platforms' steps run natively ($BUILDPLATFORM); arm64's fails at
    // once, amd64's first step would take 60 s and its second 30.
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM --platform=$BUILDPLATFORM busybox:test\nARG TARGETARCH\n\
         RUN if [ \"$TARGETARCH\" = arm64 ]; then echo arm64 fails; exit 3; fi; sleep 60\n\
         RUN echo slow-$((1+1)); sleep 30\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = kiln()
        .root(&root)
        .args([
            "build",
            "--progress=plain",
            "--platform",
            "linux/amd64,linux/arm64",
        ])
        .arg(dir.path())
        .output();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("exited with 3"), "the failure's error:\n{log}");
    // (The error's excerpt shows line 4; the step's own header and output
    // must not appear.)
    assert!(
        !log.contains("stage-0 4/4]") && !log.contains("slow-2"),
        "the other platform's next step started:\n{log}"
    );
    assert!(
        started.elapsed().as_secs() < 30,
        "the running step was waited for ({:?}):\n{log}",
        started.elapsed()
    );
}
