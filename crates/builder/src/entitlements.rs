//! Entitlements: privileges a Dockerfile can ask for that the person running
//! the build must grant with `--allow` (buildx's names: `network.host`,
//! `security.insecure`). Which RUN options need which entitlement is one
//! table, [`RUN_RULES`]; kiln grants `network.host` without `--allow`
//! (like `docker build`), BuildKit's daemon would refuse it by default.

// `DockerfileError` carries its source excerpt; it is returned once per build.
#![allow(clippy::result_large_err)]

use kiln_dockerfile::instructions::{Kind, NetworkMode, Origin, Run, Security};
use kiln_dockerfile::stages::Plan;
use kiln_dockerfile::{DockerfileError, Source};

/// One privilege `--allow` can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitlement {
    NetworkHost,
    SecurityInsecure,
}

impl Entitlement {
    pub const ALL: &'static [Entitlement] =
        &[Entitlement::NetworkHost, Entitlement::SecurityInsecure];

    /// The `--allow` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Entitlement::NetworkHost => "network.host",
            Entitlement::SecurityInsecure => "security.insecure",
        }
    }

    pub fn parse(s: &str) -> Option<Entitlement> {
        Entitlement::ALL.iter().copied().find(|e| e.as_str() == s)
    }
}

/// What the build is allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entitlements {
    pub network_host: bool,
    pub security_insecure: bool,
}

impl Default for Entitlements {
    /// kiln's defaults without `--allow`: host networking yes, insecure no.
    fn default() -> Self {
        Entitlements {
            network_host: true,
            security_insecure: false,
        }
    }
}

impl Entitlements {
    /// Nothing granted at all.
    pub fn none() -> Self {
        Entitlements {
            network_host: false,
            security_insecure: false,
        }
    }

    /// The defaults plus every `--allow` value; each value may itself be a
    /// comma-separated list, as buildx accepts.
    pub fn from_allow<S: AsRef<str>>(values: &[S]) -> Result<Self, String> {
        let mut out = Entitlements::default();
        for v in values {
            for name in v.as_ref().split(',').map(str::trim) {
                let e = Entitlement::parse(name).ok_or_else(|| {
                    let known: Vec<&str> = Entitlement::ALL.iter().map(|e| e.as_str()).collect();
                    format!(
                        "invalid entitlement {name:?}: must be one of {}",
                        known.join(", ")
                    )
                })?;
                out.grant(e);
            }
        }
        Ok(out)
    }

    pub fn grant(&mut self, e: Entitlement) {
        *self.slot(e) = true;
    }

    pub fn allows(&self, e: Entitlement) -> bool {
        match e {
            Entitlement::NetworkHost => self.network_host,
            Entitlement::SecurityInsecure => self.security_insecure,
        }
    }

    fn slot(&mut self, e: Entitlement) -> &mut bool {
        match e {
            Entitlement::NetworkHost => &mut self.network_host,
            Entitlement::SecurityInsecure => &mut self.security_insecure,
        }
    }
}

/// A RUN option that needs an entitlement.
pub struct RunRule {
    /// The flag as the user writes it, for the error message.
    pub flag: &'static str,
    pub entitlement: Entitlement,
    pub applies: fn(&Run) -> bool,
}

/// Every RUN option that needs an entitlement.
pub const RUN_RULES: &[RunRule] = &[
    RunRule {
        flag: "--security=insecure",
        entitlement: Entitlement::SecurityInsecure,
        applies: |r| r.security == Security::Insecure,
    },
    RunRule {
        flag: "--network=host",
        entitlement: Entitlement::NetworkHost,
        applies: |r| r.network == NetworkMode::Host,
    },
];

/// Checks one RUN (written at `origin`) against the granted entitlements; the
/// error points at the RUN's lines in `src`.
pub fn check_run(
    run: &Run,
    origin: &Origin,
    granted: &Entitlements,
    src: &Source,
) -> Result<(), DockerfileError> {
    for rule in RUN_RULES {
        if (rule.applies)(run) && !granted.allows(rule.entitlement) {
            let name = rule.entitlement.as_str();
            return Err(DockerfileError::at(
                src,
                origin.start_line,
                origin.end_line,
                format!(
                    "RUN {} requires --allow {name}: entitlement {name} is not allowed",
                    rule.flag
                ),
            )
            .with_help(format!(
                "run the build with `--allow {name}` if you trust this Dockerfile"
            )));
        }
    }
    Ok(())
}

/// Checks every RUN of the stages the build needs (pruned stages are not
/// built, so they need nothing), ONBUILD triggers included.
pub fn check_plan(
    plan: &Plan,
    granted: &Entitlements,
    src: &Source,
) -> Result<(), DockerfileError> {
    for stage in plan.needed_stages() {
        for step in &stage.steps {
            if let Kind::Run(run) = &step.instruction.kind {
                check_run(run, &step.instruction.origin, granted, src)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_dockerfile::stages::PlanOptions;

    fn plan_of(text: &str) -> (Plan, Source) {
        let src = Source::new("Dockerfile", text);
        let df = kiln_dockerfile::parse(&src).unwrap();
        let plan = kiln_dockerfile::stages::plan(&df, &src, &PlanOptions::default()).unwrap();
        (plan, src)
    }

    #[test]
    fn allow_values() {
        assert_eq!(
            Entitlements::from_allow::<&str>(&[]).unwrap(),
            Entitlements::default()
        );
        let e = Entitlements::from_allow(&["security.insecure"]).unwrap();
        assert!(e.security_insecure && e.network_host);
        let e = Entitlements::from_allow(&["network.host,security.insecure"]).unwrap();
        assert!(e.security_insecure);
        let err = Entitlements::from_allow(&["security.insecur"]).unwrap_err();
        assert_eq!(
            err,
            "invalid entitlement \"security.insecur\": must be one of network.host, security.insecure"
        );
    }

    #[test]
    fn insecure_run_needs_the_entitlement() {
        let (plan, src) = plan_of("FROM scratch\nRUN true\nRUN --security=insecure \\\n  id\n");
        let err = check_plan(&plan, &Entitlements::default(), &src).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Dockerfile:3: RUN --security=insecure requires --allow security.insecure: entitlement security.insecure is not allowed"
        );
        let granted = Entitlements::from_allow(&["security.insecure"]).unwrap();
        check_plan(&plan, &granted, &src).unwrap();
    }

    #[test]
    fn host_network_is_granted_by_default_but_checked() {
        let (plan, src) = plan_of("FROM scratch\nRUN --network=host true\n");
        check_plan(&plan, &Entitlements::default(), &src).unwrap();
        let err = check_plan(&plan, &Entitlements::none(), &src).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Dockerfile:2: RUN --network=host requires --allow network.host: entitlement network.host is not allowed"
        );
    }

    #[test]
    fn pruned_stages_need_nothing() {
        let (plan, src) = plan_of(
            "FROM scratch AS evil\nRUN --security=insecure id\nFROM scratch\nRUN --network=none true\n",
        );
        check_plan(&plan, &Entitlements::none(), &src).unwrap();
    }
}
