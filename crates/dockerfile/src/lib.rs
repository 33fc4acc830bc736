//! kiln-dockerfile: the Dockerfile frontend. It owns the lexer/parser (a
//! BuildKit-compatible AST with line info), shell-word expansion, typed
//! instructions with checked flags, the stage graph and the build checks (`lint`). It knows
//! nothing about files, processes or images: input is text, output is a plan.

pub mod ast;
pub mod error;
pub mod instructions;
pub mod lint;
pub mod parser;
pub mod shell;
pub mod stages;

pub use ast::{Directive, Dockerfile, Heredoc, Node};
pub use error::{DockerfileError, Source};
pub use parser::parse;
