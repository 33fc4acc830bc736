//! Packages installed in a filesystem, from their package managers' own
//! records: npm (`node_modules/**/package.json`), dpkg (`var/lib/dpkg/status`)
//! and Python (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`). The analysis
//! uses it for devDependencies left in `node_modules`; it is the one place
//! that reads package metadata, for any later listing of an image's packages.
//! (Go binaries' build info is not read yet.)

use std::collections::{BTreeMap, BTreeSet};

/// Which package manager a package belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    Npm,
    Deb,
    Python,
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

/// Every package the records in `files` (path → contents) name.
pub fn list(files: &BTreeMap<String, Vec<u8>>) -> Vec<Package> {
    let mut out = Vec::new();
    for (path, data) in files {
        if npm_package_of(path).is_some() {
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
        let listed = list(&f);
        let names: Vec<(Ecosystem, &str, &str)> = listed
            .iter()
            .map(|p| (p.ecosystem, p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                (Ecosystem::Npm, "@s/x", "1.0.0"),
                (Ecosystem::Deb, "libc6", "2.36-9"),
                (Ecosystem::Python, "six", "1.16.0"),
            ]
        );
    }
}
