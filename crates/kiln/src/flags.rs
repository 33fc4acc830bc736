//! Every command-line flag of kiln, defined once with its help text. Commands
//! receive these structs; help, errors and completions all come from here.

use crate::progress::ProgressMode;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build OCI container images from Dockerfiles: daemonless, rootless, multi-stage first",
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalFlags,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalFlags {
    /// Store root (default: $KILN_ROOT, else /var/lib/kiln for root, ~/.local/share/kiln otherwise)
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Log level for diagnostics on stderr (error, warn, info, debug, trace)
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile
    Build(Box<BuildFlags>),
    /// Check a Dockerfile (BuildKit's build checks and kiln's multi-stage rules); nothing is built
    Check(CheckFlags),
    /// Analyze a stored image: sizes per stage and layer, what the multi-stage build
    /// saved, wasted bytes, and findings (secrets, dev dependencies, root, ...)
    Analyze(AnalyzeFlags),
    /// Developer tools: inspect what kiln's frontend makes of a Dockerfile
    #[command(subcommand)]
    Debug(DebugCommand),
    /// List stored images (SIZE: bytes of the image's config and layer blobs in the store)
    Images(ImagesFlags),
    /// Show the details of stored images as JSON
    Inspect(InspectFlags),
    /// Show the history (one line per build step) of an image
    History(HistoryFlags),
    /// Give an image another name
    Tag(TagFlags),
    /// Remove image names (space is reclaimed by `kiln prune`)
    Rmi(RmiFlags),
    /// Write images to a tar archive (docker-archive, or OCI with --format oci)
    Save(SaveFlags),
    /// Load images from a docker-archive or OCI archive tar
    Load(LoadFlags),
    /// Make a one-layer image from a root filesystem tarball or directory
    Import(ImportFlags),
    /// Run a command in a new container from a stored image
    Run(RunFlags),
    /// List containers
    Ps(PsFlags),
    /// Print a container's output
    Logs(LogsFlags),
    /// Stop running containers
    Stop(StopFlags),
    /// Remove containers
    Rm(RmFlags),
    /// Hand images to another engine: docker's daemon or podman's storage
    LoadInto(LoadIntoFlags),
    /// Remove stored blobs no image uses, and leftovers of interrupted writes
    Prune(PruneFlags),
    /// Download an image from a registry into the store
    Pull(PullFlags),
    /// Upload a stored image to a registry
    Push(PushFlags),
    /// Store credentials for a registry (in the docker-style auth file)
    Login(LoginFlags),
    /// Remove stored credentials for a registry
    Logout(LogoutFlags),
    /// Run a command as root of kiln's user namespace (rootless: where builds
    /// run), e.g. to remove files owned by your subordinate ids
    Unshare(UnshareFlags),
    /// Work with a Compose project (compose.yaml): print its model, build its images
    Compose(Box<ComposeFlags>),
    /// Print a shell completion script for kiln (bash, zsh or fish), made from
    /// these flag definitions: e.g. `kiln completion bash > /etc/bash_completion.d/kiln`
    Completion(CompletionFlags),
    /// Print a man page (roff) made from these flag definitions: kiln(1), or a
    /// command's ("kiln man build" is kiln-build(1)); e.g. `kiln man build | man -l -`
    Man(ManFlags),
}

/// `kiln completion SHELL`.
#[derive(Debug, Args)]
pub struct CompletionFlags {
    /// The shell
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: CompletionShell,
}

/// The shells `kiln completion` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// `kiln man [COMMAND…]`.
#[derive(Debug, Args)]
pub struct ManFlags {
    /// The command (and subcommand: "compose build") whose page to print; none: kiln(1)
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `--format` for listing commands: a table for people or JSON for programs.
#[derive(Debug, Args)]
pub struct ListFormatFlag {
    /// Output format: "table" or "json" (one JSON object per line)
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

/// The values of `--format` of the listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

/// `kiln inspect --format`: docker's default, JSON, is the only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InspectFormat {
    Json,
}

/// `kiln save --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    /// A docker-archive (`docker load` reads it).
    Docker,
    /// An OCI image layout in a tar.
    Oci,
}

/// `kiln run --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunNetwork {
    /// The host's network (the default without -p).
    Host,
    /// Only a loopback interface.
    None,
    /// A network namespace of its own on kiln's bridge (the default with -p).
    Bridge,
}

/// Where `kiln load-into` and `--load` hand images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadEngine {
    /// docker's daemon, through `docker load` ($DOCKER_HOST is honoured).
    Docker,
    /// podman's storage, through `podman load`.
    Podman,
}

impl LoadEngine {
    /// The engine's command.
    pub fn command(self) -> &'static str {
        match self {
            LoadEngine::Docker => "docker",
            LoadEngine::Podman => "podman",
        }
    }
}

/// `kiln build --network`: the network of RUN steps without `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuildNetwork {
    /// BuildKit's default: the host's network.
    Default,
    Host,
    None,
}

/// `kiln build --isolation`: how RUN steps are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuildIsolation {
    /// Namespaces where kiln may create them, else chroot (said once).
    Auto,
    /// Mount, PID, UTS, IPC (and network) namespaces, a fresh /proc.
    Namespaces,
    /// No new namespaces: a chroot into a copy of the step's layers.
    Chroot,
}

/// `kiln build --pull`: when FROM pulls its image ("true"/"false" as docker
/// buildx takes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullFlag {
    /// Pull only what is not stored.
    Missing,
    /// Pull every time.
    #[value(alias = "true")]
    Always,
    /// Never pull.
    #[value(alias = "false")]
    Never,
}

/// `--no-trunc` for listing commands.
#[derive(Debug, Args)]
pub struct NoTruncFlag {
    /// Do not shorten ids and commands in the output
    #[arg(long)]
    pub no_trunc: bool,
}

/// `-q/--quiet` for listing commands.
#[derive(Debug, Args)]
pub struct QuietFlag {
    /// Only print image ids
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `kiln check --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    /// BuildKit's layout: `WARNING: Rule - URL`, the message, the source excerpt.
    Text,
    /// A JSON array of findings (see the README's "kiln check" section).
    Json,
}

#[derive(Debug, Args)]
pub struct CheckFlags {
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile)
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Build-time variable, as for `kiln build` (BUILDKIT_DOCKERFILE_CHECK configures the checks)
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Check only the stages this stage needs (default: every stage)
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Target platform the base images are checked against (default: the host's)
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    pub format: CheckFormat,
    /// Build context directory (its .dockerignore and top-level entries are checked)
    #[arg(value_name = "PATH", default_value = ".")]
    pub context: PathBuf,
}

/// `kiln analyze --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AnalyzeFormat {
    /// Tables for a terminal.
    Text,
    /// The report as one JSON object (see the README's "kiln analyze" section).
    Json,
    /// One self-contained HTML page (bars, a zoomable treemap, the findings).
    Html,
}

/// What `--fail-on` can fail on: a kind of finding, or any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Secrets,
    DevDeps,
    Sources,
    Toolchains,
    Caches,
    Root,
    Setuid,
    WorldWritable,
    /// Any finding.
    Any,
}

/// The CI gates of `kiln analyze` and `kiln build --analyze` (exit code 3 when one fails).
#[derive(Debug, Args, Clone, Default)]
pub struct GateFlags {
    /// Fail when the image has findings of these kinds: secrets, dev-deps, sources,
    /// toolchains, caches, root, setuid, world-writable, any (comma-separated)
    #[arg(
        long = "fail-on",
        value_enum,
        value_delimiter = ',',
        value_name = "KINDS"
    )]
    pub fail_on: Vec<FailOn>,
    /// Fail when the image is bigger than SIZE as `kiln images` counts it (bytes,
    /// or with a unit: 100MB, 1.5GB, 200MiB)
    #[arg(long = "max-size", value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Fail when the efficiency (bytes not hidden by later layers / all layer bytes)
    /// is below F (0 to 1, or a percentage: 95%)
    #[arg(long = "min-efficiency", value_name = "F")]
    pub min_efficiency: Option<String>,
}

#[derive(Debug, Args)]
pub struct AnalyzeFlags {
    /// Output format
    #[arg(long, value_enum, default_value_t = AnalyzeFormat::Text)]
    pub format: AnalyzeFormat,
    /// Write the report to FILE instead of standard output
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub gates: GateFlags,
    /// The image (name or id)
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

#[derive(Debug, Args)]
pub struct ImagesFlags {
    #[command(flatten)]
    pub format: ListFormatFlag,
    #[command(flatten)]
    pub no_trunc: NoTruncFlag,
    #[command(flatten)]
    pub quiet: QuietFlag,
    /// Show only images of this repository (and tag, "name:tag")
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectFlags {
    /// Output format; only "json" (docker's default) is supported
    #[arg(long, value_enum, default_value_t = InspectFormat::Json)]
    pub format: InspectFormat,
    /// Images, by name or id
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct HistoryFlags {
    #[command(flatten)]
    pub format: ListFormatFlag,
    #[command(flatten)]
    pub no_trunc: NoTruncFlag,
    #[command(flatten)]
    pub quiet: QuietFlag,
    /// The image, by name or id
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

#[derive(Debug, Args)]
pub struct TagFlags {
    /// The existing image, by name or id
    #[arg(value_name = "SOURCE_IMAGE")]
    pub source: String,
    /// The new name ("name[:tag]")
    #[arg(value_name = "TARGET_IMAGE[:TAG]")]
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RmiFlags {
    /// Remove every name of an image given by id, even when it has several
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Images, by name or id
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SaveFlags {
    /// Write to this file instead of standard output
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Archive format: "docker" (docker load) or "oci" (OCI image layout tar)
    #[arg(long, value_enum, default_value_t = SaveFormat::Docker)]
    pub format: SaveFormat,
    /// Images, by name or id
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadFlags {
    /// Read from this file instead of standard input
    #[arg(short = 'i', long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print nothing on success
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ImportFlags {
    /// Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR); may be repeated
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// Platform the image is for ("os/arch[/variant]"); default: the host's
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Comment of the image's history entry (default: "Imported from SOURCE")
    #[arg(short = 'm', long, value_name = "MESSAGE")]
    pub message: Option<String>,
    /// A tarball (plain, gzip, zstd or xz), a directory, or "-" for a tarball on standard input
    #[arg(value_name = "FILE|DIR|-")]
    pub source: String,
    /// Name for the image ("name[:tag]"); without it the image is stored untagged
    #[arg(value_name = "NAME[:TAG]")]
    pub reference: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunFlags {
    /// Remove the container when it exits (a foreground run always is)
    #[arg(long)]
    pub rm: bool,
    /// Run in the background under a supervisor and print the container's id
    /// (see kiln ps, logs, stop, rm)
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Name of the container (default: a generated one)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Set an environment variable ("KEY=value", or "KEY" to take it from kiln's environment)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,
    /// Run as this user ("name|uid[:group|gid]"), instead of the image's USER
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,
    /// Working directory inside the container, instead of the image's WORKDIR
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Network (default: host without -p, bridge with it)
    #[arg(long, value_enum)]
    pub network: Option<RunNetwork>,
    /// Publish a container port on the host: "[IP:]HOST:CONTAINER[/tcp|udp]"; may be repeated
    #[arg(
        short = 'p',
        long = "publish",
        value_name = "[IP:]HOST:CONTAINER[/PROTO]"
    )]
    pub publish: Vec<String>,
    /// Mount a host directory ("/host/path:/path[:ro]") or a named volume
    /// ("NAME:/path[:ro]", kept under the store); may be repeated
    #[arg(short = 'v', long = "volume", value_name = "SRC:DEST[:ro]")]
    pub volumes: Vec<String>,
    /// Mount: "type=bind,source=/host,target=/path[,readonly]",
    /// "type=volume,source=NAME,target=/path" or "type=tmpfs,target=/path"; may be repeated
    #[arg(long = "mount", value_name = "SPEC")]
    pub mounts: Vec<String>,
    /// Keep standard input open and pass it to the container
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Give the container a terminal (a pseudo-terminal as its standard streams)
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Run this program instead of the image's ENTRYPOINT ("" clears it)
    #[arg(long, value_name = "PROGRAM")]
    pub entrypoint: Option<String>,
    /// The signal kiln stop sends first (default: the image's STOPSIGNAL, else SIGTERM)
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Seconds kiln stop waits after that signal before killing the container (default 10)
    #[arg(long, value_name = "SECONDS")]
    pub stop_timeout: Option<u64>,
    /// The platform's image of a multi-platform image ("os/arch[/variant]";
    /// default: the host's); a foreign one runs under its binfmt_misc emulator
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// The image, by name or id
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Command and arguments, instead of the image's CMD
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsFlags {
    /// Show every container (default: only running ones)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only print container ids
    #[arg(short = 'q', long)]
    pub quiet: bool,
    #[command(flatten)]
    pub no_trunc: NoTruncFlag,
    #[command(flatten)]
    pub format: ListFormatFlag,
}

#[derive(Debug, Args)]
pub struct LogsFlags {
    /// Keep printing new output until the container ends
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// The container, by name or id
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

#[derive(Debug, Args)]
pub struct StopFlags {
    /// Seconds between the stop signal (SIGTERM) to the container's main
    /// process and killing it (default: its --stop-timeout, else 10)
    #[arg(short = 't', long = "time", value_name = "SECONDS")]
    pub time: Option<u64>,
    /// Containers, by name or id
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmFlags {
    /// Stop running containers first
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Containers, by name or id
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadIntoFlags {
    /// The engine: docker's daemon (through `docker load`; $DOCKER_HOST is
    /// honoured) or podman's storage (through `podman load`)
    #[arg(value_name = "ENGINE", value_enum)]
    pub engine: LoadEngine,
    /// Images, by name or id
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneFlags {
    #[command(flatten)]
    pub format: ListFormatFlag,
    /// Also remove the build cache (step results and RUN --mount=type=cache directories)
    #[arg(long)]
    pub build_cache: bool,
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Parse a Dockerfile and print its AST
    Parse(DebugParseFlags),
    /// Print an image's merged file tree and runtime config as normalized JSON
    /// (no timestamps, no digests), to compare the results of two builders
    Describe(DebugDescribeFlags),
}

#[derive(Debug, Args)]
pub struct DebugDescribeFlags {
    /// Print the build history instead (layer count, ArgsEscaped, and each history
    /// entry's created_by, empty_layer and comment)
    #[arg(long)]
    pub history: bool,
    /// An OCI layout directory, an OCI or docker-archive tar, or a stored image (name or id)
    #[arg(value_name = "IMAGE-SOURCE")]
    pub source: String,
}

#[derive(Debug, Args)]
pub struct DebugParseFlags {
    /// Print BuildKit's S-expression dump (one line per instruction), to diff against BuildKit
    #[arg(long)]
    pub dump: bool,
    /// The Dockerfile to parse ("-" for standard input)
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct BuildFlags {
    /// Name and optionally a tag ("name:tag"); may be repeated
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Name of the Dockerfile (default: PATH/Dockerfile; "-" reads it from standard input)
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Set a build-time variable ("KEY=value", or "KEY" to take it from the environment)
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Set a label on the image ("KEY=value", or "KEY" for an empty value), over the
    /// Dockerfile's LABELs, without a history entry (as BuildKit's label: option)
    #[arg(long = "label", value_name = "KEY[=VALUE]")]
    pub labels: Vec<String>,
    /// Build up to this stage (by its AS name) and make it the result
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Do not use the cache for any step
    #[arg(long)]
    pub no_cache: bool,
    /// Say for each step that ran why it missed the cache (always in --progress=plain)
    #[arg(long)]
    pub explain_cache: bool,
    /// Progress output: auto, tty, plain or rawjson
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Target platform ("os/arch[/variant]"); default: the host's
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Output destination ("type=oci|docker|local|tar,dest=PATH")
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Network mode for RUN steps: default, host or none
    #[arg(long, value_enum, default_value_t = BuildNetwork::Default)]
    pub network: BuildNetwork,
    /// How RUN steps are isolated: "auto" (namespaces where they can be made, else
    /// chroot), "namespaces", or "chroot" (no new namespaces: for unprivileged containers)
    #[arg(long, value_enum, default_value_t = BuildIsolation::Auto)]
    pub isolation: BuildIsolation,
    /// Grant a privilege RUN steps may ask for: "security.insecure" (RUN --security=insecure)
    /// or "network.host" (RUN --network=host; granted by default); may be repeated or comma-separated
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// Plan the build and print its stages and steps without running anything
    #[arg(long)]
    pub dry_run: bool,
    /// Run the build checks (as `kiln check`) instead of building
    #[arg(long, conflicts_with = "dry_run")]
    pub check: bool,
    /// After the build, print `kiln analyze` of the image (with its --fail-on,
    /// --max-size, --min-efficiency gates)
    #[arg(long, conflicts_with_all = ["dry_run", "check"])]
    pub analyze: bool,
    #[command(flatten)]
    pub analyze_gates: GateFlags,
    /// Do not use the cache for the steps of these stages (by AS name); may be repeated
    /// or comma-separated
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// At most this many RUN/COPY steps run at the same time (default: the number of CPUs)
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// When FROM pulls its image: missing (default), always or never; "--pull" alone means always
    #[arg(long, value_name = "POLICY", value_enum, default_value_t = PullFlag::Missing,
          num_args = 0..=1, default_missing_value = "always")]
    pub pull: PullFlag,
    /// A secret for RUN --mount=type=secret: "id=NAME,src=FILE" or "id=NAME,env=VAR"
    /// (default src: the file named by id, env: the variable named by id)
    #[arg(long = "secret", value_name = "id=NAME[,src=FILE|,env=VAR]")]
    pub secrets: Vec<String>,
    /// An extra named build context: "name=DIR", "name=docker-image://REF" or
    /// "name=oci-layout://DIR[:TAG]"; FROM name / COPY --from=name use it
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Write the image id (config digest) to this file
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write build metadata (image digest, config digest, names) as JSON to this file
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Push the image to its registry (every -t name) after building
    #[arg(long)]
    pub push: bool,
    /// Look steps up in this cache too: "type=registry,ref=REGISTRY/REPO:TAG" or
    /// "type=local,src=DIR" (an OCI layout); may be repeated (tried in order). Only the
    /// cache's manifest and config are read; a layer is fetched only when needed
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,
    /// Export the build cache, merged into what is there: "type=registry,ref=REF" or
    /// "type=local,dest=DIR", with ",mode=min" (the final image's steps, the default) or
    /// ",mode=max" (every step of every stage), ",max-age=7d", ",max-entries=N",
    /// ",ignore-error=true"; may be repeated
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,
    #[command(flatten)]
    pub load: LoadFlag,
    #[command(flatten)]
    pub buildx: BuildxFlags,
    #[command(flatten)]
    pub authfile: AuthFileFlag,
    /// Only print the image id on success
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Build context directory
    #[arg(value_name = "PATH", default_value = ".")]
    pub context: PathBuf,
}

/// `kiln build` flags of `docker buildx build`: SSH forwarding, RUN steps'
/// sandbox settings, manifest annotations, `--call` (the README's flag table
/// lists every buildx flag and what kiln does with it).
#[derive(Debug, Args)]
pub struct BuildxFlags {
    /// Expose an SSH agent to RUN --mount=type=ssh: "default" (the agent of
    /// $SSH_AUTH_SOCK), "ID=SOCKET" or "ID=KEYFILE[,KEYFILE…]" (served by an
    /// ssh-agent kiln starts for the build); may be repeated
    #[arg(long = "ssh", value_name = "default|ID[=SOCKET|KEY[,KEY]]")]
    pub ssh: Vec<String>,
    /// Add an annotation to the image manifest: "KEY=VALUE" or "manifest:KEY=VALUE"
    /// ("manifest[PLATFORM]:" only for that platform); may be repeated. With an
    /// image index (several platforms, or attestations): "index:" (the index),
    /// "manifest-descriptor[PLATFORM]:" (the image's entry in it) and
    /// "index-descriptor:" (the index's entry in -o type=oci's index.json)
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Attach an attestation to each platform's image (in-toto, in the image
    /// index as BuildKit does): "type=sbom" (an SPDX 2.3 document of the
    /// image's packages) or "type=provenance[,mode=min|max]" (SLSA provenance
    /// v1); may be repeated
    #[arg(long = "attest", value_name = "type=sbom|provenance[,mode=min|max]")]
    pub attest: Vec<String>,
    /// Shorthand for --attest type=sbom: "--sbom=true" (or false)
    #[arg(long = "sbom", value_name = "true|false", num_args = 0..=1, require_equals = true,
          default_missing_value = "true")]
    pub sbom: Option<String>,
    /// Shorthand for --attest type=provenance: "--provenance=true" (mode=min),
    /// "--provenance=mode=max", or false. None by default (see the README)
    #[arg(long = "provenance", value_name = "true|false|mode=min|max", num_args = 0..=1,
          require_equals = true, default_missing_value = "true")]
    pub provenance: Option<String>,
    /// Add a line to every RUN step's /etc/hosts: "HOST:IP" or "HOST=IP"; may be repeated
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_hosts: Vec<String>,
    /// Size of every RUN step's /dev/shm: bytes, or a number with b, k, m or g
    /// (default 64m)
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// A resource limit of every RUN step, "NAME=SOFT[:HARD]" (-1: unlimited), e.g.
    /// "nofile=1024:2048"; names: core, cpu, data, fsize, locks, memlock, msgqueue,
    /// nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack; may be repeated
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Instead of building: "check" (the build checks, as --check), "outline" (the
    /// build args, secrets and SSH ids the target uses) or "targets" (the stages,
    /// with their descriptions); "build" (the default) builds
    #[arg(long = "call", value_enum, value_name = "METHOD", default_value_t = CallMethod::Build)]
    pub call: CallMethod,
    /// Parent cgroup of RUN steps: refused (kiln has no daemon and makes no
    /// cgroups; RUN steps stay in kiln's own cgroup, so start kiln where they
    /// belong, e.g. systemd-run --scope --slice=NAME kiln build …)
    #[arg(long = "cgroup-parent", value_name = "CGROUP")]
    pub cgroup_parent: Option<String>,
}

/// `kiln build --call`: what the build request asks the frontend for (BuildKit's
/// subrequests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CallMethod {
    /// Build the image.
    Build,
    /// Run the build checks (as `kiln check`, text output).
    Check,
    /// Print the build args, secrets and SSH ids the target uses.
    Outline,
    /// Print the stages that can be targets, with their descriptions.
    Targets,
}

/// `--load[=docker|podman]`: after building, hand the image to that engine.
#[derive(Debug, Args)]
pub struct LoadFlag {
    /// Load the built image into docker (the default) or podman, as kiln load-into does
    #[arg(long, value_name = "ENGINE", value_enum, num_args = 0..=1,
          default_missing_value = "docker")]
    pub load: Option<LoadEngine>,
}

/// `--authfile` for commands that talk to registries.
#[derive(Debug, Args)]
pub struct AuthFileFlag {
    /// Auth file to use instead of $REGISTRY_AUTH_FILE or ~/.docker/config.json
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PullFlags {
    #[command(flatten)]
    pub authfile: AuthFileFlag,
    /// Platform to pull from a multi-platform image ("os/arch[/variant]"); default: the host's
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Print only the image digest
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// The image ("name[:tag]" or "name@sha256:…"; "node:20" means docker.io/library/node:20)
    #[arg(value_name = "NAME[:TAG|@DIGEST]")]
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct PushFlags {
    #[command(flatten)]
    pub authfile: AuthFileFlag,
    /// Upload blobs larger than this many MiB in chunks of this size (0: always in one request)
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub chunk_size: u64,
    /// Write the pushed manifest's digest to this file
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<PathBuf>,
    /// Print only the digest
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// The stored image, by name or id
    #[arg(value_name = "NAME[:TAG]")]
    pub image: String,
    /// Where to push it (default: the image's own name)
    #[arg(value_name = "DEST")]
    pub destination: Option<String>,
}

#[derive(Debug, Args)]
pub struct LoginFlags {
    #[command(flatten)]
    pub authfile: AuthFileFlag,
    /// User name
    #[arg(short = 'u', long, value_name = "USER")]
    pub username: Option<String>,
    /// Read the password from standard input (else it is asked for on the terminal)
    #[arg(long)]
    pub password_stdin: bool,
    /// Store the credentials without checking them against the registry
    #[arg(long)]
    pub no_verify: bool,
    /// The registry ("host[:port]"; default docker.io)
    #[arg(value_name = "REGISTRY", default_value = "docker.io")]
    pub registry: String,
}

#[derive(Debug, Args)]
pub struct LogoutFlags {
    #[command(flatten)]
    pub authfile: AuthFileFlag,
    /// The registry ("host[:port]"; default docker.io)
    #[arg(value_name = "REGISTRY", default_value = "docker.io")]
    pub registry: String,
}

#[derive(Debug, Args)]
pub struct UnshareFlags {
    /// The command and its arguments (default: $SHELL, else /bin/sh)
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<std::ffi::OsString>,
}

/// `kiln compose`: the flags that say which project, as docker compose reads them.
#[derive(Debug, Args)]
pub struct ComposeFlags {
    /// Compose file (default: compose.yaml, compose.yml, docker-compose.yml or
    /// docker-compose.yaml here or in a parent directory, and its override file);
    /// may be repeated, later files merged over earlier ones
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Project name (default: $COMPOSE_PROJECT_NAME, the file's name:, else the directory's name)
    #[arg(short = 'p', long = "project-name", value_name = "NAME")]
    pub project_name: Option<String>,
    /// Enable services of this profile; may be repeated (default: $COMPOSE_PROFILES)
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// Read variables from this file instead of the project directory's .env; may be repeated
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// Resolve relative paths from this directory (default: the first file's directory)
    #[arg(long = "project-directory", value_name = "DIR")]
    pub project_directory: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ComposeCommand,
}

#[derive(Debug, Subcommand)]
pub enum ComposeCommand {
    /// Print the resolved model (files merged, variables interpolated, defaults set) as YAML
    Config(ComposeConfigFlags),
    /// Build the images of the project's services (all at once, in one progress view)
    Build(ComposeBuildFlags),
    /// Create and start the services' containers (in depends_on order, on the project's network)
    Up(ComposeUpFlags),
    /// Stop and remove the project's containers (and with -v its named volumes)
    Down(ComposeDownFlags),
    /// List the project's containers
    Ps(ComposePsFlags),
    /// Print the output of the project's containers
    Logs(ComposeLogsFlags),
}

#[derive(Debug, Args)]
pub struct ComposeUpFlags {
    /// Build the images before starting (else only services without an image are built)
    #[arg(long)]
    pub build: bool,
    /// Start in the background and return once the containers started
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Services to start (default: every enabled service); their dependencies start too
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ComposeDownFlags {
    /// Remove the named volumes of the file's volumes: section too
    #[arg(short = 'v', long)]
    pub volumes: bool,
    /// Seconds between the stop signal (SIGTERM) to each container's main
    /// process and killing it (default: its stop_grace_period, else 10)
    #[arg(short = 't', long = "timeout", value_name = "SECONDS")]
    pub timeout: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ComposePsFlags {
    /// Show stopped containers too
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only print container ids
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ComposeLogsFlags {
    /// Keep printing new output until the containers end
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Services (default: all)
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ComposeConfigFlags {
    /// Print only the service names, one per line
    #[arg(long)]
    pub services: bool,
    /// Only check the project; print nothing
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ComposeBuildFlags {
    /// Set a build-time variable for every service ("KEY=value", or "KEY" to take it
    /// from the environment); wins over the file's args
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Do not use the cache for any step
    #[arg(long)]
    pub no_cache: bool,
    /// Always pull the images FROM names (default: when missing)
    #[arg(long)]
    pub pull: bool,
    /// Push each service image that has an image: name after building
    #[arg(long)]
    pub push: bool,
    #[command(flatten)]
    pub load: LoadFlag,
    /// Print nothing but errors
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Progress output: auto, tty, plain or rawjson
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// At most this many RUN/COPY steps of each service run at the same time
    /// (default: the number of CPUs)
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub authfile: AuthFileFlag,
    /// Services to build (default: every enabled service with a build section);
    /// the services their service: contexts name are built too
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
}
