//! `kiln completion bash|zsh|fish` and `kiln man`: every long flag `kiln build
//! --help` lists is in each completion script and in kiln-build(1), since all
//! come from the one flag definition.

use crate::util::kiln;

/// The long flags `kiln build --help` lists (`--ssh`, `--add-host`, …).
fn build_flags() -> Vec<String> {
    let help = kiln().args(["build", "--help"]).stdout();
    // Flag lines are indented by 2 ("  -t, --tag") or 6 ("      --ssh"); wrapped
    // help text further.
    let re = regex::Regex::new(r"(?m)^(?:  -\w, |      )(--[a-z][a-z-]*)").unwrap();
    let mut flags: Vec<String> = re.captures_iter(&help).map(|c| c[1].to_string()).collect();
    flags.sort();
    flags.dedup();
    for f in [
        "--ssh",
        "--annotation",
        "--add-host",
        "--shm-size",
        "--ulimit",
        "--call",
        "--tag",
    ] {
        assert!(
            flags.iter().any(|x| x == f),
            "{f} not in kiln build --help: {help}"
        );
    }
    flags
}

#[test]
fn completion_scripts_know_every_build_flag() {
    let flags = build_flags();
    for shell in ["bash", "zsh", "fish"] {
        let script = kiln().args(["completion", shell]).stdout();
        for f in &flags {
            // fish names long flags without their dashes (`-l ssh`).
            let found = if shell == "fish" {
                script.contains(&format!("-l {}", &f[2..]))
            } else {
                script.contains(f.as_str())
            };
            assert!(found, "{shell} completion lacks {f}");
        }
    }
    let e = kiln().args(["completion", "tcsh"]).fails();
    assert!(e.contains("invalid value 'tcsh'"), "{e}");
}

#[test]
fn man_pages_describe_the_commands_and_their_flags() {
    let page = kiln().args(["man", "build"]).stdout();
    assert!(page.contains(".TH kiln-build 1"), "{page}");
    for f in build_flags() {
        let roff = f.replace('-', "\\-");
        assert!(page.contains(&roff), "kiln-build(1) lacks {f}");
    }
    assert!(
        page.contains("Expose an SSH agent to RUN"),
        "the help text is there"
    );
    let top = kiln().arg("man").stdout();
    assert!(top.contains(".TH kiln 1"), "{top}");
    assert!(top.contains("Build an image from a Dockerfile"), "{top}");
    let compose_build = kiln().args(["man", "compose", "build"]).stdout();
    assert!(
        compose_build.contains(".TH kiln-compose-build 1"),
        "{compose_build}"
    );
    let e = kiln().args(["man", "nope"]).fails();
    assert!(e.contains("kiln man: kiln has no command \"nope\""), "{e}");
}
