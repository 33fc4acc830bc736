//! Packages installed in a filesystem, from their package managers' own
//! records: npm (`node_modules/**/package.json`), dpkg (`var/lib/dpkg/status`)
//! and Python (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`). The analysis
//! uses it for devDependencies left in `node_modules`, and `kiln build --sbom`
//! for the image's SBOM; it is the one place that reads package metadata. Go
//! programs carry their modules in their build info ([`go_buildinfo`]), kept
//! by the binary's path like a record.

use std::collections::{BTreeMap, BTreeSet};

/// Which package manager a package belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    Npm,
    Deb,
    Python,
    Go,
}

/// One installed package.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// The record it was read from (`app/node_modules/x/package.json`).
    pub path: String,
}

/// Whether the file at `path` is a package record this module reads.
pub fn wants_manifest(path: &str) -> bool {
    path.ends_with("/package.json")
        || path == "package.json"
        || path.ends_with("/package-lock.json")
        || path == "package-lock.json"
        || path == "var/lib/dpkg/status"
        || path.ends_with(".dist-info/METADATA")
        || path.ends_with(".egg-info/PKG-INFO")
}

/// What kiln reads from a `package.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NpmManifest {
    pub name: String,
    pub version: String,
    pub dependencies: BTreeSet<String>,
    pub dev_dependencies: BTreeSet<String>,
}

pub fn parse_package_json(data: &[u8]) -> Option<NpmManifest> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let names = |key: &str| -> BTreeSet<String> {
        v.get(key)
            .and_then(|d| d.as_object())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut dependencies = names("dependencies");
    dependencies.extend(names("optionalDependencies"));
    dependencies.extend(names("peerDependencies"));
    Some(NpmManifest {
        name: v.get("name")?.as_str().unwrap_or_default().to_string(),
        version: v
            .get("version")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_string(),
        dependencies,
        dev_dependencies: names("devDependencies"),
    })
}

/// The `node_modules/` directory and package name a `package.json` path is
/// for, if it is a package's own manifest (`a/node_modules/@s/x/package.json`
/// → (`a/node_modules/`, `@s/x`)).
fn npm_package_of(path: &str) -> Option<(&str, &str)> {
    let dir = path.strip_suffix("/package.json")?;
    let at = dir.rfind("node_modules/")? + "node_modules/".len();
    if at > "node_modules/".len() && dir.as_bytes()[at - "node_modules/".len() - 1] != b'/' {
        return None;
    }
    let rest = &dir[at..];
    let ok = match rest.split_once('/') {
        Some((scope, name)) => scope.starts_with('@') && !name.contains('/'),
        None => !rest.is_empty(),
    };
    ok.then_some((&dir[..at], rest))
}

/// What a Go program's build info starts with.
const GO_BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// The build info of a Go program (Go 1.18 and later: the version and the
/// module list inline after the header), read from its bytes `r`: the
/// header's magic and what follows it, or `None` for anything else. Reads `r`
/// to its end (it is a tar entry); keeps at most 64 KiB of it.
pub fn go_buildinfo(r: &mut impl std::io::Read) -> std::io::Result<Option<Vec<u8>>> {
    const KEEP: usize = 64 << 10;
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut head[got..])? {
            0 => return Ok(None),
            n => got += n,
        }
    }
    if &head != b"\x7fELF" {
        std::io::copy(r, &mut std::io::sink())?;
        return Ok(None);
    }
    // Look for the magic in chunks, keeping the chunk's tail for a magic
    // split across two reads.
    let mut window: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 20];
    let mut found: Option<Vec<u8>> = None;
    loop {
        let n = r.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        if let Some(f) = found.as_mut() {
            if f.len() < KEEP {
                let take = n.min(KEEP - f.len());
                f.extend_from_slice(&chunk[..take]);
            }
            continue;
        }
        window.extend_from_slice(&chunk[..n]);
        if let Some(at) = window
            .windows(GO_BUILDINFO_MAGIC.len())
            .position(|w| w == GO_BUILDINFO_MAGIC)
        {
            let end = window.len().min(at + KEEP);
            found = Some(window[at..end].to_vec());
            continue;
        }
        let keep = window.len().saturating_sub(GO_BUILDINFO_MAGIC.len());
        window.drain(..keep);
    }
    Ok(found.filter(|f| f.len() > 32))
}

/// The modules a Go build info (from [`go_buildinfo`]) names: the main
/// module and each dependency, as (path, version).
pub fn go_modules(info: &[u8]) -> Vec<(String, String)> {
    // Header: magic (14), pointer size, flags; then, with flag 2 (inline
    // strings), at 32: the Go version and the module info, each a uvarint
    // length and the bytes.
    if info.len() < 32 || info[15] & 2 == 0 {
        return Vec::new();
    }
    fn uvarint(b: &[u8]) -> Option<(usize, usize)> {
        let mut v: u64 = 0;
        for (i, &c) in b.iter().enumerate().take(10) {
            v |= u64::from(c & 0x7f) << (7 * i);
            if c & 0x80 == 0 {
                return Some((v as usize, i + 1));
            }
        }
        None
    }
    let mut at = 32;
    let mut strings = Vec::new();
    for _ in 0..2 {
        let Some((len, n)) = uvarint(&info[at..]) else {
            return Vec::new();
        };
        at += n;
        let Some(s) = info.get(at..at + len) else {
            return Vec::new();
        };
        strings.push(String::from_utf8_lossy(s).into_owned());
        at += len;
    }
    let mut out = Vec::new();
    for line in strings[1].lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["mod", path, version, ..] | ["dep", path, version, ..] => {
                out.push((path.to_string(), version.to_string()))
            }
            _ => {}
        }
    }
    out
}

/// Every package the records in `files` (path → contents) name.
pub fn list(files: &BTreeMap<String, Vec<u8>>) -> Vec<Package> {
    let mut out = Vec::new();
    for (path, data) in files {
        if data.starts_with(GO_BUILDINFO_MAGIC) {
            out.extend(go_modules(data).into_iter().map(|(name, version)| Package {
                ecosystem: Ecosystem::Go,
                name,
                version,
                path: path.clone(),
            }));
        } else if path == "package-lock.json" || path.ends_with("/package-lock.json") {
            out.extend(npm_lockfile(path, data, files));
        } else if npm_package_of(path).is_some() {
            if let Some(m) = parse_package_json(data) {
                out.push(Package {
                    ecosystem: Ecosystem::Npm,
                    name: m.name,
                    version: m.version,
                    path: path.clone(),
                });
            }
        } else if path == "var/lib/dpkg/status" {
            out.extend(
                dpkg_status(data)
                    .into_iter()
                    .map(|(name, version)| Package {
                        ecosystem: Ecosystem::Deb,
                        name,
                        version,
                        path: path.clone(),
                    }),
            );
        } else if path.ends_with("/METADATA") || path.ends_with("/PKG-INFO") {
            let text = String::from_utf8_lossy(data);
            let field = |k: &str| {
                text.lines()
                    .take_while(|l| !l.is_empty())
                    .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            };
            if let Some(name) = field("Name:") {
                out.push(Package {
                    ecosystem: Ecosystem::Python,
                    name,
                    version: field("Version:").unwrap_or_default(),
                    path: path.clone(),
                });
            }
        }
    }
    out.sort();
    out
}

/// The packages an npm lockfile (`lockfileVersion` 2 or 3, outside
/// `node_modules`) at `path` locks that are not installed beside it (those
/// are listed from their own `package.json`) and are not devDependencies.
fn npm_lockfile(path: &str, data: &[u8], files: &BTreeMap<String, Vec<u8>>) -> Vec<Package> {
    if path.contains("node_modules/") {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return Vec::new();
    };
    let root = path.strip_suffix("package-lock.json").unwrap_or("");
    let mut out = Vec::new();
    for (key, p) in v
        .get("packages")
        .and_then(|p| p.as_object())
        .into_iter()
        .flatten()
    {
        let Some(at) = key.rfind("node_modules/") else {
            continue;
        };
        let name = p
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or(&key[at + "node_modules/".len()..]);
        let version = p
            .get("version")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let dev = p.get("dev").and_then(|d| d.as_bool()).unwrap_or(false);
        let installed = files.contains_key(&format!("{root}{key}/package.json"));
        if dev || installed || version.is_empty() {
            continue;
        }
        out.push(Package {
            ecosystem: Ecosystem::Npm,
            name: name.to_string(),
            version: version.to_string(),
            path: path.to_string(),
        });
    }
    out
}

/// Installed packages of dpkg's status file: (name, version), installed ones only.
pub fn dpkg_status(data: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut name = None;
        let mut version = String::new();
        let mut installed = false;
        for l in para.lines() {
            if let Some(v) = l.strip_prefix("Package:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = l.strip_prefix("Version:") {
                version = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("Status:") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if let (Some(n), true) = (name, installed) {
            out.push((n, version));
        }
    }
    out
}

/// A devDependency of an application found installed in its `node_modules`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevDependency {
    /// The application's `package.json`.
    pub manifest: String,
    pub name: String,
    /// The package's directory (`app/node_modules/typescript`).
    pub dir: String,
}

/// The devDependencies of each application (a `package.json` outside
/// `node_modules`) that are installed in its `node_modules` although no
/// production dependency needs them (directly or through other packages).
pub fn dev_dependencies_installed(files: &BTreeMap<String, Vec<u8>>) -> Vec<DevDependency> {
    let mut out = Vec::new();
    for (path, data) in files {
        if path.contains("node_modules/")
            || !(path == "package.json" || path.ends_with("/package.json"))
        {
            continue;
        }
        let Some(app) = parse_package_json(data) else {
            continue;
        };
        let root = path.strip_suffix("package.json").unwrap_or("");
        let modules = format!("{root}node_modules/");
        // The packages installed under this application, by name.
        let mut installed: BTreeMap<&str, Vec<NpmManifest>> = BTreeMap::new();
        let mut top: BTreeMap<&str, &str> = BTreeMap::new();
        for (p, d) in files.range(modules.clone()..) {
            if !p.starts_with(&modules) {
                break;
            }
            let Some((owner, name)) = npm_package_of(p) else {
                continue;
            };
            if let Some(m) = parse_package_json(d) {
                if owner == modules {
                    top.insert(name, p.as_str());
                }
                installed.entry(name).or_default().push(m);
            }
        }
        // What production needs: the dependencies, and theirs, transitively.
        let mut needed: BTreeSet<String> = BTreeSet::new();
        let mut queue: Vec<String> = app.dependencies.iter().cloned().collect();
        while let Some(n) = queue.pop() {
            if !needed.insert(n.clone()) {
                continue;
            }
            for m in installed.get(n.as_str()).into_iter().flatten() {
                queue.extend(m.dependencies.iter().cloned());
            }
        }
        for dev in &app.dev_dependencies {
            if needed.contains(dev) {
                continue;
            }
            if let Some(p) = top.get(dev.as_str()) {
                out.push(DevDependency {
                    manifest: path.clone(),
                    name: dev.clone(),
                    dir: p.strip_suffix("/package.json").unwrap_or(p).to_string(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        list.iter()
            .map(|(p, d)| (p.to_string(), d.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn dev_dependencies_left_installed_unless_production_needs_them() {
        let f = files(&[
            (
                "app/package.json",
                r#"{"name":"app","dependencies":{"express":"4"},"devDependencies":{"typescript":"5","debug":"4","jest":"1"}}"#,
            ),
            (
                "app/node_modules/express/package.json",
                r#"{"name":"express","version":"4.1.0","dependencies":{"debug":"2"}}"#,
            ),
            (
                "app/node_modules/debug/package.json",
                r#"{"name":"debug","version":"2.6.9"}"#,
            ),
            (
                "app/node_modules/typescript/package.json",
                r#"{"name":"typescript","version":"5.4.0"}"#,
            ),
        ]);
        let d = dev_dependencies_installed(&f);
        // debug is a devDependency, but express needs it; jest is not installed.
        assert_eq!(
            d,
            vec![DevDependency {
                manifest: "app/package.json".into(),
                name: "typescript".into(),
                dir: "app/node_modules/typescript".into(),
            }]
        );
    }

    /// The build info a Go 1.18+ linker writes: the 32-byte header (magic,
    /// pointer size, flags with "inline strings"), then the Go version and
    /// the module info, each after its uvarint length.
    fn go_binary(modinfo: &str) -> Vec<u8> {
        let mut b = b"\x7fELF".to_vec();
        b.resize(4096, 0);
        b.extend_from_slice(GO_BUILDINFO_MAGIC);
        b.extend_from_slice(&[8, 2]);
        b.resize(4096 + 32, 0);
        for s in ["go1.22.1", modinfo] {
            let mut n = s.len();
            while n >= 0x80 {
                b.push((n as u8 & 0x7f) | 0x80);
                n >>= 7;
            }
            b.push(n as u8);
            b.extend_from_slice(s.as_bytes());
        }
        b.resize(b.len() + 100_000, 0);
        b
    }

    #[test]
    fn go_binaries_modules_from_their_build_info() {
        let modinfo = format!(
            "0w\u{af}\u{c}\u{92}t\u{8}\u{2}A\u{e1}\u{c1}\u{7}\u{e6}\u{d6}\u{18}\u{e6}path\texample.com/svc\nmod\texample.com/svc\t(devel)\t\ndep\tgithub.com/google/uuid\tv1.6.0\th1:x=\nbuild\tGOOS=linux\n{}",
            "x".repeat(200)
        );
        let bin = go_binary(&modinfo);
        let info = go_buildinfo(&mut &bin[..])
            .unwrap()
            .expect("build info found");
        assert_eq!(
            go_modules(&info),
            [
                ("example.com/svc".to_string(), "(devel)".to_string()),
                ("github.com/google/uuid".to_string(), "v1.6.0".to_string()),
            ]
        );
        // Read in small pieces, the magic split across two reads.
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(7).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let again = go_buildinfo(&mut Trickle(&bin)).unwrap().unwrap();
        assert_eq!(go_modules(&again), go_modules(&info));
        let files: BTreeMap<String, Vec<u8>> = [("usr/local/bin/svc".to_string(), info)].into();
        let listed = list(&files);
        assert_eq!(listed[1].ecosystem, Ecosystem::Go);
        assert_eq!(listed[1].name, "github.com/google/uuid");
        assert_eq!(listed[1].path, "usr/local/bin/svc");
        // Not an ELF file, or an ELF file without build info: none.
        assert!(go_buildinfo(&mut &b"#!/bin/sh\necho"[..])
            .unwrap()
            .is_none());
        assert!(go_buildinfo(&mut &b"\x7fELF\x02\x01"[..])
            .unwrap()
            .is_none());
    }

    #[test]
    fn lists_npm_deb_and_python_packages() {
        let f = files(&[
            ("app/node_modules/@s/x/package.json", r#"{"name":"@s/x","version":"1.0.0"}"#),
            ("app/node_modules/@s/x/lib/package.json", r#"{"type":"module"}"#),
            (
                "var/lib/dpkg/status",
                "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
            ),
            ("usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n\nbody Name: no\n"),
        ]);
        let mut f = f;
        // A lockfile: its packages not installed beside it, devDependencies left out.
        f.insert(
            "app/package-lock.json".into(),
            br#"{"lockfileVersion":3,"packages":{"":{"name":"app"},"node_modules/@s/x":{"version":"1.0.0"},"node_modules/express":{"version":"4.19.2"},"node_modules/typescript":{"version":"5.4.0","dev":true}}}"#.to_vec(),
        );
        let listed = list(&f);
        let names: Vec<(Ecosystem, &str, &str)> = listed
            .iter()
            .map(|p| (p.ecosystem, p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                (Ecosystem::Npm, "@s/x", "1.0.0"),
                (Ecosystem::Npm, "express", "4.19.2"),
                (Ecosystem::Deb, "libc6", "2.36-9"),
                (Ecosystem::Python, "six", "1.16.0"),
            ]
        );
    }
}
