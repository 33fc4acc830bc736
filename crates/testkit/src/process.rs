//! Child processes in tests: signal dispositions, markers to find them by.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// Starts `cmd`'s process with SIGINT and SIGQUIT at their default action. A
/// non-interactive shell starts background commands (`cargo test &` in a script)
/// with both ignored, every child inherits that, and a test that sends Ctrl-C's
/// signal must not depend on how the suite was started.
pub fn default_interrupt_signals(cmd: &mut Command) -> &mut Command {
    set_dispositions(cmd, &[libc::SIGINT, libc::SIGQUIT], libc::SIG_DFL)
}

/// Starts `cmd`'s process with `signals` ignored, as `nohup` (SIGHUP) or a
/// script's `&` (SIGINT, SIGQUIT) start theirs.
pub fn ignored_signals<'a>(cmd: &'a mut Command, signals: &[libc::c_int]) -> &'a mut Command {
    set_dispositions(cmd, signals, libc::SIG_IGN)
}

fn set_dispositions<'a>(
    cmd: &'a mut Command,
    signals: &[libc::c_int],
    action: libc::sighandler_t,
) -> &'a mut Command {
    let signals = signals.to_vec();
    // SAFETY: only signal(2), which is async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for &sig in &signals {
                if libc::signal(sig, action) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    }
}

/// Whether `sig` is ignored in process `pid` (its `SigIgn` mask in `/proc`).
pub fn ignores(pid: u32, sig: libc::c_int) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1u64 << (sig - 1)) != 0)
}

/// A number no other call in any running process returns (this process's id and a
/// counter), for a `sleep N` that a test finds again by its command line.
pub fn unique_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 1000;
    (100_000 + u64::from(std::process::id())) * 1000 + n
}

/// The pids of processes whose command line (arguments joined by spaces) contains
/// `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .trim_end_matches('\0')
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_get_the_dispositions_asked_for() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        ignored_signals(&mut cmd, &[libc::SIGINT, libc::SIGHUP]);
        let mut ignoring = cmd.spawn().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        ignored_signals(&mut cmd, &[libc::SIGINT]);
        default_interrupt_signals(&mut cmd);
        let mut reset = cmd.spawn().unwrap();
        let seen = (
            ignores(ignoring.id(), libc::SIGINT),
            ignores(ignoring.id(), libc::SIGHUP),
            ignores(reset.id(), libc::SIGINT),
            ignores(reset.id(), libc::SIGQUIT),
        );
        let _ = ignoring.kill();
        let _ = reset.kill();
        let _ = (ignoring.wait(), reset.wait());
        assert_eq!(seen, (true, true, false, false));
    }

    #[test]
    fn unique_numbers_differ() {
        let (a, b) = (unique_number(), unique_number());
        assert_ne!(a, b);
        assert!(a > 100_000_000, "{a}");
    }
}
