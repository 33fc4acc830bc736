//! Whether this host can run programs of a platform: natively (its own
//! architecture) or through an emulator registered with the kernel's
//! `binfmt_misc` (QEMU user emulation: Debian's `qemu-user-static`,
//! `tonistiigi/binfmt`). A registration counts when it is enabled, matches an
//! ELF executable of that architecture (its magic and mask, as the kernel
//! matches them) and has the `F` flag: the step runs in its own root filesystem,
//! where the emulator's path does not exist, so the kernel must have opened the
//! emulator when it was registered.

use std::fs;
use std::path::{Path, PathBuf};

/// Where the kernel's `binfmt_misc` file system is normally mounted.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// How a platform's programs run here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// The host's own architecture (or one its CPU runs directly: 386 on amd64).
    Native,
    /// Through the `binfmt_misc` registration `name`, whose interpreter is `interpreter`.
    Emulated { name: String, interpreter: String },
}

/// ELF identification of an architecture: class (1 = 32-bit, 2 = 64-bit),
/// data (1 = little-endian, 2 = big-endian), e_machine; and the QEMU name its
/// emulator has (for the message).
fn elf_of(arch: &str) -> Option<(u8, u8, u16, &'static str)> {
    Some(match arch {
        "amd64" => (2, 1, 62, "x86_64"),
        "386" => (1, 1, 3, "i386"),
        "arm64" => (2, 1, 183, "aarch64"),
        "arm" => (1, 1, 40, "arm"),
        "ppc64le" => (2, 1, 21, "ppc64le"),
        "s390x" => (2, 2, 22, "s390x"),
        "riscv64" => (2, 1, 243, "riscv64"),
        "mips64le" => (2, 1, 8, "mips64el"),
        "mips64" => (2, 2, 8, "mips64"),
        "loong64" => (2, 1, 258, "loongarch64"),
        _ => return None,
    })
}

/// The first 20 bytes of an ELF executable for `arch` (what binfmt magics test).
fn elf_header(arch: &str) -> Option<[u8; 20]> {
    let (class, data, machine, _) = elf_of(arch)?;
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = data;
    h[6] = 1; // EI_VERSION
    let (typ, mach) = if data == 1 {
        (2u16.to_le_bytes(), machine.to_le_bytes())
    } else {
        (2u16.to_be_bytes(), machine.to_be_bytes())
    };
    h[16..18].copy_from_slice(&typ);
    h[18..20].copy_from_slice(&mach);
    Some(h)
}

/// The host's architecture, as a platform names it (`amd64`, `arm64`, …).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// A `binfmt_misc` registration, as its file reads.
#[derive(Debug, Default)]
struct Registration {
    name: String,
    enabled: bool,
    interpreter: String,
    flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Vec<u8>,
    /// An extension match (`E`), not a magic one.
    extension: bool,
}

fn parse_registration(name: &str, text: &str) -> Registration {
    let mut r = Registration {
        name: name.to_string(),
        ..Registration::default()
    };
    let hex = |s: &str| {
        (0..s.len() / 2)
            .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Vec<u8>>()
    };
    for line in text.lines() {
        let line = line.trim();
        if line == "enabled" {
            r.enabled = true;
        } else if let Some(v) = line.strip_prefix("interpreter ") {
            r.interpreter = v.to_string();
        } else if let Some(v) = line.strip_prefix("flags:") {
            r.flags = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("offset ") {
            r.offset = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("magic ") {
            r.magic = hex(v.trim());
        } else if let Some(v) = line.strip_prefix("mask ") {
            r.mask = hex(v.trim());
        } else if line.starts_with("extension ") {
            r.extension = true;
        }
    }
    r
}

impl Registration {
    /// Whether the kernel would hand `header` to this registration.
    fn matches(&self, header: &[u8]) -> bool {
        if self.extension || self.magic.is_empty() {
            return false;
        }
        self.magic.iter().enumerate().all(|(i, m)| {
            let mask = self.mask.get(i).copied().unwrap_or(0xff);
            header
                .get(self.offset + i)
                .is_some_and(|b| b & mask == m & mask)
        })
    }
}

/// How programs of `arch` (a platform's architecture) run on this host, with
/// `binfmt_misc` read from `dir`; `Err` is the one message that says why they
/// cannot and how to add an emulator.
pub fn support_in(dir: &Path, platform: &str, arch: &str) -> Result<Support, String> {
    let host = host_arch();
    if arch == host || (host == "amd64" && arch == "386") {
        return Ok(Support::Native);
    }
    let Some(header) = elf_header(arch) else {
        return Err(format!(
            "this host ({host}) cannot run {platform} programs: kiln knows no emulator for the architecture {arch:?}"
        ));
    };
    let qemu = elf_of(arch).map(|e| e.3).unwrap_or(arch);
    let how = format!(
        "install QEMU user emulation and register it with binfmt_misc, e.g. on Debian as root: \
         `apt-get install qemu-user-static binfmt-support && update-binfmts --enable qemu-{qemu}` \
         (mount binfmt_misc first if needed: `mount -t binfmt_misc binfmt_misc {BINFMT_MISC}`), \
         or `docker run --privileged --rm tonistiigi/binfmt --install {arch}`"
    );
    let fail = |why: String| {
        Err(format!(
            "this host ({host}) cannot run {platform} programs: {why}; to build or run {platform} images, {how}"
        ))
    };
    let status = fs::read_to_string(dir.join("status"));
    match status.as_deref().map(str::trim) {
        Ok("enabled") => {}
        Ok(_) => {
            return fail(format!(
                "binfmt_misc is disabled ({})",
                dir.join("status").display()
            ))
        }
        Err(_) => return fail(format!("binfmt_misc is not mounted at {}", dir.display())),
    }
    let mut registrations: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    registrations.sort();
    let mut without_f = None;
    let mut disabled = None;
    for path in registrations {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name == "status" || name == "register" {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let r = parse_registration(name, &text);
        if !r.matches(&header) {
            continue;
        }
        if !r.enabled {
            disabled.get_or_insert(r.name);
            continue;
        }
        if !r.flags.contains('F') {
            without_f.get_or_insert(r.name);
            continue;
        }
        return Ok(Support::Emulated {
            name: r.name,
            interpreter: r.interpreter,
        });
    }
    if let Some(name) = without_f {
        return fail(format!(
            "its binfmt_misc registration {name:?} lacks the F (fix binary) flag, without which the emulator cannot be found inside a container's root filesystem"
        ));
    }
    if let Some(name) = disabled {
        return fail(format!("its binfmt_misc registration {name:?} is disabled"));
    }
    fail(format!(
        "no emulator for {arch} is registered with binfmt_misc"
    ))
}

/// [`support_in`] with the system's `binfmt_misc`.
pub fn support(platform: &str, arch: &str) -> Result<Support, String> {
    support_in(Path::new(BINFMT_MISC), platform, arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's qemu-user-static registration for aarch64 (bookworm).
    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";

    fn binfmt(entries: &[(&str, &str)], status: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("status"), status).unwrap();
        fs::write(dir.path().join("register"), "").unwrap();
        for (name, text) in entries {
            fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn native_needs_no_registration() {
        let none = Path::new("/nonexistent-binfmt");
        let host = host_arch();
        assert_eq!(
            support_in(none, &format!("linux/{host}"), host),
            Ok(Support::Native)
        );
    }

    #[test]
    fn a_matching_enabled_registration_with_f_is_an_emulator() {
        // Only meaningful where arm64 is foreign.
        if host_arch() == "arm64" {
            return;
        }
        let dir = binfmt(&[("qemu-aarch64", AARCH64)], "enabled\n");
        assert_eq!(
            support_in(dir.path(), "linux/arm64", "arm64"),
            Ok(Support::Emulated {
                name: "qemu-aarch64".into(),
                interpreter: "/usr/libexec/qemu-binfmt/aarch64-binfmt-P".into()
            })
        );
        // The aarch64 magic does not match a riscv64 executable.
        let err = support_in(dir.path(), "linux/riscv64", "riscv64").unwrap_err();
        assert!(
            err.contains("no emulator for riscv64 is registered"),
            "{err}"
        );
        assert!(err.contains("cannot run linux/riscv64 programs"), "{err}");
        assert!(
            err.contains("update-binfmts --enable qemu-riscv64"),
            "{err}"
        );
    }

    #[test]
    fn missing_disabled_and_unfixed_registrations_say_so() {
        if host_arch() == "arm64" {
            return;
        }
        let err = support_in(Path::new("/nonexistent-binfmt"), "linux/arm64", "arm64").unwrap_err();
        assert!(err.contains("binfmt_misc is not mounted"), "{err}");
        assert!(err.contains("qemu-user-static"), "{err}");
        let off = AARCH64.replacen("enabled", "disabled", 1);
        let dir = binfmt(&[("qemu-aarch64", &off)], "enabled\n");
        let err = support_in(dir.path(), "linux/arm64", "arm64").unwrap_err();
        assert!(err.contains("\"qemu-aarch64\" is disabled"), "{err}");
        let no_f = AARCH64.replace("flags: POF", "flags: OC");
        let dir = binfmt(&[("qemu-aarch64", &no_f)], "enabled\n");
        let err = support_in(dir.path(), "linux/arm64", "arm64").unwrap_err();
        assert!(err.contains("lacks the F (fix binary) flag"), "{err}");
        let dir = binfmt(&[("qemu-aarch64", AARCH64)], "disabled\n");
        let err = support_in(dir.path(), "linux/arm64", "arm64").unwrap_err();
        assert!(err.contains("binfmt_misc is disabled"), "{err}");
    }
}
