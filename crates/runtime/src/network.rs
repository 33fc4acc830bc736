//! Container networks, set up with existing tools.
//!
//! - Host and none: the sandbox's own modes.
//! - A bridge network, as root: each container gets a network namespace of
//!   its own ([`NetnsHolder`]) that `netavark setup` attaches to the
//!   network's bridge (created on first use) with an address kiln assigns
//!   (10.89.N.0/24, N free on this machine), its published ports as DNAT
//!   rules (which also answer on 127.0.0.1), and, when the network has DNS,
//!   `aardvark-dns` on the bridge's gateway resolving the container's name
//!   and aliases (a Compose service's name). `netavark teardown` undoes it
//!   when the container ends, and removes the bridge with its last container.
//!   netavark's state (aardvark's configuration) lives in `/run/kiln/netavark`,
//!   the address book in `ipam.json` there, under a lock.
//! - A bridge network, rootless: netavark needs the host's root. The
//!   containers of a group share one network namespace, made in kiln's user
//!   namespace and connected to the host by `slirp4netns`, whose API forwards
//!   each published port into it; names resolve to 127.0.0.1 through
//!   `/etc/hosts`, as in a pod. (pasta, Debian's `passt`, would be the newer
//!   tool, but the bookworm build switches to `nobody` when started as root
//!   of a user namespace and then cannot join the namespace kiln made.)

use crate::ports::PortMapping;
use crate::state::write_atomic;
use crate::{err, Result, RuntimeError};
use kiln_sandbox::NetnsHolder;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The network a container is on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum NetworkChoice {
    /// The host's network namespace.
    Host,
    /// Only a loopback interface.
    None,
    /// A bridge network shared with other containers: reachable there by
    /// its name and `aliases`; `dns`: other containers' names resolve.
    Bridge {
        network: String,
        aliases: Vec<String>,
        dns: bool,
    },
}

/// The network kiln run -p / --network bridge uses (docker's `bridge`: no DNS).
pub const DEFAULT_BRIDGE: &str = "kiln";

/// What a container's sandbox needs from its network.
#[derive(Clone, Debug, Default)]
pub struct Attached {
    pub netns: Option<PathBuf>,
    pub ip: Option<String>,
    pub resolv_conf: Option<Vec<u8>>,
    /// `(address, names)` lines for `/etc/hosts` besides localhost.
    pub hosts: Vec<(String, Vec<String>)>,
}

fn find_tool(env: &str, name: &str, dirs: &[&str]) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    for d in dirs {
        let p = Path::new(d).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    err(format!(
        "{name} is needed for container networks and was not found (install the Debian package {}, or set {env})",
        match name {
            "aardvark-dns" => "aardvark-dns",
            "slirp4netns" => "slirp4netns",
            _ => "netavark",
        }
    ))
}

const PODMAN_DIRS: &[&str] = &[
    "/usr/lib/podman",
    "/usr/libexec/podman",
    "/usr/local/lib/podman",
];

/// netavark's directory for aardvark-dns and kiln's address book.
fn netavark_dir() -> PathBuf {
    std::env::var_os("KILN_NETAVARK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/kiln/netavark"))
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// kiln's address book for netavark networks: which /24 each network has
/// and which addresses its containers hold.
#[derive(Default, Serialize, Deserialize)]
struct Ipam {
    networks: BTreeMap<String, IpamNetwork>,
}

#[derive(Default, Serialize, Deserialize)]
struct IpamNetwork {
    /// N of 10.89.N.0/24.
    subnet: u8,
    /// Last octet → container id.
    used: BTreeMap<u8, String>,
}

struct IpamLock {
    _file: std::fs::File,
    path: PathBuf,
    book: Ipam,
}

impl IpamLock {
    fn take() -> Result<IpamLock> {
        let file = lock_exclusive("ipam.lock")?;
        let path = netavark_dir().join("ipam.json");
        let book = std::fs::read(&path)
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default();
        Ok(IpamLock {
            _file: file,
            path,
            book,
        })
    }

    fn save(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.book)
            .map_err(|e| RuntimeError(format!("encoding the address book: {e}")))?;
        write_atomic(&self.path, &json)
    }
}

/// IPv4 routes of the host, as (network, mask) in host byte order.
fn host_routes() -> Vec<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // /proc prints the address's bytes (network order) as a native u32.
            Some((
                u32::from_be_bytes(dest.to_ne_bytes()),
                u32::from_be_bytes(mask.to_ne_bytes()),
            ))
        })
        .filter(|(_, mask)| *mask != 0)
        .collect()
}

fn subnet_is_free(n: u8, book: &Ipam, routes: &[(u32, u32)]) -> bool {
    let net = u32::from_be_bytes([10, 89, n, 0]);
    let mask = 0xffff_ff00u32;
    !book.networks.values().any(|x| x.subnet == n)
        && !routes
            .iter()
            .any(|(rnet, rmask)| (net & rmask) == (rnet & rmask) || (rnet & mask) == net)
}

/// Serialises netavark runs.
struct NetavarkLock(#[allow(dead_code)] std::fs::File);

impl NetavarkLock {
    fn take() -> Result<NetavarkLock> {
        Ok(NetavarkLock(lock_exclusive("netavark.lock")?))
    }
}

/// Opens (creating) the lock file `name` in kiln's netavark directory and waits
/// for an exclusive flock on it; the lock lasts as long as the file stays open.
fn lock_exclusive(name: &str) -> Result<std::fs::File> {
    let dir = netavark_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| RuntimeError(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| RuntimeError(format!("opening {}: {e}", path.display())))?;
    rustix::fs::flock(file.as_fd(), rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| RuntimeError(format!("locking {}: {e}", path.display())))?;
    Ok(file)
}

/// A container attached to a netavark network (as root).
pub struct NetavarkAttachment {
    holder: NetnsHolder,
    config: serde_json::Value,
    network: String,
    container_id: String,
    netavark: PathBuf,
    aardvark: PathBuf,
}

impl NetavarkAttachment {
    /// Makes the container's namespace and attaches it.
    pub fn setup(
        container_id: &str,
        container_name: &str,
        choice: &NetworkChoice,
        ports: &[PortMapping],
    ) -> Result<(NetavarkAttachment, Attached)> {
        let NetworkChoice::Bridge {
            network,
            aliases,
            dns,
        } = choice
        else {
            return err("not a bridge network");
        };
        let netavark = find_tool("KILN_NETAVARK", "netavark", PODMAN_DIRS)?;
        let aardvark = find_tool("KILN_AARDVARK_DNS", "aardvark-dns", PODMAN_DIRS)?;
        let holder = NetnsHolder::create().map_err(|e| RuntimeError(e.to_string()))?;
        // An address.
        let (subnet, host) = {
            let mut ipam = IpamLock::take()?;
            let routes = host_routes();
            if !ipam.book.networks.contains_key(network) {
                let start = u8::from_str_radix(&sha256_hex(network)[..2], 16).unwrap_or(0);
                let n = (0..=255u16)
                    .map(|i| ((start as u16 + i) % 256) as u8)
                    .find(|n| subnet_is_free(*n, &ipam.book, &routes))
                    .ok_or_else(|| RuntimeError("no free subnet in 10.89.0.0/16".into()))?;
                ipam.book.networks.insert(
                    network.clone(),
                    IpamNetwork {
                        subnet: n,
                        used: BTreeMap::new(),
                    },
                );
            }
            let net = ipam.book.networks.get_mut(network).expect("inserted");
            let host = (2..=254u8)
                .find(|h| !net.used.contains_key(h))
                .ok_or_else(|| RuntimeError(format!("network {network} is full")))?;
            net.used.insert(host, container_id.to_string());
            let subnet = net.subnet;
            ipam.save()?;
            (subnet, host)
        };
        let ip = format!("10.89.{subnet}.{host}");
        let gateway = format!("10.89.{subnet}.1");
        let id = sha256_hex(network);
        let mut names = vec![container_name.to_string()];
        names.extend(aliases.iter().cloned());
        let config = json!({
            "container_id": container_id,
            "container_name": container_name,
            "port_mappings": ports.iter().map(|p| json!({
                "host_ip": p.host_ip,
                "container_port": p.container_port,
                "host_port": p.host_port,
                "range": 1,
                "protocol": p.protocol,
            })).collect::<Vec<_>>(),
            "networks": { network.as_str(): {
                "static_ips": [ip],
                "aliases": aliases,
                "interface_name": "eth0",
            }},
            "network_info": { network.as_str(): {
                "name": network,
                "id": id,
                "driver": "bridge",
                "network_interface": format!("kiln{}", &id[..8]),
                "subnets": [{"subnet": format!("10.89.{subnet}.0/24"), "gateway": gateway}],
                "ipv6_enabled": false,
                "internal": false,
                "dns_enabled": dns,
                "ipam_options": {"driver": "host-local"},
            }},
        });
        let attachment = NetavarkAttachment {
            holder,
            config,
            network: network.clone(),
            container_id: container_id.to_string(),
            netavark,
            aardvark,
        };
        let out = attachment.netavark("setup")?;
        let result: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
            RuntimeError(format!(
                "netavark setup answered {:?}: {e}",
                String::from_utf8_lossy(&out)
            ))
        })?;
        let mut attached = Attached {
            netns: Some(attachment.holder.path()),
            ip: Some(ip.clone()),
            ..Default::default()
        };
        let servers: Vec<String> = result[network.as_str()]["dns_server_ips"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if !servers.is_empty() {
            let search: Vec<String> = result[network.as_str()]["dns_search_domains"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let mut text = String::new();
            if !search.is_empty() {
                text.push_str(&format!("search {}\n", search.join(" ")));
            }
            for s in servers {
                text.push_str(&format!("nameserver {s}\n"));
            }
            attached.resolv_conf = Some(text.into_bytes());
        }
        attached.hosts.push((ip, names));
        Ok((attachment, attached))
    }

    /// Runs netavark; one at a time on this machine (two teardowns on one
    /// network at once race over its bridge and firewall chains).
    fn netavark(&self, action: &str) -> Result<Vec<u8>> {
        let _one_at_a_time = NetavarkLock::take()?;
        let dir = netavark_dir();
        let mut child = Command::new(&self.netavark)
            .arg("--config")
            .arg(&dir)
            .arg("--aardvark-binary")
            .arg(&self.aardvark)
            .arg(action)
            .arg(self.holder.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| RuntimeError(format!("running {}: {e}", self.netavark.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(self.config.to_string().as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| RuntimeError(format!("netavark {action}: {e}")))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let text = String::from_utf8_lossy(&out.stdout).to_string() + &text;
            return err(format!("netavark {action} failed: {}", text.trim()));
        }
        Ok(out.stdout)
    }

    /// Detaches the container and gives its address back.
    pub fn teardown(self) -> Result<()> {
        let result = self.netavark("teardown").map(|_| ());
        if let Ok(mut ipam) = IpamLock::take() {
            if let Some(net) = ipam.book.networks.get_mut(&self.network) {
                net.used.retain(|_, c| *c != self.container_id);
                if net.used.is_empty() {
                    ipam.book.networks.remove(&self.network);
                }
            }
            let _ = ipam.save();
        }
        result
    }
}

/// A group's network namespace connected to the host by slirp4netns (rootless).
pub struct SlirpNetwork {
    holder: NetnsHolder,
    slirp: Child,
    socket: PathBuf,
}

impl SlirpNetwork {
    /// Makes the namespace and starts slirp4netns on it; its API socket is
    /// `socket` (a path short enough for a unix socket).
    pub fn setup(socket: &Path) -> Result<SlirpNetwork> {
        let slirp = find_tool("KILN_SLIRP4NETNS", "slirp4netns", &[])?;
        if std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .is_err()
        {
            return err("rootless container networks need /dev/net/tun, readable and writable by every user (mode 0666, as udev makes it)");
        }
        let holder = NetnsHolder::create().map_err(|e| RuntimeError(e.to_string()))?;
        let _ = std::fs::remove_file(socket);
        let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| RuntimeError(format!("pipe: {e}")))?;
        let wfd = std::os::fd::AsRawFd::as_raw_fd(&ready_w);
        let mut cmd = Command::new(&slirp);
        cmd.args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--ready-fd=3",
            "--api-socket",
        ])
        .arg(socket)
        .arg(holder.pid().to_string())
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        // SAFETY: dup2/prctl/setpgid only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(wfd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                // Out of the terminal's foreground group: a Ctrl-C is the
                // supervisor's to handle, and the containers keep their
                // network while they stop.
                libc::setpgid(0, 0);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| RuntimeError(format!("running {}: {e}", slirp.display())))?;
        drop(ready_w);
        let mut ready = Vec::new();
        let _ = std::fs::File::from(ready_r).read_to_end(&mut ready);
        if ready.is_empty() {
            let _ = child.kill();
            let mut msg = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut msg);
            }
            let _ = child.wait();
            return err(format!("slirp4netns did not start: {}", msg.trim()));
        }
        // Its stderr is not read any more: let it go nowhere.
        drop(child.stderr.take());
        Ok(SlirpNetwork {
            holder,
            slirp: child,
            socket: socket.to_path_buf(),
        })
    }

    pub fn netns(&self) -> PathBuf {
        self.holder.path()
    }

    /// Forwards a host port into the namespace.
    pub fn publish(&self, p: &PortMapping) -> Result<()> {
        let request = json!({
            "execute": "add_hostfwd",
            "arguments": {
                "proto": p.protocol,
                "host_addr": if p.host_ip.is_empty() { "0.0.0.0" } else { &p.host_ip },
                "host_port": p.host_port,
                "guest_port": p.container_port,
            }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut stream = loop {
            match std::os::unix::net::UnixStream::connect(&self.socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return err(format!("slirp4netns API {}: {e}", self.socket.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream
            .write_all(request.to_string().as_bytes())
            .map_err(|e| RuntimeError(format!("slirp4netns API: {e}")))?;
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        if v.get("return").is_some() {
            Ok(())
        } else {
            err(format!(
                "publishing {}: {}",
                p.display(),
                v["error"]["desc"].as_str().unwrap_or(answer.trim())
            ))
        }
    }

    /// `/etc/resolv.conf` for containers here: slirp4netns's DNS forwarder.
    pub fn resolv_conf() -> Vec<u8> {
        b"nameserver 10.0.2.3\n".to_vec()
    }

    pub fn teardown(mut self) {
        let _ = self.slirp.kill();
        let _ = self.slirp.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subnet_is_free_when_no_network_and_no_route_has_it() {
        let mut book = Ipam::default();
        let routes = vec![(u32::from_be_bytes([10, 89, 7, 0]), 0xffff_ff00)];
        assert!(subnet_is_free(3, &book, &routes));
        assert!(!subnet_is_free(7, &book, &routes));
        book.networks.insert(
            "x".into(),
            IpamNetwork {
                subnet: 3,
                used: BTreeMap::new(),
            },
        );
        assert!(!subnet_is_free(3, &book, &routes));
        // A wider route covering 10.0.0.0/8 makes every one busy.
        let wide = vec![(u32::from_be_bytes([10, 0, 0, 0]), 0xff00_0000)];
        assert!(!subnet_is_free(4, &Ipam::default(), &wide));
    }
}
