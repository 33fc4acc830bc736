//! `RUN [--mount=...]... [--network=...] [--security=...] [--device=...] cmd`.
//! The `--mount` option lists are in [`super::mount`].

use super::flags::Flags;
use super::mount::{self, MountSpec};
use super::{CommandLine, InstrError};
use crate::ast::{Heredoc, Node};

/// `RUN [--mount=...]... [--network=...] [--security=...] [--device=...] cmd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub command: CommandLine,
    /// Heredocs of the command (`RUN <<EOF ...`), in order.
    pub heredocs: Vec<Heredoc>,
    pub mounts: Vec<MountSpec>,
    pub network: NetworkMode,
    pub security: Security,
    pub devices: Vec<Device>,
    /// Names of the flags given (BuildKit's `FlagsUsed`), sorted.
    pub flags_used: Vec<String>,
}

/// `--network=` of RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    #[default]
    Default,
    None,
    Host,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Default => "default",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
    }
}

/// `--security=` of RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    #[default]
    Sandbox,
    Insecure,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Sandbox => "sandbox",
            Security::Insecure => "insecure",
        }
    }
}

/// `--device=name[,required]` of RUN (a CDI device request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub required: bool,
}

impl Device {
    /// BuildKit's `ParseDevice`.
    pub fn parse(val: &str) -> Result<Device, InstrError> {
        let fields = mount::csv_fields(val)
            .map_err(|e| InstrError::new(e.message.replace("csv mounts", "csv devices")))?;
        let mut name = String::new();
        let mut required = false;
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                if field.eq_ignore_ascii_case("required") {
                    required = true;
                } else if name.is_empty() {
                    name = field;
                } else {
                    return Err(InstrError::new(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )));
                }
                continue;
            };
            match key.to_ascii_lowercase().as_str() {
                "name" => {
                    if !name.is_empty() {
                        return Err(InstrError::new(format!(
                            "device name already set to {name}"
                        )));
                    }
                    name = value.to_string();
                }
                "required" => {
                    required = mount::go_parse_bool(value).ok_or_else(|| {
                        InstrError::new(format!("invalid value for required: {value}"))
                    })?;
                }
                other => {
                    if name.is_empty() {
                        name = field.clone();
                    } else {
                        return Err(InstrError::new(format!(
                            "unexpected key '{other}' in '{field}'"
                        )));
                    }
                }
            }
        }
        Ok(Device { name, required })
    }
}

impl Run {
    pub(crate) fn parse(node: &Node) -> Result<Run, InstrError> {
        let mut flags = Flags::new(&node.flags);
        let mount = flags.list("mount");
        let network = flags.string("network");
        let security = flags.string("security");
        let device = flags.list("device");
        let f = flags.parse()?;
        let devices = f
            .list(device)
            .iter()
            .map(|d| Device::parse(d))
            .collect::<Result<Vec<_>, _>>()?;
        let mounts = f
            .list(mount)
            .iter()
            .map(|m| MountSpec::parse(m))
            .collect::<Result<Vec<_>, _>>()?;
        let network = match f.string(network).unwrap_or("default") {
            "default" => NetworkMode::Default,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            other => return Err(InstrError::new(format!("invalid network mode {other:?}"))),
        };
        let security = match f.string(security).unwrap_or("sandbox") {
            "sandbox" => Security::Sandbox,
            "insecure" => Security::Insecure,
            other => return Err(InstrError::new(format!("security {other:?} is not valid"))),
        };
        Ok(Run {
            command: CommandLine::from_args(&node.args, node.json),
            heredocs: node.heredocs.clone(),
            mounts,
            network,
            security,
            devices,
            flags_used: f.used_names(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::mount::MountType;
    use super::super::test_support::{err, json, node, parse, Table};
    use super::super::{Kind, ShellExpand};
    use super::*;

    #[test]
    fn run_forms_and_flags() {
        let Kind::Run(r) = parse(&node("run", &[], &["npm install"])).kind else {
            panic!()
        };
        assert_eq!(r.command, CommandLine::Shell("npm install".into()));
        assert_eq!(r.network, NetworkMode::Default);
        assert_eq!(r.security, Security::Sandbox);
        let Kind::Run(r) = parse(&json(node("run", &[], &["echo", "hi"]))).kind else {
            panic!()
        };
        assert_eq!(
            r.command,
            CommandLine::Exec(vec!["echo".into(), "hi".into()])
        );

        let Kind::Run(r) = parse(&node(
            "run",
            &[
                "--mount=type=cache,target=/root/.npm",
                "--mount=type=bind,from=builder,source=/out,target=/in",
                "--network=none",
                "--security=insecure",
                "--device=vendor.com/gpu=all,required",
            ],
            &["make"],
        ))
        .kind
        else {
            panic!()
        };
        assert_eq!(r.mounts.len(), 2);
        assert_eq!(r.mounts[1].from.as_deref(), Some("builder"));
        assert_eq!(r.network, NetworkMode::None);
        assert_eq!(r.security, Security::Insecure);
        assert_eq!(
            r.devices,
            vec![Device {
                name: "vendor.com/gpu=all".into(),
                required: true
            }]
        );
        assert_eq!(r.flags_used, vec!["device", "mount", "network", "security"]);
        let m = r.mounts[0]
            .resolve(&mut |w: &str| Ok(w.to_string()))
            .unwrap();
        assert_eq!(m.kind, MountType::Cache);
    }

    #[test]
    fn run_errors() {
        assert_eq!(err(&node("run", &["--foo"], &["x"])), "unknown flag: --foo");
        assert_eq!(
            err(&node("run", &["--network=bridge"], &["x"])),
            "invalid network mode \"bridge\""
        );
        assert_eq!(
            err(&node("run", &["--security=root"], &["x"])),
            "security \"root\" is not valid"
        );
        assert_eq!(
            err(&node("run", &["--network=host", "--network=none"], &["x"])),
            "duplicate flag specified: --network"
        );
        assert_eq!(
            err(&node(
                "run",
                &["--mount=type=cache,target=/x,sharing=all"],
                &["x"]
            )),
            "unsupported sharing value \"all\""
        );
        assert_eq!(
            err(&node(
                "run",
                &["--mount=type=bind,target=/x,bogus=1"],
                &["x"]
            )),
            "unexpected key 'bogus' in 'bogus=1'"
        );
        assert_eq!(
            err(&node("run", &["--mount"], &["x"])),
            "missing a value on flag: --mount"
        );
        assert_eq!(
            err(&node("run", &["--device=a,name=b"], &["x"])),
            "device name already set to a"
        );
    }

    #[test]
    fn run_heredoc_kept() {
        let mut n = node("run", &[], &["<<EOF"]);
        n.heredocs = vec![Heredoc {
            name: "EOF".into(),
            file_descriptor: 0,
            expand: true,
            chomp: false,
            content: "echo hi\n".into(),
        }];
        let Kind::Run(r) = parse(&n).kind else {
            panic!()
        };
        assert_eq!(r.command, CommandLine::Shell("<<EOF".into()));
        assert_eq!(r.heredocs[0].content, "echo hi\n");
    }

    #[test]
    fn run_is_not_expanded() {
        // RUN commands are left to the shell; mounts are resolved by the executor.
        let mut t = Table::sample();
        let run = parse(&node("run", &[], &["echo $DIR"]));
        assert_eq!(run.expanded(&mut t).unwrap(), run);
    }

    #[test]
    fn mount_values_expand_with_the_stage_env() {
        let env: std::collections::BTreeMap<String, String> =
            [("ID".to_string(), "npm".to_string())].into();
        let mut ex = ShellExpand::new('\\', &env);
        let Kind::Run(r) = parse(&node(
            "run",
            &["--mount=type=cache,id=$ID,target=/c"],
            &["x"],
        ))
        .kind
        else {
            panic!()
        };
        let m = r.mounts[0]
            .resolve(&mut |w: &str| super::super::Expand::word(&mut ex, w))
            .unwrap();
        assert_eq!(m.id.as_deref(), Some("npm"));
    }
}
