//! COPY and ADD: filesystem steps that need no process. They write straight
//! into the step's upper directory, reading the stage's filesystem through a
//! [`LayeredView`] of its snapshots (no mount, so they work the same as root
//! and rootless).

use crate::cache::explain::InputsBuilder;
use crate::cache::steps::KeyBuilder;
use crate::ops::copy::{self, CopyOp, CopySource};
use crate::snapshot::merged_view::LayeredView;
use crate::solver::state::StageState;
use crate::solver::step::StepDone;
use crate::solver::step::{input_key, StepCtx};
use crate::solver::{BuildError, NamedContext};
use crate::source::context::Context;
use kiln_dockerfile::instructions::{self as ins, Origin};
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

/// The instruction a copy step runs (variables expanded).
#[derive(Clone, Copy)]
pub(crate) enum CopyInstr<'a> {
    Copy(&'a ins::Copy),
    Add(&'a ins::Add),
}

pub(crate) fn copy_step(
    ctx: &StepCtx<'_, '_>,
    state: &StageState,
    origin: &Origin,
    instr: CopyInstr<'_>,
    step: &Step,
) -> Result<(Digest, StepDone, String), BuildError> {
    let sh = ctx.sh;
    let workdir = state.workdir();
    let (op, link, from_name) = match instr {
        CopyInstr::Copy(c) => (
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
        CopyInstr::Add(a) => (
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
    let mut inputs = InputsBuilder::new(&origin.code);
    inputs.args(
        &state.build_args,
        |n| state.get_env(n).map(str::to_string),
        Some(&origin.code),
    );
    let mut files = Vec::new();
    let (src, source_key) = match (&step.copy_from, named_dir) {
        (_, Some(dir)) => {
            let c = Context::load_with_ignore_file(&dir, None)
                .map_err(|e| sh.located(origin, format!("build context {}: {e}", dir.display())))?;
            let d = crate::source::hash::hash_context(&c, None)
                .map_err(|e| sh.located(origin, format!("build context {}: {e}", dir.display())))?;
            let (c, d) = (std::sync::Arc::new(c), std::sync::Arc::new(d));
            let key = copy::context_sources_digest_listed(&op, &c, &d, Some(&mut files))
                .map_err(|e| sh.located(origin, e.to_string()))?;
            (Src::Context(c), key.to_string())
        }
        (None, None) => {
            let key = copy::context_sources_digest_listed(
                &op,
                &sh.opts.context.files,
                &sh.opts.context.digests,
                Some(&mut files),
            )
            .map_err(|e| sh.located(origin, e.to_string()))?;
            (Src::Context(sh.opts.context.files.clone()), key.to_string())
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
                        .map_err(BuildError::StepCache)?;
                    d
                }
            };
            inputs.add(
                format!("from:{}", from_name.as_deref().unwrap_or("another stage")),
                &digest.to_string(),
            );
            (Src::State(st), digest.to_string())
        }
    };
    inputs.files(&files);
    // ADD of a URL without --checksum: what it serves now.
    let remote = copy::url_sources_digest(&op).map_err(|e| sh.located(origin, e.to_string()))?;
    if let Some(d) = &remote {
        inputs.add("downloaded files", &d.to_string());
    }
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
                CopyInstr::Copy(c) => c
                    .inline
                    .iter()
                    .map(|f| (f.name.as_str(), f.content.as_str()))
                    .collect(),
                CopyInstr::Add(a) => a
                    .inline
                    .iter()
                    .map(|f| (f.name.as_str(), f.content.as_str()))
                    .collect(),
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
    inputs.add(
        "options",
        &serde_json::to_string(&(
            &op.dest,
            &workdir,
            &op.chown,
            &op.chmod,
            op.parents,
            link,
            &op.excludes,
            &op.checksum,
            op.unpack,
            &op.inline,
        ))
        .unwrap_or_default(),
    );
    let rec = ctx.cached(key, inputs.finish(), |upper, _work| {
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
