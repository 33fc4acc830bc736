//! The compiled filters, run through a small classic-BPF interpreter.

use super::bpf::*;
use super::*;

/// Runs `prog` on a `seccomp_data` the way the kernel does.
fn eval(prog: &[SockFilter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let ins = prog[pc];
        pc += 1;
        match ins.code {
            LD_W_ABS => {
                let o = ins.k as usize;
                a = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
            }
            ALU_AND_K => a &= ins.k,
            JA => pc += ins.k as usize,
            JEQ_K | JGT_K | JGE_K => {
                let taken = match ins.code {
                    JEQ_K => a == ins.k,
                    JGT_K => a > ins.k,
                    _ => a >= ins.k,
                };
                pc += if taken { ins.jt } else { ins.jf } as usize;
            }
            RET_K => return ins.k,
            other => panic!("unexpected BPF code {other:#x}"),
        }
    }
}

fn default_caps() -> Vec<&'static str> {
    crate::container::DEFAULT_CAPABILITIES
        .iter()
        .map(|(_, n)| *n)
        .collect()
}

fn filter(go_arch: &'static str, caps: Vec<&'static str>, kernel: (u32, u32)) -> Vec<SockFilter> {
    default_filter(&Target {
        go_arch,
        caps,
        kernel,
    })
    .unwrap()
}

const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;
const NO_ARGS: [u64; 6] = [0; 6];

fn nr(table: &[(&str, u32)], name: &str) -> u32 {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no syscall {name}"))
        .1
}

#[test]
fn x86_64_default_profile_decisions() {
    let prog = filter("amd64", default_caps(), (6, 18));
    assert!(prog.len() < 4096, "{} instructions", prog.len());
    let x = |name: &str, args: [u64; 6]| {
        eval(&prog, AUDIT_ARCH_X86_64, nr(syscalls::X86_64, name), args)
    };
    for allowed in [
        "read",
        "write",
        "openat",
        "execve",
        "wait4",
        "mmap",
        "arch_prctl",
        "chroot",
        "ptrace",
        "faccessat2",
        "fchmodat2",
        "rseq",
        "statx",
    ] {
        assert_eq!(x(allowed, NO_ARGS), RET_ALLOW, "{allowed}");
    }
    for refused in [
        "unshare",
        "keyctl",
        "add_key",
        "request_key",
        "kexec_load",
        "mount",
        "umount2",
        "setns",
        "bpf",
        "reboot",
        "init_module",
        "pivot_root",
        "swapon",
        "open_by_handle_at",
        "clock_settime",
        "perf_event_open",
        "io_uring_setup",
    ] {
        assert_eq!(x(refused, NO_ARGS), EPERM, "{refused}");
    }
    // clone: namespaces refused, threads and forks allowed; clone3 → ENOSYS
    // so that libc falls back to clone.
    const CLONE_NEWUSER: u64 = 0x1000_0000;
    const CLONE_NEWNS: u64 = 0x0002_0000;
    let sigchld = [libc::SIGCHLD as u64, 0, 0, 0, 0, 0];
    assert_eq!(x("clone", sigchld), RET_ALLOW);
    assert_eq!(
        x("clone", [0x3d0f00, 0, 0, 0, 0, 0]),
        RET_ALLOW,
        "pthread flags"
    );
    assert_eq!(x("clone", [CLONE_NEWUSER | 17, 0, 0, 0, 0, 0]), EPERM);
    assert_eq!(x("clone", [CLONE_NEWNS, 0, 0, 0, 0, 0]), EPERM);
    assert_eq!(x("clone3", NO_ARGS), ENOSYS);
    // socket: everything but AF_ALG (38) and AF_VSOCK (40).
    for (domain, want) in [
        (1, RET_ALLOW),
        (2, RET_ALLOW),
        (10, RET_ALLOW),
        (16, RET_ALLOW),
    ] {
        assert_eq!(
            x("socket", [domain, 1, 0, 0, 0, 0]),
            want,
            "domain {domain}"
        );
    }
    assert_eq!(x("socket", [37, 0, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(x("socket", [38, 0, 0, 0, 0, 0]), EPERM);
    assert_eq!(x("socket", [39, 0, 0, 0, 0, 0]), RET_ALLOW);
    assert_eq!(x("socket", [40, 0, 0, 0, 0, 0]), EPERM);
    assert_eq!(x("socket", [41, 0, 0, 0, 0, 0]), RET_ALLOW);
    // The upper half counts: 2 + 2^32 is not AF_INET, it is above 40.
    assert_eq!(x("socket", [(1 << 32) | 38, 0, 0, 0, 0, 0]), RET_ALLOW);
    // personality: only the listed personas.
    for (p, want) in [
        (0, RET_ALLOW),
        (8, RET_ALLOW),
        (0x20000, RET_ALLOW),
        (0x20008, RET_ALLOW),
        (0xffff_ffff, RET_ALLOW),
        (1, EPERM),
        (0x0040_0000, EPERM),
    ] {
        assert_eq!(x("personality", [p, 0, 0, 0, 0, 0]), want, "persona {p:#x}");
    }
    // Unknown and newer-than-the-profile numbers: ENOSYS; a hole below the
    // last known number: the default (EPERM).
    let last = nr(syscalls::X86_64, "file_setattr");
    assert!(eval(&prog, AUDIT_ARCH_X86_64, last + 1, NO_ARGS) == ENOSYS);
    assert!(eval(&prog, AUDIT_ARCH_X86_64, 100_000, NO_ARGS) == ENOSYS);
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, 400, NO_ARGS),
        EPERM,
        "unused 387..423"
    );
    // The sub-architectures: i386 and x32 get the same rules.
    let i = |name: &str| eval(&prog, AUDIT_ARCH_I386, nr(syscalls::I386, name), NO_ARGS);
    assert_eq!(i("read"), RET_ALLOW);
    assert_eq!(i("socketcall"), RET_ALLOW);
    assert_eq!(i("unshare"), EPERM);
    assert_eq!(i("clone3"), ENOSYS);
    let x32 = |name: &str| eval(&prog, AUDIT_ARCH_X86_64, nr(syscalls::X32, name), NO_ARGS);
    assert_eq!(x32("read"), RET_ALLOW);
    assert_eq!(x32("keyctl"), EPERM);
    // Any other architecture is killed.
    assert_eq!(
        eval(&prog, AUDIT_ARCH_AARCH64, 63, NO_ARGS),
        RET_KILL_THREAD
    );
}

#[test]
fn includes_and_excludes_follow_caps_and_kernel() {
    // ptrace needs kernel 4.8 without CAP_SYS_PTRACE.
    let old = filter("amd64", default_caps(), (4, 4));
    let ptrace = nr(syscalls::X86_64, "ptrace");
    assert_eq!(eval(&old, AUDIT_ARCH_X86_64, ptrace, NO_ARGS), EPERM);
    // With CAP_SYS_ADMIN: unshare, mount and clone3 allowed, clone unrestricted.
    let mut caps = default_caps();
    caps.push("CAP_SYS_ADMIN");
    let admin = filter("amd64", caps, (6, 18));
    for name in ["unshare", "mount", "clone3", "setns"] {
        let n = nr(syscalls::X86_64, name);
        assert_eq!(
            eval(&admin, AUDIT_ARCH_X86_64, n, NO_ARGS),
            RET_ALLOW,
            "{name}"
        );
    }
    let clone = nr(syscalls::X86_64, "clone");
    assert_eq!(
        eval(
            &admin,
            AUDIT_ARCH_X86_64,
            clone,
            [0x1000_0000, 0, 0, 0, 0, 0]
        ),
        RET_ALLOW
    );
    // Without CAP_SYS_CHROOT, chroot is refused.
    let caps: Vec<_> = default_caps()
        .into_iter()
        .filter(|c| *c != "CAP_SYS_CHROOT")
        .collect();
    let no_chroot = filter("amd64", caps, (6, 18));
    let chroot = nr(syscalls::X86_64, "chroot");
    assert_eq!(eval(&no_chroot, AUDIT_ARCH_X86_64, chroot, NO_ARGS), EPERM);
}

#[test]
fn aarch64_default_profile_decisions() {
    let prog = filter("arm64", default_caps(), (6, 18));
    let a = |name: &str| {
        eval(
            &prog,
            AUDIT_ARCH_AARCH64,
            nr(syscalls::AARCH64, name),
            NO_ARGS,
        )
    };
    assert_eq!(a("read"), RET_ALLOW);
    assert_eq!(a("openat"), RET_ALLOW);
    assert_eq!(a("unshare"), EPERM);
    assert_eq!(a("keyctl"), EPERM);
    assert_eq!(a("clone3"), ENOSYS);
    let arm = |name: &str| eval(&prog, AUDIT_ARCH_ARM, nr(syscalls::ARM, name), NO_ARGS);
    assert_eq!(arm("read"), RET_ALLOW);
    assert_eq!(arm("set_tls"), RET_ALLOW, "arm-only, included for arm64");
    assert_eq!(arm("kexec_load"), EPERM);
    // x86_64's arch_prctl and modify_ldt are amd64-only rules.
    assert_eq!(
        eval(&prog, AUDIT_ARCH_X86_64, 158, NO_ARGS),
        RET_KILL_THREAD
    );
}

/// Every comparison operator on 64-bit values, at its boundaries.
#[test]
fn argument_comparisons_are_64_bit() {
    let ops = [
        ("SCMP_CMP_EQ", 0u64),
        ("SCMP_CMP_NE", 0),
        ("SCMP_CMP_LT", 0),
        ("SCMP_CMP_LE", 0),
        ("SCMP_CMP_GT", 0),
        ("SCMP_CMP_GE", 0),
        ("SCMP_CMP_MASKED_EQ", 0x0000_0001_0000_0000),
    ];
    let value: u64 = 0x0000_0001_0000_0010;
    let probes: [u64; 9] = [
        0,
        0x10,
        0x0000_0001_0000_000f,
        value,
        0x0000_0001_0000_0011,
        0x0000_0002_0000_0000,
        0x0000_0000_ffff_ffff,
        u64::MAX,
        0x0000_0001_ffff_ffff,
    ];
    for (op, value_two) in ops {
        let json = format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{{"index":2,"value":{value},"valueTwo":{value_two},"op":"{op}"}}]}}]}}"#
        );
        let profile: Profile = serde_json::from_str(&json).unwrap();
        let t = Target {
            go_arch: "amd64",
            caps: vec![],
            kernel: (6, 18),
        };
        let prog = compile(&resolve(&profile, &t).unwrap()).unwrap();
        for p in probes {
            let want = match op {
                "SCMP_CMP_EQ" => p == value,
                "SCMP_CMP_NE" => p != value,
                "SCMP_CMP_LT" => p < value,
                "SCMP_CMP_LE" => p <= value,
                "SCMP_CMP_GT" => p > value,
                "SCMP_CMP_GE" => p >= value,
                _ => p & value == value_two,
            };
            let got = eval(&prog, AUDIT_ARCH_X86_64, 0, [0, 0, p, 0, 0, 0]);
            assert_eq!(got == RET_ALLOW, want, "{op} {p:#x} against {value:#x}");
        }
    }
}

#[test]
fn kernel_versions() {
    assert_eq!(parse_kernel("6.18.44-fc-v1147"), Some((6, 18)));
    assert_eq!(parse_kernel("4.8"), Some((4, 8)));
    assert_eq!(parse_kernel("5"), Some((5, 0)));
    assert_eq!(parse_kernel("x"), None);
}
