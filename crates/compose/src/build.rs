//! A service's `build:` section (`build.md`), every key of the specification,
//! read from its normalised node with each mistake located. What a builder
//! can do with it is the builder's business: keys are kept with where they
//! were written, so the builder can point at one it cannot honour.

use crate::error::{ComposeError, Loc};
use crate::yaml::{Node, Value};
use std::path::{Path, PathBuf};

/// The keys `build:` may have.
pub const BUILD_KEYS: &[&str] = &[
    "context",
    "dockerfile",
    "dockerfile_inline",
    "args",
    "ssh",
    "cache_from",
    "cache_to",
    "additional_contexts",
    "entitlements",
    "extra_hosts",
    "isolation",
    "privileged",
    "labels",
    "no_cache",
    "pull",
    "network",
    "shm_size",
    "target",
    "secrets",
    "tags",
    "ulimits",
    "platforms",
    "provenance",
    "sbom",
];

#[derive(Clone, Debug, PartialEq)]
pub enum BuildContext {
    Dir(PathBuf),
    /// A Git repository or HTTP(S) URL.
    Remote(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Dockerfile {
    /// Relative to the context directory (or absolute).
    File(PathBuf),
    Inline(String),
}

/// An `additional_contexts` value.
#[derive(Clone, Debug, PartialEq)]
pub enum AdditionalContext {
    Dir(PathBuf),
    /// `docker-image://REF`
    Image(String),
    /// `oci-layout://DIR[:TAG|@DIGEST]`
    OciLayout(String),
    /// `service:NAME`: the image another service builds.
    Service(String),
    /// A Git or HTTP(S) URL, or another `type://` a builder may know.
    Other(String),
}

/// A build secret: `source` (a top-level secret) exposed under `target` (the
/// id `RUN --mount=type=secret,id=…` uses).
#[derive(Clone, Debug, PartialEq)]
pub struct BuildSecret {
    pub source: String,
    pub target: String,
    pub at: Option<Loc>,
}

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub at: Option<Loc>,
}

#[derive(Clone, Debug)]
pub struct Build {
    /// `services.NAME.build`, for messages.
    pub path: String,
    pub context: BuildContext,
    pub dockerfile: Dockerfile,
    /// In order; values already taken from the environment where the file
    /// gave only a name.
    pub args: Vec<(String, String)>,
    pub target: Option<String>,
    pub tags: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub secrets: Vec<BuildSecret>,
    pub additional_contexts: Vec<(String, Located<AdditionalContext>)>,
    pub cache_from: Vec<String>,
    pub cache_to: Vec<String>,
    pub network: Option<String>,
    pub no_cache: bool,
    pub pull: bool,
    /// `(host, address)` pairs.
    pub extra_hosts: Vec<(String, String)>,
    /// Bytes.
    pub shm_size: Option<u64>,
    pub platforms: Vec<Located<String>>,
    pub ssh: Vec<Located<String>>,
    pub entitlements: Vec<String>,
    pub privileged: bool,
    pub isolation: Option<String>,
    pub provenance: Option<String>,
    pub sbom: Option<String>,
    /// Whether `ulimits` is set (kept as written in the model).
    pub ulimits: bool,
    at: Option<Loc>,
    keys: Vec<(String, Option<Loc>)>,
}

impl Build {
    /// Where `key` of this section was written (the section itself when unset).
    pub fn location(&self, key: &str) -> Option<&Loc> {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, l)| l.as_ref())
            .or(self.at.as_ref())
    }

    /// A located error about `key` of this section.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ComposeError {
        ComposeError::at(self.location(key), &format!("{}.{key}", self.path), message)
    }

    /// Whether `key` was written (or defaulted) in this section.
    pub fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == key)
    }

    /// The Dockerfile's path on disk, when it is a file in a local context.
    pub fn dockerfile_path(&self) -> Option<PathBuf> {
        match (&self.context, &self.dockerfile) {
            (BuildContext::Dir(dir), Dockerfile::File(f)) => Some(dir.join(f)),
            _ => None,
        }
    }

    /// Reads a normalised `build:` node (see `Project`): `context` absolute,
    /// `args`/`labels`/`additional_contexts` mappings. `project_dir` resolves
    /// what normalising left relative.
    pub fn from_node(node: &Node, path: &str, project_dir: &Path) -> Result<Build, ComposeError> {
        let entries = node.as_map().ok_or_else(|| {
            ComposeError::at(
                node.at.as_ref(),
                path,
                format!("must be a mapping, not {}", node.kind()),
            )
        })?;
        let mut keys = Vec::new();
        for (k, _) in entries {
            if !BUILD_KEYS.contains(&k.name.as_str()) && !k.name.starts_with("x-") {
                return Err(ComposeError::at(
                    k.at.as_ref(),
                    path,
                    format!("unknown key {:?}", k.name),
                ));
            }
            keys.push((k.name.clone(), k.at.clone()));
        }
        let r = Reader { node, path };
        let context = match r.string("context")? {
            Some(c) if crate::project::is_remote(&c) => BuildContext::Remote(c),
            Some(c) => BuildContext::Dir(project_dir.join(c)),
            None => BuildContext::Dir(project_dir.to_path_buf()),
        };
        let dockerfile = match (r.string("dockerfile")?, r.string("dockerfile_inline")?) {
            (Some(_), Some(_)) => {
                return Err(r.error(
                    "dockerfile_inline",
                    "dockerfile and dockerfile_inline cannot both be set",
                ))
            }
            (_, Some(inline)) => Dockerfile::Inline(inline),
            (Some(f), None) => Dockerfile::File(PathBuf::from(f)),
            (None, None) => Dockerfile::File(PathBuf::from("Dockerfile")),
        };
        let args = r.string_map("args")?;
        let labels = r.string_map("labels")?;
        let mut additional_contexts = Vec::new();
        if let Some(m) = node.get("additional_contexts") {
            for (k, v) in m.as_map().unwrap_or_default() {
                let p = format!("{path}.additional_contexts.{}", k.name);
                let t = v.scalar_text().ok_or_else(|| {
                    ComposeError::at(v.at.as_ref().or(k.at.as_ref()), &p, "must be a string")
                })?;
                let value = if let Some(s) = t.strip_prefix("service:") {
                    AdditionalContext::Service(s.to_string())
                } else if let Some(r) = t.strip_prefix("docker-image://") {
                    AdditionalContext::Image(r.to_string())
                } else if let Some(r) = t.strip_prefix("oci-layout://") {
                    AdditionalContext::OciLayout(r.to_string())
                } else if t.contains("://") || crate::project::is_remote(&t) {
                    AdditionalContext::Other(t)
                } else {
                    AdditionalContext::Dir(project_dir.join(t))
                };
                additional_contexts.push((
                    k.name.clone(),
                    Located {
                        value,
                        at: v.at.clone().or(k.at.clone()),
                    },
                ));
            }
        }
        let mut secrets = Vec::new();
        if let Some(s) = node.get("secrets") {
            let items = s
                .as_seq()
                .ok_or_else(|| r.error("secrets", format!("must be a list, not {}", s.kind())))?;
            for i in items {
                let p = format!("{path}.secrets");
                let secret = match &i.value {
                    Value::Str(name) => BuildSecret {
                        source: name.clone(),
                        target: name.clone(),
                        at: i.at.clone(),
                    },
                    Value::Map(_) => {
                        let field = |k: &str| i.get(k).and_then(Node::scalar_text);
                        let source = field("source").ok_or_else(|| {
                            ComposeError::at(i.at.as_ref(), &p, "a secret needs source:")
                        })?;
                        BuildSecret {
                            target: field("target").unwrap_or_else(|| source.clone()),
                            source,
                            at: i.at.clone(),
                        }
                    }
                    _ => {
                        return Err(ComposeError::at(
                            i.at.as_ref(),
                            &p,
                            format!("a secret is a name or a mapping, not {}", i.kind()),
                        ))
                    }
                };
                secrets.push(secret);
            }
        }
        let mut extra_hosts = Vec::new();
        if let Some(h) = node.get("extra_hosts") {
            extra_hosts = extra_hosts_of(h, &format!("{path}.extra_hosts"))?;
        }
        let shm_size = match node.get("shm_size") {
            None => None,
            Some(n) if n.is_null() => None,
            Some(n) => Some(byte_value(n).ok_or_else(|| {
                r.error(
                    "shm_size",
                    format!(
                        "invalid size {:?} (bytes, or a number with b, k, m or g)",
                        n.scalar_text().unwrap_or_default()
                    ),
                )
            })?),
        };
        Ok(Build {
            path: path.to_string(),
            context,
            dockerfile,
            args,
            target: r.string("target")?,
            tags: r.strings("tags")?.into_iter().map(|l| l.value).collect(),
            labels,
            secrets,
            additional_contexts,
            cache_from: r
                .strings("cache_from")?
                .into_iter()
                .map(|l| l.value)
                .collect(),
            cache_to: r
                .strings("cache_to")?
                .into_iter()
                .map(|l| l.value)
                .collect(),
            network: r.string("network")?,
            no_cache: r.bool("no_cache")?,
            pull: r.bool("pull")?,
            extra_hosts,
            shm_size,
            platforms: r.strings("platforms")?,
            ssh: match node.get("ssh") {
                Some(n) if n.as_map().is_some() => n
                    .as_map()
                    .unwrap_or_default()
                    .iter()
                    .map(|(k, v)| Located {
                        value: match v.scalar_text() {
                            Some(p) => format!("{}={p}", k.name),
                            None => k.name.clone(),
                        },
                        at: k.at.clone(),
                    })
                    .collect(),
                Some(n) if matches!(n.value, Value::Str(_)) => vec![Located {
                    value: n.scalar_text().unwrap_or_default(),
                    at: n.at.clone(),
                }],
                _ => r.strings("ssh")?,
            },
            entitlements: r
                .strings("entitlements")?
                .into_iter()
                .map(|l| l.value)
                .collect(),
            privileged: r.bool("privileged")?,
            isolation: r.string("isolation")?,
            provenance: r.scalar("provenance")?,
            sbom: r.scalar("sbom")?,
            ulimits: node.get("ulimits").is_some(),
            at: node.at.clone(),
            keys,
        })
    }
}

struct Reader<'a> {
    node: &'a Node,
    path: &'a str,
}

impl Reader<'_> {
    fn error(&self, key: &str, message: impl Into<String>) -> ComposeError {
        let at = self
            .node
            .get(key)
            .and_then(|n| n.at.as_ref())
            .or_else(|| self.node.key(key).and_then(|k| k.at.as_ref()))
            .or(self.node.at.as_ref());
        ComposeError::at(at, &format!("{}.{key}", self.path), message)
    }

    fn string(&self, key: &str) -> Result<Option<String>, ComposeError> {
        match self.node.get(key) {
            None => Ok(None),
            Some(n) if n.is_null() => Ok(None),
            Some(n) => match &n.value {
                Value::Str(s) => Ok(Some(s.clone())),
                Value::Number(s) => Ok(Some(s.clone())),
                _ => Err(self.error(key, format!("must be a string, not {}", n.kind()))),
            },
        }
    }

    /// A string or a boolean, as text.
    fn scalar(&self, key: &str) -> Result<Option<String>, ComposeError> {
        match self.node.get(key) {
            None => Ok(None),
            Some(n) if n.is_null() => Ok(None),
            Some(n) => n.scalar_text().map(Some).ok_or_else(|| {
                self.error(
                    key,
                    format!("must be a string or a boolean, not {}", n.kind()),
                )
            }),
        }
    }

    /// A boolean; the strings `true`/`false` (any case) too, as interpolation
    /// makes them.
    fn bool(&self, key: &str) -> Result<bool, ComposeError> {
        match self.node.get(key) {
            None => Ok(false),
            Some(n) => match &n.value {
                Value::Null => Ok(false),
                Value::Bool(b) => Ok(*b),
                Value::Str(s) => match s.to_lowercase().as_str() {
                    "true" | "y" | "yes" | "on" => Ok(true),
                    "false" | "n" | "no" | "off" | "" => Ok(false),
                    _ => Err(self.error(key, format!("invalid boolean {s:?}"))),
                },
                _ => Err(self.error(key, format!("must be a boolean, not {}", n.kind()))),
            },
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<Located<String>>, ComposeError> {
        match self.node.get(key) {
            None => Ok(Vec::new()),
            Some(n) if n.is_null() => Ok(Vec::new()),
            Some(n) => {
                let items = n
                    .as_seq()
                    .ok_or_else(|| self.error(key, format!("must be a list, not {}", n.kind())))?;
                items
                    .iter()
                    .map(|i| match &i.value {
                        Value::Str(s) | Value::Number(s) => Ok(Located {
                            value: s.clone(),
                            at: i.at.clone(),
                        }),
                        _ => Err(ComposeError::at(
                            i.at.as_ref(),
                            &format!("{}.{key}", self.path),
                            format!("list entries must be strings, not {}", i.kind()),
                        )),
                    })
                    .collect()
            }
        }
    }

    /// A normalised mapping of strings (null values are left out).
    fn string_map(&self, key: &str) -> Result<Vec<(String, String)>, ComposeError> {
        let Some(n) = self.node.get(key) else {
            return Ok(Vec::new());
        };
        Ok(n.as_map()
            .unwrap_or_default()
            .iter()
            .filter_map(|(k, v)| v.scalar_text().map(|t| (k.name.clone(), t)))
            .collect())
    }
}

/// `extra_hosts` as a list of `host=ip`/`host:ip` (IPv6 maybe in brackets)
/// or a mapping of host to an address or a list of addresses.
fn extra_hosts_of(node: &Node, path: &str) -> Result<Vec<(String, String)>, ComposeError> {
    let unbracket = |a: &str| {
        a.strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(a)
            .to_string()
    };
    let mut out = Vec::new();
    match &node.value {
        Value::Seq(items) => {
            for i in items {
                let t = i.scalar_text().ok_or_else(|| {
                    ComposeError::at(
                        i.at.as_ref(),
                        path,
                        "entries must be strings (host=address)",
                    )
                })?;
                let (host, addr) = t
                    .split_once('=')
                    .or_else(|| t.split_once(':'))
                    .filter(|(h, a)| !h.is_empty() && !a.is_empty())
                    .ok_or_else(|| {
                        ComposeError::at(
                            i.at.as_ref(),
                            path,
                            format!("invalid extra host {t:?} (expected host=address)"),
                        )
                    })?;
                out.push((host.to_string(), unbracket(addr)));
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                let addrs: Vec<String> = match &v.value {
                    Value::Seq(items) => items.iter().filter_map(Node::scalar_text).collect(),
                    _ => v.scalar_text().into_iter().collect(),
                };
                if addrs.is_empty() {
                    return Err(ComposeError::at(
                        k.at.as_ref(),
                        path,
                        format!("extra host {:?} has no address", k.name),
                    ));
                }
                for a in addrs {
                    out.push((k.name.clone(), unbracket(&a)));
                }
            }
        }
        _ => {
            return Err(ComposeError::at(
                node.at.as_ref(),
                path,
                format!("must be a list or a mapping, not {}", node.kind()),
            ))
        }
    }
    for (host, addr) in &out {
        if addr.parse::<std::net::IpAddr>().is_err() {
            return Err(ComposeError::at(
                node.at.as_ref(),
                path,
                format!("{host}: {addr:?} is not an IP address"),
            ));
        }
    }
    Ok(out)
}

/// A byte value (`11-extension.md`): a number of bytes, or a number with `b`,
/// `k`/`kb`, `m`/`mb`, `g`/`gb` (powers of 1024).
fn byte_value(node: &Node) -> Option<u64> {
    let t = node.scalar_text()?.trim().to_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return None,
    };
    let bytes = n * mult as f64;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SourceFile;
    use std::sync::Arc;

    fn build(text: &str) -> Result<Build, ComposeError> {
        let f = Arc::new(SourceFile::new("compose.yaml", "/p/compose.yaml", text));
        let n = crate::yaml::parse(&f).unwrap().remove(0);
        Build::from_node(n.get("build").unwrap(), "services.a.build", Path::new("/p"))
    }

    #[test]
    fn every_key_is_read() {
        let b = build(concat!(
            "build:\n",
            "  context: /p/web\n",
            "  dockerfile: web.Dockerfile\n",
            "  args: {A: '1'}\n",
            "  target: prod\n",
            "  tags: [x:1]\n",
            "  labels: {l: v}\n",
            "  secrets: [s1, {source: s2, target: t2}]\n",
            "  additional_contexts: {a: 'service:api', b: 'docker-image://alpine', c: /p/dir, d: 'oci-layout:///o:t', e: 'https://g/x.git'}\n",
            "  cache_from: [reg/x:cache]\n",
            "  cache_to: [type=inline]\n",
            "  network: none\n",
            "  no_cache: 'true'\n",
            "  pull: true\n",
            "  extra_hosts: ['h1=10.0.0.1', 'h2:::1', 'h3=[::2]']\n",
            "  shm_size: 2gb\n",
            "  platforms: [linux/amd64]\n",
            "  ssh: [default]\n",
            "  entitlements: [network.host]\n",
            "  privileged: false\n",
            "  isolation: default\n",
            "  provenance: mode=max\n",
            "  sbom: true\n",
            "  ulimits: {nofile: 1024}\n",
        ))
        .unwrap();
        assert_eq!(b.context, BuildContext::Dir("/p/web".into()));
        assert_eq!(b.dockerfile, Dockerfile::File("web.Dockerfile".into()));
        assert_eq!(
            b.dockerfile_path().unwrap(),
            Path::new("/p/web/web.Dockerfile")
        );
        assert_eq!(b.args, [("A".to_string(), "1".to_string())]);
        assert_eq!(b.target.as_deref(), Some("prod"));
        assert_eq!(b.tags, ["x:1"]);
        assert_eq!(b.secrets[1].target, "t2");
        let ctx: Vec<&AdditionalContext> = b
            .additional_contexts
            .iter()
            .map(|(_, c)| &c.value)
            .collect();
        assert_eq!(
            ctx,
            [
                &AdditionalContext::Service("api".into()),
                &AdditionalContext::Image("alpine".into()),
                &AdditionalContext::Dir("/p/dir".into()),
                &AdditionalContext::OciLayout("/o:t".into()),
                &AdditionalContext::Other("https://g/x.git".into()),
            ]
        );
        assert!(b.no_cache && b.pull && !b.privileged);
        assert_eq!(
            b.extra_hosts,
            [
                ("h1".to_string(), "10.0.0.1".to_string()),
                ("h2".to_string(), "::1".to_string()),
                ("h3".to_string(), "::2".to_string())
            ]
        );
        assert_eq!(b.shm_size, Some(2 << 30));
        assert_eq!(b.platforms[0].value, "linux/amd64");
        assert_eq!(b.platforms[0].at.as_ref().unwrap().line, 17);
        assert_eq!(b.ssh[0].value, "default");
        assert_eq!(b.provenance.as_deref(), Some("mode=max"));
        assert_eq!(b.sbom.as_deref(), Some("true"));
        assert!(b.ulimits);
        assert_eq!(
            b.error("ssh", "not supported").to_string(),
            "compose.yaml:18: services.a.build.ssh: not supported"
        );
    }

    #[test]
    fn mistakes_are_located() {
        let e = build("build:\n  context: .\n  dockerfil: x\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "compose.yaml:3: services.a.build: unknown key \"dockerfil\""
        );
        let e = build("build:\n  no_cache: maybe\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "compose.yaml:2: services.a.build.no_cache: invalid boolean \"maybe\""
        );
        let e = build("build:\n  shm_size: 2 parsecs\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("compose.yaml:2: services.a.build.shm_size: invalid size"),
            "{e}"
        );
        let e = build("build:\n  extra_hosts: ['nohost']\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("compose.yaml:2: services.a.build.extra_hosts: invalid extra host"),
            "{e}"
        );
        let e = build("build:\n  tags: x\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "compose.yaml:2: services.a.build.tags: must be a list, not a string"
        );
    }
}
