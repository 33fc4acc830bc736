//! Paths inside an image's filesystem (always `/`-separated text): Go's
//! `path.Clean`, joining against a working directory, and the relative names
//! archives and layers use. The one place kiln cleans such paths.

/// Go's `path.Clean`: `.` and empty components dropped, `..` removes the
/// component before it (never climbing above a leading `/`), `.` for an empty
/// result of a relative path.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    }
}

/// `path` taken from the directory `dir` (an absolute `path` stays as it is),
/// as an absolute, clean path: how WORKDIR and mount targets resolve.
pub fn resolve(dir: &str, path: &str) -> String {
    if path.starts_with('/') {
        clean(path)
    } else {
        clean(&format!("/{dir}/{path}"))
    }
}

/// The components of `path` taken from the root, cleaned (`..` never climbs
/// above it): `/a/../b/./c` → `["b", "c"]`.
pub fn rooted_components(path: &str) -> Vec<String> {
    resolve("/", path)
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// An archive or layer entry name made relative and clean (`./a//b/` →
/// `a/b`, `""` for the root), or `None` when a `..` would leave the root: no
/// image layer or archive may hold such a name.
pub fn clean_relative(path: &str) -> Option<String> {
    let c = clean(path.trim_start_matches('/'));
    if c == ".." || c.starts_with("../") {
        return None;
    }
    Some(if c == "." { String::new() } else { c })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_like_go() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("/", "/"),
            ("a/b/../c", "a/c"),
            ("a//b/./c/", "a/b/c"),
            ("/../a", "/a"),
            ("../../a", "../../a"),
            ("a/../..", ".."),
            ("/a/b/..", "/a"),
            ("abc", "abc"),
            ("abc/def/", "abc/def"),
            ("a//b", "a/b"),
            ("./a/./b/", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("a/..", "."),
            ("!foo/", "!foo"),
        ] {
            assert_eq!(clean(input), want, "{input:?}");
        }
    }

    #[test]
    fn resolve_against_a_directory() {
        assert_eq!(resolve("/app", "src"), "/app/src");
        assert_eq!(resolve("/app/", "../x/./y"), "/x/y");
        assert_eq!(resolve("/app", "/etc/../opt"), "/opt");
        assert_eq!(resolve("/", "../../x"), "/x");
        assert_eq!(resolve("rel", "x"), "/rel/x");
        assert_eq!(resolve("/a", ""), "/a");
        assert_eq!(rooted_components("/a/../b/./c/"), ["b", "c"]);
        assert_eq!(rooted_components("../../x"), ["x"]);
        assert!(rooted_components("/").is_empty());
    }

    #[test]
    fn relative_names_never_leave_the_root() {
        assert_eq!(clean_relative("./a//b/").as_deref(), Some("a/b"));
        assert_eq!(clean_relative("/etc/passwd").as_deref(), Some("etc/passwd"));
        assert_eq!(clean_relative("").as_deref(), Some(""));
        assert_eq!(clean_relative(".").as_deref(), Some(""));
        assert_eq!(clean_relative("a/../b").as_deref(), Some("b"));
        for escaping in ["..", "../a", "a/../..", "/..", "./..", "a/b/../../../c"] {
            assert_eq!(clean_relative(escaping), None, "{escaping:?}");
        }
    }
}
