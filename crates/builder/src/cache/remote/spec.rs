//! `--cache-from` and `--cache-to` values, in BuildKit's spelling:
//! `type=registry,ref=REG/REPO:TAG[,mode=min|max][,max-age=7d][,max-entries=N]`
//! and `type=local,src=DIR` / `type=local,dest=DIR` (an OCI layout directory).

use std::path::PathBuf;

/// Where a cache is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLocation {
    /// A tag of a registry repository (`type=registry,ref=…`).
    Registry(String),
    /// An OCI layout directory (`type=local,src=…|dest=…`), the cache manifest
    /// named `tag` in its `index.json`.
    Local { dir: PathBuf, tag: String },
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Registry(r) => f.write_str(r),
            CacheLocation::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
        }
    }
}

/// What `--cache-to` exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// The steps the final image's layers came from (BuildKit's default).
    #[default]
    Min,
    /// Every step of every stage the build ran or found cached.
    Max,
}

/// One `--cache-to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheExport {
    pub location: CacheLocation,
    pub mode: CacheMode,
    /// Drop entries not used for longer than this many seconds.
    pub max_age: Option<i64>,
    /// Keep at most this many step records (the most recently used).
    pub max_entries: Option<usize>,
    /// A failed export is a warning, not a failed build.
    pub ignore_error: bool,
}

/// The `key=value` fields of a value; `flag` names the flag in errors.
fn fields<'a>(flag: &str, value: &'a str) -> Result<Vec<(&'a str, &'a str)>, String> {
    if value.trim().is_empty() {
        return Err(format!(
            "{flag}: empty value (expected type=registry,ref=REF or type=local,…)"
        ));
    }
    value
        .split(',')
        .map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("invalid {flag} {value:?}: {f:?} is not key=value"))
        })
        .collect()
}

fn bool_field(flag: &str, key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{flag}: {key}={v:?} is not true or false")),
    }
}

/// Parses `--cache-from` (`dest`/`src` of the wrong direction are refused).
pub fn parse_cache_from(value: &str) -> Result<CacheLocation, String> {
    let flag = "--cache-from";
    // `--cache-from REF` is docker's short form of type=registry,ref=REF.
    if !value.contains('=') && !value.is_empty() {
        return Ok(CacheLocation::Registry(value.to_string()));
    }
    parse(flag, value, false).map(|e| e.location)
}

/// Parses `--cache-to`.
pub fn parse_cache_to(value: &str) -> Result<CacheExport, String> {
    parse("--cache-to", value, true)
}

fn parse(flag: &str, value: &str, export: bool) -> Result<CacheExport, String> {
    let mut kind = None;
    let (mut reference, mut dir, mut tag) = (None, None, None);
    let mut mode = CacheMode::Min;
    let (mut max_age, mut max_entries, mut ignore_error) = (None, None, false);
    for (k, v) in fields(flag, value)? {
        match k {
            "type" => kind = Some(v),
            "ref" => reference = Some(v.to_string()),
            "src" if !export => dir = Some(PathBuf::from(v)),
            "dest" if export => dir = Some(PathBuf::from(v)),
            "src" | "dest" => {
                return Err(format!(
                    "{flag}: {k}= is for {}; use {}=",
                    if export { "--cache-from" } else { "--cache-to" },
                    if export { "dest" } else { "src" }
                ))
            }
            "tag" => tag = Some(v.to_string()),
            "mode" if export => {
                mode = match v {
                    "min" => CacheMode::Min,
                    "max" => CacheMode::Max,
                    _ => return Err(format!("{flag}: mode={v:?}: use min or max")),
                }
            }
            "max-age" if export => {
                max_age =
                    Some(parse_duration(v).map_err(|e| format!("{flag}: max-age={v:?}: {e}"))?)
            }
            "max-entries" if export => {
                max_entries =
                    Some(v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("{flag}: max-entries={v:?} is not a positive number")
                    })?)
            }
            "ignore-error" if export => ignore_error = bool_field(flag, k, v)?,
            // BuildKit's: kiln's cache is always one OCI image manifest with OCI media types.
            "image-manifest" | "oci-mediatypes" => {
                if !bool_field(flag, k, v)? {
                    return Err(format!(
                        "{flag}: {k}=false is not supported: kiln's cache is always an OCI image manifest"
                    ));
                }
            }
            _ => return Err(format!("{flag}: unknown key {k:?} in {value:?}")),
        }
    }
    let location = match kind {
        Some("registry") => {
            if dir.is_some() || tag.is_some() {
                return Err(format!(
                    "{flag}: type=registry takes ref=, not src=/dest=/tag="
                ));
            }
            let r = reference.ok_or_else(|| {
                format!("{flag}: type=registry needs ref=REGISTRY/REPOSITORY:TAG")
            })?;
            kiln_oci::registry::Reference::parse(&r)
                .map_err(|e| format!("{flag}: ref={r:?}: {e}"))?;
            CacheLocation::Registry(r)
        }
        Some("local") => {
            if reference.is_some() {
                return Err(format!(
                    "{flag}: type=local takes {}=DIR, not ref=",
                    if export { "dest" } else { "src" }
                ));
            }
            let dir = dir.ok_or_else(|| {
                format!(
                    "{flag}: type=local needs {}=DIR",
                    if export { "dest" } else { "src" }
                )
            })?;
            CacheLocation::Local {
                dir,
                tag: tag.unwrap_or_else(|| "latest".into()),
            }
        }
        Some(other) => {
            return Err(format!(
                "{flag}: type={other:?} is not supported (kiln has type=registry and type=local)"
            ))
        }
        None => {
            return Err(format!(
                "{flag}: type= is missing (type=registry or type=local)"
            ))
        }
    };
    Ok(CacheExport {
        location,
        mode,
        max_age,
        max_entries,
        ignore_error,
    })
}

/// `90s`, `30m`, `12h`, `7d`, `2w`, or several (`1d12h`); seconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let mut total: i64 = 0;
    let mut num = String::new();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(format!("unknown unit {c:?} (use s, m, h, d or w)")),
        };
        let n: i64 = num
            .parse()
            .map_err(|_| format!("a number must come before {c:?}"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
    }
    if !num.is_empty() {
        return Err("a unit (s, m, h, d or w) must follow the number".into());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_and_local_values() {
        assert_eq!(
            parse_cache_to("type=registry,ref=127.0.0.1:5000/app/cache:main,mode=max,max-age=7d,max-entries=50").unwrap(),
            CacheExport {
                location: CacheLocation::Registry("127.0.0.1:5000/app/cache:main".into()),
                mode: CacheMode::Max,
                max_age: Some(7 * 86_400),
                max_entries: Some(50),
                ignore_error: false,
            }
        );
        let e = parse_cache_to("type=registry,ref=r.example/c").unwrap();
        assert_eq!(e.mode, CacheMode::Min);
        assert_eq!(
            parse_cache_from("type=local,src=/ci/cache").unwrap(),
            CacheLocation::Local {
                dir: "/ci/cache".into(),
                tag: "latest".into()
            }
        );
        assert_eq!(
            parse_cache_to("type=local,dest=d,tag=b1").unwrap().location,
            CacheLocation::Local {
                dir: "d".into(),
                tag: "b1".into()
            }
        );
        assert_eq!(
            parse_cache_from("r.example/c:1").unwrap(),
            CacheLocation::Registry("r.example/c:1".into())
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (v, want) in [
            ("type=registry", "needs ref="),
            ("type=registry,ref=x,mode=all", "mode=\"all\""),
            ("type=registry,ref=x,max-age=7y", "unknown unit"),
            ("type=registry,ref=x,max-entries=0", "positive"),
            ("type=s3,ref=x", "not supported"),
            ("type=local,src=d", "use dest="),
            ("type=local", "needs dest=DIR"),
            ("ref=x", "type= is missing"),
            ("type=registry,ref=x,colour=red", "unknown key"),
            ("type=registry,ref=UPPER/x", "ref="),
            ("type=registry;ref=x", "not supported"),
            ("type=registry,ref", "not key=value"),
        ] {
            let err = parse_cache_to(v).unwrap_err();
            assert!(
                err.starts_with("--cache-to") || err.starts_with("invalid --cache-to"),
                "{v}: {err}"
            );
            assert!(err.contains(want), "{v}: {err}");
        }
        let err = parse_cache_from("type=registry,ref=x,mode=max").unwrap_err();
        assert!(
            err.contains("--cache-from") && err.contains("mode"),
            "{err}"
        );
        let err = parse_cache_from("type=local,dest=d").unwrap_err();
        assert!(err.contains("use src="), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("1d12h"), Ok(86_400 + 12 * 3600));
        assert_eq!(parse_duration("2w"), Ok(14 * 86_400));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
    }
}
