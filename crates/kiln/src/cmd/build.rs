//! `kiln build`: read the Dockerfile, parse it, plan the stages, check the
//! entitlements its RUN steps need against `--allow`; `--dry-run` prints the plan,
//! otherwise the executor runs it and the image is stored, tagged, exported and pushed.

use crate::flags::{BuildFlags, BuildIsolation, BuildNetwork, CallMethod, GlobalFlags, PullFlag};
use crate::local_images::open_store;
use kiln_builder::progress::{Clock, Event, ProgressSink, Summary};
use kiln_builder::{BuildContext, BuildError, BuildOptions, Entitlements, NamedContext};
use kiln_dockerfile::instructions::{Kind, NetworkMode};
use kiln_dockerfile::stages::{self, Base, Input, Plan, PlanOptions, Platform, Stage};
use kiln_dockerfile::Source;
use kiln_oci::export::{
    complete_image, complete_image_except, Exporter, NamedImage, OutputKind, OutputSpec,
    StatementFiles,
};
use kiln_oci::image::{write_image_with, ManifestFormat};
use kiln_oci::layer::Compression;
use kiln_oci::load::import_oci_dir;
use kiln_oci::registry::{push, PullPolicy, PushOptions, Reference, RegistryContext};
use kiln_oci::store::{BlobRef, Store};
use kiln_oci::ImageName;
use miette::{miette, IntoDiagnostic, WrapErr};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::process::ExitCode;

pub fn run(global: &GlobalFlags, mut flags: BuildFlags) -> miette::Result<ExitCode> {
    if flags.check || flags.buildx.call == CallMethod::Check {
        return super::check::for_build(global, &flags);
    }
    if let Some(parent) = &flags.buildx.cgroup_parent {
        return Err(miette!(
            "--cgroup-parent {parent}: not supported: kiln has no daemon and makes no cgroups, so RUN steps run in kiln's own cgroup; start kiln in the cgroup they belong in (e.g. systemd-run --scope --slice=NAME kiln build …)"
        ));
    }
    let (context_holder, stdin_dockerfile) = if flags.dry_run {
        (None, None)
    } else {
        materialize_context(&flags)?
    };
    if let Some(dir) = &context_holder {
        flags.context = dir.path().to_path_buf();
    }
    let src = match stdin_dockerfile {
        Some(text) => Source::new("Dockerfile", text),
        None => read_dockerfile(&flags)?,
    };
    let df = kiln_dockerfile::parse(&src).map_err(miette::Report::new)?;
    // One plan per target platform (`--platform a,b`), each with its own
    // TARGETPLATFORM/TARGETOS/TARGETARCH/TARGETVARIANT.
    let platforms = match flags.platform.as_deref() {
        Some(p) => parse_platforms(p)?.into_iter().map(Some).collect(),
        None => vec![None],
    };
    let build_args = build_args(&flags.build_args, |k| std::env::var(k).ok())?;
    let entitlements =
        Entitlements::from_allow(&flags.allow).map_err(|e| miette!("--allow: {e}"))?;
    let mut plans = Vec::new();
    for target_platform in platforms {
        let opts = PlanOptions {
            build_args: build_args.clone(),
            target: flags.target.clone(),
            target_platform,
        };
        plans.push(stages::plan(&df, &src, &opts).map_err(miette::Report::new)?);
    }
    let plan = &plans[0];
    match flags.buildx.call {
        CallMethod::Outline => {
            print!("{}", super::call::outline(&df, plan));
            return Ok(ExitCode::SUCCESS);
        }
        CallMethod::Targets => {
            print!("{}", super::call::targets(&df));
            return Ok(ExitCode::SUCCESS);
        }
        CallMethod::Build | CallMethod::Check => {}
    }
    for plan in &plans {
        kiln_builder::check_entitlements(plan, &entitlements, &src).map_err(miette::Report::new)?;
    }
    let warnings: Vec<String> = plan
        .warnings
        .iter()
        .map(|w| {
            if w.line > 0 {
                format!("{}:{}: {} [{}]", src.name, w.line, w.message, w.rule)
            } else {
                format!("{} [{}]", w.message, w.rule)
            }
        })
        .collect();
    if flags.dry_run {
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        let rendered: Vec<String> = plans.iter().map(render_plan).collect();
        print!("{}", rendered.join("\n"));
        return Ok(ExitCode::SUCCESS);
    }
    execute(global, &flags, &src, &plans, warnings)
}

/// Runs the plan, stores the image, then tags, exports and pushes it.
fn execute(
    global: &GlobalFlags,
    flags: &BuildFlags,
    src: &Source,
    plans: &[Plan],
    warnings: Vec<String>,
) -> miette::Result<ExitCode> {
    let gates = crate::analysis::Gates::from_flags(&flags.analyze_gates)?;
    if !flags.analyze && !gates.is_empty() {
        return Err(miette!(
            "--fail-on, --max-size and --min-efficiency need --analyze"
        ));
    }
    let store = open_store(global)?;
    let context_dir = &flags.context;
    let dockerfile_path = flags
        .file
        .as_ref()
        .filter(|f| f.as_os_str() != "-")
        .cloned()
        .unwrap_or_else(|| context_dir.join("Dockerfile"));
    let context = BuildContext::load(context_dir, Some(&dockerfile_path), Some(store.root()))
        .map_err(|e| miette!("build context {}: {e}", context_dir.display()))?;
    let registry =
        RegistryContext::load(flags.authfile.authfile.as_deref()).map_err(|e| miette!("{e}"))?;
    let names: Vec<ImageName> = flags
        .tags
        .iter()
        .map(|t| t.parse().map_err(|e| miette!("invalid tag {t:?}: {e}")))
        .collect::<miette::Result<_>>()?;
    let outputs: Vec<OutputSpec> = flags
        .outputs
        .iter()
        .map(|o| o.parse().map_err(|e| miette!("{e}")))
        .collect::<miette::Result<_>>()?;
    let (cache_from, cache_to) = cache_settings(flags)?;
    let sandbox = SandboxSettings::from_flags(flags)?;
    let attest = super::attest::requested(&flags.buildx)?;
    // Several platforms or attestations: an image index is written.
    let indexed = plans.len() > 1 || attest.any();
    let index_annotations = annotations_of(
        &flags.buildx.annotations,
        AnnotationKind::Index,
        None,
        indexed,
    )?;
    let index_descriptor = annotations_of(
        &flags.buildx.annotations,
        AnnotationKind::IndexDescriptor,
        None,
        indexed,
    )?;
    if flags.push && names.is_empty() {
        return Err(miette!("--push needs at least one -t name to push to"));
    }
    if plans.len() > 1 || attest.any() {
        // BuildKit's docker exporter refuses an index, and `--load` is one;
        // attestations make an index of even one platform's image.
        if flags.load.load.is_some() || outputs.iter().any(|o| o.kind == OutputKind::Docker) {
            let why = if plans.len() > 1 {
                format!("building for {} platforms", plans.len())
            } else {
                "attestations (--sbom, --provenance, --attest) make an image index".to_string()
            };
            return Err(miette!(
                "docker exporter does not currently support exporting manifest lists ({why}; use -o type=oci or --push)"
            ));
        }
    }
    if plans.len() > 1 && outputs.iter().any(|o| o.kind == OutputKind::Tar) {
        return Err(miette!(
            "-o type=tar writes one platform's filesystem; with several platforms use -o type=local (a directory per platform) or type=oci"
        ));
    }
    if flags.load.load.is_some() && names.is_empty() {
        return Err(miette!(
            "--load needs at least one -t name to load the image as"
        ));
    }
    let opts = BuildOptions {
        context,
        named_contexts: named_contexts(&store, &flags.build_contexts)?,
        no_cache: flags.no_cache,
        no_cache_stages: flags.no_cache_filter.clone(),
        jobs: flags.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
        pull: match flags.pull {
            PullFlag::Missing => PullPolicy::Missing,
            PullFlag::Always => PullPolicy::Always,
            PullFlag::Never => PullPolicy::Never,
        },
        registry,
        secrets: secrets(&flags.secrets)?,
        ssh: kiln_builder::ssh::agents_from_flags(
            &flags.buildx.ssh,
            std::env::var_os("SSH_AUTH_SOCK")
                .map(std::path::PathBuf::from)
                .as_deref(),
        )
        .map_err(|e| miette!("{e}"))?,
        default_network: match flags.network {
            BuildNetwork::None => NetworkMode::None,
            BuildNetwork::Host => NetworkMode::Host,
            BuildNetwork::Default => NetworkMode::Default,
        },
        extra_hosts: sandbox.extra_hosts,
        shm_size: sandbox.shm_size,
        ulimits: sandbox.ulimits,
        source_date_epoch: source_date_epoch()?,
        isolation: match flags.isolation {
            BuildIsolation::Auto => kiln_builder::Isolation::Auto,
            BuildIsolation::Namespaces => kiln_builder::Isolation::Namespaces,
            BuildIsolation::Chroot => kiln_builder::Isolation::Chroot,
        },
        cache_from,
        // Only pushes read the image's layers: those a registry cache holds
        // in the push's registry are mounted there, not fetched (unless the
        // SBOM reads them).
        push_only_to: (flags.push
            && outputs.is_empty()
            && flags.load.load.is_none()
            && !attest.sbom)
            .then(|| {
                names
                    .iter()
                    .filter_map(|n| Reference::parse(&n.to_string()).ok())
                    .map(|r| r.registry)
                    .collect()
            }),
        explain_cache: flags.explain_cache
            || (!flags.quiet && crate::progress::is_plain(flags.progress)),
        // The blobs a push and a cache export need are written while the
        // build goes on, not after it.
        precompress: (flags.push || !cache_to.is_empty()).then(|| kiln_builder::Precompress {
            compression: Compression::default(),
            all_stages: cache_to
                .iter()
                .any(|c| c.mode == kiln_builder::CacheMode::Max),
        }),
        // One platform's failure stops the other platforms' builds.
        cancel: (plans.len() > 1).then(Default::default),
    };
    let progress = if flags.quiet {
        crate::progress::quiet()
    } else {
        crate::progress::sink_for(flags.progress)
    };
    for message in warnings {
        progress.emit(Event::Warning { at_ms: 0, message });
    }
    let clock = Clock::start();
    let started_unix = now_unix();
    let outs = match super::build_platforms::build_all(
        plans,
        src,
        &opts,
        &store,
        progress.as_ref(),
        &clock,
    ) {
        Ok(outs) => outs,
        Err(e) => {
            progress.finish();
            return Err(report_build_error(e));
        }
    };
    let exporting = clock.now_ms();
    // With `push_only_to`, layers a registry cache there holds were left there.
    let in_push_registry = |d: &kiln_oci::digest::Digest| {
        opts.push_only_to.as_ref().is_some_and(|regs| {
            regs.iter()
                .all(|r| !kiln_oci::registry::sources::known(&store, r, d).is_empty())
        })
    };
    let mut images = Vec::new();
    for (plan, mut out) in plans.iter().zip(outs) {
        if !flags.labels.is_empty() {
            let cc = out.config.config.get_or_insert_with(Default::default);
            for l in &flags.labels {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                cc.labels.insert(k.to_string(), v.to_string());
            }
        }
        let layers: Vec<BlobRef> = out.layers.iter().map(|l| l.blob.clone()).collect();
        let annotations = annotations_of(
            &flags.buildx.annotations,
            AnnotationKind::Manifest,
            Some(&plan.target_platform),
            indexed,
        )?;
        let manifest = write_image_with(
            &store,
            &out.config,
            &layers,
            ManifestFormat::Oci,
            &annotations,
            &in_push_registry,
        )
        .map_err(|e| miette!("storing the image: {e}"))?;
        store
            .put_build_record(&manifest.digest, &out.record)
            .map_err(|e| miette!("storing the build record: {e}"))?;
        images.push((plan.target_platform.clone(), manifest, out));
    }
    // The attestations of each platform's image.
    let mut attestations = Vec::new();
    if attest.any() {
        let build_args = build_args(&flags.build_args, |k| std::env::var(k).ok())?;
        // The ids the Dockerfile's RUN steps mount (never a value).
        let df = kiln_dockerfile::parse(src).map_err(miette::Report::new)?;
        let mounted = super::call::mounted_ids(&df, &plans[0]);
        let facts = super::attest::BuildFacts {
            src,
            dockerfile_path: dockerfile_in_context(&dockerfile_path, context_dir, &src.name),
            build_args: &build_args,
            secret_ids: mounted.0,
            ssh_ids: mounted.1,
            target: flags.target.as_deref(),
            labels: &flags.labels,
            no_cache: flags.no_cache,
            platform_flag: flags.platform.as_deref(),
            names: &names,
            started: started_unix,
            finished: now_unix(),
            invocation: kiln_oci::digest::Digest::of(
                format!(
                    "{started_unix}-{}-{:?}",
                    std::process::id(),
                    std::time::Instant::now()
                )
                .as_bytes(),
            )
            .hex()[..25]
                .to_string(),
        };
        for (platform, manifest, out) in &images {
            if let Some(a) =
                super::attest::attest_image(&store, attest, &facts, platform, manifest, out)?
            {
                attestations.push((a, manifest.digest));
            }
        }
    }
    // One platform: its manifest; several, or attestations: an image index
    // naming each platform's manifest (the one thing tagged, exported and
    // pushed), and the attestation manifests after them (as BuildKit).
    let (manifest, image_id) = match images.as_slice() {
        [(_, manifest, out)] if attestations.is_empty() => (
            manifest.clone(),
            kiln_oci::digest::Digest::of(&out.config.to_bytes()),
        ),
        _ => {
            let mut descriptors = Vec::new();
            for (platform, _, _) in &images {
                descriptors.push(annotations_of(
                    &flags.buildx.annotations,
                    AnnotationKind::ManifestDescriptor,
                    Some(platform),
                    true,
                )?);
            }
            let index = super::build_platforms::write_platform_index(
                &store,
                &images,
                &attestations,
                &descriptors,
                &index_annotations,
            )?;
            let id = index.digest;
            (index, id)
        }
    };
    if names.is_empty() {
        store
            .add_untagged(manifest.clone())
            .map_err(|e| miette!("storing the image: {e}"))?;
    }
    for n in &names {
        store
            .tag(n, manifest.clone())
            .map_err(|e| miette!("tagging {n}: {e}"))?;
    }
    progress.emit(Event::Phase {
        at_ms: clock.now_ms(),
        name: "exporting to image".into(),
        duration_ms: Some(clock.now_ms() - exporting),
    });
    // A filesystem output holds each platform's attestations as files.
    let statement_files = |image: &kiln_oci::digest::Digest| -> miette::Result<StatementFiles> {
        let mut statements = Vec::new();
        for (a, _) in attestations.iter().filter(|(_, about)| about == image) {
            statements.extend(
                kiln_oci::attestation::read_statements(&store, a)
                    .map_err(|e| miette!("reading the attestations: {e}"))?,
            );
        }
        Ok(StatementFiles {
            statements,
            mtime: opts.source_date_epoch.unwrap_or(started_unix),
        })
    };
    // The manifest an output or a push made (its layers' blobs written with
    // its compression): what `--metadata-file` reports as the image's digest.
    let mut reported = manifest.clone();
    for o in &outputs {
        let started = clock.now_ms();
        let mut out_names: Vec<Option<ImageName>> = o
            .names
            .iter()
            .map(|n| {
                n.parse()
                    .map(Some)
                    .map_err(|e| miette!("invalid name {n:?}: {e}"))
            })
            .collect::<miette::Result<_>>()?;
        if out_names.is_empty() {
            out_names = names.iter().cloned().map(Some).collect();
        }
        if o.kind == OutputKind::Registry {
            let to: Vec<ImageName> = out_names.into_iter().flatten().collect();
            if to.is_empty() {
                return Err(miette!(
                    "-o type=registry needs a name to push to (name= or -t)"
                ));
            }
            reported = push_to(
                &store,
                &manifest,
                &to,
                o.compression,
                &opts.registry,
                &*progress,
                &clock,
            )?;
            continue;
        }
        if o.kind == OutputKind::Local && images.len() > 1 {
            // A directory per platform (`linux_arm64/`), as BuildKit writes them.
            for (platform, manifest, _) in &images {
                let dir = o.dest.join(super::build_platforms::dir_name(platform));
                kiln_oci::export::LocalExporter::new(&dir)
                    .with_statements(statement_files(&manifest.digest)?)
                    .export(
                        &store,
                        &[NamedImage {
                            name: None,
                            target: manifest.clone(),
                        }],
                    )
                    .map_err(|e| miette!("exporting to {}: {e}", dir.display()))?;
            }
            progress.emit(Event::Phase {
                at_ms: clock.now_ms(),
                name: format!("exporting to {}", o.dest.display()),
                duration_ms: Some(clock.now_ms() - started),
            });
            continue;
        }
        // A filesystem output reads the layers a build made from their
        // snapshots; an archive needs their blobs.
        let mut complete = if matches!(o.kind, OutputKind::Oci | OutputKind::Docker) {
            reported = complete_image(&store, &manifest, o.compression)
                .map_err(|e| miette!("writing the layers of the image: {e}"))?;
            reported.clone()
        } else {
            manifest.clone()
        };
        if o.kind == OutputKind::Oci {
            // `index-descriptor:` annotations: the index's entry in index.json.
            complete.annotations.extend(index_descriptor.clone());
        }
        let statements = match o.kind {
            OutputKind::Local | OutputKind::Tar => statement_files(&images[0].1.digest)?,
            _ => StatementFiles::default(),
        };
        let mut exporter = o.exporter(statements).map_err(|e| miette!("{e}"))?;
        if out_names.is_empty() {
            out_names.push(None);
        }
        let images: Vec<NamedImage> = out_names
            .into_iter()
            .map(|name| NamedImage {
                name,
                target: complete.clone(),
            })
            .collect();
        exporter
            .export(&store, &images)
            .map_err(|e| miette!("exporting to {}: {e}", o.dest.display()))?;
        progress.emit(Event::Phase {
            at_ms: clock.now_ms(),
            name: format!("exporting to {}", o.dest.display()),
            duration_ms: Some(clock.now_ms() - started),
        });
    }
    if flags.push {
        reported = push_to(
            &store,
            &manifest,
            &names,
            Compression::default(),
            &opts.registry,
            &*progress,
            &clock,
        )?;
    }
    for (spec, (_, _, out)) in cache_to
        .iter()
        .flat_map(|spec| images.iter().map(move |i| (spec, i)))
    {
        let started = clock.now_ms();
        let mut warn = |message: String| {
            progress.emit(Event::Warning {
                at_ms: clock.now_ms(),
                message,
            })
        };
        match kiln_builder::export_cache(
            &store,
            spec,
            &out.cache,
            out.remote_cache.as_deref(),
            &opts.registry,
            &mut warn,
        ) {
            Ok(report) => progress.emit(Event::Phase {
                at_ms: clock.now_ms(),
                name: format!(
                    "exporting cache to {} ({} records, {} in the cache)",
                    spec.location, report.exported, report.total
                ),
                duration_ms: Some(clock.now_ms() - started),
            }),
            Err(e) if spec.ignore_error => progress.emit(Event::Warning {
                at_ms: clock.now_ms(),
                message: format!("--cache-to: {e}"),
            }),
            Err(e) => {
                progress.finish();
                return Err(miette!("--cache-to: {e}"));
            }
        }
    }
    if let Some(engine) = flags.load.load {
        let started = clock.now_ms();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        super::load_into::load_into(&store, engine, &names)?;
        progress.emit(Event::Phase {
            at_ms: clock.now_ms(),
            name: format!("loading into {}", engine.command()),
            duration_ms: Some(clock.now_ms() - started),
        });
    }
    if let Some(p) = &flags.iidfile {
        std::fs::write(p, image_id.to_string())
            .map_err(|e| miette!("writing --iidfile {}: {e}", p.display()))?;
    }
    if let Some(p) = &flags.metadata_file {
        let mut meta = serde_json::json!({
            "containerimage.digest": reported.digest.to_string(),
            "containerimage.config.digest": image_id.to_string(),
            "containerimage.descriptor": {
                "mediaType": reported.media_type,
                "digest": reported.digest.to_string(),
                "size": reported.size,
            },
            // Fully qualified, as BuildKit writes it (docker.io/library/api:1).
            "image.name": names
                .iter()
                .map(|n| Reference::parse(&n.to_string()).map(|r| r.to_string()).unwrap_or_else(|_| n.to_string()))
                .collect::<Vec<_>>()
                .join(","),
        });
        if kiln_oci::descriptor::media_type::is_index(&manifest.media_type) {
            // An index has no config (BuildKit leaves the key out).
            if let Some(m) = meta.as_object_mut() {
                m.remove("containerimage.config.digest");
            }
        }
        std::fs::write(p, serde_json::to_vec_pretty(&meta).unwrap_or_default())
            .map_err(|e| miette!("writing --metadata-file {}: {e}", p.display()))?;
    }
    let size = images
        .iter()
        .map(|(_, _, out)| {
            out.layers.iter().map(|l| l.blob.size).sum::<u64>() + out.config.to_bytes().len() as u64
        })
        .sum();
    progress.emit(Event::BuildFinished {
        at_ms: clock.now_ms(),
        summary: Summary {
            image_id: Some(image_id.to_string()),
            image_size: Some(size),
            steps_run: images.iter().map(|(_, _, o)| o.steps_run).sum(),
            steps_cached: images.iter().map(|(_, _, o)| o.steps_cached).sum(),
            duration_ms: clock.now_ms(),
            tags: names.iter().map(|n| n.to_string()).collect(),
        },
    });
    progress.finish();
    if flags.quiet {
        println!("{image_id}");
    }
    if flags.analyze {
        let name = names
            .first()
            .map(|n| n.to_string())
            .unwrap_or_else(|| image_id.to_string());
        return super::analyze::after_build(&store, &manifest, &name, &gates);
    }
    Ok(ExitCode::SUCCESS)
}

/// Pushes the image `manifest` to each of `names`, its layers' blobs written
/// with `compression` first (once, kept in the store); returns the manifest pushed.
fn push_to(
    store: &Store,
    manifest: &BlobRef,
    names: &[ImageName],
    compression: Compression,
    registry: &RegistryContext,
    progress: &dyn ProgressSink,
    clock: &Clock,
) -> miette::Result<BlobRef> {
    let dests: Vec<Reference> = names
        .iter()
        .map(|n| Reference::parse(&n.to_string()).map_err(|e| miette!("{e}")))
        .collect::<miette::Result<_>>()?;
    // A layer the build left in a registry cache (see `push_only_to`) is
    // mounted from there by each push, never downloaded.
    let mountable = |d: &kiln_oci::digest::Digest| {
        dests
            .iter()
            .all(|r| !kiln_oci::registry::sources::known(store, &r.registry, d).is_empty())
    };
    let complete = complete_image_except(store, manifest, compression, &mountable)
        .map_err(|e| miette!("writing the layers of the image: {e}"))?;
    for n in names {
        let started = clock.now_ms();
        let dest = Reference::parse(&n.to_string()).map_err(|e| miette!("{e}"))?;
        push(store, &complete, &dest, &PushOptions::default(), registry)
            .map_err(|e| miette!("push {e}"))?;
        progress.emit(Event::Phase {
            at_ms: clock.now_ms(),
            name: format!("pushing {dest}"),
            duration_ms: Some(clock.now_ms() - started),
        });
    }
    Ok(complete)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The Dockerfile's path as provenance names it: relative to the context
/// when it is inside it (`Dockerfile`, `build/app.Dockerfile`), else its name.
fn dockerfile_in_context(path: &std::path::Path, context: &std::path::Path, name: &str) -> String {
    path.strip_prefix(context)
        .ok()
        .and_then(|p| p.to_str())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| name.to_string())
}

/// kiln's config file's `build.cacheFrom` / `build.cacheTo` (lists of flag
/// values): what a CI fleet sets once.
#[derive(Default)]
struct BuildSettings {
    cache_from: Vec<String>,
    cache_to: Vec<String>,
}

impl BuildSettings {
    fn parse(data: &[u8]) -> Result<BuildSettings, String> {
        let v: serde_json::Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        let mut out = BuildSettings::default();
        let Some(build) = v.get("build") else {
            return Ok(out);
        };
        let build = build
            .as_object()
            .ok_or("build: expected an object with cacheFrom and cacheTo")?;
        for (k, v) in build {
            let list = match k.as_str() {
                "cacheFrom" => &mut out.cache_from,
                "cacheTo" => &mut out.cache_to,
                _ => return Err(format!("build.{k}: unknown setting (cacheFrom, cacheTo)")),
            };
            let items = v
                .as_array()
                .ok_or_else(|| format!("build.{k}: expected a list of strings"))?;
            for item in items {
                list.push(
                    item.as_str()
                        .ok_or_else(|| format!("build.{k}: expected a list of strings"))?
                        .to_string(),
                );
            }
        }
        Ok(out)
    }
}

/// `--cache-from` and `--cache-to`, parsed; where the command line gives none
/// of one, the config file's `build.cacheFrom` / `build.cacheTo`.
fn cache_settings(
    flags: &BuildFlags,
) -> miette::Result<(
    Vec<kiln_builder::CacheLocation>,
    Vec<kiln_builder::CacheExport>,
)> {
    let mut file = BuildSettings::default();
    if flags.cache_from.is_empty() || flags.cache_to.is_empty() {
        let path = kiln_oci::registry::config::config_path();
        match std::fs::read(&path) {
            Ok(data) => {
                file = BuildSettings::parse(&data)
                    .map_err(|e| miette!("kiln config {}: {e}", path.display()))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(miette!("kiln config {}: {e}", path.display())),
        }
    }
    let (from, from_file) = if flags.cache_from.is_empty() {
        (&file.cache_from, true)
    } else {
        (&flags.cache_from, false)
    };
    let (to, to_file) = if flags.cache_to.is_empty() {
        (&file.cache_to, true)
    } else {
        (&flags.cache_to, false)
    };
    let in_file = |yes: bool, key: &str, e: String| {
        if yes {
            miette!(
                "kiln config {}: build.{key}: {e}",
                kiln_oci::registry::config::config_path().display()
            )
        } else {
            miette!("{e}")
        }
    };
    let from = from
        .iter()
        .map(|v| kiln_builder::parse_cache_from(v).map_err(|e| in_file(from_file, "cacheFrom", e)))
        .collect::<miette::Result<_>>()?;
    let to = to
        .iter()
        .map(|v| kiln_builder::parse_cache_to(v).map_err(|e| in_file(to_file, "cacheTo", e)))
        .collect::<miette::Result<_>>()?;
    Ok((from, to))
}

/// A failed build: a RUN's output tail and `ERROR: RUN … (Dockerfile:N) exited
/// with N` above the located excerpt; other errors as they are.
pub(crate) fn report_build_error(e: BuildError) -> miette::Report {
    match e {
        BuildError::StepFailed {
            headline,
            tail,
            location,
        } => {
            if !tail.is_empty() {
                eprintln!("------");
                for l in &tail {
                    eprintln!(" > {l}");
                }
                eprintln!("------");
            }
            eprintln!("ERROR: {headline}");
            miette::Report::new(*location)
        }
        BuildError::Dockerfile(d) => miette::Report::new(*d),
        other => miette!("{other}"),
    }
}

/// What `--add-host`, `--shm-size` and `--ulimit` set for every RUN step.
struct SandboxSettings {
    extra_hosts: Vec<(String, String)>,
    shm_size: Option<u64>,
    ulimits: Vec<kiln_sandbox::Ulimit>,
}

impl SandboxSettings {
    fn from_flags(flags: &BuildFlags) -> miette::Result<SandboxSettings> {
        let b = &flags.buildx;
        Ok(SandboxSettings {
            extra_hosts: b
                .add_hosts
                .iter()
                .map(|h| parse_add_host(h))
                .collect::<miette::Result<_>>()?,
            shm_size: b.shm_size.as_deref().map(parse_shm_size).transpose()?,
            ulimits: b
                .ulimits
                .iter()
                .map(|u| kiln_sandbox::Ulimit::parse(u).map_err(|e| miette!("--ulimit: {e}")))
                .collect::<miette::Result<_>>()?,
        })
    }
}

/// `--add-host HOST:IP` (or `HOST=IP`; an IPv6 address may be in brackets), as
/// docker reads it.
fn parse_add_host(value: &str) -> miette::Result<(String, String)> {
    let (host, ip) = value
        .split_once('=')
        .or_else(|| value.split_once(':'))
        .filter(|(h, a)| !h.is_empty() && !a.is_empty())
        .ok_or_else(|| miette!("invalid --add-host {value:?}: expected HOST:IP"))?;
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    if ip == "host-gateway" {
        return Err(miette!(
            "--add-host {value}: host-gateway is not supported: RUN steps use the host's network, give the address"
        ));
    }
    ip.parse::<std::net::IpAddr>()
        .map_err(|_| miette!("invalid --add-host {value:?}: {ip:?} is not an IP address"))?;
    Ok((host.to_string(), ip.to_string()))
}

/// `--shm-size`: bytes, or a number with b, k, m or g (powers of 1024), as
/// docker's `RAMInBytes`.
fn parse_shm_size(value: &str) -> miette::Result<u64> {
    let t = value.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => 0,
    };
    let bytes = num.parse::<f64>().ok().map(|n| n * mult as f64);
    match bytes {
        Some(b) if mult > 0 && b.is_finite() && b >= 1.0 => Ok(b as u64),
        _ => Err(miette!(
            "invalid --shm-size {value:?}: expected bytes, or a number with b, k, m or g"
        )),
    }
}

/// Where an `--annotation` goes (BuildKit's types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnnotationKind {
    /// The image manifest (no type, or `manifest:`).
    Manifest,
    /// The image manifest's entry in the image index.
    ManifestDescriptor,
    /// The image index.
    Index,
    /// The index's entry in the OCI layout's `index.json`.
    IndexDescriptor,
}

/// One `--annotation [TYPE[PLATFORM]:]KEY=VALUE`.
struct Annotation<'a> {
    kind: AnnotationKind,
    only: Option<Platform>,
    key: &'a str,
    value: &'a str,
}

fn parse_annotation(a: &str) -> miette::Result<Annotation<'_>> {
    let (key, value) = a
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| miette!("invalid --annotation {a:?}: expected [TYPE:]KEY=VALUE"))?;
    let (kind, key) = match key.split_once(':') {
        Some((t, k))
            if t.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && t.chars()
                    .take_while(|c| *c != '[')
                    .all(|c| c.is_ascii_lowercase() || c == '-') =>
        {
            (t, k)
        }
        _ => ("", key),
    };
    let (kind, only) = match kind.split_once('[') {
        Some((t, p)) => {
            let p = p.strip_suffix(']').ok_or_else(|| {
                miette!("invalid --annotation {a:?}: expected TYPE[PLATFORM]:KEY=VALUE")
            })?;
            let p = Platform::parse(p).map_err(|e| miette!("invalid --annotation {a:?}: {e}"))?;
            (t, Some(p))
        }
        None => (kind, None),
    };
    let kind = match kind {
        "" | "manifest" => AnnotationKind::Manifest,
        "manifest-descriptor" => AnnotationKind::ManifestDescriptor,
        "index" => AnnotationKind::Index,
        "index-descriptor" => AnnotationKind::IndexDescriptor,
        other => {
            return Err(miette!(
                "invalid --annotation {a:?}: unknown type {other:?} (manifest, manifest-descriptor, index, index-descriptor)"
            ))
        }
    };
    if only.is_some()
        && matches!(
            kind,
            AnnotationKind::Index | AnnotationKind::IndexDescriptor
        )
    {
        return Err(miette!(
            "invalid --annotation {a:?}: an index serves every platform; [PLATFORM] is for manifest and manifest-descriptor"
        ));
    }
    if key.is_empty() || key.chars().any(char::is_whitespace) {
        return Err(miette!("invalid --annotation {a:?}: bad key {key:?}"));
    }
    Ok(Annotation {
        kind,
        only,
        key,
        value,
    })
}

/// The annotations of `kind` for `platform`'s image (`None`: the index's).
/// `indexed`: the build writes an image index (several platforms, or
/// attestations); without one, the index types are refused.
fn annotations_of(
    given: &[String],
    kind: AnnotationKind,
    platform: Option<&Platform>,
    indexed: bool,
) -> miette::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in given {
        let an = parse_annotation(a)?;
        if an.kind != AnnotationKind::Manifest && !indexed {
            return Err(miette!(
                "--annotation {a}: {} annotations need an image index, which a single-platform build without attestations does not write; use manifest:{}={}",
                match an.kind {
                    AnnotationKind::Index => "index",
                    AnnotationKind::IndexDescriptor => "index-descriptor",
                    _ => "manifest-descriptor",
                },
                an.key,
                an.value
            ));
        }
        if an.kind != kind {
            continue;
        }
        if an.only.is_none_or(|p| platform == Some(&p)) {
            out.insert(an.key.to_string(), an.value.to_string());
        }
    }
    Ok(out)
}

/// `--annotation` values for the image manifest of `platform` in a build
/// without an index: no type or `manifest:` (`manifest[PLATFORM]:` for that
/// platform only); the index types are refused.
#[cfg(test)]
fn manifest_annotations(
    given: &[String],
    platform: &Platform,
) -> miette::Result<BTreeMap<String, String>> {
    annotations_of(given, AnnotationKind::Manifest, Some(platform), false)
}

/// `SOURCE_DATE_EPOCH` from the environment, if set.
pub(crate) fn source_date_epoch() -> miette::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map(Some)
            .map_err(|_| miette!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        _ => Ok(None),
    }
}

/// `--secret id=NAME[,src=FILE|,env=VAR][,type=file|env]`, as docker buildx reads it.
fn secrets(given: &[String]) -> miette::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for s in given {
        let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
        for field in s.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| miette!("invalid --secret {s:?}: {field:?} is not key=value"))?;
            match k {
                "id" => id = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                "type" => kind = Some(v.to_string()),
                _ => return Err(miette!("invalid --secret {s:?}: unknown key {k:?}")),
            }
        }
        let id = id
            .or_else(|| src.clone().or_else(|| env.clone()))
            .ok_or_else(|| miette!("invalid --secret {s:?}: id= is missing"))?;
        let content = match (kind.as_deref(), src, env) {
            (Some("env"), src, env) | (None, src @ None, env @ Some(_)) => {
                let var = env.or(src).unwrap_or_else(|| id.clone());
                std::env::var_os(&var)
                    .map(|v| v.into_encoded_bytes())
                    .ok_or_else(|| {
                        miette!("--secret {id}: the environment variable {var} is not set")
                    })?
            }
            (_, src, _) => {
                let path = src.unwrap_or_else(|| id.clone());
                std::fs::read(&path)
                    .map_err(|e| miette!("--secret {id}: cannot read {path}: {e}"))?
            }
        };
        out.insert(id, content);
    }
    Ok(out)
}

/// `--build-context name=DIR|docker-image://REF|oci-layout://DIR[:TAG|@DIGEST]`.
pub(crate) fn named_contexts(
    store: &Store,
    given: &[String],
) -> miette::Result<BTreeMap<String, NamedContext>> {
    let mut out = BTreeMap::new();
    for g in given {
        let (name, value) = g
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .ok_or_else(|| miette!("invalid --build-context {g:?}: expected name=value"))?;
        let ctx = if let Some(r) = value.strip_prefix("docker-image://") {
            NamedContext::Image(r.to_string())
        } else if let Some(rest) = value.strip_prefix("oci-layout://") {
            let (dir, only) = match rest
                .rsplit_once('@')
                .or_else(|| rest.rsplit_once(':').filter(|(_, t)| !t.contains('/')))
            {
                Some((d, t)) => (d, Some(t)),
                None => (rest, None),
            };
            let loaded = import_oci_dir(store, std::path::Path::new(dir), only)
                .map_err(|e| miette!("--build-context {name}: {e}"))?;
            let first = loaded
                .first()
                .ok_or_else(|| miette!("--build-context {name}: no image in {dir}"))?;
            let reference = format!(
                "kiln-build-context/{}@{}",
                name.to_lowercase(),
                first.target.digest
            );
            let tag: ImageName = format!(
                "kiln-build-context/{}:{}",
                name.to_lowercase(),
                first.target.digest.hex()
            )
            .parse()
            .map_err(|e| miette!("--build-context {name}: {e}"))?;
            store
                .tag(&tag, first.target.clone())
                .map_err(|e| miette!("--build-context {name}: {e}"))?;
            let _ = reference;
            NamedContext::StoredImage(tag.to_string())
        } else {
            let dir = std::path::PathBuf::from(value);
            if !dir.is_dir() {
                return Err(miette!(
                    "--build-context {name}: {value} is not a directory (use docker-image:// or oci-layout:// for images)"
                ));
            }
            NamedContext::Dir(dir)
        };
        out.insert(name.to_string(), ctx);
    }
    Ok(out)
}

/// A build context that is not a directory, made into one: a tar archive
/// (plain, gzip or zstd) given as a file or on standard input (`-`) is unpacked
/// into a temporary directory; a Dockerfile on standard input (`kiln build -
/// < Dockerfile`) comes with an empty context and is returned as the text.
fn materialize_context(
    flags: &BuildFlags,
) -> miette::Result<(Option<tempfile::TempDir>, Option<String>)> {
    let path = &flags.context;
    if path.as_os_str() != "-" && path.is_dir() {
        return Ok((None, None));
    }
    let dir = tempfile::Builder::new()
        .prefix("kiln-context-")
        .tempdir()
        .into_diagnostic()
        .wrap_err("creating a directory for the build context")?;
    if path.as_os_str() == "-" {
        if flags.file.as_ref().is_some_and(|f| f.as_os_str() == "-") {
            return Err(miette!(
                "the build context and the Dockerfile cannot both come from standard input"
            ));
        }
        let mut data = Vec::new();
        std::io::stdin()
            .read_to_end(&mut data)
            .into_diagnostic()
            .wrap_err("cannot read the build context from standard input")?;
        if !looks_like_tar(&data) {
            let text = String::from_utf8(data)
                .map_err(|_| miette!("the Dockerfile from standard input is not UTF-8"))?;
            return Ok((Some(dir), Some(text)));
        }
        kiln_oci::layer::apply_layer(&data[..], dir.path())
            .map_err(|e| miette!("build context from standard input: {e}"))?;
        return Ok((Some(dir), None));
    }
    let f = std::fs::File::open(path).map_err(|e| {
        miette!(
            "build context {}: {}",
            path.display(),
            e.to_string().to_lowercase()
        )
    })?;
    kiln_oci::layer::apply_layer(std::io::BufReader::new(f), dir.path()).map_err(|e| {
        miette!(
            "build context {}: not a directory, and not a tar archive: {e}",
            path.display()
        )
    })?;
    Ok((Some(dir), None))
}

/// Whether `data` starts like a tar archive, compressed or not.
fn looks_like_tar(data: &[u8]) -> bool {
    let compressed = data.starts_with(&[0x1f, 0x8b])
        || data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || data.starts_with(b"BZh")
        || data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]);
    compressed || data.get(257..262) == Some(b"ustar")
}

/// Reads `-f FILE` (`-` = standard input), default `CONTEXT/Dockerfile`. A file
/// named `Dockerfile` that does not exist is looked for as `dockerfile` in the same
/// directory, as BuildKit does (moby/moby#10858); its name, ignore file
/// (`Dockerfile.dockerignore`) and error locations stay those of `Dockerfile`.
/// Errors are reported against the file's base name, as docker does (`Dockerfile:12`).
fn read_dockerfile(flags: &BuildFlags) -> miette::Result<Source> {
    read_dockerfile_at(flags.file.as_deref(), &flags.context)
}

/// [`read_dockerfile`] for `-f file` (or none) and a context directory.
pub(crate) fn read_dockerfile_at(
    file: Option<&std::path::Path>,
    context: &std::path::Path,
) -> miette::Result<Source> {
    let path = match file {
        Some(p) => p.to_path_buf(),
        None => context.join("Dockerfile"),
    };
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .into_diagnostic()
            .wrap_err("cannot read the Dockerfile from standard input")?;
        return Ok(Source::new("Dockerfile", text));
    }
    let read = std::fs::read_to_string(&path).or_else(|e| {
        let lowercase = (e.kind() == std::io::ErrorKind::NotFound
            && path.file_name().is_some_and(|n| n == "Dockerfile"))
        .then(|| path.with_file_name("dockerfile"));
        lowercase
            .and_then(|p| std::fs::read_to_string(p).ok())
            .ok_or(e)
    });
    let text = read.map_err(|e| {
        miette!(
            "cannot read Dockerfile {}: {}",
            path.display(),
            e.to_string().to_lowercase()
        )
    })?;
    Ok(Source::new(base_name(&path), text))
}

pub(crate) fn base_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".to_string())
}

/// `--build-arg KEY=value`, or `KEY` to take the value from the environment
/// (skipped when the variable is unset, as docker does).
pub(crate) fn build_args(
    given: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> miette::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in given {
        match a.split_once('=') {
            Some(("", _)) => return Err(miette!("invalid --build-arg {a:?}: the name is empty")),
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None if a.is_empty() => return Err(miette!("invalid --build-arg: the name is empty")),
            None => {
                if let Some(v) = env(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// One `--platform` (`kiln check`, which checks for one platform at a time).
pub(crate) fn parse_platform(s: &str) -> miette::Result<Platform> {
    if s.contains(',') {
        return Err(miette!(
            "--platform {s:?}: give one platform here (kiln build takes several)"
        ));
    }
    Platform::parse(s).map_err(|e| miette!("invalid --platform: {e}"))
}

/// `--platform a,b,…` of `kiln build`: each platform once, in the order given.
pub(crate) fn parse_platforms(s: &str) -> miette::Result<Vec<Platform>> {
    let mut out: Vec<Platform> = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(miette!("invalid --platform {s:?}: an empty platform"));
        }
        let p = Platform::parse(part).map_err(|e| miette!("invalid --platform: {e}"))?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

fn stage_label(plan: &Plan, i: usize) -> String {
    let s = &plan.stages[i];
    match &s.name {
        Some(n) => format!("stage {i} ({n})"),
        None => format!("stage {i}"),
    }
}

/// `steps_width`: the widest line number of any stage's steps (computed once
/// per plan, not once per stage: that was O(stages²) for a long chain).
fn render_stage(out: &mut String, plan: &Plan, st: &Stage, steps_width: usize) {
    let name = st.name.as_deref().unwrap_or("(unnamed)");
    let mut status = if st.needed { "needed" } else { "pruned" }.to_string();
    if st.index == plan.target {
        status.push_str(", target");
    }
    let _ = writeln!(out, "stage {}  {name}  [{status}]", st.index);
    let base = match &st.base {
        Base::Scratch => "scratch".to_string(),
        Base::Image(r) => format!("image {r}"),
        Base::Stage(i) => stage_label(plan, *i),
    };
    let _ = writeln!(out, "  base:     {base}");
    if let Some(p) = &st.platform {
        let _ = writeln!(out, "  platform: {p}");
    }
    let deps: Vec<String> = st.deps.iter().map(|d| stage_label(plan, *d)).collect();
    let deps = if deps.is_empty() {
        "none".to_string()
    } else {
        deps.join(", ")
    };
    let _ = writeln!(out, "  deps:     {deps}");
    let _ = writeln!(out, "  steps:");
    let width = steps_width.max(st.from_origin.lines().len());
    let _ = writeln!(
        out,
        "    line {:>width$}  {}",
        st.from_origin.lines(),
        st.from_origin.summary()
    );
    for step in &st.steps {
        let o = &step.instruction.origin;
        let mut notes = Vec::new();
        if step.onbuild {
            notes.push("ONBUILD trigger of the base stage".to_string());
        }
        match &step.copy_from {
            Some(Input::Stage(i)) => notes.push(format!("from {}", stage_label(plan, *i))),
            Some(Input::Image(r)) => notes.push(format!("from image {r}")),
            None => {}
        }
        for input in step.mount_from.iter().flatten() {
            match input {
                Input::Stage(i) => notes.push(format!("mounts {}", stage_label(plan, *i))),
                Input::Image(r) => notes.push(format!("mounts image {r}")),
            }
        }
        if let Kind::Run(r) = &step.instruction.kind {
            if !r.heredocs.is_empty() {
                notes.push(format!("{} heredoc(s)", r.heredocs.len()));
            }
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!("    ({})", notes.join("; "))
        };
        let _ = writeln!(
            out,
            "    line {:>width$}  {}{notes}",
            o.lines(),
            o.summary()
        );
    }
}

/// The human-readable plan printed by `--dry-run`.
fn render_plan(plan: &Plan) -> String {
    let mut out = String::new();
    let needed = plan.needed_stages().count();
    let _ = writeln!(
        out,
        "build plan: {} stages ({needed} needed, {} pruned), {} steps to run; target {}; platform {}",
        plan.stages.len(),
        plan.stages.len() - needed,
        plan.needed_steps(),
        stage_label(plan, plan.target),
        plan.target_platform
    );
    if !plan.build_args.is_empty() {
        let args: Vec<String> = plan
            .build_args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "build args: {}", args.join(" "));
    }
    let steps_width = plan
        .stages
        .iter()
        .flat_map(|s| &s.steps)
        .map(|step| step.instruction.origin.lines().len())
        .max()
        .unwrap_or(1);
    for st in &plan.stages {
        out.push('\n');
        render_stage(&mut out, plan, st, steps_width);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_arg_forms() {
        let env = |k: &str| (k == "FROM_ENV").then(|| "env-value".to_string());
        let args = build_args(
            &[
                "A=1".into(),
                "B=".into(),
                "C=x=y".into(),
                "FROM_ENV".into(),
                "UNSET".into(),
            ],
            env,
        )
        .unwrap();
        assert_eq!(args["A"], "1");
        assert_eq!(args["B"], "");
        assert_eq!(args["C"], "x=y");
        assert_eq!(args["FROM_ENV"], "env-value");
        assert!(!args.contains_key("UNSET"));
        assert!(build_args(&["=v".into()], env).is_err());
    }

    #[test]
    fn sandbox_flag_values() {
        assert_eq!(
            parse_add_host("db:10.0.0.2").unwrap(),
            ("db".into(), "10.0.0.2".into())
        );
        assert_eq!(
            parse_add_host("v6=[::1]").unwrap(),
            ("v6".into(), "::1".into())
        );
        assert_eq!(parse_add_host("v6:::1").unwrap().1, "::1");
        for bad in ["db", "db:", ":1.2.3.4", "db:nope", "db:host-gateway"] {
            assert!(parse_add_host(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_shm_size("128m").unwrap(), 128 << 20);
        assert_eq!(parse_shm_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_shm_size("4096").unwrap(), 4096);
        for bad in ["", "m", "12x", "0"] {
            assert!(parse_shm_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn annotation_values() {
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let a = manifest_annotations(
            &[
                "org.opencontainers.image.title=api".into(),
                "manifest:com.example.a=b=c".into(),
                "manifest[linux/amd64]:only.amd64=1".into(),
                "manifest[linux/arm64]:only.arm64=1".into(),
                "com.example.url=http://x:80".into(),
            ],
            &amd64,
        )
        .unwrap();
        let keys: Vec<_> = a.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            keys,
            [
                "com.example.a=b=c",
                "com.example.url=http://x:80",
                "only.amd64=1",
                "org.opencontainers.image.title=api"
            ]
        );
        let e = manifest_annotations(&["index:k=v".into()], &amd64).unwrap_err();
        assert!(e.to_string().contains("need an image index"), "{e}");
        assert!(manifest_annotations(&["bogus:k=v".into()], &amd64).is_err());
        assert!(manifest_annotations(&["novalue".into()], &amd64).is_err());
        // With an index: index and manifest-descriptor annotations, each
        // where it belongs; index-descriptor and index[PLATFORM] refused.
        let given: Vec<String> = [
            "index:org.opencontainers.image.title=api",
            "manifest-descriptor[linux/amd64]:only.amd64=1",
            "manifest-descriptor:all=1",
            "manifest:m=1",
        ]
        .map(String::from)
        .to_vec();
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let of = |kind, p: Option<&Platform>| annotations_of(&given, kind, p, true).unwrap();
        assert_eq!(
            of(AnnotationKind::Index, None).keys().collect::<Vec<_>>(),
            ["org.opencontainers.image.title"]
        );
        assert_eq!(
            of(AnnotationKind::ManifestDescriptor, Some(&amd64))
                .keys()
                .collect::<Vec<_>>(),
            ["all", "only.amd64"]
        );
        assert_eq!(
            of(AnnotationKind::ManifestDescriptor, Some(&arm64))
                .keys()
                .collect::<Vec<_>>(),
            ["all"]
        );
        assert_eq!(
            of(AnnotationKind::Manifest, Some(&arm64))
                .keys()
                .collect::<Vec<_>>(),
            ["m"]
        );
        assert_eq!(
            annotations_of(
                &["index-descriptor:d=1".into()],
                AnnotationKind::IndexDescriptor,
                None,
                true
            )
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
            ["d"]
        );
        for bad in [
            "index-descriptor[linux/amd64]:k=v",
            "index[linux/amd64]:k=v",
        ] {
            assert!(
                annotations_of(&[bad.into()], AnnotationKind::Index, None, true).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn platform_flag() {
        assert_eq!(
            parse_platform("linux/arm64").unwrap().to_string(),
            "linux/arm64"
        );
        assert!(parse_platform("linux/amd64,linux/arm64").is_err());
        assert!(parse_platform("nonsense/").is_err());
        let several = parse_platforms("linux/amd64, linux/arm64,linux/amd64").unwrap();
        let names: Vec<String> = several.iter().map(|p| p.to_string()).collect();
        assert_eq!(names, ["linux/amd64", "linux/arm64"]);
        assert!(parse_platforms("linux/amd64,").is_err());
    }
}
