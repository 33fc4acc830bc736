//! The filesystem operations of steps: COPY/ADD/WORKDIR written into an upper
//! directory ([`copy`]), and the mounts a RUN's sandbox is given ([`run`]).

pub mod copy;
pub mod run;
