//! COPY, ADD and WORKDIR: filesystem steps that need no process. They write
//! straight into the step's upper directory, reading the stage's filesystem
//! through a [`LayeredView`] of its snapshots (no mount, so they work the same
//! as root and rootless).

use super::cache::{KeyBuilder, StepRecord};
use super::stage::{input_key, StageState, StepCtx};
use super::{BuildError, NamedContext};
use crate::context::Context;
use crate::copy::{self, CopyOp, CopySource};
use crate::fsview::LayeredView;
use kiln_dockerfile::instructions::Instruction;
use kiln_dockerfile::stages::Step;
use kiln_oci::digest::Digest;
use serde::Serialize;

#[derive(Serialize)]
struct CopyKey<'a> {
    add: bool,
    sources: &'a [String],
    inline: Vec<(&'a str, &'a str)>,
    dest: &'a str,
    workdir: &'a str,
    chown: &'a Option<String>,
    chmod: &'a Option<String>,
    parents: bool,
    link: bool,
    excludes: &'a [String],
    checksum: &'a Option<String>,
    unpack: Option<bool>,
    source: String,
}

pub(crate) fn copy_step(
    ctx: &StepCtx<'_, '_>,
    state: &StageState,
    instr: &Instruction,
    step: &Step,
) -> Result<(Digest, StepRecord, String), BuildError> {
    let sh = ctx.sh;
    let origin = instr.origin();
    let workdir = state.workdir();
    let (op, link, from_name) = match instr {
        Instruction::Copy(c) => (
            CopyOp {
                sources: c.sources.clone(),
                inline: c
                    .inline
                    .iter()
                    .map(|f| (f.name.clone(), f.content.clone().into_bytes()))
                    .collect(),
                dest: c.dest.clone(),
                workdir: workdir.clone(),
                chown: c.chown.clone(),
                chmod: c.chmod.clone(),
                parents: c.parents,
                excludes: c.excludes.clone(),
                is_add: false,
                checksum: None,
                unpack: None,
            },
            c.link,
            c.from.clone(),
        ),
        Instruction::Add(a) => (
            CopyOp {
                sources: a.sources.clone(),
                inline: a
                    .inline
                    .iter()
                    .map(|f| (f.name.clone(), f.content.clone().into_bytes()))
                    .collect(),
                dest: a.dest.clone(),
                workdir: workdir.clone(),
                chown: a.chown.clone(),
                chmod: a.chmod.clone(),
                parents: false,
                excludes: a.excludes.clone(),
                is_add: true,
                checksum: a.checksum.clone(),
                unpack: a.unpack,
            },
            a.link,
            None,
        ),
        _ => {
            return Err(BuildError::other(
                "copy_step called for a non-copy instruction",
            ))
        }
    };

    // Where the sources come from, and what of them goes into the key.
    enum Src {
        Context(std::sync::Arc<Context>),
        State(std::sync::Arc<StageState>),
    }
    let named_dir = from_name
        .as_ref()
        .and_then(|n| match sh.opts.named_contexts.get(n) {
            Some(NamedContext::Dir(d)) => Some(d.clone()),
            _ => None,
        });
    let (src, source_key) = match (&step.copy_from, named_dir) {
        (_, Some(dir)) => {
            let c = Context::load_with_ignore_file(&dir, None)
                .map_err(|e| sh.located(origin, format!("build context {}: {e}", dir.display())))?;
            let d = crate::context_hash::hash_context(&c, None)
                .map_err(|e| sh.located(origin, format!("build context {}: {e}", dir.display())))?;
            let (c, d) = (std::sync::Arc::new(c), std::sync::Arc::new(d));
            let key = copy::context_sources_digest(&op, &c, &d)
                .map_err(|e| sh.located(origin, e.to_string()))?;
            (Src::Context(c), key.to_string())
        }
        (None, None) => {
            let key = copy::context_sources_digest(&op, &sh.opts.context, &sh.opts.context_digests)
                .map_err(|e| sh.located(origin, e.to_string()))?;
            (Src::Context(sh.opts.context.clone()), key.to_string())
        }
        (Some(input), None) => {
            let (key, st) = input_key(sh, input, origin)?;
            // Content-based: what the COPY reads from the stage, so a stage that
            // was rebuilt with the same artifact keeps the following steps cached.
            let memo_key = {
                let mut k = KeyBuilder::new("copy-from-sources", &key);
                k.json(&(&op.sources, &op.excludes, op.parents));
                k.finish()
            };
            let digest = match sh.cache.memo(&memo_key) {
                Some(d) => d,
                None => {
                    let view = sh.view(&st.layers)?;
                    let d = copy::view_sources_digest(&op, &view)
                        .map_err(|e| sh.located(origin, e.to_string()))?;
                    sh.cache
                        .put_memo(&memo_key, &d)
                        .map_err(BuildError::other)?;
                    d
                }
            };
            (Src::State(st), digest.to_string())
        }
    };
    // ADD of a URL without --checksum: what it serves now.
    let remote = copy::url_sources_digest(&op).map_err(|e| sh.located(origin, e.to_string()))?;
    let source_key = match remote {
        Some(d) => format!("{source_key}+{d}"),
        None => source_key,
    };
    let key = {
        let mut k = KeyBuilder::new(if op.is_add { "add" } else { "copy" }, &state.key);
        k.json(&CopyKey {
            add: op.is_add,
            sources: &op.sources,
            inline: match instr {
                Instruction::Copy(c) => c
                    .inline
                    .iter()
                    .map(|f| (f.name.as_str(), f.content.as_str()))
                    .collect(),
                Instruction::Add(a) => a
                    .inline
                    .iter()
                    .map(|f| (f.name.as_str(), f.content.as_str()))
                    .collect(),
                _ => Vec::new(),
            },
            dest: &op.dest,
            workdir: &workdir,
            chown: &op.chown,
            chmod: &op.chmod,
            parents: op.parents,
            link,
            excludes: &op.excludes,
            checksum: &op.checksum,
            unpack: op.unpack,
            source: source_key,
        });
        k.finish()
    };
    // BuildKit's commit message: --parents, --chown, --chmod (not --link,
    // --from, --exclude), the sources, heredoc names, the destination.
    let created_by = {
        let mut words = Vec::new();
        if op.parents {
            words.push("--parents".to_string());
        }
        if let Some(c) = &op.chown {
            words.push(format!("--chown={c}"));
        }
        if let Some(c) = &op.chmod {
            words.push(format!("--chmod={c}"));
        }
        words.extend(op.sources.iter().cloned());
        words.extend(op.inline.iter().map(|(n, _)| format!("<<{n}")));
        words.push(op.dest.clone());
        format!(
            "{} {} # buildkit",
            if op.is_add { "ADD" } else { "COPY" },
            words.join(" ")
        )
    };
    let rec = ctx.cached(key, |upper, _work| {
        // With --link the layer is made independently of what is below it.
        let parent = if link {
            LayeredView::new(Vec::new())
        } else {
            sh.view(&state.layers)?
        };
        let result = match &src {
            Src::Context(c) => copy::copy(&op, CopySource::Context(c), &parent, upper),
            Src::State(st) => {
                let view = sh.view(&st.layers)?;
                copy::copy(&op, CopySource::View(&view), &parent, upper)
            }
        };
        result
            .map(|_| ())
            .map_err(|e| sh.located(origin, e.to_string()))
    })?;
    Ok((key, rec, created_by))
}

/// WORKDIR: creates the directory (and missing parents) owned by the current
/// USER, mode 0755, as BuildKit's `Mkdir(wd, 0755, WithParents, WithUser)`.
/// An existing directory gives an empty diff: an empty layer, as in BuildKit.
pub(crate) fn workdir_step(
    ctx: &StepCtx<'_, '_>,
    state: &StageState,
    wd: &str,
) -> Result<(Digest, StepRecord), BuildError> {
    let sh = ctx.sh;
    let user = state.user();
    let key = {
        let mut k = KeyBuilder::new("workdir", &state.key);
        k.part(wd).part(&user);
        k.finish()
    };
    let rec = ctx.cached(key, |upper, _work| {
        let view = sh.view(&state.layers)?;
        let (uid, gid) = if user.is_empty() {
            (0, 0)
        } else {
            let read = |p: &str| {
                copy::chown::read_user_file(&view, p)
                    .map_err(|e| BuildError::other(format!("WORKDIR {wd}: {e}")))
            };
            let passwd = read("/etc/passwd")?;
            let group = read("/etc/group")?;
            let u = kiln_sandbox::user::resolve_user(&user, passwd.as_deref(), group.as_deref())
                .map_err(|e| BuildError::other(format!("WORKDIR {wd}: {e}")))?;
            (u.uid, u.gid)
        };
        copy::make_workdir(&view, upper, wd, (uid, gid))
            .map(|_| ())
            .map_err(|e| BuildError::other(format!("WORKDIR {wd}: {e}")))
    })?;
    Ok((key, rec))
}
