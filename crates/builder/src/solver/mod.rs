//! The build executor: runs a [`Plan`] into an image in the store.
//!
//! Every needed stage runs on its own thread and waits only for the stages it
//! uses (its base, `COPY --from`, `RUN --mount=from=`); at most `jobs` RUN/COPY
//! steps execute at the same time. A stage is a chain of steps over a
//! [`StageState`] (layers + image config + environment); filesystem steps go
//! through the [`cache`] first and run only on a miss.

pub(crate) mod dispatch;
mod stage;
mod state;
mod step;

use crate::cache::remote::{CacheLocation, CacheUsage, RemoteCache};
use crate::cache::steps::StepCache;
use crate::ops::copy::CopyError;
use crate::progress::{Clock, Event, Millis, ProgressSink};
use crate::snapshot::merged_view::UserFileError;
use crate::snapshot::SnapshotError;
use crate::snapshot::{Layer, Snapshots, StageLayer};
use crate::source::context::ContextError;
use crate::source::BuildContext;
use kiln_dockerfile::stages::Plan;
use kiln_dockerfile::{DockerfileError, Source};
use kiln_oci::digest::Digest;
use kiln_oci::image::ImageConfig;
use kiln_oci::registry::{PullPolicy, RegistryContext};
use kiln_oci::store::{
    BlobRef, BuildRecord, StageRecord, StepResult, Store, StoreError, BUILD_RECORD_VERSION,
};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

pub use state::StageState;
pub(crate) use step::unix_now;

/// Where a `--build-context name=…` points.
#[derive(Clone, Debug)]
pub enum NamedContext {
    /// A local directory (used like the main context by `COPY --from=name`).
    Dir(PathBuf),
    /// An image reference (`docker-image://ref`).
    Image(String),
    /// An image in an OCI layout directory (`oci-layout://dir[:tag|@digest]`),
    /// already imported into the store under this reference (never pulled).
    StoredImage(String),
    /// An image another build of this process is making (compose's
    /// `service:NAME`): a stage that uses it waits for it, the rest of the
    /// build does not. Never pulled.
    Pending(Arc<dyn PendingImage>),
}

/// An image being built elsewhere in this process ([`NamedContext::Pending`]).
pub trait PendingImage: Send + Sync + std::fmt::Debug {
    /// Blocks until the image is stored and returns its reference in the store,
    /// or says why there will be none (that build failed).
    fn wait(&self) -> Result<String, String>;
}

/// Everything a build needs besides the plan.
pub struct BuildOptions {
    /// The build context, loaded (and .dockerignore-filtered) and hashed.
    pub context: BuildContext,
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
    /// `--ssh` agents, by id, for `RUN --mount=type=ssh`.
    pub ssh: crate::ssh::SshAgents,
    /// The network of RUN steps without `--network` (`kiln build --network`):
    /// BuildKit's default is the host's.
    pub default_network: kiln_dockerfile::instructions::NetworkMode,
    /// `(host, address)` lines added to every RUN's `/etc/hosts` (`--add-host`).
    pub extra_hosts: Vec<(String, String)>,
    /// Size of every RUN's `/dev/shm` in bytes (default 64 MiB).
    pub shm_size: Option<u64>,
    /// Resource limits of every RUN step (`--ulimit`).
    pub ulimits: Vec<kiln_sandbox::Ulimit>,
    /// `SOURCE_DATE_EPOCH`: clamps file times in new layers and the image's times.
    pub source_date_epoch: Option<i64>,
    /// How RUN steps are isolated (`kiln build --isolation`).
    pub isolation: Isolation,
    /// `--cache-from`: caches to look keys up in when the store has no record,
    /// tried in order.
    pub cache_from: Vec<CacheLocation>,
    /// When the image's only outputs are pushes to these registries
    /// (`kiln build --push` and nothing that reads the layers): the target's
    /// layers a `--cache-from` cache in one of them holds are not fetched
    /// (the push has the registry mount them); the stored image names them
    /// and [`crate::SourcesFetcher`] brings them when something reads them.
    pub push_only_to: Option<Vec<String>>,
    /// Work out why each step that runs missed the cache
    /// ([`Event::CacheMiss`]; `--explain-cache`, `--progress=plain`).
    pub explain_cache: bool,
    /// Blobs an output will need (a push, `--cache-to`): written in the
    /// background as each step's layer is made, while the build goes on.
    pub precompress: Option<Precompress>,
    /// Shared by builds that stand or fall together (the platforms of one
    /// `--platform a,b` build): a build that fails cancels it, and each build
    /// then starts no step and kills the RUN steps it runs. Without one, the
    /// build has its own (its stages stand or fall together).
    pub cancel: Option<Arc<crate::Cancel>>,
}

/// Which layers a build writes blobs of while it runs (see
/// [`BuildOptions::precompress`]), and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Precompress {
    pub compression: kiln_oci::layer::Compression,
    /// Every stage's layers (`--cache-to …,mode=max`), else the target's.
    pub all_stages: bool,
}

/// `kiln build --isolation`: how RUN steps are isolated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Namespaces where this process may create them (probed once, before the
    /// first RUN step that runs), else chroot isolation, said in a warning.
    #[default]
    Auto,
    /// Always namespaces (a step fails where they cannot be created).
    Namespaces,
    /// No new namespaces: each step runs chrooted into a copy of its layers
    /// ([`kiln_sandbox::Isolation::Chroot`]).
    Chroot,
}

/// How this build runs its RUN steps, decided once (see [`Shared::run_mode`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RunMode {
    /// Over an overlay mount; else over a copy of the layers
    /// ([`kiln_sandbox::CopySnapshot`]) diffed by a walk afterwards.
    pub overlay: bool,
    pub isolation: kiln_sandbox::Isolation,
}

/// What a finished build produced: the target stage's image, not yet stored as
/// a manifest (the caller picks the format and outputs).
pub struct BuildOutput {
    /// What the build did, stage by stage (to keep beside the image with
    /// [`Store::put_build_record`]).
    pub record: BuildRecord,
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
    pub steps_run: usize,
    pub steps_cached: usize,
    /// The step records and memos the build used (what `--cache-to` exports).
    pub cache: CacheUsage,
    /// The caches of `--cache-from`, as imported (an export takes layer blobs
    /// the store lacks from them).
    pub remote_cache: Option<Arc<RemoteCache>>,
    /// The base images the stages built on, as resolved (for provenance).
    pub base_images: Vec<ResolvedBase>,
}

/// A stage's base image as the build resolved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedBase {
    /// The stage's Dockerfile index.
    pub stage: usize,
    /// The image as the FROM names it (args expanded).
    pub reference: String,
    /// The platform it was chosen for (`linux/amd64`).
    pub platform: String,
    /// Its manifest's digest.
    pub manifest: Digest,
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
    /// The build context could not be loaded or hashed.
    #[error("build context {}: {source}", dir.display())]
    Context {
        dir: PathBuf,
        #[source]
        source: ContextError,
    },
    /// Layer snapshots could not be extracted, stacked or installed.
    #[error("{0}")]
    Snapshot(#[source] SnapshotError),
    /// The step cache (the records of step results) could not be read or written.
    #[error("{0}")]
    StepCache(#[source] std::io::Error),
    /// Waiting for another build computing the same step failed.
    #[error("claiming the cache key of {step}: {source}")]
    Claim {
        step: String,
        #[source]
        source: std::io::Error,
    },
    /// A step's upper or work directory could not be made.
    #[error("{}: {source}", path.display())]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A step's upper directory could not be compared with the layers below it
    /// (to leave unchanged entries out of its layer).
    #[error("comparing the step's changes with the filesystem below: {0}")]
    Differ(#[source] std::io::Error),
    /// The store refused a blob.
    #[error("{0}")]
    Store(#[source] StoreError),
    /// Storing what a build made (the image, its names) failed: `action` says what.
    #[error("{action}: {source}")]
    Output {
        action: String,
        #[source]
        source: StoreError,
    },
    /// WORKDIR could not make its directory.
    #[error("WORKDIR {path}: {source}")]
    Workdir {
        path: String,
        #[source]
        source: WorkdirError,
    },
    /// A layer of the target image (known from `--cache-from` or left in its
    /// base image's registry) could not be fetched.
    #[error("{0}")]
    RemoteCache(String),
    /// Another stage failed first; this one stopped.
    #[error("cancelled")]
    Cancelled,
}

/// Why WORKDIR could not make its directory.
#[derive(Debug, thiserror::Error)]
pub enum WorkdirError {
    /// The image's passwd or group file could not be read.
    #[error(transparent)]
    UserFile(#[from] UserFileError),
    /// USER names a user or group the image does not have.
    #[error(transparent)]
    User(#[from] kiln_sandbox::user::UserError),
    #[error(transparent)]
    Make(#[from] CopyError),
}

/// A finished stage: its final state, or `Err` when it failed or was cancelled.
type StageOutcome<T> = Result<T, ()>;

/// The outcomes of a build's stages, each published once, each with its own
/// condition variable: finishing a stage wakes only the threads waiting for
/// that stage. (One condition for all stages woke every waiting thread on
/// every finish: O(stages²) wake-ups, 35 s of futex traffic for a chain of
/// 3000 stages.)
///
/// A stage's result is dropped once every stage that reads it has finished,
/// so a long chain of stages keeps two or three states, not all of them.
pub(crate) struct StageBoard<T> {
    slots: Vec<StageSlot<T>>,
    /// Per stage: how many readers (stages that read it, and the build's end
    /// for the target) have not finished yet.
    readers: Vec<AtomicUsize>,
    /// Times a waiting thread was woken, for the test that this stays
    /// linear in the number of stages.
    wakeups: AtomicUsize,
}

struct StageSlot<T> {
    outcome: Mutex<Option<StageOutcome<T>>>,
    done: Condvar,
}

impl<T: Clone> StageBoard<T> {
    /// A board for stages with `readers[i]` readers each.
    fn new(readers: Vec<usize>) -> Self {
        StageBoard {
            slots: readers
                .iter()
                .map(|_| StageSlot {
                    outcome: Mutex::new(None),
                    done: Condvar::new(),
                })
                .collect(),
            readers: readers.into_iter().map(AtomicUsize::new).collect(),
            wakeups: AtomicUsize::new(0),
        }
    }

    /// Waits until stage `index` is finished; `Err` when it failed, or
    /// when `failed` (the whole build failed) is set first.
    fn wait(&self, index: usize, failed: &AtomicBool) -> StageOutcome<T> {
        let slot = &self.slots[index];
        let mut outcome = slot.outcome.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(res) = &*outcome {
                return res.clone();
            }
            if failed.load(Ordering::SeqCst) {
                return Err(());
            }
            outcome = slot.done.wait(outcome).unwrap_or_else(|e| e.into_inner());
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes stage `index`'s outcome; `reads` are the stages it read,
    /// each of which has one reader fewer now (its result dropped at none:
    /// it then reads as failed, which no reader is left to see). A failure
    /// sets `failed` and wakes every waiter, so that all stages stop.
    fn finish(
        &self,
        index: usize,
        res: StageOutcome<T>,
        reads: impl IntoIterator<Item = usize>,
        failed: &AtomicBool,
    ) {
        if res.is_err() {
            // Each waiter checks `failed` under its slot's lock before it
            // waits, so taking that lock here cannot miss one.
            failed.store(true, Ordering::SeqCst);
            for slot in &self.slots {
                let _held = slot.outcome.lock().unwrap_or_else(|e| e.into_inner());
                slot.done.notify_all();
            }
        }
        let slot = &self.slots[index];
        *slot.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(res);
        slot.done.notify_all();
        for read in reads {
            if self.readers[read].fetch_sub(1, Ordering::SeqCst) == 1 {
                let slot = &self.slots[read];
                *slot.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(Err(()));
            }
        }
    }
}

/// A stage record's layers still being hashed, by index in its `layers`.
pub(crate) type PendingLayers = Vec<(usize, StageLayer)>;

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
    /// The caches of `--cache-from`.
    pub remote: Option<Arc<RemoteCache>>,
    results: StageBoard<Arc<StageState>>,
    run_mode: std::sync::OnceLock<RunMode>,
    /// Without overlay: the trees RUN steps ran on, kept for the next step
    /// on the same layers (see [`crate::snapshot::copied`]).
    pub copied_roots: crate::snapshot::copied::CopiedRoots,
    /// Keys of the steps that missed in this build → the name of the first
    /// step that missed in their chain (for `--explain-cache`'s cascades).
    pub missed: Mutex<HashMap<Digest, String>>,
    /// Per vertex: cached or ran, and how long it took (for the build record).
    step_results: Mutex<BTreeMap<usize, (StepResult, Millis)>>,
    /// The build record of each stage built so far, with the layers of it
    /// still being hashed (by index in its `layers`).
    stage_records: Mutex<Vec<(StageRecord, PendingLayers)>>,
    /// Steps' layers to hash in the background ([`Shared::layer_diff_later`]).
    layer_diffs: Mutex<Option<std::sync::mpsc::Sender<step::LayerDiff>>>,
    /// Step directories no diff_id names (a copy of a layer whose snapshot
    /// was there already, or one whose hash failed): removed at the build's
    /// end, when no step stacks them any more.
    remove_at_end: Mutex<Vec<PathBuf>>,
    /// Layers to write blobs of in the background ([`BuildOptions::precompress`]).
    precompress: Mutex<Option<std::sync::mpsc::Sender<BlobRef>>>,
    /// [`BuildOptions::cancel`], or this build's own.
    pub cancel: Arc<crate::Cancel>,
}

impl Shared<'_> {
    /// Whether a step's layer is hashed in the background while the build
    /// goes on (see [`crate::snapshot::step_layer`]): not under the copying
    /// snapshotter, whose kept trees follow layers by diff_id, nor with
    /// `KILN_LAYER_DIFF_OVERLAP=0` (the benchmarks' "before").
    pub fn layer_diff_in_background(&self) -> bool {
        self.run_mode.get().is_none_or(|m| m.overlay)
            && std::env::var_os("KILN_LAYER_DIFF_OVERLAP").is_none_or(|v| v != "0")
    }

    /// Hashes a step's layer in the background (at once, on this thread,
    /// when the build takes no more: it is ending).
    fn layer_diff_later(&self, job: step::LayerDiff) -> Result<(), BuildError> {
        let job = {
            let tx = self.layer_diffs.lock().unwrap_or_else(|e| e.into_inner());
            match &*tx {
                Some(tx) => match tx.send(job) {
                    Ok(()) => return Ok(()),
                    Err(e) => e.0,
                },
                None => job,
            }
        };
        job.run(self)
    }

    /// Removes `dir` at the build's end.
    fn remove_at_end(&self, dir: PathBuf) {
        self.remove_at_end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir);
    }

    /// Queues the blob of a layer step `stage` made for the background
    /// writers, if an output will need it ([`BuildOptions::precompress`]).
    pub fn precompress(&self, stage: usize, layer: &BlobRef) {
        let Some(p) = self.opts.precompress else {
            return;
        };
        if !(p.all_stages || stage == self.plan.target)
            || self.store.has_blob(&layer.digest)
            || self.store.local_layer(&layer.digest).is_none()
        {
            return;
        }
        if let Some(tx) = &*self.precompress.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = tx.send(layer.clone());
        }
    }

    /// How RUN steps run in this build: probed once ([`kiln_sandbox::chroot::probe`])
    /// when the first one runs, and said once when kiln falls back.
    pub fn run_mode(&self) -> RunMode {
        *self.run_mode.get_or_init(|| {
            let warn = |message: String| {
                self.emit(Event::Warning {
                    at_ms: self.clock.now_ms(),
                    message,
                })
            };
            let probe = match self.snapshots.work_dir() {
                Ok(dir) => kiln_sandbox::chroot::probe(dir.path()),
                Err(e) => kiln_sandbox::Probe::NoOverlayUpper(e.to_string()),
            };
            let with = |why: &str| {
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({why})")
                }
            };
            let chroot = RunMode {
                overlay: false,
                isolation: kiln_sandbox::Isolation::Chroot,
            };
            let namespaces = |overlay| RunMode {
                overlay,
                isolation: kiln_sandbox::Isolation::Namespaces,
            };
            match (self.opts.isolation, probe) {
                (Isolation::Chroot, _) => chroot,
                (_, kiln_sandbox::Probe::Full) => namespaces(true),
                (Isolation::Auto, kiln_sandbox::Probe::NoNamespaces(why)) => {
                    warn(format!(
                        "no mount namespace allowed: running steps with chroot isolation{}",
                        with(&why)
                    ));
                    chroot
                }
                // Asked for: the sandbox says what it cannot do.
                (Isolation::Namespaces, kiln_sandbox::Probe::NoNamespaces(_)) => {
                    namespaces(true)
                }
                (_, kiln_sandbox::Probe::NoOverlayUpper(why)) => {
                    warn(format!(
                        "overlay cannot keep its upper directory in the store{}: running steps on a copy of their layers",
                        with(&why)
                    ));
                    namespaces(false)
                }
            }
        })
    }

    /// Whether the build is to stop: it failed, or a build it stands
    /// together with did ([`BuildOptions::cancel`]).
    pub fn cancelled(&self) -> bool {
        self.failed.load(Ordering::SeqCst) || self.cancel.is_set()
    }

    /// Waits for stage `index` to finish; `Err` when it (or the build) failed.
    pub fn wait_stage(&self, index: usize) -> Result<Arc<StageState>, BuildError> {
        self.results
            .wait(index, &self.failed)
            .map_err(|_| BuildError::Cancelled)
    }

    fn finish_stage(&self, index: usize, res: StageOutcome<Arc<StageState>>) {
        // No stage built on this one: the trees its RUN steps left go now.
        let based_on = self
            .plan
            .needed_stages()
            .any(|s| matches!(s.base, kiln_dockerfile::stages::Base::Stage(b) if b == index));
        if let (Ok(state), false) = (&res, based_on) {
            // Kept trees hold finished layers only (a step on one waits for
            // the layers below it).
            let layers: Vec<Digest> = state
                .layers
                .iter()
                .map_while(|l| l.done().map(|l| l.diff_id))
                .collect();
            self.copied_roots.stage_done(&layers);
        }
        let reads = self.plan.stages[index].deps.iter().copied();
        self.results.finish(index, res, reads, &self.failed);
    }

    /// A read-only merged view of `layers` (their snapshots, extracted as needed).
    pub fn view(
        &self,
        layers: &[StageLayer],
    ) -> Result<crate::snapshot::merged_view::LayeredView, BuildError> {
        let stack = self
            .snapshots
            .stack_stage(self.store, layers)
            .map_err(BuildError::Snapshot)?;
        Ok(crate::snapshot::merged_view::LayeredView::new(stack))
    }

    pub fn emit(&self, event: Event) {
        let done = match &event {
            Event::StepCached { step, .. } => Some((*step, StepResult::Cached, 0)),
            Event::StepFinished {
                step, duration_ms, ..
            } => Some((*step, StepResult::Ran, *duration_ms)),
            _ => None,
        };
        if let Some((step, result, ms)) = done {
            self.step_results
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(step, (result, ms));
        }
        self.progress.emit(event);
    }

    /// How vertex `step` ended: cached, or ran for how long. A step that
    /// reported neither (none does) counts as ran.
    pub fn step_result(&self, step: usize) -> (StepResult, Millis) {
        self.step_results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&step)
            .copied()
            .unwrap_or((StepResult::Ran, 0))
    }

    /// Keeps a finished stage's part of the build record; `pending`: the
    /// layers (by index in `record.layers`) to fill in once hashed.
    pub fn record_stage(&self, record: StageRecord, pending: PendingLayers) {
        self.stage_records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((record, pending));
    }

    /// Shows what the imported caches had to warn about (a missing layer).
    pub fn emit_cache_warnings(&self) {
        for message in self.remote.iter().flat_map(|r| r.take_warnings()) {
            self.emit(Event::Warning {
                at_ms: self.clock.now_ms(),
                message,
            });
        }
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
    let base_images: Vec<ResolvedBase> = bases
        .iter()
        .filter_map(|(&index, b)| match &plan.stages[index].base {
            kiln_dockerfile::stages::Base::Image(r) => Some(ResolvedBase {
                stage: index,
                reference: r.clone(),
                platform: plan.stage_platform(index).to_string(),
                manifest: b.manifest,
            }),
            _ => None,
        })
        .collect();
    let remote = import_caches(opts, progress, &clock);
    // Layer blobs the store lacks: a cache's, or a base image's (a FROM
    // reads only the manifest and config, see `image_source`), fetched when a
    // snapshot of them is needed.
    let fetcher = Arc::new(crate::snapshot::Fetchers(
        remote
            .clone()
            .map(|r| r as Arc<dyn crate::snapshot::BlobFetcher>)
            .into_iter()
            .chain([Arc::new(crate::snapshot::SourcesFetcher {
                registry: opts.registry.clone(),
            }) as Arc<dyn crate::snapshot::BlobFetcher>])
            .collect(),
    ));
    let snapshots = Snapshots::open(store.root())
        .map_err(BuildError::Snapshot)?
        .with_fetcher(Some(
            fetcher.clone() as Arc<dyn crate::snapshot::BlobFetcher>
        ));
    let cache = StepCache::open(store.root())
        .map_err(BuildError::StepCache)?
        .with_remote(remote.clone());
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
    // Who reads each stage's result: the stages that need it (as base,
    // `COPY --from`, `RUN --mount=from=`), and the end of the build.
    let mut readers = vec![0; plan.stages.len()];
    for st in plan.needed_stages() {
        for &d in &st.deps {
            readers[d] += 1;
        }
    }
    readers[plan.target] += 1;
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
        remote: remote.clone(),
        results: StageBoard::new(readers),
        run_mode: std::sync::OnceLock::new(),
        // One per step that may run at once, and one more (a stage whose
        // next RUN waits for a permit keeps its tree meanwhile).
        copied_roots: crate::snapshot::copied::CopiedRoots::new(opts.jobs.max(1) + 1),
        missed: Mutex::default(),
        step_results: Mutex::new(BTreeMap::new()),
        stage_records: Mutex::new(Vec::new()),
        precompress: Mutex::new(None),
        layer_diffs: Mutex::new(None),
        remove_at_end: Mutex::new(Vec::new()),
        cancel: opts.cancel.clone().unwrap_or_default(),
    };
    let (diff_tx, diff_rx) = std::sync::mpsc::channel::<step::LayerDiff>();
    *shared.layer_diffs.lock().unwrap_or_else(|e| e.into_inner()) = Some(diff_tx);
    let diff_rx = Mutex::new(diff_rx);
    let (compress_tx, compress_rx) = std::sync::mpsc::channel::<BlobRef>();
    if opts.precompress.is_some() {
        *shared.precompress.lock().unwrap_or_else(|e| e.into_inner()) = Some(compress_tx);
    }
    let compress_rx = Mutex::new(compress_rx);
    let errors: Mutex<Vec<BuildError>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        // Writers of the blobs an output will need, each layer as soon as
        // a step made it (until the stages are done and the queue is empty).
        if let Some(p) = opts.precompress {
            let workers = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4);
            for _ in 0..workers {
                let rx = &compress_rx;
                let failed = &shared.failed;
                s.spawn(move || loop {
                    let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(layer) = next else { break };
                    if failed.load(Ordering::SeqCst) {
                        continue; // no output will need it
                    }
                    if let Err(e) = kiln_oci::export::layer_with_blob(store, &layer, p.compression)
                    {
                        // The output writes it again and says why it cannot.
                        tracing::debug!("writing the blob of layer {}: {e}", layer.digest);
                    }
                });
            }
        }
        // Hashers of the steps' layers (see `Shared::layer_diff_later`), until
        // the stages are done and the queue is empty.
        let hashers: Vec<_> = (0..std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(2, 4))
            .map(|_| {
                let (rx, shared, errors) = (&diff_rx, &shared, &errors);
                s.spawn(move || loop {
                    let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(job) = next else { break };
                    if let Err(e) = job.run(shared) {
                        if !matches!(e, BuildError::Cancelled) {
                            shared.cancel.cancel();
                            errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                        }
                    }
                })
            })
            .collect();
        let stages: Vec<_> = plan
            .needed_stages()
            .map(|st| {
                let shared = &shared;
                let errors = &errors;
                s.spawn(move || {
                    let res = stage::build_stage(shared, st);
                    match res {
                        Ok(state) => shared.finish_stage(st.index, Ok(Arc::new(state))),
                        Err(e) => {
                            if !matches!(e, BuildError::Cancelled) {
                                // This build's other stages and the builds
                                // standing with it stop now.
                                shared.cancel.cancel();
                                errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                            }
                            shared.finish_stage(st.index, Err(()));
                        }
                    }
                })
            })
            .collect();
        let mut panicked: Vec<_> = stages.into_iter().filter_map(|h| h.join().err()).collect();
        // No more steps: the hashers finish the queue and stop.
        shared
            .layer_diffs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        panicked.extend(hashers.into_iter().filter_map(|h| h.join().err()));
        // No more layers: the writers finish the queue and stop.
        shared
            .precompress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(p) = panicked.into_iter().next() {
            std::panic::resume_unwind(p);
        }
    });
    for dir in std::mem::take(
        &mut *shared
            .remove_at_end
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    ) {
        crate::snapshot::remove_tree(&dir);
    }
    let mut errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if !errors.is_empty() {
        return Err(errors.remove(0));
    }
    let target = shared.wait_stage(plan.target)?;
    // Every layer is hashed by now (the hashers are done, and none failed).
    let layers = target
        .layers
        .iter()
        .map(StageLayer::wait)
        .collect::<Result<Vec<Layer>, ()>>()
        .map_err(|()| BuildError::Cancelled)?;
    let config = target.image_config().ok_or(BuildError::Cancelled)?;
    // The output needs the target's layers: those only a cache or the base
    // image's registry had come now, but for a push alone to a registry
    // known to hold them (it mounts them there).
    let started = shared.clock.now_ms();
    let missing: Vec<&BlobRef> = layers
        .iter()
        .map(|l| &l.blob)
        .filter(|b| !store.has_layer(b))
        .filter(|b| {
            !opts.push_only_to.as_ref().is_some_and(|regs| {
                regs.iter()
                    .all(|r| !kiln_oci::registry::sources::known(store, r, &b.digest).is_empty())
            })
        })
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let missing: Vec<&BlobRef> = missing
        .into_iter()
        .filter(|b| seen.insert(b.digest))
        .collect();
    kiln_oci::parallel::try_for_each(
        &missing,
        4,
        |b| match crate::snapshot::BlobFetcher::fetch(fetcher.as_ref(), store, b) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "layer {} of the image is not in the store, and no registry is known to hold it",
                b.digest
            )),
            Err(e) => Err(e),
        },
        || "a fetch thread panicked".to_string(),
    )
    .map_err(BuildError::RemoteCache)?;
    if !missing.is_empty() {
        progress.emit(Event::Phase {
            at_ms: shared.clock.now_ms(),
            name: format!("fetching {} layer(s) of the image", missing.len()),
            duration_ms: Some(shared.clock.now_ms() - started),
        });
    }
    shared.emit_cache_warnings();
    let steps_run = shared.steps_run.load(Ordering::SeqCst);
    let steps_cached = shared.steps_cached.load(Ordering::SeqCst);
    let mut stages = Vec::new();
    for (mut record, pending) in shared
        .stage_records
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
    {
        for (i, layer) in pending {
            let layer = layer.wait().map_err(|()| BuildError::Cancelled)?;
            record.layers[i].blob = layer.blob;
            record.layers[i].diff_id = layer.diff_id;
        }
        stages.push(record);
    }
    stages.sort_by_key(|s| s.index);
    let record = BuildRecord {
        version: BUILD_RECORD_VERSION,
        dockerfile: src.name.clone(),
        target: plan.target,
        stages,
        duration_ms: clock.now_ms(),
    };
    Ok(BuildOutput {
        record,
        config,
        layers,
        steps_run,
        steps_cached,
        cache: shared.cache.usage(target.key),
        remote_cache: remote,
        base_images,
    })
}

/// Reads the caches of `--cache-from` (manifests and configs only).
fn import_caches(
    opts: &BuildOptions,
    progress: &dyn ProgressSink,
    clock: &Clock,
) -> Option<Arc<RemoteCache>> {
    if opts.cache_from.is_empty() {
        return None;
    }
    let started = clock.now_ms();
    let mut warn = |message: String| {
        progress.emit(Event::Warning {
            at_ms: clock.now_ms(),
            message,
        })
    };
    let remote = RemoteCache::import(&opts.cache_from, &opts.registry, &mut warn);
    progress.emit(Event::Phase {
        at_ms: clock.now_ms(),
        name: format!(
            "importing cache manifest from {} ({} records)",
            opts.cache_from
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            remote.len()
        ),
        duration_ms: Some(clock.now_ms() - started),
    });
    Some(Arc::new(remote))
}

/// The digest that stands for "no filesystem yet" (FROM scratch).
pub(crate) fn scratch_key(platform: &str) -> Digest {
    let mut k = crate::cache::steps::KeyBuilder::new("scratch", &Digest::of(b""));
    k.part(platform);
    k.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// The causes of a failure stay reachable (they were flattened into a
    /// string before), and the message reads as it did.
    #[test]
    fn errors_keep_their_cause() {
        let unknown = kiln_sandbox::user::resolve_user("ghost", Some(""), None).unwrap_err();
        let err = BuildError::Workdir {
            path: "/app".into(),
            source: unknown.into(),
        };
        assert_eq!(
            err.to_string(),
            "WORKDIR /app: unable to find user ghost: no matching entries in passwd file"
        );
        let cause = err.source().expect("WORKDIR keeps its cause");
        assert!(cause.to_string().starts_with("unable to find user ghost"));

        let io = std::io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error());
        let err = BuildError::StepCache(io);
        let cause = err.source().expect("the step cache keeps its cause");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
    }

    /// A chain of stages, each on its own thread waiting for the one before
    /// (as `FROM previous` does), costs wake-ups linear in the chain's length,
    /// not one per waiting thread per finished stage.
    #[test]
    fn a_chain_of_stages_wakes_each_waiter_about_once() {
        const STAGES: usize = 400;
        let board = StageBoard::<usize>::new(vec![1; STAGES]);
        let failed = AtomicBool::new(false);
        std::thread::scope(|s| {
            for i in (0..STAGES).rev() {
                let (board, failed) = (&board, &failed);
                s.spawn(move || {
                    let base = if i == 0 {
                        Ok(0)
                    } else {
                        board.wait(i - 1, failed)
                    };
                    board.finish(i, base.map(|n| n + 1), i.checked_sub(1), failed);
                });
            }
        });
        assert_eq!(board.wait(STAGES - 1, &failed), Ok(STAGES));
        let wakeups = board.wakeups.load(Ordering::Relaxed);
        // At most one per waiting stage, plus rare spurious wake-ups.
        assert!(
            wakeups <= 2 * STAGES,
            "{wakeups} wake-ups for {STAGES} stages"
        );
    }

    /// A chain keeps only what is still to be read: once a stage's reader
    /// has finished, its result is dropped; the target's stays.
    #[test]
    fn results_are_dropped_once_read() {
        const STAGES: usize = 50;
        // Each stage is read by the next one; the last by the build's end.
        let board = StageBoard::<Arc<Vec<u8>>>::new(vec![1; STAGES]);
        let failed = AtomicBool::new(false);
        let mut weak = Vec::new();
        for i in 0..STAGES {
            let result = Arc::new(vec![0u8; 1024]);
            weak.push(Arc::downgrade(&result));
            board.finish(i, Ok(result), i.checked_sub(1), &failed);
            let alive = weak.iter().filter(|w| w.upgrade().is_some()).count();
            assert_eq!(alive, 1, "after stage {i}: only the newest result is kept");
        }
        assert!(board.wait(STAGES - 1, &failed).is_ok());
        assert!(!failed.load(Ordering::SeqCst));
    }

    /// A failed stage stops every waiter, including those waiting for
    /// stages that will never finish.
    #[test]
    fn a_failure_wakes_every_waiter() {
        let board = StageBoard::<()>::new(vec![1; 3]);
        let failed = AtomicBool::new(false);
        std::thread::scope(|s| {
            let waiters: Vec<_> = [1, 2]
                .into_iter()
                .map(|i| {
                    let (board, failed) = (&board, &failed);
                    s.spawn(move || board.wait(i, failed))
                })
                .collect();
            std::thread::sleep(std::time::Duration::from_millis(50));
            board.finish(0, Err(()), None, &failed);
            for w in waiters {
                assert_eq!(w.join().unwrap(), Err(()));
            }
        });
        assert!(failed.load(Ordering::SeqCst));
    }
}
