//! The build context: loading it with `.dockerignore` rules ([`dockerignore`]),
//! Go `filepath.Match` glob matching ([`glob`]) and content hashing with a
//! metadata cache ([`hash`]).

pub mod context;
pub mod dockerignore;
pub mod glob;
pub mod hash;
