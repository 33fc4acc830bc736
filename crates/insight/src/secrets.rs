//! Secrets in files: by name (`.env`, `.npmrc`, SSH keys, `.aws/credentials`,
//! `.docker/config.json`) confirmed by content where a name alone says
//! little, and token patterns in the contents of the files an application
//! ships. The token patterns are those gitleaks defines (its rules
//! `aws-access-token`, `github-pat`, `github-fine-grained-pat`,
//! `github-oauth`, `github-app-token`, `github-refresh-token`,
//! `npm-access-token`, `slack-bot-token` and the other `xox?-` Slack tokens,
//! `private-key`).
//!
//! Token patterns are looked for only outside the directories a distribution
//! or a package manager fills (`usr/`, `lib/`, `node_modules/`, …): those
//! hold test fixtures and documentation that look like tokens, and a secret
//! put there by a build would also be found by its name.

use regex::bytes::Regex;
use std::sync::OnceLock;

/// One secret found in a file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SecretHit {
    /// `private-key`, `npm-token`, `aws-access-key-id`, `github-token`,
    /// `slack-token`, `docker-auths`, `aws-credentials`.
    pub rule: &'static str,
    /// The line it is on (1-based).
    pub line: usize,
}

/// Largest file whose contents are searched for token patterns.
const MAX_SCANNED: u64 = 256 * 1024;

/// Directories whose files are not searched for token patterns (but still by name).
const SYSTEM_DIRS: &[&str] = &[
    "usr/",
    "lib/",
    "lib32/",
    "lib64/",
    "libx32/",
    "bin/",
    "sbin/",
    "etc/ssl/",
    "var/lib/",
    "var/cache/",
    "proc/",
    "sys/",
    "opt/",
];

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether a file's contents must be read: its name says it may hold a
/// secret, or it is a small file of the application.
pub fn wants_content(path: &str, size: u64) -> bool {
    by_name(path).is_some()
        || (size <= MAX_SCANNED
            && !SYSTEM_DIRS.iter().any(|d| path.starts_with(d))
            && !path.contains("node_modules/")
            && !path.contains("/.npm/_cacache/"))
}

/// What a file's name alone says it is, if it names a secret file.
pub fn by_name(path: &str) -> Option<&'static str> {
    let base = base_name(path);
    if base == ".env"
        || (base.starts_with(".env.")
            && ![".env.example", ".env.sample", ".env.template", ".env.dist"].contains(&base))
    {
        return Some("dotenv");
    }
    if base == ".npmrc" {
        return Some("npmrc");
    }
    if [
        "id_rsa",
        "id_dsa",
        "id_ecdsa",
        "id_ed25519",
        "id_ecdsa_sk",
        "id_ed25519_sk",
    ]
    .contains(&base)
    {
        return Some("ssh-private-key");
    }
    if path.ends_with(".aws/credentials") {
        return Some("aws-credentials");
    }
    if path.ends_with(".docker/config.json") {
        return Some("docker-config");
    }
    None
}

struct Patterns {
    list: Vec<(&'static str, Regex)>,
    npm_auth: Regex,
    docker_auths: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let r = |s: &str| Regex::new(s).expect("a valid pattern");
        Patterns {
            list: vec![
                (
                    "private-key",
                    r(r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY( BLOCK)?-----"),
                ),
                (
                    "aws-access-key-id",
                    r(r"\b((?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b"),
                ),
                (
                    "github-token",
                    r(r"\b(?:ghp|gho|ghu|ghs|ghr)_[0-9A-Za-z]{36}\b"),
                ),
                ("github-token", r(r"\bgithub_pat_[0-9A-Za-z_]{82}\b")),
                ("npm-token", r(r"\bnpm_[0-9A-Za-z]{36}\b")),
                ("slack-token", r(r"\bxox[baprs]-[0-9A-Za-z-]{10,250}")),
            ],
            npm_auth: r(r"(?m)^\s*(?://[^\s=]*:)?_(?:authToken|auth|password)\s*=\s*\S+"),
            docker_auths: r(r#""auths"\s*:\s*\{\s*""#),
        }
    })
}

fn line_of(data: &[u8], at: usize) -> usize {
    1 + data[..at].iter().filter(|&&b| b == b'\n').count()
}

/// The secrets in a file's contents.
pub fn scan_content(path: &str, data: &[u8]) -> Vec<SecretHit> {
    let p = patterns();
    let mut hits = Vec::new();
    match by_name(path) {
        Some("npmrc") => {
            if let Some(m) = p.npm_auth.find(data) {
                hits.push(SecretHit {
                    rule: "npmrc-auth-token",
                    line: line_of(data, m.start()),
                });
            }
        }
        Some("docker-config") => {
            if let Some(m) = p.docker_auths.find(data) {
                hits.push(SecretHit {
                    rule: "docker-auths",
                    line: line_of(data, m.start()),
                });
            }
        }
        Some("aws-credentials") => {
            if let Some(at) = find(data, b"aws_secret_access_key") {
                hits.push(SecretHit {
                    rule: "aws-credentials",
                    line: line_of(data, at),
                });
            }
        }
        _ => {}
    }
    for (rule, re) in &p.list {
        if let Some(m) = re.find(data) {
            if !hits.iter().any(|h| h.rule == *rule) {
                hits.push(SecretHit {
                    rule,
                    line: line_of(data, m.start()),
                });
            }
        }
    }
    hits
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(path: &str, data: &str) -> Vec<&'static str> {
        scan_content(path, data.as_bytes())
            .into_iter()
            .map(|h| h.rule)
            .collect()
    }

    #[test]
    fn names() {
        assert_eq!(by_name("app/.env"), Some("dotenv"));
        assert_eq!(by_name("app/.env.production"), Some("dotenv"));
        assert_eq!(by_name("app/.env.example"), None);
        assert_eq!(by_name("root/.ssh/id_ed25519"), Some("ssh-private-key"));
        assert_eq!(by_name("root/.ssh/id_ed25519.pub"), None);
        assert_eq!(by_name("home/u/.aws/credentials"), Some("aws-credentials"));
        assert_eq!(by_name("app/environment.js"), None);
    }

    #[test]
    fn contents() {
        assert_eq!(
            rules(
                "app/.npmrc",
                "registry=https://r/\n//r/:_authToken=abc123\n"
            ),
            vec!["npmrc-auth-token"]
        );
        assert!(rules("app/.npmrc", "registry=https://r/\n").is_empty());
        assert_eq!(
            rules(
                "root/.docker/config.json",
                r#"{"auths": {"r": {"auth": "eA=="}}}"#
            ),
            vec!["docker-auths"]
        );
        assert!(rules("root/.docker/config.json", r#"{"auths": {}}"#).is_empty());
        assert_eq!(
            rules("k", "x\n-----BEGIN OPENSSH PRIVATE KEY-----\nAAA\n"),
            vec!["private-key"]
        );
        assert_eq!(
            rules("c", "key = AKIAIOSFODNN7EXAMPLE"),
            vec!["aws-access-key-id"]
        );
        assert_eq!(
            rules("c", "t=ghp_0123456789abcdefghijABCDEFGHIJ012345"),
            vec!["github-token"]
        );
        assert_eq!(
            rules("c", "t=npm_0123456789abcdefghijABCDEFGHIJ012345"),
            vec!["npm-token"]
        );
        assert_eq!(rules("c", "xoxb-1234567890-abcdef"), vec!["slack-token"]);
        let hit = &scan_content("c", b"a\nb\nAKIAIOSFODNN7EXAMPLE\n")[0];
        assert_eq!(hit.line, 3);
        assert!(rules("c", "just text, ghp_short, AKIA lowercase").is_empty());
    }

    #[test]
    fn system_files_are_searched_only_by_name() {
        assert!(!wants_content("usr/lib/node_modules/npm/x.js", 10));
        assert!(!wants_content("app/node_modules/x/index.js", 10));
        assert!(wants_content("app/node_modules/x/.npmrc", 10));
        assert!(wants_content("home/app/dist/index.js", 10));
        assert!(!wants_content("home/app/dist/big.js", 10 << 20));
    }
}
