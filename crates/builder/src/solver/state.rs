//! A stage's state between steps: its layers, image config and environment.

use super::{BuildError, Shared};
use crate::snapshot::StageLayer;
use kiln_dockerfile::instructions::Origin;
use kiln_oci::digest::Digest;
use kiln_oci::image::{format_rfc3339, ContainerConfig, History, ImageConfig};
use std::collections::BTreeMap;

/// BuildKit's default PATH for Linux images that set none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A stage's state between steps.
#[derive(Clone, Debug)]
pub struct StageState {
    /// The filesystem, base layer first (a step's layer may still be being
    /// hashed: [`StageLayer::Pending`]).
    pub layers: Vec<StageLayer>,
    /// The image config so far (history included; rootfs filled in by
    /// [`StageState::image_config`]).
    pub config: ImageConfig,
    /// The environment steps see: the image's ENV plus the stage's ARG values,
    /// in order, later entries replacing earlier ones (BuildKit's LLB state env).
    pub env: Vec<(String, String)>,
    /// The key of the last filesystem step (or of the base).
    pub key: Digest,
    /// Unix time of the newest history entry.
    pub created: i64,
    /// CMD was set in this stage (ENTRYPOINT resets an inherited CMD only).
    pub cmd_set: bool,
    /// The ARG names declared so far, in order (BuildKit's `buildArgs`; a
    /// stage built on another continues its list). RUN history shows them.
    pub build_args: Vec<String>,
    /// How much variable expansion has added to this stage's words so far
    /// (a stage built on another continues its count); at most
    /// [`kiln_dockerfile::shell::MAX_STAGE_GROWTH`].
    pub expansion_growth: usize,
}

impl StageState {
    /// The image config with `rootfs.diff_ids` and `created` filled in;
    /// `None` while a layer is still being hashed.
    pub fn image_config(&self) -> Option<ImageConfig> {
        let diff_ids = self
            .layers
            .iter()
            .map(|l| l.done().map(|l| l.diff_id))
            .collect::<Option<Vec<_>>>()?;
        Some(self.config_with(diff_ids))
    }

    /// The size of the image config in bytes, known while layers are still
    /// being hashed: the diff_id of a layer a step makes is a sha256 digest,
    /// whose text has one length whatever its value.
    pub fn config_size(&self) -> u64 {
        let diff_ids = self
            .layers
            .iter()
            .map(|l| l.done().map_or_else(|| Digest::of(b""), |l| l.diff_id))
            .collect();
        self.config_with(diff_ids).to_bytes().len() as u64
    }

    fn config_with(&self, diff_ids: Vec<Digest>) -> ImageConfig {
        let mut c = self.config.clone();
        c.rootfs.kind = "layers".into();
        c.rootfs.diff_ids = diff_ids;
        c.created = Some(format_rfc3339(self.created));
        c
    }

    pub(crate) fn cc(&mut self) -> &mut ContainerConfig {
        self.config
            .config
            .get_or_insert_with(ContainerConfig::default)
    }

    pub fn get_env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets a variable of the environment steps see (ARG, ENV).
    pub(crate) fn set_state_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// ENV: the image config and the state.
    pub(crate) fn set_env(&mut self, key: &str, value: &str) {
        self.set_state_env(key, value);
        set_config_env(self.cc(), key, value);
    }

    /// BuildKit's `runCommandString`: `|N K=V …` for the N declared ARGs
    /// (their current value, empty when unset), then the command.
    pub fn run_command_string(&self, args: &[String]) -> String {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for k in &self.build_args {
            let v = self.get_env(k).unwrap_or_default().to_string();
            match pairs.iter_mut().find(|(pk, _)| pk == k) {
                Some(p) => p.1 = v,
                None => pairs.push((k.clone(), v)),
            }
        }
        let mut words: Vec<String> = Vec::new();
        if !pairs.is_empty() {
            words.push(format!("|{}", pairs.len()));
            words.extend(pairs.into_iter().map(|(k, v)| format!("{k}={v}")));
        }
        words.extend(args.iter().cloned());
        words.join(" ")
    }

    /// Counts `growth` more bytes of expansion towards
    /// [`kiln_dockerfile::shell::MAX_STAGE_GROWTH`]: an error at `origin`
    /// once they are over it.
    pub(crate) fn grow_expansion(
        &mut self,
        growth: usize,
        sh: &Shared<'_>,
        origin: &Origin,
    ) -> Result<(), BuildError> {
        use kiln_dockerfile::shell::MAX_STAGE_GROWTH;
        self.expansion_growth = self.expansion_growth.saturating_add(growth);
        if self.expansion_growth > MAX_STAGE_GROWTH {
            return Err(sh.located(
                origin,
                format!(
                    "variable expansion in this stage produced more than {} MiB",
                    MAX_STAGE_GROWTH >> 20
                ),
            ));
        }
        Ok(())
    }

    /// The expansion environment (ENV and ARG values).
    pub fn expansion_env(&self) -> BTreeMap<String, String> {
        self.env.iter().cloned().collect()
    }

    /// `KEY=value` list for a process.
    pub fn env_list(&self) -> Vec<String> {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    pub fn user(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_default()
    }

    pub fn workdir(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }

    pub fn shell(&self) -> Vec<String> {
        match &self.config.config {
            Some(cc) => shell_of(cc),
            None => shell_of(&ContainerConfig::default()),
        }
    }

    pub(crate) fn history(&mut self, created_by: String, layer: bool, created: i64) {
        self.created = self.created.max(created);
        self.config.history.push(History {
            created: Some(format_rfc3339(created)),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: !layer,
            ..History::default()
        });
    }
}

/// Sets `key=value` in the config's environment, replacing an earlier value.
pub(crate) fn set_config_env(cc: &mut ContainerConfig, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match cc
        .env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
    {
        Some(e) => *e = entry,
        None => cc.env.push(entry),
    }
}

/// The SHELL shell-form commands run with (default `/bin/sh -c`).
pub(crate) fn shell_of(cc: &ContainerConfig) -> Vec<String> {
    cc.shell
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
}
