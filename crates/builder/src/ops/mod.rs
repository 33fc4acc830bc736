//! The filesystem operations of steps: COPY/ADD/WORKDIR written into an upper
//! directory ([`copy`]).

pub mod copy;
