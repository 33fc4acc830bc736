//! WORKDIR: the image config's working directory (the same as `kiln import
//! --change WORKDIR` sets, [`super::config`]) and, unless it is `/`, the
//! directory itself, made as a filesystem step.

use crate::cache::explain::InputsBuilder;
use crate::cache::steps::KeyBuilder;
use crate::ops::copy;
use crate::solver::state::StageState;
use crate::solver::step::StepDone;
use crate::solver::step::{apply_record, StepCtx};
use crate::solver::{BuildError, WorkdirError};
use kiln_dockerfile::instructions::Workdir;
use kiln_oci::digest::Digest;

pub(crate) fn workdir(
    ctx: &StepCtx<'_, '_>,
    state: &mut StageState,
    w: &Workdir,
) -> Result<(), BuildError> {
    let at = state.created;
    let wd = super::config::workdir(state.cc(), w);
    if wd != "/" {
        let (key, rec) = workdir_step(ctx, state, &wd)?;
        apply_record(state, key, rec, format!("WORKDIR {wd}"));
    } else {
        state.history(format!("WORKDIR {wd}"), false, at);
    }
    Ok(())
}

/// WORKDIR: creates the directory (and missing parents) owned by the current
/// USER, mode 0755, as BuildKit's `Mkdir(wd, 0755, WithParents, WithUser)`.
/// An existing directory gives an empty diff: an empty layer, as in BuildKit.
pub(crate) fn workdir_step(
    ctx: &StepCtx<'_, '_>,
    state: &StageState,
    wd: &str,
) -> Result<(Digest, StepDone), BuildError> {
    let sh = ctx.sh;
    let user = state.user();
    let key = {
        let mut k = KeyBuilder::new("workdir", &state.key);
        k.part(wd).part(&user);
        k.finish()
    };
    let inputs = {
        let mut b = InputsBuilder::new(&format!("WORKDIR {wd}"));
        b.add("user", &user);
        b.finish()
    };
    let rec = ctx.cached(key, inputs, |upper, _work| {
        let view = sh.view(&state.layers)?;
        let fail = |source: WorkdirError| BuildError::Workdir {
            path: wd.to_string(),
            source,
        };
        let (uid, gid) = if user.is_empty() {
            (0, 0)
        } else {
            let read = |p: &str| view.read_user_file(p).map_err(|e| fail(e.into()));
            let passwd = read("/etc/passwd")?;
            let group = read("/etc/group")?;
            let u = kiln_sandbox::user::resolve_user(&user, passwd.as_deref(), group.as_deref())
                .map_err(|e| fail(e.into()))?;
            (u.uid, u.gid)
        };
        copy::make_workdir(&view, upper, wd, (uid, gid))
            .map(|_| ())
            .map_err(|e| fail(e.into()))
    })?;
    Ok((key, rec))
}
