//! `RUN --mount=...`: the CSV option list of a mount and its validation,
//! following BuildKit's `commands_runmount.go`.
//!
//! A mount's values may contain build variables (`--mount=type=cache,id=$X`),
//! which only have values at execution time. So a [`MountSpec`] keeps the
//! text; [`MountSpec::resolve`] expands and checks it into a [`Mount`]. When
//! the text has no `$` at all it is fully checked already while parsing the
//! Dockerfile, so errors show up before anything runs.

use super::InstrError;

/// What kind of mount (`type=`); `bind` when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share one cache mount (`sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

impl CacheSharing {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheSharing::Shared => "shared",
            CacheSharing::Private => "private",
            CacheSharing::Locked => "locked",
        }
    }
}

/// A checked, expanded mount, as the executor needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountType,
    /// `from=`: a stage name or image to take the mount's content from
    /// (bind/cache); empty means the build context (bind) or a fresh cache.
    pub from: Option<String>,
    /// `source=`/`src=`: path inside `from` (bind, cache) or the secret id.
    pub source: Option<String>,
    /// `target=`/`dst=`/`destination=`: where it appears in the container.
    pub target: Option<String>,
    pub read_only: bool,
    /// `size=` of a tmpfs mount in bytes (0: no limit given).
    pub size_limit: u64,
    /// `id=`: cache id, or secret/ssh id.
    pub id: Option<String>,
    /// `sharing=` (cache mounts only); `None` means BuildKit's default, shared.
    pub sharing: Option<CacheSharing>,
    /// `required` (secret/ssh): fail when the secret/agent is not provided.
    pub required: bool,
    /// `env=` (secret): also expose the secret in this environment variable.
    pub env: Option<String>,
    /// `mode=` (octal), `uid=`, `gid=` (cache, secret, ssh).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Default for Mount {
    fn default() -> Self {
        Mount {
            kind: MountType::Bind,
            from: None,
            source: None,
            target: None,
            read_only: false,
            size_limit: 0,
            id: None,
            sharing: None,
            required: false,
            env: None,
            mode: None,
            uid: None,
            gid: None,
        }
    }
}

/// One `--mount=` flag value as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// The text after `--mount=`, unexpanded.
    pub raw: String,
    /// The literal `from=` value (variables are not allowed there), used to
    /// find the stage or image this mount depends on.
    pub from: Option<String>,
}

impl MountSpec {
    /// Parses a `--mount` value: checks what can be checked without variable
    /// values (everything, if it contains no `$`).
    pub fn parse(raw: &str) -> Result<MountSpec, InstrError> {
        // BuildKit's parse-time pass: only `from` is looked at.
        let fields = csv_fields(raw)?;
        let mut from = None;
        for field in &fields {
            if let Some((k, v)) = field.split_once('=') {
                if k.eq_ignore_ascii_case("from") {
                    if let Some(idx) = v.find('$') {
                        if idx != v.len() - 1 {
                            return Err(InstrError::new(
                                "'from' doesn't support variable expansion, define alias stage instead",
                            ));
                        }
                    }
                    from = Some(v.to_string());
                }
            }
        }
        let spec = MountSpec {
            raw: raw.to_string(),
            from: from.filter(|f| !f.is_empty()),
        };
        if !raw.contains('$') {
            spec.resolve(&mut |w: &str| Ok(w.to_string()))?;
        }
        Ok(spec)
    }

    /// Expands every value with `expand` (the stage's shell-word expansion)
    /// and checks the result into a [`Mount`].
    pub fn resolve(
        &self,
        expand: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<Mount, InstrError> {
        parse_mount(&self.raw, expand)
    }
}

fn invalid_value(key: &str, value: &str) -> InstrError {
    InstrError::new(format!("invalid value for {key}: {value}"))
}

fn unexpected_key(key: &str, kind: MountType) -> InstrError {
    InstrError::new(format!(
        "unexpected key '{key}' for mount type '{}'",
        kind.as_str()
    ))
}

fn parse_mount(
    raw: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<Mount, InstrError> {
    let fields = csv_fields(raw)?;
    let mut m = Mount::default();
    let mut ro_auto = true;

    for field in &fields {
        let Some((key, value)) = field.split_once('=') else {
            let key = field.to_ascii_lowercase();
            match key.as_str() {
                "readonly" | "ro" => {
                    m.read_only = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.read_only = false;
                    ro_auto = false;
                }
                "required" => {
                    if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                        m.required = true;
                    } else {
                        return Err(unexpected_key(&key, m.kind));
                    }
                }
                _ => {
                    return Err(InstrError::new(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )))
                }
            }
            continue;
        };
        let key = key.to_ascii_lowercase();
        let value = expand(value).map_err(InstrError::new)?;
        match key.as_str() {
            "type" => {
                m.kind = match value.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        let mut e = InstrError::new(format!("unsupported mount type {value:?}"));
                        if let Some(s) = super::suggest(
                            &value.to_ascii_lowercase(),
                            &["bind", "cache", "tmpfs", "secret", "ssh"],
                        ) {
                            e = e.with_help(format!("did you mean {s}?"));
                        }
                        return Err(e);
                    }
                }
            }
            "from" => m.from = Some(value).filter(|v| !v.is_empty()),
            "source" | "src" => m.source = Some(value).filter(|v| !v.is_empty()),
            "target" | "dst" | "destination" => m.target = Some(value).filter(|v| !v.is_empty()),
            "readonly" | "ro" => {
                m.read_only = go_parse_bool(&value).ok_or_else(|| invalid_value(&key, &value))?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                let rw = go_parse_bool(&value).ok_or_else(|| invalid_value(&key, &value))?;
                m.read_only = !rw;
                ro_auto = false;
            }
            "required" => {
                if matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    m.required =
                        go_parse_bool(&value).ok_or_else(|| invalid_value(&key, &value))?;
                } else {
                    return Err(unexpected_key(&key, m.kind));
                }
            }
            "size" => {
                if m.kind == MountType::Tmpfs {
                    m.size_limit =
                        ram_in_bytes(&value).ok_or_else(|| invalid_value(&key, &value))?;
                } else {
                    return Err(unexpected_key(&key, m.kind));
                }
            }
            "id" => m.id = Some(value).filter(|v| !v.is_empty()),
            "sharing" => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        let mut e = InstrError::new(format!("unsupported sharing value {value:?}"));
                        if let Some(s) = super::suggest(
                            &value.to_ascii_lowercase(),
                            &["shared", "private", "locked"],
                        ) {
                            e = e.with_help(format!("did you mean {s}?"));
                        }
                        return Err(e);
                    }
                })
            }
            "mode" => {
                m.mode =
                    Some(parse_uint(&value, 8).ok_or_else(|| {
                        InstrError::new(format!("invalid value {value} for mode"))
                    })?)
            }
            "uid" => {
                m.uid = Some(
                    parse_uint(&value, 10)
                        .ok_or_else(|| InstrError::new(format!("invalid value {value} for uid")))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    parse_uint(&value, 10)
                        .ok_or_else(|| InstrError::new(format!("invalid value {value} for gid")))?,
                )
            }
            "env" => m.env = Some(value),
            _ => {
                const ALL_KEYS: &[&str] = &[
                    "type",
                    "from",
                    "source",
                    "target",
                    "readonly",
                    "id",
                    "sharing",
                    "required",
                    "size",
                    "mode",
                    "uid",
                    "gid",
                    "src",
                    "dst",
                    "destination",
                    "ro",
                    "rw",
                    "readwrite",
                    "env",
                ];
                let mut e = InstrError::new(format!("unexpected key '{key}' in '{field}'"));
                if let Some(s) = super::suggest(&key, ALL_KEYS) {
                    e = e.with_help(format!("did you mean {s}?"));
                }
                return Err(e);
            }
        }
    }

    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        let ty = m.kind.as_str();
        if m.mode.is_some() {
            return Err(InstrError::new(format!(
                "mode not allowed for {ty:?} type mounts"
            )));
        }
        if m.uid.is_some() {
            return Err(InstrError::new(format!(
                "uid not allowed for {ty:?} type mounts"
            )));
        }
        if m.gid.is_some() {
            return Err(InstrError::new(format!(
                "gid not allowed for {ty:?} type mounts"
            )));
        }
    }

    if ro_auto {
        m.read_only = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }

    if m.kind == MountType::Secret {
        if m.from.is_some() {
            return Err(InstrError::new("secret mount should not have a from"));
        }
        if m.sharing.is_some() {
            return Err(InstrError::new("secret mount should not define sharing"));
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err(InstrError::new(
                "invalid secret mount. one of source, target required",
            ));
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(InstrError::new("both source and id can't be set"));
        }
    }

    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(InstrError::new(format!(
            "invalid cache sharing set for {} mount",
            m.kind.as_str()
        )));
    }
    Ok(m)
}

/// Splits one CSV record like Go's `encoding/csv` (which BuildKit uses):
/// comma-separated fields, a field may be double-quoted with `""` for a quote.
pub(crate) fn csv_fields(s: &str) -> Result<Vec<String>, InstrError> {
    let err = |what: &str| InstrError::new(format!("failed to parse csv mounts: {what}"));
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(err("extraneous or missing \" in quoted-field")),
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some(',') | None => break,
                        Some(_) => return Err(err("extraneous or missing \" in quoted-field")),
                    },
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err(err("bare \" in non-quoted-field"));
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(_) => unreachable!("fields end at a comma or the end"),
        }
    }
    Ok(fields)
}

/// Go's `strconv.ParseBool`.
pub(crate) fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseUint(s, base, 32)` for base 8 or 10.
fn parse_uint(s: &str, base: u32) -> Option<u32> {
    if s.is_empty() || !s.chars().all(|c| c.is_digit(base)) {
        return None;
    }
    u32::from_str_radix(s, base).ok()
}

/// docker/go-units `RAMInBytes`: `512`, `64k`, `1.5g`, `10MiB`, `1 GB`, with
/// binary (1024) multipliers.
pub(crate) fn ram_in_bytes(s: &str) -> Option<u64> {
    let bytes = s.as_bytes();
    let mut i = 0;
    // number: \d+(\.\d+)*
    let num_start = i;
    loop {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        if i < bytes.len()
            && bytes[i] == b'.'
            && i + 1 < bytes.len()
            && bytes[i + 1].is_ascii_digit()
        {
            i += 1;
            continue;
        }
        break;
    }
    let num: f64 = s[num_start..i].parse().ok()?;
    let mut rest = &s[i..];
    rest = rest.strip_prefix(' ').unwrap_or(rest);
    let mut mult: u64 = 1;
    let mut r = rest.chars();
    let mut c = r.next();
    if let Some(u) = c {
        let m = match u.to_ascii_lowercase() {
            'k' => Some(1u64 << 10),
            'm' => Some(1 << 20),
            'g' => Some(1 << 30),
            't' => Some(1 << 40),
            'p' => Some(1 << 50),
            _ => None,
        };
        if let Some(m) = m {
            mult = m;
            c = r.next();
        }
    }
    if matches!(c, Some('i' | 'I')) {
        c = r.next();
    }
    if matches!(c, Some('b' | 'B')) {
        c = r.next();
    }
    if c.is_some() {
        return None;
    }
    Some((num * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> Mount {
        MountSpec::parse(raw)
            .and_then(|s| s.resolve(&mut |w: &str| Ok(w.to_string())))
            .unwrap_or_else(|e| panic!("{raw}: {}", e.message))
    }

    fn err(raw: &str) -> String {
        MountSpec::parse(raw).unwrap_err().message
    }

    #[test]
    fn bind_defaults() {
        let m = ok("target=/src");
        assert_eq!(m.kind, MountType::Bind);
        assert_eq!(m.target.as_deref(), Some("/src"));
        assert!(m.read_only, "bind mounts are read-only unless rw");
        let m = ok("type=bind,src=a,dst=/b,rw");
        assert_eq!(m.source.as_deref(), Some("a"));
        assert_eq!(m.target.as_deref(), Some("/b"));
        assert!(!m.read_only);
        let m = ok("type=bind,source=a,destination=/b,readwrite=true,from=builder");
        assert!(!m.read_only);
        assert_eq!(m.from.as_deref(), Some("builder"));
        let m = ok("TYPE=BIND,target=/x,ro=false");
        assert!(!m.read_only);
    }

    #[test]
    fn cache_options() {
        let m =
            ok("type=cache,target=/root/.npm,id=npm,sharing=locked,mode=0755,uid=1000,gid=1000");
        assert_eq!(m.kind, MountType::Cache);
        assert!(!m.read_only, "cache mounts are writable by default");
        assert_eq!(m.id.as_deref(), Some("npm"));
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert_eq!(m.uid, Some(1000));
        assert_eq!(m.gid, Some(1000));
        let m = ok("type=cache,target=/c,sharing=PRIVATE,readonly");
        assert_eq!(m.sharing, Some(CacheSharing::Private));
        assert!(m.read_only);
    }

    #[test]
    fn tmpfs_secret_ssh() {
        let m = ok("type=tmpfs,target=/t,size=64m");
        assert_eq!(m.size_limit, 64 << 20);
        assert!(!m.read_only);
        let m = ok("type=secret,id=tok,env=TOKEN,required");
        assert_eq!(m.kind, MountType::Secret);
        assert!(m.required);
        assert!(m.read_only);
        assert_eq!(m.env.as_deref(), Some("TOKEN"));
        let m = ok("type=secret,target=/run/secrets/x,required=false");
        assert!(!m.required);
        let m = ok("type=ssh,id=default,mode=0600,required=true");
        assert_eq!(m.kind, MountType::Ssh);
        assert_eq!(m.mode, Some(0o600));
        assert!(m.required);
    }

    #[test]
    fn quoted_csv_values() {
        let m = ok(r#"type=bind,"target=/a,b",src=x"#);
        assert_eq!(m.target.as_deref(), Some("/a,b"));
        assert!(err(r#"type=bind,tar"get=/a"#).contains("bare \" in non-quoted-field"));
    }

    #[test]
    fn errors_like_buildkit() {
        assert_eq!(err("type=nfs,target=/x"), "unsupported mount type \"nfs\"");
        assert_eq!(
            err("type=cache,target=/x,sharing=everyone"),
            "unsupported sharing value \"everyone\""
        );
        assert_eq!(
            err("type=cache,target=/x,mode=999"),
            "invalid value 999 for mode"
        );
        assert_eq!(
            err("type=cache,target=/x,uid=-1"),
            "invalid value -1 for uid"
        );
        assert_eq!(
            err("type=cache,target=/x,gid=abc"),
            "invalid value abc for gid"
        );
        assert_eq!(
            err("type=bind,target=/x,mode=0644"),
            "mode not allowed for \"bind\" type mounts"
        );
        assert_eq!(
            err("type=tmpfs,target=/x,uid=1"),
            "uid not allowed for \"tmpfs\" type mounts"
        );
        assert_eq!(
            err("type=bind,target=/x,size=1g"),
            "unexpected key 'size' for mount type 'bind'"
        );
        assert_eq!(
            err("type=tmpfs,target=/x,size=lots"),
            "invalid value for size: lots"
        );
        assert_eq!(
            err("type=bind,target=/x,required"),
            "unexpected key 'required' for mount type 'bind'"
        );
        // `required` before `type=secret` is checked against the default type, like BuildKit.
        assert_eq!(
            err("required,type=secret,id=a"),
            "unexpected key 'required' for mount type 'bind'"
        );
        assert_eq!(
            err("type=bind,target=/x,ro=maybe"),
            "invalid value for ro: maybe"
        );
        assert_eq!(
            err("type=bind,target"),
            "invalid field 'target' must be a key=value pair"
        );
        assert_eq!(
            err("type=bind,tagret=/x"),
            "unexpected key 'tagret' in 'tagret=/x'"
        );
        assert_eq!(
            err("type=secret,from=a,id=x"),
            "secret mount should not have a from"
        );
        assert_eq!(
            err("type=secret,id=x,sharing=shared"),
            "secret mount should not define sharing"
        );
        assert_eq!(
            err("type=secret"),
            "invalid secret mount. one of source, target required"
        );
        assert_eq!(
            err("type=secret,src=a,id=b"),
            "both source and id can't be set"
        );
        assert_eq!(
            err("type=bind,target=/x,sharing=shared"),
            "invalid cache sharing set for bind mount"
        );
        assert_eq!(
            err("type=bind,from=$STAGE,target=/x"),
            "'from' doesn't support variable expansion, define alias stage instead"
        );
    }

    #[test]
    fn variables_are_checked_at_resolve_time() {
        // Not checkable yet: the value of $T is only known when the step runs.
        let spec = MountSpec::parse("type=$T,target=/x").unwrap();
        let m = spec
            .resolve(&mut |w: &str| Ok(w.replace("$T", "cache")))
            .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        let e = spec
            .resolve(&mut |w: &str| Ok(w.replace("$T", "weird")))
            .unwrap_err();
        assert_eq!(e.message, "unsupported mount type \"weird\"");
        assert_eq!(
            MountSpec::parse("type=bind,from=builder,target=/x")
                .unwrap()
                .from
                .as_deref(),
            Some("builder")
        );
    }

    #[test]
    fn ram_sizes() {
        assert_eq!(ram_in_bytes("512"), Some(512));
        assert_eq!(ram_in_bytes("64k"), Some(64 << 10));
        assert_eq!(ram_in_bytes("10MiB"), Some(10 << 20));
        assert_eq!(ram_in_bytes("1 GB"), Some(1 << 30));
        assert_eq!(ram_in_bytes("1.5g"), Some(3 << 29));
        assert_eq!(ram_in_bytes("abc"), None);
        assert_eq!(ram_in_bytes("10x"), None);
        assert_eq!(ram_in_bytes(""), None);
    }
}
