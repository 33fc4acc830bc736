//! `kiln compose`: a Compose project (`kiln_compose`) and what kiln does with it.
//!
//! - `config` prints the resolved model.
//! - `build [SERVICE...]` builds the services' images in this one process, all at
//!   once on their own threads, through the same executor as `kiln build`, with
//!   one store, one cache and one progress view whose steps carry the service's
//!   name (`[web build 2/5] RUN npm ci`). A `service:NAME` additional context is
//!   that service's image: the stages that use it wait for that build, the rest
//!   of the build does not. Everything is checked (files, Dockerfiles, keys kiln
//!   cannot honour) before anything is built.

use crate::flags::{
    ComposeBuildFlags, ComposeCommand, ComposeConfigFlags, ComposeFlags, GlobalFlags,
};
use crate::local_images::open_store;
use kiln_builder::progress::{Clock, Event, Millis, ProgressSink, Summary};
use kiln_builder::{BuildError, BuildOptions, Entitlements, NamedContext, PendingImage};
use kiln_compose::{
    AdditionalContext, Build, BuildContext, ComposeError, Dockerfile, Project, Service,
};
use kiln_dockerfile::instructions::NetworkMode;
use kiln_dockerfile::stages::{self, Plan, PlanOptions, Platform};
use kiln_dockerfile::Source;
use kiln_oci::image::{write_image, ManifestFormat};
use kiln_oci::layer::Compression;
use kiln_oci::registry::{push, PullPolicy, PushOptions, Reference, RegistryContext};
use kiln_oci::store::{BlobRef, Store};
use kiln_oci::ImageName;
use miette::miette;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

pub fn run(global: &GlobalFlags, flags: ComposeFlags) -> miette::Result<ExitCode> {
    let working_dir =
        std::env::current_dir().map_err(|e| miette!("cannot read the current directory: {e}"))?;
    let options = kiln_compose::Options {
        files: flags.files,
        project_name: flags.project_name,
        project_directory: flags.project_directory,
        profiles: flags.profiles,
        env_files: flags.env_files,
        working_dir,
        environment: std::env::vars().collect(),
    };
    let mut project = Project::load(&options).map_err(miette::Report::new)?;
    match flags.command {
        ComposeCommand::Config(c) => config(&project, &c),
        ComposeCommand::Build(b) => build(global, &mut project, &b),
        ComposeCommand::Up(u) => super::compose_run::up(global, &mut project, &u),
        ComposeCommand::Down(d) => super::compose_run::down(global, &project, &d),
        ComposeCommand::Ps(p) => super::compose_run::ps(global, &project, &p),
        ComposeCommand::Logs(l) => super::compose_run::logs(global, &project, &l),
    }
}

fn config(project: &Project, flags: &ComposeConfigFlags) -> miette::Result<ExitCode> {
    for w in &project.warnings {
        tracing::warn!("{w}");
    }
    if flags.quiet {
        return Ok(ExitCode::SUCCESS);
    }
    if flags.services {
        for s in &project.services {
            println!("{}", s.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", project.to_yaml().map_err(miette::Report::new)?);
    Ok(ExitCode::SUCCESS)
}

/// One service's build, checked and planned.
struct Job {
    service: String,
    /// `image:` (or `<project>-<service>`) first, then `build.tags`.
    names: Vec<ImageName>,
    /// Whether the file named the image (only those are pushed).
    named_image: bool,
    src: Source,
    plan: Plan,
    context_dir: PathBuf,
    dockerfile_path: Option<PathBuf>,
    labels: Vec<(String, String)>,
    named_contexts: BTreeMap<String, NamedContext>,
    /// Context name → the service whose image it is.
    service_contexts: Vec<(String, String)>,
    secrets: BTreeMap<String, Vec<u8>>,
    /// `build.ssh`: the agents of its ids.
    ssh: kiln_builder::ssh::SshAgents,
    network: NetworkMode,
    no_cache: bool,
    pull: PullPolicy,
    extra_hosts: Vec<(String, String)>,
    shm_size: Option<u64>,
    /// `build.cache_from` / `build.cache_to` (`--cache-from` / `--cache-to` values).
    cache_from: Vec<kiln_builder::CacheLocation>,
    cache_to: Vec<kiln_builder::CacheExport>,
    warnings: Vec<String>,
}

pub(super) fn build(
    global: &GlobalFlags,
    project: &mut Project,
    flags: &ComposeBuildFlags,
) -> miette::Result<ExitCode> {
    project
        .enable(&flags.services)
        .map_err(miette::Report::new)?;
    let selected = select(project, &flags.services).map_err(miette::Report::new)?;
    let store = open_store(global)?;
    let registry =
        RegistryContext::load(flags.authfile.authfile.as_deref()).map_err(|e| miette!("{e}"))?;
    let mut jobs = Vec::new();
    for s in &selected {
        jobs.push(prepare(project, s, flags, &store)?);
    }
    let progress = if flags.quiet {
        crate::progress::quiet()
    } else {
        crate::progress::sink_for(flags.progress)
    };
    for w in &project.warnings {
        progress.emit(Event::Warning {
            at_ms: 0,
            message: w.clone(),
        });
    }
    let clock = Clock::start();
    let ids = StepIds::default();
    let slots: HashMap<String, Arc<Slot>> = jobs
        .iter()
        .map(|j| (j.service.clone(), Arc::new(Slot::default())))
        .collect();
    let failures: Mutex<Vec<(String, BuildError)>> = Mutex::new(Vec::new());
    let jobs_limit = flags.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let source_date_epoch = super::build::source_date_epoch()?;
    std::thread::scope(|scope| {
        for (index, job) in jobs.iter_mut().enumerate() {
            for (ctx, dep) in &job.service_contexts {
                job.named_contexts.insert(
                    ctx.clone(),
                    NamedContext::Pending(Arc::new(ServiceImage {
                        service: dep.clone(),
                        dependent: job.service.clone(),
                        slot: slots[dep].clone(),
                    })),
                );
            }
            let job = &*job;
            let slot = slots[&job.service].clone();
            let (store, registry, progress, clock, ids) =
                (&store, &registry, &progress, &clock, &ids);
            let failures = &failures;
            scope.spawn(move || {
                // Dependents never wait for a build that ended without a result.
                let _guard = FailOnDrop(&slot);
                let sink = ServiceProgress {
                    service: &job.service,
                    index,
                    inner: progress.as_ref(),
                    ids,
                    clock: *clock,
                    offset: OnceLock::new(),
                };
                for w in &job.warnings {
                    sink.emit(Event::Warning {
                        at_ms: 0,
                        message: w.clone(),
                    });
                }
                match build_one(job, store, registry, &sink, jobs_limit, source_date_epoch) {
                    Ok(reference) => slot.set(Ok(reference)),
                    Err(e) => {
                        slot.set(Err(format!("service {} failed to build", job.service)));
                        failures
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((job.service.clone(), e));
                    }
                }
            });
        }
    });
    progress.finish();
    let failures = failures
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    if failures.is_empty() {
        if flags.push {
            push_images(&jobs, &store, &registry)?;
        }
        if let Some(engine) = flags.load.load {
            let names: Vec<String> = jobs
                .iter()
                .flat_map(|j| j.names.iter().map(|n| n.to_string()))
                .collect();
            super::load_into::load_into(&store, engine, &names)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // A service that failed only because a service it uses failed is said
    // once, by that service.
    let waited: HashSet<String> = slots.values().flat_map(|s| s.failed_waiters()).collect();
    let (secondary, mut shown): (Vec<_>, Vec<_>) =
        failures.into_iter().partition(|(s, _)| waited.contains(s));
    if shown.is_empty() {
        shown = secondary;
    }
    let mut last = None;
    for (service, e) in shown {
        if let Some(r) = last.take() {
            eprintln!("{r:?}");
        }
        eprintln!("service {service}:");
        last = Some(super::build::report_build_error(e));
    }
    Err(last.unwrap_or_else(|| miette!("the build failed")))
}

/// The services to build: those named (else every enabled one with `build:`),
/// with the services their `service:` contexts name, in file order. A
/// `service:` cycle, or a `service:` naming a service that does not build, is
/// an error.
fn select<'p>(project: &'p Project, names: &[String]) -> Result<Vec<&'p Service>, ComposeError> {
    let mut wanted: Vec<&Service> = if names.is_empty() {
        project
            .services
            .iter()
            .filter(|s| s.build.is_some())
            .collect()
    } else {
        names
            .iter()
            .filter_map(|n| project.services.iter().find(|s| &s.name == n))
            .filter(|s| s.build.is_some())
            .collect()
    };
    // Add what `service:` contexts need, checking for cycles.
    fn visit<'p>(
        project: &'p Project,
        s: &'p Service,
        path: &mut Vec<String>,
        out: &mut Vec<&'p Service>,
    ) -> Result<(), ComposeError> {
        if out.iter().any(|o| o.name == s.name) {
            return Ok(());
        }
        path.push(s.name.clone());
        if let Some(b) = &s.build {
            for (ctx, c) in &b.additional_contexts {
                let AdditionalContext::Service(dep) = &c.value else {
                    continue;
                };
                let key = format!("{}.additional_contexts.{ctx}", b.path);
                if path.contains(dep) {
                    return Err(ComposeError::at(
                        c.at.as_ref(),
                        &key,
                        format!(
                            "service:{dep} makes a cycle: {} -> {dep}",
                            path.join(" -> ")
                        ),
                    ));
                }
                let d = match project.services.iter().find(|x| &x.name == dep) {
                    Some(d) => d,
                    None if project.disabled.iter().any(|x| &x.name == dep) => {
                        return Err(ComposeError::at(
                            c.at.as_ref(),
                            &key,
                            format!("service {dep} is not enabled by the active profiles"),
                        ))
                    }
                    None => {
                        return Err(ComposeError::at(
                            c.at.as_ref(),
                            &key,
                            format!("there is no service {dep}"),
                        ))
                    }
                };
                if d.build.is_none() {
                    return Err(ComposeError::at(
                        c.at.as_ref(),
                        &key,
                        format!("service {dep} has no build section to make an image from"),
                    ));
                }
                visit(project, d, path, out)?;
            }
        }
        path.pop();
        out.push(s);
        Ok(())
    }
    let mut out = Vec::new();
    for s in std::mem::take(&mut wanted) {
        visit(project, s, &mut Vec::new(), &mut out)?;
    }
    // File order.
    out.sort_by_key(|s| project.services.iter().position(|x| x.name == s.name));
    Ok(out)
}

/// Everything about one service's build that can be checked before building:
/// the Dockerfile parsed and planned, keys kiln cannot honour refused (located
/// in the Compose file), secrets read, named contexts resolved.
fn prepare(
    project: &Project,
    service: &Service,
    flags: &ComposeBuildFlags,
    store: &Store,
) -> miette::Result<Job> {
    let b: &Build = service
        .build
        .as_ref()
        .ok_or_else(|| miette!("service {} has no build section", service.name))?;
    let report = miette::Report::new;
    let host = Platform::host();
    let is_host = |p: &str| Platform::parse(p).is_ok_and(|p| p == host);
    if let Some((p, at)) = &service.platform {
        if !is_host(p) {
            return Err(report(ComposeError::at(
                at.as_ref(),
                &format!("services.{}.platform", service.name),
                format!("kiln builds only for this machine's platform ({host}), not {p}"),
            )));
        }
    }
    for p in &b.platforms {
        if !is_host(&p.value) {
            return Err(report(ComposeError::at(
                p.at.as_ref(),
                &format!("{}.platforms", b.path),
                format!(
                    "kiln builds only for this machine's platform ({host}), not {}",
                    p.value
                ),
            )));
        }
    }
    // `ssh:` entries are `kiln build --ssh` values (`default`, `ID=PATH[,PATH]`).
    let mut ssh = kiln_builder::ssh::SshAgents::new();
    for entry in &b.ssh {
        let auth_sock = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from);
        let agent = kiln_builder::ssh::SshAgent::from_flag(&entry.value, auth_sock.as_deref())
            .and_then(|a| {
                if ssh.contains_key(a.id()) {
                    Err(format!("--ssh {}: the id is given twice", a.id()))
                } else {
                    Ok(a)
                }
            })
            .map_err(|e| {
                report(ComposeError::at(
                    entry.at.as_ref(),
                    &format!("{}.ssh", b.path),
                    e,
                ))
            })?;
        ssh.insert(agent.id().to_string(), std::sync::Arc::new(agent));
    }
    let context_dir = match &b.context {
        BuildContext::Dir(d) => d.clone(),
        BuildContext::Remote(url) => {
            return Err(report(b.error(
                "context",
                format!("kiln builds from a local directory only, not {url}"),
            )))
        }
    };
    if !context_dir.is_dir() {
        return Err(report(b.error(
            "context",
            format!("{} is not a directory", context_dir.display()),
        )));
    }
    let network = match b.network.as_deref() {
        None | Some("default") => NetworkMode::Default,
        Some("host") => NetworkMode::Host,
        Some("none") => NetworkMode::None,
        Some(other) => {
            return Err(report(b.error(
                "network",
                format!("kiln builds use the network default, host or none, not {other:?}"),
            )))
        }
    };
    let mut warnings = Vec::new();
    let mut note = |key: &str, what: &str| {
        warnings.push(format!(
            "{}: {}.{key}: {what}",
            b.location(key).map(|l| l.to_string()).unwrap_or_default(),
            b.path
        ))
    };
    // A `type=local` directory is relative to the project directory, as
    // every path of the file is.
    let in_project = |loc: &mut kiln_builder::CacheLocation| {
        if let kiln_builder::CacheLocation::Local { dir, .. } = loc {
            *dir = project.directory.join(&*dir);
        }
    };
    let cache_from = b
        .cache_from
        .iter()
        .map(|v| {
            let mut loc =
                kiln_builder::parse_cache_from(v).map_err(|e| report(b.error("cache_from", e)))?;
            in_project(&mut loc);
            Ok(loc)
        })
        .collect::<miette::Result<Vec<_>>>()?;
    let cache_to = b
        .cache_to
        .iter()
        .map(|v| {
            let mut spec =
                kiln_builder::parse_cache_to(v).map_err(|e| report(b.error("cache_to", e)))?;
            in_project(&mut spec.location);
            Ok(spec)
        })
        .collect::<miette::Result<Vec<_>>>()?;
    if b.ulimits {
        note("ulimits", "ignored: kiln does not set limits on RUN steps");
    }
    if b.isolation.as_deref().is_some_and(|i| i != "default") {
        note(
            "isolation",
            "ignored: kiln has one isolation, Linux namespaces",
        );
    }
    for (key, v) in [("provenance", &b.provenance), ("sbom", &b.sbom)] {
        if v.as_deref().is_some_and(|v| v != "false") {
            note(key, "ignored: kiln compose builds a service image for the host with no attestations (kiln build --sbom, --provenance attach them)");
        }
    }

    // The Dockerfile.
    let (src, dockerfile_path) = match &b.dockerfile {
        Dockerfile::Inline(text) => (Source::new("dockerfile_inline", text.clone()), None),
        Dockerfile::File(_) => {
            let path = b
                .dockerfile_path()
                .unwrap_or_else(|| context_dir.join("Dockerfile"));
            let text = std::fs::read_to_string(&path).map_err(|e| {
                report(b.error(
                    "dockerfile",
                    format!(
                        "cannot read {}: {}",
                        path.display(),
                        e.to_string().to_lowercase()
                    ),
                ))
            })?;
            (Source::new(shown_path(&path), text), Some(path))
        }
    };
    let df = kiln_dockerfile::parse(&src).map_err(miette::Report::new)?;
    let mut build_args: BTreeMap<String, String> = b.args.iter().cloned().collect();
    build_args.extend(super::build::build_args(&flags.build_args, |k| {
        std::env::var(k).ok()
    })?);
    let opts = PlanOptions {
        build_args,
        target: b.target.clone(),
        target_platform: None,
    };
    let plan = stages::plan(&df, &src, &opts).map_err(miette::Report::new)?;
    let mut allow = b.entitlements.clone();
    if b.privileged {
        allow.push("security.insecure".into());
    }
    let granted =
        Entitlements::from_allow(&allow).map_err(|e| report(b.error("entitlements", e)))?;
    kiln_builder::check_entitlements(&plan, &granted, &src).map_err(miette::Report::new)?;
    for w in &plan.warnings {
        warnings.push(if w.line > 0 {
            format!("{}:{}: {} [{}]", src.name, w.line, w.message, w.rule)
        } else {
            format!("{} [{}]", w.message, w.rule)
        });
    }

    // Names.
    let image = service.image_name(&project.name);
    let mut names = Vec::new();
    for (n, key) in std::iter::once((&image, "image")).chain(b.tags.iter().map(|t| (t, "tags"))) {
        let parsed: ImageName = n.parse().map_err(|e| {
            let msg = format!("invalid image name {n:?}: {e}");
            if key == "image" && service.image.is_none() {
                miette!("service {}: {msg}", service.name)
            } else if key == "image" {
                report(ComposeError::at(
                    service.node.get("image").and_then(|i| i.at.as_ref()),
                    &format!("services.{}.image", service.name),
                    msg,
                ))
            } else {
                report(b.error("tags", msg))
            }
        })?;
        names.push(parsed);
    }

    // Additional contexts.
    let mut plain = Vec::new();
    let mut service_contexts = Vec::new();
    for (name, c) in &b.additional_contexts {
        match &c.value {
            AdditionalContext::Dir(d) => plain.push(format!("{name}={}", d.display())),
            AdditionalContext::Image(r) => plain.push(format!("{name}=docker-image://{r}")),
            AdditionalContext::OciLayout(r) => plain.push(format!("{name}=oci-layout://{r}")),
            AdditionalContext::Service(s) => service_contexts.push((name.clone(), s.clone())),
            AdditionalContext::Other(v) => {
                return Err(report(ComposeError::at(
                    c.at.as_ref(),
                    &format!("{}.additional_contexts.{name}", b.path),
                    format!("kiln takes a directory, docker-image://, oci-layout:// or service: here, not {v}"),
                )))
            }
        }
    }
    let named_contexts = super::build::named_contexts(store, &plain)?;

    // Secrets, from the top-level definitions.
    let mut secrets = BTreeMap::new();
    for s in &b.secrets {
        let key = format!("{}.secrets", b.path);
        let def = project
            .model
            .get("secrets")
            .and_then(|d| d.get(&s.source))
            .ok_or_else(|| {
                report(ComposeError::at(
                    s.at.as_ref(),
                    &key,
                    format!(
                        "secret {:?} is not defined under the top-level secrets:",
                        s.source
                    ),
                ))
            })?;
        let content = if let Some(f) = def.get("file").and_then(|f| f.scalar_text()) {
            std::fs::read(&f).map_err(|e| {
                report(ComposeError::at(
                    def.get("file").and_then(|n| n.at.as_ref()),
                    &format!("secrets.{}.file", s.source),
                    format!("cannot read {f}: {}", e.to_string().to_lowercase()),
                ))
            })?
        } else if let Some(v) = def.get("environment").and_then(|v| v.scalar_text()) {
            project
                .environment
                .get(&v)
                .cloned()
                .or_else(|| std::env::var(&v).ok())
                .ok_or_else(|| {
                    report(ComposeError::at(
                        def.get("environment").and_then(|n| n.at.as_ref()),
                        &format!("secrets.{}.environment", s.source),
                        format!("the environment variable {v} is not set"),
                    ))
                })?
                .into_bytes()
        } else {
            return Err(report(ComposeError::at(
                def.at.as_ref(),
                &format!("secrets.{}", s.source),
                "kiln reads build secrets from file: or environment: only",
            )));
        };
        secrets.insert(s.target.clone(), content);
    }

    Ok(Job {
        service: service.name.clone(),
        names,
        named_image: service.image.is_some(),
        src,
        plan,
        context_dir,
        dockerfile_path,
        labels: b.labels.clone(),
        named_contexts,
        service_contexts,
        secrets,
        ssh,
        network,
        no_cache: b.no_cache || flags.no_cache,
        pull: if b.pull || flags.pull {
            PullPolicy::Always
        } else {
            PullPolicy::Missing
        },
        extra_hosts: b.extra_hosts.clone(),
        shm_size: b.shm_size,
        cache_from,
        cache_to,
        warnings,
    })
}

/// A path as the user would name it: relative to the current directory when
/// below it.
fn shown_path(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|d| p.strip_prefix(d).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| p.to_path_buf())
        .display()
        .to_string()
}

/// Builds one service and stores its image under its names; returns the
/// reference the image has in the store.
fn build_one(
    job: &Job,
    store: &Store,
    registry: &RegistryContext,
    progress: &ServiceProgress<'_>,
    jobs: usize,
    source_date_epoch: Option<i64>,
) -> Result<String, BuildError> {
    let clock = Clock::start();
    let context = kiln_builder::BuildContext::load(
        &job.context_dir,
        job.dockerfile_path.as_deref(),
        Some(store.root()),
    )
    .map_err(|source| BuildError::Context {
        dir: job.context_dir.clone(),
        source,
    })?;
    let opts = BuildOptions {
        context,
        named_contexts: job.named_contexts.clone(),
        no_cache: job.no_cache,
        no_cache_stages: Vec::new(),
        jobs,
        pull: job.pull,
        registry: registry.clone(),
        secrets: job.secrets.clone(),
        ssh: job.ssh.clone(),
        default_network: job.network,
        extra_hosts: job.extra_hosts.clone(),
        shm_size: job.shm_size,
        ulimits: Vec::new(),
        source_date_epoch,
        isolation: kiln_builder::Isolation::Auto,
        cache_from: job.cache_from.clone(),
        push_only_to: None,
        explain_cache: false,
        precompress: None,
        cancel: None,
    };
    let mut out = kiln_builder::build(&job.plan, &job.src, &opts, store, progress)?;
    let exporting = clock.now_ms();
    if !job.labels.is_empty() {
        let cfg = out.config.config.get_or_insert_with(Default::default);
        cfg.labels.extend(job.labels.iter().cloned());
    }
    let layers: Vec<BlobRef> = out.layers.iter().map(|l| l.blob.clone()).collect();
    let manifest =
        write_image(store, &out.config, &layers, ManifestFormat::Oci).map_err(|source| {
            BuildError::Output {
                action: "storing the image".into(),
                source,
            }
        })?;
    // What `kiln analyze` reads about the build's stages.
    store
        .put_build_record(&manifest.digest, &out.record)
        .map_err(|source| BuildError::Output {
            action: "storing the build record".into(),
            source,
        })?;
    for n in &job.names {
        store
            .tag(n, manifest.clone())
            .map_err(|source| BuildError::Output {
                action: format!("tagging {n}"),
                source,
            })?;
    }
    progress.emit(Event::Phase {
        at_ms: clock.now_ms(),
        name: "exporting to image".into(),
        duration_ms: Some(clock.now_ms() - exporting),
    });
    for spec in &job.cache_to {
        let started = clock.now_ms();
        let mut warn = |message: String| {
            progress.emit(Event::Warning {
                at_ms: clock.now_ms(),
                message,
            })
        };
        let report = kiln_builder::export_cache(
            store,
            spec,
            &out.cache,
            out.remote_cache.as_deref(),
            registry,
            &mut warn,
        );
        match report {
            Ok(r) => progress.emit(Event::Phase {
                at_ms: clock.now_ms(),
                name: format!(
                    "exporting cache to {} ({} records, {} in the cache)",
                    spec.location, r.exported, r.total
                ),
                duration_ms: Some(clock.now_ms() - started),
            }),
            Err(e) if spec.ignore_error => warn(format!("cache_to: {e}")),
            Err(e) => return Err(BuildError::RemoteCache(format!("cache_to: {e}"))),
        }
    }
    let image_id = kiln_oci::digest::Digest::of(&out.config.to_bytes());
    let size =
        out.layers.iter().map(|l| l.blob.size).sum::<u64>() + out.config.to_bytes().len() as u64;
    progress.emit(Event::BuildFinished {
        at_ms: clock.now_ms(),
        summary: Summary {
            image_id: Some(image_id.to_string()),
            image_size: Some(size),
            steps_run: out.steps_run,
            steps_cached: out.steps_cached,
            duration_ms: clock.now_ms(),
            tags: job.names.iter().map(|n| n.to_string()).collect(),
        },
    });
    Ok(job.names[0].to_string())
}

/// `--push`: every name of each service whose image the file names (docker
/// compose pushes no `<project>-<service>` image).
fn push_images(jobs: &[Job], store: &Store, registry: &RegistryContext) -> miette::Result<()> {
    for job in jobs {
        if !job.named_image {
            tracing::warn!("service {}: not pushed, it has no image: name", job.service);
            continue;
        }
        let stored = store.resolve(&job.names[0]).map_err(|e| miette!("{e}"))?;
        let stored = crate::local_images::with_blobs(store, &stored, Compression::default())?;
        for n in &job.names {
            let dest = Reference::parse(&n.to_string()).map_err(|e| miette!("{e}"))?;
            push(store, &stored, &dest, &PushOptions::default(), registry)
                .map_err(|e| miette!("push {e}"))?;
            eprintln!("pushed {dest}");
        }
    }
    Ok(())
}

/// Step numbers unique across the builds of one view: (build, step) → number,
/// given in the order steps first appear.
#[derive(Default)]
pub(crate) struct StepIds(Mutex<HashMap<(usize, usize), usize>>);

impl StepIds {
    fn get(&self, build: usize, step: usize) -> usize {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let next = map.len();
        *map.entry((build, step)).or_insert(next)
    }
}

/// One service's events into the shared view: step numbers made unique, times
/// moved onto the shared clock, stage and step names prefixed with the service
/// (`[web build 2/5] RUN npm ci`, as docker compose shows them), warnings and
/// phases naming it. `kiln build --platform a,b` names each platform's build
/// the same way (`[linux/arm64 build 2/5] RUN go build`, as BuildKit does).
pub(crate) struct ServiceProgress<'a> {
    service: &'a str,
    index: usize,
    inner: &'a dyn ProgressSink,
    ids: &'a StepIds,
    clock: Clock,
    /// Shared-clock time of this build's time 0, set by its first event.
    offset: OnceLock<Millis>,
}

impl<'a> ServiceProgress<'a> {
    pub(crate) fn new(
        service: &'a str,
        index: usize,
        inner: &'a dyn ProgressSink,
        ids: &'a StepIds,
        clock: Clock,
    ) -> Self {
        ServiceProgress {
            service,
            index,
            inner,
            ids,
            clock,
            offset: OnceLock::new(),
        }
    }

    fn name(&self, name: &str) -> String {
        match name.strip_prefix('[') {
            Some(rest) => format!("[{} {rest}", self.service),
            None => format!("[{}] {name}", self.service),
        }
    }
}

impl ProgressSink for ServiceProgress<'_> {
    fn emit(&self, event: Event) {
        let offset = *self
            .offset
            .get_or_init(|| self.clock.now_ms().saturating_sub(event.at_ms()));
        let at = |at_ms: Millis| at_ms + offset;
        let svc = self.service;
        let event = match event {
            Event::BuildStarted {
                at_ms,
                steps,
                stages,
            } => Event::BuildStarted {
                at_ms: at(at_ms),
                steps,
                stages: stages.iter().map(|s| format!("{svc} {s}")).collect(),
            },
            Event::StepStarted {
                at_ms,
                step,
                stage,
                name,
            } => Event::StepStarted {
                at_ms: at(at_ms),
                step: self.ids.get(self.index, step),
                stage: format!("{svc} {stage}"),
                name: self.name(&name),
            },
            Event::StepCached {
                at_ms,
                step,
                stage,
                name,
            } => Event::StepCached {
                at_ms: at(at_ms),
                step: self.ids.get(self.index, step),
                stage: format!("{svc} {stage}"),
                name: self.name(&name),
            },
            Event::CacheMiss {
                at_ms,
                step,
                name,
                reason,
            } => Event::CacheMiss {
                at_ms: at(at_ms),
                step: self.ids.get(self.index, step),
                name: self.name(&name),
                reason,
            },
            Event::StepOutput {
                at_ms,
                step,
                stream,
                line,
            } => Event::StepOutput {
                at_ms: at(at_ms),
                step: self.ids.get(self.index, step),
                stream,
                line,
            },
            Event::StepFinished {
                at_ms,
                step,
                duration_ms,
            } => Event::StepFinished {
                at_ms: at(at_ms),
                step: self.ids.get(self.index, step),
                duration_ms,
            },
            Event::StepFailed {
                at_ms,
                step,
                duration_ms,
                message,
            } => Event::StepFailed {
                at_ms: at(at_ms),
                step: self.ids.get(self.index, step),
                duration_ms,
                message,
            },
            Event::StepCancelled {
                at_ms,
                step,
                duration_ms,
            } => Event::StepCancelled {
                at_ms: at(at_ms),
                step: self.ids.get(self.index, step),
                duration_ms,
            },
            Event::Warning { at_ms, message } => Event::Warning {
                at_ms: at(at_ms),
                message: format!("{svc}: {message}"),
            },
            Event::Phase {
                at_ms,
                name,
                duration_ms,
            } => Event::Phase {
                at_ms: at(at_ms),
                name: format!("[{svc}] {name}"),
                duration_ms,
            },
            Event::BuildFinished { at_ms, summary } => Event::BuildFinished {
                at_ms: at(at_ms),
                summary,
            },
        };
        self.inner.emit(event);
    }
}

/// Where a service's build leaves its image reference (or why there is none),
/// for the builds that use it as a `service:` context.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

#[derive(Default)]
struct SlotState {
    result: Option<Result<String, String>>,
    /// Services that waited here and got an error.
    failed_waiters: Vec<String>,
}

impl Slot {
    /// Sets the result (the first one set stays).
    fn set(&self, result: Result<String, String>) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.result.is_none() {
            s.result = Some(result);
        }
        self.ready.notify_all();
    }

    fn wait(&self, waiter: &str) -> Result<String, String> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(r) = s.result.clone() {
                if r.is_err() {
                    s.failed_waiters.push(waiter.to_string());
                }
                return r;
            }
            s = self.ready.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn failed_waiters(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failed_waiters
            .clone()
    }
}

/// Sets a slot to an error if its build ends without setting it (a panic).
struct FailOnDrop<'a>(&'a Slot);

impl Drop for FailOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(Err("the build stopped".into()));
    }
}

/// A `service:NAME` context: the image that service's build stores.
struct ServiceImage {
    service: String,
    dependent: String,
    slot: Arc<Slot>,
}

impl std::fmt::Debug for ServiceImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "service:{}", self.service)
    }
}

impl PendingImage for ServiceImage {
    fn wait(&self) -> Result<String, String> {
        self.slot.wait(&self.dependent)
    }
}
