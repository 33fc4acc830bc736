//! Every rule, defined once: BuildKit's with its name, description and URL
//! (BuildKit's `linter/ruleset.go`), kiln's with a level and a hint.

/// How serious a finding is. BuildKit's rules are warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// Whose rule it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSet {
    BuildKit,
    Kiln,
}

/// A check rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    pub name: &'static str,
    /// One sentence: what the rule wants (and, for kiln's rules, why).
    pub description: &'static str,
    /// BuildKit's documentation page; kiln's rules have none.
    pub url: Option<&'static str>,
    pub level: Level,
    /// Off unless enabled with `experimental=` (BuildKit's experimental rules).
    pub experimental: bool,
    pub set: RuleSet,
    /// What to do about it (kiln's rules).
    pub hint: Option<&'static str>,
}

const fn bk(name: &'static str, description: &'static str, url: &'static str) -> Rule {
    Rule {
        name,
        description,
        url: Some(url),
        level: Level::Warning,
        experimental: false,
        set: RuleSet::BuildKit,
        hint: None,
    }
}

const fn kiln(
    name: &'static str,
    level: Level,
    description: &'static str,
    hint: &'static str,
) -> Rule {
    Rule {
        name,
        description,
        url: None,
        level,
        experimental: false,
        set: RuleSet::Kiln,
        hint: Some(hint),
    }
}

pub static STAGE_NAME_CASING: Rule = bk(
    "StageNameCasing",
    "Stage names should be lowercase",
    "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/",
);
pub static FROM_AS_CASING: Rule = bk(
    "FromAsCasing",
    "The 'as' keyword should match the case of the 'from' keyword",
    "https://docs.docker.com/go/dockerfile/rule/from-as-casing/",
);
pub static NO_EMPTY_CONTINUATION: Rule = bk(
    "NoEmptyContinuation",
    "Empty continuation lines will become errors in a future release",
    "https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/",
);
pub static CONSISTENT_INSTRUCTION_CASING: Rule = bk(
    "ConsistentInstructionCasing",
    "All commands within the Dockerfile should use the same casing (either upper or lower)",
    "https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/",
);
pub static DUPLICATE_STAGE_NAME: Rule = bk(
    "DuplicateStageName",
    "Stage names should be unique",
    "https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/",
);
pub static RESERVED_STAGE_NAME: Rule = bk(
    "ReservedStageName",
    "Reserved words should not be used as stage names",
    "https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/",
);
pub static JSON_ARGS_RECOMMENDED: Rule = bk(
    "JSONArgsRecommended",
    "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
    "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
);
pub static MAINTAINER_DEPRECATED: Rule = bk(
    "MaintainerDeprecated",
    "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
    "https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/",
);
pub static UNDEFINED_ARG_IN_FROM: Rule = bk(
    "UndefinedArgInFrom",
    "FROM command must use declared ARGs",
    "https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/",
);
pub static WORKDIR_RELATIVE_PATH: Rule = bk(
    "WorkdirRelativePath",
    "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
    "https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/",
);
pub static UNDEFINED_VAR: Rule = bk(
    "UndefinedVar",
    "Variables should be defined before their use",
    "https://docs.docker.com/go/dockerfile/rule/undefined-var/",
);
pub static MULTIPLE_INSTRUCTIONS_DISALLOWED: Rule = bk(
    "MultipleInstructionsDisallowed",
    "Multiple instructions of the same type should not be used in the same stage",
    "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/",
);
pub static LEGACY_KEY_VALUE_FORMAT: Rule = bk(
    "LegacyKeyValueFormat",
    "Legacy key/value format with whitespace separator should not be used",
    "https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/",
);
/// BuildKit gives this rule no URL.
pub static INVALID_BASE_IMAGE_PLATFORM: Rule = Rule {
    url: None,
    ..bk(
        "InvalidBaseImagePlatform",
        "Base image platform does not match expected target platform",
        "",
    )
};
pub static REDUNDANT_TARGET_PLATFORM: Rule = bk(
    "RedundantTargetPlatform",
    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
    "https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/",
);
pub static SECRETS_USED_IN_ARG_OR_ENV: Rule = bk(
    "SecretsUsedInArgOrEnv",
    "Sensitive data should not be used in the ARG or ENV commands",
    "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/",
);
pub static INVALID_DEFAULT_ARG_IN_FROM: Rule = bk(
    "InvalidDefaultArgInFrom",
    "Default value for global ARG results in an empty or invalid base image name",
    "https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/",
);
pub static FROM_PLATFORM_FLAG_CONST_DISALLOWED: Rule = bk(
    "FromPlatformFlagConstDisallowed",
    "FROM --platform flag should not use a constant value",
    "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/",
);
pub static COPY_IGNORED_FILE: Rule = bk(
    "CopyIgnoredFile",
    "Attempting to Copy file that is excluded by .dockerignore",
    "https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/",
);
pub static INVALID_DEFINITION_DESCRIPTION: Rule = Rule {
    experimental: true,
    ..bk(
        "InvalidDefinitionDescription",
        "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
        "https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/",
    )
};
pub static EXPOSE_PROTO_CASING: Rule = bk(
    "ExposeProtoCasing",
    "Protocol in EXPOSE instruction should be lowercase",
    "https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/",
);
pub static EXPOSE_INVALID_FORMAT: Rule = bk(
    "ExposeInvalidFormat",
    "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
    "https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/",
);

pub static FINAL_STAGE_RUNS_AS_ROOT: Rule = kiln(
    "FinalStageRunsAsRoot",
    Level::Warning,
    "The final stage runs as root: a process that is broken into owns the whole container.",
    "Add a non-root user in the final stage and end it with `USER <name>` (distroless images have `nonroot`).",
);
pub static FINAL_STAGE_COPIES_CONTEXT: Rule = kiln(
    "FinalStageCopiesContext",
    Level::Warning,
    "The final stage copies the whole build context: sources, tests and tooling end up in the production image.",
    "Build in an earlier stage and copy only its output into the final stage with `COPY --from=<stage>`.",
);
pub static DEV_DEPENDENCIES_IN_FINAL_STAGE: Rule = kiln(
    "DevDependenciesInFinalStage",
    Level::Warning,
    "Dependencies are installed in the final stage without the package manager's production-only option, so development dependencies ship in the image.",
    "Install with `npm ci --omit=dev`, `yarn install --production`, `pnpm install --prod` or production requirements only, or install in a build stage.",
);
pub static COPY_FROM_STAGE_INDEX: Rule = kiln(
    "CopyFromStageIndex",
    Level::Warning,
    "`COPY --from=<number>` refers to a stage by its position, which silently changes when a stage is added or moved.",
    "Name the stage (`FROM ... AS build`) and copy with `COPY --from=build`.",
);
pub static BASE_IMAGE_UNPINNED: Rule = kiln(
    "BaseImageUnpinned",
    Level::Warning,
    "The base image has no tag or uses `latest`, so the same Dockerfile builds a different image whenever upstream moves.",
    "Pin a version tag (and ideally a digest): `FROM node:22.11-alpine3.20@sha256:...`.",
);
pub static CONTEXT_NOT_IGNORED: Rule = kiln(
    "ContextNotIgnored",
    Level::Warning,
    "`COPY .` copies a context that holds files that do not belong in an image (dependencies, VCS data, secrets, build output) and `.dockerignore` does not exclude them.",
    "List them in `.dockerignore` (e.g. `node_modules`, `.git`, `.env`, `dist`).",
);
pub static MISSING_OCI_LABELS: Rule = kiln(
    "MissingOciLabels",
    Level::Info,
    "The final stage sets no `org.opencontainers.image.*` label, so the image does not say where it comes from.",
    "Add e.g. `LABEL org.opencontainers.image.source=<repository URL>` and `org.opencontainers.image.version`.",
);

/// Every rule, BuildKit's first (in its order), then kiln's.
pub static ALL: &[&Rule] = &[
    &STAGE_NAME_CASING,
    &FROM_AS_CASING,
    &NO_EMPTY_CONTINUATION,
    &CONSISTENT_INSTRUCTION_CASING,
    &DUPLICATE_STAGE_NAME,
    &RESERVED_STAGE_NAME,
    &JSON_ARGS_RECOMMENDED,
    &MAINTAINER_DEPRECATED,
    &UNDEFINED_ARG_IN_FROM,
    &WORKDIR_RELATIVE_PATH,
    &UNDEFINED_VAR,
    &MULTIPLE_INSTRUCTIONS_DISALLOWED,
    &LEGACY_KEY_VALUE_FORMAT,
    &INVALID_BASE_IMAGE_PLATFORM,
    &REDUNDANT_TARGET_PLATFORM,
    &SECRETS_USED_IN_ARG_OR_ENV,
    &INVALID_DEFAULT_ARG_IN_FROM,
    &FROM_PLATFORM_FLAG_CONST_DISALLOWED,
    &COPY_IGNORED_FILE,
    &INVALID_DEFINITION_DESCRIPTION,
    &EXPOSE_PROTO_CASING,
    &EXPOSE_INVALID_FORMAT,
    &FINAL_STAGE_RUNS_AS_ROOT,
    &FINAL_STAGE_COPIES_CONTEXT,
    &DEV_DEPENDENCIES_IN_FINAL_STAGE,
    &COPY_FROM_STAGE_INDEX,
    &BASE_IMAGE_UNPINNED,
    &CONTEXT_NOT_IGNORED,
    &MISSING_OCI_LABELS,
];

/// The rule of that name.
pub fn by_name(name: &str) -> Option<&'static Rule> {
    ALL.iter().copied().find(|r| r.name == name)
}
