//! `kiln compose up|down|ps|logs`: a project's services as containers
//! (`kiln_runtime`), one supervisor for the whole project.
//!
//! `up` builds what has no image yet (everything with `--build`), then makes
//! one container per service (`<project>-<service>-1`, or `container_name`)
//! from what the service says — `image`, `environment`, `env_file`,
//! `command`, `entrypoint`, `user`, `working_dir`, `volumes` (bind mounts and
//! the project's named volumes under the store), `ports`, `healthcheck`,
//! `hostname`, `shm_size`, `tmpfs`, `network_mode` — on the project network
//! `<project>_default`, where each is reachable by its service name, and
//! starts them in `depends_on` order. In the foreground each output line is
//! prefixed with the container's name and Ctrl-C stops them all; with `-d`
//! a supervisor runs them in the background and `ps`, `logs` and `down` find
//! them by the project's name.

use super::containers::{print_log, print_table, remove};
use crate::containers::{container_config, host_bind, volume_dir, ContainerOptions};
use crate::flags::{
    ComposeBuildFlags, ComposeDownFlags, ComposeLogsFlags, ComposePsFlags, ComposeUpFlags,
    GlobalFlags, LoadFlag,
};
use crate::local_images::{find, open_store};
use kiln_compose::yaml::{Node, Value};
use kiln_compose::{ComposeError, Project, Service};
use kiln_runtime::state::Listed;
use kiln_runtime::{
    Condition, ContainerConfig, Containers, Dependency, Group, Healthcheck, Member, NetworkChoice,
    Output, PortMapping, Status, StopFlag,
};
use kiln_sandbox::{MountSpec, OutputLine, OutputStream};
use miette::{miette, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn containers_of(global: &GlobalFlags) -> Result<Containers> {
    super::containers::open(global)
}

/// The services to run: those named (else all enabled), with what they
/// depend on, dependencies first (a cycle is an error).
fn start_order<'p>(project: &'p Project, names: &[String]) -> Result<Vec<&'p Service>> {
    let wanted: Vec<&Service> = if names.is_empty() {
        project.services.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                project
                    .services
                    .iter()
                    .find(|s| &s.name == n)
                    .ok_or_else(|| miette!("no such service: {n}"))
            })
            .collect::<Result<_>>()?
    };
    fn visit<'p>(
        project: &'p Project,
        s: &'p Service,
        path: &mut Vec<String>,
        out: &mut Vec<&'p Service>,
    ) -> Result<()> {
        if out.iter().any(|o| o.name == s.name) {
            return Ok(());
        }
        if path.contains(&s.name) {
            return Err(miette!(
                "depends_on makes a cycle: {} -> {}",
                path.join(" -> "),
                s.name
            ));
        }
        path.push(s.name.clone());
        for (dep, _) in depends_on(s)? {
            let d = project
                .services
                .iter()
                .find(|x| x.name == dep)
                .ok_or_else(|| {
                    miette!(
                        "service {} depends on {dep}, which is not a service of the project (or not enabled)",
                        s.name
                    )
                })?;
            visit(project, d, path, out)?;
        }
        path.pop();
        out.push(s);
        Ok(())
    }
    let mut out = Vec::new();
    for s in wanted {
        visit(project, s, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

/// `depends_on` (normalised to a mapping by the loader): service → (condition, required).
fn depends_on(s: &Service) -> Result<Vec<(String, (Condition, bool))>> {
    let mut out = Vec::new();
    let Some(d) = s.node.get("depends_on") else {
        return Ok(out);
    };
    for (k, v) in d.as_map().unwrap_or_default() {
        let cond = v
            .get("condition")
            .and_then(Node::scalar_text)
            .unwrap_or_else(|| "service_started".into());
        let condition = match cond.as_str() {
            "service_started" => Condition::Started,
            "service_healthy" => Condition::Healthy,
            "service_completed_successfully" => Condition::CompletedSuccessfully,
            other => {
                return Err(located(
                    v.get("condition").unwrap_or(v),
                    &format!("services.{}.depends_on.{}.condition", s.name, k.name),
                    format!("unknown condition {other:?}"),
                ))
            }
        };
        let required = !matches!(
            v.get("required").map(|r| &r.value),
            Some(Value::Bool(false))
        );
        out.push((k.name.clone(), (condition, required)));
    }
    Ok(out)
}

fn located(node: &Node, path: &str, msg: impl Into<String>) -> miette::Report {
    miette::Report::new(ComposeError::at(node.at.as_ref(), path, msg))
}

/// A string, or a list of strings.
fn string_list(node: &Node, path: &str) -> Result<Vec<String>> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .map(|i| {
                i.scalar_text()
                    .ok_or_else(|| located(i, path, "must be a string"))
            })
            .collect(),
        _ => node
            .scalar_text()
            .map(|s| vec![s])
            .ok_or_else(|| located(node, path, "must be a string or a list")),
    }
}

/// `command:`/`entrypoint:`: a list as is, a string split as a shell would
/// (compose-go's shellwords; no `sh -c`).
fn command_of(node: &Node, path: &str) -> Result<Vec<String>> {
    match &node.value {
        Value::Seq(_) => string_list(node, path),
        Value::Null => Ok(Vec::new()),
        _ => {
            let s = node
                .scalar_text()
                .ok_or_else(|| located(node, path, "must be a string or a list"))?;
            split_words(&s).map_err(|e| located(node, path, e))
        }
    }
}

/// Splits like a POSIX shell without expansions: quotes and backslashes.
fn split_words(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c)
                            }
                            None => return Err("unclosed double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unclosed double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Compose durations: `1m30s`, `500ms`, `10s`, `1h`.
fn duration_ms(node: &Node, path: &str) -> Result<u64> {
    let s = node
        .scalar_text()
        .ok_or_else(|| located(node, path, "must be a duration such as 10s"))?;
    let bad = || located(node, path, format!("{s:?} is not a duration such as 1m30s"));
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..u] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" | "" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return Err(bad()),
        };
        total += num * factor;
        rest = &rest[u..];
    }
    Ok(total as u64)
}

fn healthcheck_of(s: &Service) -> Result<Option<Option<Healthcheck>>> {
    let Some(h) = s.node.get("healthcheck") else {
        return Ok(None);
    };
    let path = format!("services.{}.healthcheck", s.name);
    if matches!(h.get("disable").map(|d| &d.value), Some(Value::Bool(true))) {
        return Ok(Some(None));
    }
    let test = match h.get("test") {
        Some(t) => match &t.value {
            Value::Seq(_) => string_list(t, &format!("{path}.test"))?,
            _ => vec![
                "CMD-SHELL".to_string(),
                t.scalar_text().ok_or_else(|| {
                    located(t, &format!("{path}.test"), "must be a string or a list")
                })?,
            ],
        },
        // Only timings: the image's test with them.
        None => return Ok(None),
    };
    let Some(test) = Healthcheck::test_from(&test)
        .map_err(|e| located(h.get("test").unwrap_or(h), &format!("{path}.test"), e))?
    else {
        return Ok(Some(None));
    };
    let mut hc = Healthcheck::new(test);
    for (key, field) in [
        ("interval", &mut hc.interval_ms),
        ("timeout", &mut hc.timeout_ms),
        ("start_period", &mut hc.start_period_ms),
        ("start_interval", &mut hc.start_interval_ms),
    ] {
        if let Some(v) = h.get(key) {
            *field = duration_ms(v, &format!("{path}.{key}"))?;
        }
    }
    if let Some(r) = h.get("retries") {
        hc.retries = r
            .scalar_text()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| located(r, &format!("{path}.retries"), "must be a number"))?;
    }
    Ok(Some(Some(hc)))
}

fn ports_of(s: &Service) -> Result<Vec<PortMapping>> {
    let mut out = Vec::new();
    let Some(p) = s.node.get("ports") else {
        return Ok(out);
    };
    let path = format!("services.{}.ports", s.name);
    for item in p.as_seq().unwrap_or_default() {
        let spec = match &item.value {
            Value::Map(_) => {
                let get = |k: &str| item.get(k).and_then(Node::scalar_text);
                let target =
                    get("target").ok_or_else(|| located(item, &path, "a port needs target:"))?;
                let mut spec = String::new();
                if let Some(ip) = get("host_ip") {
                    spec.push_str(&format!("{ip}:"));
                }
                spec.push_str(&format!(
                    "{}:{target}",
                    get("published").unwrap_or_default()
                ));
                if let Some(proto) = get("protocol") {
                    spec.push_str(&format!("/{proto}"));
                }
                spec
            }
            _ => item
                .scalar_text()
                .ok_or_else(|| located(item, &path, "must be a string or a mapping"))?,
        };
        out.push(PortMapping::parse(&spec).map_err(|e| located(item, &path, e))?);
    }
    Ok(out)
}

fn volumes_of(project: &Project, s: &Service, store_root: &Path) -> Result<Vec<MountSpec>> {
    let mut out = Vec::new();
    let path = format!("services.{}.volumes", s.name);
    let named = |name: &str, item: &Node| -> Result<std::path::PathBuf> {
        let declared = project
            .model
            .get("volumes")
            .and_then(|v| v.get(name))
            .is_some();
        if !declared {
            return Err(located(
                item,
                &path,
                format!("volume {name:?} is not declared under the top-level volumes:"),
            ));
        }
        volume_dir(store_root, &format!("{}_{name}", project.name))
    };
    let abs = |p: &str| -> std::path::PathBuf {
        if let Some(rest) = p.strip_prefix("~/") {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(rest)
        } else {
            project.directory.join(p)
        }
    };
    for item in s
        .node
        .get("volumes")
        .and_then(Node::as_seq)
        .unwrap_or_default()
    {
        let (kind, source, target, readonly) = match &item.value {
            Value::Map(_) => {
                let get = |k: &str| item.get(k).and_then(Node::scalar_text);
                (
                    get("type").unwrap_or_else(|| "volume".into()),
                    get("source"),
                    get("target").ok_or_else(|| located(item, &path, "a volume needs target:"))?,
                    matches!(
                        item.get("read_only").map(|r| &r.value),
                        Some(Value::Bool(true))
                    ),
                )
            }
            _ => {
                let text = item
                    .scalar_text()
                    .ok_or_else(|| located(item, &path, "must be a string or a mapping"))?;
                let parts: Vec<&str> = text.split(':').collect();
                let (src, dst, mode) = match parts.as_slice() {
                    [d] => (None, d.to_string(), ""),
                    [s, d] => (Some(s.to_string()), d.to_string(), ""),
                    [s, d, m] => (Some(s.to_string()), d.to_string(), *m),
                    _ => return Err(located(item, &path, format!("invalid volume {text:?}"))),
                };
                let kind = match &src {
                    Some(s) if s.starts_with('.') || s.starts_with('/') || s.starts_with('~') => {
                        "bind"
                    }
                    _ => "volume",
                };
                (
                    kind.to_string(),
                    src,
                    dst,
                    mode.split(',').any(|m| m == "ro"),
                )
            }
        };
        if !target.starts_with('/') {
            return Err(located(
                item,
                &path,
                format!("{target:?} is not an absolute path"),
            ));
        }
        let mount = match (kind.as_str(), source) {
            ("bind", Some(src)) => {
                let p = abs(&src);
                if !p.exists() {
                    std::fs::create_dir_all(&p)
                        .map_err(|e| miette!("creating {}: {e}", p.display()))?;
                }
                host_bind(&p, &target, readonly)
            }
            ("volume", Some(name)) => host_bind(&named(&name, item)?, &target, readonly),
            // An anonymous volume: a fresh directory for this container's life.
            ("volume", None) | ("tmpfs", _) => MountSpec::Tmpfs {
                target,
                size_bytes: None,
            },
            (other, _) => {
                return Err(located(
                    item,
                    &path,
                    format!("kiln mounts bind, volume and tmpfs volumes, not {other}"),
                ))
            }
        };
        out.push(mount);
    }
    if let Some(t) = s.node.get("tmpfs") {
        for target in string_list(t, &format!("services.{}.tmpfs", s.name))? {
            out.push(MountSpec::Tmpfs {
                target,
                size_bytes: None,
            });
        }
    }
    Ok(out)
}

/// `env_file` then `environment` (which wins), as `KEY=value`.
fn environment_of(project: &Project, s: &Service) -> Result<Vec<String>> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |k: String, v: String, vars: &mut BTreeMap<String, String>| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    for entry in s
        .node
        .get("env_file")
        .and_then(Node::as_seq)
        .unwrap_or_default()
    {
        let Some(path) = entry.get("path").and_then(Node::scalar_text) else {
            continue;
        };
        let required = !matches!(
            entry.get("required").map(|r| &r.value),
            Some(Value::Bool(false))
        );
        let p = Path::new(&path);
        let text = match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(_) if !required => continue,
            Err(e) => {
                return Err(located(
                    entry.get("path").unwrap_or(entry),
                    &format!("services.{}.env_file", s.name),
                    format!("cannot read {path}: {}", e.to_string().to_lowercase()),
                ))
            }
        };
        let file = std::sync::Arc::new(kiln_compose::SourceFile::new(path.clone(), p, text));
        let mut out = BTreeMap::new();
        let env = &project.environment;
        kiln_compose::dotenv::parse(&file, &|k| env.get(k).cloned(), &mut out)
            .map_err(miette::Report::new)?;
        for (k, v) in out {
            set(k, v, &mut vars);
        }
    }
    if let Some(env) = s.node.get("environment").and_then(Node::as_map) {
        for (k, v) in env {
            // A name without a value that the environment does not set is left out.
            if let Some(v) = v.scalar_text() {
                set(k.name.clone(), v, &mut vars);
            }
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|k| vars.get(&k).map(|v| format!("{k}={v}")))
        .collect())
}

fn container_name(project: &Project, s: &Service) -> String {
    s.node
        .get("container_name")
        .and_then(Node::scalar_text)
        .unwrap_or_else(|| format!("{}-{}-1", project.name, s.name))
}

fn shm_size(s: &Service) -> Option<u64> {
    let t = s.node.get("shm_size")?.scalar_text()?;
    let t = t.trim().to_ascii_lowercase();
    let (num, mult) = match t.trim_end_matches('b').chars().last() {
        Some('k') => (&t[..t.trim_end_matches('b').len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.trim_end_matches('b').len() - 1], 1 << 20),
        Some('g') => (&t[..t.trim_end_matches('b').len() - 1], 1 << 30),
        _ => (t.trim_end_matches('b'), 1),
    };
    num.trim().parse::<u64>().ok().map(|n| n * mult)
}

/// The options of one service's container.
fn options_of(project: &Project, s: &Service, store_root: &Path) -> Result<ContainerOptions> {
    let path = format!("services.{}", s.name);
    let network = match s
        .node
        .get("network_mode")
        .and_then(Node::scalar_text)
        .as_deref()
    {
        None | Some("bridge") => NetworkChoice::Bridge {
            network: format!("{}_default", project.name),
            aliases: vec![s.name.clone()],
            dns: true,
        },
        Some("host") => NetworkChoice::Host,
        Some("none") => NetworkChoice::None,
        Some(other) => {
            return Err(located(
                s.node.get("network_mode").unwrap_or(&s.node),
                &format!("{path}.network_mode"),
                format!("kiln runs services with network_mode bridge, host or none, not {other:?}"),
            ))
        }
    };
    if let Some(r) = s.node.get("restart").and_then(Node::scalar_text) {
        if r != "no" {
            tracing::warn!("{path}.restart: {r:?} is ignored: kiln does not restart containers");
        }
    }
    Ok(ContainerOptions {
        name: Some(container_name(project, s)),
        env: environment_of(project, s)?,
        user: s.node.get("user").and_then(Node::scalar_text),
        workdir: s.node.get("working_dir").and_then(Node::scalar_text),
        entrypoint: s
            .node
            .get("entrypoint")
            .map(|n| command_of(n, &format!("{path}.entrypoint")))
            .transpose()?,
        command: s
            .node
            .get("command")
            .map(|n| command_of(n, &format!("{path}.command")))
            .transpose()?,
        network: Some(network),
        ports: ports_of(s)?,
        mounts: volumes_of(project, s, store_root)?,
        hostname: s.node.get("hostname").and_then(Node::scalar_text),
        healthcheck: healthcheck_of(s)?,
        project: Some(project.name.clone()),
        service: Some(s.name.clone()),
        auto_remove: false,
        shm_size: shm_size(s),
        stop_signal: s
            .node
            .get("stop_signal")
            .map(|n| {
                let text = n.scalar_text().unwrap_or_default();
                kiln_runtime::state::parse_signal(&text).ok_or_else(|| {
                    located(
                        n,
                        &format!("{path}.stop_signal"),
                        format!("{text:?} is not a signal"),
                    )
                })
            })
            .transpose()?,
        stop_grace_ms: s
            .node
            .get("stop_grace_period")
            .map(|n| duration_ms(n, &format!("{path}.stop_grace_period")))
            .transpose()?,
    })
}

/// Foreground output: `name  | line`, as docker compose prints it.
struct Prefixed {
    width: usize,
}

impl Output for Prefixed {
    fn line(&self, c: &ContainerConfig, line: &OutputLine) {
        let text = format!("{:<w$} | {}", c.name, line.line, w = self.width);
        let _ = match line.stream {
            OutputStream::Stdout => writeln!(std::io::stdout().lock(), "{text}"),
            OutputStream::Stderr => writeln!(std::io::stderr().lock(), "{text}"),
        };
    }
    fn note(&self, c: &ContainerConfig, message: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{} {message}", c.name);
    }
}

pub fn up(global: &GlobalFlags, project: &mut Project, flags: &ComposeUpFlags) -> Result<ExitCode> {
    project
        .enable(&flags.services)
        .map_err(miette::Report::new)?;
    for w in &project.warnings {
        tracing::warn!("{w}");
    }
    let order: Vec<Service> = start_order(project, &flags.services)?
        .into_iter()
        .cloned()
        .collect();
    let containers = containers_of(global)?;
    let existing = containers
        .of_project(&project.name)
        .map_err(|e| miette!("{e}"))?;
    if let Some(c) = existing.iter().find(|c| c.state.status == Status::Running) {
        return Err(miette!(
            "project {} is already up ({} is running); run kiln compose down first",
            project.name,
            c.config.name
        ));
    }
    // Images: build those missing (all with --build).
    let store = open_store(global)?;
    let to_build: Vec<String> = order
        .iter()
        .filter(|s| s.build.is_some())
        .filter(|s| flags.build || find(&store, &s.image_name(&project.name)).is_err())
        .map(|s| s.name.clone())
        .collect();
    if !to_build.is_empty() {
        let build_flags = ComposeBuildFlags {
            build_args: Vec::new(),
            no_cache: false,
            pull: false,
            push: false,
            load: LoadFlag { load: None },
            quiet: false,
            progress: crate::progress::ProgressMode::Auto,
            jobs: None,
            authfile: crate::flags::AuthFileFlag { authfile: None },
            services: to_build,
        };
        let code = super::compose::build(global, project, &build_flags)?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    // Old containers of the project go (docker compose recreates them).
    for c in &existing {
        remove(&containers, c, true, Duration::from_secs(20))?;
    }
    // The containers, dependencies first.
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut members = Vec::new();
    let mut created: Vec<String> = Vec::new();
    let result = (|| -> Result<()> {
        for s in &order {
            let image_ref = s.image_name(&project.name);
            let found = find(&store, &image_ref).map_err(|e| {
                miette!("service {}: {e} (no build section to make it from, and kiln does not pull for up yet: kiln pull {image_ref})", s.name)
            })?;
            let opts = options_of(project, s, store.root())?;
            let config = container_config(&store, &containers, &image_ref, found.image(), opts)?;
            containers.create(&config).map_err(|e| miette!("{e}"))?;
            created.push(config.id.clone());
            if let kiln_sandbox::Rootfs::Overlay {
                lowerdirs,
                upperdir,
                ..
            } = &config.spec.rootfs
            {
                crate::containers::create_workdir(lowerdirs, upperdir, &config.spec.cwd)?;
            }
            let mut deps = Vec::new();
            for (dep, (condition, required)) in depends_on(s)? {
                deps.push(Dependency {
                    id: ids[&dep].clone(),
                    name: dep.clone(),
                    condition,
                    required,
                });
            }
            ids.insert(s.name.clone(), config.id.clone());
            members.push(Member {
                id: config.id.clone(),
                depends_on: deps,
            });
            eprintln!("Container {} created", config.name);
        }
        Ok(())
    })();
    if let Err(e) = result {
        for id in &created {
            let _ = containers.remove(id);
        }
        return Err(e);
    }
    let group = Group { members };
    if flags.detach {
        kiln_runtime::start_detached(&containers_root(global), &group)
            .map_err(|e| miette!("{e}"))?;
        for s in &order {
            eprintln!("Container {} started", container_name(project, s));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let stop = StopFlag::default();
    let s = stop.clone();
    // Ctrl-C: as docker compose, each container's stop signal (SIGTERM) and
    // its grace period (10 s) before it is killed; a second one kills now.
    kiln_runtime::signals::on_stop(move |sig| {
        if s.stop_gracefully() {
            kiln_runtime::STOP_SIGNAL.store(sig, Ordering::SeqCst);
            eprintln!("Gracefully stopping... (press Ctrl+C again to force)");
        }
    })
    .map_err(|e| miette!("installing signal handlers: {e}"))?;
    let width = order
        .iter()
        .map(|s| container_name(project, s).len())
        .max()
        .unwrap_or(0);
    let mut start_error = None;
    kiln_runtime::supervise(
        &containers,
        &group,
        &Prefixed { width },
        &stop,
        &mut |r| {
            start_error = r.err();
        },
        None,
    )
    .map_err(|e| miette!("{e}"))?;
    match start_error {
        Some(e) => Err(miette!("{e}")),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn containers_root(global: &GlobalFlags) -> std::path::PathBuf {
    global
        .root
        .clone()
        .unwrap_or_else(kiln_oci::store::default_root)
}

pub fn down(global: &GlobalFlags, project: &Project, flags: &ComposeDownFlags) -> Result<ExitCode> {
    let containers = containers_of(global)?;
    let list = containers
        .of_project(&project.name)
        .map_err(|e| miette!("{e}"))?;
    let grace = flags.timeout.map(Duration::from_secs);
    stop_dependents_first(project, &containers, &list, grace)?;
    let timeout = Duration::from_secs(20);
    for c in list.iter().rev() {
        remove(&containers, c, true, timeout)?;
        eprintln!("Container {} removed", c.config.name);
    }
    if flags.volumes {
        let root = containers_root(global);
        for (name, _) in project
            .model
            .get("volumes")
            .and_then(Node::as_map)
            .unwrap_or_default()
        {
            let dir = root
                .join("volumes")
                .join(format!("{}_{}", project.name, name.name));
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| miette!("removing {}: {e}", dir.display()))?;
                eprintln!("Volume {}_{} removed", project.name, name.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Stops the running containers of `list` as docker compose does: each with
/// its stop signal and `grace` (None: its stop_grace_period) before it is
/// killed, a service only once the services that depend on it have
/// stopped, the others at the same time.
fn stop_dependents_first(
    project: &Project,
    containers: &Containers,
    list: &[Listed],
    grace: Option<Duration>,
) -> Result<()> {
    // service → the services it depends on (of this file; others: none).
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in project.services.iter().chain(&project.disabled) {
        let names = depends_on(s)?.into_iter().map(|(d, _)| d).collect();
        deps.insert(s.name.clone(), names);
    }
    let service = |c: &Listed| c.config.service.clone().unwrap_or_default();
    let mut running: Vec<&Listed> = list
        .iter()
        .filter(|c| c.state.status == Status::Running)
        .collect();
    while !running.is_empty() {
        // Those no running container depends on.
        let (now, later): (Vec<&Listed>, Vec<&Listed>) = running.iter().partition(|c| {
            !running.iter().any(|d| {
                deps.get(&service(d))
                    .is_some_and(|ds| ds.contains(&service(c)))
            })
        });
        // A cycle (not possible from up, which refuses them): all at once.
        let (now, later) = if now.is_empty() {
            (later, Vec::new())
        } else {
            (now, later)
        };
        let results: Vec<(String, kiln_runtime::Result<()>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = now
                .iter()
                .map(|c| {
                    let id = c.config.id.clone();
                    let name = c.config.name.clone();
                    scope
                        .spawn(move || (name, kiln_runtime::stop_container(containers, &id, grace)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a stopping thread panicked"))
                .collect()
        });
        for (name, r) in results {
            r.map_err(|e| miette!("{e}"))?;
            eprintln!("Container {name} stopped");
        }
        running = later;
    }
    Ok(())
}

pub fn ps(global: &GlobalFlags, project: &Project, flags: &ComposePsFlags) -> Result<ExitCode> {
    let containers = containers_of(global)?;
    let list: Vec<Listed> = containers
        .of_project(&project.name)
        .map_err(|e| miette!("{e}"))?
        .into_iter()
        .filter(|c| flags.all || c.state.status == Status::Running)
        .collect();
    if flags.quiet {
        for c in &list {
            println!("{}", c.config.id);
        }
    } else {
        print_table(&list, false);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logs(global: &GlobalFlags, project: &Project, flags: &ComposeLogsFlags) -> Result<ExitCode> {
    let containers = containers_of(global)?;
    let list: Vec<Listed> = containers
        .of_project(&project.name)
        .map_err(|e| miette!("{e}"))?
        .into_iter()
        .filter(|c| {
            flags.services.is_empty()
                || c.config
                    .service
                    .as_ref()
                    .is_some_and(|s| flags.services.contains(s))
        })
        .collect();
    let width = list.iter().map(|c| c.config.name.len()).max().unwrap_or(0);
    let prefix = |c: &Listed| format!("{:<width$} | ", c.config.name);
    let mut offsets: Vec<u64> = list
        .iter()
        .map(|c| print_log(&containers.log_path(&c.config.id), 0, &prefix(c)))
        .collect();
    if flags.follow {
        loop {
            let running = list.iter().any(|c| {
                containers
                    .state(&c.config.id)
                    .is_ok_and(|s| s.status == Status::Running)
            });
            std::thread::sleep(Duration::from_millis(100));
            for (c, off) in list.iter().zip(offsets.iter_mut()) {
                *off = print_log(&containers.log_path(&c.config.id), *off, &prefix(c));
            }
            if !running {
                break;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_as_a_shell_would() {
        assert_eq!(
            split_words(r#"sh -c 'echo "a b"' x\ y "q\"t""#).unwrap(),
            vec!["sh", "-c", "echo \"a b\"", "x y", "q\"t"]
        );
        assert!(split_words("'open").is_err());
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn compose_durations() {
        let d = |s: &str| duration_ms(&Node::str(s), "x");
        assert_eq!(d("1m30s").unwrap(), 90_000);
        assert_eq!(d("500ms").unwrap(), 500);
        assert_eq!(d("2s").unwrap(), 2000);
        assert_eq!(d("1h").unwrap(), 3_600_000);
        assert!(d("soon").is_err());
    }
}
