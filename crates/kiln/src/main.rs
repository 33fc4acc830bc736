//! kiln: the command-line interface. Parses docker-compatible flags, renders
//! progress and output; all real work is done by the library crates.

mod analysis;
mod cmd;
mod containers;
mod describe;
mod flags;
mod local_images;
mod progress;
mod render;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    kiln_sandbox::helper_main_if_requested();
    kiln_runtime::supervisor_main_if_requested();
    let mut cli = flags::Cli::parse();
    // Before anything can start a thread: a user namespace needs a single thread.
    let limitation = match cmd::enter_user_namespace_if_needed(&mut cli) {
        Ok(l) => l,
        Err(report) => {
            eprintln!("{report:?}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(cli.global.log_level.as_deref());
    if let Some(limitation) = limitation {
        tracing::warn!("{limitation}");
    }
    match cmd::run(cli) {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: Option<&str>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.unwrap_or("warn")));
    // Escape sequences only for a terminal (not in CI logs or files), and never with
    // NO_COLOR, as the progress view does.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .with_filter(filter)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            !is_wire_dump(meta.target(), *meta.level())
        }));
    tracing_subscriber::registry().with(layer).init();
}

/// The HTTP library's trace level is a hex dump of every byte sent and received
/// ("wire level debug, not redacted", as ureq documents it): `Authorization`
/// headers with credentials and tokens, and token service answers. Those
/// records are never printed, whatever level is asked for; the library's
/// debug-level lines (redacted) and kiln's own trace lines still are.
fn is_wire_dump(target: &str, level: tracing::Level) -> bool {
    level == tracing::Level::TRACE && (target == "ureq_proto" || target.starts_with("ureq_proto::"))
}
