//! Why a step missed the cache (`kiln build --explain-cache`).
//!
//! A step key is one digest of everything that decides the step's result, so
//! a miss alone says nothing about what changed. Beside the key, each record
//! keeps the step's *inputs* in a compact form ([`StepInputs`]): a name per
//! input and a short digest of its value — the instruction as written, each
//! context file a COPY reads (`file:PATH`), each build arg in scope
//! (`arg:NAME`: the name and a digest, never the value), each other variable
//! of a RUN's environment (`env:NAME`), the base image's manifest digest
//! (`base`, first step of a stage only), what a `COPY --from` reads
//! (`from:STAGE`), and the user, working directory, mounts, network, platform
//! and other options. A step that misses is explained ([`explain`]) by, in
//! this order: `--no-cache`/`--no-cache-filter`; an entry for its very key
//! whose layer is gone; the step before it having missed (a cascade, naming
//! the step that missed first); else the inputs that differ from the closest
//! entry recorded after the same parent step (for a stage's first step on a
//! changed base image: the closest entry of a first step with the same
//! instruction); else no entry at all.
//!
//! Input names and the way values are digested are version
//! [`INPUTS_FORMAT`]; the registry cache names it (`inputsFormat`) so a later
//! kiln that changes them can ignore older inputs instead of misreading them.

use kiln_oci::digest::Digest;
use std::collections::BTreeMap;

/// The version of the input names and value digests.
pub const INPUTS_FORMAT: u32 = 1;

/// Input name → short digest of its value (for `base`: the digest itself).
pub type StepInputs = BTreeMap<String, String>;

/// More context files than this in one COPY are recorded per directory.
const MAX_FILES: usize = 256;

/// The first 16 hex digits of the sha256 of `value`: enough to tell values
/// apart, short enough to keep a record small.
pub fn short(value: &str) -> String {
    Digest::of(value.as_bytes()).hex()[..16].to_string()
}

/// Collects a step's inputs.
#[derive(Default)]
pub struct InputsBuilder(StepInputs);

impl InputsBuilder {
    pub fn new(instruction: &str) -> InputsBuilder {
        let mut b = InputsBuilder::default();
        b.add("instruction", instruction);
        b
    }

    /// Records `name` with a short digest of `value`.
    pub fn add(&mut self, name: impl Into<String>, value: &str) -> &mut Self {
        self.0.insert(name.into(), short(value));
        self
    }

    /// Build args in scope (`names`, with their values from `value`), those
    /// the instruction text names only when `only_named` is set (a COPY's key
    /// sees an arg only through its expansion).
    pub fn args<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a String>,
        value: impl Fn(&str) -> Option<String>,
        only_named: Option<&str>,
    ) -> &mut Self {
        for n in names {
            if let Some(text) = only_named {
                if !(text.contains(&format!("${n}")) || text.contains(&format!("${{{n}"))) {
                    continue;
                }
            }
            let v = value(n).unwrap_or_default();
            self.add(format!("arg:{n}"), &v);
        }
        self
    }

    /// The context files a COPY reads; more than [`MAX_FILES`] are grouped
    /// by their first path component (`dir:NAME`).
    pub fn files(&mut self, files: &[(String, [u8; 32])]) -> &mut Self {
        let hex = |d: &[u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        if files.len() <= MAX_FILES {
            for (p, d) in files {
                self.add(format!("file:{p}"), &hex(d));
            }
            return self;
        }
        let mut dirs: BTreeMap<&str, String> = BTreeMap::new();
        for (p, d) in files {
            let top = p.split('/').next().unwrap_or(p);
            let acc = dirs.entry(top).or_default();
            acc.push_str(p);
            acc.push_str(&hex(d));
        }
        for (top, acc) in dirs {
            self.add(format!("dir:{top}"), &acc);
        }
        self
    }

    pub fn finish(self) -> StepInputs {
        self.0
    }
}

/// What a build knows when it explains one miss.
pub struct MissContext<'a> {
    /// `Some("--no-cache")` or `Some("--no-cache-filter STAGE")` when the
    /// cache was skipped on purpose.
    pub no_cache: Option<String>,
    /// An entry exists for this very key but cannot be used (layer gone).
    pub entry_without_layer: bool,
    /// The first step that missed in the chain before this one, if the step
    /// before it (its parent) missed in this build.
    pub cascade_from: Option<&'a str>,
    /// Inputs of entries recorded after the same parent step.
    pub same_parent: Vec<StepInputs>,
    /// For a stage's first step on an image: inputs of entries of first
    /// steps (they have `base`) with the same instruction.
    pub other_bases: Vec<StepInputs>,
}

/// One line saying why a step with `inputs` missed.
pub fn explain(inputs: &StepInputs, cx: &MissContext<'_>) -> String {
    if let Some(flag) = &cx.no_cache {
        return format!("{flag}: the cache is not used for this step");
    }
    if cx.entry_without_layer {
        return "its key has a cache entry, but the entry's layer is gone \
                (garbage-collected, or missing from the cache)"
            .into();
    }
    if let Some(first) = cx.cascade_from {
        return format!("the step before it missed (the first miss: {first})");
    }
    let (pool, what) = if !cx.same_parent.is_empty() {
        (&cx.same_parent, "the closest entry after the same step")
    } else if inputs.contains_key("base") && !cx.other_bases.is_empty() {
        (
            &cx.other_bases,
            "the closest entry of this stage's first step",
        )
    } else {
        return "no cache entry for its key at all".into();
    };
    let best = pool
        .iter()
        .min_by_key(|theirs| differences(inputs, theirs).len())
        .expect("a non-empty pool");
    if best.is_empty() {
        return format!("changed against {what}, which records no inputs (an older kiln wrote it)");
    }
    let diff = differences(inputs, best);
    if diff.is_empty() {
        return format!(
            "changed against {what}, though every input it records is the same \
             (an input not recorded differs)"
        );
    }
    let shown: Vec<String> = diff.iter().take(5).cloned().collect();
    let more = diff.len().saturating_sub(shown.len());
    let mut line = format!("changed against {what}: {}", shown.join("; "));
    if more > 0 {
        line.push_str(&format!("; and {more} more"));
    }
    line
}

/// The inputs that differ, each said in words.
pub fn differences(mine: &StepInputs, theirs: &StepInputs) -> Vec<String> {
    let mut names: Vec<&String> = mine.keys().chain(theirs.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|n| {
            let (a, b) = (mine.get(n), theirs.get(n));
            (a != b).then(|| describe(n, a.map(String::as_str), b.map(String::as_str)))
        })
        .collect()
}

fn describe(name: &str, mine: Option<&str>, theirs: Option<&str>) -> String {
    let change = match (mine, theirs) {
        (Some(_), None) => "added",
        (None, Some(_)) => "removed",
        _ => "changed",
    };
    if let Some(p) = name.strip_prefix("file:") {
        return format!("context file {p} {change}");
    }
    if let Some(p) = name.strip_prefix("dir:") {
        return format!("context files under {p} {change}");
    }
    if let Some(a) = name.strip_prefix("arg:") {
        return format!("build arg {a} {change}");
    }
    if let Some(e) = name.strip_prefix("env:") {
        return format!("environment variable {e} {change}");
    }
    if let Some(s) = name.strip_prefix("from:") {
        return format!("the files it copies from {s} {change}");
    }
    match name {
        "base" => {
            let short = |d: Option<&str>| {
                d.map(|d| d.chars().take(19).collect::<String>())
                    .unwrap_or_else(|| "none".into())
            };
            format!(
                "base image digest changed ({} → {})",
                short(theirs),
                short(mine)
            )
        }
        "instruction" => "the instruction text changed".into(),
        other => format!("its {other} {change}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(pairs: &[(&str, &str)]) -> StepInputs {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), short(v)))
            .collect()
    }

    fn cx() -> MissContext<'static> {
        MissContext {
            no_cache: None,
            entry_without_layer: false,
            cascade_from: None,
            same_parent: Vec::new(),
            other_bases: Vec::new(),
        }
    }

    #[test]
    fn each_reason_in_its_order() {
        let mine = inputs(&[("instruction", "COPY src/ src/"), ("file:src/a.ts", "1")]);
        assert_eq!(explain(&mine, &cx()), "no cache entry for its key at all");
        let mut c = cx();
        c.same_parent = vec![
            inputs(&[("instruction", "COPY src/ src/"), ("file:src/a.ts", "2")]),
            inputs(&[("instruction", "COPY lib/ src/"), ("file:lib/a.ts", "2")]),
        ];
        assert_eq!(
            explain(&mine, &c),
            "changed against the closest entry after the same step: context file src/a.ts changed"
        );
        c.cascade_from = Some("[b 2/3] RUN x");
        assert!(explain(&mine, &c).contains("first miss: [b 2/3] RUN x"));
        c.entry_without_layer = true;
        assert!(explain(&mine, &c).contains("layer is gone"));
        c.no_cache = Some("--no-cache".into());
        assert!(explain(&mine, &c).starts_with("--no-cache"));
    }

    #[test]
    fn build_args_by_name_and_the_base_by_digest() {
        let mut b = InputsBuilder::new("RUN make");
        b.args([&"MODE".to_string()], |_| Some("secret-ish".into()), None);
        let mut mine = b.finish();
        mine.insert("base".into(), "sha256:aaaaaaaaaaaaaaaaaaaaaaaa".into());
        assert!(!mine.values().any(|v| v.contains("secret-ish")));
        let mut theirs = mine.clone();
        theirs.insert("arg:MODE".into(), short("other"));
        theirs.insert("base".into(), "sha256:bbbbbbbbbbbbbbbbbbbbbbbb".into());
        let d = differences(&mine, &theirs);
        assert_eq!(d.len(), 2, "{d:?}");
        // In input-name order: `arg:MODE`, then `base`.
        assert_eq!(d[0], "build arg MODE changed");
        assert_eq!(
            d[1],
            "base image digest changed (sha256:bbbbbbbbbbbb → sha256:aaaaaaaaaaaa)"
        );
        let mut c = cx();
        c.other_bases = vec![theirs];
        assert!(explain(&mine, &c).contains("this stage's first step"));
    }

    #[test]
    fn copy_sees_only_the_args_its_text_names() {
        let mut b = InputsBuilder::new("COPY $DIR/ .");
        let names = ["DIR".to_string(), "OTHER".to_string()];
        b.args(names.iter(), |_| Some("x".into()), Some("COPY $DIR/ ."));
        let i = b.finish();
        assert!(i.contains_key("arg:DIR") && !i.contains_key("arg:OTHER"));
    }
}
