//! One positive and one negative fixture per rule (BuildKit's own examples
//! from its rule docs where it gives them), as a table; then the configuration
//! (directive, build arg, comments, `--target`).

use super::*;
use crate::stages::Platform;
use std::collections::BTreeMap;

/// A host with stored images, a `.dockerignore` and context entries.
#[derive(Default)]
struct TestHost {
    images: Vec<(&'static str, ImageFacts)>,
    ignored_prefix: Option<&'static str>,
    entries: Option<Vec<&'static str>>,
}

impl Host for TestHost {
    fn base_image(&self, reference: &str, _platform: &Platform) -> Option<ImageFacts> {
        self.images
            .iter()
            .find(|(r, _)| *r == reference)
            .map(|(_, f)| f.clone())
    }
    fn ignored(&self, path: &str) -> Option<bool> {
        self.ignored_prefix.map(|p| path.starts_with(p))
    }
    fn context_entries(&self, names: &[&str]) -> Option<Vec<String>> {
        self.entries.as_ref().map(|e| {
            names
                .iter()
                .filter(|n| e.contains(n))
                .map(|n| n.to_string())
                .collect()
        })
    }
}

fn facts(platform: &str, env: &[(&str, &str)], user: &str) -> ImageFacts {
    ImageFacts {
        platform: Platform::parse(platform).unwrap(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        user: user.into(),
        has_shell: false,
        workdir: String::new(),
    }
}

fn run_with(text: &str, opts: &Options, host: &dyn Host) -> Report {
    let src = Source::new("Dockerfile", text.to_string());
    let df = crate::parse(&src).unwrap();
    check(&df, &src, opts, host).unwrap()
}

fn amd64() -> Options {
    Options {
        target_platform: Some(Platform::parse("linux/amd64").unwrap()),
        all_stages: true,
        ..Options::default()
    }
}

/// `(rule, Dockerfile, lines where the rule must fire)`; no lines: must not fire.
type Case = (&'static str, &'static str, &'static [usize]);

const CASES: &[Case] = &[
    ("StageNameCasing", "FROM alpine AS BuilderBase\n", &[1]),
    ("StageNameCasing", "FROM alpine AS builder-base\n", &[]),
    ("FromAsCasing", "FROM debian:latest as builder\n", &[1]),
    ("FromAsCasing", "FROM debian:latest AS deb-builder\n", &[]),
    ("FromAsCasing", "from debian:latest as deb-builder\n", &[]),
    ("NoEmptyContinuation", "FROM alpine\nEXPOSE \\\n\n80\n", &[4]),
    ("NoEmptyContinuation", "FROM alpine\nEXPOSE \\\n# Port\n80\n", &[]),
    (
        "ConsistentInstructionCasing",
        "From alpine\nRun echo hello > /greeting.txt\nEntRYpOiNT [\"cat\", \"/greeting.txt\"]\n",
        &[1, 2, 3],
    ),
    (
        "ConsistentInstructionCasing",
        "FROM alpine\nRUN echo hello\nrun echo again\nENTRYPOINT [\"cat\"]\n",
        &[3],
    ),
    (
        "ConsistentInstructionCasing",
        "from alpine\nrun echo hello > /greeting.txt\nentrypoint [\"cat\", \"/greeting.txt\"]\n",
        &[],
    ),
    (
        "DuplicateStageName",
        "FROM debian:latest AS builder\nRUN apt-get update; apt-get install -y curl\n\nFROM golang:latest AS builder\n",
        &[4],
    ),
    (
        "DuplicateStageName",
        "FROM debian:latest AS deb-builder\nFROM golang:latest AS go-builder\n",
        &[],
    ),
    (
        "ReservedStageName",
        "FROM alpine AS scratch\nFROM alpine AS context\n",
        &[1, 2],
    ),
    ("ReservedStageName", "FROM alpine AS builder\n", &[]),
    (
        "JSONArgsRecommended",
        "FROM alpine\nENTRYPOINT my-program start\n",
        &[2],
    ),
    (
        "JSONArgsRecommended",
        "FROM alpine\nCMD my-program start\n",
        &[2],
    ),
    (
        "JSONArgsRecommended",
        "FROM alpine\nENTRYPOINT [\"my-program\", \"start\"]\n",
        &[],
    ),
    (
        "JSONArgsRecommended",
        "FROM alpine\nRUN apk add bash\nSHELL [\"/bin/bash\", \"-c\"]\nENTRYPOINT echo \"hello world\"\n",
        &[],
    ),
    (
        "MaintainerDeprecated",
        "FROM alpine\nMAINTAINER moby@example.com\n",
        &[2],
    ),
    (
        "MaintainerDeprecated",
        "FROM alpine\nLABEL org.opencontainers.image.authors=\"moby@example.com\"\n",
        &[],
    ),
    (
        "UndefinedArgInFrom",
        "FROM node:22${VARIANT} AS jsbuilder\n",
        &[1],
    ),
    (
        "UndefinedArgInFrom",
        "ARG VARIANT=\"-alpine3.20\"\nFROM node:22${VARIANT} AS jsbuilder\n",
        &[],
    ),
    (
        "UndefinedArgInFrom",
        "FROM --platform=$BUILDPLATFORM alpine AS b\n",
        &[],
    ),
    (
        "WorkdirRelativePath",
        "FROM nginx AS web\nWORKDIR usr/share/nginx/html\nCOPY public .\n",
        &[2],
    ),
    (
        "WorkdirRelativePath",
        "FROM nginx AS web\nWORKDIR /usr/share/nginx/html\nWORKDIR sub\n",
        &[],
    ),
    ("UndefinedVar", "FROM scratch AS base\nCOPY $foo .\n", &[2]),
    ("UndefinedVar", "FROM scratch AS base\nARG VERSION=$foo\n", &[2]),
    (
        "UndefinedVar",
        "FROM scratch AS base\nARG foo\nCOPY $foo .\n",
        &[],
    ),
    (
        "UndefinedVar",
        "FROM scratch AS base\nRUN echo $foo\nCMD echo $bar\n",
        &[],
    ),
    (
        "MultipleInstructionsDisallowed",
        "FROM alpine\nENTRYPOINT [\"echo\", \"Hello, Norway!\"]\nENTRYPOINT [\"echo\", \"Hello, Sweden!\"]\n",
        &[2],
    ),
    (
        "MultipleInstructionsDisallowed",
        "FROM python:alpine\nRUN apk add curl\nHEALTHCHECK --interval=1s --timeout=3s \\\n  CMD [\"curl\", \"-f\", \"http://localhost:8080\"]\nCMD [\"python\", \"-m\", \"http.server\", \"8080\"]\n",
        &[],
    ),
    ("LegacyKeyValueFormat", "FROM alpine\nENV DEPS curl\n", &[2]),
    ("LegacyKeyValueFormat", "FROM alpine\nLABEL maintainer me\n", &[2]),
    ("LegacyKeyValueFormat", "FROM alpine\nENV DEPS=curl\n", &[]),
    (
        "RedundantTargetPlatform",
        "FROM --platform=$TARGETPLATFORM alpine AS builder\n",
        &[1],
    ),
    ("RedundantTargetPlatform", "FROM alpine AS builder\n", &[]),
    (
        "SecretsUsedInArgOrEnv",
        "FROM alpine\nARG AWS_ACCESS_KEY_ID\nARG AWS_SECRET_ACCESS_KEY\nENV GITHUB_TOKEN=x\n",
        &[2, 3, 4],
    ),
    (
        "SecretsUsedInArgOrEnv",
        "FROM alpine\nARG PUBLIC_KEY\nENV NODE_VERSION=22 KEY_FILE=/k\n",
        &[],
    ),
    (
        "InvalidDefaultArgInFrom",
        "ARG TAG\nFROM busybox:${TAG}\n",
        &[2],
    ),
    (
        "InvalidDefaultArgInFrom",
        "ARG TAG=latest\nFROM busybox:${TAG}\n",
        &[],
    ),
    (
        "InvalidDefaultArgInFrom",
        "ARG VARIANT\nFROM busybox:stable${VARIANT}\n",
        &[],
    ),
    (
        "InvalidDefaultArgInFrom",
        "ARG TAG\nFROM alpine:${TAG:-3.14}\n",
        &[],
    ),
    (
        "FromPlatformFlagConstDisallowed",
        "FROM --platform=linux/amd64 alpine AS base\nRUN apk add --no-cache git\n",
        &[1],
    ),
    (
        "FromPlatformFlagConstDisallowed",
        "FROM --platform=${BUILDPLATFORM} alpine AS base\n",
        &[],
    ),
    (
        "FromPlatformFlagConstDisallowed",
        "FROM --platform=linux/amd64 alpine AS build_amd64\nFROM --platform=linux/arm64 alpine AS build_arm64\n",
        &[],
    ),
    (
        "InvalidDefinitionDescription",
        "# check=experimental=InvalidDefinitionDescription\n# a non-descriptive comment\nFROM scratch AS base\n\n# another non-descriptive comment\nARG VERSION=1\n",
        &[3, 6],
    ),
    (
        "InvalidDefinitionDescription",
        "# check=experimental=InvalidDefinitionDescription\n# base is a stage for compiling source\nFROM scratch AS base\n# VERSION This is the version number.\nARG VERSION=1\n",
        &[],
    ),
    (
        "InvalidDefinitionDescription",
        "# a non-descriptive comment\nFROM scratch AS base\n",
        &[],
    ),
    ("ExposeProtoCasing", "FROM alpine\nEXPOSE 80/TcP\n", &[2]),
    ("ExposeProtoCasing", "FROM alpine\nEXPOSE 80/tcp 53/udp\n", &[]),
    (
        "ExposeInvalidFormat",
        "FROM alpine\nEXPOSE 127.0.0.1:80:80\nEXPOSE 80:80\n",
        &[2, 3],
    ),
    ("ExposeInvalidFormat", "FROM alpine\nEXPOSE 80\n", &[]),
    // kiln's rules.
    (
        "FinalStageRunsAsRoot",
        "FROM alpine AS build\nRUN make\nFROM scratch\nCOPY --from=build /app /app\n",
        &[3],
    ),
    ("FinalStageRunsAsRoot", "FROM alpine\nUSER root\n", &[2]),
    ("FinalStageRunsAsRoot", "FROM alpine\nUSER 0:0\n", &[2]),
    (
        "FinalStageRunsAsRoot",
        "FROM alpine AS base\nUSER app\nFROM base\nRUN true\n",
        &[],
    ),
    (
        "FinalStageRunsAsRoot",
        "FROM alpine\nUSER 10001\nFROM alpine AS unused\n",
        &[3],
    ),
    ("FinalStageCopiesContext", "FROM node:22\nCOPY . .\n", &[2]),
    ("FinalStageCopiesContext", "FROM node:22\nADD ./ /app\n", &[2]),
    (
        "FinalStageCopiesContext",
        "FROM node:22 AS build\nCOPY . .\nRUN npm run build\nFROM node:22\nCOPY --from=build /app/dist /app\nCOPY package.json /app/\n",
        &[],
    ),
    (
        "DevDependenciesInFinalStage",
        "FROM node:22\nRUN npm ci && npm run build\n",
        &[2],
    ),
    (
        "DevDependenciesInFinalStage",
        "FROM python:3.12\nRUN pip install -r requirements-dev.txt\n",
        &[2],
    ),
    (
        "DevDependenciesInFinalStage",
        "FROM node:22 AS build\nRUN npm ci\nFROM node:22\nRUN npm ci --omit=dev\n",
        &[],
    ),
    (
        "DevDependenciesInFinalStage",
        "FROM node:22\nENV NODE_ENV=production\nRUN npm ci\n",
        &[],
    ),
    (
        "CopyFromStageIndex",
        "FROM alpine\nRUN x\nFROM alpine\nCOPY --from=0 /a /a\n",
        &[4],
    ),
    (
        "CopyFromStageIndex",
        "FROM alpine AS build\nFROM alpine\nCOPY --from=build /a /a\n",
        &[],
    ),
    ("BaseImageUnpinned", "FROM node\nFROM node:latest\n", &[1, 2]),
    (
        "BaseImageUnpinned",
        "FROM localhost:5000/node\n",
        &[1],
    ),
    (
        "BaseImageUnpinned",
        "FROM node:22 AS a\nFROM scratch\nFROM a\nFROM localhost:5000/node:1\nFROM node@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
        &[],
    ),
    (
        "MissingOciLabels",
        "FROM alpine AS build\nLABEL org.opencontainers.image.source=x\nFROM alpine\n",
        &[3],
    ),
    (
        "MissingOciLabels",
        "FROM alpine AS base\nLABEL org.opencontainers.image.source=https://example.com/r\nFROM base\n",
        &[],
    ),
];

fn lines_of(report: &Report, rule: &str) -> Vec<usize> {
    report
        .findings
        .iter()
        .filter(|f| f.rule.name == rule)
        .map(|f| f.location.start_line)
        .collect()
}

#[test]
fn every_rule_fires_where_it_should_and_nowhere_else() {
    let mut failures = Vec::new();
    for (rule, text, lines) in CASES {
        assert!(rules::by_name(rule).is_some(), "no rule {rule}");
        let report = run_with(text, &amd64(), &NoHost);
        let got = lines_of(&report, rule);
        if got != *lines {
            failures.push(format!(
                "{rule}: expected lines {lines:?}, got {got:?} for\n{text}\nall: {:?}",
                report
                    .findings
                    .iter()
                    .map(|f| (f.location.start_line, f.rule.name, &f.message))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Every rule has a positive and a negative case here or below (the ones
    // that need a host: CopyIgnoredFile, InvalidBaseImagePlatform, ContextNotIgnored).
    for r in rules::ALL {
        let host_rules = [
            "CopyIgnoredFile",
            "InvalidBaseImagePlatform",
            "ContextNotIgnored",
        ];
        if host_rules.contains(&r.name) {
            continue;
        }
        let pos = CASES.iter().any(|(n, _, l)| *n == r.name && !l.is_empty());
        let neg = CASES.iter().any(|(n, _, l)| *n == r.name && l.is_empty());
        assert!(
            pos && neg,
            "{} needs a positive and a negative case",
            r.name
        );
    }
}

fn messages(report: &Report) -> Vec<(usize, &'static str, String)> {
    report
        .findings
        .iter()
        .map(|f| (f.location.start_line, f.rule.name, f.message.clone()))
        .collect()
}

#[test]
fn messages_are_buildkits() {
    let text = "FROM alpine AS Build\nFROM debian as b\nMAINTAINER me\nWORKDIR app\nENV API_TOKEN=x\nENV A b\nCMD run a\nCMD [\"b\"]\nEXPOSE 80/TcP 127.0.0.1:80:80\nFROM --platform=$TARGETPLATFORM alpine AS scratch\nFROM --platform=linux/arm64 alpine AS b\nFROM ${BASE} AS c\n";
    let r = run_with(text, &amd64(), &NoHost);
    let m = messages(&r);
    let has = |line: usize, rule: &str, msg: &str| {
        assert!(
            m.iter()
                .any(|(l, r, t)| *l == line && *r == rule && t == msg),
            "missing {line} {rule} {msg:?} in {m:#?}"
        )
    };
    has(
        1,
        "StageNameCasing",
        "Stage name 'Build' should be lowercase",
    );
    has(
        2,
        "FromAsCasing",
        "'as' and 'FROM' keywords' casing do not match",
    );
    has(
        3,
        "MaintainerDeprecated",
        "Maintainer instruction is deprecated in favor of using label",
    );
    has(
        4,
        "WorkdirRelativePath",
        "Relative workdir \"app\" can have unexpected results if the base image changes",
    );
    has(
        5,
        "SecretsUsedInArgOrEnv",
        "Do not use ARG or ENV instructions for sensitive data (ENV \"API_TOKEN\")",
    );
    has(
        6,
        "LegacyKeyValueFormat",
        "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
    );
    has(7, "MultipleInstructionsDisallowed", "Multiple CMD instructions should not be used in the same stage because only the last one will be used");
    has(
        7,
        "JSONArgsRecommended",
        "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals",
    );
    has(
        9,
        "ExposeProtoCasing",
        "Defined protocol '80/TcP' in EXPOSE instruction should be lowercase",
    );
    has(9, "ExposeInvalidFormat", "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'");
    has(10, "RedundantTargetPlatform", "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior");
    has(
        10,
        "ReservedStageName",
        "Stage name should not use the same name as reserved stage \"scratch\"",
    );
    has(
        11,
        "DuplicateStageName",
        "Duplicate stage name \"b\", stage names should be unique",
    );
    has(
        11,
        "FromPlatformFlagConstDisallowed",
        "FROM --platform flag should not use constant value \"linux/arm64\"",
    );
    has(
        12,
        "UndefinedArgInFrom",
        "FROM argument 'BASE' is not declared",
    );
    has(
        12,
        "InvalidDefaultArgInFrom",
        "Default value for ARG ${BASE} results in empty or invalid base image name",
    );
    let r = run_with("FROM scratch\nENV PATH=$PAHT:/app/bin\n", &amd64(), &NoHost);
    assert_eq!(lines_of(&r, "UndefinedVar"), [2], "{:?}", messages(&r));
    assert_eq!(
        r.findings
            .iter()
            .find(|f| f.rule.name == "UndefinedVar")
            .unwrap()
            .message,
        "Usage of undefined variable '$PAHT' (did you mean $PATH?)"
    );
    let r = run_with("ARG VARIANT\nFROM node:22${VARAINT}\n", &amd64(), &NoHost);
    assert!(messages(&r).contains(&(
        2,
        "UndefinedArgInFrom",
        "FROM argument 'VARAINT' is not declared (did you mean VARIANT?)".into()
    )));
    let r = run_with("FROM alpine\nEXPOSE \\\n\n80\n", &amd64(), &NoHost);
    assert!(messages(&r).contains(&(4, "NoEmptyContinuation", "Empty continuation line".into())));
    let r = run_with("FROM alpine\nCOPY . .\n", &amd64(), &NoHost);
    assert_eq!(
        r.findings.iter().find(|f| f.rule.name == "CopyIgnoredFile"),
        None
    );
}

#[test]
fn rules_that_need_the_host() {
    // UndefinedVar: the base image's environment counts; without it the rule is skipped.
    let text = "FROM python AS base\nARG VERSION=$PYTHON_VERSION\nENV X=$NOPE\n";
    let host = TestHost {
        images: vec![(
            "python",
            facts("linux/amd64", &[("PYTHON_VERSION", "3.12")], ""),
        )],
        ..TestHost::default()
    };
    let r = run_with(text, &amd64(), &host);
    assert_eq!(lines_of(&r, "UndefinedVar"), [3]);
    let r = run_with(text, &amd64(), &NoHost);
    assert_eq!(lines_of(&r, "UndefinedVar"), Vec::<usize>::new());
    assert!(r
        .skipped
        .iter()
        .any(|s| s.rule == "UndefinedVar" && s.reason.contains("python")));

    // InvalidBaseImagePlatform: only with the image stored.
    let text = "FROM alpine\nFROM --platform=linux/arm64 busybox AS arm\n";
    let host = TestHost {
        images: vec![
            ("alpine", facts("linux/arm64", &[], "")),
            ("busybox", facts("linux/arm64", &[], "")),
        ],
        ..TestHost::default()
    };
    let r = run_with(text, &amd64(), &host);
    assert_eq!(lines_of(&r, "InvalidBaseImagePlatform"), [1]);
    assert_eq!(
        r.findings.iter().find(|f| f.rule.name == "InvalidBaseImagePlatform").unwrap().message,
        "Base image alpine was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build"
    );
    let r = run_with(text, &amd64(), &NoHost);
    assert!(lines_of(&r, "InvalidBaseImagePlatform").is_empty());
    assert!(r
        .skipped
        .iter()
        .any(|s| s.rule == "InvalidBaseImagePlatform"));

    // CopyIgnoredFile.
    let host = TestHost {
        ignored_prefix: Some("tmp/"),
        ..TestHost::default()
    };
    let r = run_with(
        "FROM scratch\nCOPY ./tmp/helloworld.txt /helloworld.txt\nCOPY ./forever/helloworld.txt /h\nADD tmp/a https://example.com/x /\nFROM scratch AS b\nCOPY --from=0 tmp/x /x\n",
        &amd64(),
        &host,
    );
    assert_eq!(lines_of(&r, "CopyIgnoredFile"), [2, 4]);
    assert_eq!(
        r.findings
            .iter()
            .find(|f| f.rule.name == "CopyIgnoredFile")
            .unwrap()
            .message,
        "Attempting to Copy file \"tmp/helloworld.txt\" that is excluded by .dockerignore"
    );

    // FinalStageRunsAsRoot: a base image that sets a user is fine.
    let host = TestHost {
        images: vec![("distroless", facts("linux/amd64", &[], "nonroot"))],
        ..TestHost::default()
    };
    let r = run_with("FROM distroless\n", &amd64(), &host);
    assert!(lines_of(&r, "FinalStageRunsAsRoot").is_empty());
    let r = run_with("FROM distroless\n", &amd64(), &NoHost);
    assert_eq!(lines_of(&r, "FinalStageRunsAsRoot"), [1]);

    // ContextNotIgnored.
    let text = "FROM node:22 AS build\nCOPY . .\nFROM node:22\nCOPY package.json .\n";
    let host = TestHost {
        entries: Some(vec!["node_modules", ".git", "src"]),
        ..TestHost::default()
    };
    let r = run_with(text, &amd64(), &host);
    assert_eq!(lines_of(&r, "ContextNotIgnored"), [2]);
    assert!(r.findings.iter().any(|f| f.message == "COPY . copies node_modules, .git from the build context; .dockerignore does not exclude them"));
    let host = TestHost {
        entries: Some(vec!["src"]),
        ..TestHost::default()
    };
    assert!(lines_of(&run_with(text, &amd64(), &host), "ContextNotIgnored").is_empty());
    let r = run_with(text, &amd64(), &NoHost);
    assert!(r.skipped.iter().any(|s| s.rule == "ContextNotIgnored"));
}

#[test]
fn directive_build_arg_and_comments_configure_the_checks() {
    let text = "# check=skip=JSONArgsRecommended,MissingOciLabels;error=true\nFROM alpine:3\nCMD run\nWORKDIR app\nUSER app\n";
    let r = run_with(text, &amd64(), &NoHost);
    assert_eq!(
        r.findings.iter().map(|f| f.rule.name).collect::<Vec<_>>(),
        ["WorkdirRelativePath"]
    );
    assert!(r.error_on_findings && r.failed());
    assert_eq!(r.failing_rules(), ["WorkdirRelativePath"]);

    // The build arg replaces the directive as a whole.
    let mut opts = amd64();
    opts.build_args = BTreeMap::from([(
        CHECK_BUILD_ARG.to_string(),
        "skip=WorkdirRelativePath".to_string(),
    )]);
    let r = run_with(text, &opts, &NoHost);
    let names: Vec<&str> = r.findings.iter().map(|f| f.rule.name).collect();
    assert_eq!(names, ["MissingOciLabels", "JSONArgsRecommended"]);
    assert!(names.contains(&"JSONArgsRecommended") && !names.contains(&"WorkdirRelativePath"));
    assert!(!r.error_on_findings && !r.failed());
    opts.build_args
        .insert(CHECK_BUILD_ARG.into(), "skip=all".into());
    assert!(run_with(text, &opts, &NoHost).findings.is_empty());
    opts.build_args
        .insert(CHECK_BUILD_ARG.into(), "nonsense".into());
    let src = Source::new("Dockerfile", text.to_string());
    let df = crate::parse(&src).unwrap();
    let e = check(&df, &src, &opts, &NoHost).unwrap_err();
    assert_eq!(
        e.message,
        "failed to parse BUILDKIT_DOCKERFILE_CHECK: invalid check option \"nonsense\""
    );

    // A malformed directive is an error on its line.
    let src = Source::new(
        "Dockerfile",
        "# check=error=maybe\nFROM alpine\n".to_string(),
    );
    let df = crate::parse(&src).unwrap();
    let e = check(&df, &src, &amd64(), &NoHost).unwrap_err();
    assert_eq!(e.line, 1);
    assert!(
        e.message.starts_with(
            "failed to parse check options: failed to parse check option \"error=maybe\""
        ),
        "{}",
        e.message
    );

    // A `# check=` comment right above an instruction adds to the configuration there.
    let r = run_with(
        "FROM alpine:3\n# check=skip=JSONArgsRecommended\nCMD run\nENTRYPOINT run\n",
        &amd64(),
        &NoHost,
    );
    assert_eq!(lines_of(&r, "JSONArgsRecommended"), [4]);
}

#[test]
fn target_limits_the_dispatch_rules_to_needed_stages() {
    let text = "FROM alpine:3 AS a\nWORKDIR rel\nFROM alpine:3 AS b\nWORKDIR rel\nFROM alpine:3 AS c\nCOPY --from=b /x /x\n";
    let r = run_with(text, &amd64(), &NoHost);
    assert_eq!(lines_of(&r, "WorkdirRelativePath"), [2, 4]);
    let mut opts = amd64();
    opts.target = Some("c".into());
    let r = run_with(text, &opts, &NoHost);
    assert_eq!(lines_of(&r, "WorkdirRelativePath"), [4]);
    // A build (no target, not all stages) checks what the last stage needs.
    let build = Options {
        all_stages: false,
        ..amd64()
    };
    assert_eq!(
        lines_of(&run_with(text, &build, &NoHost), "WorkdirRelativePath"),
        [4]
    );
    opts.target = Some("nope".into());
    let src = Source::new("Dockerfile", text.to_string());
    let df = crate::parse(&src).unwrap();
    assert_eq!(
        check(&df, &src, &opts, &NoHost).unwrap_err().message,
        "target stage \"nope\" could not be found"
    );
}

#[test]
fn check_options_parse_like_buildkit() {
    let c = parse_check_options(" skip = A, B ; error = 1 ; experimental=all").unwrap();
    assert_eq!(
        c.skip.iter().map(String::as_str).collect::<Vec<_>>(),
        ["A", "B"]
    );
    assert!(c.error && c.experimental_all && !c.skip_all);
    assert_eq!(parse_check_options("").unwrap(), CheckConfig::default());
    assert_eq!(
        parse_check_options("skip").unwrap_err(),
        "invalid check option \"skip\""
    );
    assert_eq!(
        parse_check_options("warn=all").unwrap_err(),
        "invalid check option \"warn\""
    );
    // Experimental rules ignore skip=all.
    let c = parse_check_options("skip=all;experimental=InvalidDefinitionDescription").unwrap();
    assert!(c.enabled(&rules::INVALID_DEFINITION_DESCRIPTION));
    assert!(!c.enabled(&rules::STAGE_NAME_CASING));
}

#[test]
fn instruction_errors_stop_the_check_with_their_line() {
    let src = Source::new("Dockerfile", "FROM alpine\nCOPPY a b\n".to_string());
    let df = crate::parse(&src).unwrap();
    let e = check(&df, &src, &amd64(), &NoHost).unwrap_err();
    assert_eq!(e.to_string(), "Dockerfile:2: unknown instruction: COPPY");
}
