//! The one way tests run the `kiln` binary.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A `kiln` command being put together, like [`std::process::Command`] (methods take
/// `&mut self`, so `kiln().root(r).args(["images"]).ok()` and step-by-step building
/// both work). Standard input is empty unless [`Kiln::stdin`] gives it.
///
/// The binary's path comes from the test crate (`env!("CARGO_BIN_EXE_kiln")` is
/// only known there): `crates/kiln/tests/util.rs` has the one `kiln()`.
pub struct Kiln {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

impl Kiln {
    pub fn new(binary: impl AsRef<OsStr>) -> Kiln {
        let mut cmd = Command::new(binary);
        cmd.stdin(Stdio::null());
        Kiln { cmd, stdin: None }
    }

    /// `--root ROOT`: the store this command uses.
    pub fn root(&mut self, root: impl AsRef<Path>) -> &mut Kiln {
        self.cmd.arg("--root").arg(root.as_ref());
        self
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Kiln {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Kiln
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Kiln {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Kiln {
        self.cmd.env_remove(key);
        self
    }

    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Kiln {
        self.cmd.current_dir(dir);
        self
    }

    /// What kiln reads on standard input.
    pub fn stdin(&mut self, data: impl Into<Vec<u8>>) -> &mut Kiln {
        self.stdin = Some(data.into());
        self
    }

    /// The underlying command, e.g. to `spawn` it with pipes.
    pub fn command(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Runs kiln to the end and returns what it printed; panics only when it cannot start.
    pub fn output(&mut self) -> Output {
        let Some(input) = self.stdin.clone() else {
            return self
                .cmd
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.describe()));
        };
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.describe()));
        let mut pipe = child.stdin.take().expect("piped stdin");
        // Written from another thread: kiln may fill its output pipes first.
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
        let out = child.wait_with_output().expect("wait for kiln");
        let _ = writer.join();
        out
    }

    /// Runs kiln; it must succeed (else the test fails with its output).
    pub fn ok(&mut self) -> Output {
        let out = self.output();
        assert!(
            out.status.success(),
            "{} failed ({}):\n{}",
            self.describe(),
            out.status,
            printed(&out)
        );
        out
    }

    /// Runs kiln; it must succeed. Returns its standard output.
    pub fn stdout(&mut self) -> String {
        String::from_utf8_lossy(&self.ok().stdout).into_owned()
    }

    /// Runs kiln; it must fail with a message, not a panic. Returns its standard error.
    pub fn fails(&mut self) -> String {
        let out = self.output();
        assert!(
            !out.status.success(),
            "{} should fail but succeeded:\n{}",
            self.describe(),
            printed(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !err.contains("panicked"),
            "{} panicked:\n{err}",
            self.describe()
        );
        err
    }

    /// `kiln ARGS…` for messages.
    fn describe(&self) -> String {
        let args: Vec<String> = self
            .cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        format!("kiln {args:?}")
    }
}

/// A command's standard output and error, for a failure message.
pub fn printed(out: &Output) -> String {
    format!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
