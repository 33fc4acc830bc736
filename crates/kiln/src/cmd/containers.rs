//! `kiln ps`, `logs`, `stop`, `rm`: the containers under the store
//! (`kiln_runtime::Containers`), found by name or id.

use crate::flags::{GlobalFlags, LogsFlags, PsFlags, RmFlags, StopFlags};
use kiln_runtime::state::{now, Listed};
use kiln_runtime::{Containers, Status};
use miette::{miette, Result};
use std::io::{BufRead, Read, Seek, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub fn open(global: &GlobalFlags) -> Result<Containers> {
    let root = global
        .root
        .clone()
        .unwrap_or_else(kiln_oci::store::default_root);
    Containers::open(&root).map_err(|e| miette!("{e}"))
}

fn ago(secs: u64) -> String {
    let d = now().saturating_sub(secs);
    match d {
        0..=1 => "Less than a second".into(),
        2..=59 => format!("{d} seconds"),
        60..=3599 => format!("{} minutes", d / 60),
        3600..=172_799 => format!("{} hours", d / 3600),
        _ => format!("{} days", d / 86400),
    }
}

/// docker's STATUS column: `Up 3 seconds (healthy)`, `Exited (0) 2 seconds ago`.
pub fn status_text(c: &Listed) -> String {
    let s = &c.state;
    match s.status {
        Status::Created => "Created".into(),
        Status::Running => {
            let mut t = format!("Up {}", ago(s.started_at.unwrap_or(c.config.created)));
            if let Some(h) = &s.health {
                t.push_str(&format!(" ({})", h.status.as_str()));
            }
            t
        }
        Status::Exited => format!(
            "Exited ({}) {} ago",
            s.exit_code.unwrap_or(-1),
            ago(s.finished_at.unwrap_or(c.config.created)).to_lowercase()
        ),
    }
}

fn ports_text(c: &Listed) -> String {
    c.config
        .ports
        .iter()
        .map(|p| p.display())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Prints a table of containers (docker's columns).
pub fn print_table(list: &[Listed], no_trunc: bool) {
    let rows: Vec<[String; 7]> = list
        .iter()
        .map(|c| {
            let mut cmd = format!("\"{}\"", c.config.spec.args.join(" "));
            if !no_trunc && cmd.chars().count() > 22 {
                cmd = cmd.chars().take(19).collect::<String>() + "…\"";
            }
            [
                if no_trunc {
                    c.config.id.clone()
                } else {
                    c.config.id[..12].to_string()
                },
                c.config.image.clone(),
                cmd,
                format!("{} ago", ago(c.config.created)),
                status_text(c),
                ports_text(c),
                c.config.name.clone(),
            ]
        })
        .collect();
    let head = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ];
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s
    };
    let _ = writeln!(out, "{}", line(head.to_vec()));
    for r in &rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

pub fn ps(global: &GlobalFlags, flags: PsFlags) -> Result<ExitCode> {
    let containers = open(global)?;
    let list: Vec<Listed> = containers
        .list()
        .map_err(|e| miette!("{e}"))?
        .into_iter()
        .filter(|c| flags.all || c.state.status == Status::Running)
        .collect();
    if flags.quiet {
        for c in &list {
            println!("{}", &c.config.id[..12]);
        }
    } else if flags.format.format == crate::flags::ListFormat::Json {
        for c in &list {
            let v = serde_json::json!({
                "ID": c.config.id,
                "Names": c.config.name,
                "Image": c.config.image,
                "Command": c.config.spec.args.join(" "),
                "State": match c.state.status {
                    Status::Created => "created",
                    Status::Running => "running",
                    Status::Exited => "exited",
                },
                "Status": status_text(c),
                "ExitCode": c.state.exit_code,
                "Health": c.state.health.as_ref().map(|h| h.status.as_str()),
                "Ports": ports_text(c),
                "Project": c.config.project,
                "Service": c.config.service,
                "IPAddress": c.state.ip,
            });
            println!("{v}");
        }
    } else {
        print_table(&list, flags.no_trunc.no_trunc);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a log file from `offset` (`1 text` lines to stdout, `2 text` to
/// stderr, each with `prefix`); returns the offset reached.
pub fn print_log(path: &Path, offset: u64, prefix: &str) -> u64 {
    let Ok(mut f) = std::fs::File::open(path) else {
        return offset;
    };
    if f.seek(std::io::SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut reader = std::io::BufReader::new(&mut f);
    let mut pos = offset;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if buf.last() != Some(&b'\n') {
                    break; // a line still being written
                }
                pos += n as u64;
                let text = String::from_utf8_lossy(&buf[..buf.len() - 1]);
                let (stream, line) = text.split_at(text.len().min(2));
                if stream.starts_with('2') {
                    let _ = writeln!(std::io::stderr().lock(), "{prefix}{line}");
                } else {
                    let _ = writeln!(std::io::stdout().lock(), "{prefix}{line}");
                }
            }
        }
    }
    let _ = reader.read(&mut []);
    pos
}

pub fn logs(global: &GlobalFlags, flags: LogsFlags) -> Result<ExitCode> {
    let containers = open(global)?;
    let c = containers
        .find(&flags.container)
        .map_err(|e| miette!("{e}"))?;
    let path = containers.log_path(&c.config.id);
    let mut offset = print_log(&path, 0, "");
    if flags.follow {
        loop {
            let running = containers
                .state(&c.config.id)
                .map(|s| s.status == Status::Running)
                .unwrap_or(false);
            std::thread::sleep(Duration::from_millis(100));
            offset = print_log(&path, offset, "");
            if !running {
                break;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn stop(global: &GlobalFlags, flags: StopFlags) -> Result<ExitCode> {
    let containers = open(global)?;
    let mut failed = false;
    for name in &flags.containers {
        let r = containers.find(name).and_then(|c| {
            kiln_runtime::stop_container(
                &containers,
                &c.config.id,
                flags.time.map(Duration::from_secs),
            )
        });
        match r {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("kiln stop: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Stops (with `force`) and removes one container, waiting for its
/// supervisor to have cleaned up after it.
pub fn remove(containers: &Containers, c: &Listed, force: bool, timeout: Duration) -> Result<()> {
    if c.state.status == Status::Running {
        if !force {
            return Err(miette!(
                "container {} is running: stop it first or use rm -f",
                c.config.name
            ));
        }
        // As docker rm -f: killed, no grace period.
        kiln_runtime::stop_container(containers, &c.config.id, Some(Duration::ZERO))
            .map_err(|e| miette!("{e}"))?;
    }
    if let Some(pid) = c.state.supervisor_pid {
        kiln_runtime::wait_supervisor(pid, timeout);
    }
    match containers.remove(&c.config.id) {
        Ok(()) => Ok(()),
        // Removed by its supervisor meanwhile (--rm).
        Err(_) if !containers.dir(&c.config.id).exists() => Ok(()),
        Err(e) => Err(miette!("{e}")),
    }
}

pub fn rm(global: &GlobalFlags, flags: RmFlags) -> Result<ExitCode> {
    let containers = open(global)?;
    let mut failed = false;
    for name in &flags.containers {
        let r = containers
            .find(name)
            .map_err(|e| miette!("{e}"))
            .and_then(|c| remove(&containers, &c, flags.force, Duration::from_secs(20)));
        match r {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("kiln rm: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
