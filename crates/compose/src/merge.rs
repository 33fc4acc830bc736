//! Merging Compose files (`13-merge.md`, with compose-go's special rules):
//! mappings merge key by key, sequences append, scalars are replaced; `command`,
//! `entrypoint` and `healthcheck.test` are replaced whole; `environment`,
//! `labels`, `build.args` and the like merge as `KEY=value` lists whichever form
//! each file uses; `build` as a string is `{context: …}`; `!reset` removes what
//! earlier files set and `!override` replaces it. After each merge, lists whose
//! entries are unique by a key (`ports`, `volumes` by target, `environment` by
//! name, …) keep one entry per key, the later one.

use crate::error::ComposeError;
use crate::yaml::{Key, Node, Tag, Value};

/// A path pattern: `*` matches any one key.
type Pattern = &'static str;

/// Rules that replace the default merge at a path.
#[derive(Clone, Copy, PartialEq)]
enum Rule {
    /// The later value replaces the earlier one.
    Replace,
    /// Both as `KEY=value` lists, appended.
    ToSequence,
    /// Both as `KEY=value` lists, appended, entries already there skipped.
    ExtraHosts,
    /// A string is `{context: string}`; then merged as mappings.
    Build,
    /// A list of names is a mapping of name → defaults; then merged as mappings.
    DependsOn,
    /// A list of names is a mapping of name → null; then merged as mappings.
    NameList,
}

const RULES: &[(Pattern, Rule)] = &[
    ("networks.*.labels", Rule::ToSequence),
    ("volumes.*.labels", Rule::ToSequence),
    ("services.*.annotations", Rule::ToSequence),
    ("services.*.build", Rule::Build),
    ("services.*.build.args", Rule::ToSequence),
    ("services.*.build.additional_contexts", Rule::ToSequence),
    ("services.*.build.extra_hosts", Rule::ExtraHosts),
    ("services.*.build.labels", Rule::ToSequence),
    ("services.*.command", Rule::Replace),
    ("services.*.depends_on", Rule::DependsOn),
    ("services.*.deploy.labels", Rule::ToSequence),
    ("services.*.dns", Rule::ToSequence),
    ("services.*.dns_opt", Rule::ToSequence),
    ("services.*.dns_search", Rule::ToSequence),
    ("services.*.entrypoint", Rule::Replace),
    ("services.*.env_file", Rule::ToSequence),
    ("services.*.label_file", Rule::ToSequence),
    ("services.*.environment", Rule::ToSequence),
    ("services.*.extra_hosts", Rule::ExtraHosts),
    ("services.*.healthcheck.test", Rule::Replace),
    ("services.*.labels", Rule::ToSequence),
    ("services.*.volumes.*.volume.labels", Rule::ToSequence),
    ("services.*.models", Rule::NameList),
    ("services.*.networks", Rule::NameList),
    ("services.*.sysctls", Rule::ToSequence),
    ("services.*.tmpfs", Rule::ToSequence),
];

/// How entries of a list are told apart, for [`enforce_unique`].
#[derive(Clone, Copy)]
enum Unique {
    /// `KEY=value` (or `KEY`) by KEY.
    KeyValue,
    /// A volume or device: its target (long form `target:`, short form the
    /// second `:` field, else the only one).
    Target,
    /// A secret or config: `target:`, else `<default dir>/<source>`.
    Mount(&'static str),
    /// A port: its whole short form, or `host_ip:published:target/protocol`.
    Port,
    /// An env file: its path.
    EnvFile,
    /// The value as text.
    Value,
}

const UNIQUE: &[(Pattern, Unique)] = &[
    ("networks.*.labels", Unique::KeyValue),
    ("networks.*.ipam.options", Unique::KeyValue),
    ("services.*.annotations", Unique::KeyValue),
    ("services.*.build.args", Unique::KeyValue),
    ("services.*.build.additional_contexts", Unique::KeyValue),
    ("services.*.build.tags", Unique::KeyValue),
    ("services.*.build.labels", Unique::KeyValue),
    ("services.*.cap_add", Unique::KeyValue),
    ("services.*.cap_drop", Unique::KeyValue),
    ("services.*.configs", Unique::Mount("")),
    ("services.*.deploy.labels", Unique::KeyValue),
    ("services.*.dns", Unique::KeyValue),
    ("services.*.dns_opt", Unique::KeyValue),
    ("services.*.dns_search", Unique::KeyValue),
    ("services.*.environment", Unique::KeyValue),
    ("services.*.env_file", Unique::EnvFile),
    ("services.*.expose", Unique::Value),
    ("services.*.labels", Unique::KeyValue),
    ("services.*.links", Unique::KeyValue),
    ("services.*.networks.*.aliases", Unique::KeyValue),
    ("services.*.networks.*.link_local_ips", Unique::KeyValue),
    ("services.*.ports", Unique::Port),
    ("services.*.profiles", Unique::KeyValue),
    ("services.*.secrets", Unique::Mount("/run/secrets")),
    ("services.*.sysctls", Unique::KeyValue),
    ("services.*.tmpfs", Unique::KeyValue),
    ("services.*.volumes", Unique::Target),
    ("services.*.devices", Unique::Target),
];

fn matches(path: &[String], pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    parts.len() == path.len() && parts.iter().zip(path).all(|(p, k)| *p == "*" || p == k)
}

fn dotted(path: &[String]) -> String {
    path.join(".")
}

/// Merges `over` (a later file) into `base`.
pub fn merge(base: &mut Node, over: Node) -> Result<(), ComposeError> {
    let mut path = Vec::new();
    merge_at(base, over, &mut path)?;
    enforce_unique(base, &mut path)
}

/// A file's tree with `!reset` values removed, as it is when no earlier file
/// set anything (the first file).
pub fn first(node: Node) -> Result<Node, ComposeError> {
    let mut base = Node::map().at(node.at.clone());
    merge(&mut base, node)?;
    Ok(base)
}

fn merge_at(base: &mut Node, over: Node, path: &mut Vec<String>) -> Result<(), ComposeError> {
    if over.tag == Tag::Override {
        *base = strip_tags(over);
        return Ok(());
    }
    let rule = RULES
        .iter()
        .find(|(p, _)| matches(path, p))
        .map(|(_, r)| *r);
    match rule {
        Some(Rule::Replace) => {
            *base = strip_tags(over);
            return Ok(());
        }
        Some(Rule::ToSequence) => {
            let mut items = to_sequence(base);
            items.extend(to_sequence(&over));
            *base = Node::new(Value::Seq(items)).at(over.at.clone().or(base.at.clone()));
            return Ok(());
        }
        Some(Rule::ExtraHosts) => {
            let mut items = to_sequence(base);
            for i in to_sequence(&over) {
                if !items.contains(&i) {
                    items.push(i);
                }
            }
            *base = Node::new(Value::Seq(items)).at(over.at.clone().or(base.at.clone()));
            return Ok(());
        }
        Some(Rule::Build) => {
            let over = build_mapping(over);
            *base = build_mapping(std::mem::replace(base, Node::map()));
            return merge_mappings(base, over, path);
        }
        Some(Rule::DependsOn) | Some(Rule::NameList) => {
            let defaults = rule == Some(Rule::DependsOn);
            let over = names_to_mapping(over, defaults);
            *base = names_to_mapping(std::mem::replace(base, Node::map()), defaults);
            return merge_mappings(base, over, path);
        }
        None => {}
    }
    if over.is_null() && !base.is_null() {
        return Ok(());
    }
    match (&mut base.value, over.value) {
        (Value::Map(_), Value::Map(o)) => {
            let over = Node {
                value: Value::Map(o),
                at: over.at,
                tag: over.tag,
            };
            merge_mappings(base, over, path)
        }
        (Value::Seq(items), Value::Seq(more)) => {
            items.extend(
                more.into_iter()
                    .filter(|n| n.tag != Tag::Reset)
                    .map(strip_tags),
            );
            Ok(())
        }
        (Value::Map(_) | Value::Seq(_), other) => {
            let over = Node {
                value: other,
                at: over.at,
                tag: over.tag,
            };
            Err(ComposeError::at(
                over.at.as_ref(),
                &dotted(path),
                format!("cannot override {} with {}", base.kind(), over.kind()),
            ))
        }
        (_, other) => {
            *base = strip_tags(Node {
                value: other,
                at: over.at,
                tag: over.tag,
            });
            Ok(())
        }
    }
}

fn merge_mappings(base: &mut Node, over: Node, path: &mut Vec<String>) -> Result<(), ComposeError> {
    let Value::Map(entries) = over.value else {
        return Ok(());
    };
    if !matches!(base.value, Value::Map(_)) {
        return Err(ComposeError::at(
            over.at.as_ref(),
            &dotted(path),
            format!("cannot override {} with a mapping", base.kind()),
        ));
    }
    for (k, v) in entries {
        if v.tag == Tag::Reset {
            base.remove(&k.name);
            continue;
        }
        match base.get_mut(&k.name) {
            Some(existing) => {
                path.push(k.name.clone());
                let r = merge_at(existing, v, path);
                path.pop();
                r?;
            }
            None => {
                // Merged into nothing: the value as it is, with its own
                // special forms (a `build:` string stays one until normalised).
                path.push(k.name.clone());
                let mut fresh = match &v.value {
                    Value::Map(_) => Node::map().at(v.at.clone()),
                    _ => Node::new(Value::Null),
                };
                let r = if matches!(v.value, Value::Map(_)) {
                    merge_at(&mut fresh, v, path)
                } else {
                    fresh = strip_tags(without_resets(v));
                    Ok(())
                };
                path.pop();
                r?;
                if let Value::Map(m) = &mut base.value {
                    m.push((k, fresh));
                }
            }
        }
    }
    Ok(())
}

/// Removes `!reset` entries below `node` (they reset nothing when nothing
/// was set before).
fn without_resets(mut node: Node) -> Node {
    match &mut node.value {
        Value::Seq(items) => {
            let kept: Vec<Node> = std::mem::take(items)
                .into_iter()
                .filter(|n| n.tag != Tag::Reset)
                .map(without_resets)
                .collect();
            *items = kept;
        }
        Value::Map(entries) => {
            let kept: Vec<(Key, Node)> = std::mem::take(entries)
                .into_iter()
                .filter(|(_, n)| n.tag != Tag::Reset)
                .map(|(k, n)| (k, without_resets(n)))
                .collect();
            *entries = kept;
        }
        _ => {}
    }
    node
}

/// Drops merge tags (they apply once, at the merge that meets them).
fn strip_tags(mut node: Node) -> Node {
    node.tag = Tag::None;
    match &mut node.value {
        Value::Seq(items) => {
            for i in items.iter_mut() {
                *i = strip_tags(std::mem::replace(i, Node::new(Value::Null)));
            }
        }
        Value::Map(entries) => {
            for (_, v) in entries.iter_mut() {
                *v = strip_tags(std::mem::replace(v, Node::new(Value::Null)));
            }
        }
        _ => {}
    }
    node
}

/// A mapping or list as a `KEY=value` list (a mapping's entries sorted by
/// key, `KEY` alone for a null value, one entry per item of a list value).
pub fn to_sequence(node: &Node) -> Vec<Node> {
    match &node.value {
        Value::Seq(items) => items.iter().cloned().map(strip_tags).collect(),
        Value::Str(_) => vec![strip_tags(node.clone())],
        Value::Map(entries) => {
            let mut out: Vec<Node> = Vec::new();
            for (k, v) in entries {
                match &v.value {
                    Value::Null => out.push(Node::str(k.name.clone()).at(k.at.clone())),
                    Value::Seq(items) => {
                        for i in items {
                            out.push(
                                Node::str(format!(
                                    "{}={}",
                                    k.name,
                                    i.scalar_text().unwrap_or_default()
                                ))
                                .at(i.at.clone()),
                            )
                        }
                    }
                    _ => out.push(
                        Node::str(format!(
                            "{}={}",
                            k.name,
                            v.scalar_text().unwrap_or_default()
                        ))
                        .at(v.at.clone()),
                    ),
                }
            }
            out.sort_by_key(Node::scalar_text);
            out
        }
        _ => Vec::new(),
    }
}

fn build_mapping(node: Node) -> Node {
    match node.value {
        Value::Str(_) => {
            let mut m = Node::map().at(node.at.clone());
            m.set("context", node);
            m
        }
        _ => node,
    }
}

fn names_to_mapping(node: Node, depends_on_defaults: bool) -> Node {
    match node.value {
        Value::Seq(items) => {
            let mut m = Node::map().at(node.at.clone());
            for i in items {
                let name = i.scalar_text().unwrap_or_default();
                let value = if depends_on_defaults {
                    let mut d = Node::map();
                    d.set("condition", Node::str("service_started"));
                    d.set("required", Node::new(Value::Bool(true)));
                    d
                } else {
                    Node::new(Value::Null)
                };
                if let Value::Map(entries) = &mut m.value {
                    entries.push((Key { name, at: i.at }, value));
                }
            }
            m
        }
        _ => node,
    }
}

/// Keeps one entry per unique key in the lists that have one (the later entry,
/// at the position of the first).
pub fn enforce_unique(node: &mut Node, path: &mut Vec<String>) -> Result<(), ComposeError> {
    match &mut node.value {
        Value::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                path.push(k.name.clone());
                let r = enforce_unique(v, path);
                path.pop();
                r?;
            }
        }
        Value::Seq(items) => {
            let Some(kind) = UNIQUE
                .iter()
                .find(|(p, _)| matches(path, p))
                .map(|(_, u)| *u)
            else {
                return Ok(());
            };
            let mut kept: Vec<(String, Node)> = Vec::new();
            for item in std::mem::take(items) {
                let key = unique_key(&item, kind).ok_or_else(|| {
                    ComposeError::at(
                        item.at.as_ref(),
                        &dotted(path),
                        format!("unexpected {} in this list", item.kind()),
                    )
                })?;
                match kept.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = item,
                    None => kept.push((key, item)),
                }
            }
            *items = kept.into_iter().map(|(_, n)| n).collect();
        }
        _ => {}
    }
    Ok(())
}

fn unique_key(item: &Node, kind: Unique) -> Option<String> {
    let text = item.scalar_text();
    match kind {
        Unique::KeyValue => {
            let t = text?;
            Some(t.split_once('=').map_or(t.clone(), |(k, _)| k.to_string()))
        }
        Unique::Value => text,
        Unique::Target => match text {
            Some(t) => {
                let parts: Vec<&str> = t.split(':').collect();
                Some(parts.get(1).unwrap_or(&parts[0]).to_string())
            }
            None => item.get("target")?.scalar_text(),
        },
        Unique::Mount(dir) => match text {
            Some(t) => Some(format!("{dir}/{t}")),
            None => match item.get("target").and_then(Node::scalar_text) {
                Some(t) => Some(t),
                None => Some(format!(
                    "{dir}/{}",
                    item.get("source")?.scalar_text().unwrap_or_default()
                )),
            },
        },
        Unique::Port => match text {
            Some(t) => Some(t),
            None => {
                let field = |k: &str, d: &str| {
                    item.get(k)
                        .and_then(Node::scalar_text)
                        .unwrap_or_else(|| d.to_string())
                };
                Some(format!(
                    "{}:{}:{}/{}",
                    field("host_ip", "0.0.0.0"),
                    field("published", ""),
                    field("target", ""),
                    field("protocol", "tcp")
                ))
            }
        },
        Unique::EnvFile => match text {
            Some(t) => Some(t),
            None => item.get("path")?.scalar_text(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SourceFile;
    use std::sync::Arc;

    fn yaml(text: &str) -> Node {
        let f = Arc::new(SourceFile::new("f.yaml", "/p/f.yaml", text));
        crate::yaml::parse(&f).unwrap().remove(0)
    }

    fn merged(files: &[&str]) -> Node {
        let mut base = first(yaml(files[0])).unwrap();
        for f in &files[1..] {
            merge(&mut base, yaml(f)).unwrap();
        }
        base
    }

    fn texts(n: &Node) -> Vec<String> {
        n.as_seq()
            .unwrap()
            .iter()
            .map(|i| i.scalar_text().unwrap())
            .collect()
    }

    #[test]
    fn mappings_merge_sequences_append_scalars_replace() {
        let m = merged(&[
            "services:\n  foo:\n    image: a\n    dns: [1.1.1.1]\n    cap_add: [X]\n    x-k: 1\n",
            "services:\n  foo:\n    image: b\n    dns: [8.8.8.8]\n    cap_add: [X, Y]\n  bar:\n    image: c\n",
        ]);
        let foo = m.get("services").unwrap().get("foo").unwrap();
        assert_eq!(foo.get("image").unwrap().scalar_text().unwrap(), "b");
        assert_eq!(texts(foo.get("dns").unwrap()), ["1.1.1.1", "8.8.8.8"]);
        assert_eq!(texts(foo.get("cap_add").unwrap()), ["X", "Y"]);
        assert!(foo.get("x-k").is_some());
        assert!(m.get("services").unwrap().get("bar").is_some());
    }

    #[test]
    fn commands_are_replaced_and_key_value_lists_merge_by_key() {
        let m = merged(&[
            "services:\n  foo:\n    command: [echo, foo]\n    environment:\n      A: 1\n      B: 2\n    build:\n      context: .\n      args: [X=1, Y=2]\n",
            "services:\n  foo:\n    command: [echo, bar]\n    environment: [B=3, C=4]\n    build:\n      args:\n        Y: 5\n",
        ]);
        let foo = m.get("services").unwrap().get("foo").unwrap();
        assert_eq!(texts(foo.get("command").unwrap()), ["echo", "bar"]);
        assert_eq!(
            texts(foo.get("environment").unwrap()),
            ["A=1", "B=3", "C=4"]
        );
        let build = foo.get("build").unwrap();
        assert_eq!(build.get("context").unwrap().scalar_text().unwrap(), ".");
        assert_eq!(texts(build.get("args").unwrap()), ["X=1", "Y=5"]);
    }

    #[test]
    fn build_string_merges_with_build_mapping() {
        let m = merged(&[
            "services:\n  foo:\n    build: ./dir\n",
            "services:\n  foo:\n    build:\n      target: prod\n",
        ]);
        let b = m
            .get("services")
            .unwrap()
            .get("foo")
            .unwrap()
            .get("build")
            .unwrap();
        assert_eq!(b.get("context").unwrap().scalar_text().unwrap(), "./dir");
        assert_eq!(b.get("target").unwrap().scalar_text().unwrap(), "prod");
    }

    #[test]
    fn unique_resources_keep_the_later_entry() {
        let m = merged(&[
            "services:\n  foo:\n    volumes: ['foo:/work', 'data:/data']\n    ports: ['8080:80']\n    secrets: [s1]\n",
            "services:\n  foo:\n    volumes: ['bar:/work']\n    ports: ['8080:80', '9090:90']\n    secrets: [{source: s2, target: /run/secrets/s1}]\n",
        ]);
        let foo = m.get("services").unwrap().get("foo").unwrap();
        assert_eq!(
            texts(foo.get("volumes").unwrap()),
            ["bar:/work", "data:/data"]
        );
        assert_eq!(texts(foo.get("ports").unwrap()), ["8080:80", "9090:90"]);
        let secrets = foo.get("secrets").unwrap().as_seq().unwrap();
        assert_eq!(secrets.len(), 1);
        assert_eq!(
            secrets[0].get("source").unwrap().scalar_text().unwrap(),
            "s2"
        );
    }

    #[test]
    fn reset_and_override_tags() {
        let m = merged(&[
            "services:\n  app:\n    image: myapp\n    ports: ['8080:80']\n    environment:\n      FOO: BAR\n    dns: [1.1.1.1]\n",
            "services:\n  app:\n    ports: !reset []\n    environment: !reset null\n    dns: !override [9.9.9.9]\n    labels: !reset {}\n",
        ]);
        let app = m.get("services").unwrap().get("app").unwrap();
        assert!(app.get("ports").is_none());
        assert!(app.get("environment").is_none());
        assert!(app.get("labels").is_none());
        assert_eq!(texts(app.get("dns").unwrap()), ["9.9.9.9"]);
        assert_eq!(app.get("dns").unwrap().tag, Tag::None);
    }

    #[test]
    fn depends_on_and_networks_lists_become_mappings() {
        let m = merged(&[
            "services:\n  a:\n    depends_on: [db]\n    networks: [front]\n",
            "services:\n  a:\n    depends_on:\n      cache:\n        condition: service_healthy\n    networks:\n      back: {}\n",
        ]);
        let a = m.get("services").unwrap().get("a").unwrap();
        let d = a.get("depends_on").unwrap();
        assert_eq!(
            d.get("db")
                .unwrap()
                .get("condition")
                .unwrap()
                .scalar_text()
                .unwrap(),
            "service_started"
        );
        assert!(d.get("cache").is_some());
        let n = a.get("networks").unwrap();
        assert!(n.get("front").unwrap().is_null());
        assert!(n.get("back").is_some());
    }

    #[test]
    fn a_type_clash_is_located() {
        let mut base = first(yaml("services:\n  a:\n    cap_add: [X]\n")).unwrap();
        let e = merge(&mut base, yaml("services:\n  a:\n    cap_add: X\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.yaml:3: services.a.cap_add: cannot override a list with a string"
        );
    }
}
