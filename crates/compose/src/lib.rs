//! kiln-compose: the Compose application model. Finding the files (`compose.yaml`
//! and its override file, `-f`, `COMPOSE_FILE`), reading YAML with the line of
//! every value, `.env` files and `${VAR}` interpolation, merging several files
//! by the Compose specification's rules (`!reset`, `!override`), profiles, the
//! project name, every key of `build:`, and the resolved model as YAML. Errors
//! point at the file and line (`compose.yaml:12: services.api.build.args: …`).
//! Knows nothing of building or running images.

pub mod build;
pub mod dotenv;
pub mod error;
pub mod interpolate;
pub mod merge;
pub mod project;
pub mod yaml;

pub use build::{AdditionalContext, Build, BuildContext, BuildSecret, Dockerfile, Located};
pub use error::{ComposeError, Loc, SourceFile};
pub use project::{normalize_project_name, Options, Project, Service};
