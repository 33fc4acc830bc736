//! Registry references as docker normalises them: `node:20` is
//! `docker.io/library/node:20`, `localhost:5000/x` is on `localhost:5000`, and a
//! reference may pin a digest (`name@sha256:…`, optionally with a tag too).

use crate::digest::Digest;
use crate::reference::ImageName;
use std::fmt;

/// Docker Hub's canonical registry name and the host its API lives on.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";

/// A fully normalised reference to an image in a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`, …
    pub registry: String,
    /// `library/node`, `team/app`, …
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let err = |reason: String| ReferenceError {
            input: input.to_string(),
            reason,
        };
        let (name_part, digest) = match input.split_once('@') {
            Some((n, d)) => (
                n,
                Some(d.parse::<Digest>().map_err(|e| err(e.to_string()))?),
            ),
            None => (input, None),
        };
        // Validate name and tag with the store's name rules.
        let name: ImageName = name_part
            .parse()
            .map_err(|e: crate::reference::ImageNameError| err(e.reason.to_string()))?;
        let explicit_tag = {
            let last_slash = name_part.rfind('/').map(|i| i + 1).unwrap_or(0);
            name_part[last_slash..].contains(':')
        };
        let repo = name.repository();
        let (registry, repository) = match repo.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), repo.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = if explicit_tag || digest.is_none() {
            Some(name.tag().to_string())
        } else {
            None
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// The name the store keeps a pulled image under (docker's familiar form), if
    /// the reference has a tag.
    pub fn store_name(&self) -> Option<ImageName> {
        let tag = self.tag.as_deref()?;
        format!("{}/{}:{tag}", self.registry, self.repository)
            .parse()
            .ok()
    }

    /// The same reference on another registry (a mirror).
    pub fn on_registry(&self, registry: &str) -> Reference {
        Reference {
            registry: registry.to_string(),
            ..self.clone()
        }
    }
}

/// The host[:port] that serves the API of `registry` (Docker Hub's is not docker.io).
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API_HOST
    } else {
        registry
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        for (input, want) in [
            ("node:20", "docker.io/library/node:20"),
            ("node", "docker.io/library/node:latest"),
            ("user/tool", "docker.io/user/tool:latest"),
            ("docker.io/library/busybox:1", "docker.io/library/busybox:1"),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("localhost/x:1", "localhost/x:1"),
            ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b:v1"),
            ("ghcr.io/o/p:t", "ghcr.io/o/p:t"),
        ] {
            assert_eq!(
                Reference::parse(input).unwrap().to_string(),
                want,
                "{input}"
            );
        }
        let d = "sha256:".to_string() + &"ab".repeat(32);
        let r = Reference::parse(&format!("alpine@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.unwrap().to_string(), d);
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(r.store_name(), None);
        let r = Reference::parse(&format!("127.0.0.1:5000/x:1@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert_eq!(r.manifest_reference(), d);
        let r = Reference::parse("node:20").unwrap();
        assert_eq!(r.store_name().unwrap().to_string(), "node:20");
        assert_eq!(api_host(&r.registry), "registry-1.docker.io");
    }

    #[test]
    fn refuses_bad_references() {
        for bad in ["", "Node", "x@sha256:zz", "x@md5:00", "a//b", "x:"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
    }
}
