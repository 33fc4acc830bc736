//! Unit tests of the typed instructions, on hand-built AST nodes.

use super::*;

fn node(keyword: &str, flags: &[&str], args: &[&str]) -> Node {
    let mut original = keyword.to_ascii_uppercase();
    for w in flags.iter().chain(args) {
        original.push(' ');
        original.push_str(w);
    }
    Node {
        keyword: keyword.to_ascii_lowercase(),
        flags: flags.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        sub: None,
        json: false,
        heredocs: vec![],
        original,
        start_line: 3,
        end_line: 3,
        prev_comment: vec![],
    }
}

fn json(mut n: Node) -> Node {
    n.json = true;
    n
}

fn parse(n: &Node) -> Instruction {
    parse_node(n, '\\').unwrap_or_else(|e| panic!("{}: {}", n.original, e.message))
}

fn err(n: &Node) -> String {
    match parse_node(n, '\\') {
        Ok(i) => panic!("{} should fail, got {i:?}", n.original),
        Err(e) => e.message,
    }
}

#[test]
fn from_forms() {
    let Instruction::From(f) = parse(&node("from", &[], &["alpine:3.19"])) else {
        panic!()
    };
    assert_eq!(f.base, "alpine:3.19");
    assert_eq!(f.name, None);
    assert_eq!(f.platform, None);
    let Instruction::From(f) = parse(&node(
        "from",
        &["--platform=$BUILDPLATFORM"],
        &["golang", "AS", "Build-Env"],
    )) else {
        panic!()
    };
    assert_eq!(f.name.as_deref(), Some("build-env"));
    assert_eq!(f.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(f.origin.start_line, 3);
}

#[test]
fn from_errors() {
    assert_eq!(
        err(&node("from", &[], &["a", "b"])),
        "FROM requires either one or three arguments"
    );
    assert_eq!(
        err(&node("from", &[], &["a", "to", "b"])),
        "FROM requires either one or three arguments"
    );
    assert_eq!(
        err(&node("from", &[], &["a", "as", "1st"])),
        "invalid name for build stage: \"1st\", name can't start with a number or contain symbols"
    );
    assert_eq!(
        err(&node("from", &[], &["a", "as", "a/b"])),
        "invalid name for build stage: \"a/b\", name can't start with a number or contain symbols"
    );
    assert_eq!(
        err(&node("from", &["--plat=x"], &["a"])),
        "unknown flag: --plat"
    );
    assert_eq!(
        err(&node("from", &["--platform"], &["a"])),
        "missing a value on flag: --platform"
    );
}

#[test]
fn stage_name_rule() {
    for ok in ["a", "builder", "a-b_c.d", "x1"] {
        assert!(is_valid_stage_name(ok), "{ok}");
    }
    for bad in ["", "1a", "-a", "A", "a b", "a:b"] {
        assert!(!is_valid_stage_name(bad), "{bad}");
    }
}

#[test]
fn run_forms_and_flags() {
    let Instruction::Run(r) = parse(&node("run", &[], &["npm install"])) else {
        panic!()
    };
    assert_eq!(r.command, CommandLine::Shell("npm install".into()));
    assert_eq!(r.network, NetworkMode::Default);
    assert_eq!(r.security, Security::Sandbox);
    let Instruction::Run(r) = parse(&json(node("run", &[], &["echo", "hi"]))) else {
        panic!()
    };
    assert_eq!(
        r.command,
        CommandLine::Exec(vec!["echo".into(), "hi".into()])
    );

    let Instruction::Run(r) = parse(&node(
        "run",
        &[
            "--mount=type=cache,target=/root/.npm",
            "--mount=type=bind,from=builder,source=/out,target=/in",
            "--network=none",
            "--security=insecure",
            "--device=vendor.com/gpu=all,required",
        ],
        &["make"],
    )) else {
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
    let Instruction::Run(r) = parse(&n) else {
        panic!()
    };
    assert_eq!(r.command, CommandLine::Shell("<<EOF".into()));
    assert_eq!(r.heredocs[0].content, "echo hi\n");
}

#[test]
fn cmd_entrypoint_shell() {
    let Instruction::Cmd(c) = parse(&json(node("cmd", &[], &["npm", "start"]))) else {
        panic!()
    };
    assert_eq!(
        c.command,
        CommandLine::Exec(vec!["npm".into(), "start".into()])
    );
    let Instruction::Entrypoint(e) = parse(&json(node("entrypoint", &[], &[]))) else {
        panic!()
    };
    assert_eq!(e.command, CommandLine::Exec(vec![]));
    let Instruction::Shell(s) = parse(&json(node("shell", &[], &["/bin/bash", "-c"]))) else {
        panic!()
    };
    assert_eq!(s.shell, vec!["/bin/bash", "-c"]);
    assert_eq!(
        err(&node("shell", &[], &["/bin/bash -c"])),
        "SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        err(&json(node("shell", &[], &[]))),
        "SHELL requires at least one argument"
    );
    assert_eq!(err(&node("cmd", &["--x"], &["a"])), "unknown flag: --x");
}

#[test]
fn env_label_arg() {
    let Instruction::Env(e) = parse(&node("env", &[], &["PORT", "8000", "=", "A", "b c", ""]))
    else {
        panic!()
    };
    assert_eq!(e.vars.len(), 2);
    assert_eq!(e.vars[0].key, "PORT");
    assert_eq!(e.vars[0].value, "8000");
    assert!(!e.vars[0].no_delim);
    assert!(e.vars[1].no_delim);
    assert_eq!(
        err(&node("env", &[], &[])),
        "ENV requires at least one argument"
    );
    assert_eq!(
        err(&node("env", &[], &["a", "b"])),
        "Bad input to ENV, too many arguments"
    );
    assert_eq!(
        err(&node("label", &[], &["", "v", "="])),
        "LABEL names can not be blank"
    );
    let Instruction::Label(l) = parse(&node("label", &[], &["a.b", "c", "="])) else {
        panic!()
    };
    assert_eq!(l.labels[0].key, "a.b");

    let Instruction::Arg(a) = parse(&node("arg", &[], &["A", "B=2", "C="])) else {
        panic!()
    };
    assert_eq!(
        a.args,
        vec![
            ArgDecl {
                key: "A".into(),
                default: None
            },
            ArgDecl {
                key: "B".into(),
                default: Some("2".into())
            },
            ArgDecl {
                key: "C".into(),
                default: Some("".into())
            },
        ]
    );
    assert_eq!(
        err(&node("arg", &[], &["=x"])),
        "ARG names can not be blank"
    );
    assert_eq!(
        err(&node("arg", &[], &[])),
        "ARG requires at least one argument"
    );
}

#[test]
fn single_argument_instructions() {
    for kw in ["USER", "WORKDIR", "MAINTAINER", "STOPSIGNAL"] {
        assert_eq!(
            err(&node(kw, &[], &[])),
            format!("{kw} requires exactly one argument")
        );
        assert_eq!(
            err(&node(kw, &[], &["a", "b"])),
            format!("{kw} requires exactly one argument")
        );
    }
    let Instruction::User(u) = parse(&node("user", &[], &["nodejs"])) else {
        panic!()
    };
    assert_eq!(u.user, "nodejs");
    let Instruction::Workdir(w) = parse(&node("workdir", &[], &["/home/app"])) else {
        panic!()
    };
    assert_eq!(w.path, "/home/app");
    let Instruction::StopSignal(s) = parse(&node("stopsignal", &[], &["SIGTERM"])) else {
        panic!()
    };
    assert_eq!(s.signal, "SIGTERM");
    let Instruction::Maintainer(m) = parse(&node("maintainer", &[], &["me"])) else {
        panic!()
    };
    assert_eq!(m.name, "me");
    assert_eq!(
        err(&node("workdir", &["--x"], &["/a"])),
        "unknown flag: --x"
    );
    assert_eq!(
        err(&node("maintainer", &["--boo"], &["joe"])),
        "unknown flag: --boo"
    );
}

#[test]
fn expose_volume() {
    let Instruction::Expose(e) = parse(&node("expose", &[], &["8080/tcp", "443", "8000"])) else {
        panic!()
    };
    assert_eq!(e.ports, vec!["443", "8000", "8080/tcp"]);
    assert_eq!(
        err(&node("expose", &[], &[])),
        "EXPOSE requires at least one argument"
    );
    let Instruction::Volume(v) = parse(&node("volume", &[], &["/data", " /logs "])) else {
        panic!()
    };
    assert_eq!(v.paths, vec!["/data", "/logs"]);
    assert_eq!(
        err(&node("volume", &[], &["  "])),
        "VOLUME specified can not be an empty string"
    );
    assert_eq!(
        err(&node("volume", &[], &[])),
        "VOLUME requires at least one argument"
    );
}

#[test]
fn healthcheck() {
    let Instruction::Healthcheck(h) = parse(&node(
        "healthcheck",
        &[
            "--interval=30s",
            "--timeout=3s",
            "--start-period=1m",
            "--start-interval=500ms",
            "--retries=3",
        ],
        &["CMD", "curl -f http://localhost/"],
    )) else {
        panic!()
    };
    let c = h.check.unwrap();
    assert_eq!(c.test, vec!["CMD-SHELL", "curl -f http://localhost/"]);
    assert_eq!(c.interval_ns, 30_000_000_000);
    assert_eq!(c.timeout_ns, 3_000_000_000);
    assert_eq!(c.start_period_ns, 60_000_000_000);
    assert_eq!(c.start_interval_ns, 500_000_000);
    assert_eq!(c.retries, 3);

    let Instruction::Healthcheck(h) =
        parse(&json(node("healthcheck", &[], &["cmd", "curl", "-f"])))
    else {
        panic!()
    };
    assert_eq!(h.check.unwrap().test, vec!["CMD", "curl", "-f"]);
    let Instruction::Healthcheck(h) = parse(&node("healthcheck", &[], &["NONE"])) else {
        panic!()
    };
    assert_eq!(h.check, None);
    let Instruction::Healthcheck(h) =
        parse(&node("healthcheck", &["--interval=0s"], &["CMD", "x"]))
    else {
        panic!()
    };
    assert_eq!(h.check.unwrap().interval_ns, 0);
}

#[test]
fn healthcheck_errors() {
    assert_eq!(
        err(&node("healthcheck", &[], &[])),
        "HEALTHCHECK requires at least one argument"
    );
    assert_eq!(
        err(&node("healthcheck", &[], &["NONE", "x"])),
        "HEALTHCHECK NONE takes no arguments"
    );
    assert_eq!(
        err(&node("healthcheck", &[], &["CMD"])),
        "Missing command after HEALTHCHECK CMD"
    );
    assert_eq!(
        err(&node("healthcheck", &[], &["RUN", "x"])),
        "Unknown type \"RUN\" in HEALTHCHECK (try CMD)"
    );
    assert_eq!(
        err(&node("healthcheck", &["--interval=50ns"], &["CMD", "x"])),
        "Interval \"interval\" cannot be less than 1ms"
    );
    assert_eq!(
        err(&node("healthcheck", &["--timeout=-1s"], &["CMD", "x"])),
        "Interval \"timeout\" cannot be less than 1ms"
    );
    assert_eq!(
        err(&node("healthcheck", &["--interval=5"], &["CMD", "x"])),
        "time: missing unit in duration \"5\""
    );
    assert_eq!(
        err(&node(
            "healthcheck",
            &["--start-period=soon"],
            &["CMD", "x"]
        )),
        "time: invalid duration \"soon\""
    );
    assert_eq!(
        err(&node("healthcheck", &["--retries=-1"], &["CMD", "x"])),
        "--retries cannot be negative (-1)"
    );
    assert_eq!(
        err(&node("healthcheck", &["--retries=many"], &["CMD", "x"])),
        "strconv.ParseInt: parsing \"many\": invalid syntax"
    );
    assert_eq!(
        err(&node("healthcheck", &["--interval"], &["CMD", "x"])),
        "missing a value on flag: --interval"
    );
    assert_eq!(
        err(&node("healthcheck", &["--every=1s"], &["CMD", "x"])),
        "unknown flag: --every"
    );
}

fn onbuild(sub: Node) -> Node {
    let mut n = node("onbuild", &[], &[]);
    n.original = format!("ONBUILD {}", sub.original);
    n.sub = Some(Box::new(sub));
    n
}

#[test]
fn onbuild_triggers() {
    let Instruction::Onbuild(o) = parse(&onbuild(node("run", &[], &["make"]))) else {
        panic!()
    };
    assert_eq!(o.expression, "RUN make");
    assert!(matches!(*o.trigger, Instruction::Run(_)));
    assert_eq!(
        err(&onbuild(onbuild(node("run", &[], &["x"])))),
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        err(&onbuild(node("from", &[], &["scratch"]))),
        "FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        err(&onbuild(node("maintainer", &[], &["me"]))),
        "MAINTAINER isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        err(&node("onbuild", &[], &[])),
        "ONBUILD requires at least one argument"
    );
    assert_eq!(
        err(&onbuild(node("copy", &["--bad"], &["a", "b"]))),
        "unknown flag: --bad"
    );
}

#[test]
fn copy_flags() {
    let Instruction::Copy(c) = parse(&node(
        "copy",
        &[
            "--from=builder",
            "--chown=1001:1001",
            "--chmod=0755",
            "--link",
            "--parents=true",
            "--exclude=*.md",
            "--exclude=tests/",
        ],
        &["/home/build/dist", "/a", "dist/"],
    )) else {
        panic!()
    };
    assert_eq!(c.sources, vec!["/home/build/dist", "/a"]);
    assert_eq!(c.dest, "dist/");
    assert_eq!(c.from.as_deref(), Some("builder"));
    assert_eq!(c.chown.as_deref(), Some("1001:1001"));
    assert_eq!(c.chmod.as_deref(), Some("0755"));
    assert!(c.link);
    assert!(c.parents);
    assert_eq!(c.excludes, vec!["*.md", "tests/"]);

    let Instruction::Copy(c) = parse(&node("copy", &["--link=false"], &["a", "b"])) else {
        panic!()
    };
    assert!(!c.link);
    assert_eq!(c.from, None);
}

#[test]
fn copy_errors() {
    assert_eq!(
        err(&node("copy", &[], &["onlyone"])),
        "COPY requires at least two arguments, but only one was provided. Destination could not be determined"
    );
    assert_eq!(
        err(&node("copy", &["--checksum=sha256:x"], &["a", "b"])),
        "unknown flag: --checksum"
    );
    assert_eq!(
        err(&node("copy", &["--from"], &["a", "b"])),
        "missing a value on flag: --from"
    );
    assert_eq!(
        err(&node("copy", &["--link=maybe"], &["a", "b"])),
        "expecting boolean value for flag --link, not: maybe"
    );
    assert_eq!(
        err(&node("copy", &["--chmod=999"], &["a", "b"])),
        "invalid chmod parameter: '999'. it should be octal string and between 0 and 07777"
    );
    assert!(err(&node("copy", &["--chmod=u+q"], &["a", "b"]))
        .starts_with("invalid chmod parameter: 'u+q'"));
    assert_eq!(
        err(&node("copy", &["--from=$STAGE"], &["a", "b"])),
        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
    );
    assert_eq!(
        err(&node("copy", &[], &["https://example.com/x", "b"])),
        "source can't be a URL for COPY"
    );
    assert_eq!(
        err(&node("copy", &[], &["a", "<<EOF"])),
        "COPY cannot accept a heredoc as a destination"
    );
    // A variable in --chmod is checked once its value is known.
    let Instruction::Copy(c) = parse(&node("copy", &["--chmod=$MODE"], &["a", "b"])) else {
        panic!()
    };
    assert_eq!(c.chmod.as_deref(), Some("$MODE"));
}

#[test]
fn copy_heredoc_sources() {
    let mut n = node("copy", &[], &["<<-EOF", "plain", "/dst"]);
    n.heredocs = vec![Heredoc {
        name: "EOF".into(),
        file_descriptor: 0,
        expand: false,
        chomp: true,
        content: "\thello\n\t\tworld\n".into(),
    }];
    let Instruction::Copy(c) = parse(&n) else {
        panic!()
    };
    assert_eq!(c.sources, vec!["plain"]);
    assert_eq!(
        c.inline,
        vec![InlineFile {
            name: "EOF".into(),
            content: "hello\nworld\n".into(),
            expand: false,
        }]
    );
}

#[test]
fn add_flags() {
    let Instruction::Add(a) = parse(&node(
        "add",
        &[
            "--checksum=sha256:abc",
            "--keep-git-dir=true",
            "--chown=app",
            "--chmod=u+x",
            "--link",
            "--exclude=x",
            "--unpack=false",
        ],
        &["https://example.com/a.tar.gz", "/opt/"],
    )) else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!(a.keep_git_dir, Some(true));
    assert_eq!(a.unpack, Some(false));
    assert_eq!(a.chmod.as_deref(), Some("u+x"));
    assert!(a.link);
    assert_eq!(a.excludes, vec!["x"]);
    let Instruction::Add(a) = parse(&node("add", &[], &["a.tar", "/"])) else {
        panic!()
    };
    assert_eq!(a.unpack, None);
    assert_eq!(a.keep_git_dir, None);
    assert_eq!(
        err(&node("add", &["--from=x"], &["a", "b"])),
        "unknown flag: --from"
    );
    assert_eq!(
        err(&node("add", &["--parents"], &["a", "b"])),
        "unknown flag: --parents"
    );
    assert_eq!(
        err(&node("add", &["--checksum=sha256:x"], &["a", "b", "/c"])),
        "checksum can't be specified for multiple sources"
    );
    assert_eq!(
        err(&node("add", &[], &["a"])),
        "ADD requires at least two arguments, but only one was provided. Destination could not be determined"
    );
}

#[test]
fn unknown_instruction_keeps_case_and_line() {
    let mut n = node("coppy", &[], &["a", "b"]);
    n.original = "COPPY a b".into();
    n.start_line = 12;
    n.end_line = 12;
    let e = parse_node(&n, '\\').unwrap_err();
    assert_eq!(e.message, "unknown instruction: COPPY");
    assert_eq!(e.help.as_deref(), Some("did you mean COPY?"));

    let text = "FROM a\n".repeat(11) + "COPPY a b\n";
    let src = Source::new("Dockerfile", text);
    let de = Instruction::parse(&n, '\\', &src).unwrap_err();
    assert_eq!(de.to_string(), "Dockerfile:12: unknown instruction: COPPY");
}

#[test]
fn whole_dockerfile() {
    let df = Dockerfile {
        directives: vec![],
        escape: '\\',
        nodes: vec![node("from", &[], &["alpine"]), node("run", &[], &["true"])],
        warnings: vec![],
    };
    let src = Source::new("Dockerfile", "FROM alpine\nRUN true\n");
    let ins = parse_instructions(&df, &src).unwrap();
    assert_eq!(ins.len(), 2);
    assert_eq!(ins[1].keyword(), "RUN");
    assert_eq!(ins[1].origin().code, "RUN true");
}

/// Replaces `$NAME` from a fixed table (a stand-in for the stage environment).
struct Table(Vec<(&'static str, &'static str)>);

impl Table {
    fn sub(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (k, v) in &self.0 {
            out = out.replace(&format!("${k}"), v);
        }
        out
    }
}

impl Expand for Table {
    fn word(&mut self, word: &str) -> Result<String, String> {
        if word.contains("$BAD") {
            return Err("bad substitution".into());
        }
        Ok(self.sub(word))
    }
    fn words(&mut self, word: &str) -> Result<Vec<String>, String> {
        Ok(self
            .sub(word)
            .split_whitespace()
            .map(str::to_string)
            .collect())
    }
    fn raw(&mut self, text: &str) -> Result<String, String> {
        Ok(format!("raw:{}", self.sub(text)))
    }
}

#[test]
fn expansion_per_instruction() {
    let mut t = Table(vec![
        ("DIR", "/srv"),
        ("U", "app"),
        ("P", "80 443"),
        ("M", "0640"),
        ("WRONGMODE", "99"),
    ]);
    let ex = |n: &Node, t: &mut Table| parse(n).expanded(t);

    let Instruction::Workdir(w) = ex(&node("workdir", &[], &["$DIR/x"]), &mut t).unwrap() else {
        panic!()
    };
    assert_eq!(w.path, "/srv/x");
    let Instruction::User(u) = ex(&node("user", &[], &["$U"]), &mut t).unwrap() else {
        panic!()
    };
    assert_eq!(u.user, "app");
    let Instruction::Env(e) = ex(&node("env", &[], &["HOME", "$DIR", "="]), &mut t).unwrap() else {
        panic!()
    };
    assert_eq!(e.vars[0].value, "/srv");
    let Instruction::Expose(e) = ex(&node("expose", &[], &["$P"]), &mut t).unwrap() else {
        panic!()
    };
    assert_eq!(e.ports, vec!["80", "443"]);

    let mut n = node(
        "copy",
        &["--chown=$U", "--chmod=$M", "--from=builder"],
        &["<<EOF", "$DIR/a", "$DIR/"],
    );
    n.heredocs = vec![Heredoc {
        name: "EOF".into(),
        file_descriptor: 0,
        expand: true,
        chomp: false,
        content: "at $DIR\n".into(),
    }];
    let Instruction::Copy(c) = ex(&n, &mut t).unwrap() else {
        panic!()
    };
    assert_eq!(c.sources, vec!["/srv/a"]);
    assert_eq!(c.dest, "/srv/");
    assert_eq!(c.chown.as_deref(), Some("app"));
    assert_eq!(c.chmod.as_deref(), Some("0640"));
    assert_eq!(c.from.as_deref(), Some("builder"));
    assert_eq!(c.inline[0].content, "raw:at /srv\n");

    // RUN commands are left to the shell; ARG is resolved by the plan.
    let run = parse(&node("run", &[], &["echo $DIR"]));
    assert_eq!(run.expanded(&mut t).unwrap(), run);
    let arg = parse(&node("arg", &[], &["X=$DIR"]));
    assert_eq!(arg.expanded(&mut t).unwrap(), arg);

    // Errors: from the expansion, and a --chmod whose value is bad.
    assert_eq!(
        ex(&node("workdir", &[], &["$BAD"]), &mut t)
            .unwrap_err()
            .message,
        "bad substitution"
    );
    assert_eq!(
        ex(&node("add", &["--chmod=$WRONGMODE"], &["a", "b"]), &mut t)
            .unwrap_err()
            .message,
        "invalid chmod parameter: '99'. it should be octal string and between 0 and 07777"
    );
}

#[test]
fn shell_expansion_with_stage_env() {
    let env: std::collections::BTreeMap<String, String> =
        [("APP", "/srv/app"), ("PORTS", "80 443"), ("ID", "npm")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let mut ex = ShellExpand::new('\\', &env);

    let Instruction::Workdir(w) = parse(&node("workdir", &[], &["${APP}/bin"]))
        .expanded(&mut ex)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(w.path, "/srv/app/bin");
    let Instruction::Expose(e) = parse(&node("expose", &[], &["$PORTS"]))
        .expanded(&mut ex)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(e.ports, vec!["80", "443"]);

    let mut n = node("copy", &[], &["<<EOF", "\"$APP/x\"", "/dst"]);
    n.heredocs = vec![Heredoc {
        name: "EOF".into(),
        file_descriptor: 0,
        expand: true,
        chomp: false,
        content: "dir=\"$APP\"\n".into(),
    }];
    let Instruction::Copy(c) = parse(&n).expanded(&mut ex).unwrap() else {
        panic!()
    };
    assert_eq!(
        c.sources,
        vec!["/srv/app/x"],
        "quotes are removed from words"
    );
    assert_eq!(
        c.inline[0].content, "dir=\"/srv/app\"\n",
        "heredoc keeps its quotes"
    );

    let Instruction::Run(r) = parse(&node(
        "run",
        &["--mount=type=cache,id=$ID,target=/c"],
        &["x"],
    )) else {
        panic!()
    };
    let m = r.mounts[0].resolve(&mut |w: &str| ex.word(w)).unwrap();
    assert_eq!(m.id.as_deref(), Some("npm"));
}

#[test]
fn origin_summary_and_lines() {
    let o = Origin {
        start_line: 3,
        end_line: 5,
        code: "RUN --mount=type=cache,target=/c \t   make\nmore".into(),
    };
    assert_eq!(o.summary(), "RUN --mount=type=cache,target=/c make");
    assert_eq!(o.lines(), "3-5");
    let one = Origin {
        start_line: 7,
        end_line: 7,
        code: "COPY . .".into(),
    };
    assert_eq!(one.lines(), "7");
}
