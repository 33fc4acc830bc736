//! One module per subcommand; `run` dispatches.

mod analyze;
mod attest;
mod build;
mod build_platforms;
mod call;
mod check;
mod completion;
mod compose;
mod compose_run;
mod containers;
mod debug;
mod history;
mod images;
mod import;
mod inspect;
mod load;
mod load_into;
mod login;
mod prune;
mod pull;
mod push;
mod rmi;
mod run;
mod save;
mod tag;
mod unshare;

use crate::flags::{Cli, Command, ComposeCommand, DebugCommand};
use std::process::ExitCode;

pub fn run(cli: Cli) -> miette::Result<ExitCode> {
    match cli.command {
        Command::Build(flags) => build::run(&cli.global, *flags),
        Command::Check(flags) => check::run(&cli.global, &flags),
        Command::Analyze(flags) => analyze::run(&cli.global, flags),
        Command::Debug(DebugCommand::Parse(flags)) => debug::parse(flags),
        Command::Debug(DebugCommand::Describe(flags)) => debug::describe(&cli.global, flags),
        Command::Images(flags) => images::run(&cli.global, flags),
        Command::Import(flags) => import::run(&cli.global, flags),
        Command::Inspect(flags) => inspect::run(&cli.global, flags),
        Command::History(flags) => history::run(&cli.global, flags),
        Command::Tag(flags) => tag::run(&cli.global, flags),
        Command::Run(flags) => run::run(&cli.global, flags),
        Command::Ps(flags) => containers::ps(&cli.global, flags),
        Command::Logs(flags) => containers::logs(&cli.global, flags),
        Command::Stop(flags) => containers::stop(&cli.global, flags),
        Command::Rm(flags) => containers::rm(&cli.global, flags),
        Command::LoadInto(flags) => load_into::run(&cli.global, flags),
        Command::Rmi(flags) => rmi::run(&cli.global, flags),
        Command::Save(flags) => save::run(&cli.global, flags),
        Command::Load(flags) => load::run(&cli.global, flags),
        Command::Prune(flags) => prune::run(&cli.global, flags),
        Command::Pull(flags) => pull::run(&cli.global, flags),
        Command::Push(flags) => push::run(&cli.global, flags),
        Command::Login(flags) => login::login(flags),
        Command::Logout(flags) => login::logout(flags),
        Command::Unshare(flags) => unshare::run(flags),
        Command::Compose(flags) => compose::run(&cli.global, *flags),
        Command::Completion(flags) => completion::completion(&flags),
        Command::Man(flags) => completion::man(&flags),
    }
}

/// For a non-root user, the commands that read or write image filesystems
/// (`build`, `run`, `import` of a directory, `unshare`, and `prune`, which
/// removes snapshots holding files of the user's subordinate ids) run inside
/// kiln's user namespace, as its root (`kiln_sandbox::userns`): files keep
/// their in-container owners. The store root is settled first: inside, the user
/// looks like root, whose default store is elsewhere. Call while the process
/// is single-threaded. Returns what a single-id mapping limits, if that is
/// all the user could get.
pub fn enter_user_namespace_if_needed(cli: &mut Cli) -> miette::Result<Option<String>> {
    let needed = match &cli.command {
        Command::Build(flags) => !flags.dry_run && !flags.check,
        // Snapshots are extracted with their owners and overlay is mounted.
        Command::Run(_) => true,
        // A directory's files are the user's: in the namespace they are 0:0, as
        // the files of a rootful import are.
        Command::Import(flags) => {
            flags.source != "-" && std::path::Path::new(&flags.source).is_dir()
        }
        // Unused snapshots hold files of subordinate ids.
        Command::Prune(_) => true,
        // A pull unpacks its layers into snapshots, with their owners.
        Command::Pull(_) => true,
        // The layers a build made are written from their snapshots (files of
        // subordinate ids, shown with their in-container owners only inside).
        Command::Push(_) | Command::Save(_) | Command::LoadInto(_) => true,
        // Reads the layers a build made from their snapshots, as push does.
        Command::Analyze(_) => true,
        Command::Unshare(_) => true,
        // A container's upper dir holds files of subordinate ids (when its
        // supervisor could not remove it).
        Command::Rm(_) => true,
        // Builds run RUN steps, up runs containers, down removes them;
        // `config`, `ps` and `logs` only read files.
        Command::Compose(flags) => matches!(
            flags.command,
            ComposeCommand::Build(_) | ComposeCommand::Up(_) | ComposeCommand::Down(_)
        ),
        _ => false,
    };
    if !needed {
        return Ok(None);
    }
    if cli.global.root.is_none() {
        cli.global.root = Some(kiln_oci::store::default_root());
    }
    if rustix::process::geteuid().is_root() {
        // Root: a private mount namespace of our own, so the overlays kiln
        // mounts for RUN --mount binds vanish with the process, however it ends
        // (Ctrl-C, SIGKILL), and never show on the host.
        // SAFETY: called first in main, while the process is single-threaded;
        // a new mount namespace changes no memory another thread could observe.
        // Where no mount namespace is allowed (a container without
        // CAP_SYS_ADMIN), kiln mounts nothing itself: RUN steps then use chroot
        // isolation (the build probes and says so).
        match unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) } {
            Ok(()) => rustix::mount::mount_change(
                "/",
                rustix::mount::MountPropagationFlags::PRIVATE
                    | rustix::mount::MountPropagationFlags::REC,
            )
            .map_err(|e| miette::miette!("making kiln's mounts private: {e}"))?,
            Err(e) => tracing::debug!("no mount namespace of kiln's own: {e}"),
        }
    }
    let map = kiln_sandbox::userns::enter_user_namespace_if_needed().map_err(|e| {
        if e.denied() {
            // No isolation works then: chroot needs CAP_SYS_CHROOT (root's),
            // and without a namespace the user cannot chown to image owners.
            miette::miette!(
                help = "no user namespace may be made here (in a container, Docker's default \
                        seccomp profile refuses them to non-root users), and without one a \
                        non-root user can neither run RUN steps (chroot isolation needs \
                        CAP_SYS_CHROOT) nor give files their owners in the image. Run the \
                        container as root (the default profile is enough: kiln then uses \
                        chroot isolation), or allow user namespaces (--security-opt \
                        seccomp=unconfined, or a profile that allows unshare and clone with \
                        CLONE_NEWUSER)",
                "{e}"
            )
        } else {
            miette::miette!("{e}")
        }
    })?;
    Ok(map.and_then(|m| m.limitation))
}
