//! The build executor: runs a [`Plan`] into an image in the store.
//!
//! Every needed stage runs on its own thread and waits only for the stages it
//! uses (its base, `COPY --from`, `RUN --mount=from=`); at most `jobs` RUN/COPY
//! steps execute at the same time. A stage is a chain of steps over a
//! [`StageState`] (layers + image config + environment); filesystem steps go
//! through the [`cache`] first and run only on a miss.

pub mod cache;
mod copy_step;
mod run;
mod stage;

use crate::context::Context;
use crate::context_hash::ContextDigests;
use crate::progress::{Clock, Event, ProgressSink};
use crate::snapshots::{Layer, Snapshots};
use cache::StepCache;
use kiln_dockerfile::stages::Plan;
use kiln_dockerfile::{DockerfileError, Source};
use kiln_oci::digest::Digest;
use kiln_oci::image::ImageConfig;
use kiln_oci::layer::Compression;
use kiln_oci::registry::{PullPolicy, RegistryContext};
use kiln_oci::store::Store;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

pub use stage::StageState;

/// Where a `--build-context name=…` points.
#[derive(Clone, Debug)]
pub enum NamedContext {
    /// A local directory (used like the main context by `COPY --from=name`).
    Dir(PathBuf),
    /// An image reference (`docker-image://ref`).
    Image(String),
    /// An image in an OCI layout directory (`oci-layout://dir[:tag|@digest]`),
    /// already imported into the store under this reference.
    StoredImage(String),
}

/// Everything a build needs besides the plan.
pub struct BuildOptions {
    /// The build context, loaded (and .dockerignore-filtered) and hashed.
    pub context: Arc<Context>,
    pub context_digests: Arc<ContextDigests>,
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// Skip the cache for every step (`--no-cache`).
    pub no_cache: bool,
    /// Skip the cache for the steps of these stages (`--no-cache-filter`).
    pub no_cache_stages: Vec<String>,
    /// At most this many RUN/COPY steps at once (`--jobs`).
    pub jobs: usize,
    pub pull: PullPolicy,
    pub registry: RegistryContext,
    /// `--secret id=…` contents, by id.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// The network of RUN steps without `--network` (`kiln build --network`):
    /// BuildKit's default is the host's.
    pub default_network: kiln_dockerfile::instructions::NetworkMode,
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: clamps file times in new layers and the image's times.
    pub source_date_epoch: Option<i64>,
}

/// What a finished build produced: the target stage's image, not yet stored as
/// a manifest (the caller picks the format and outputs).
pub struct BuildOutput {
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
    pub steps_run: usize,
    pub steps_cached: usize,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum BuildError {
    /// A user error located in the Dockerfile (bad expansion, missing COPY
    /// source, unknown user…).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Dockerfile(#[from] Box<DockerfileError>),
    /// A RUN step exited non-zero: `RUN npm run build (Dockerfile:8) exited with 2`,
    /// with the last lines of its output.
    #[error("{headline}")]
    StepFailed {
        headline: String,
        tail: Vec<String>,
        location: Box<DockerfileError>,
    },
    /// Something outside the Dockerfile failed (store, registry, sandbox setup).
    #[error("{0}")]
    Other(String),
    /// Another stage failed first; this one stopped.
    #[error("cancelled")]
    Cancelled,
}

impl BuildError {
    pub fn other(e: impl std::fmt::Display) -> BuildError {
        BuildError::Other(e.to_string())
    }
}

/// A finished stage: its final state, or `Err` when it failed or was cancelled.
type StageOutcome = Result<Arc<StageState>, ()>;

/// Shared by the stage threads of one build.
pub(crate) struct Shared<'a> {
    pub plan: &'a Plan,
    pub src: &'a Source,
    pub opts: &'a BuildOptions,
    pub store: &'a Store,
    pub snapshots: Snapshots,
    pub cache: StepCache,
    pub progress: &'a dyn ProgressSink,
    pub clock: Clock,
    pub jobs: Semaphore,
    pub failed: AtomicBool,
    /// Vertex numbers: the first vertex id of each stage (FROM is its first).
    pub first_vertex: Vec<usize>,
    pub steps_run: AtomicUsize,
    pub steps_cached: AtomicUsize,
    /// The base image of each needed stage built on one, by stage index.
    pub bases: BTreeMap<usize, stage::BaseImage>,
    results: Mutex<Vec<Option<StageOutcome>>>,
    done: Condvar,
}

impl Shared<'_> {
    /// Waits for stage `index` to finish; `Err` when it (or the build) failed.
    pub fn wait_stage(&self, index: usize) -> Result<Arc<StageState>, BuildError> {
        let mut r = self.results.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(res) = &r[index] {
                return res.clone().map_err(|_| BuildError::Cancelled);
            }
            if self.failed.load(Ordering::SeqCst) {
                return Err(BuildError::Cancelled);
            }
            r = self.done.wait(r).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn finish_stage(&self, index: usize, res: StageOutcome) {
        let mut r = self.results.lock().unwrap_or_else(|e| e.into_inner());
        if res.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        r[index] = Some(res);
        self.done.notify_all();
    }

    /// A read-only merged view of `layers` (their snapshots, extracted as needed).
    pub fn view(&self, layers: &[Layer]) -> Result<crate::fsview::LayeredView, BuildError> {
        let stack = self
            .snapshots
            .stack(self.store, layers)
            .map_err(BuildError::other)?;
        Ok(crate::fsview::LayeredView::new(stack))
    }

    pub fn emit(&self, event: Event) {
        self.progress.emit(event);
    }

    /// A located error on `origin`'s lines.
    pub fn located(
        &self,
        origin: &kiln_dockerfile::instructions::Origin,
        msg: impl Into<String>,
    ) -> BuildError {
        BuildError::Dockerfile(Box::new(DockerfileError::at(
            self.src,
            origin.start_line,
            origin.end_line,
            msg,
        )))
    }
}

/// A counting semaphore bounding concurrent steps.
pub(crate) struct Semaphore {
    free: Mutex<usize>,
    cv: Condvar,
}

pub(crate) struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    fn new(n: usize) -> Semaphore {
        Semaphore {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }
    pub fn acquire(&self) -> Permit<'_> {
        let mut f = self.free.lock().unwrap_or_else(|e| e.into_inner());
        while *f == 0 {
            f = self.cv.wait(f).unwrap_or_else(|e| e.into_inner());
        }
        *f -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut f = self.0.free.lock().unwrap_or_else(|e| e.into_inner());
        *f += 1;
        self.0.cv.notify_one();
    }
}

/// Runs `plan` (parsed from `src`) and returns the target stage's image.
pub fn build(
    plan: &Plan,
    src: &Source,
    opts: &BuildOptions,
    store: &Store,
    progress: &dyn ProgressSink,
) -> Result<BuildOutput, BuildError> {
    let clock = Clock::start();
    // Blobs of this build become durable together, before an index names them.
    store.defer_sync();
    // Base images first: their ONBUILD triggers become steps of the plan.
    let mut plan = plan.clone();
    let bases = stage::resolve_base_images(&mut plan, src, opts, store, progress, &clock)?;
    let plan = &plan;
    let snapshots = Snapshots::open(store.root()).map_err(BuildError::other)?;
    let cache = StepCache::open(store.root()).map_err(BuildError::other)?;
    let mut first_vertex = vec![0; plan.stages.len()];
    let mut vertices = 0;
    for st in plan.needed_stages() {
        first_vertex[st.index] = vertices;
        vertices += 1 + st.steps.iter().filter(|s| stage::is_fs_step(s)).count();
    }
    progress.emit(Event::BuildStarted {
        at_ms: clock.now_ms(),
        steps: vertices,
        stages: plan.needed_stages().map(|s| s.display_name()).collect(),
    });
    let shared = Shared {
        plan,
        src,
        opts,
        store,
        snapshots,
        cache,
        progress,
        clock,
        jobs: Semaphore::new(opts.jobs),
        failed: AtomicBool::new(false),
        first_vertex,
        steps_run: AtomicUsize::new(0),
        steps_cached: AtomicUsize::new(0),
        bases,
        results: Mutex::new(vec![None; plan.stages.len()]),
        done: Condvar::new(),
    };
    let errors: Mutex<Vec<BuildError>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for st in plan.needed_stages() {
            let shared = &shared;
            let errors = &errors;
            s.spawn(move || {
                let res = stage::build_stage(shared, st);
                match res {
                    Ok(state) => shared.finish_stage(st.index, Ok(Arc::new(state))),
                    Err(e) => {
                        if !matches!(e, BuildError::Cancelled) {
                            errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                        }
                        shared.finish_stage(st.index, Err(()));
                    }
                }
            });
        }
    });
    let mut errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if !errors.is_empty() {
        return Err(errors.remove(0));
    }
    let target = shared.wait_stage(plan.target)?;
    let steps_run = shared.steps_run.load(Ordering::SeqCst);
    let steps_cached = shared.steps_cached.load(Ordering::SeqCst);
    Ok(BuildOutput {
        config: target.image_config(),
        layers: target.layers.clone(),
        steps_run,
        steps_cached,
    })
}

/// The digest that stands for "no filesystem yet" (FROM scratch).
pub(crate) fn scratch_key(platform: &str) -> Digest {
    let mut k = cache::KeyBuilder::new("scratch", &Digest::of(b""));
    k.part(platform);
    k.finish()
}
