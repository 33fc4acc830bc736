//! Loading a Compose project as `docker compose` does: which files (`-f`,
//! `COMPOSE_FILE`, else `compose.yaml` … found in the working directory or a
//! parent, with its `compose.override.yaml`), which environment (the process's,
//! then `--env-file` or the project directory's `.env` for what it does not
//! set), the project name (`-p`, `COMPOSE_PROJECT_NAME`, top-level `name:`, the
//! directory's name), interpolation per file, merging in order, profiles, and the
//! normalised model `kiln compose config` prints.

use crate::build::Build;
use crate::dotenv;
use crate::error::{ComposeError, Loc, SourceFile};
use crate::interpolate::Interpolator;
use crate::merge;
use crate::yaml::{self, Key, Node, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File names looked for when no file is given, in order of preference.
pub const DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// Override files merged after the file found, in order of preference.
pub const DEFAULT_OVERRIDE_FILES: [&str; 4] = [
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
];

/// How to find and read a project (the `kiln compose` flags and the process).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `-f`: the files, merged in order; empty: `COMPOSE_FILE`, else discovery.
    pub files: Vec<PathBuf>,
    /// `-p`.
    pub project_name: Option<String>,
    /// `--project-directory`: default, the first file's directory.
    pub project_directory: Option<PathBuf>,
    /// `--profile`: empty means `COMPOSE_PROFILES`.
    pub profiles: Vec<String>,
    /// `--env-file`: empty means `.env` of the project directory, if any.
    pub env_files: Vec<PathBuf>,
    /// The directory relative paths on the command line start from, and where
    /// discovery starts.
    pub working_dir: PathBuf,
    /// The process environment (it wins over env files).
    pub environment: BTreeMap<String, String>,
}

/// A loaded project.
#[derive(Debug)]
pub struct Project {
    pub name: String,
    /// Where relative paths in the files are resolved: the first file's directory.
    pub directory: PathBuf,
    pub files: Vec<PathBuf>,
    /// The variables interpolation used (process, env files, `COMPOSE_PROJECT_NAME`).
    pub environment: BTreeMap<String, String>,
    /// The active profiles.
    pub profiles: Vec<String>,
    /// Services the active profiles enable, in file order.
    pub services: Vec<Service>,
    /// Services no active profile enables.
    pub disabled: Vec<Service>,
    /// The whole resolved model (disabled services left out).
    pub model: Node,
    /// Things worth telling the user (unset variables, obsolete `version`).
    pub warnings: Vec<String>,
}

/// One service, as far as kiln uses it.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    /// `image:`, if set.
    pub image: Option<String>,
    pub build: Option<Build>,
    pub profiles: Vec<String>,
    /// `platform:` and where it was written.
    pub platform: Option<(String, Option<Loc>)>,
    /// The service's resolved model.
    pub node: Node,
}

impl Service {
    /// The name the service's image gets: `image:`, else `<project>-<service>`.
    pub fn image_name(&self, project: &str) -> String {
        self.image
            .clone()
            .unwrap_or_else(|| format!("{project}-{}", self.name))
    }
}

impl Project {
    /// Loads the project `options` describe.
    pub fn load(options: &Options) -> Result<Project, ComposeError> {
        Loader::new(options)?.load()
    }

    /// The service named `name`, enabled or not.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .chain(&self.disabled)
            .find(|s| s.name == name)
    }

    /// Makes the named services part of the project even if their profiles
    /// are not active (a service named on the command line is enabled, as in
    /// docker compose); an unknown name is an error.
    pub fn enable(&mut self, names: &[String]) -> Result<(), ComposeError> {
        for n in names {
            if self.services.iter().any(|s| &s.name == n) {
                continue;
            }
            match self.disabled.iter().position(|s| &s.name == n) {
                Some(i) => {
                    let s = self.disabled.remove(i);
                    if let Some(services) = self.model.get_mut("services") {
                        services.set(&s.name, s.node.clone());
                    }
                    self.services.push(s);
                }
                None => return Err(ComposeError::new(format!("no such service: {n}"))),
            }
        }
        Ok(())
    }

    /// The resolved model as YAML (`kiln compose config`).
    pub fn to_yaml(&self) -> Result<String, ComposeError> {
        yaml::to_string(&self.model)
    }
}

/// `name` as a project name: lower case, only `[a-z0-9_-]`, not starting with
/// `_` or `-` (compose-go's `NormalizeProjectName`).
pub fn normalize_project_name(name: &str) -> String {
    let kept: String = name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    kept.trim_start_matches(['_', '-']).to_string()
}

fn check_project_name(name: &str, from: &str) -> Result<(), ComposeError> {
    if name.is_empty() || normalize_project_name(name) != name {
        return Err(ComposeError::new(format!(
            "invalid project name {name:?} ({from}): must consist only of lowercase alphanumeric characters, hyphens, and underscores as well as start with a letter or number"
        )));
    }
    Ok(())
}

fn read_file(path: &Path, name: String) -> Result<Arc<SourceFile>, ComposeError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ComposeError::new(format!(
            "cannot read {name}: {}",
            e.to_string().to_lowercase()
        ))
    })?;
    Ok(Arc::new(SourceFile::new(name, path, text)))
}

/// The name a file is reported under: relative to the working directory
/// when it is below it, else as absolute.
fn display_name(path: &Path, working_dir: &Path) -> String {
    path.strip_prefix(working_dir)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}

struct Loader<'a> {
    options: &'a Options,
    files: Vec<PathBuf>,
    directory: PathBuf,
    env: BTreeMap<String, String>,
}

impl<'a> Loader<'a> {
    fn new(options: &'a Options) -> Result<Loader<'a>, ComposeError> {
        let wd = &options.working_dir;
        let abs = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                wd.join(p)
            }
        };
        let mut env = options.environment.clone();
        // Env files given, or `.env` of the working directory, for settings
        // such as COMPOSE_FILE (the process environment wins).
        let explicit_env: Vec<PathBuf> = options.env_files.iter().map(|p| abs(p)).collect();
        if explicit_env.is_empty() {
            let dotenv = wd.join(".env");
            if dotenv.is_file() {
                add_env_file(&mut env, &dotenv, wd)?;
            }
        } else {
            for f in &explicit_env {
                add_env_file(&mut env, f, wd)?;
            }
        }
        let files: Vec<PathBuf> = if !options.files.is_empty() {
            options.files.iter().map(|p| abs(p)).collect()
        } else if let Some(list) = env.get("COMPOSE_FILE").filter(|v| !v.is_empty()) {
            let sep = env
                .get("COMPOSE_PATH_SEPARATOR")
                .filter(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| ":".to_string());
            list.split(sep.as_str())
                .map(|p| abs(Path::new(p)))
                .collect()
        } else {
            discover(wd)?
        };
        for f in &files {
            if f.as_os_str() == "-" {
                return Err(ComposeError::new(
                    "reading a Compose file from standard input is not supported",
                ));
            }
        }
        let directory = match &options.project_directory {
            Some(d) => abs(d),
            None => files[0]
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| wd.clone()),
        };
        // The project directory's .env, for what nothing else set.
        if explicit_env.is_empty() && directory != *wd {
            let dotenv = directory.join(".env");
            if dotenv.is_file() {
                add_env_file(&mut env, &dotenv, wd)?;
            }
        }
        Ok(Loader {
            options,
            files,
            directory,
            env,
        })
    }

    fn load(mut self) -> Result<Project, ComposeError> {
        let wd = self.options.working_dir.clone();
        let mut docs: Vec<Node> = Vec::new();
        for f in &self.files {
            let file = read_file(f, display_name(f, &wd))?;
            docs.extend(yaml::parse(&file)?);
        }
        for d in &docs {
            if d.as_map().is_none() {
                return Err(ComposeError::at(
                    d.at.as_ref(),
                    "",
                    format!("the top level must be a mapping, not {}", d.kind()),
                ));
            }
        }
        let mut warnings = Vec::new();
        let name = self.project_name(&docs, &mut warnings)?;
        self.env
            .insert("COMPOSE_PROJECT_NAME".to_string(), name.clone());

        // Interpolate each file, then merge them in order.
        let env = self.env.clone();
        let lookup = move |k: &str| env.get(k).cloned();
        let mut interp = Interpolator::new(&lookup);
        let mut model: Option<Node> = None;
        for mut d in docs {
            interp.node(&mut d, "")?;
            match &mut model {
                None => model = Some(merge::first(d)?),
                Some(m) => merge::merge(m, d)?,
            }
        }
        for v in &interp.unset {
            warnings.push(format!(
                "the {v:?} variable is not set; defaulting to a blank string"
            ));
        }
        let mut model = model.unwrap_or_else(Node::map);
        self.check_top_level(&mut model, &mut warnings)?;

        let profiles = self.active_profiles();
        let mut services = Vec::new();
        let mut disabled = Vec::new();
        let mut kept = Vec::new();
        let service_entries: Vec<(Key, Node)> = match model.remove("services") {
            Some(s) => match s.value {
                Value::Map(m) => m,
                Value::Null => Vec::new(),
                _ => {
                    return Err(ComposeError::at(
                        s.at.as_ref(),
                        "services",
                        format!("must be a mapping, not {}", s.kind()),
                    ))
                }
            },
            None => Vec::new(),
        };
        for (key, node) in service_entries {
            let service = self.service(&key, node)?;
            let active = service.profiles.is_empty()
                || service
                    .profiles
                    .iter()
                    .any(|p| profiles.iter().any(|a| a == p || a == "*"));
            if active {
                kept.push((key, service.node.clone()));
                services.push(service);
            } else {
                disabled.push(service);
            }
        }
        let mut out = Node::map().at(model.at.clone());
        out.set("name", Node::str(name.clone()));
        out.set("services", Node::new(Value::Map(kept)));
        self.normalize_networks(&mut out, &model);
        for key in ["volumes", "secrets", "configs", "models"] {
            if let Some(mut v) = model.remove(key) {
                if key == "secrets" || key == "configs" {
                    self.resolve_file_paths(&mut v);
                }
                out.set(key, v);
            }
        }
        if let Value::Map(rest) = model.value {
            for (k, v) in rest {
                if k.name.starts_with("x-") {
                    out.set(&k.name, v);
                }
            }
        }
        sort_below_top(&mut out);
        Ok(Project {
            name,
            directory: self.directory,
            files: self.files,
            environment: self.env,
            profiles,
            services,
            disabled,
            model: out,
            warnings,
        })
    }

    /// `-p`, else `COMPOSE_PROJECT_NAME`, else the last top-level `name:`
    /// (interpolated, normalised), else the project directory's name (normalised).
    fn project_name(
        &self,
        docs: &[Node],
        warnings: &mut Vec<String>,
    ) -> Result<String, ComposeError> {
        if let Some(n) = &self.options.project_name {
            check_project_name(n, "-p")?;
            return Ok(n.clone());
        }
        if let Some(n) = self
            .env
            .get("COMPOSE_PROJECT_NAME")
            .filter(|v| !v.is_empty())
        {
            check_project_name(n, "COMPOSE_PROJECT_NAME")?;
            return Ok(n.clone());
        }
        let lookup = |k: &str| self.env.get(k).cloned();
        let mut from_files = None;
        for d in docs {
            if let Some(n) = d.get("name") {
                let mut n = n.clone();
                let mut interp = Interpolator::new(&lookup);
                interp.node(&mut n, "name")?;
                match n.scalar_text() {
                    Some(t) if !t.is_empty() => from_files = Some((t, n.at.clone())),
                    Some(_) => {}
                    None => {
                        return Err(ComposeError::at(
                            n.at.as_ref(),
                            "name",
                            format!("must be a string, not {}", n.kind()),
                        ))
                    }
                }
            }
        }
        if let Some((n, at)) = from_files {
            let normalized = normalize_project_name(&n);
            if normalized.is_empty() {
                return Err(ComposeError::at(
                    at.as_ref(),
                    "name",
                    format!("{n:?} has no letter or digit to make a project name of"),
                ));
            }
            return Ok(normalized);
        }
        let dir = self
            .directory
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let normalized = normalize_project_name(&dir);
        if normalized.is_empty() {
            return Err(ComposeError::new(format!(
                "the project directory's name {dir:?} makes no project name; set one with -p or name:"
            )));
        }
        let _ = warnings;
        Ok(normalized)
    }

    fn active_profiles(&self) -> Vec<String> {
        if !self.options.profiles.is_empty() {
            return self.options.profiles.clone();
        }
        self.env
            .get("COMPOSE_PROFILES")
            .map(|p| {
                p.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn check_top_level(
        &self,
        model: &mut Node,
        warnings: &mut Vec<String>,
    ) -> Result<(), ComposeError> {
        let Some(entries) = model.as_map() else {
            return Ok(());
        };
        for (k, v) in entries {
            match k.name.as_str() {
                "name" | "services" | "networks" | "volumes" | "secrets" | "configs" | "models" => {
                }
                "version" => warnings.push(format!(
                    "{}: the attribute `version` is obsolete, it is ignored",
                    k.at.as_ref().map(|l| l.to_string()).unwrap_or_default()
                )),
                "include" => {
                    return Err(ComposeError::at(
                        k.at.as_ref(),
                        "include",
                        "kiln does not support include yet; merge the files with -f instead",
                    ))
                }
                n if n.starts_with("x-") => {}
                n => {
                    return Err(ComposeError::at(
                        k.at.as_ref(),
                        "",
                        format!("unknown top-level key {n:?}"),
                    ))
                }
            }
            if matches!(
                k.name.as_str(),
                "networks" | "volumes" | "secrets" | "configs"
            ) && !matches!(v.value, Value::Map(_) | Value::Null)
            {
                return Err(ComposeError::at(
                    v.at.as_ref(),
                    &k.name,
                    format!("must be a mapping, not {}", v.kind()),
                ));
            }
        }
        model.remove("version");
        Ok(())
    }

    /// A service's normalised node and what kiln reads of it.
    fn service(&self, key: &Key, mut node: Node) -> Result<Service, ComposeError> {
        let name = &key.name;
        let path = format!("services.{name}");
        if node.is_null() {
            node = Node::map().at(key.at.clone());
        }
        let Some(entries) = node.as_map() else {
            return Err(ComposeError::at(
                node.at.as_ref(),
                &path,
                format!("must be a mapping, not {}", node.kind()),
            ));
        };
        for (k, _) in entries {
            if !SERVICE_KEYS.contains(&k.name.as_str()) && !k.name.starts_with("x-") {
                return Err(ComposeError::at(
                    k.at.as_ref(),
                    &path,
                    format!("unknown key {:?}", k.name),
                ));
            }
            if k.name == "extends" {
                return Err(ComposeError::at(
                    k.at.as_ref(),
                    &format!("{path}.extends"),
                    "kiln does not support extends yet",
                ));
            }
        }
        let string = |n: &Node, p: &str| -> Result<String, ComposeError> {
            n.scalar_text().ok_or_else(|| {
                ComposeError::at(
                    n.at.as_ref(),
                    p,
                    format!("must be a string, not {}", n.kind()),
                )
            })
        };
        let image = match node.get("image") {
            Some(n) if !n.is_null() => Some(string(n, &format!("{path}.image"))?),
            _ => None,
        };
        let platform = match node.get("platform") {
            Some(n) if !n.is_null() => {
                Some((string(n, &format!("{path}.platform"))?, n.at.clone()))
            }
            _ => None,
        };
        let mut profiles = Vec::new();
        if let Some(p) = node.get("profiles") {
            let items = p.as_seq().ok_or_else(|| {
                ComposeError::at(p.at.as_ref(), &format!("{path}.profiles"), "must be a list")
            })?;
            for i in items {
                profiles.push(string(i, &format!("{path}.profiles"))?);
            }
        }
        // Normalised forms.
        let lookup = |k: &str| self.env.get(k).cloned();
        if let Some(b) = node.remove("build") {
            let b = self.normalize_build(b, &format!("{path}.build"), &lookup)?;
            node.set("build", b);
        }
        for key in ["environment", "labels", "annotations"] {
            if let Some(v) = node.remove(key) {
                let resolve_env = key == "environment";
                let m = list_or_map(
                    &v,
                    &format!("{path}.{key}"),
                    resolve_env.then_some(&lookup as Lookup),
                    true,
                )?;
                node.set(key, m);
            }
        }
        if let Some(d) = node.remove("depends_on") {
            let m = match d.value {
                Value::Seq(items) => {
                    let mut m = Node::map().at(d.at.clone());
                    for i in items {
                        let n = string(&i, &format!("{path}.depends_on"))?;
                        let mut cond = Node::map();
                        cond.set("condition", Node::str("service_started"));
                        cond.set("required", Node::new(Value::Bool(true)));
                        if let Value::Map(e) = &mut m.value {
                            e.push((Key { name: n, at: i.at }, cond));
                        }
                    }
                    m
                }
                other => Node {
                    value: other,
                    at: d.at,
                    tag: d.tag,
                },
            };
            node.set("depends_on", m);
        }
        if let Some(e) = node.remove("env_file") {
            let items = match e.value {
                Value::Str(_) => vec![e],
                Value::Seq(items) => items,
                _ => {
                    return Err(ComposeError::at(
                        e.at.as_ref(),
                        &format!("{path}.env_file"),
                        "must be a string or a list",
                    ))
                }
            };
            let mut out = Vec::new();
            for i in items {
                let mut entry = match &i.value {
                    Value::Str(s) => {
                        let mut m = Node::map().at(i.at.clone());
                        m.set("path", Node::str(s.clone()).at(i.at.clone()));
                        m.set("required", Node::new(Value::Bool(true)));
                        m
                    }
                    _ => i,
                };
                if let Some(p) = entry.get("path").and_then(Node::scalar_text) {
                    let at = entry.get("path").and_then(|n| n.at.clone());
                    entry.set(
                        "path",
                        Node::str(self.absolute(&p).display().to_string()).at(at),
                    );
                }
                out.push(entry);
            }
            node.set("env_file", Node::new(Value::Seq(out)));
        }
        let build = match node.get("build") {
            Some(b) => Some(Build::from_node(
                b,
                &format!("{path}.build"),
                &self.directory,
            )?),
            None => None,
        };
        sort_below_top(&mut node);
        Ok(Service {
            name: name.clone(),
            image,
            build,
            profiles,
            platform,
            node,
        })
    }

    /// `build:` in its long form: `context` absolute (default: the project
    /// directory), `dockerfile` defaulting to `Dockerfile`, `args`, `labels` and
    /// `additional_contexts` as mappings (args without a value from the
    /// environment, dropped when unset), local additional contexts absolute.
    fn normalize_build(
        &self,
        b: Node,
        path: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Node, ComposeError> {
        let mut b = match b.value {
            Value::Str(s) => {
                let mut m = Node::map().at(b.at.clone());
                m.set("context", Node::str(s).at(b.at.clone()));
                m
            }
            Value::Map(_) => b,
            _ => {
                return Err(ComposeError::at(
                    b.at.as_ref(),
                    path,
                    format!("must be a string or a mapping, not {}", b.kind()),
                ))
            }
        };
        let context = match b.get("context") {
            Some(c) => c.scalar_text().ok_or_else(|| {
                ComposeError::at(
                    c.at.as_ref(),
                    &format!("{path}.context"),
                    "must be a string",
                )
            })?,
            None => ".".to_string(),
        };
        let at = b.get("context").and_then(|c| c.at.clone());
        let context = if is_remote(&context) {
            context
        } else {
            self.absolute(&context).display().to_string()
        };
        b.set("context", Node::str(context).at(at));
        if b.get("dockerfile").is_none() && b.get("dockerfile_inline").is_none() {
            b.set("dockerfile", Node::str("Dockerfile"));
        }
        if let Some(a) = b.remove("args") {
            b.set(
                "args",
                list_or_map(&a, &format!("{path}.args"), Some(lookup), false)?,
            );
        }
        if let Some(l) = b.remove("labels") {
            b.set(
                "labels",
                list_or_map(&l, &format!("{path}.labels"), None, true)?,
            );
        }
        if let Some(c) = b.remove("additional_contexts") {
            let mut m = list_or_map(&c, &format!("{path}.additional_contexts"), None, true)?;
            if let Value::Map(entries) = &mut m.value {
                for (_, v) in entries.iter_mut() {
                    if let Some(t) = v.scalar_text() {
                        if !t.contains("://") && !t.starts_with("service:") && !is_remote(&t) {
                            v.value = Value::Str(self.absolute(&t).display().to_string());
                        }
                    }
                }
            }
            b.set("additional_contexts", m);
        }
        Ok(b)
    }

    /// `p` relative to the project directory (`~/` is the home directory).
    fn absolute(&self, p: &str) -> PathBuf {
        let p = match (p.strip_prefix("~/"), self.env.get("HOME")) {
            (Some(rest), Some(home)) => Path::new(home).join(rest),
            _ => PathBuf::from(p),
        };
        clean(&self.directory.join(p))
    }

    fn resolve_file_paths(&self, top: &mut Node) {
        if let Value::Map(entries) = &mut top.value {
            for (_, def) in entries.iter_mut() {
                if let Some(f) = def.get("file").and_then(Node::scalar_text) {
                    let at = def.get("file").and_then(|n| n.at.clone());
                    def.set(
                        "file",
                        Node::str(self.absolute(&f).display().to_string()).at(at),
                    );
                }
            }
        }
    }

    /// Services without `network_mode` or `networks` join `default`, which then
    /// exists at the top level (as in docker compose's model).
    fn normalize_networks(&self, out: &mut Node, model: &Node) {
        let mut networks = model.get("networks").cloned().unwrap_or_else(Node::map);
        if networks.is_null() {
            networks = Node::map();
        }
        let mut uses_default = false;
        if let Some(Value::Map(services)) = out.get_mut("services").map(|s| &mut s.value) {
            for (_, s) in services.iter_mut() {
                if s.get("network_mode").is_some() || s.get("provider").is_some() {
                    continue;
                }
                let empty = match s.get("networks") {
                    None => true,
                    Some(n) => {
                        n.as_map().is_some_and(|m| m.is_empty())
                            || n.as_seq().is_some_and(|l| l.is_empty())
                    }
                };
                if empty {
                    let mut n = Node::map();
                    n.set("default", Node::new(Value::Null));
                    s.set("networks", n);
                    uses_default = true;
                } else if s.get("networks").and_then(|n| n.get("default")).is_some() {
                    uses_default = true;
                }
            }
        }
        if uses_default && networks.get("default").is_none() {
            let mut d = Node::map();
            d.set(
                "name",
                Node::str(format!("{}_default", self.env["COMPOSE_PROJECT_NAME"])),
            );
            networks.set("default", d);
        }
        if networks.as_map().is_some_and(|m| !m.is_empty()) {
            out.set("networks", networks);
        }
    }
}

/// Finds the Compose file in `dir` or its nearest parent that has one, and
/// that directory's override file.
fn discover(dir: &Path) -> Result<Vec<PathBuf>, ComposeError> {
    let mut d = Some(dir);
    while let Some(here) = d {
        if let Some(f) = DEFAULT_FILES
            .iter()
            .map(|n| here.join(n))
            .find(|p| p.is_file())
        {
            let mut files = vec![f];
            if let Some(o) = DEFAULT_OVERRIDE_FILES
                .iter()
                .map(|n| here.join(n))
                .find(|p| p.is_file())
            {
                files.push(o);
            }
            return Ok(files);
        }
        d = here.parent();
    }
    Err(ComposeError::new(format!(
        "no Compose file in {} or a parent directory ({})",
        dir.display(),
        DEFAULT_FILES.join(", ")
    ))
    .with_help("name one with -f FILE"))
}

fn add_env_file(
    env: &mut BTreeMap<String, String>,
    path: &Path,
    wd: &Path,
) -> Result<(), ComposeError> {
    if path.is_dir() {
        return Err(ComposeError::new(format!(
            "env file {} is a directory",
            path.display()
        )));
    }
    let file = read_file(path, display_name(path, wd))?;
    let current = env.clone();
    let mut values = BTreeMap::new();
    dotenv::parse(&file, &|k| current.get(k).cloned(), &mut values)?;
    for (k, v) in values {
        env.entry(k).or_insert(v);
    }
    Ok(())
}

pub(crate) fn is_remote(s: &str) -> bool {
    [
        "https://",
        "http://",
        "git://",
        "ssh://",
        "github.com/",
        "git@",
    ]
    .iter()
    .any(|p| s.starts_with(p))
}

/// `p` without `.` components and with `..` applied (lexically).
fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Reads a variable of the project environment.
type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A `KEY=value` list or a mapping as a mapping. `KEY` alone (or `KEY:` with
/// no value) takes its value from `env` when given: kept as null when unset if
/// `keep_unset`, dropped otherwise. Without `env`, `KEY` alone is an empty value
/// in a list and null in a mapping.
fn list_or_map(
    node: &Node,
    path: &str,
    env: Option<Lookup>,
    keep_unset: bool,
) -> Result<Node, ComposeError> {
    let mut out: Vec<(Key, Node)> = Vec::new();
    let put = |out: &mut Vec<(Key, Node)>, name: String, at: Option<Loc>, value: Option<Node>| {
        let value = match (value, env) {
            (Some(v), _) => Some(v),
            (None, Some(env)) => env(&name).map(|v| Node::str(v).at(at.clone())),
            (None, None) => Some(Node::new(Value::Null).at(at.clone())),
        };
        let value = match value {
            Some(v) => v,
            None if keep_unset => Node::new(Value::Null).at(at.clone()),
            None => return,
        };
        match out.iter_mut().find(|(k, _)| k.name == name) {
            Some(slot) => slot.1 = value,
            None => out.push((Key { name, at }, value)),
        }
    };
    match &node.value {
        Value::Map(entries) => {
            for (k, v) in entries {
                let value = match &v.value {
                    Value::Null => None,
                    Value::Str(_) | Value::Number(_) | Value::Bool(_) => {
                        Some(Node::str(v.scalar_text().unwrap_or_default()).at(v.at.clone()))
                    }
                    _ => {
                        return Err(ComposeError::at(
                            v.at.as_ref(),
                            &format!("{path}.{}", k.name),
                            format!(
                                "must be a string, number, boolean or null, not {}",
                                v.kind()
                            ),
                        ))
                    }
                };
                put(&mut out, k.name.clone(), k.at.clone(), value);
            }
        }
        Value::Seq(items) => {
            for i in items {
                let t = match &i.value {
                    Value::Str(_) | Value::Number(_) | Value::Bool(_) => {
                        i.scalar_text().unwrap_or_default()
                    }
                    _ => {
                        return Err(ComposeError::at(
                            i.at.as_ref(),
                            path,
                            format!("list entries must be strings (KEY=value), not {}", i.kind()),
                        ))
                    }
                };
                match t.split_once('=') {
                    Some((k, v)) => put(
                        &mut out,
                        k.to_string(),
                        i.at.clone(),
                        Some(Node::str(v).at(i.at.clone())),
                    ),
                    None => put(&mut out, t, i.at.clone(), None),
                }
            }
        }
        Value::Null => {}
        _ => {
            return Err(ComposeError::at(
                node.at.as_ref(),
                path,
                format!(
                    "must be a mapping or a list of KEY=value, not {}",
                    node.kind()
                ),
            ))
        }
    }
    Ok(Node::new(Value::Map(out)).at(node.at.clone()))
}

/// Sorts mapping keys below the top level (as docker compose prints them:
/// struct fields and Go maps come out in order).
fn sort_below_top(node: &mut Node) {
    fn sort(node: &mut Node) {
        match &mut node.value {
            Value::Map(entries) => {
                entries.sort_by(|a, b| a.0.name.cmp(&b.0.name));
                for (_, v) in entries.iter_mut() {
                    sort(v);
                }
            }
            Value::Seq(items) => items.iter_mut().for_each(sort),
            _ => {}
        }
    }
    if let Value::Map(entries) = &mut node.value {
        for (_, v) in entries.iter_mut() {
            sort(v);
        }
    }
}

/// The keys a service may have (the Compose specification's JSON schema).
const SERVICE_KEYS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "build",
    "cap_add",
    "cap_drop",
    "cgroup",
    "cgroup_parent",
    "command",
    "configs",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "credential_spec",
    "depends_on",
    "deploy",
    "develop",
    "device_cgroup_rules",
    "devices",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "entrypoint",
    "env_file",
    "environment",
    "expose",
    "extends",
    "external_links",
    "extra_hosts",
    "gpus",
    "group_add",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "ipc",
    "isolation",
    "label_file",
    "labels",
    "links",
    "logging",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "models",
    "network_mode",
    "networks",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "ports",
    "post_start",
    "pre_stop",
    "privileged",
    "profiles",
    "provider",
    "pull_policy",
    "pull_refresh_after",
    "read_only",
    "restart",
    "runtime",
    "scale",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "storage_opt",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "use_api_socket",
    "user",
    "userns_mode",
    "uts",
    "volumes",
    "volumes_from",
    "working_dir",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{AdditionalContext, BuildContext};

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Dir {
            Dir(tempfile::tempdir().unwrap())
        }
        fn path(&self) -> PathBuf {
            self.0.path().to_path_buf()
        }
        fn write(&self, name: &str, text: &str) -> &Dir {
            let p = self.0.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
            self
        }
    }

    fn options(wd: PathBuf) -> Options {
        Options {
            working_dir: wd,
            ..Options::default()
        }
    }

    fn load(o: &Options) -> Project {
        Project::load(o).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn project_names_are_normalised() {
        assert_eq!(normalize_project_name("My_Project.1"), "my_project1");
        assert_eq!(normalize_project_name("-_web app"), "webapp");
        assert_eq!(normalize_project_name("Ünïcode!"), "ncode");
        assert_eq!(normalize_project_name("___"), "");
    }

    #[test]
    fn files_are_found_in_a_parent_with_their_override_and_named_after_the_directory() {
        let d = Dir::new();
        d.write("My.App/compose.yml", "services:\n  a:\n    image: one\n")
            .write(
                "My.App/docker-compose.yaml",
                "services:\n  ignored:\n    image: x\n",
            )
            .write(
                "My.App/compose.override.yaml",
                "services:\n  a:\n    image: two\n",
            )
            .write("My.App/sub/deeper/.keep", "");
        let p = load(&options(d.path().join("My.App/sub/deeper")));
        assert_eq!(p.name, "myapp");
        assert_eq!(p.directory, d.path().join("My.App"));
        assert_eq!(
            p.files,
            [
                d.path().join("My.App/compose.yml"),
                d.path().join("My.App/compose.override.yaml")
            ]
        );
        assert_eq!(p.services.len(), 1);
        assert_eq!(p.services[0].image.as_deref(), Some("two"));
        let e = Project::load(&options(d.path())).unwrap_err();
        assert!(e.to_string().starts_with("no Compose file in"), "{e}");
    }

    #[test]
    fn project_name_precedence() {
        let d = Dir::new();
        d.write(
            "proj/compose.yaml",
            "name: ${NAME:-From YAML}\nservices: {}\n",
        );
        let mut o = options(d.path().join("proj"));
        assert_eq!(load(&o).name, "fromyaml");
        o.environment.insert("NAME".into(), "Env_Name".into());
        assert_eq!(load(&o).name, "env_name");
        o.environment
            .insert("COMPOSE_PROJECT_NAME".into(), "from-env".into());
        let p = load(&o);
        assert_eq!(p.name, "from-env");
        assert_eq!(p.environment["COMPOSE_PROJECT_NAME"], "from-env");
        o.project_name = Some("flag".into());
        assert_eq!(load(&o).name, "flag");
        o.project_name = Some("Bad Name".into());
        let e = Project::load(&o).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid project name \"Bad Name\" (-p)"),
            "{e}"
        );
        d.write("noname/compose.yaml", "services: {}\n");
        assert_eq!(load(&options(d.path().join("noname"))).name, "noname");
    }

    #[test]
    fn dotenv_and_process_environment_interpolate_and_env_file_replaces_dotenv() {
        let d = Dir::new();
        d.write(
            "compose.yaml",
            "services:\n  api:\n    image: ${REPO}/api:${TAG:-latest}\n    environment:\n      - PORT=$PORT\n      - FROM_ENV\n",
        )
        .write(".env", "REPO=local\nPORT=8000\nTAG=dotenv\nFROM_ENV=dotenv-value\n")
        .write("other.env", "REPO=other\nPORT=1\n");
        let mut o = options(d.path());
        o.environment.insert("TAG".into(), "shell".into());
        let p = load(&o);
        let api = &p.services[0];
        assert_eq!(api.image.as_deref(), Some("local/api:shell"));
        let env = api.node.get("environment").unwrap();
        assert_eq!(env.get("PORT").unwrap().scalar_text().unwrap(), "8000");
        assert_eq!(
            env.get("FROM_ENV").unwrap().scalar_text().unwrap(),
            "dotenv-value"
        );
        o.env_files = vec!["other.env".into()];
        let p = load(&o);
        assert_eq!(p.services[0].image.as_deref(), Some("other/api:shell"));
        assert!(p.services[0]
            .node
            .get("environment")
            .unwrap()
            .get("FROM_ENV")
            .unwrap()
            .is_null());
    }

    #[test]
    fn several_files_merge_in_order_with_paths_from_the_first_files_directory() {
        let d = Dir::new();
        d.write("app/compose.yaml", "services:\n  web:\n    build: ./web\n")
            .write(
                "elsewhere/prod.yaml",
                "services:\n  web:\n    build:\n      target: prod\n      additional_contexts:\n        - assets=./assets\n        - base=service:base\n  base:\n    build: ./base\n",
            );
        let mut o = options(d.path());
        o.files = vec!["app/compose.yaml".into(), "elsewhere/prod.yaml".into()];
        let p = load(&o);
        assert_eq!(p.name, "app");
        let web = p.services.iter().find(|s| s.name == "web").unwrap();
        let b = web.build.as_ref().unwrap();
        assert_eq!(b.context, BuildContext::Dir(d.path().join("app/web")));
        assert_eq!(b.target.as_deref(), Some("prod"));
        assert_eq!(
            b.additional_contexts[0].1.value,
            AdditionalContext::Dir(d.path().join("app/assets"))
        );
        assert_eq!(
            b.additional_contexts[1].1.value,
            AdditionalContext::Service("base".into())
        );
        assert_eq!(web.image_name(&p.name), "app-web");
    }

    #[test]
    fn profiles_enable_services() {
        let d = Dir::new();
        d.write(
            "compose.yaml",
            "services:\n  foo:\n    image: foo\n  bar:\n    image: bar\n    profiles: [test]\n  zot:\n    image: zot\n    profiles: [debug]\n",
        );
        let names = |p: &Project| {
            p.services
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
        };
        let mut o = options(d.path());
        assert_eq!(names(&load(&o)), ["foo"]);
        o.profiles = vec!["test".into()];
        assert_eq!(names(&load(&o)), ["foo", "bar"]);
        o.profiles = vec!["*".into()];
        assert_eq!(names(&load(&o)), ["foo", "bar", "zot"]);
        o.profiles.clear();
        o.environment
            .insert("COMPOSE_PROFILES".into(), "debug, test".into());
        assert_eq!(names(&load(&o)), ["foo", "bar", "zot"]);
        o.environment.clear();
        let mut p = load(&o);
        assert!(p.model.get("services").unwrap().get("zot").is_none());
        p.enable(&["zot".into()]).unwrap();
        assert_eq!(names(&p), ["foo", "zot"]);
        assert!(p.model.get("services").unwrap().get("zot").is_some());
        assert_eq!(
            p.enable(&["nope".into()]).unwrap_err().to_string(),
            "no such service: nope"
        );
    }

    #[test]
    fn mistakes_name_file_line_and_key() {
        let d = Dir::new();
        let case = |text: &str| {
            d.write("compose.yaml", text);
            Project::load(&options(d.path())).unwrap_err().to_string()
        };
        assert_eq!(
            case("services:\n  api:\n    build:\n      context: .\n      args:\n        TOKEN: ${TOKEN:?set TOKEN in .env}\n"),
            "compose.yaml:6: services.api.build.args.TOKEN: required variable TOKEN is missing a value: set TOKEN in .env"
        );
        assert_eq!(
            case("services:\n  api:\n    imgae: x\n"),
            "compose.yaml:3: services.api: unknown key \"imgae\""
        );
        assert_eq!(
            case("services:\n  api:\n    build:\n      args: 12\n"),
            "compose.yaml:4: services.api.build.args: must be a mapping or a list of KEY=value, not a number"
        );
        assert_eq!(
            case("servics: {}\n"),
            "compose.yaml:1: unknown top-level key \"servics\""
        );
        assert_eq!(
            case("services:\n  api:\n    image: ${BROKEN\n"),
            "compose.yaml:3: services.api.image: invalid interpolation format: \"${BROKEN\""
        );
        assert_eq!(
            case("services:\n  a:\n    extends: b\n"),
            "compose.yaml:3: services.a.extends: kiln does not support extends yet"
        );
    }

    #[test]
    fn the_resolved_model_as_yaml() {
        let d = Dir::new();
        d.write(
            "compose.yaml",
            concat!(
                "version: '3.9'\n",
                "name: demo\n",
                "services:\n",
                "  web:\n",
                "    build:\n",
                "      context: web\n",
                "      args: [A=1, B]\n",
                "    environment: [X=1]\n",
                "    depends_on: [api]\n",
                "  api:\n",
                "    image: api:${TAG}\n",
                "x-note: kept\n",
            ),
        );
        let mut o = options(d.path());
        o.environment.insert("B".into(), "from env".into());
        let p = load(&o);
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(
            p.warnings[0].contains("\"TAG\" variable is not set"),
            "{:?}",
            p.warnings
        );
        assert_eq!(
            p.warnings[1],
            "compose.yaml:1: the attribute `version` is obsolete, it is ignored"
        );
        let want = format!(
            concat!(
                "name: demo\n",
                "services:\n",
                "  api:\n",
                "    image: \"api:\"\n",
                "    networks:\n",
                "      default: null\n",
                "  web:\n",
                "    build:\n",
                "      args:\n",
                "        A: \"1\"\n",
                "        B: from env\n",
                "      context: {dir}/web\n",
                "      dockerfile: Dockerfile\n",
                "    depends_on:\n",
                "      api:\n",
                "        condition: service_started\n",
                "        required: true\n",
                "    environment:\n",
                "      X: \"1\"\n",
                "    networks:\n",
                "      default: null\n",
                "networks:\n",
                "  default:\n",
                "    name: demo_default\n",
                "x-note: kept\n",
            ),
            dir = d.path().display()
        );
        assert_eq!(p.to_yaml().unwrap(), want);
    }
}
