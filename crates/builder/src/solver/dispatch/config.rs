//! The image-config instructions: ENV, LABEL, EXPOSE, USER, VOLUME, STOPSIGNAL,
//! CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD, MAINTAINER and WORKDIR's config
//! half, as BuildKit's `dispatch*` functions apply them, each returning the
//! history entry BuildKit writes for it. `kiln build` and `kiln import --change`
//! both go through [`apply`], so what these instructions mean is written once.
//! ARG (build only: its value comes from the plan) is here too.

use crate::solver::state::{set_config_env, shell_of, StageState};
use crate::solver::{BuildError, Shared};
use kiln_dockerfile::instructions::{
    Arg, Cmd, CommandLine, Entrypoint, Env, Expose, Healthcheck, Kind, Label, Origin, Shell,
    StopSignal, User, Volume, Workdir,
};
use kiln_oci::image::{ContainerConfig, EmptyObject, HealthConfig, ImageConfig};
use std::collections::BTreeSet;

/// Why an instruction could not be applied to the image config (the message
/// is BuildKit's where it has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// EXPOSE of something that is no port spec.
    #[error("{0}")]
    Port(String),
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
    #[error("invalid signal: {0}")]
    Signal(String),
    /// Not an image-config instruction (FROM, RUN, COPY, ADD, ARG).
    #[error("{0} does not change the image config")]
    NotConfig(&'static str),
}

/// Applies one image-config instruction (variables already expanded) to
/// `image`; `cmd_set` says whether CMD was set in this stage (ENTRYPOINT
/// resets an inherited CMD only) and is updated by CMD. Returns the history
/// entry's `created_by`, `None` for ONBUILD (BuildKit records none).
pub fn apply(
    image: &mut ImageConfig,
    cmd_set: &mut bool,
    kind: &Kind,
) -> Result<Option<String>, ConfigError> {
    if let Kind::Maintainer(m) = kind {
        image.author = Some(m.name.clone());
        return Ok(Some(format!("MAINTAINER {}", m.name)));
    }
    let cc = image.config.get_or_insert_with(ContainerConfig::default);
    let created_by = match kind {
        Kind::Env(e) => env(cc, e),
        Kind::Label(l) => label(cc, l),
        Kind::Expose(e) => expose(cc, e)?,
        Kind::User(u) => user(cc, u),
        Kind::Volume(v) => volume(cc, v)?,
        Kind::StopSignal(s) => stop_signal(cc, s)?,
        Kind::Cmd(c) => {
            *cmd_set = true;
            cmd(cc, c)
        }
        Kind::Entrypoint(e) => entrypoint(cc, *cmd_set, e),
        Kind::Shell(s) => shell(cc, s),
        Kind::Healthcheck(h) => healthcheck(cc, h),
        Kind::Workdir(w) => format!("WORKDIR {}", workdir(cc, w)),
        Kind::Onbuild(o) => {
            cc.on_build.push(o.expression.clone());
            return Ok(None);
        }
        other => return Err(ConfigError::NotConfig(other.keyword())),
    };
    Ok(Some(created_by))
}

fn env(cc: &mut ContainerConfig, e: &Env) -> String {
    let mut parts = Vec::new();
    for kv in &e.vars {
        set_config_env(cc, &kv.key, &kv.value);
        parts.push(format!("{}={}", kv.key, kv.value));
    }
    format!("ENV {}", parts.join(" "))
}

fn label(cc: &mut ContainerConfig, l: &Label) -> String {
    let mut parts = Vec::new();
    for kv in &l.labels {
        cc.labels.insert(kv.key.clone(), kv.value.clone());
        parts.push(format!("{}={}", kv.key, kv.value));
    }
    format!("LABEL {}", parts.join(" "))
}

fn expose(cc: &mut ContainerConfig, e: &Expose) -> Result<String, ConfigError> {
    let mut ports = BTreeSet::new();
    for spec in &e.ports {
        for p in expose_ports(spec).map_err(ConfigError::Port)? {
            cc.exposed_ports.insert(p.clone(), EmptyObject {});
            ports.insert(p);
        }
    }
    let ports: Vec<String> = ports.into_iter().collect();
    Ok(format!("EXPOSE [{}]", ports.join(" ")))
}

fn user(cc: &mut ContainerConfig, u: &User) -> String {
    cc.user = Some(u.user.clone());
    format!("USER {}", u.user)
}

fn volume(cc: &mut ContainerConfig, v: &Volume) -> Result<String, ConfigError> {
    for p in &v.paths {
        if p.is_empty() {
            return Err(ConfigError::EmptyVolume);
        }
        cc.volumes.insert(p.clone(), EmptyObject {});
    }
    Ok(format!("VOLUME [{}]", v.paths.join(" ")))
}

fn stop_signal(cc: &mut ContainerConfig, s: &StopSignal) -> Result<String, ConfigError> {
    if !valid_signal(&s.signal) {
        return Err(ConfigError::Signal(s.signal.clone()));
    }
    cc.stop_signal = Some(s.signal.clone());
    Ok(format!("STOPSIGNAL {}", s.signal))
}

fn cmd(cc: &mut ContainerConfig, c: &Cmd) -> String {
    let args = command_args(cc, &c.command);
    // An empty list is omitted from the config JSON (Go's omitempty).
    cc.cmd = (!args.is_empty()).then(|| args.clone());
    format!("CMD {}", go_quoted_list(&args))
}

fn entrypoint(cc: &mut ContainerConfig, cmd_set: bool, e: &Entrypoint) -> String {
    let args = command_args(cc, &e.command);
    cc.entrypoint = (!args.is_empty()).then(|| args.clone());
    if !cmd_set {
        cc.cmd = None;
    }
    format!("ENTRYPOINT {}", go_quoted_list(&args))
}

fn shell(cc: &mut ContainerConfig, s: &Shell) -> String {
    cc.shell = Some(s.shell.clone());
    format!("SHELL [{}]", s.shell.join(" "))
}

fn healthcheck(cc: &mut ContainerConfig, h: &Healthcheck) -> String {
    let hc = match &h.check {
        None => HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        },
        Some(c) => HealthConfig {
            test: c.test.clone(),
            interval: (c.interval_ns != 0).then_some(c.interval_ns),
            timeout: (c.timeout_ns != 0).then_some(c.timeout_ns),
            start_period: (c.start_period_ns != 0).then_some(c.start_period_ns),
            start_interval: (c.start_interval_ns != 0).then_some(c.start_interval_ns),
            retries: (c.retries != 0).then_some(i64::from(c.retries)),
        },
    };
    let text = format!(
        "HEALTHCHECK {{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        hc.test.join(" "),
        go_duration(hc.interval.unwrap_or(0)),
        go_duration(hc.timeout.unwrap_or(0)),
        go_duration(hc.start_period.unwrap_or(0)),
        go_duration(hc.start_interval.unwrap_or(0)),
        hc.retries.unwrap_or(0)
    );
    cc.healthcheck = Some(hc);
    text
}

/// WORKDIR: the new working directory (relative to the current one, cleaned),
/// set in the config and returned.
pub(crate) fn workdir(cc: &mut ContainerConfig, w: &Workdir) -> String {
    let current = cc
        .working_dir
        .as_deref()
        .filter(|w| !w.is_empty())
        .unwrap_or("/");
    let wd = kiln_oci::path::resolve(current, &w.path);
    cc.working_dir = Some(wd.clone());
    wd
}

/// ARG: declares the names (RUN history shows them) and sets the values the
/// plan gives them in the stage's environment (not in the image config).
pub(crate) fn arg(
    sh: &Shared<'_>,
    state: &mut StageState,
    origin: &Origin,
    a: &Arg,
) -> Result<String, BuildError> {
    let mut parts = Vec::new();
    for decl in &a.args {
        state.build_args.push(decl.key.clone());
        let value = sh.plan.arg_value(decl, |d| {
            let env = state.expansion_env();
            let v = kiln_dockerfile::shell::Lexer::new(sh.plan.escape)
                .process_word(d, &env)
                .map_err(|e| sh.located(origin, e.to_string()))?;
            state.grow_expansion(v.len().saturating_sub(d.len()), sh, origin)?;
            Ok::<_, BuildError>(v)
        })?;
        match value {
            Some(v) => {
                state.set_state_env(&decl.key, &v);
                parts.push(format!("{}={v}", decl.key));
            }
            None => parts.push(decl.key.clone()),
        }
    }
    Ok(format!("ARG {}", parts.join(" ")))
}

/// Go's `%q` of a string slice (`["npm" "start"]`), as BuildKit's history shows.
fn go_quoted_list(args: &[String]) -> String {
    let q: Vec<String> = args
        .iter()
        .map(|a| kiln_dockerfile::ast::go_quote(a))
        .collect();
    format!("[{}]", q.join(" "))
}

/// CMD/ENTRYPOINT arguments: exec form as written, shell form through the
/// config's SHELL (default `/bin/sh -c`).
fn command_args(cc: &ContainerConfig, cmd: &CommandLine) -> Vec<String> {
    match cmd {
        CommandLine::Exec(a) => a.clone(),
        CommandLine::Shell(s) => {
            let mut a = shell_of(cc);
            a.push(s.clone());
            a
        }
    }
}

/// The ports an EXPOSE word stands for (`80`, `53/udp`, `7000-7002/udp`),
/// each as `port/proto`, as Docker's `nat.ParsePortSpecs` expands them.
fn expose_ports(spec: &str) -> Result<Vec<String>, String> {
    let (range, proto) = match spec.split_once('/') {
        Some((r, p)) => (r, p.to_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    let bad = || format!("invalid containerPort: {spec}");
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let (start, end) = match range.split_once('-') {
        Some((a, b)) => (a, b),
        None => (range, range),
    };
    let start: u16 = start.parse().map_err(|_| bad())?;
    let end: u16 = end.parse().map_err(|_| bad())?;
    if end < start {
        return Err(bad());
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// Go's `time.Duration.String()` of `ns` nanoseconds (`0s`, `1.5s`, `1m30s`,
/// `250ms`), as BuildKit's history prints HEALTHCHECK times.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let trim = |whole: u64, frac: u64, digits: usize| -> String {
        let mut s = whole.to_string();
        if frac > 0 {
            let f = format!("{frac:0digits$}");
            s.push('.');
            s.push_str(f.trim_end_matches('0'));
        }
        s
    };
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", trim(u / 1_000, u % 1_000, 3))
    } else if u < 1_000_000_000 {
        format!("{}ms", trim(u / 1_000_000, u % 1_000_000, 6))
    } else {
        let (h, rest) = (u / 3_600_000_000_000, u % 3_600_000_000_000);
        let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
        let secs = trim(rest / 1_000_000_000, rest % 1_000_000_000, 9);
        if h > 0 {
            format!("{h}h{m}m{secs}s")
        } else if m > 0 {
            format!("{m}m{secs}s")
        } else {
            format!("{secs}s")
        }
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

/// A signal name (`SIGTERM`, `TERM`, `SIGRTMIN+3`) or number, as moby's
/// `signal.ParseSignal` accepts.
fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return n > 0;
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU",
        "XFSZ",
    ];
    if NAMES.contains(&name) {
        return true;
    }
    for base in ["RTMIN", "RTMAX"] {
        if let Some(rest) = name.strip_prefix(base) {
            return rest.is_empty()
                || rest
                    .strip_prefix(['+', '-'])
                    .is_some_and(|n| n.parse::<u32>().is_ok());
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_dockerfile::instructions::{parse_instructions, Instruction};
    use kiln_dockerfile::Source;

    fn instruction(text: &str) -> Instruction {
        let src = Source::new("Dockerfile", text.to_string());
        let df = kiln_dockerfile::parse(&src).unwrap();
        parse_instructions(&df, &src).unwrap().remove(0)
    }

    /// Applies `lines` in order to an empty config; the history entries.
    fn applied(lines: &[&str]) -> (ImageConfig, Vec<Option<String>>) {
        let mut image = ImageConfig::new("linux", "amd64");
        let mut cmd_set = false;
        let history = lines
            .iter()
            .map(|l| apply(&mut image, &mut cmd_set, &instruction(l).kind).unwrap())
            .collect();
        (image, history)
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(250_000_000), "250ms");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(7), "7ns");
    }

    #[test]
    fn expose_specs() {
        assert_eq!(expose_ports("80").unwrap(), ["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(
            expose_ports("7000-7002/udp").unwrap(),
            ["7000/udp", "7001/udp", "7002/udp"]
        );
        assert!(expose_ports("80/xyz").is_err());
        assert!(expose_ports("9-1").is_err());
        assert!(expose_ports("http").is_err());
    }

    #[test]
    fn signals() {
        for ok in ["SIGTERM", "term", "9", "SIGRTMIN+3", "RTMAX", "sigwinch"] {
            assert!(valid_signal(ok), "{ok}");
        }
        for bad in ["0", "SIGFOO", "RTMIN+x", "", "-1"] {
            assert!(!valid_signal(bad), "{bad}");
        }
    }

    #[test]
    fn config_and_history_per_instruction() {
        let (image, history) = applied(&[
            "ENV A=1 B=2",
            "ENV A=3",
            "LABEL x=y",
            "EXPOSE 80 53/udp",
            "USER app",
            "VOLUME /data",
            "STOPSIGNAL SIGINT",
            "SHELL [\"/bin/bash\", \"-c\"]",
            "CMD echo hi",
            "ENTRYPOINT [\"/e\"]",
            "WORKDIR /srv",
            "WORKDIR ../opt/./x",
            "HEALTHCHECK --interval=30s CMD true",
            "ONBUILD RUN make",
            "MAINTAINER me",
        ]);
        let cc = image.config.as_ref().unwrap();
        assert_eq!(cc.env, ["A=3", "B=2"]);
        assert_eq!(cc.labels["x"], "y");
        let ports: Vec<&str> = cc.exposed_ports.keys().map(String::as_str).collect();
        assert_eq!(ports, ["53/udp", "80/tcp"]);
        assert_eq!(cc.user.as_deref(), Some("app"));
        assert!(cc.volumes.contains_key("/data"));
        assert_eq!(cc.stop_signal.as_deref(), Some("SIGINT"));
        // CMD before ENTRYPOINT in the same stage is kept.
        assert_eq!(cc.cmd.as_deref().unwrap(), ["/bin/bash", "-c", "echo hi"]);
        assert_eq!(cc.entrypoint.as_deref().unwrap(), ["/e"]);
        assert_eq!(cc.working_dir.as_deref(), Some("/opt/x"));
        assert_eq!(
            cc.healthcheck.as_ref().unwrap().interval,
            Some(30_000_000_000)
        );
        assert_eq!(cc.on_build, ["RUN make"]);
        assert_eq!(image.author.as_deref(), Some("me"));
        // The image config alone does not mark CMD's args escaped (the build does).
        assert_eq!(cc.args_escaped, None);
        let history: Vec<&str> = history.iter().flatten().map(String::as_str).collect();
        assert_eq!(
            history,
            [
                "ENV A=1 B=2",
                "ENV A=3",
                "LABEL x=y",
                "EXPOSE [53/udp 80/tcp]",
                "USER app",
                "VOLUME [/data]",
                "STOPSIGNAL SIGINT",
                "SHELL [/bin/bash -c]",
                "CMD [\"/bin/bash\" \"-c\" \"echo hi\"]",
                "ENTRYPOINT [\"/e\"]",
                "WORKDIR /srv",
                "WORKDIR /opt/x",
                "HEALTHCHECK {Test:[CMD-SHELL true] Interval:30s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}",
                "MAINTAINER me",
            ]
        );
    }

    #[test]
    fn entrypoint_drops_an_inherited_cmd() {
        let (image, _) = applied(&["ENTRYPOINT [\"/e\"]"]);
        assert_eq!(image.config.unwrap().cmd, None);
        let (image, _) = applied(&["CMD []", "ENTRYPOINT []"]);
        let cc = image.config.unwrap();
        assert_eq!((cc.cmd, cc.entrypoint), (None, None));
    }

    #[test]
    fn errors() {
        let mut image = ImageConfig::new("linux", "amd64");
        let mut cmd_set = false;
        let mut err = |l: &str| {
            apply(&mut image, &mut cmd_set, &instruction(l).kind)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err("EXPOSE 80/xyz"), "invalid proto: xyz");
        assert_eq!(err("EXPOSE 99999"), "invalid containerPort: 99999");
        assert_eq!(err("STOPSIGNAL SIGFOO"), "invalid signal: SIGFOO");
        assert_eq!(err("RUN true"), "RUN does not change the image config");
    }
}
