//! Sandbox integration tests; need root (CI runs as root). The rootless half
//! re-runs every case as the `kiln-rootless` user (made by
//! scripts/setup-test-env) and checks that its upperdir, with ownership mapped
//! back through the IdMap, equals the root run's; then once more with the
//! worker inside kiln's own user namespace (`kiln_sandbox::userns`), as the
//! `kiln` binary runs rootless builds.
//!
//! Custom harness (`harness = false`): this binary is also the sandbox helper,
//! as the `kiln` binary is, so `main` calls the helper hook first.

use kiln_sandbox::{
    CopySnapshot, IdMap, MountSpec, NetworkMode, OutputLine, Rootfs, RunSpec, SandboxError,
    SecurityMode, UserSpec,
};
use std::collections::{BTreeSet, HashMap};
use std::ffi::{CString, OsString};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const ROOTLESS_USER: &str = "kiln-rootless";
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nuser:x:1001:1001:user:/home/user:/bin/sh\n";
const GROUP: &str = "root:x:0:\nuser:x:1001:\nextra:x:2000:user\n";

type CaseResult = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

struct Env {
    base: PathBuf,
    lower: PathBuf,
    id_map: IdMap,
}

fn write(path: &Path, content: &str, mode: u32) -> std::io::Result<()> {
    std::fs::write(path, content)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// The busybox rootfs (`kiln_testkit::busybox`) with root and user 1001 (and a
/// group `extra` holding user), a few files for the deletion cases. No /etc/hosts.
fn build_busybox_rootfs(dir: &Path) -> std::io::Result<()> {
    kiln_testkit::busybox::rootfs_with_users(dir, PASSWD, GROUP)?;
    for d in ["home/user", "lowerdir"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    write(&dir.join("lower-file"), "from the lower layer\n", 0o644)?;
    write(&dir.join("lowerdir/a"), "a\n", 0o644)?;
    write(&dir.join("lowerdir/b"), "b\n", 0o644)?;
    Ok(())
}

impl Env {
    fn new(base: PathBuf) -> Result<Env, String> {
        let lower = base.join("lower");
        build_busybox_rootfs(&lower).map_err(|e| format!("building the busybox rootfs: {e}"))?;
        Ok(Env {
            base,
            lower,
            id_map: IdMap::for_current_user(),
        })
    }

    /// A fresh overlay over the busybox rootfs (plus `extra_lowers` on top).
    fn overlay(&self, name: &str, extra_lowers: &[PathBuf]) -> (Rootfs, PathBuf) {
        let dir = self.base.join("runs").join(name);
        let upper = dir.join("upper");
        let work = dir.join("work");
        let _ = std::fs::create_dir_all(&upper);
        let _ = std::fs::create_dir_all(&work);
        let mut lowerdirs = extra_lowers.to_vec();
        lowerdirs.push(self.lower.clone());
        (
            Rootfs::Overlay {
                lowerdirs,
                upperdir: upper.clone(),
                workdir: work,
            },
            upper,
        )
    }

    fn sh(&self, name: &str, script: &str) -> (RunSpec, PathBuf) {
        let (rootfs, upper) = self.overlay(name, &[]);
        (
            RunSpec::new(rootfs, vec!["/bin/sh".into(), "-c".into(), script.into()]),
            upper,
        )
    }
}

fn run(spec: &RunSpec) -> Result<Vec<String>, SandboxError> {
    let mut lines = Vec::new();
    kiln_sandbox::run(spec, &mut |l: &OutputLine| lines.push(l.line.clone()))?;
    Ok(lines)
}

fn run_ok(spec: &RunSpec) -> Result<Vec<String>, String> {
    run(spec).map_err(|e| match e {
        SandboxError::StepFailed(f) => format!("step {}; output: {:?}", f.status, f.tail),
        e => e.to_string(),
    })
}

/// Paths in the upperdir, relative, sorted.
fn upper_entries(upper: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(
                p.strip_prefix(root)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned(),
            );
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(upper, upper, &mut out);
    out.sort();
    out
}

fn lgetxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 256];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

fn is_opaque(path: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|x| lgetxattr(path, x).as_deref() == Some(b"y"))
}

/// The upperdir as a layer sees it: type, mode, in-container owner, content.
fn manifest(upper: &Path, id_map: &IdMap) -> Vec<String> {
    let mut inodes: HashMap<u64, String> = HashMap::new();
    let mut out = Vec::new();
    for rel in upper_entries(upper) {
        let p = upper.join(&rel);
        let Ok(m) = p.symlink_metadata() else {
            continue;
        };
        let uid = id_map
            .to_container_uid(m.uid())
            .map_or("unmapped".to_string(), |u| u.to_string());
        let gid = id_map
            .to_container_gid(m.gid())
            .map_or("unmapped".to_string(), |g| g.to_string());
        let ft = m.file_type();
        let what = if ft.is_dir() {
            format!("dir{}", if is_opaque(&p) { " opaque" } else { "" })
        } else if ft.is_symlink() {
            format!(
                "symlink -> {}",
                std::fs::read_link(&p)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )
        } else if ft.is_char_device() {
            format!("char {}:{}", libc::major(m.rdev()), libc::minor(m.rdev()))
        } else if ft.is_file() {
            let link = if m.nlink() > 1 {
                match inodes.get(&m.ino()) {
                    Some(first) => format!(" hardlink to {first}"),
                    None => {
                        inodes.insert(m.ino(), rel.clone());
                        String::new()
                    }
                }
            } else {
                String::new()
            };
            let content = std::fs::read(&p).unwrap_or_default();
            if content.len() > 256 {
                format!(
                    "file ({} bytes, fnv {:016x}){link}",
                    content.len(),
                    fnv1a(&content)
                )
            } else {
                format!("file {:?}{link}", String::from_utf8_lossy(&content))
            }
        } else {
            "other".to_string()
        };
        out.push(format!(
            "{rel} {what} mode={:o} owner={uid}:{gid}",
            m.mode() & 0o7777
        ));
    }
    out
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

fn mountinfo_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Live descendants of this process.
fn descendants() -> Vec<(i32, String)> {
    let mut parent_of: HashMap<i32, (i32, String)> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(close) = stat.rfind(')') else {
                continue;
            };
            let comm = stat[stat.find('(').map_or(0, |i| i + 1)..close].to_string();
            let ppid = stat[close + 1..]
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            parent_of.insert(pid, (ppid, comm));
        }
    }
    let me = std::process::id() as i32;
    parent_of
        .iter()
        .filter(|(pid, _)| {
            let mut cur = **pid;
            for _ in 0..64 {
                match parent_of.get(&cur) {
                    Some((pp, _)) if *pp == me => return true,
                    Some((pp, _)) if *pp > 1 => cur = *pp,
                    _ => return false,
                }
            }
            false
        })
        .map(|(pid, (_, comm))| (*pid, comm.clone()))
        .collect()
}

// ---- cases ----------------------------------------------------------------

fn file_creation(env: &Env) -> CaseResult {
    let (spec, upper) = env.sh("create", "mkdir -p /new/dir && echo hello > /new/dir/file");
    run_ok(&spec)?;
    let c = std::fs::read_to_string(upper.join("new/dir/file"))
        .map_err(|e| format!("upper file: {e}"))?;
    ensure!(c == "hello\n", "content {c:?}");
    Ok(())
}

fn deletion_makes_whiteout(env: &Env) -> CaseResult {
    let (spec, upper) = env.sh("delete", "rm /lower-file");
    run_ok(&spec)?;
    let m = upper
        .join("lower-file")
        .symlink_metadata()
        .map_err(|e| format!("no whiteout: {e}"))?;
    ensure!(
        m.file_type().is_char_device() && m.rdev() == 0,
        "not a 0/0 char device: {m:?}"
    );
    Ok(())
}

fn recreated_dir_is_opaque(env: &Env) -> CaseResult {
    let (spec, upper) = env.sh(
        "opaque",
        "rm -rf /lowerdir && mkdir /lowerdir && echo n > /lowerdir/new",
    );
    run_ok(&spec)?;
    ensure!(
        is_opaque(&upper.join("lowerdir")),
        "lowerdir is not opaque in the upperdir"
    );
    ensure!(!upper.join("lowerdir/a").exists(), "old entry visible");
    Ok(())
}

fn chown_owner_in_upper(env: &Env) -> CaseResult {
    let (spec, upper) = env.sh(
        "chown",
        "echo x > /f && chown 1001:1001 /f && chown 0:2000 /lower-file",
    );
    run_ok(&spec)?;
    for (file, want) in [("f", (1001, 1001)), ("lower-file", (0, 2000))] {
        let m = upper
            .join(file)
            .symlink_metadata()
            .map_err(|e| format!("{file}: {e}"))?;
        let got = (
            env.id_map.to_container_uid(m.uid()),
            env.id_map.to_container_gid(m.gid()),
        );
        ensure!(
            got == (Some(want.0), Some(want.1)),
            "{file}: owner {got:?} (host {}:{}), want {want:?}",
            m.uid(),
            m.gid()
        );
    }
    Ok(())
}

fn setuid_bit_preserved(env: &Env) -> CaseResult {
    let (spec, upper) = env.sh(
        "setuid",
        "cp /bin/busybox /suidbin && chmod 4755 /suidbin && chmod 2755 /bin",
    );
    run_ok(&spec)?;
    let m = upper
        .join("suidbin")
        .symlink_metadata()
        .map_err(|e| e.to_string())?;
    ensure!(m.mode() & 0o7777 == 0o4755, "mode {:o}", m.mode() & 0o7777);
    let b = upper
        .join("bin")
        .symlink_metadata()
        .map_err(|e| e.to_string())?;
    ensure!(
        b.mode() & 0o7777 == 0o2755,
        "bin mode {:o}",
        b.mode() & 0o7777
    );
    Ok(())
}

fn symlinks(env: &Env) -> CaseResult {
    let (spec, upper) = env.sh(
        "symlink",
        "ln -s /lower-file /abs && ln -s ../lower-file /bin/rel && cat /abs",
    );
    let out = run_ok(&spec)?;
    ensure!(out == ["from the lower layer"], "output {out:?}");
    let t = std::fs::read_link(upper.join("abs")).map_err(|e| e.to_string())?;
    ensure!(t == Path::new("/lower-file"), "abs -> {t:?}");
    let t = std::fs::read_link(upper.join("bin/rel")).map_err(|e| e.to_string())?;
    ensure!(t == Path::new("../lower-file"), "rel -> {t:?}");
    Ok(())
}

fn hard_links(env: &Env) -> CaseResult {
    let (spec, upper) = env.sh("hardlink", "echo data > /one && ln /one /two");
    run_ok(&spec)?;
    let a = upper
        .join("one")
        .symlink_metadata()
        .map_err(|e| e.to_string())?;
    let b = upper
        .join("two")
        .symlink_metadata()
        .map_err(|e| e.to_string())?;
    ensure!(
        a.ino() == b.ino() && a.nlink() == 2,
        "inodes {} {} nlink {}",
        a.ino(),
        b.ino(),
        a.nlink()
    );
    Ok(())
}

fn failing_command_reports_exit_code(env: &Env) -> CaseResult {
    let (mut spec, _) = env.sh(
        "fail",
        "echo first; for i in 1 2 3 4 5; do echo line$i; done; exit 3",
    );
    spec.tail_lines = 3;
    match run(&spec) {
        Err(SandboxError::StepFailed(f)) => {
            ensure!(
                f.status == kiln_sandbox::ExitStatus::Code(3),
                "status {}",
                f.status
            );
            ensure!(f.tail == ["line3", "line4", "line5"], "tail {:?}", f.tail);
            Ok(())
        }
        other => Err(format!("expected a failure with code 3, got {other:?}")),
    }
}

fn stderr_lines_are_streamed(env: &Env) -> CaseResult {
    let (spec, _) = env.sh("stderr", "echo out; echo err >&2");
    let mut seen = Vec::new();
    kiln_sandbox::run(&spec, &mut |l: &OutputLine| {
        seen.push((l.stream, l.line.clone()))
    })
    .map_err(|e| e.to_string())?;
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    ensure!(
        seen == [
            (kiln_sandbox::OutputStream::Stderr, "err".to_string()),
            (kiln_sandbox::OutputStream::Stdout, "out".to_string())
        ],
        "lines {seen:?}"
    );
    Ok(())
}

fn user_1001(env: &Env) -> CaseResult {
    let (mut spec, upper) = env.sh(
        "user",
        "id -u; id -g; id -G; touch /tmp/mine; grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status",
    );
    spec.user = UserSpec::new("1001");
    let out = run_ok(&spec)?;
    let want = [
        "1001",
        "1001",
        "1001 2000",
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t00000000a80425fb",
    ];
    ensure!(out == want, "output {out:?}");
    let m = upper
        .join("tmp/mine")
        .symlink_metadata()
        .map_err(|e| e.to_string())?;
    ensure!(
        env.id_map.to_container_uid(m.uid()) == Some(1001),
        "tmp/mine host uid {}",
        m.uid()
    );
    let (mut spec, _) = env.sh("user-group", "id -u; id -g; id -G");
    spec.user = UserSpec::new("user:extra");
    let out = run_ok(&spec)?;
    ensure!(out == ["1001", "2000", "2000"], "user:extra output {out:?}");
    let (mut spec, _) = env.sh("user-missing", "true");
    spec.user = UserSpec::new("nobody");
    match run(&spec) {
        Err(SandboxError::Setup(m)) if m.contains("unable to find user nobody") => Ok(()),
        other => Err(format!("unknown user: {other:?}")),
    }
}

fn step_is_pid_1(env: &Env) -> CaseResult {
    let (spec, _) = env.sh("pid1", "echo $$; ls /proc | grep -c '^[0-9]'");
    let out = run_ok(&spec)?;
    // PID 1 is the shell; the only other process is the `ls`/`grep` pipeline.
    ensure!(
        out.first().map(String::as_str) == Some("1"),
        "output {out:?}"
    );
    let n: usize = out.get(1).and_then(|s| s.parse().ok()).unwrap_or(99);
    ensure!(n <= 3, "{n} processes visible in /proc");
    Ok(())
}

fn hostname_is_set(env: &Env) -> CaseResult {
    let (mut spec, _) = env.sh(
        "hostname",
        "hostname; cat /etc/hostname 2>/dev/null || true",
    );
    spec.hostname = "kiln-test-host".into();
    let out = run_ok(&spec)?;
    ensure!(
        out.first().map(String::as_str) == Some("kiln-test-host"),
        "output {out:?}"
    );
    Ok(())
}

fn network_none_has_only_lo(env: &Env) -> CaseResult {
    let (mut spec, _) = env.sh("netnone", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; cat /sys/class/net/lo/flags; ls /sys/class/net");
    spec.network = NetworkMode::None;
    let out = run_ok(&spec)?;
    ensure!(
        out.len() == 3 && out[0] == "lo" && out[2] == "lo",
        "interfaces {out:?}"
    );
    let flags = u32::from_str_radix(out[1].trim_start_matches("0x"), 16).unwrap_or(0);
    ensure!(flags & 1 == 1, "lo is not up (flags {})", out[1]);
    Ok(())
}

fn proc_masked_and_readonly_paths(env: &Env) -> CaseResult {
    // Which of these exist depends on the kernel; each one that does must be
    // masked (empty) or read-only.
    let script = r#"
        for p in /proc/acpi /proc/kcore /proc/keys /proc/latency_stats /proc/timer_list /proc/timer_stats \
                 /proc/sched_debug /proc/scsi /sys/firmware; do
            if [ -d $p ]; then [ -z "$(ls -A $p)" ] || echo "$p not empty"
            elif [ -e $p ]; then [ "$(wc -c < $p)" = 0 ] || echo "$p readable"; fi
        done
        for p in /proc/asound /proc/bus /proc/fs /proc/irq /proc/sys /proc/sysrq-trigger; do
            if [ -e $p ]; then grep -q " $p ro," /proc/self/mountinfo || echo "$p not read-only"; fi
        done
        { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null && echo /proc/sys writable
        touch /sys/kiln 2>/dev/null && echo /sys writable
        grep -c -e ' /proc/keys ' -e ' /proc/acpi ' -e ' /sys/firmware ' /proc/self/mountinfo
    "#;
    let (spec, _) = env.sh("masked", script);
    let out = run_ok(&spec)?;
    // /proc/keys, /proc/acpi and /sys/firmware exist on the CI kernel.
    ensure!(out == ["3"], "output {out:?}");
    Ok(())
}

fn capabilities_are_dockers_default(env: &Env) -> CaseResult {
    let (spec, _) = env.sh("caps", "grep -E '^(Cap|NoNewPrivs)' /proc/self/status");
    let out = run_ok(&spec)?;
    let want = [
        "CapInh:\t0000000000000000",
        "CapPrm:\t00000000a80425fb",
        "CapEff:\t00000000a80425fb",
        "CapBnd:\t00000000a80425fb",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
    ];
    ensure!(out == want, "output {out:?}");
    Ok(())
}

fn insecure_keeps_all_capabilities(env: &Env) -> CaseResult {
    let (mut spec, _) = env.sh("insecure", "grep -E '^(CapBnd|NoNewPrivs)' /proc/self/status; grep -q -e ' /proc/keys ' -e ' /sys/firmware ' /proc/self/mountinfo && echo masked || echo unmasked");
    spec.security = SecurityMode::Insecure;
    let out = run_ok(&spec)?;
    ensure!(
        out.len() == 3 && out[1] == "NoNewPrivs:\t0",
        "output {out:?}"
    );
    let bnd = out[0]
        .strip_prefix("CapBnd:\t")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    let default = kiln_sandbox::default_capability_mask();
    ensure!(
        bnd & default == default && bnd != default,
        "bounding set {bnd:x} is not a superset of the default"
    );
    ensure!(
        out[2] == "unmasked",
        "/proc/keys or /sys/firmware masked in insecure mode"
    );
    Ok(())
}

fn secret_is_readable_and_not_in_upper(env: &Env) -> CaseResult {
    let secret = "s3cr3t-value-7f2a";
    let (mut spec, upper) = env.sh(
        "secret",
        "cat /run/secrets/token; echo; stat -c '%a %u' /run/secrets/token",
    );
    spec.mounts.push(MountSpec::Secret {
        target: "/run/secrets/token".into(),
        content: secret.as_bytes().to_vec(),
        mode: 0o400,
        uid: 0,
        gid: 0,
    });
    let out = run_ok(&spec)?;
    ensure!(out == [secret, "400 0"], "output {out:?}");
    let entries = upper_entries(&upper);
    ensure!(entries.is_empty(), "upperdir not empty: {entries:?}");
    Ok(())
}

fn tmpfs_leaves_nothing(env: &Env) -> CaseResult {
    let (mut spec, upper) = env.sh(
        "tmpfs",
        "echo x > /scratch/a && echo y > /tmp/b && df /scratch | tail -1",
    );
    spec.mounts.push(MountSpec::Tmpfs {
        target: "/scratch".into(),
        size_bytes: Some(1 << 20),
    });
    spec.mounts.push(MountSpec::Tmpfs {
        target: "/tmp".into(),
        size_bytes: None,
    });
    let out = run_ok(&spec)?;
    ensure!(
        out.first()
            .is_some_and(|l| l.starts_with("tmpfs") && l.contains(" 1024 ")),
        "df {out:?}"
    );
    let entries = upper_entries(&upper);
    ensure!(entries.is_empty(), "upperdir not empty: {entries:?}");
    Ok(())
}

fn hosts_and_resolv_conf_not_in_upper(env: &Env) -> CaseResult {
    let (mut spec, upper) = env.sh(
        "hosts",
        "cat /etc/hosts /etc/resolv.conf; { echo 1 >> /etc/hosts; } 2>/dev/null || echo hosts-ro",
    );
    spec.hosts = Some(b"10.1.2.3 kiln-host\n".to_vec());
    spec.resolv_conf = Some(b"nameserver 10.9.9.9\n".to_vec());
    let out = run_ok(&spec)?;
    ensure!(
        out == ["10.1.2.3 kiln-host", "nameserver 10.9.9.9", "hosts-ro"],
        "output {out:?}"
    );
    let entries = upper_entries(&upper);
    ensure!(entries.is_empty(), "upperdir not empty: {entries:?}");

    // An image with its own /etc/hosts (in a second lower layer): still nothing.
    let img = env.base.join("lower-with-hosts");
    std::fs::create_dir_all(img.join("etc")).map_err(|e| e.to_string())?;
    write(&img.join("etc/hosts"), "127.0.0.1 image\n", 0o644).map_err(|e| e.to_string())?;
    let (rootfs, upper) = env.overlay("hosts-image", &[img]);
    let mut spec = RunSpec::new(rootfs, vec!["/bin/cat".into(), "/etc/hosts".into()]);
    spec.hosts = Some(b"10.1.2.3 kiln-host\n".to_vec());
    let out = run_ok(&spec)?;
    ensure!(out == ["10.1.2.3 kiln-host"], "output {out:?}");
    let entries = upper_entries(&upper);
    ensure!(entries.is_empty(), "upperdir not empty: {entries:?}");

    // A step that changes /etc keeps its change, and only its change.
    let (mut spec, upper) = env.sh("hosts-etc-change", "echo x > /etc/new-file");
    spec.hosts = Some(b"10.1.2.3 kiln-host\n".to_vec());
    run_ok(&spec)?;
    let entries = upper_entries(&upper);
    ensure!(entries == ["etc", "etc/new-file"], "upperdir: {entries:?}");
    Ok(())
}

fn env_and_cwd(env: &Env) -> CaseResult {
    let (mut spec, _) = env.sh("envcwd", "echo $FOO; pwd; env | wc -l; echo $HOME");
    spec.env.push("FOO=bar baz".into());
    spec.cwd = "/home/user".into();
    let out = run_ok(&spec)?;
    // Exactly the given environment (PATH, FOO), HOME from passwd as runc sets
    // it when missing, plus what sh itself sets: PWD, SHLVL.
    ensure!(
        out == ["bar baz", "/home/user", "5", "/root"],
        "output {out:?}"
    );
    let (mut spec, _) = env.sh("envhome", "echo $HOME");
    spec.env.push("HOME=/given".into());
    spec.user = kiln_sandbox::UserSpec::new("user");
    ensure!(run_ok(&spec)? == ["/given"], "a given HOME is kept");
    let (mut spec, _) = env.sh("envhome2", "echo $HOME; id -G");
    spec.user = kiln_sandbox::UserSpec::new("user");
    let out = run_ok(&spec)?;
    ensure!(out[0] == "/home/user", "HOME of USER user: {out:?}");
    ensure!(
        out[1].split(' ').next() == Some("1001"),
        "the primary gid leads the groups: {out:?}"
    );
    // No ignored or blocked signals inherited from the helper.
    let (rootfs, _) = env.overlay("signals", &[]);
    let spec = RunSpec::new(
        rootfs,
        vec![
            "grep".into(),
            "-E".into(),
            "^Sig(Blk|Ign)".into(),
            "/proc/self/status".into(),
        ],
    );
    let out = run_ok(&spec)?;
    ensure!(
        out == ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"],
        "signals {out:?}"
    );
    Ok(())
}

fn setup_errors_are_clear(env: &Env) -> CaseResult {
    let (mut spec, _) = env.sh("badcwd", "true");
    spec.cwd = "/does/not/exist".into();
    match run(&spec) {
        Err(SandboxError::Setup(m))
            if m.contains("working directory /does/not/exist does not exist") => {}
        other => return Err(format!("missing cwd: {other:?}")),
    }
    let (rootfs, _) = env.overlay("badcmd", &[]);
    let spec = RunSpec::new(rootfs, vec!["no-such-command".into()]);
    match run(&spec) {
        Err(SandboxError::Setup(m))
            if m.contains("\"no-such-command\": executable file not found in $PATH") =>
        {
            Ok(())
        }
        other => Err(format!("missing command: {other:?}")),
    }
}

fn bind_mount_readonly(env: &Env) -> CaseResult {
    let src = env.base.join("bind-src");
    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    write(&src.join("in"), "bound\n", 0o644).map_err(|e| e.to_string())?;
    let (mut spec, upper) = env.sh(
        "bind",
        "cat /mnt/src/in; touch /mnt/src/x 2>/dev/null && echo rw || echo ro; echo w > /mnt/rw/out",
    );
    spec.mounts.push(MountSpec::Bind {
        root: src.clone(),
        path: "/".into(),
        target: "/mnt/src".into(),
        readonly: true,
    });
    let rw = env.base.join("bind-rw");
    std::fs::create_dir_all(&rw).map_err(|e| e.to_string())?;
    spec.mounts.push(MountSpec::Bind {
        root: rw.clone(),
        path: "/".into(),
        target: "/mnt/rw".into(),
        readonly: false,
    });
    let out = run_ok(&spec)?;
    ensure!(out == ["bound", "ro"], "output {out:?}");
    ensure!(rw.join("out").exists(), "rw bind did not write through");
    let entries = upper_entries(&upper);
    ensure!(entries.is_empty(), "upperdir not empty: {entries:?}");
    Ok(())
}

/// A bind source is resolved inside its root: symlinks there pointing at a
/// host directory (absolutely, or climbing with `..`) lead to the root's own
/// copy of that path, and an rw mount writes there, never on the host.
fn bind_sources_resolve_inside_their_root(env: &Env) -> CaseResult {
    let host = env.base.join("resolve-host");
    let root = env.base.join("resolve-root");
    let inside = root.join(host.strip_prefix("/").map_err(|e| e.to_string())?);
    for d in [&host, &inside] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    write(&host.join("secret"), "host\n", 0o644).map_err(|e| e.to_string())?;
    write(&inside.join("secret"), "inside\n", 0o644).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&host, root.join("abs")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink("../".repeat(40), root.join("up")).map_err(|e| e.to_string())?;
    let (mut spec, _) = env.sh("bind-in-root", "cat /mnt/a /mnt/b; touch /mnt/d/new");
    let host_rel = host
        .strip_prefix("/")
        .map_err(|e| e.to_string())?
        .display()
        .to_string();
    for (path, target, readonly) in [
        ("abs/secret".to_string(), "/mnt/a", true),
        (format!("up/{host_rel}/secret"), "/mnt/b", true),
        ("/abs".to_string(), "/mnt/d", false),
    ] {
        spec.mounts.push(MountSpec::Bind {
            root: root.clone(),
            path,
            target: target.into(),
            readonly,
        });
    }
    let out = run_ok(&spec)?;
    ensure!(out == ["inside", "inside"], "output {out:?}");
    ensure!(!host.join("new").exists(), "an rw bind wrote on the host");
    ensure!(
        inside.join("new").exists(),
        "the rw bind did not write in its root"
    );
    let (mut spec, _) = env.sh("bind-missing", "true");
    spec.mounts.push(MountSpec::Bind {
        root: root.clone(),
        path: "abs/missing".into(),
        target: "/mnt/m".into(),
        readonly: true,
    });
    match run(&spec) {
        Err(SandboxError::Setup(m)) if m.contains("bind mount source abs/missing") => Ok(()),
        other => Err(format!("missing bind source: {other:?}")),
    }
}

fn dir_rootfs(env: &Env) -> CaseResult {
    let dir = env.base.join("dir-rootfs");
    build_busybox_rootfs(&dir).map_err(|e| e.to_string())?;
    let before = std::fs::metadata(dir.join("etc"))
        .map_err(|e| e.to_string())?
        .mtime_nsec();
    let mut spec = RunSpec::new(
        Rootfs::Dir(dir.clone()),
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo made > /made; cat /etc/hosts".into(),
        ],
    );
    spec.hosts = Some(b"127.0.0.1 dir\n".to_vec());
    let out = run_ok(&spec)?;
    ensure!(out == ["127.0.0.1 dir"], "output {out:?}");
    ensure!(dir.join("made").exists(), "file not written to the dir");
    ensure!(
        !dir.join("etc/hosts").exists(),
        "mount point /etc/hosts left behind"
    );
    let after = std::fs::metadata(dir.join("etc"))
        .map_err(|e| e.to_string())?
        .mtime_nsec();
    ensure!(before == after, "/etc mtime changed");
    Ok(())
}

/// Layers repeated in the stack (three no-op RUNs give one empty layer three
/// times; `COPY a`, `COPY b`, `COPY a` gives A, B, A) mount, and the topmost
/// copy decides what is seen.
fn repeated_lowers(env: &Env) -> CaseResult {
    let lowers = env.base.join("repeated-lowers");
    let (a, b, empty) = (lowers.join("a"), lowers.join("b"), lowers.join("empty"));
    for (dir, file, content) in [(&a, "d/in-a", "A"), (&b, "d/in-b", "B")] {
        std::fs::create_dir_all(dir.join("d")).map_err(|e| e.to_string())?;
        write(&dir.join("rep"), content, 0o644).map_err(|e| e.to_string())?;
        write(&dir.join(file), content, 0o644).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(&empty).map_err(|e| e.to_string())?;
    let script = "cat /rep; echo; ls /d";
    // Top first: A over B over A over the busybox rootfs.
    let (rootfs, upper) = env.overlay("repeated-aba", &[a.clone(), b.clone(), a.clone()]);
    let spec = RunSpec::new(rootfs, vec!["/bin/sh".into(), "-c".into(), script.into()]);
    let out = run_ok(&spec)?;
    ensure!(out == ["A", "in-a", "in-b"], "A, B, A: output {out:?}");
    ensure!(
        upper_entries(&upper).is_empty(),
        "A, B, A: upperdir not empty"
    );
    // B over A over B: B wins.
    let (rootfs, _) = env.overlay("repeated-bab", &[b.clone(), a.clone(), b.clone()]);
    let spec = RunSpec::new(rootfs, vec!["/bin/sh".into(), "-c".into(), script.into()]);
    let out = run_ok(&spec)?;
    ensure!(out == ["B", "in-a", "in-b"], "B, A, B: output {out:?}");
    // The same empty layer three times, adjacent.
    let (rootfs, _) = env.overlay("repeated-empty", &[empty.clone(), empty.clone(), empty]);
    let spec = RunSpec::new(
        rootfs,
        vec!["/bin/sh".into(), "-c".into(), "cat /lower-file".into()],
    );
    let out = run_ok(&spec)?;
    ensure!(out == ["from the lower layer"], "E, E, E: output {out:?}");
    Ok(())
}

/// A mount point inside another mount is made in that mount: a RUN heredoc
/// with a shebang runs from `/dev/pipes/` (on the `/dev` tmpfs), and nested
/// cache mounts work whichever order they are given in.
fn mount_inside_a_mount(env: &Env) -> CaseResult {
    let dirs = env.base.join("nested-mounts");
    let (outer, inner) = (dirs.join("outer"), dirs.join("inner"));
    for d in [&outer, &inner] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    write(&inner.join("f"), "inner", 0o644).map_err(|e| e.to_string())?;
    let (rootfs, upper) = env.overlay("nested-mounts", &[]);
    let mut spec = RunSpec::new(rootfs, vec!["/dev/pipes/EOF".into()]);
    spec.mounts = vec![
        MountSpec::Bind {
            root: inner.clone(),
            path: "/".into(),
            target: "/c/d/e".into(),
            readonly: false,
        },
        MountSpec::Bind {
            root: outer.clone(),
            path: "/".into(),
            target: "/c/d".into(),
            readonly: false,
        },
        MountSpec::Secret {
            target: "/dev/pipes/EOF".into(),
            content: b"#!/bin/sh\ncat /c/d/e/f; echo; echo from-script > /x\n".to_vec(),
            mode: 0o755,
            uid: 0,
            gid: 0,
        },
    ];
    let out = run_ok(&spec)?;
    ensure!(out == ["inner"], "output {out:?}");
    ensure!(
        upper_entries(&upper) == ["x"],
        "upperdir: {:?} (only /x; no mount point stubs)",
        upper_entries(&upper)
    );
    // As with runc, the mount point stays in the outer mount's directory.
    ensure!(
        outer.join("e").is_dir(),
        "mount point e not made in the outer mount"
    );
    Ok(())
}

/// `--mount=type=tmpfs,target=/dev/shm` replaces kiln's own /dev/shm.
fn run_mount_replaces_dev_shm(env: &Env) -> CaseResult {
    let (mut spec, _) = env.sh(
        "dev-shm",
        "grep -c ' /dev/shm ' /proc/self/mountinfo; df -k /dev/shm | tail -1",
    );
    spec.mounts.push(MountSpec::Tmpfs {
        target: "/dev/shm".into(),
        size_bytes: Some(2 << 20),
    });
    let out = run_ok(&spec)?;
    ensure!(
        out.len() == 2 && out[0] == "1" && out[1].contains(" 2048 "),
        "one /dev/shm of 2 MiB expected: {out:?}"
    );
    Ok(())
}

fn hundred_runs_leave_nothing(env: &Env) -> CaseResult {
    let mounts = mountinfo_count();
    let dirs_before = workspace_dirs();
    let start = Instant::now();
    let (mut spec, _) = env.sh("loop", "echo $$ > /dev/null");
    spec.mounts.push(MountSpec::Tmpfs {
        target: "/scratch".into(),
        size_bytes: None,
    });
    spec.network = NetworkMode::None;
    for i in 0..100 {
        run_ok(&spec).map_err(|e| format!("run {i}: {e}"))?;
    }
    let elapsed = start.elapsed();
    ensure!(
        mountinfo_count() == mounts,
        "mount count {} -> {}",
        mounts,
        mountinfo_count()
    );
    let left = descendants();
    ensure!(left.is_empty(), "processes left: {left:?}");
    let leftovers: Vec<_> = workspace_dirs().difference(&dirs_before).cloned().collect();
    ensure!(leftovers.is_empty(), "workspace dirs left: {leftovers:?}");
    println!(
        "    (100 runs in {:.2}s, {:.1} ms each)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 10.0
    );
    Ok(())
}

fn kill_and_drop_tear_down_everything(env: &Env) -> CaseResult {
    let mounts = mountinfo_count();
    let (spec, _) = env.sh("kill", "sleep 1000 & sleep 1000 & echo started; sleep 1000");
    let step = kiln_sandbox::spawn(&spec).map_err(|e| e.to_string())?;
    let killer = step.killer();
    let t = std::thread::spawn(move || {
        let mut started = false;
        let r = step.wait(&mut |l: &OutputLine| {
            if l.line == "started" && !started {
                started = true;
                // Let the background sleeps really start.
                std::thread::sleep(Duration::from_millis(100));
                killer.kill();
            }
        });
        (started, r)
    });
    let (started, r) = t.join().map_err(|_| "wait thread panicked".to_string())?;
    ensure!(started, "step never started");
    ensure!(
        matches!(r, Err(SandboxError::Cancelled)),
        "kill result {r:?}"
    );
    ensure!(
        descendants().is_empty(),
        "processes left after kill: {:?}",
        descendants()
    );

    // Dropping the handle kills too.
    let step = kiln_sandbox::spawn(&spec).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(300));
    drop(step);
    ensure!(
        descendants().is_empty(),
        "processes left after drop: {:?}",
        descendants()
    );
    ensure!(
        mountinfo_count() == mounts,
        "mount count {} -> {}",
        mounts,
        mountinfo_count()
    );
    Ok(())
}

/// The script whose upperdir the root and rootless runs must agree on.
const LAYER_SCRIPT: &str = "mkdir -p /app/bin && echo hi > /app/f && chown 1001:2000 /app/f && \
    cp /bin/busybox /app/bin/tool && chmod 4750 /app/bin/tool && ln -s f /app/link && ln /app/f /app/hard && \
    rm /lower-file && rm -rf /lowerdir && mkdir /lowerdir && echo n > /lowerdir/new && \
    mkdir /home/user/data && chown -R user:user /home/user";

fn layer_manifest(env: &Env, run_name: &str) -> Result<Vec<String>, String> {
    let (spec, upper) = env.sh(run_name, LAYER_SCRIPT);
    run_ok(&spec)?;
    Ok(manifest(&upper, &env.id_map))
}

/// The copying snapshotter gives the same upperdir as overlay, and reads
/// layered snapshots (whiteouts, opaque dirs) back correctly.
fn copy_snapshotter_matches_overlay(env: &Env) -> CaseResult {
    let overlay = layer_manifest(env, "layer-for-copy")?;
    let has = |prefix: &str| overlay.iter().any(|l| l.starts_with(prefix));
    ensure!(
        has("lower-file char 0:0")
            && has("lowerdir dir opaque")
            && has("app/hard file \"hi\\n\" hardlink to app/f"),
        "overlay manifest lacks the expected entries: {overlay:#?}"
    );
    let merged = env.base.join("copy-merged");
    let snap = kiln_sandbox::CopySnapshot::prepare(std::slice::from_ref(&env.lower), &merged)
        .map_err(|e| format!("prepare: {e}"))?;
    let mut spec = RunSpec::new(
        snap.rootfs(),
        vec!["/bin/sh".into(), "-c".into(), LAYER_SCRIPT.into()],
    );
    spec.hosts = Some(b"127.0.0.1 copy\n".to_vec());
    spec.mounts.push(MountSpec::Secret {
        target: "/run/secrets/s".into(),
        content: b"x".to_vec(),
        mode: 0o400,
        uid: 0,
        gid: 0,
    });
    run_ok(&spec)?;
    let upper = env.base.join("copy-upper");
    std::fs::create_dir(&upper).map_err(|e| e.to_string())?;
    snap.diff_into(&upper).map_err(|e| format!("diff: {e}"))?;
    let copied = manifest(&upper, &env.id_map);
    ensure!(
        copied == overlay,
        "copy:\n      {}\n    overlay:\n      {}",
        copied.join("\n      "),
        overlay.join("\n      ")
    );

    // Stack the step's layer on the base and read the merged view back.
    let layered = env.base.join("copy-layered");
    CopySnapshot::prepare(&[upper, env.lower.clone()], &layered)
        .map_err(|e| format!("prepare layered: {e}"))?;
    ensure!(!layered.join("lower-file").exists(), "whiteout not applied");
    let names: Vec<String> = std::fs::read_dir(layered.join("lowerdir"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure!(names == ["new"], "opaque dir not applied: {names:?}");
    let tool = layered
        .join("app/bin/tool")
        .symlink_metadata()
        .map_err(|e| e.to_string())?;
    ensure!(
        tool.mode() & 0o7777 == 0o4750,
        "tool mode {:o}",
        tool.mode() & 0o7777
    );
    let (f, h) = (
        layered.join("app/f").symlink_metadata(),
        layered.join("app/hard").symlink_metadata(),
    );
    ensure!(
        // Two copies, as after overlay's copy-up: a change through one name
        // must not show through the other (nor reach the other's layer entry).
        matches!((&f, &h), (Ok(f), Ok(h)) if f.ino() != h.ino()
            && [f.uid(), h.uid(), f.gid(), h.gid()] == [1001, 1001, 2000, 2000]),
        "hard link names not copied apart, or owner lost: {f:?} {h:?}"
    );
    let h = layered.join("app/hard");
    std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    let f_mode = layered
        .join("app/f")
        .symlink_metadata()
        .map_err(|e| e.to_string())?
        .mode();
    ensure!(
        f_mode & 0o777 != 0o600,
        "chmod of one name changed the other"
    );
    Ok(())
}

/// `--seccomp-probe`, run inside the sandbox: tries what Docker's seccomp
/// profile refuses and prints `name=RESULT` lines (`ok` or the errno's name).
fn seccomp_probe() -> ExitCode {
    fn errno_name(e: i32) -> String {
        match e {
            libc::EPERM => "EPERM".into(),
            libc::ENOSYS => "ENOSYS".into(),
            libc::EINVAL => "EINVAL".into(),
            libc::EAFNOSUPPORT => "EAFNOSUPPORT".into(),
            e => format!("errno {e}"),
        }
    }
    fn result(r: libc::c_long) -> String {
        if r >= 0 {
            return "ok".into();
        }
        errno_name(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
    /// `f` in a forked child, so that what it changes (a new user
    /// namespace) does not change the probes after it.
    fn in_child(f: impl FnOnce() -> libc::c_long) -> String {
        // SAFETY: the probe is single-threaded; the child makes one syscall
        // and exits.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                let code = if f() >= 0 {
                    0
                } else {
                    std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(255)
                };
                libc::_exit(code);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            match libc::WEXITSTATUS(status) {
                0 => "ok".into(),
                e => errno_name(e),
            }
        }
    }
    const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
    // SAFETY (all calls below): raw syscalls with valid pointers or none; a
    // child that clone() or fork() creates only calls async-signal-safe
    // functions before _exit.
    unsafe {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .unwrap_or("?")
            .trim()
            .to_string();
        println!("seccomp-mode={mode}");
        println!(
            "unshare-user={}",
            in_child(|| libc::unshare(libc::CLONE_NEWUSER) as libc::c_long)
        );
        let pid = libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        );
        if pid == 0 {
            libc::_exit(0);
        }
        if pid > 0 {
            libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
        }
        println!("clone-newuser={}", result(pid));
        println!(
            "clone3={}",
            result(libc::syscall(
                libc::SYS_clone3,
                std::ptr::null::<u8>(),
                0usize
            ))
        );
        println!(
            "keyctl={}",
            result(libc::syscall(
                libc::SYS_keyctl,
                0 as libc::c_long, // KEYCTL_GET_KEYRING_ID
                KEY_SPEC_SESSION_KEYRING,
                1 as libc::c_long
            ))
        );
        println!(
            "add_key={}",
            result(libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"kiln-probe".as_ptr(),
                c"x".as_ptr(),
                1usize,
                KEY_SPEC_SESSION_KEYRING
            ))
        );
        println!(
            "kexec_load={}",
            result(libc::syscall(
                libc::SYS_kexec_load,
                0usize,
                0usize,
                0usize,
                0usize
            ))
        );
        println!(
            "socket-af-alg={}",
            result(libc::socket(38, libc::SOCK_SEQPACKET, 0) as libc::c_long)
        );
        // ptrace of a process that is not our child and runs as another user:
        // a grandchild that switched to uid 1001, its parent gone.
        let mut fds = [0; 2];
        libc::pipe(fds.as_mut_ptr());
        let child = libc::fork();
        if child == 0 {
            let grandchild = libc::fork();
            if grandchild == 0 {
                libc::setresgid(1001, 1001, 1001);
                libc::setresuid(1001, 1001, 1001);
                libc::sleep(30);
                libc::_exit(0);
            }
            libc::write(fds[1], (&grandchild as *const libc::pid_t).cast(), 4);
            libc::_exit(0);
        }
        libc::waitpid(child, std::ptr::null_mut(), 0);
        let mut target: libc::pid_t = 0;
        libc::read(fds[0], (&mut target as *mut libc::pid_t).cast(), 4);
        // Let it switch users before attaching.
        std::thread::sleep(Duration::from_millis(100));
        let r = libc::ptrace(libc::PTRACE_ATTACH, target, 0usize, 0usize);
        println!("ptrace-other-user={}", result(r));
        libc::kill(target, libc::SIGKILL);
    }
    ExitCode::SUCCESS
}

/// The probe (this test binary) in the sandbox, with the host's libraries
/// bound in for it.
fn probe_spec(env: &Env, name: &str) -> Result<RunSpec, String> {
    let (rootfs, _) = env.overlay(name, &[]);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut spec = RunSpec::new(rootfs, vec!["/probe".into(), "--seccomp-probe".into()]);
    spec.mounts.push(MountSpec::Bind {
        root: exe.parent().unwrap().to_path_buf(),
        path: exe.file_name().unwrap().to_string_lossy().into_owned(),
        target: "/probe".into(),
        readonly: true,
    });
    for dir in ["/lib", "/lib64", "/usr/lib", "/usr/lib64"] {
        if Path::new(dir).is_dir() {
            spec.mounts.push(MountSpec::Bind {
                root: dir.into(),
                path: "/".into(),
                target: dir.into(),
                readonly: true,
            });
        }
    }
    Ok(spec)
}

fn probe_results(out: &[String]) -> HashMap<String, String> {
    out.iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Docker's default seccomp profile: nested user namespaces, the keyring,
/// kexec and AF_ALG are refused, clone3 says ENOSYS (libc falls back to
/// clone); ptrace of another user's process is refused (no CAP_SYS_PTRACE).
fn seccomp_refuses_what_docker_refuses(env: &Env) -> CaseResult {
    let spec = probe_spec(env, "seccomp")?;
    let got = probe_results(&run_ok(&spec)?);
    for (k, want) in [
        ("seccomp-mode", "2"),
        ("unshare-user", "EPERM"),
        ("clone-newuser", "EPERM"),
        ("clone3", "ENOSYS"),
        ("keyctl", "EPERM"),
        ("add_key", "EPERM"),
        ("kexec_load", "EPERM"),
        ("socket-af-alg", "EPERM"),
        ("ptrace-other-user", "EPERM"),
    ] {
        ensure!(
            got.get(k).map(String::as_str) == Some(want),
            "{k}: want {want}, got {:?} (all: {got:?})",
            got.get(k)
        );
    }
    Ok(())
}

/// `--security=insecure` has no filter: clone3 reaches the kernel (EINVAL
/// for a null argument), AF_ALG is the kernel's to refuse, ptrace works.
fn insecure_has_no_seccomp_filter(env: &Env) -> CaseResult {
    let mut spec = probe_spec(env, "seccomp-insecure")?;
    spec.security = SecurityMode::Insecure;
    let got = probe_results(&run_ok(&spec)?);
    for (k, want) in [
        ("seccomp-mode", "0"),
        ("clone3", "EINVAL"),
        ("ptrace-other-user", "ok"),
    ] {
        ensure!(
            got.get(k).map(String::as_str) == Some(want),
            "{k}: want {want}, got {:?} (all: {got:?})",
            got.get(k)
        );
    }
    ensure!(
        got.get("socket-af-alg").map(String::as_str) != Some("EPERM"),
        "AF_ALG refused without a filter: {got:?}"
    );
    Ok(())
}

/// `--caller-worker LOWER RUNDIR`: a caller that runs a long step and prints
/// its output, for killing from outside.
fn caller_worker(lower: &Path, run_dir: &Path) -> ExitCode {
    use std::io::Write;
    let upper = run_dir.join("upper");
    let work = run_dir.join("work");
    let _ = std::fs::create_dir_all(&upper);
    let _ = std::fs::create_dir_all(&work);
    let rootfs = Rootfs::Overlay {
        lowerdirs: vec![lower.to_path_buf()],
        upperdir: upper,
        workdir: work,
    };
    // The two sleeps' arguments, unique to this run (another test run on the
    // machine may be at the same case): `KILN_TEST_SLEEP_MARKERS=A B`.
    let Some(markers) = std::env::var("KILN_TEST_SLEEP_MARKERS").ok() else {
        println!("ended: no KILN_TEST_SLEEP_MARKERS");
        return ExitCode::FAILURE;
    };
    let Some((a, b)) = markers.split_once(' ') else {
        println!("ended: KILN_TEST_SLEEP_MARKERS is not two numbers: {markers}");
        return ExitCode::FAILURE;
    };
    let script = format!("sleep {a} & echo started; sleep {b}");
    let spec = RunSpec::new(rootfs, vec!["/bin/sh".into(), "-c".into(), script]);
    let r = kiln_sandbox::run(&spec, &mut |l: &OutputLine| {
        println!("{}", l.line);
        let _ = std::io::stdout().flush();
    });
    println!("ended: {r:?}");
    ExitCode::SUCCESS
}

/// Kills a process group (SIGKILL) when dropped.
struct KillGroupOnDrop(i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling the process group of a worker this test started.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

fn processes_with(arg: &str) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

fn workspace_dirs() -> BTreeSet<OsString> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name())
                .filter(|n| {
                    n.to_string_lossy().starts_with("kiln-sandbox-")
                        && !n.to_string_lossy().starts_with("kiln-sandbox-test")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Killing the caller (SIGKILL), or Ctrl-C to its process group, ends the
/// step's whole process tree and leaves no mount point in the upperdir and no
/// workspace behind.
fn caller_death_kills_the_step(env: &Env) -> CaseResult {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    for (how, signal, group) in [
        ("SIGKILL to the caller", libc::SIGKILL, false),
        ("Ctrl-C to the group", libc::SIGINT, true),
    ] {
        let run_dir = env.base.join(format!("caller-{signal}"));
        let dirs_before = workspace_dirs();
        // The step's sleeps, found by these arguments: no other run shares them.
        let (bg, fg) = (
            kiln_testkit::process::unique_number().to_string(),
            kiln_testkit::process::unique_number().to_string(),
        );
        let mut worker = Command::new("/proc/self/exe");
        worker
            .env("KILN_TEST_SLEEP_MARKERS", format!("{bg} {fg}"))
            .arg("--caller-worker")
            .arg(&env.lower)
            .arg(&run_dir)
            .stdout(std::process::Stdio::piped())
            .process_group(0);
        // A caller with Ctrl-C's default action, however this test was started (a
        // script's `cargo test &` ignores SIGINT, and the helper keeps it so).
        kiln_testkit::process::default_interrupt_signals(&mut worker);
        let mut child = worker.spawn().map_err(|e| format!("{how}: spawn: {e}"))?;
        let pid = child.id() as i32;
        // Whatever happens below, the worker's process group does not outlive the case.
        let _guard = KillGroupOnDrop(pid);
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        ensure!(
            first.as_deref() == Some("started"),
            "{how}: worker said {first:?}"
        );
        // `sh` prints "started" just before it execs the last sleep.
        let deadline = Instant::now() + Duration::from_secs(5);
        while processes_with(&fg).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        ensure!(
            !processes_with(&fg).is_empty(),
            "{how}: step not seen running"
        );
        // SAFETY: signalling our own child (or its process group).
        unsafe { libc::kill(if group { -pid } else { pid }, signal) };
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && (!processes_with(&bg).is_empty()
                || !processes_with(&fg).is_empty()
                || workspace_dirs() != dirs_before)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        ensure!(
            processes_with(&bg).is_empty() && processes_with(&fg).is_empty(),
            "{how}: step processes survive"
        );
        let new_dirs: Vec<_> = workspace_dirs().difference(&dirs_before).cloned().collect();
        ensure!(new_dirs.is_empty(), "{how}: workspace left: {new_dirs:?}");
        let entries = upper_entries(&run_dir.join("upper"));
        ensure!(entries.is_empty(), "{how}: upperdir not empty: {entries:?}");
    }
    Ok(())
}

/// Rootless without subordinate ids: only 0 is mapped; root works, other
/// users fail with a clear message.
fn single_id_mapping(env: &Env) -> CaseResult {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let one = |host| {
        vec![kiln_sandbox::IdRange {
            container: 0,
            host,
            size: 1,
        }]
    };
    let map = IdMap {
        uids: one(uid),
        gids: one(gid),
        limitation: Some("test: single id".into()),
    };
    let (mut spec, upper) = env.sh(
        "single",
        "id -u; echo hi > /f; chown 1001 /f 2>/dev/null || echo chown-refused",
    );
    spec.id_map = Some(map.clone());
    let outcome = kiln_sandbox::run(&spec, &mut |_| {}).map_err(|e| e.to_string())?;
    ensure!(
        outcome.tail == ["0", "chown-refused"],
        "output {:?}",
        outcome.tail
    );
    ensure!(
        outcome
            .warnings
            .iter()
            .any(|w| w.contains("test: single id")),
        "no warning: {:?}",
        outcome.warnings
    );
    let m = upper
        .join("f")
        .symlink_metadata()
        .map_err(|e| e.to_string())?;
    ensure!(
        map.to_container_uid(m.uid()) == Some(0),
        "owner {}",
        m.uid()
    );
    let (mut spec, _) = env.sh("single-user", "id -u");
    spec.id_map = Some(map);
    spec.user = UserSpec::new("1001");
    match run(&spec) {
        Err(SandboxError::Setup(m))
            if m.contains("does not exist in this rootless sandbox")
                && m.contains("test: single id") =>
        {
            Ok(())
        }
        other => Err(format!("USER 1001 with one mapped id: {other:?}")),
    }
}

/// A step joins a network namespace made beforehand (by a `NetnsHolder`, as
/// kiln does for container networks) instead of making one.
fn joins_a_network_namespace_made_beforehand(env: &Env) -> CaseResult {
    let holder = kiln_sandbox::NetnsHolder::create().map_err(|e| e.to_string())?;
    let ino = std::fs::metadata(holder.path())
        .map_err(|e| e.to_string())?
        .ino();
    let (mut spec, _) = env.sh(
        "joinnetns",
        "readlink /proc/self/ns/net; cat /sys/class/net/lo/flags",
    );
    spec.join_netns = Some(holder.path());
    let out = run_ok(&spec)?;
    ensure!(
        out.first() == Some(&format!("net:[{ino}]")),
        "the step is not in the holder's namespace (inode {ino}): {out:?}"
    );
    let flags = u32::from_str_radix(out[1].trim_start_matches("0x"), 16).unwrap_or(0);
    ensure!(
        flags & 1 == 1,
        "the holder did not bring lo up (flags {})",
        out[1]
    );
    // A second step joins the same one (the containers of a rootless project).
    let (mut again, _) = env.sh("joinnetns2", "readlink /proc/self/ns/net");
    again.join_netns = Some(holder.path());
    let out = run_ok(&again)?;
    ensure!(out.first() == Some(&format!("net:[{ino}]")), "{out:?}");
    let pid = holder.pid();
    drop(holder);
    ensure!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z")),
        "the holder {pid} outlived its drop"
    );
    Ok(())
}

/// `exec_in` runs a command in a running step: its PID namespace, its root,
/// its hostname, as the user given, with no more than Docker's capabilities.
fn exec_in_a_running_step(env: &Env) -> CaseResult {
    let (mut spec, _) = env.sh("execin", "echo started; exec sleep 30");
    spec.hostname = "kiln-exec-test".into();
    let pid_file = env.base.join("execin.pid");
    spec.pid_file = Some(pid_file.clone());
    let step = kiln_sandbox::spawn(&spec).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(p) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            break p;
        }
        ensure!(
            Instant::now() < deadline,
            "no pid file {}",
            pid_file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let exec = kiln_sandbox::ExecSpec {
        args: vec![
            "sh".into(),
            "-c".into(),
            "id -u; hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; grep CapEff /proc/self/status; exit 7".into(),
        ],
        env: vec![format!("PATH={}", kiln_sandbox::spec::DEFAULT_PATH)],
        cwd: "/".into(),
        user: UserSpec::new("1001"),
    };
    let result = kiln_sandbox::exec_in(pid, &exec, Duration::from_secs(10));
    step.killer().kill();
    let _ = step.wait(&mut |_| {});
    let out = result.map_err(|e| format!("exec_in: {e}"))?;
    ensure!(
        out.status == kiln_sandbox::ExitStatus::Code(7),
        "status {:?}: {}",
        out.status,
        out.output
    );
    let lines: Vec<&str> = out.output.lines().collect();
    // PID 1 of its namespace is the step (before or after its shell execs sleep).
    ensure!(
        lines.len() >= 4
            && lines[0] == "1001"
            && lines[1] == "kiln-exec-test"
            && (lines[2].starts_with("sleep 30")
                || lines[2].starts_with("/bin/sh -c echo started")),
        "output {lines:?}"
    );
    ensure!(
        lines
            .iter()
            .any(|l| l.starts_with("CapEff:") && l.ends_with("0000000000000000")),
        "a non-root exec keeps no capabilities: {lines:?}"
    );
    // The step is gone: exec_in says so.
    let gone = kiln_sandbox::exec_in(pid, &exec, Duration::from_secs(5));
    ensure!(gone.is_err(), "exec_in into an ended step: {gone:?}");
    Ok(())
}

type Case = (&'static str, fn(&Env) -> CaseResult);

/// Cases that need real root (the copying snapshotter chowns on the host).
const ROOT_ONLY_CASES: &[Case] = &[
    (
        "the copying snapshotter gives the overlay's upperdir",
        copy_snapshotter_matches_overlay,
    ),
    (
        "killing the caller kills the step and cleans up",
        caller_death_kills_the_step,
    ),
    (
        "a step joins a network namespace made beforehand",
        joins_a_network_namespace_made_beforehand,
    ),
    (
        "exec_in runs a command in a running step as its user",
        exec_in_a_running_step,
    ),
];

const CASES: &[Case] = &[
    ("file creation appears in the upperdir", file_creation),
    (
        "deleting a lower file makes a whiteout",
        deletion_makes_whiteout,
    ),
    ("a recreated directory is opaque", recreated_dir_is_opaque),
    (
        "chown gives the owner in the upperdir",
        chown_owner_in_upper,
    ),
    ("setuid/setgid bits are preserved", setuid_bit_preserved),
    ("symlinks", symlinks),
    ("hard links", hard_links),
    (
        "a failing command reports its exit code and output tail",
        failing_command_reports_exit_code,
    ),
    (
        "stdout and stderr lines are streamed",
        stderr_lines_are_streamed,
    ),
    ("USER 1001 runs as uid 1001 with its groups", user_1001),
    ("the step is PID 1", step_is_pid_1),
    ("the hostname is set", hostname_is_set),
    ("network none has only lo, up", network_none_has_only_lo),
    (
        "/proc and /sys masked and read-only paths",
        proc_masked_and_readonly_paths,
    ),
    (
        "capabilities are Docker's default, no_new_privs set",
        capabilities_are_dockers_default,
    ),
    (
        "insecure keeps all capabilities",
        insecure_keeps_all_capabilities,
    ),
    (
        "a secret is readable and absent from the upperdir",
        secret_is_readable_and_not_in_upper,
    ),
    (
        "a tmpfs mount leaves nothing in the upperdir",
        tmpfs_leaves_nothing,
    ),
    (
        "/etc/hosts and /etc/resolv.conf are provided, not in the upperdir",
        hosts_and_resolv_conf_not_in_upper,
    ),
    ("env and cwd", env_and_cwd),
    ("setup errors are clear", setup_errors_are_clear),
    ("bind mounts, read-only and read-write", bind_mount_readonly),
    (
        "bind sources resolve inside their root",
        bind_sources_resolve_inside_their_root,
    ),
    ("a plain directory rootfs", dir_rootfs),
    (
        "a lower given more than once mounts; the topmost copy is seen",
        repeated_lowers,
    ),
    (
        "a mount point inside another mount is made there",
        mount_inside_a_mount,
    ),
    (
        "a tmpfs at /dev/shm replaces kiln's /dev/shm",
        run_mount_replaces_dev_shm,
    ),
    (
        "Docker's default seccomp profile refuses what Docker refuses",
        seccomp_refuses_what_docker_refuses,
    ),
    (
        "insecure runs without a seccomp filter",
        insecure_has_no_seccomp_filter,
    ),
    (
        "100 runs leave no mounts, processes or dirs",
        hundred_runs_leave_nothing,
    ),
    (
        "kill and drop tear down the process tree",
        kill_and_drop_tear_down_everything,
    ),
];

/// Runs every case; returns (name, error) pairs.
fn run_cases(env: &Env) -> Vec<(&'static str, Option<String>)> {
    CASES
        .iter()
        .map(|(name, f)| {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(env)))
                .unwrap_or_else(|_| Err("panicked".into()));
            (*name, r.err())
        })
        .collect()
}

fn temp_base(tag: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("kiln-sandbox-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Removes a test tree; overlay work dirs can be mode 000, so fix modes first.
fn remove_tree(dir: &Path) {
    let _ = Command::new("chmod")
        .args(["-R", "u+rwx"])
        .arg(dir)
        .status();
    let _ = std::fs::remove_dir_all(dir);
}

/// The rootless half, run as `kiln-rootless`: prints `CASE ok|FAILED name`
/// lines and the layer manifest as JSON. With `in_userns` the worker first
/// enters kiln's own user namespace (as the `kiln` binary does for `build`),
/// so every run is made by root of that namespace.
fn rootless_worker(base: &Path, in_userns: bool) -> ExitCode {
    // A temp dir of its own (see isolate_from_other_tests), which this user can write.
    let tmp = base.join("tmp");
    if let Err(e) = std::fs::create_dir_all(&tmp) {
        println!("SETUP-FAILED creating {}: {e}", tmp.display());
        return ExitCode::FAILURE;
    }
    std::env::set_var("TMPDIR", &tmp);
    if in_userns {
        match kiln_sandbox::userns::enter_user_namespace_if_needed() {
            Ok(Some(_)) => {}
            Ok(None) => {
                println!("SETUP-FAILED the worker runs as root: no user namespace entered");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                println!("SETUP-FAILED {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let env = match Env::new(base.to_path_buf()) {
        Ok(e) => e,
        Err(e) => {
            println!("SETUP-FAILED {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(w) = &env.id_map.limitation {
        println!("WARNING {w}");
    }
    // Root of a namespace does not make the per-step mappings this case tests.
    let single = (!in_userns).then(|| {
        (
            "single-id mapping without /etc/subuid",
            single_id_mapping(&env).err(),
        )
    });
    for (name, err) in run_cases(&env).into_iter().chain(single) {
        match err {
            None => println!("CASE ok {name}"),
            Some(e) => println!("CASE FAILED {name}: {}", e.replace('\n', " ")),
        }
    }
    match layer_manifest(&env, "layer") {
        Ok(m) => println!("MANIFEST {}", serde_json::to_string(&m).unwrap_or_default()),
        Err(e) => println!("MANIFEST-FAILED {e}"),
    }
    ExitCode::SUCCESS
}

struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    fn record(&mut self, name: &str, err: Option<String>) {
        match err {
            None => {
                self.passed += 1;
                println!("test {name} ... ok");
            }
            Some(e) => {
                self.failed += 1;
                println!("test {name} ... FAILED\n    {e}");
            }
        }
    }
}

/// What the rootless worker reported.
struct RootlessReport {
    cases: Vec<(String, Option<String>)>,
    manifest: Result<Vec<String>, String>,
}

/// Runs the cases as `kiln-rootless`: `mode` is `--rootless-worker` (a user
/// namespace per step) or `--userns-worker` (the worker in kiln's own user
/// namespace first); `label` prefixes the reported case names.
fn rootless_run(
    tally: &mut Tally,
    root_manifest: &Result<Vec<String>, String>,
    mode: &str,
    label: &str,
) {
    let result = (|| -> Result<RootlessReport, String> {
        let base = temp_base(mode.trim_start_matches('-'))?;
        let exe = base.join("sandbox-test");
        std::fs::copy("/proc/self/exe", &exe)
            .map_err(|e| format!("copying the test binary: {e}"))?;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let work = base.join("work");
        std::fs::create_dir(&work).map_err(|e| e.to_string())?;
        let st = Command::new("chown")
            .arg(format!("{ROOTLESS_USER}:"))
            .arg(&work)
            .status();
        if !st.map(|s| s.success()).unwrap_or(false) {
            return Err(format!(
                "cannot chown to {ROOTLESS_USER}: run scripts/setup-test-env as root first"
            ));
        }
        let out = Command::new("runuser")
            .args(["-u", ROOTLESS_USER, "--"])
            .arg(&exe)
            .arg(mode)
            .arg(&work)
            .current_dir("/")
            .output()
            .map_err(|e| format!("runuser: {e}"))?;
        remove_tree(&base);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut cases = Vec::new();
        let mut manifest = Err("the rootless worker printed no manifest".to_string());
        for line in stdout.lines() {
            if let Some(name) = line.strip_prefix("CASE ok ") {
                cases.push((name.to_string(), None));
            } else if let Some(rest) = line.strip_prefix("CASE FAILED ") {
                let (name, err) = rest.split_once(": ").unwrap_or((rest, ""));
                cases.push((name.to_string(), Some(err.to_string())));
            } else if let Some(json) = line.strip_prefix("MANIFEST ") {
                manifest = serde_json::from_str(json).map_err(|e| e.to_string());
            } else if let Some(e) = line.strip_prefix("MANIFEST-FAILED ") {
                manifest = Err(e.to_string());
            } else if let Some(w) = line.strip_prefix("WARNING ") {
                println!("    {label} warning: {w}");
            } else if let Some(e) = line.strip_prefix("SETUP-FAILED ") {
                return Err(format!("the {label} worker could not start: {e}"));
            }
        }
        if cases.is_empty() {
            return Err(format!(
                "the rootless worker ran no case ({}): {}{}",
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(RootlessReport { cases, manifest })
    })();
    match result {
        Err(e) => tally.record(&format!("{label}: run the cases as kiln-rootless"), Some(e)),
        Ok(RootlessReport { cases, manifest }) => {
            for (name, err) in cases {
                tally.record(&format!("{label}: {name}"), err);
            }
            let verdict = match (root_manifest, manifest) {
                (Ok(root), Ok(rootless)) if *root == rootless => None,
                (Ok(root), Ok(rootless)) => Some(format!(
                    "root:\n      {}\n    rootless:\n      {}",
                    root.join("\n      "),
                    rootless.join("\n      ")
                )),
                (Err(e), _) => Some(format!("root manifest: {e}")),
                (_, Err(e)) => Some(format!("rootless manifest: {e}")),
            };
            tally.record(
                &format!("{label}: the layer equals the root layer (ids mapped back)"),
                verdict,
            );
        }
    }
}

fn main() -> ExitCode {
    kiln_sandbox::helper_main_if_requested();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--seccomp-probe") {
        return seccomp_probe();
    }
    if args.get(1).map(String::as_str) == Some("--caller-worker") && args.len() == 4 {
        return caller_worker(Path::new(&args[2]), Path::new(&args[3]));
    }
    if let Some(mode @ ("--rootless-worker" | "--userns-worker")) = args.get(1).map(String::as_str)
    {
        return match args.get(2) {
            Some(dir) => rootless_worker(Path::new(dir), mode == "--userns-worker"),
            None => ExitCode::FAILURE,
        };
    }
    // The cases run together (they share one rootfs and the rootless runs compare
    // layers with the root run's), so a filter selecting any of them runs them all.
    let labels = ["rootless", "rootless in kiln's user namespace"];
    let mut names: Vec<String> = CASES
        .iter()
        .chain(ROOT_ONLY_CASES)
        .map(|(name, _)| name.to_string())
        .collect();
    for label in labels {
        names.extend(CASES.iter().map(|(name, _)| format!("{label}: {name}")));
        names.push(format!(
            "{label}: the layer equals the root layer (ids mapped back)"
        ));
    }
    names.push("rootless: single-id mapping without /etc/subuid".into());
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    if let Some(code) = kiln_testkit::harness::nothing_selected(&names) {
        return code;
    }
    let mut tally = Tally {
        passed: 0,
        failed: 0,
    };
    let private = if rustix_is_root() {
        isolate_from_other_tests()
    } else {
        Err("not root".into())
    };
    if !rustix_is_root() {
        tally.record(
            "sandbox tests need root",
            Some("run as root (CI does)".into()),
        );
    } else if let Err(e) = &private {
        tally.record("a private mount namespace and temp dir", Some(e.clone()));
    } else {
        match temp_base("root").and_then(Env::new) {
            Err(e) => tally.record("build the busybox rootfs", Some(e)),
            Ok(env) => {
                for (name, err) in run_cases(&env) {
                    tally.record(name, err);
                }
                for (name, f) in ROOT_ONLY_CASES {
                    tally.record(name, f(&env).err());
                }
                let root_manifest = layer_manifest(&env, "layer");
                rootless_run(&mut tally, &root_manifest, "--rootless-worker", "rootless");
                rootless_run(
                    &mut tally,
                    &root_manifest,
                    "--userns-worker",
                    "rootless in kiln's user namespace",
                );
                remove_tree(&env.base);
            }
        }
    }
    if let Ok(tmp) = &private {
        remove_tree(tmp);
    }
    println!();
    // cargo's summary form (which .ci/run adds up), then the plain closing line.
    let verdict = if tally.failed == 0 { "ok" } else { "FAILED" };
    println!(
        "test result: {verdict}. {} passed; {} failed; 0 ignored; 0 measured; 0 filtered out",
        tally.passed, tally.failed
    );
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The leak checks count mounts and sandbox workspace dirs, which other
/// programs on a busy machine (other test runs, builds) change too: this
/// process (and every worker it starts) gets a mount namespace of its own,
/// with nothing propagated in, and a temp dir of its own (`TMPDIR`).
/// Call while single-threaded. Returns the temp dir.
fn isolate_from_other_tests() -> Result<PathBuf, String> {
    // SAFETY: the test's main thread is still the only one.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::REC | rustix::mount::MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    let tmp = temp_base("tmp")?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    std::env::set_var("TMPDIR", &tmp);
    Ok(tmp)
}

fn rustix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
