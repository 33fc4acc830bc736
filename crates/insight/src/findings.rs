//! What the final image holds that a production image should not, found in
//! the stacked filesystem. Each finding names a path, its size and the layer
//! its bytes came from; the report adds the layer's Dockerfile line.

use crate::fs::Merged;
use crate::layer::{Kind, LayerScan};
use crate::packages;
use crate::secrets;
use std::collections::BTreeMap;

/// The kinds of findings, named as `--fail-on` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    Secrets,
    DevDeps,
    Sources,
    Toolchains,
    Caches,
    Root,
    Setuid,
    WorldWritable,
}

impl FindingKind {
    pub const ALL: [FindingKind; 8] = [
        FindingKind::Secrets,
        FindingKind::DevDeps,
        FindingKind::Sources,
        FindingKind::Toolchains,
        FindingKind::Caches,
        FindingKind::Root,
        FindingKind::Setuid,
        FindingKind::WorldWritable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FindingKind::Secrets => "secrets",
            FindingKind::DevDeps => "dev-deps",
            FindingKind::Sources => "sources",
            FindingKind::Toolchains => "toolchains",
            FindingKind::Caches => "caches",
            FindingKind::Root => "root",
            FindingKind::Setuid => "setuid",
            FindingKind::WorldWritable => "world-writable",
        }
    }

    pub fn parse(s: &str) -> Option<FindingKind> {
        FindingKind::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn severity(self) -> Severity {
        match self {
            FindingKind::Secrets => Severity::High,
            FindingKind::Setuid | FindingKind::WorldWritable => Severity::Low,
            _ => Severity::Medium,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    High,
    Medium,
    Low,
}

/// One finding (the report fills in `line`, `instruction` and `stage`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    /// Absolute path in the image ("" for a finding about the config).
    pub path: String,
    pub size: u64,
    /// Index of the image layer its bytes came from.
    pub layer: Option<usize>,
    /// What was found, in one sentence.
    pub message: String,
    /// Dockerfile line and instruction of that layer (or of USER/FROM for `root`).
    pub line: Option<usize>,
    pub instruction: Option<String>,
    pub stage: Option<String>,
}

fn finding(
    kind: FindingKind,
    path: &str,
    size: u64,
    layer: Option<usize>,
    message: String,
) -> Finding {
    Finding {
        kind,
        severity: kind.severity(),
        path: format!("/{path}"),
        size,
        layer,
        message,
        line: None,
        instruction: None,
        stage: None,
    }
}

const TOOLCHAINS: &[&str] = &[
    "tsc", "gcc", "g++", "cc", "c++", "clang", "go", "rustc", "cargo", "make", "git",
];

/// The layer holding most of the bytes at or below `dir`.
fn main_layer(m: &Merged, dir: &str) -> Option<usize> {
    let start = format!("{dir}/");
    let mut by_layer: BTreeMap<usize, u64> = BTreeMap::new();
    for (_, n) in m
        .nodes
        .range(start.clone()..)
        .take_while(|(p, _)| p.starts_with(&start))
    {
        *by_layer.entry(n.layer).or_insert(0) += n.entry.size.max(1);
    }
    by_layer
        .into_iter()
        .max_by_key(|(l, b)| (*b, *l))
        .map(|(l, _)| l)
        .or_else(|| m.nodes.get(dir).map(|n| n.layer))
}

/// A package manager's cache directory `path` is, if it is one.
fn cache_name(path: &str) -> Option<&'static str> {
    let home_rel = path.strip_prefix("root/").or_else(|| {
        path.strip_prefix("home/")
            .and_then(|r| r.split_once('/').map(|(_, x)| x))
    });
    match home_rel {
        Some(".npm/_cacache") => return Some("npm cache"),
        Some(".cache/pip") => return Some("pip cache"),
        Some(".cache/yarn") => return Some("yarn cache"),
        _ => {}
    }
    match path {
        "usr/local/share/.cache/yarn" => Some("yarn cache"),
        "var/cache/apt/archives" => Some("apt package archives"),
        "var/lib/apt/lists" => Some("apt package lists"),
        _ => None,
    }
}

/// Findings of the stacked filesystem `m`, whose layer `i` was read as `scans[i]`;
/// `manifests` are the package records visible in it. `user` is the config's USER.
pub fn find(m: &Merged, scans: &[&LayerScan], user: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    // Secrets.
    for (path, node) in &m.nodes {
        if node.entry.kind == Kind::Dir && path.rsplit('/').next() == Some(".git") {
            out.push(finding(
                FindingKind::Secrets,
                path,
                m.size_below(path),
                main_layer(m, path),
                "a .git directory (the repository's whole history, remotes and their credentials)"
                    .into(),
            ));
            continue;
        }
        if node.entry.kind != Kind::File {
            continue;
        }
        let hits = scans
            .get(node.layer)
            .and_then(|s| s.secrets.get(path))
            .cloned()
            .unwrap_or_default();
        let what = match secrets::by_name(path) {
            Some("dotenv") => Some("an .env file (environment secrets)".to_string()),
            Some("ssh-private-key") => Some("an SSH private key".to_string()),
            Some("aws-credentials") => Some("AWS credentials".to_string()),
            _ => None,
        };
        let mut messages: Vec<String> = what.into_iter().collect();
        for h in &hits {
            let m = match h.rule {
                "npmrc-auth-token" => "an .npmrc with an auth token".to_string(),
                "docker-auths" => {
                    "a docker config.json with registry credentials (auths)".to_string()
                }
                "aws-credentials" => continue,
                "private-key" if messages.iter().any(|m| m.contains("private key")) => continue,
                rule => format!("{rule} on line {}", h.line),
            };
            messages.push(m);
        }
        if !messages.is_empty() {
            out.push(finding(
                FindingKind::Secrets,
                path,
                node.entry.size,
                Some(node.layer),
                messages.join("; "),
            ));
        }
    }
    // devDependencies in node_modules.
    let mut manifests: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (path, node) in &m.nodes {
        if let Some(data) = scans.get(node.layer).and_then(|s| s.manifests.get(path)) {
            manifests.insert(path.clone(), data.clone());
        }
    }
    for d in packages::dev_dependencies_installed(&manifests) {
        out.push(finding(
            FindingKind::DevDeps,
            &d.dir,
            m.size_below(&d.dir),
            main_layer(m, &d.dir),
            format!(
                "devDependency {} of /{} is installed (no production dependency needs it)",
                d.name, d.manifest
            ),
        ));
    }
    // TypeScript sources next to their compiled output, per project.
    let mut projects: BTreeMap<String, (u64, usize, usize)> = BTreeMap::new();
    let mut has_js: BTreeMap<String, bool> = BTreeMap::new();
    for (path, node) in &m.nodes {
        if node.entry.kind != Kind::File || path.contains("node_modules/") {
            continue;
        }
        let ts = (path.ends_with(".ts") && !path.ends_with(".d.ts")) || path.ends_with(".tsx");
        let js = path.ends_with(".js") || path.ends_with(".mjs") || path.ends_with(".cjs");
        if !ts && !js {
            continue;
        }
        let project = project_of(m, path);
        if ts {
            let e = projects.entry(project).or_insert((0, 0, node.layer));
            e.0 += node.entry.size;
            e.1 += 1;
        } else {
            has_js.insert(project, true);
        }
    }
    for (project, (size, n, layer)) in projects {
        if has_js.get(&project).copied().unwrap_or(false) {
            out.push(finding(
                FindingKind::Sources,
                &project,
                size,
                Some(layer),
                format!("{n} TypeScript source file(s) next to the compiled JavaScript"),
            ));
        }
    }
    // Toolchains, caches, set-uid and world-writable files.
    let mut caches: BTreeMap<String, (&str, u64)> = BTreeMap::new();
    for (path, node) in &m.nodes {
        let (parent, base) = path.rsplit_once('/').unwrap_or(("", path));
        let in_bin = parent.ends_with("bin") || parent.ends_with("/.bin");
        if in_bin
            && TOOLCHAINS.contains(&base)
            && matches!(node.entry.kind, Kind::File | Kind::Symlink | Kind::Hardlink)
        {
            out.push(finding(
                FindingKind::Toolchains,
                path,
                node.entry.size,
                Some(node.layer),
                format!("the build tool {base}"),
            ));
        }
        if node.entry.kind == Kind::File {
            let mut at = path.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                if let Some(name) = cache_name(parent) {
                    let apt_bookkeeping = name.starts_with("apt")
                        && (path.ends_with("/lock") || path.contains("/partial/"));
                    if !apt_bookkeeping {
                        caches.entry(parent.to_string()).or_insert((name, 0)).1 += node.entry.size;
                    }
                    break;
                }
                at = parent;
            }
        }
        let mode = node.entry.mode;
        if node.entry.kind == Kind::File && mode & 0o6000 != 0 {
            let which = match (mode & 0o4000 != 0, mode & 0o2000 != 0) {
                (true, true) => "set-uid and set-gid",
                (true, false) => "set-uid",
                _ => "set-gid",
            };
            out.push(finding(
                FindingKind::Setuid,
                path,
                node.entry.size,
                Some(node.layer),
                format!(
                    "{which} (mode {:o}, owner uid {})",
                    mode & 0o7777,
                    node.entry.uid
                ),
            ));
        }
        let sticky_dir = node.entry.kind == Kind::Dir && mode & 0o1000 != 0;
        if matches!(node.entry.kind, Kind::File | Kind::Dir) && mode & 0o002 != 0 && !sticky_dir {
            out.push(finding(
                FindingKind::WorldWritable,
                path,
                node.entry.size,
                Some(node.layer),
                format!("world-writable (mode {:o})", mode & 0o7777),
            ));
        }
    }
    for (path, (name, size)) in caches {
        if size > 0 {
            out.push(finding(
                FindingKind::Caches,
                &path,
                size,
                main_layer(m, &path),
                format!("the {name} (downloads kept from the build)"),
            ));
        }
    }
    if is_root(user) {
        let mut f = finding(
            FindingKind::Root,
            "",
            0,
            None,
            if user.is_empty() {
                "the image runs as root (no USER)".into()
            } else {
                format!("the image runs as root (USER {user})")
            },
        );
        f.path = String::new();
        out.push(f);
    }
    out.sort_by(|a, b| (a.severity, a.kind, &a.path).cmp(&(b.severity, b.kind, &b.path)));
    out
}

/// Whether a config's USER means root.
pub fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or("");
    name.is_empty() || name == "root" || name == "0"
}

/// The project a source file belongs to: the nearest directory above it with
/// a package.json or tsconfig.json, else its own directory.
fn project_of(m: &Merged, path: &str) -> String {
    let mut at = path;
    while let Some((parent, _)) = at.rsplit_once('/') {
        if m.nodes.contains_key(&format!("{parent}/package.json"))
            || m.nodes.contains_key(&format!("{parent}/tsconfig.json"))
        {
            return parent.to_string();
        }
        at = parent;
    }
    path.rsplit_once('/')
        .map(|(p, _)| p.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::scan_layer;

    fn tar(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data, mode) in entries {
            let mut h = tar::Header::new_ustar();
            if path.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
            } else {
                h.set_size(data.len() as u64);
            }
            h.set_mode(*mode);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn kinds(layers: &[Vec<u8>], user: &str) -> Vec<(FindingKind, String, Option<usize>)> {
        let scans: Vec<LayerScan> = layers.iter().map(|l| scan_layer(&l[..]).unwrap()).collect();
        let mut m = Merged::new();
        for (i, s) in scans.iter().enumerate() {
            m.apply(i, s);
        }
        let refs: Vec<&LayerScan> = scans.iter().collect();
        find(&m, &refs, user)
            .into_iter()
            .map(|f| (f.kind, f.path, f.layer))
            .collect()
    }

    #[test]
    fn planted_secrets_dev_dependency_sources_and_more_are_found_with_their_layer() {
        let base = tar(&[
            ("bin/", b"", 0o755),
            ("bin/su", b"su", 0o4755),
            ("tmp/", b"", 0o1777),
            ("usr/bin/git", b"git", 0o755),
        ]);
        let app = tar(&[
            ("app/", b"", 0o755),
            ("app/.env", b"DB_PASSWORD=x\n", 0o644),
            (
                "app/.npmrc",
                b"//registry.npmjs.org/:_authToken=npm_0123456789abcdefghijABCDEFGHIJ012345\n",
                0o644,
            ),
            (
                "app/package.json",
                br#"{"name":"a","dependencies":{},"devDependencies":{"typescript":"5"}}"#,
                0o644,
            ),
            (
                "app/node_modules/typescript/package.json",
                br#"{"name":"typescript","version":"5.0.0"}"#,
                0o644,
            ),
            ("app/node_modules/.bin/tsc", b"#!", 0o755),
            ("app/src/index.ts", b"export {}", 0o644),
            ("app/dist/index.js", b"", 0o644),
            ("app/drop", b"", 0o666),
            (
                "root/.ssh/id_ed25519",
                b"-----BEGIN OPENSSH PRIVATE KEY-----\n",
                0o600,
            ),
            ("root/.npm/_cacache/index", b"cache", 0o644),
            ("home/u/.git/", b"", 0o755),
            ("home/u/.git/config", b"[core]", 0o644),
        ]);
        let got = kinds(&[base, app], "");
        let has = |k: FindingKind, p: &str, layer: usize| {
            assert!(
                got.contains(&(k, p.to_string(), Some(layer))),
                "{k:?} {p} in layer {layer} not in {got:#?}"
            )
        };
        has(FindingKind::Secrets, "/app/.env", 1);
        has(FindingKind::Secrets, "/app/.npmrc", 1);
        has(FindingKind::Secrets, "/root/.ssh/id_ed25519", 1);
        has(FindingKind::Secrets, "/home/u/.git", 1);
        has(FindingKind::DevDeps, "/app/node_modules/typescript", 1);
        has(FindingKind::Sources, "/app", 1);
        has(FindingKind::Toolchains, "/usr/bin/git", 0);
        has(FindingKind::Toolchains, "/app/node_modules/.bin/tsc", 1);
        has(FindingKind::Caches, "/root/.npm/_cacache", 1);
        has(FindingKind::Setuid, "/bin/su", 0);
        has(FindingKind::WorldWritable, "/app/drop", 1);
        assert!(got.iter().any(|f| f.0 == FindingKind::Root));
        // /tmp is world-writable but sticky: not a finding.
        assert!(!got.iter().any(|f| f.1 == "/tmp"));
    }

    #[test]
    fn a_clean_image_has_no_findings() {
        let base = tar(&[
            ("bin/", b"", 0o755),
            ("bin/sh", b"sh", 0o755),
            ("tmp/", b"", 0o1777),
        ]);
        let app = tar(&[
            ("app/", b"", 0o755),
            ("app/.env.example", b"DB_PASSWORD=\n", 0o644),
            ("app/.npmrc", b"registry=http://127.0.0.1:4873/\n", 0o644),
            (
                "app/package.json",
                br#"{"name":"a","dependencies":{"x":"1"},"devDependencies":{"typescript":"5"}}"#,
                0o644,
            ),
            (
                "app/node_modules/x/package.json",
                br#"{"name":"x","version":"1.0.0"}"#,
                0o644,
            ),
            ("app/dist/index.js", b"", 0o644),
            ("app/dist/index.d.ts", b"", 0o644),
        ]);
        assert_eq!(kinds(&[base, app], "1001"), vec![]);
    }

    #[test]
    fn a_secret_deleted_by_a_later_layer_is_not_in_the_final_image() {
        let a = tar(&[("app/", b"", 0o755), ("app/.env", b"X=1", 0o644)]);
        let b = tar(&[("app/.wh..env", b"", 0o644)]);
        assert_eq!(kinds(&[a, b], "app"), vec![]);
    }
}
