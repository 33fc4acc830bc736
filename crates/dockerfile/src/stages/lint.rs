//! kiln's own check on the planned stages (BuildKit's build checks are in
//! `crate::lint`, which the planner runs over the stages the build needs).

use super::{Input, Stage, Warning};

/// kiln's own check: `COPY --from=buidler` / `--mount=from=buidler` where the
/// word is no stage but close to a stage name. BuildKit would try to pull an
/// image of that name; the build would fail later with a registry error.
pub(super) fn unknown_stage_references(stages: &[Stage], out: &mut Vec<Warning>) {
    let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    for st in stages.iter().filter(|s| s.needed) {
        for step in &st.steps {
            let inputs = step
                .copy_from
                .iter()
                .chain(step.mount_from.iter().flatten());
            for input in inputs {
                let Input::Image(word) = input else { continue };
                if word.contains([':', '/', '@']) {
                    continue;
                }
                if let Some(stage) = crate::instructions::suggest(word, &names) {
                    out.push(Warning {
                        line: step.instruction.origin.start_line,
                        rule: "UnknownStageReference",
                        message: format!("{word:?} is not a stage of this Dockerfile and will be pulled as an image (did you mean {stage:?}?)"),
                    });
                }
            }
        }
    }
}
