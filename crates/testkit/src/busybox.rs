//! The busybox root filesystem tests build images and sandboxes from: Debian's
//! static busybox (package `busybox-static`, installed by `scripts/setup-test-env`)
//! with a symlink per applet, and the users tests run steps as.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// Debian's static busybox.
pub const BUSYBOX: &str = "/bin/busybox";

/// The users of [`rootfs`]: root, `app` (1000, home `/home/app`), `user` (1001, home
/// `/home/user`) and nobody.
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:app:/home/app:/bin/sh\n\
user:x:1001:1001:user:/home/user:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

/// The groups of [`rootfs`], one per user of [`PASSWD`].
pub const GROUP: &str = "root:x:0:\napp:x:1000:\nuser:x:1001:\nnobody:x:65534:\n";

/// Writes the busybox root filesystem into `dir`: `/bin/busybox` and its applets
/// as symlinks to it in `/bin`, `/etc/passwd` ([`PASSWD`]) and `/etc/group`
/// ([`GROUP`]), `/tmp` (1777), and empty `/proc`, `/dev`, `/sys`, `/root`.
/// Homes are not made: a test that needs one makes it with the owner it wants.
pub fn rootfs(dir: &Path) -> io::Result<()> {
    rootfs_with_users(dir, PASSWD, GROUP)
}

/// [`rootfs`] with other `/etc/passwd` and `/etc/group` contents.
pub fn rootfs_with_users(dir: &Path, passwd: &str, group: &str) -> io::Result<()> {
    for d in ["bin", "etc", "proc", "dev", "sys", "root", "tmp"] {
        fs::create_dir_all(dir.join(d))?;
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::copy(BUSYBOX, dir.join("bin/busybox")).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("copying {BUSYBOX} (Debian's busybox-static; scripts/setup-test-env installs it): {e}"),
        )
    })?;
    fs::set_permissions(dir.join("bin/busybox"), fs::Permissions::from_mode(0o755))?;
    for applet in applets()? {
        let link = dir.join("bin").join(&applet);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    fs::write(dir.join("etc/passwd"), passwd)?;
    fs::write(dir.join("etc/group"), group)?;
    Ok(())
}

/// The applet names `busybox --list` prints (without `busybox` itself).
pub fn applets() -> io::Result<Vec<String>> {
    let out = Command::new(BUSYBOX).arg("--list").output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(String::from)
        .collect())
}
