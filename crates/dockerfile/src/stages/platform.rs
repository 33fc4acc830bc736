//! Platforms (`linux/amd64`, `linux/arm/v7`) as containerd's `platforms`
//! package parses and normalizes them.

use std::fmt;

/// An OS/architecture/variant triple.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    /// Empty when the architecture has no variant (or the default one).
    pub variant: String,
}

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];

const KNOWN_ARCH: &[&str] = &[
    "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "loong64", "mips", "mipsle",
    "mips64", "mips64le", "ppc", "ppc64", "ppc64le", "riscv", "riscv64", "s390", "s390x", "sparc",
    "sparc64", "wasm",
];

/// containerd's `normalizeArch`.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                _ => variant,
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), v)
        }
        _ => (arch, variant),
    }
}

impl Platform {
    /// The platform kiln runs on (always Linux).
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", ""),
            "x86" => ("386", ""),
            "aarch64" => ("arm64", ""),
            "arm" => ("arm", "v7"),
            "powerpc64" => ("ppc64le", ""),
            "loongarch64" => ("loong64", ""),
            other => (other, ""),
        };
        Platform {
            os: "linux".into(),
            arch: arch.into(),
            variant: variant.into(),
        }
    }

    /// containerd's `platforms.Parse`: `os`, `arch`, `os/arch`, `os/arch/variant`,
    /// normalized (`x86_64` → `amd64`, `armhf` → `arm/v7`, ...).
    pub fn parse(spec: &str) -> Result<Platform, String> {
        let valid_part = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        let parts: Vec<&str> = spec.split('/').collect();
        if !parts.iter().all(|p| valid_part(p)) {
            return Err(format!("{spec:?}: invalid platform specifier"));
        }
        let host = Platform::host();
        match parts.as_slice() {
            [one] => {
                let one = one.to_ascii_lowercase();
                if KNOWN_OS.contains(&one.as_str()) {
                    Ok(Platform { os: one, ..host })
                } else {
                    let (arch, variant) = normalize_arch(&one, "");
                    if KNOWN_ARCH.contains(&arch.as_str()) {
                        let variant = if arch == "arm" && variant == "v7" {
                            String::new()
                        } else {
                            variant
                        };
                        Ok(Platform {
                            os: host.os,
                            arch,
                            variant,
                        })
                    } else {
                        Err(format!(
                            "{spec:?}: unknown operating system or architecture: invalid argument"
                        ))
                    }
                }
            }
            [os, arch] => {
                let (arch, mut variant) = normalize_arch(arch, "");
                if arch == "arm" && variant == "v7" {
                    variant = String::new();
                }
                Ok(Platform {
                    os: os.to_ascii_lowercase(),
                    arch,
                    variant,
                })
            }
            [os, arch, variant] => {
                let (arch, mut variant) = normalize_arch(arch, variant);
                if arch == "arm64" && variant.is_empty() {
                    variant = "v8".into();
                }
                Ok(Platform {
                    os: os.to_ascii_lowercase(),
                    arch,
                    variant,
                })
            }
            _ => Err(format!(
                "{spec:?}: cannot parse platform specifier: invalid argument"
            )),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        Platform::parse(s).unwrap().to_string()
    }

    #[test]
    fn parse_and_normalize() {
        assert_eq!(p("linux/amd64"), "linux/amd64");
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64/v8");
        assert_eq!(p("linux/arm64"), "linux/arm64");
        assert_eq!(p("linux/arm"), "linux/arm");
        assert_eq!(p("linux/arm/v6"), "linux/arm/v6");
        assert_eq!(p("linux/armhf"), "linux/arm");
        assert_eq!(p("Linux/AMD64"), "linux/amd64");
        assert_eq!(p("amd64"), format!("{}/amd64", Platform::host().os));
        assert_eq!(
            Platform::parse("linux").unwrap().arch,
            Platform::host().arch
        );
    }

    #[test]
    fn bad_platforms() {
        assert!(Platform::parse("").is_err());
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
        assert!(Platform::parse("toaster").is_err());
        assert!(Platform::parse("linux/amd 64").is_err());
    }

    #[test]
    fn host_is_linux() {
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert!(!h.arch.is_empty());
    }
}
