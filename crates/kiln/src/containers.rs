//! From a stored image and what the user asked (`kiln run` flags, a Compose
//! service) to a container kiln_runtime runs: the image's layers as overlay
//! lowerdirs, docker's ENTRYPOINT/CMD rules, the image's USER/WORKDIR/ENV
//! (`HOME` from its passwd), mounts (bind mounts, named volumes under the
//! store, tmpfs), the network and the healthcheck.

use kiln_builder::{Layer, LayeredView, Snapshots};
use kiln_oci::{Image, Store};
use kiln_runtime::state::new_id;
use kiln_runtime::{ContainerConfig, Healthcheck, NetworkChoice, PortMapping};
use kiln_sandbox::{MountSpec, NetworkMode, Rootfs, RunSpec, UserSpec};
use miette::{miette, Result};
use std::path::{Path, PathBuf};

/// What a container runs, before it is made.
#[derive(Default)]
pub struct ContainerOptions {
    pub name: Option<String>,
    /// `KEY=value` entries set over the image's ENV, in order.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Replaces the image's ENTRYPOINT (and drops its CMD); empty clears it.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's CMD.
    pub command: Option<Vec<String>>,
    pub network: Option<NetworkChoice>,
    pub ports: Vec<PortMapping>,
    pub mounts: Vec<MountSpec>,
    pub hostname: Option<String>,
    /// None: the image's; Some(None): disabled.
    pub healthcheck: Option<Option<Healthcheck>>,
    pub project: Option<String>,
    pub service: Option<String>,
    pub auto_remove: bool,
    pub shm_size: Option<u64>,
    /// Over the image's STOPSIGNAL.
    pub stop_signal: Option<i32>,
    pub stop_grace_ms: Option<u64>,
}

/// docker's rules for what runs: an entrypoint given replaces the image's
/// ENTRYPOINT and CMD; a command given replaces CMD.
pub fn command_line(
    image_entrypoint: Option<&[String]>,
    image_cmd: Option<&[String]>,
    entrypoint: Option<&[String]>,
    command: Option<&[String]>,
) -> Vec<String> {
    let mut args: Vec<String> = match entrypoint {
        Some(e) => e.iter().filter(|s| !s.is_empty()).cloned().collect(),
        None => image_entrypoint.map(<[String]>::to_vec).unwrap_or_default(),
    };
    match command {
        Some(c) if !c.is_empty() => args.extend(c.iter().cloned()),
        _ if entrypoint.is_none() => args.extend(image_cmd.unwrap_or_default().iter().cloned()),
        _ => {}
    }
    args
}

/// Adds `KEY=value`, replacing an earlier value of KEY.
pub fn set_env(env: &mut Vec<String>, entry: String) {
    let key = entry.split('=').next().unwrap_or_default();
    let prefix = format!("{key}=");
    match env.iter_mut().find(|e| e.starts_with(&prefix) || *e == key) {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

/// The image's layers with their diff_ids, base first.
fn layers_of(image: &Image) -> Result<Vec<Layer>> {
    let diff_ids = &image.config.rootfs.diff_ids;
    if diff_ids.len() != image.layers.len() {
        return Err(miette!(
            "the image's config lists {} layers but its manifest {}",
            diff_ids.len(),
            image.layers.len()
        ));
    }
    Ok(image
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(blob, diff_id)| Layer {
            blob: blob.clone(),
            diff_id: *diff_id,
        })
        .collect())
}

/// docker creates a missing working directory; kiln creates it in the
/// container's upperdir (so it disappears with the container). The parents
/// that exist in the image show through (overlay merges directories). A path
/// through a symlink is left to the sandbox to resolve, inside the rootfs.
pub fn create_workdir(lowerdirs: &[PathBuf], upperdir: &Path, cwd: &str) -> Result<()> {
    let view = LayeredView::new(lowerdirs.to_vec());
    let mut path = String::new();
    for comp in cwd.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if comp == ".." {
            return Ok(());
        }
        path.push('/');
        path.push_str(comp);
        match view.lookup(&path, false) {
            Ok(Some(e)) if e.is_dir() => continue,
            // A file or a symlink: a path through it is not ours to create.
            Ok(Some(_)) | Err(_) => return Ok(()),
            Ok(None) => {
                let dir = upperdir.join(cwd.trim_start_matches('/'));
                return std::fs::create_dir_all(&dir)
                    .map_err(|e| miette!("creating the working directory {cwd}: {e}"));
            }
        }
    }
    Ok(())
}

/// The home directory of `user` from the image's `/etc/passwd` ("/" when unknown),
/// read through the merged view of its layers (symlinks resolved inside the image).
pub fn home_of(lowerdirs: &[PathBuf], user: &str) -> String {
    let name = user.split(':').next().unwrap_or_default();
    let name = if name.is_empty() { "0" } else { name };
    let view = LayeredView::new(lowerdirs.to_vec());
    let passwd = view
        .read_user_file("/etc/passwd")
        .ok()
        .flatten()
        .unwrap_or_default();
    if let Some(e) = kiln_sandbox::user::passwd_entries(&passwd)
        .find(|e| e.name == name || e.uid.to_string() == name)
    {
        return e.home.to_string();
    }
    if name == "0" || name == "root" {
        "/root".to_string()
    } else {
        "/".to_string()
    }
}

/// The image's `HEALTHCHECK`, if it has an enabled one.
fn image_healthcheck(image: &Image) -> Result<Option<Healthcheck>> {
    let Some(hc) = image
        .config
        .config
        .as_ref()
        .and_then(|c| c.healthcheck.as_ref())
    else {
        return Ok(None);
    };
    let Some(test) = Healthcheck::test_from(&hc.test).map_err(|e| miette!("the image's {e}"))?
    else {
        return Ok(None);
    };
    let mut h = Healthcheck::new(test);
    let ms = |ns: Option<i64>| ns.filter(|n| *n > 0).map(|n| (n / 1_000_000) as u64);
    if let Some(v) = ms(hc.interval) {
        h.interval_ms = v;
    }
    if let Some(v) = ms(hc.timeout) {
        h.timeout_ms = v;
    }
    if let Some(v) = ms(hc.start_period) {
        h.start_period_ms = v;
    }
    if let Some(v) = ms(hc.start_interval) {
        h.start_interval_ms = v;
    }
    if let Some(r) = hc.retries.filter(|r| *r > 0) {
        h.retries = r as u32;
    }
    Ok(Some(h))
}

/// A short random name, as docker gives one (`kiln-3f2a9c1b`).
fn generated_name(id: &str) -> String {
    format!("kiln-{}", &id[..8])
}

/// Makes the container's configuration (its directory is made by
/// `Containers::create`). `image_ref` is the name the user gave.
pub fn container_config(
    store: &Store,
    containers: &kiln_runtime::Containers,
    image_ref: &str,
    image: &Image,
    opts: ContainerOptions,
) -> Result<ContainerConfig> {
    let container = image.config.config.clone().unwrap_or_default();
    let args = command_line(
        container.entrypoint.as_deref(),
        container.cmd.as_deref(),
        opts.entrypoint.as_deref(),
        opts.command.as_deref(),
    );
    if args.is_empty() || args[0].is_empty() {
        return Err(miette!(
            "no command to run: the image {image_ref} has no ENTRYPOINT or CMD; give one after the image name"
        ));
    }
    let mut env = container.env.clone();
    for e in opts.env {
        set_env(&mut env, e);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={}", kiln_sandbox::spec::DEFAULT_PATH));
    }
    let user = opts.user.or(container.user.clone()).unwrap_or_default();
    let cwd = opts
        .workdir
        .or(container.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(miette!(
            "the working directory must be an absolute path, not {cwd:?}"
        ));
    }
    // An image `kiln build --push` stored without the layers only a registry
    // build cache had: they are fetched from there now.
    let fetcher = kiln_oci::registry::RegistryContext::load(None)
        .ok()
        .map(|registry| {
            std::sync::Arc::new(kiln_builder::SourcesFetcher { registry })
                as std::sync::Arc<dyn kiln_builder::BlobFetcher>
        });
    let snapshots = Snapshots::open(store.root())
        .map_err(|e| miette!("{e}"))?
        .with_fetcher(fetcher);
    let lowerdirs = snapshots
        .stack(store, &layers_of(image)?)
        .map_err(|e| miette!("preparing the image's layers: {e}"))?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", home_of(&lowerdirs, &user)));
    }
    let id = new_id();
    let dir = containers.dir(&id);
    let mut spec = RunSpec::new(
        Rootfs::Overlay {
            lowerdirs,
            upperdir: dir.join("upper"),
            workdir: dir.join("work"),
        },
        args,
    );
    spec.env = env;
    spec.cwd = cwd;
    spec.user = UserSpec::new(user);
    spec.tail_lines = 0;
    spec.mounts = opts.mounts;
    spec.shm_size = opts.shm_size;
    let network = opts.network.unwrap_or(NetworkChoice::Host);
    match &network {
        NetworkChoice::Host => {
            // docker --network host: the host's name and /etc/hosts.
            spec.network = NetworkMode::Host;
            spec.hostname = rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned();
            spec.hosts = std::fs::read("/etc/hosts").ok();
        }
        NetworkChoice::None | NetworkChoice::Bridge { .. } => {
            spec.network = NetworkMode::None;
            spec.hostname = opts.hostname.unwrap_or_else(|| id[..12].to_string());
            spec.hosts = Some(kiln_sandbox::default_hosts(&spec.hostname));
        }
    }
    let healthcheck = match opts.healthcheck {
        Some(h) => h,
        None => image_healthcheck(image)?,
    };
    let stop_signal = match (opts.stop_signal, &container.stop_signal) {
        (Some(s), _) => Some(s),
        (None, Some(name)) if !name.is_empty() => {
            Some(kiln_runtime::state::parse_signal(name).ok_or_else(|| {
                miette!("the image {image_ref} has an invalid STOPSIGNAL {name:?}")
            })?)
        }
        (None, _) => None,
    };
    Ok(ContainerConfig {
        name: opts.name.unwrap_or_else(|| generated_name(&id)),
        id,
        image: image_ref.to_string(),
        image_id: image.id().to_string(),
        created: kiln_runtime::state::now(),
        project: opts.project,
        service: opts.service,
        spec,
        network,
        ports: opts.ports,
        healthcheck,
        auto_remove: opts.auto_remove,
        stop_signal,
        stop_grace_ms: opts.stop_grace_ms,
    })
}

/// Named volumes: `<store>/volumes/<name>/_data`, made on first use.
pub fn volume_dir(store_root: &Path, name: &str) -> Result<PathBuf> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok {
        return Err(miette!(
            "invalid volume name {name:?}: use letters, digits, '_', '.', '-', starting with a letter or digit"
        ));
    }
    let dir = store_root.join("volumes").join(name).join("_data");
    std::fs::create_dir_all(&dir).map_err(|e| miette!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// `-v SRC:DEST[:ro|rw]`: SRC an absolute (or ./relative) host path, or a
/// volume name. Relative paths resolve from `base`.
pub fn parse_volume(spec: &str, store_root: &Path, base: &Path) -> Result<MountSpec> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dest, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, ""),
        [s, d, m] => (*s, *d, *m),
        _ => {
            return Err(miette!(
                "invalid volume {spec:?}: expected SOURCE:DESTINATION[:ro]"
            ))
        }
    };
    let readonly = match mode {
        "" | "rw" => false,
        "ro" => true,
        other => {
            return Err(miette!(
                "invalid volume {spec:?}: the mode is ro or rw, not {other:?}"
            ))
        }
    };
    bind_or_volume(src, dest, readonly, store_root, base)
        .map_err(|e| miette!("invalid volume {spec:?}: {e}"))
}

fn bind_or_volume(
    src: &str,
    dest: &str,
    readonly: bool,
    store_root: &Path,
    base: &Path,
) -> Result<MountSpec> {
    if !dest.starts_with('/') {
        return Err(miette!("the destination must be an absolute path"));
    }
    let source = if src.starts_with('/') || src.starts_with('.') || src.starts_with('~') {
        let p = if let Some(rest) = src.strip_prefix("~/") {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(rest)
        } else {
            base.join(src)
        };
        if !p.exists() {
            // docker creates a missing bind source as a directory.
            std::fs::create_dir_all(&p).map_err(|e| miette!("creating {}: {e}", p.display()))?;
        }
        p
    } else {
        volume_dir(store_root, src)?
    };
    Ok(host_bind(&source, dest, readonly))
}

/// A bind mount of a host path the user named (a bind source or a named
/// volume's directory), resolved on the host.
pub fn host_bind(source: &Path, target: &str, readonly: bool) -> MountSpec {
    MountSpec::Bind {
        root: PathBuf::from("/"),
        path: source.to_string_lossy().into_owned(),
        target: target.to_string(),
        readonly,
    }
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly]`.
pub fn parse_mount(spec: &str, store_root: &Path, base: &Path) -> Result<MountSpec> {
    let mut kind = "volume";
    let (mut src, mut dest, mut readonly, mut size) = (None, None, false, None);
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k {
            "type" => kind = v,
            "source" | "src" => src = Some(v),
            "target" | "destination" | "dst" => dest = Some(v),
            "readonly" | "ro" => readonly = v.is_empty() || v == "true" || v == "1",
            "tmpfs-size" => size = v.parse::<u64>().ok(),
            _ => return Err(miette!("invalid mount {spec:?}: unknown field {k:?}")),
        }
    }
    let dest = dest.ok_or_else(|| miette!("invalid mount {spec:?}: target= is missing"))?;
    match kind {
        "tmpfs" => Ok(MountSpec::Tmpfs {
            target: dest.to_string(),
            size_bytes: size,
        }),
        "bind" | "volume" => {
            let src = src.ok_or_else(|| miette!("invalid mount {spec:?}: source= is missing"))?;
            if kind == "bind" && !src.starts_with('/') && !src.starts_with('.') {
                return Err(miette!("invalid mount {spec:?}: a bind source is a path"));
            }
            bind_or_volume(src, dest, readonly, store_root, base)
                .map_err(|e| miette!("invalid mount {spec:?}: {e}"))
        }
        other => Err(miette!(
            "invalid mount {spec:?}: type is bind, volume or tmpfs, not {other:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn docker_entrypoint_and_cmd_rules() {
        let ep = v(&["/entry.sh"]);
        let cmd = v(&["node", "server.js"]);
        assert_eq!(
            command_line(Some(&ep), Some(&cmd), None, None),
            v(&["/entry.sh", "node", "server.js"])
        );
        // Arguments replace CMD, not ENTRYPOINT.
        assert_eq!(
            command_line(Some(&ep), Some(&cmd), None, Some(&v(&["sh"]))),
            v(&["/entry.sh", "sh"])
        );
        // An entrypoint drops the image's CMD too.
        assert_eq!(
            command_line(Some(&ep), Some(&cmd), Some(&v(&["/bin/sh"])), None),
            v(&["/bin/sh"])
        );
        assert_eq!(
            command_line(
                Some(&ep),
                Some(&cmd),
                Some(&v(&["/bin/sh"])),
                Some(&v(&["-c", "id"]))
            ),
            v(&["/bin/sh", "-c", "id"])
        );
        // An empty entrypoint clears it: the command is all there is.
        assert_eq!(
            command_line(Some(&ep), Some(&cmd), Some(&v(&[""])), Some(&v(&["id"]))),
            v(&["id"])
        );
        assert!(command_line(Some(&ep), Some(&cmd), Some(&[]), None).is_empty());
        assert_eq!(command_line(None, Some(&cmd), None, None), cmd);
        assert!(command_line(None, None, None, None).is_empty());
    }

    #[test]
    fn env_overrides_replace_earlier_values() {
        let mut env = v(&["PATH=/bin", "A=1"]);
        set_env(&mut env, "A=2".into());
        set_env(&mut env, "B=x=y".into());
        assert_eq!(env, v(&["PATH=/bin", "A=2", "B=x=y"]));
    }

    #[test]
    fn home_comes_from_the_images_passwd() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("top");
        let base = tmp.path().join("base");
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::create_dir_all(&top).unwrap();
        std::fs::write(
            base.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnodejs:x:1001:1001::/home/nodejs:/bin/sh\n",
        )
        .unwrap();
        let lowers = vec![top, base];
        assert_eq!(home_of(&lowers, ""), "/root");
        assert_eq!(home_of(&lowers, "nodejs"), "/home/nodejs");
        assert_eq!(home_of(&lowers, "1001:1001"), "/home/nodejs");
        assert_eq!(home_of(&lowers, "4242"), "/");
    }

    #[test]
    fn home_is_never_read_from_the_hosts_files() {
        // The image's /etc/passwd is a symlink to a file outside the image:
        // it means the image's own (missing) file at that path.
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host-passwd");
        std::fs::write(&host, "root:x:0:0:root:/leaked:/bin/sh\n").unwrap();
        let base = tmp.path().join("base");
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::os::unix::fs::symlink(&host, base.join("etc/passwd")).unwrap();
        assert_eq!(home_of(std::slice::from_ref(&base), ""), "/root");
        // A FIFO is not read (it would block).
        std::fs::remove_file(base.join("etc/passwd")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            base.join("etc/passwd"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert_eq!(home_of(&[base], ""), "/root");
    }

    #[test]
    fn volumes_are_bind_mounts_or_named_volumes_under_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let host = tmp.path().join("host");
        std::fs::create_dir(&host).unwrap();
        let m = parse_volume(&format!("{}:/data:ro", host.display()), &store, tmp.path()).unwrap();
        assert_eq!(m, host_bind(&host, "/data", true));
        let m = parse_volume("cache:/var/cache", &store, tmp.path()).unwrap();
        assert_eq!(
            m,
            host_bind(&store.join("volumes/cache/_data"), "/var/cache", false)
        );
        assert!(store.join("volumes/cache/_data").is_dir());
        let m = parse_mount(
            "type=bind,source=./host,target=/h,readonly",
            &store,
            tmp.path(),
        )
        .unwrap();
        assert!(matches!(m, MountSpec::Bind { readonly: true, .. }));
        let m = parse_mount("type=tmpfs,target=/t", &store, tmp.path()).unwrap();
        assert!(matches!(m, MountSpec::Tmpfs { .. }));
        for bad in ["/x", "/x:rel", "a:/b:rx", "-bad:/x"] {
            assert!(parse_volume(bad, &store, tmp.path()).is_err(), "{bad}");
        }
        assert!(parse_mount("type=bind,target=/x", &store, tmp.path()).is_err());
    }
}
