//! One dispatcher per kind of step: what an instruction does to a stage.

pub(crate) mod copy;
pub(crate) mod run;
