//! Image names as users type them: `name[:tag]`, normalised like docker's short
//! form (`name` means `name:latest`; `docker.io/library/x` is shown as `x`).
//! Full registry normalisation belongs to the registry client.

use std::fmt;
use std::str::FromStr;

/// A repository name with a tag, e.g. `app:1` or `localhost:5000/team/app:latest`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageName {
    repository: String,
    tag: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image name {input:?}: {reason}")]
pub struct ImageNameError {
    pub input: String,
    pub reason: &'static str,
}

impl ImageName {
    pub fn repository(&self) -> &str {
        &self.repository
    }
    pub fn tag(&self) -> &str {
        &self.tag
    }
    /// The same repository with another tag.
    pub fn with_tag(&self, tag: &str) -> Result<ImageName, ImageNameError> {
        format!("{}:{tag}", self.repository).parse()
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        match ch {
            b'.' => {
                if !b[i + 1].is_ascii_alphanumeric() {
                    return false;
                }
                i += 1;
            }
            b'_' => {
                if b[i + 1] == b'_' {
                    i += 1;
                }
                if !b[i + 1].is_ascii_alphanumeric() {
                    return false;
                }
                i += 1;
            }
            b'-' => {
                while b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
    true
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl FromStr for ImageName {
    type Err = ImageNameError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ImageNameError {
            input: input.to_string(),
            reason,
        };
        if input.contains('@') {
            return Err(err(
                "digest references (name@sha256:…) are not supported here",
            ));
        }
        // The tag is after the last ':' that follows the last '/'.
        let last_slash = input.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repo, tag) = match input[last_slash..].rfind(':') {
            Some(i) => (&input[..last_slash + i], &input[last_slash + i + 1..]),
            None => (input, "latest"),
        };
        if !valid_tag(tag) {
            return Err(err("a tag is up to 128 letters, digits, '_', '.' or '-'"));
        }
        if repo.is_empty() {
            return Err(err("the repository name is empty"));
        }
        if repo.len() > 255 {
            return Err(err("the repository name is longer than 255 characters"));
        }
        let mut parts: Vec<&str> = repo.split('/').collect();
        // A first component with '.', ':' or "localhost" is a registry domain.
        if parts.len() > 1
            && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
        {
            if !valid_domain(parts[0]) {
                return Err(err("the registry part is not a valid host[:port]"));
            }
            parts.remove(0);
        }
        if !parts.iter().all(|c| valid_path_component(c)) {
            return Err(err(
                "repository names are lowercase letters, digits and separators (. _ __ -) between '/'",
            ));
        }
        // Docker's familiar form: docker.io/library/x → x, docker.io/u/x → u/x.
        let repository = match repo.strip_prefix("docker.io/") {
            Some(rest) => rest.strip_prefix("library/").unwrap_or(rest).to_string(),
            None => repo.to_string(),
        };
        Ok(ImageName {
            repository,
            tag: tag.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        for (input, want) in [
            ("alpine", "alpine:latest"),
            ("alpine:3.20", "alpine:3.20"),
            ("team/app", "team/app:latest"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("localhost:5000/app:v1.2", "localhost:5000/app:v1.2"),
            ("docker.io/library/busybox:1", "busybox:1"),
            ("docker.io/user/tool", "user/tool:latest"),
            ("ghcr.io/o/x__y-z.w:_t", "ghcr.io/o/x__y-z.w:_t"),
        ] {
            let n: ImageName = input.parse().unwrap();
            assert_eq!(n.to_string(), want, "{input}");
        }
        let n: ImageName = "localhost:5000/app".parse().unwrap();
        assert_eq!(n.repository(), "localhost:5000/app");
        assert_eq!(n.tag(), "latest");
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "App",
            "app:",
            ":tag",
            "app:-x",
            "a//b",
            "a/",
            "-a",
            "a-",
            "a..b",
            "a@sha256:00",
            "app:tag with space",
            "a___b",
        ] {
            assert!(
                bad.parse::<ImageName>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
