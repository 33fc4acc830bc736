//! Stage-graph tests, on Dockerfiles parsed by the crate's parser.

use super::*;

fn df(text: &str) -> (Dockerfile, Source) {
    let src = Source::new("Dockerfile", text);
    let d = crate::parse(&src).unwrap_or_else(|e| panic!("{e}"));
    (d, src)
}

fn plan_with(text: &str, opts: &PlanOptions) -> Result<Plan, DockerfileError> {
    let (d, s) = df(text);
    plan(&d, &s, opts)
}

fn ok(text: &str, opts: &PlanOptions) -> Plan {
    plan_with(text, opts).unwrap_or_else(|e| panic!("{e}"))
}

fn fails(text: &str, opts: &PlanOptions) -> String {
    match plan_with(text, opts) {
        Ok(p) => panic!("expected an error, got {:?}", p.stages),
        Err(e) => e.to_string(),
    }
}

const SEED: &str = include_str!("../../../../examples/api/Dockerfile");

fn target(t: &str) -> PlanOptions {
    PlanOptions {
        target: Some(t.to_string()),
        ..Default::default()
    }
}

#[test]
fn seed_dockerfile_has_three_stages() {
    let p = ok(SEED, &PlanOptions::default());
    assert_eq!(p.stages.len(), 3);
    let names: Vec<_> = p.stages.iter().map(|s| s.name.as_deref()).collect();
    assert_eq!(names, vec![Some("base"), Some("builder"), Some("runner")]);
    assert_eq!(
        p.stages[0].base,
        Base::Image("node:20-bookworm-slim".into())
    );
    assert_eq!(p.stages[1].base, Base::Stage(0));
    assert_eq!(p.stages[2].base, Base::Stage(0));
    assert_eq!(p.target, 2);
    assert!(p.stages.iter().all(|s| s.needed));
    assert_eq!(p.stages[2].deps, BTreeSet::from([0, 1]));
    assert_eq!(p.stages[1].deps, BTreeSet::from([0]));
    assert_eq!(p.stages[1].steps.len(), 6);
    assert_eq!(p.stages[2].steps.len(), 10);
    assert_eq!(p.stages[2].steps[1].copy_from, Some(Input::Stage(1)));
    assert_eq!(p.stages[2].steps[0].instruction.origin.start_line, 10);
    assert_eq!(p.needed_steps(), 16);
}

#[test]
fn target_builder_prunes_runner() {
    let p = ok(SEED, &target("builder"));
    assert_eq!(p.target, 1);
    let needed: Vec<bool> = p.stages.iter().map(|s| s.needed).collect();
    assert_eq!(needed, vec![true, true, false]);
    assert_eq!(p.global_args["TARGETSTAGE"], "builder");
    // Stage names are case-insensitive for --target.
    assert_eq!(ok(SEED, &target("BUILDER")).target, 1);
}

#[test]
fn unknown_target() {
    let (d, s) = df(SEED);
    let e = plan(&d, &s, &target("buidler")).unwrap_err();
    assert_eq!(e.message, "target stage \"buidler\" could not be found");
    assert!(e.help.unwrap().contains("did you mean builder?"));
}

#[test]
fn meta_arg_in_from() {
    let text = "ARG NODE=20\nFROM node:${NODE}-alpine AS a\nRUN echo\n";
    let p = ok(text, &PlanOptions::default());
    assert_eq!(p.stages[0].base, Base::Image("node:20-alpine".into()));
    assert_eq!(p.global_args["NODE"], "20");
    let p = ok(
        text,
        &PlanOptions {
            build_args: BTreeMap::from([("NODE".to_string(), "22".to_string())]),
            ..Default::default()
        },
    );
    assert_eq!(p.stages[0].base, Base::Image("node:22-alpine".into()));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn meta_arg_visible_in_stage_only_when_redeclared() {
    let text = "ARG VERSION=1.0\nFROM alpine\nARG VERSION\nARG OTHER\nARG WITHDEF=x\n";
    let p = ok(text, &PlanOptions::default());
    let Kind::Arg(redeclared) = &p.stages[0].steps[0].instruction.kind else {
        panic!()
    };
    let Kind::Arg(other) = &p.stages[0].steps[1].instruction.kind else {
        panic!()
    };
    let Kind::Arg(withdef) = &p.stages[0].steps[2].instruction.kind else {
        panic!()
    };
    let no_expand = |s: &str| -> Result<String, ()> { Ok(s.to_string()) };
    // `ARG VERSION` inside the stage picks up the meta value ...
    assert_eq!(
        p.arg_value(&redeclared.args[0], no_expand),
        Ok(Some("1.0".into()))
    );
    // ... an ARG never given a value stays unset ...
    assert_eq!(p.arg_value(&other.args[0], no_expand), Ok(None));
    // ... a default is expanded in the stage.
    assert_eq!(
        p.arg_value(&withdef.args[0], no_expand),
        Ok(Some("x".into()))
    );

    let p = ok(
        text,
        &PlanOptions {
            build_args: BTreeMap::from([
                ("VERSION".to_string(), "2.0".to_string()),
                ("WITHDEF".to_string(), "y".to_string()),
            ]),
            ..Default::default()
        },
    );
    assert_eq!(
        p.arg_value(&redeclared.args[0], no_expand),
        Ok(Some("2.0".into()))
    );
    assert_eq!(
        p.arg_value(&withdef.args[0], no_expand),
        Ok(Some("y".into()))
    );
}

#[test]
fn meta_args_chain_and_predefined() {
    let text = "ARG REPO=docker.io/library\nARG IMG=$REPO/alpine\nFROM ${IMG}:${TARGETARCH}\nARG TARGETARCH\n";
    let p = ok(
        text,
        &PlanOptions {
            target_platform: Some(Platform::parse("linux/arm64").unwrap()),
            ..Default::default()
        },
    );
    assert_eq!(
        p.stages[0].base,
        Base::Image("docker.io/library/alpine:arm64".into())
    );
    assert_eq!(p.global_args["TARGETPLATFORM"], "linux/arm64");
    assert_eq!(p.global_args["TARGETOS"], "linux");
    assert_eq!(p.global_args["BUILDOS"], "linux");
    let Kind::Arg(a) = &p.stages[0].steps[0].instruction.kind else {
        panic!()
    };
    assert_eq!(
        p.arg_value(&a.args[0], |s| Ok::<_, ()>(s.to_string())),
        Ok(Some("arm64".into()))
    );
    // The default target platform is the host's.
    let p = ok("FROM alpine\n", &PlanOptions::default());
    assert_eq!(p.target_platform, Platform::host());
    assert_eq!(p.global_args["TARGETARCH"], Platform::host().arch);
}

#[test]
fn undeclared_arg_in_from_warns() {
    let p = ok("FROM alpine:$TAG\n", &PlanOptions::default());
    assert_eq!(p.stages[0].base, Base::Image("alpine:".into()));
    assert_eq!(
        rules(&p),
        [(1, "InvalidDefaultArgInFrom"), (1, "UndefinedArgInFrom")]
    );
    assert_eq!(p.warnings[1].message, "FROM argument 'TAG' is not declared");
}

#[test]
fn from_platform_is_expanded() {
    let p = ok(
        "FROM --platform=$BUILDPLATFORM golang AS build\nFROM alpine\nCOPY --from=build /x /x\n",
        &PlanOptions::default(),
    );
    assert_eq!(p.stages[0].platform, Some(Platform::host()));
    assert_eq!(p.stages[1].platform, None);
    assert_eq!(p.stage_platform(0), &Platform::host());
    let arm = PlanOptions {
        target_platform: Some(Platform::parse("linux/arm64").unwrap()),
        ..Default::default()
    };
    let p = ok(
        "FROM --platform=linux/riscv64 alpine AS a\nFROM a\nFROM alpine\n",
        &arm,
    );
    assert_eq!(p.stage_platform(0).arch, "riscv64");
    assert_eq!(
        p.stage_platform(1).arch,
        "riscv64",
        "inherited from stage a"
    );
    assert_eq!(p.stage_platform(2).arch, "arm64", "the target platform");
    assert!(fails(
        "FROM --platform=linux/amd64/v2/x alpine\n",
        &PlanOptions::default()
    )
    .starts_with("Dockerfile:1: failed to parse platform linux/amd64/v2/x"));
    assert_eq!(
        fails("FROM --platform=$NOPE alpine\n", &PlanOptions::default()),
        "Dockerfile:1: empty platform value from expression $NOPE"
    );
}

#[test]
fn copy_from_index_and_image() {
    let text = "FROM alpine AS one\nRUN make\nFROM scratch\nCOPY --from=0 /bin /bin\nCOPY --from=busybox:1.36 /bin/sh /sh\nCOPY --from=ONE /a /a\n";
    let p = ok(text, &PlanOptions::default());
    assert_eq!(p.stages[1].base, Base::Scratch);
    assert_eq!(p.stages[1].steps[0].copy_from, Some(Input::Stage(0)));
    assert_eq!(
        p.stages[1].steps[1].copy_from,
        Some(Input::Image("busybox:1.36".into()))
    );
    assert_eq!(p.stages[1].steps[2].copy_from, Some(Input::Stage(0)));
    assert_eq!(p.stages[1].deps, BTreeSet::from([0]));
    assert!(p.stages[0].needed);
    assert_eq!(
        fails(
            "FROM alpine\nFROM scratch\nCOPY --from=5 /a /a\n",
            &PlanOptions::default()
        ),
        "Dockerfile:3: invalid stage index 5"
    );
}

#[test]
fn mount_from_stage_is_a_dependency() {
    let text = "FROM alpine AS tools\nFROM alpine AS unused\nFROM alpine\nRUN --mount=type=bind,from=tools,source=/usr/bin,target=/t ls /t\n";
    let p = ok(text, &PlanOptions::default());
    assert_eq!(p.stages[2].steps[0].mount_from, vec![Some(Input::Stage(0))]);
    let needed: Vec<bool> = p.stages.iter().map(|s| s.needed).collect();
    assert_eq!(needed, vec![true, false, true]);
}

#[test]
fn from_refers_to_earlier_stages_only() {
    // A later stage of that name is not a base: BuildKit treats the word as an image.
    let p = ok("FROM later\nFROM alpine AS later\n", &target("later"));
    assert_eq!(p.stages[0].base, Base::Image("later".into()));
    assert!(!p.stages[0].needed);
}

#[test]
fn forward_copy_and_cycles() {
    assert_eq!(
        fails("FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\n", &target("a")),
        "Dockerfile:2: cannot copy from stage \"b\", it needs to be defined before current stage \"a\""
    );
    assert_eq!(
        fails(
            "FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\nCOPY --from=a /y /y\n",
            &PlanOptions::default()
        ),
        "Dockerfile:2: circular dependency detected on stage: a"
    );
    assert_eq!(
        fails(
            "FROM alpine AS a\nCOPY --from=a /x /x\n",
            &PlanOptions::default()
        ),
        "Dockerfile:2: circular dependency detected on stage: a"
    );
    assert_eq!(
        fails(
            "FROM alpine\nRUN --mount=from=later,target=/x ls\nFROM alpine AS later\n",
            &target("stage-0-does-not-exist")
        ),
        "Dockerfile: target stage \"stage-0-does-not-exist\" could not be found"
    );
    // A forward reference in a pruned stage does not matter.
    let p = ok(
        "FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\n",
        &PlanOptions::default(),
    );
    assert!(!p.stages[0].needed);
}

#[test]
fn stage_name_errors() {
    assert_eq!(
        fails("FROM alpine AS x\nFROM alpine AS X\n", &PlanOptions::default()),
        "Dockerfile:2: duplicate stage name \"x\", stage names should be unique (first defined on line 1)"
    );
    assert_eq!(
        fails("FROM alpine AS scratch\n", &PlanOptions::default()),
        "Dockerfile:1: stage name \"scratch\" is reserved and can't be used as a stage name"
    );
    assert_eq!(
        fails("FROM alpine AS context\n", &PlanOptions::default()),
        "Dockerfile:1: stage name \"context\" is reserved and can't be used as a stage name"
    );
    assert_eq!(
        fails("FROM alpine AS 2nd\n", &PlanOptions::default()),
        "Dockerfile:1: invalid name for build stage: \"2nd\", name can't start with a number or contain symbols"
    );
}

#[test]
fn structure_errors() {
    assert_eq!(
        fails("ARG A\nRUN echo\nFROM alpine\n", &PlanOptions::default()),
        "Dockerfile:2: no build stage in current context"
    );
    assert_eq!(
        fails("ARG A=1\n", &PlanOptions::default()),
        "Dockerfile: dockerfile contains no stages to build"
    );
    assert_eq!(
        fails("ARG B\nFROM $B\n", &PlanOptions::default()),
        "Dockerfile:2: base name ($B) should not be blank"
    );
    assert_eq!(
        fails("FROM alpine\nCOPPY a b\n", &PlanOptions::default()),
        "Dockerfile:2: unknown instruction: COPPY"
    );
}

#[test]
fn onbuild_of_base_stage_runs_first() {
    let text = "FROM alpine AS tools\nFROM alpine AS base\nONBUILD COPY --from=tools /t /t\nFROM base\nRUN ls\n";
    let p = ok(text, &PlanOptions::default());
    let last = &p.stages[2];
    assert_eq!(last.base, Base::Stage(1));
    assert!(last.steps[0].onbuild);
    assert_eq!(last.steps[0].copy_from, Some(Input::Stage(0)));
    assert_eq!(last.deps, BTreeSet::from([0, 1]));
    assert!(p.stages.iter().all(|s| s.needed));
}

#[test]
fn proxy_and_unused_build_args() {
    let p = ok(
        "FROM alpine\nARG USED\n",
        &PlanOptions {
            build_args: BTreeMap::from([
                ("USED".to_string(), "1".to_string()),
                ("NOBODY".to_string(), "2".to_string()),
                (
                    "HTTP_PROXY".to_string(),
                    "http://127.0.0.1:3128".to_string(),
                ),
                ("TARGETARCH".to_string(), "riscv64".to_string()),
                (
                    "BUILDKIT_DOCKERFILE_CHECK".to_string(),
                    "skip=all".to_string(),
                ),
            ]),
            ..Default::default()
        },
    );
    assert_eq!(
        p.proxy_env,
        [
            (
                "HTTP_PROXY".to_string(),
                "http://127.0.0.1:3128".to_string()
            ),
            (
                "http_proxy".to_string(),
                "http://127.0.0.1:3128".to_string()
            )
        ]
    );
    assert_eq!(p.global_args["TARGETARCH"], "riscv64");
    let unused: Vec<_> = p
        .warnings
        .iter()
        .filter(|w| w.rule == "UnusedBuildArgs")
        .collect();
    assert_eq!(unused.len(), 1);
    assert!(unused[0].message.contains("[NOBODY]"));
}

fn rules(p: &Plan) -> Vec<(usize, &'static str)> {
    p.warnings.iter().map(|w| (w.line, w.rule)).collect()
}

#[test]
fn lint_seed_from_as_casing() {
    let p = ok(SEED, &PlanOptions::default());
    assert_eq!(
        rules(&p),
        vec![
            (1, "FromAsCasing"),
            (2, "FromAsCasing"),
            (9, "FromAsCasing")
        ]
    );
    assert_eq!(
        p.warnings[0].message,
        "'as' and 'FROM' keywords' casing do not match"
    );
}

#[test]
fn lint_rules() {
    let text = "FROM alpine AS Build\nWORKDIR app\nENV API_TOKEN=x\nARG NODE_VERSION\nCMD run a\nCMD [\"b\"]\nrun true\n";
    let p = ok(text, &PlanOptions::default());
    assert_eq!(
        rules(&p),
        vec![
            (1, "StageNameCasing"),
            (2, "WorkdirRelativePath"),
            (3, "SecretsUsedInArgOrEnv"),
            (5, "JSONArgsRecommended"),
            (5, "MultipleInstructionsDisallowed"),
            (7, "ConsistentInstructionCasing"),
        ]
    );
    let msgs: Vec<&str> = p.warnings.iter().map(|w| w.message.as_str()).collect();
    assert!(msgs.contains(&"Stage name 'Build' should be lowercase"));
    assert!(msgs.contains(
        &"Relative workdir \"app\" can have unexpected results if the base image changes"
    ));
    assert!(
        msgs.contains(&"Do not use ARG or ENV instructions for sensitive data (ENV \"API_TOKEN\")")
    );
    assert!(
        msgs.contains(&"Command 'run' should match the case of the command majority (uppercase)")
    );
    // SHELL makes shell-form CMD intentional; a WORKDIR in the base stage anchors relative ones.
    let p = ok(
        "FROM alpine AS base\nWORKDIR /app\nSHELL [\"/bin/bash\", \"-c\"]\nFROM base\nWORKDIR sub\nCMD run\n",
        &PlanOptions::default(),
    );
    assert_eq!(rules(&p), vec![]);
    // Rules about building a stage skip pruned stages.
    let p = ok(
        "FROM alpine AS a\nCMD x\nFROM alpine AS b\n",
        &PlanOptions::default(),
    );
    assert_eq!(rules(&p), vec![]);
}

#[test]
fn misspelt_stage_in_from_warns() {
    let p = ok(
        "FROM alpine AS builder\nFROM alpine\nCOPY --from=buidler /a /a\nRUN --mount=from=bulder,target=/b true\nCOPY --from=busybox /bin/sh /sh\n",
        &PlanOptions::default(),
    );
    assert_eq!(
        p.stages[1].steps[0].copy_from,
        Some(Input::Image("buidler".into()))
    );
    assert_eq!(
        rules(&p),
        vec![(3, "UnknownStageReference"), (4, "UnknownStageReference")]
    );
    assert_eq!(
        p.warnings[0].message,
        "\"buidler\" is not a stage of this Dockerfile and will be pulled as an image (did you mean \"builder\"?)"
    );
}

/// BuildKit sets each proxy build arg under both spellings (testBuiltinArgs:
/// `--build-arg http_proxy=…` gives `$HTTP_PROXY`), skips empty ones, and of two
/// spellings given keeps the last in sorted order.
#[test]
fn proxy_env_mirrors_case_like_buildkit() {
    let args = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        proxy_env(&args(&[
            ("NO_PROXY", "np"),
            ("http_proxy", "hp"),
            ("ALL_PROXY", ""),
            ("FOO", "x")
        ])),
        pairs(&[
            ("HTTP_PROXY", "hp"),
            ("http_proxy", "hp"),
            ("NO_PROXY", "np"),
            ("no_proxy", "np")
        ])
    );
    assert_eq!(
        proxy_env(&args(&[("HTTPS_PROXY", "upper"), ("https_proxy", "lower")])),
        pairs(&[("HTTPS_PROXY", "lower"), ("https_proxy", "lower")])
    );
    assert!(proxy_env(&args(&[("Ftp_Proxy", "")])).is_empty());
}

/// A base image's ONBUILD triggers become the first steps of the stage built on
/// it; what they read from other stages makes those needed (BuildKit's
/// testOnBuildNewDeps: a trigger's RUN --mount=from=STAGE builds STAGE).
#[test]
fn image_triggers_run_first_and_need_the_stages_they_read() {
    let text = "FROM alpine AS input\nRUN touch /foo\nFROM scratch AS other\nFROM onbuild-image\nRUN echo own\n";
    let src = Source::new("Dockerfile", text.to_string());
    let df = crate::parse(&src).unwrap();
    let mut p = plan(&df, &src, &PlanOptions::default()).unwrap();
    assert!(!p.stages[0].needed && !p.stages[1].needed);
    let trigger = |t: &str| {
        let tsrc = Source::new("ONBUILD trigger", t.to_string());
        let tdf = crate::parse(&tsrc).unwrap();
        Instruction::parse(&tdf.nodes[0], tdf.escape, &tsrc).unwrap()
    };
    p.add_image_triggers(
        2,
        vec![
            trigger("RUN --mount=type=bind,target=/in,from=input cat /in/foo"),
            trigger("COPY --from=busybox /bin/sh /sh"),
        ],
        &src,
    )
    .unwrap();
    let steps = &p.stages[2].steps;
    assert_eq!(steps.len(), 3);
    assert!(steps[0].onbuild && steps[1].onbuild && !steps[2].onbuild);
    assert_eq!(steps[0].mount_from, vec![Some(Input::Stage(0))]);
    assert_eq!(steps[1].copy_from, Some(Input::Image("busybox".into())));
    assert!(p.stages[0].needed, "the mounted stage is built");
    assert!(!p.stages[1].needed);
    assert!(p.stages[2].deps.contains(&0));
}

/// `# check=error=true` fails the build when a BuildKit rule fires (BuildKit's
/// "lint violation found for rules"), pointing at the first finding; skipped
/// rules and kiln's own rules do not count.
#[test]
fn check_error_true_fails_the_plan() {
    let text = "# check=error=true\nFROM alpine:3 as base\nWORKDIR app\n";
    let src = Source::new("Dockerfile", text.to_string());
    let df = crate::parse(&src).unwrap();
    let e = plan(&df, &src, &PlanOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:2: lint violation found for rules: FromAsCasing, WorkdirRelativePath"
    );
    assert_eq!(
        e.help.as_deref(),
        Some("Dockerfile:2: 'as' and 'FROM' keywords' casing do not match [FromAsCasing]\nDockerfile:3: Relative workdir \"app\" can have unexpected results if the base image changes [WorkdirRelativePath]")
    );
    let ok_text = "# check=error=true;skip=FromAsCasing,WorkdirRelativePath\nFROM alpine as base\nWORKDIR app\n";
    let p = ok(ok_text, &PlanOptions::default());
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}
