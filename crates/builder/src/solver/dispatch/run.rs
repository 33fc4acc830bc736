//! RUN: the command in the sandbox over an overlay of the stage's layers; the
//! upper directory becomes the step's layer.

use crate::cache::explain::InputsBuilder;
use crate::cache::mounts::{self as cache_mounts, CacheMountRequest, CacheMounts};
use crate::cache::steps::KeyBuilder;
use crate::ops::run::{context_mask, ScratchOverlay};
use crate::progress::{Event, OutputStream};
use crate::snapshot::copied::CopiedRoot;
use crate::snapshot::merged_view::LayeredView;
use crate::snapshot::Layer;
use crate::solver::state::StageState;
use crate::solver::step::StepDone;
use crate::solver::step::{input_key, StepCtx};
use crate::solver::BuildError;
use kiln_dockerfile::instructions::mount::{Mount, MountType};
use kiln_dockerfile::instructions::{self as ins, CommandLine, NetworkMode, Origin, Security};
use kiln_dockerfile::stages::Step;
use kiln_oci::digest::Digest;
use kiln_oci::path::resolve as resolve_path;
use kiln_sandbox::{
    Isolation, MountSpec, NetworkMode as SandboxNetwork, Rootfs, RunSpec, SandboxError,
    SecurityMode, UserSpec,
};
use serde::Serialize;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// The build arg that names the sandbox's hostname (BuildKit's
/// `build-arg:BUILDKIT_SANDBOX_HOSTNAME`; default `buildkitsandbox`).
pub const HOSTNAME_ARG: &str = "BUILDKIT_SANDBOX_HOSTNAME";

/// What decides a RUN step's result, hashed into its cache key. Secret
/// contents are not part of it (only their ids and targets).
#[derive(Serialize)]
struct RunKey<'a> {
    args: &'a [String],
    env: &'a [String],
    user: &'a str,
    cwd: &'a str,
    network: &'a str,
    security: &'a str,
    mounts: Vec<(String, String)>,
    platform: String,
}

/// A prepared RUN mount: what the sandbox gets, and what it adds to the key.
struct PreparedMounts {
    specs: Vec<MountSpec>,
    key_parts: Vec<(String, String)>,
    extra_env: Vec<String>,
    /// `SSH_AUTH_SOCK=<the first ssh mount's target>` when the step's
    /// environment has none (BuildKit's `llb.AddSSHSocket`); in the key.
    ssh_auth_sock: Option<String>,
    /// Held for the run, released after it: cache mount leases, bind overlays
    /// (unmounted on drop) and context masks (removed on drop).
    _guards: Vec<Box<dyn std::any::Any>>,
}

/// The argv of a RUN, BuildKit's way (`dispatchRun`): shell form through the
/// SHELL; a lone heredoc runs its body (a file under `/dev/pipes/` when it
/// starts with `#!`); other heredocs are put back after the command for the
/// shell to read.
fn run_args(state: &StageState, r: &ins::Run) -> (Vec<String>, Option<MountSpec>) {
    let mut pipe = None;
    let args = match &r.command {
        CommandLine::Exec(a) => return (a.clone(), None),
        CommandLine::Shell(cmd) => {
            if r.heredocs.is_empty() {
                cmd.clone()
            } else if let Some(h) = r.heredocs.first().filter(|_| is_lone_heredoc(cmd)) {
                let data = if h.chomp {
                    kiln_dockerfile::parser::chomp_heredoc_content(&h.content)
                } else {
                    h.content.clone()
                };
                if data.starts_with("#!") {
                    let target = format!("/dev/pipes/{}", h.name);
                    pipe = Some(MountSpec::Secret {
                        target: target.clone(),
                        content: data.into_bytes(),
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                    });
                    return (vec![target], pipe);
                }
                data
            } else {
                let mut b = cmd.clone();
                for h in &r.heredocs {
                    b.push('\n');
                    b.push_str(&h.content);
                    b.push_str(&h.name);
                }
                b
            }
        }
    };
    let mut full = state.shell();
    full.push(args);
    (full, pipe)
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'` alone (BuildKit's MustParseHeredoc).
fn is_lone_heredoc(cmd: &str) -> bool {
    let s = cmd.trim();
    let Some(rest) = s.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let word = if let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
        match rest[1..].strip_suffix(q) {
            Some(w) => w,
            None => return false,
        }
    } else {
        rest
    };
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn run_step(
    ctx: &StepCtx<'_, '_>,
    state: &StageState,
    origin: &Origin,
    r: &ins::Run,
    step: &Step,
) -> Result<(Digest, StepDone, String), BuildError> {
    let sh = ctx.sh;
    let (args, pipe) = run_args(state, r);
    let mut env = state.env_list();
    let cwd = state.workdir();
    let user = state.user();
    let mode = match r.network {
        NetworkMode::Default => sh.opts.default_network,
        m => m,
    };
    let network = match mode {
        NetworkMode::None => SandboxNetwork::None,
        NetworkMode::Default | NetworkMode::Host => SandboxNetwork::Host,
    };
    let security = match r.security {
        Security::Insecure => SecurityMode::Insecure,
        Security::Sandbox => SecurityMode::Sandbox,
    };
    let mut mounts = prepare_mounts(ctx, state, origin, r, step)?;
    if let Some(sock) = &mounts.ssh_auth_sock {
        if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
            env.push(format!("SSH_AUTH_SOCK={sock}"));
        }
    }
    // `--build-arg BUILDKIT_SANDBOX_HOSTNAME=NAME`: BuildKit's hostname for RUN.
    let hostname = sh
        .plan
        .build_args
        .get(HOSTNAME_ARG)
        .filter(|h| !h.is_empty())
        .cloned();
    if let Some(h) = &hostname {
        mounts.key_parts.push(("hostname".into(), h.clone()));
    }
    if let Some(p) = pipe {
        mounts.key_parts.push(("pipe".into(), format!("{p:?}")));
        mounts.specs.push(p);
    }
    let key = {
        let mut k = KeyBuilder::new("run", &state.key);
        k.json(&RunKey {
            args: &args,
            env: &env,
            user: &user,
            cwd: &cwd,
            network: mode.as_str(),
            security: r.security.as_str(),
            mounts: mounts.key_parts.clone(),
            platform: sh.plan.stage_platform(ctx.stage.index).to_string(),
        });
        // Only when set, so that keys of builds without them stay as they were.
        for (host, ip) in &sh.opts.extra_hosts {
            k.part(&format!("extra host {host}={ip}"));
        }
        if let Some(size) = sh.opts.shm_size {
            k.part(&format!("shm size {size}"));
        }
        for u in &sh.opts.ulimits {
            k.part(&format!("ulimit {}={}:{}", u.name, u.soft, u.hard));
        }
        k.finish()
    };
    let inputs = {
        let mut b = InputsBuilder::new(&origin.code);
        b.args(
            &state.build_args,
            |n| state.get_env(n).map(str::to_string),
            None,
        );
        for (k, v) in &state.env {
            if !state.build_args.contains(k) {
                b.add(format!("env:{k}"), v);
            }
        }
        b.add("user", &user)
            .add("working directory", &cwd)
            .add(
                "network",
                &format!("{} {}", mode.as_str(), r.security.as_str()),
            )
            .add(
                "mounts",
                &serde_json::to_string(&mounts.key_parts).unwrap_or_default(),
            )
            .add(
                "platform",
                &sh.plan.stage_platform(ctx.stage.index).to_string(),
            )
            .add(
                "options",
                &format!("{:?} {:?}", sh.opts.extra_hosts, sh.opts.shm_size),
            );
        b.finish()
    };
    let created_by = format!("RUN {} # buildkit", state.run_command_string(&args));
    // Proxy settings and secret env vars reach the process but not the key.
    for (k, v) in &sh.plan.proxy_env {
        env.push(format!("{k}={v}"));
    }
    env.extend(mounts.extra_env.iter().cloned());
    let lowers = || sh.snapshots.stack_stage(sh.store, &state.layers);
    let vertex = ctx.vertex.unwrap_or(0);
    // Without overlay: the step's tree, kept for the next step once its layer
    // is made.
    let tree: RefCell<Option<(kiln_sandbox::CopySnapshot, CopiedRoot)>> = RefCell::new(None);
    let settle = |layer: &Layer, dropped: &[(PathBuf, PathBuf)]| {
        let Some((snap, mut root)) = tree.borrow_mut().take() else {
            return;
        };
        // What the differ left out of the layer goes back to what is below
        // it, so the tree is what a fresh copy of the layers gives; so do the
        // directories whose ctime alone changed (first: nothing below them is
        // in the list).
        let touched = snap.touched_dirs();
        let mut restore = Vec::with_capacity(touched.len() + dropped.len());
        if !touched.is_empty() {
            let Ok(view) = sh.view(&state.layers) else {
                return;
            };
            for rel in touched {
                match view.lookup(&format!("/{}", rel.display()), false) {
                    Ok(Some(e)) if e.is_dir() => restore.push((rel, e.host_path)),
                    // Not kept: the next step copies its layers afresh.
                    _ => return,
                }
            }
        }
        restore.extend(dropped.iter().cloned());
        match snap.settle(&restore, &sh.snapshots.dir_of(&layer.diff_id)) {
            Ok(()) => {
                root.holds([layer.diff_id]);
                sh.copied_roots.keep(root);
            }
            // Not kept: the next step copies its layers afresh.
            Err(e) => tracing::debug!("not keeping the step's tree: {e}"),
        }
    };
    let rec = ctx.cached_then(
        key,
        inputs,
        |upper, work| {
            // A step of a foreign platform runs under an emulator: there must be one.
            let platform = sh.plan.stage_platform(ctx.stage.index);
            kiln_sandbox::emulation::support(&platform.to_string(), &platform.arch)
                .map_err(|why| sh.located(origin, format!("RUN for {platform}: {why}")))?;
            let lowerdirs = lowers().map_err(BuildError::Snapshot)?;
            let mode = sh.run_mode();
            let mut spec = RunSpec::new(
                Rootfs::Overlay {
                    lowerdirs: lowerdirs.clone(),
                    upperdir: upper.to_path_buf(),
                    workdir: work.to_path_buf(),
                },
                args.clone(),
            );
            spec.isolation = mode.isolation;
            spec.env = env.clone();
            if let Some(h) = &hostname {
                spec.hostname = h.clone();
                spec.hosts = Some(kiln_sandbox::default_hosts(h));
            }
            spec.cwd = cwd.clone();
            spec.user = UserSpec::new(user.clone());
            spec.network = network;
            spec.security = security;
            spec.mounts = mounts.specs.clone();
            spec.tail_lines = 20;
            if let Some(hosts) = &mut spec.hosts {
                for (host, ip) in &sh.opts.extra_hosts {
                    hosts.extend_from_slice(format!("{ip}\t{host}\n").as_bytes());
                }
            }
            spec.shm_size = sh.opts.shm_size;
            spec.ulimits = sh.opts.ulimits.clone();
            let mut on_line = |l: &kiln_sandbox::OutputLine| {
                sh.emit(Event::StepOutput {
                    at_ms: sh.clock.now_ms(),
                    step: vertex,
                    stream: match l.stream {
                        kiln_sandbox::OutputStream::Stdout => OutputStream::Stdout,
                        kiln_sandbox::OutputStream::Stderr => OutputStream::Stderr,
                    },
                    line: l.line.clone(),
                });
            };
            if mode.isolation == Isolation::Chroot && !spec.mounts.is_empty() {
                return Err(sh.located(
                    origin,
                    format!(
                        "{}: RUN --mount needs mounts, which chroot isolation does not make",
                        origin.summary()
                    ),
                ));
            }
            // Without overlay: the step runs on a copy of its layers (the tree an
            // earlier step left, when there is one: see `snapshot::copied`), and
            // a walk afterwards writes what it changed as the upper directory
            // overlay would have left.
            let copy = if mode.overlay {
                None
            } else {
                let chroot = mode.isolation == Isolation::Chroot;
                let provision = |dir: &Path| {
                    if chroot {
                        kiln_sandbox::chroot::provision(dir, &spec)
                    } else {
                        Ok(())
                    }
                };
                // Kept trees follow layers by diff_id: the layers below
                // are hashed first.
                let layers = state
                    .layers
                    .iter()
                    .map(|l| l.wait())
                    .collect::<Result<Vec<_>, ()>>()
                    .map_err(|()| BuildError::Cancelled)?;
                let ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
                let copying = |e: std::io::Error| {
                    sh.located(origin, format!("copying the step's layers: {e}"))
                };
                let (snap, root) = match sh.copied_roots.take(&ids) {
                    Some(mut root) => {
                        // The layers made since, top first.
                        let newer: Vec<_> = layers[root.depth()..]
                            .iter()
                            .rev()
                            .map(|l| sh.snapshots.dir_of(&l.diff_id))
                            .collect();
                        tracing::debug!(
                            kept = root.depth(),
                            applied = newer.len(),
                            "running on the tree an earlier step left"
                        );
                        let snap =
                            kiln_sandbox::CopySnapshot::resume_with(root.dir(), &newer, provision)
                                .map_err(copying)?;
                        root.holds(ids[root.depth()..].iter().copied());
                        (snap, root)
                    }
                    None => {
                        let root = CopiedRoot::new(&sh.snapshots, ids.clone())
                            .map_err(BuildError::Snapshot)?;
                        let snap = kiln_sandbox::CopySnapshot::prepare_with(
                            &lowerdirs,
                            root.dir(),
                            provision,
                        )
                        .map_err(copying)?;
                        (snap, root)
                    }
                };
                spec.rootfs = snap.rootfs();
                Some((snap, root))
            };
            let result = sh.cancel.run(&spec, &mut on_line);
            if let Some((snap, root)) = copy {
                kiln_sandbox::chroot::release(root.dir());
                if result.is_ok() {
                    snap.diff_into(upper).map_err(|e| {
                        sh.located(origin, format!("finding the step's changes: {e}"))
                    })?;
                    // For the next step, once the layer is made.
                    *tree.borrow_mut() = Some((snap, root));
                }
            }
            match result {
                Ok(outcome) => {
                    for w in outcome.warnings {
                        sh.emit(Event::Warning {
                            at_ms: sh.clock.now_ms(),
                            message: w,
                        });
                    }
                    Ok(())
                }
                Err(SandboxError::StepFailed(f)) => {
                    let code = origin.summary();
                    let line = origin.lines();
                    let headline = format!("{code} ({}:{line}) {}", sh.src.name, f.status);
                    let location = kiln_dockerfile::DockerfileError::at(
                        sh.src,
                        origin.start_line,
                        origin.end_line,
                        format!("{code} {}", f.status),
                    );
                    Err(BuildError::StepFailed {
                        headline,
                        tail: f.tail,
                        location: Box::new(location),
                    })
                }
                Err(SandboxError::Cancelled) => Err(BuildError::Cancelled),
                Err(e) => Err(sh.located(origin, format!("{}: {e}", origin.summary()))),
            }
        },
        settle,
    )?;
    drop(mounts);
    Ok((key, rec, created_by))
}

fn prepare_mounts(
    ctx: &StepCtx<'_, '_>,
    state: &StageState,
    origin: &Origin,
    r: &ins::Run,
    step: &Step,
) -> Result<PreparedMounts, BuildError> {
    let sh = ctx.sh;
    let env = state.expansion_env();
    let mut out = PreparedMounts {
        specs: Vec::new(),
        key_parts: Vec::new(),
        extra_env: Vec::new(),
        ssh_auth_sock: None,
        _guards: Vec::new(),
    };
    let mut ssh_index = 0;
    for (i, spec) in r.mounts.iter().enumerate() {
        let lexer = kiln_dockerfile::shell::Lexer::new(sh.plan.escape);
        let mut expand = |w: &str| lexer.process_word(w, &env).map_err(|e| e.to_string());
        let m: Mount = spec
            .resolve(&mut expand)
            .map_err(|e| BuildError::Dockerfile(Box::new(e.at(sh.src, origin))))?;
        let target = m
            .target
            .as_deref()
            .map(|t| resolve_path(&state.workdir(), t));
        match m.kind {
            MountType::Bind => {
                let target =
                    target.ok_or_else(|| sh.located(origin, "mount: the target is required"))?;
                let source = m.source.clone().unwrap_or_default();
                let input = step.mount_from.get(i).cloned().flatten();
                let not_found =
                    || sh.located(origin, format!("mount source {source:?}: not found"));
                // The source is a path inside the context or the stage, never
                // on the host: symlinks on the way (the last one too) are
                // followed inside that root, as BuildKit does. `path` is the
                // result, relative to the root; the directories the mount shows
                // (`lowers`), and what it adds to the key.
                let (lowers, key, path) = match input {
                    None => {
                        let ctx = &sh.opts.context.files;
                        let path = ctx.resolve(&source, true).map_err(|e| {
                            sh.located(origin, format!("mount source {source:?}: {e}"))
                        })?;
                        if !path.is_empty() && ctx.entry(&path).is_none() {
                            return Err(not_found());
                        }
                        let sel = ctx.select(&path).map_err(|e| {
                            sh.located(origin, format!("mount source {source:?}: {e}"))
                        })?;
                        let digest = sh.opts.context.digests.selection_digest(ctx, &sel);
                        // What .dockerignore excludes is hidden by whiteouts in a
                        // mask layer above the context directory.
                        let mut lowers = vec![ctx.root.clone()];
                        if let Some(mask) =
                            context_mask(&sh.snapshots, ctx, &path).map_err(|e| {
                                sh.located(origin, format!("mount source {source:?}: {e}"))
                            })?
                        {
                            lowers.insert(0, mask.path().to_path_buf());
                            out._guards.push(Box::new(mask));
                        }
                        (lowers, digest.to_string(), path)
                    }
                    Some(input) => {
                        let (key, st) = input_key(sh, &input, origin)?;
                        let lowers = sh
                            .snapshots
                            .stack_stage(sh.store, &st.layers)
                            .map_err(BuildError::Snapshot)?;
                        let rel = resolve_path("/", &source);
                        let found = LayeredView::new(lowers.clone())
                            .lookup(&rel, true)
                            .map_err(|e| {
                                sh.located(origin, format!("mount source {source:?}: {e}"))
                            })?;
                        let path = match found {
                            Some(e) => e.path,
                            None if rel == "/" => rel.clone(),
                            None => return Err(not_found()),
                        };
                        (lowers, format!("{key}:{rel}"), path)
                    }
                };
                // A plain read-only bind when the source is one directory (the
                // context); otherwise (a stage's layers, or rw, whose writes must
                // go nowhere) an overlay, mounted here and detached afterwards.
                // Either way the sandbox opens `path` inside that root itself
                // (`RESOLVE_IN_ROOT`) and mounts what it opened.
                let root = if lowers.len() == 1 && m.read_only {
                    lowers[0].clone()
                } else {
                    let mounted = ScratchOverlay::mount(&sh.snapshots, lowers, !m.read_only)
                        .map_err(|e| sh.located(origin, format!("mount {source:?}: {e}")))?;
                    let root = mounted.path().to_path_buf();
                    out._guards.push(Box::new(mounted));
                    root
                };
                out.key_parts
                    .push((format!("bind:{target}:{}", m.read_only), key));
                out.specs.push(MountSpec::Bind {
                    root,
                    path,
                    target,
                    readonly: m.read_only,
                });
            }
            MountType::Cache => {
                let target =
                    target.ok_or_else(|| sh.located(origin, "mount: the target is required"))?;
                let mut req = CacheMountRequest::from_mount(&m)
                    .ok_or_else(|| sh.located(origin, "cache mount without a target"))?;
                let sub = cache_mounts::source_subdir(&m);
                let mounts = CacheMounts::new(sh.store.root());
                let id = req.id.clone();
                let cache_err = |e: &dyn std::fmt::Display| {
                    sh.located(origin, format!("cache mount {id}: {e}"))
                };
                let (lease, host) = match step.mount_from.get(i).cloned().flatten() {
                    // Seeded from a stage: its `source` directory is the cache's
                    // content (and an owner/mode given make an empty one, as
                    // BuildKit's mkdir of /cache over the stage does).
                    Some(input) => {
                        let (key, st) = input_key(sh, &input, origin)?;
                        let path = format!("/{}", sub.clone().unwrap_or_default());
                        let owned = !req.base.is_empty();
                        req.base = format!("from {key}:{path} {}", req.base);
                        let view = sh.view(&st.layers)?;
                        let seed = cache_mounts::seed_from_stage(&view, &path);
                        let seed = (!owned).then_some(&seed as &cache_mounts::Seed);
                        let lease = mounts
                            .acquire_seeded(&req, seed)
                            .map_err(|e| cache_err(&e))?;
                        let host = lease.dir().to_path_buf();
                        (lease, host)
                    }
                    None => {
                        let lease = mounts.acquire(&req).map_err(|e| cache_err(&e))?;
                        let host = match &sub {
                            Some(rel) => lease.subdir(rel).map_err(|e| cache_err(&e))?,
                            None => lease.dir().to_path_buf(),
                        };
                        (lease, host)
                    }
                };
                out.key_parts.push((
                    format!("cache:{target}"),
                    format!("{}{}", req.base, sub.unwrap_or_default()),
                ));
                out.specs.push(MountSpec::Bind {
                    // `host` was resolved inside the cache; the sandbox opens
                    // it inside the cache directory again when it mounts it.
                    path: format!(
                        "/{}",
                        host.strip_prefix(lease.dir())
                            .unwrap_or(Path::new(""))
                            .to_string_lossy()
                    ),
                    root: lease.dir().to_path_buf(),
                    target,
                    readonly: m.read_only,
                });
                out._guards.push(Box::new(lease));
            }
            MountType::Tmpfs => {
                let target =
                    target.ok_or_else(|| sh.located(origin, "mount: the target is required"))?;
                out.key_parts
                    .push((format!("tmpfs:{target}"), m.size_limit.to_string()));
                out.specs.push(MountSpec::Tmpfs {
                    target,
                    size_bytes: (m.size_limit > 0).then_some(m.size_limit),
                });
            }
            MountType::Secret => {
                let id =
                    m.id.clone()
                        .or_else(|| {
                            m.target
                                .as_ref()
                                .and_then(|t| t.rsplit('/').next().map(String::from))
                        })
                        .ok_or_else(|| sh.located(origin, "secret mount: give id= or target="))?;
                let Some(content) = sh.opts.secrets.get(&id) else {
                    if m.required {
                        return Err(sh.located(
                            origin,
                            format!(
                                "secret {id}: not found (give it with --secret id={id},src=FILE)"
                            ),
                        ));
                    }
                    continue;
                };
                if let Some(var) = &m.env {
                    out.extra_env
                        .push(format!("{var}={}", String::from_utf8_lossy(content)));
                    if m.target.is_none() {
                        out.key_parts
                            .push((format!("secret-env:{var}"), id.clone()));
                        continue;
                    }
                }
                let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
                out.key_parts.push((format!("secret:{target}"), id.clone()));
                out.specs.push(MountSpec::Secret {
                    target,
                    content: content.clone(),
                    mode: m.mode.unwrap_or(0o400),
                    uid: m.uid.unwrap_or(0),
                    gid: m.gid.unwrap_or(0),
                });
            }
            MountType::Ssh => {
                // BuildKit's dispatchSSH and llb.AddSSHSocket.
                if m.source.is_some() {
                    return Err(sh.located(origin, "ssh mount: ssh does not support source"));
                }
                let id =
                    m.id.clone()
                        .filter(|i| !i.is_empty())
                        .unwrap_or_else(|| crate::ssh::DEFAULT_ID.to_string());
                let target =
                    target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_index}"));
                ssh_index += 1;
                out.ssh_auth_sock.get_or_insert_with(|| target.clone());
                let (uid, gid, mode) = (
                    m.uid.unwrap_or(0),
                    m.gid.unwrap_or(0),
                    m.mode.unwrap_or(0o600),
                );
                // The id and the socket's place and owner, never the agent or its keys.
                out.key_parts.push((
                    format!("ssh:{target}"),
                    format!("{id} {uid}:{gid} {mode:o} required={}", m.required),
                ));
                let Some(agent) = sh.opts.ssh.get(&id) else {
                    if m.required {
                        return Err(sh.located(
                            origin,
                            format!(
                                "no SSH key {id:?} forwarded from the client: give it with --ssh {id} (the agent of $SSH_AUTH_SOCK), --ssh {id}=SOCKET or --ssh {id}=KEYFILE[,KEYFILE…]"
                            ),
                        ));
                    }
                    continue;
                };
                let socket = crate::ssh::StepSocket::start(agent, uid, gid, mode).map_err(|e| {
                    sh.located(
                        origin,
                        format!("ssh mount {id}: making the agent socket: {e}"),
                    )
                })?;
                out.specs.push(MountSpec::Bind {
                    root: socket.dir().to_path_buf(),
                    path: format!("/{}", crate::ssh::STEP_SOCKET_NAME),
                    target,
                    readonly: false,
                });
                out._guards.push(Box::new(socket));
            }
        }
    }
    Ok(out)
}
