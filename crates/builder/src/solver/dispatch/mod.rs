//! One dispatcher per kind of step: what an instruction does to a stage.
//! [`config`] holds the image-config instructions (shared with `kiln import
//! --change`) and ARG; [`run`], [`copy`] (COPY and ADD) and [`workdir`] make
//! filesystem steps through the cache.

pub(crate) mod config;
pub(crate) mod copy;
pub(crate) mod run;
pub(crate) mod workdir;
