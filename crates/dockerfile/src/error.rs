//! Errors a user can cause in a Dockerfile, pointing at the source line.

use miette::{Diagnostic, NamedSource, SourceSpan};
use std::sync::Arc;

/// The Dockerfile text together with its display name, shared by every error
/// that points into it.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: Arc<str>,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }

    /// Byte span of the given 1-based line range (inclusive), without the final newline.
    pub fn line_span(&self, start_line: usize, end_line: usize) -> SourceSpan {
        let mut offset = 0usize;
        let mut start = None;
        let mut end = self.text.len();
        for (i, line) in self.text.split_inclusive('\n').enumerate() {
            let n = i + 1;
            if n == start_line {
                start = Some(offset);
            }
            if n == end_line {
                end = offset + line.trim_end_matches(['\n', '\r']).len();
                break;
            }
            offset += line.len();
        }
        let start = start.unwrap_or(self.text.len().min(offset));
        (start, end.saturating_sub(start)).into()
    }
}

/// A Dockerfile error with its location: renders as
/// `Dockerfile:12: unknown instruction: COPPY` plus a source excerpt.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{}", self.headline())]
pub struct DockerfileError {
    pub file: String,
    /// 1-based line; 0 when the error concerns the whole file.
    pub line: usize,
    pub message: String,
    #[source_code]
    pub src: NamedSource<Arc<str>>,
    #[label("{label}")]
    pub span: Option<SourceSpan>,
    pub label: String,
    #[help]
    pub help: Option<String>,
}

impl DockerfileError {
    /// `Dockerfile:12: message`, or `Dockerfile: message` when no line applies.
    fn headline(&self) -> String {
        if self.line > 0 {
            format!("{}:{}: {}", self.file, self.line, self.message)
        } else {
            format!("{}: {}", self.file, self.message)
        }
    }

    /// An error on lines `start..=end` of `src`.
    pub fn at(src: &Source, start: usize, end: usize, message: impl Into<String>) -> Self {
        let message = message.into();
        DockerfileError {
            file: src.name.clone(),
            line: start,
            label: "here".into(),
            span: (start > 0).then(|| src.line_span(start, end.max(start))),
            src: NamedSource::new(src.name.clone(), src.text.clone()).with_language("Dockerfile"),
            message,
            help: None,
        }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_lines() {
        let s = Source::new("Dockerfile", "FROM a\nCOPPY x y\nRUN z\n");
        let sp = s.line_span(2, 2);
        assert_eq!(&s.text[sp.offset()..sp.offset() + sp.len()], "COPPY x y");
        let e = DockerfileError::at(&s, 2, 2, "unknown instruction: COPPY");
        assert_eq!(e.to_string(), "Dockerfile:2: unknown instruction: COPPY");
        let e = DockerfileError::at(&s, 0, 0, "dockerfile contains no stages to build");
        assert_eq!(
            e.to_string(),
            "Dockerfile: dockerfile contains no stages to build"
        );
    }
}
