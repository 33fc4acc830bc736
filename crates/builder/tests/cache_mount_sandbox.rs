//! A cache mount lease bind-mounted read-write into real sandbox steps: what
//! one step writes there, a later step (with a new lease) sees, it never
//! lands in the step's upperdir, and the directory's owner/mode from the
//! request are what the step sees. Needs root (CI runs as root).
//!
//! Custom harness (`harness = false`): this binary is also the sandbox
//! helper, so `main` calls the helper hook first.

use kiln_builder::internal::{CacheMountRequest, CacheMounts};
use kiln_dockerfile::instructions::CacheSharing;
use kiln_sandbox::{MountSpec, NetworkMode, OutputLine, Rootfs, RunSpec, SandboxError, UserSpec};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod support;
use support::busybox_rootfs;

/// Runs `script` as `user` on a fresh overlay over `lower`, with `cache`
/// bind-mounted read-write at /cache; returns the output and the upperdir.
fn step(
    base: &Path,
    name: &str,
    lower: &Path,
    cache: &Path,
    user: &str,
    script: &str,
) -> Result<(Vec<String>, PathBuf), String> {
    let upper = base.join(name).join("upper");
    let work = base.join(name).join("work");
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let mut spec = RunSpec::new(
        Rootfs::Overlay {
            lowerdirs: vec![lower.to_path_buf()],
            upperdir: upper.clone(),
            workdir: work,
        },
        vec!["/bin/sh".into(), "-c".into(), script.into()],
    );
    spec.user = UserSpec::new(user);
    spec.network = NetworkMode::None;
    spec.mounts.push(MountSpec::Bind {
        root: cache.to_path_buf(),
        path: "/".into(),
        target: "/cache".into(),
        readonly: false,
    });
    let mut lines = Vec::new();
    kiln_sandbox::run(&spec, &mut |l: &OutputLine| lines.push(l.line.clone())).map_err(
        |e| match e {
            SandboxError::StepFailed(f) => format!("step {}; output: {:?}", f.status, f.tail),
            e => e.to_string(),
        },
    )?;
    Ok((lines, upper))
}

fn cache_persists_between_steps(base: &Path) -> Result<(), String> {
    let lower = base.join("lower");
    busybox_rootfs(&lower).map_err(|e| format!("building the busybox rootfs: {e}"))?;
    let mounts = CacheMounts::new(&base.join("store"));
    let req = CacheMountRequest {
        sharing: CacheSharing::Locked,
        uid: 1001,
        gid: 1001,
        mode: 0o700,
        ..CacheMountRequest::new("/home/user/.cache")
    };

    let lease = mounts.acquire(&req).map_err(|e| e.to_string())?;
    let (out, upper) = step(
        base,
        "first",
        &lower,
        lease.dir(),
        "user",
        "stat -c '%u:%g %a' /cache; echo compiled > /cache/obj; id -u",
    )?;
    if out != ["1001:1001 700", "1001"] {
        return Err(format!("first step output {out:?}"));
    }
    if upper.join("cache/obj").exists() {
        return Err("the cache file landed in the step's upperdir".into());
    }
    drop(lease);

    // A new manager (as a later kiln process would open) and a new lease.
    let mounts = CacheMounts::new(&base.join("store"));
    let lease = mounts.acquire(&req).map_err(|e| e.to_string())?;
    let (out, _) = step(
        base,
        "second",
        &lower,
        lease.dir(),
        "user",
        "cat /cache/obj; stat -c '%U' /cache/obj",
    )?;
    if out != ["compiled", "user"] {
        return Err(format!("second step output {out:?}"));
    }
    Ok(())
}

fn main() -> ExitCode {
    kiln_sandbox::helper_main_if_requested();
    support::run_as_root_in_tempdir("cache_persists_between_steps", cache_persists_between_steps)
}
