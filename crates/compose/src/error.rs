//! Where a value came from (file, line, column) and the located error that
//! points there: `compose.yaml:12: services.api.build.args: …` with an excerpt.

use miette::{Diagnostic, NamedSource, SourceSpan};
use std::path::PathBuf;
use std::sync::Arc;

/// One Compose (or env) file as read: the name it is reported under and its text.
#[derive(Debug)]
pub struct SourceFile {
    /// The name errors use: the path as the user gave it or as it was found
    /// (`compose.yaml`, `../other/compose.override.yaml`).
    pub name: String,
    pub path: PathBuf,
    pub text: Arc<str>,
}

impl SourceFile {
    pub fn new(
        name: impl Into<String>,
        path: impl Into<PathBuf>,
        text: impl Into<Arc<str>>,
    ) -> Self {
        SourceFile {
            name: name.into(),
            path: path.into(),
            text: text.into(),
        }
    }

    /// Byte offset of 1-based `line`, 0-based character `col`.
    fn offset(&self, line: usize, col: usize) -> usize {
        let mut start = 0;
        for _ in 1..line {
            match self.text[start..].find('\n') {
                Some(i) => start += i + 1,
                None => return self.text.len(),
            }
        }
        let rest = &self.text[start..];
        start
            + rest
                .char_indices()
                .nth(col)
                .map(|(i, _)| i)
                .unwrap_or(rest.len())
    }

    /// The span from (`line`, `col`) to the end of that line.
    fn span_to_line_end(&self, line: usize, col: usize) -> SourceSpan {
        let start = self.offset(line, col);
        let end = self.text[start..]
            .find('\n')
            .map(|i| start + i)
            .unwrap_or(self.text.len());
        SourceSpan::new(start.into(), end.saturating_sub(start).max(1))
    }
}

/// A position in a source file.
#[derive(Clone, Debug)]
pub struct Loc {
    pub file: Arc<SourceFile>,
    /// 1-based.
    pub line: usize,
    /// 0-based, in characters.
    pub col: usize,
}

impl PartialEq for Loc {
    fn eq(&self, other: &Loc) -> bool {
        Arc::ptr_eq(&self.file, &other.file) && self.line == other.line && self.col == other.col
    }
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.name, self.line)
    }
}

/// A mistake in a Compose project, located when it is about a place in a file.
/// Renders as `compose.yaml:12: services.api.build.args: message`, with an
/// excerpt of the line.
#[derive(Debug)]
pub struct ComposeError(Box<Inner>);

#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{headline}")]
struct Inner {
    headline: String,
    message: String,
    path: String,
    location: Option<String>,
    #[source_code]
    src: Option<NamedSource<Arc<str>>>,
    #[label("here")]
    span: Option<SourceSpan>,
    #[help]
    help: Option<String>,
}

impl ComposeError {
    /// An error at `at` (if known) about the key `path`.
    pub fn at(at: Option<&Loc>, path: &str, message: impl Into<String>) -> ComposeError {
        let message = message.into();
        let what = if path.is_empty() {
            message.clone()
        } else {
            format!("{path}: {message}")
        };
        let headline = match at {
            Some(l) => format!("{}:{}: {what}", l.file.name, l.line),
            None => what,
        };
        ComposeError(Box::new(Inner {
            headline,
            message,
            path: path.to_string(),
            location: at.map(|l| l.to_string()),
            src: at.map(|l| NamedSource::new(l.file.name.clone(), l.file.text.clone())),
            span: at.map(|l| l.file.span_to_line_end(l.line, l.col)),
            help: None,
        }))
    }

    /// An error about no place in a file (a missing file, a bad flag).
    pub fn new(message: impl Into<String>) -> ComposeError {
        ComposeError::at(None, "", message)
    }

    pub fn with_help(mut self, help: impl Into<String>) -> ComposeError {
        self.0.help = Some(help.into());
        self
    }

    /// The message without location and path.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The key the error is about (`services.api.build.args`), or empty.
    pub fn path(&self) -> &str {
        &self.0.path
    }

    /// `compose.yaml:12`, when known.
    pub fn location(&self) -> Option<&str> {
        self.0.location.as_deref()
    }
}

impl std::fmt::Display for ComposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ComposeError {}

impl Diagnostic for ComposeError {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.0.source_code()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.0.labels()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.0.help()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headline_names_file_line_and_key() {
        let f = Arc::new(SourceFile::new(
            "compose.yaml",
            "/p/compose.yaml",
            "services:\n  api:\n    build: {}\n",
        ));
        let at = Loc {
            file: f.clone(),
            line: 3,
            col: 4,
        };
        let e = ComposeError::at(Some(&at), "services.api.build", "bad");
        assert_eq!(e.to_string(), "compose.yaml:3: services.api.build: bad");
        assert_eq!(e.location(), Some("compose.yaml:3"));
        assert_eq!(e.path(), "services.api.build");
        assert_eq!(e.message(), "bad");
        let span = e.0.span.unwrap();
        assert_eq!(
            &f.text[span.offset()..span.offset() + span.len()],
            "build: {}"
        );
        assert_eq!(ComposeError::new("no file").to_string(), "no file");
    }
}
