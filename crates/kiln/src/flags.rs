//! Every command-line flag of kiln, defined once with its help text. Commands
//! receive these structs; help, errors and completions all come from here.

use clap::{Args, Parser, Subcommand};
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
    Build(BuildFlags),
    /// Developer tools: inspect what kiln's frontend makes of a Dockerfile
    #[command(subcommand)]
    Debug(DebugCommand),
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Parse a Dockerfile and print its AST
    Parse(DebugParseFlags),
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
    /// Build up to this stage (by name or index) and make it the result
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Do not use the cache for any step
    #[arg(long)]
    pub no_cache: bool,
    /// Progress output: auto, tty, plain or rawjson
    #[arg(long, default_value = "auto", value_parser = ["auto", "tty", "plain", "rawjson"])]
    pub progress: String,
    /// Target platform ("os/arch[/variant]"); default: the host's
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Output destination ("type=oci|docker|local|tar,dest=PATH")
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Network mode for RUN steps: default, host or none
    #[arg(long, default_value = "default", value_parser = ["default", "host", "none"])]
    pub network: String,
    /// Plan the build and print its stages and steps without running anything
    #[arg(long)]
    pub dry_run: bool,
    /// Build context directory
    #[arg(value_name = "PATH", default_value = ".")]
    pub context: PathBuf,
}
