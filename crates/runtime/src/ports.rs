//! Published ports: docker's `-p [IP:][HOST:]CONTAINER[/tcp|udp]` and the
//! Compose long syntax, as one mapping each.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortMapping {
    /// Host address to listen on; empty: every address.
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
}

impl PortMapping {
    /// `-p [IP:][HOST:]CONTAINER[/PROTO]`; an IPv6 address in brackets. A
    /// missing or empty host port is a free one chosen now.
    pub fn parse(spec: &str) -> Result<PortMapping, String> {
        let bad = |why: &str| format!("invalid port mapping {spec:?}: {why}");
        let (rest, protocol) = match spec.rsplit_once('/') {
            Some((r, p)) => (r, p.to_ascii_lowercase()),
            None => (spec, "tcp".to_string()),
        };
        if protocol != "tcp" && protocol != "udp" {
            return Err(bad("the protocol must be tcp or udp"));
        }
        let (host_ip, rest) = if let Some(r) = rest.strip_prefix('[') {
            let (ip, r) = r
                .split_once("]:")
                .ok_or_else(|| bad("unclosed [address]"))?;
            (ip.to_string(), r)
        } else {
            let parts: Vec<&str> = rest.split(':').collect();
            match parts.len() {
                1 | 2 => (String::new(), rest),
                3 => (parts[0].to_string(), &rest[parts[0].len() + 1..]),
                _ => return Err(bad("expected [IP:][HOST:]CONTAINER")),
            }
        };
        let (host, container) = match rest.split_once(':') {
            Some((h, c)) => (h, c),
            None => ("", rest),
        };
        if container.contains('-') || host.contains('-') {
            return Err(bad("port ranges are not supported"));
        }
        let container_port = parse_port(container).ok_or_else(|| bad("bad container port"))?;
        let host_port = if host.is_empty() {
            free_port(&host_ip, &protocol).map_err(|e| bad(&e))?
        } else {
            parse_port(host).ok_or_else(|| bad("bad host port"))?
        };
        if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(bad("bad host address"));
        }
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol,
        })
    }

    /// As docker prints it: `0.0.0.0:8080->80/tcp`.
    pub fn display(&self) -> String {
        let ip = if self.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &self.host_ip
        };
        format!(
            "{ip}:{}->{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

fn parse_port(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|p| *p > 0)
}

/// A port the kernel says is free now.
fn free_port(ip: &str, protocol: &str) -> Result<u16, String> {
    let addr = format!("{}:0", if ip.is_empty() { "0.0.0.0" } else { ip });
    let port = if protocol == "udp" {
        std::net::UdpSocket::bind(&addr).and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind(&addr).and_then(|s| s.local_addr())
    };
    port.map(|a| a.port())
        .map_err(|e| format!("no free port on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dockers_forms() {
        let p = PortMapping::parse("18000:8000").unwrap();
        assert_eq!(
            (
                p.host_ip.as_str(),
                p.host_port,
                p.container_port,
                p.protocol.as_str()
            ),
            ("", 18000, 8000, "tcp")
        );
        let p = PortMapping::parse("127.0.0.1:18000:8000/udp").unwrap();
        assert_eq!(
            (
                p.host_ip.as_str(),
                p.host_port,
                p.container_port,
                p.protocol.as_str()
            ),
            ("127.0.0.1", 18000, 8000, "udp")
        );
        let p = PortMapping::parse("[::1]:18001:80").unwrap();
        assert_eq!((p.host_ip.as_str(), p.host_port), ("::1", 18001));
        let p = PortMapping::parse("8000").unwrap();
        assert!(p.host_port > 0);
        assert_eq!(p.container_port, 8000);
        let p = PortMapping::parse("127.0.0.1::8000").unwrap();
        assert!(p.host_port > 0);
        assert_eq!(p.display(), format!("127.0.0.1:{}->8000/tcp", p.host_port));
        for bad in [
            "",
            "x:80",
            "80/sctp",
            "1-5:80",
            "a:b:c:d",
            "nohost:80:80",
            "0:80",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad}");
        }
    }
}
