//! Tests that run kiln as an unprivileged user: `kiln-rootless`, made with a
//! subordinate id range by `scripts/setup-test-env`. The test itself runs as root
//! (CI does) and switches to the user with `runuser`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The user rootless tests run kiln as.
pub const USER: &str = "kiln-rootless";

/// Fails the test unless it runs as root and [`USER`] exists.
pub fn require_root_and_user() {
    crate::root::require_root("this test");
    let known = Command::new("id")
        .arg("-u")
        .arg(USER)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        known,
        "user {USER} does not exist: run scripts/setup-test-env as root first"
    );
}

/// [`USER`]'s uid and gid.
pub fn user_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").arg(flag).arg(USER).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("id {flag} {USER}: {out:?}"))
    };
    (id("-u"), id("-g"))
}

/// `chown -R kiln-rootless: PATH`.
pub fn chown_tree(path: &Path) {
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{USER}:"))
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "chown -R {USER} {}", path.display());
}

/// `binary` at a path [`USER`] can execute: `binary` itself when every
/// directory above it is searchable by others, else a copy in `scratch`.
pub fn executable_for_user(binary: &Path, scratch: &Path) -> PathBuf {
    let usable = Command::new("runuser")
        .args(["-u", USER, "--", "test", "-x"])
        .arg(binary)
        .status()
        .is_ok_and(|s| s.success());
    if usable {
        return binary.to_path_buf();
    }
    let name = binary.file_name().unwrap_or("kiln".as_ref());
    let copy = scratch.join(name);
    fs::copy(binary, &copy).unwrap_or_else(|e| panic!("copy {} for {USER}: {e}", binary.display()));
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// A directory in the temp dir that [`USER`] can reach (0755); removed, with
/// whatever the user made unwritable in it, when dropped.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    /// `$TMPDIR/kiln-rootless-test-TAG-PID`, emptied first.
    pub fn new(tag: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("kiln-rootless-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        Scratch { dir }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("chmod")
            .args(["-R", "u+rwx"])
            .arg(&self.dir)
            .status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `runuser -u kiln-rootless -- [PREFIX…] env -i HOME=HOME XDG_DATA_HOME=HOME/data
/// PATH=… [ENV…] PROGRAM`, run in `/`: a clean, fixed environment, so the user's
/// default kiln store is `HOME/data/kiln`. `prefix` goes before `env` (e.g.
/// `["timeout", "120"]`); add the program's arguments to the returned command.
pub fn as_user(program: &Path, home: &Path, prefix: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", USER, "--"])
        .args(prefix)
        .args(["env", "-i"])
        .arg(format!("HOME={}", home.display()))
        .arg(format!("XDG_DATA_HOME={}", home.join("data").display()))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .args(env.iter().map(|(k, v)| format!("{k}={v}")))
        .arg(program)
        .current_dir("/");
    cmd
}
