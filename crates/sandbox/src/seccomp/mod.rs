//! Docker's default seccomp profile, compiled to a classic BPF program and
//! installed in the step right before `execve` (after `no_new_privs`), as runc
//! does for BuildKit. `RUN --security=insecure` runs without it.
//!
//! The profile is moby's `seccomp/default.json` (see `README.md` beside this
//! file for where it came from and its licence), embedded and read when a
//! sandbox starts. It is applied as moby and runc apply it:
//!
//! - a rule counts only if its `includes` hold and its `excludes` do not, for
//!   the native architecture (Go's name: `amd64`, `arm64`), the capabilities the
//!   step gets (Docker's default set) and the running kernel (`minKernel`);
//! - the architectures are the native one's entry in `archMap` with its
//!   sub-architectures (x86_64: i386 and x32 too; aarch64: arm); a syscall from
//!   any other architecture kills the thread (libseccomp's default);
//! - names that an architecture does not have are skipped; arguments are
//!   compared as 64-bit values (`SCMP_CMP_MASKED_EQ` takes the mask from
//!   `value` and the datum from `valueTwo`); the rules of one syscall are tried
//!   in the profile's order and the first that matches decides;
//! - anything else gets `defaultAction` with `defaultErrnoRet`, except syscall
//!   numbers above the highest the profile names for that architecture, which
//!   fail with ENOSYS (runc's patch, so programs fall back from syscalls newer
//!   than the profile, as they do on older kernels).

mod bpf;
mod syscalls;

use serde::Deserialize;

pub(crate) use bpf::SockFilter;

/// moby/profiles `seccomp/default.json`.
const DEFAULT_PROFILE: &str = include_str!("default.json");

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMapEntry>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    includes: Option<Condition>,
    #[serde(default)]
    excludes: Option<Condition>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: Op,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    #[serde(rename = "SCMP_CMP_NE")]
    Ne,
    #[serde(rename = "SCMP_CMP_LT")]
    Lt,
    #[serde(rename = "SCMP_CMP_LE")]
    Le,
    #[serde(rename = "SCMP_CMP_EQ")]
    Eq,
    #[serde(rename = "SCMP_CMP_GE")]
    Ge,
    #[serde(rename = "SCMP_CMP_GT")]
    Gt,
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEq,
}

/// The seccomp return value of an action (`SECCOMP_RET_*`).
fn action(name: &str, errno: Option<u32>) -> Result<u32, String> {
    const EPERM: u32 = libc::EPERM as u32;
    Ok(match name {
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => bpf::RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => bpf::RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => bpf::RET_TRAP,
        "SCMP_ACT_ERRNO" => bpf::RET_ERRNO | (errno.unwrap_or(EPERM) & 0xffff),
        "SCMP_ACT_TRACE" => bpf::RET_TRACE | (errno.unwrap_or(EPERM) & 0xffff),
        "SCMP_ACT_LOG" => bpf::RET_LOG,
        "SCMP_ACT_ALLOW" => bpf::RET_ALLOW,
        other => return Err(format!("seccomp profile: unsupported action {other}")),
    })
}

/// What the filter is compiled for.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// Go's name of the native architecture (`amd64`, `arm64`), as the
    /// profile's `arches` use it.
    pub go_arch: &'static str,
    /// Names of the capabilities in the step's bounding set (`CAP_CHOWN`, …).
    pub caps: Vec<&'static str>,
    /// The running kernel's (major, minor).
    pub kernel: (u32, u32),
}

impl Target {
    /// This machine, for a step with `caps`; None where kiln has no syscall
    /// table (architectures other than x86_64 and aarch64).
    pub(crate) fn native(caps: Vec<&'static str>) -> Option<Target> {
        let go_arch = if cfg!(target_arch = "x86_64") {
            "amd64"
        } else if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            return None;
        };
        let release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        Some(Target {
            go_arch,
            caps,
            kernel: parse_kernel(&release).unwrap_or((0, 0)),
        })
    }
}

/// `6.18.44-foo` → (6, 18).
fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// An architecture of the filter: the kernel's `AUDIT_ARCH_*`, its table, and
/// for x86_64 whether these are the x32 numbers (with `__X32_SYSCALL_BIT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Arch {
    audit: u32,
    x32: bool,
    table: &'static [(&'static str, u32)],
}

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn arch_of(scmp: &str) -> Option<Arch> {
    let (audit, x32, table) = match scmp {
        "SCMP_ARCH_X86_64" => (AUDIT_ARCH_X86_64, false, syscalls::X86_64),
        "SCMP_ARCH_X32" => (AUDIT_ARCH_X86_64, true, syscalls::X32),
        "SCMP_ARCH_X86" => (AUDIT_ARCH_I386, false, syscalls::I386),
        "SCMP_ARCH_AARCH64" => (AUDIT_ARCH_AARCH64, false, syscalls::AARCH64),
        "SCMP_ARCH_ARM" => (AUDIT_ARCH_ARM, false, syscalls::ARM),
        _ => return None,
    };
    Some(Arch { audit, x32, table })
}

impl Rule {
    /// moby's `setupSeccomp` filter: does this rule apply to `t`?
    fn applies(&self, t: &Target) -> Result<bool, String> {
        let kernel_at_least = |v: &str| -> Result<bool, String> {
            let want =
                parse_kernel(v).ok_or_else(|| format!("seccomp profile: bad minKernel {v:?}"))?;
            Ok(t.kernel >= want)
        };
        if let Some(ex) = &self.excludes {
            if ex.arches.iter().any(|a| a == t.go_arch)
                || ex.caps.iter().any(|c| t.caps.contains(&c.as_str()))
            {
                return Ok(false);
            }
            if let Some(k) = &ex.min_kernel {
                if kernel_at_least(k)? {
                    return Ok(false);
                }
            }
        }
        if let Some(inc) = &self.includes {
            if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == t.go_arch) {
                return Ok(false);
            }
            if !inc.caps.iter().all(|c| t.caps.contains(&c.as_str())) {
                return Ok(false);
            }
            if let Some(k) = &inc.min_kernel {
                if !kernel_at_least(k)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .map(String::as_str)
            .chain(self.name.as_deref())
    }
}

/// How one syscall number is decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Rules with conditions, in order: (all of these args, then this action).
    conditional: Vec<(Vec<Arg>, u32)>,
    /// A rule without conditions (after the conditional ones never matter).
    unconditional: Option<u32>,
}

/// The filter of one architecture, before code generation.
#[derive(Clone, Debug)]
pub(crate) struct ArchFilter {
    arch: Arch,
    /// Syscall number → decision, for every number a rule names.
    decisions: std::collections::BTreeMap<u32, Decision>,
    /// Numbers above this get ENOSYS (runc's patch).
    last_known: Option<u32>,
}

/// The profile resolved for a target: default action and one filter per
/// architecture.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    default: u32,
    arches: Vec<ArchFilter>,
}

fn resolve(profile: &Profile, t: &Target) -> Result<Resolved, String> {
    let default = action(&profile.default_action, profile.default_errno_ret)?;
    let native_scmp = match t.go_arch {
        "amd64" => "SCMP_ARCH_X86_64",
        "arm64" => "SCMP_ARCH_AARCH64",
        other => return Err(format!("seccomp: no syscall table for {other}")),
    };
    let mut arch_names = vec![native_scmp.to_string()];
    if let Some(entry) = profile
        .arch_map
        .iter()
        .find(|a| a.architecture == native_scmp)
    {
        arch_names.extend(entry.sub_architectures.iter().flatten().cloned());
    }
    let rules: Vec<&Rule> = profile
        .syscalls
        .iter()
        .filter_map(|r| r.applies(t).map(|ok| ok.then_some(r)).transpose())
        .collect::<Result<_, _>>()?;
    let mut arches = Vec::new();
    for name in &arch_names {
        let Some(arch) = arch_of(name) else { continue };
        if arches.iter().any(|a: &ArchFilter| a.arch == arch) {
            continue;
        }
        let numbers: std::collections::HashMap<&str, u32> = arch.table.iter().copied().collect();
        let number = |n: &str| numbers.get(n).copied();
        let mut decisions: std::collections::BTreeMap<u32, Decision> = Default::default();
        let mut last_known = None;
        for rule in &rules {
            let act = action(&rule.action, rule.errno_ret)?;
            for nr in rule.names().filter_map(number) {
                last_known = last_known.max(Some(nr));
                // runc skips rules whose action is the default one.
                if act == default {
                    continue;
                }
                let d = decisions.entry(nr).or_default();
                if rule.args.is_empty() {
                    d.unconditional.get_or_insert(act);
                } else if rule_has_repeated_arg(&rule.args) {
                    // runc: conditions on one argument given twice become
                    // separate rules (any of them matches).
                    for a in &rule.args {
                        d.conditional.push((vec![*a], act));
                    }
                } else {
                    d.conditional.push((rule.args.clone(), act));
                }
            }
        }
        arches.push(ArchFilter {
            arch,
            decisions,
            last_known,
        });
    }
    Ok(Resolved { default, arches })
}

fn rule_has_repeated_arg(args: &[Arg]) -> bool {
    args.iter()
        .enumerate()
        .any(|(i, a)| args[..i].iter().any(|b| b.index == a.index))
}

/// Docker's default profile compiled for `t`.
pub(crate) fn default_filter(t: &Target) -> Result<Vec<SockFilter>, String> {
    let profile: Profile = serde_json::from_str(DEFAULT_PROFILE)
        .map_err(|e| format!("the built-in seccomp profile: {e}"))?;
    bpf::compile(&resolve(&profile, t)?)
}

/// Installs `filter` for this (single-threaded) process and what it execs.
/// Needs `no_new_privs` (or CAP_SYS_ADMIN).
pub(crate) fn install(filter: &[SockFilter]) -> Result<(), String> {
    let prog = bpf::SockFprog {
        len: filter.len() as u16,
        filter: filter.as_ptr(),
    };
    // SAFETY: PR_SET_SECCOMP reads a sock_fprog that points at `filter`,
    // which outlives the call; the kernel copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const bpf::SockFprog,
        )
    };
    if r < 0 {
        return Err(format!(
            "installing the seccomp filter: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
