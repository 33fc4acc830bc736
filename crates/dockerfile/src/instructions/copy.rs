//! `COPY [--from=] [--chown=] [--chmod=] [--link] [--parents] [--exclude=]... src... dest`,
//! and the source/destination handling ADD shares with it (heredoc sources,
//! `--chmod` checks).

use super::flags::{Flags, Parsed, StringFlag};
use super::{Chmod, Expand, InstrError};
use crate::ast::Node;

/// `COPY [--from=] [--chown=] [--chmod=] [--link] [--parents] [--exclude=]... src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Source paths as written (unexpanded), heredocs excluded.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub inline: Vec<InlineFile>,
    pub dest: String,
    /// `--from`: a stage name, a stage index or an image (never expanded).
    pub from: Option<String>,
    pub chown: Option<String>,
    /// `--chmod` as written, checked with [`Chmod::parse`] once it has no
    /// variables left (while parsing, else after expansion).
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub excludes: Vec<String>,
}

/// A heredoc used as a COPY/ADD source: a file with inline content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// The heredoc's name, used as the file name.
    pub name: String,
    /// Content, with leading tabs already removed for `<<-`.
    pub content: String,
    /// Whether variables in the content are expanded (unquoted delimiter).
    pub expand: bool,
}

impl Copy {
    pub(crate) fn parse(node: &Node, escape: char) -> Result<Copy, InstrError> {
        if node.args.len() < 2 {
            return Err(no_destination("COPY"));
        }
        let mut flags = Flags::new(&node.flags);
        let chown = flags.string("chown");
        let from = flags.string("from");
        let chmod = flags.string("chmod");
        let link = flags.bool("link");
        let exclude = flags.list("exclude");
        let parents = flags.bool("parents");
        let f = flags.parse()?;
        let (sources, inline, dest) = sources_and_dest(node, "COPY")?;
        let from = f.non_empty(from);
        if let Some(from) = &from {
            if needs_expansion(from, escape) {
                return Err(InstrError::new(
                    "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                ));
            }
        }
        if sources
            .iter()
            .any(|s| s.starts_with("http://") || s.starts_with("https://"))
        {
            return Err(InstrError::new("source can't be a URL for COPY"));
        }
        Ok(Copy {
            sources,
            inline,
            dest,
            from,
            chown: f.non_empty(chown),
            chmod: checked_chmod(&f, chmod)?,
            link: f.bool(link),
            parents: f.bool(parents),
            excludes: f.list(exclude),
        })
    }

    /// Sources, destination, `--chown` and `--chmod` expanded (`--from` never
    /// is), and the contents of heredocs with an unquoted delimiter. The
    /// expanded `--chmod` is checked.
    pub fn expanded(&self, ex: &mut dyn Expand) -> Result<Copy, InstrError> {
        let mut c = self.clone();
        c.chown = expand_opt(ex, &c.chown)?;
        c.chmod = expand_opt(ex, &c.chmod)?;
        for p in &mut c.sources {
            *p = expand_word(ex, p)?;
        }
        c.dest = expand_word(ex, &c.dest)?;
        check_chmod(c.chmod.as_deref())?;
        expand_inline(ex, &mut c.inline)?;
        Ok(c)
    }
}

pub(crate) fn expand_word(ex: &mut dyn Expand, word: &str) -> Result<String, InstrError> {
    ex.word(word).map_err(InstrError::new)
}

pub(crate) fn expand_opt(
    ex: &mut dyn Expand,
    word: &Option<String>,
) -> Result<Option<String>, InstrError> {
    word.as_deref().map(|w| expand_word(ex, w)).transpose()
}

/// Heredoc contents with an unquoted delimiter get their variables substituted.
pub(crate) fn expand_inline(
    ex: &mut dyn Expand,
    inline: &mut [InlineFile],
) -> Result<(), InstrError> {
    for f in inline.iter_mut().filter(|f| f.expand) {
        f.content = ex.raw(&f.content).map_err(InstrError::new)?;
    }
    Ok(())
}

pub(crate) fn check_chmod(chmod: Option<&str>) -> Result<(), InstrError> {
    if let Some(m) = chmod {
        Chmod::parse(m).map_err(InstrError::new)?;
    }
    Ok(())
}

/// `--chmod` when given: checked now unless it holds a variable (then it is
/// checked after expansion).
pub(crate) fn checked_chmod(f: &Parsed, chmod: StringFlag) -> Result<Option<String>, InstrError> {
    let chmod = f.non_empty(chmod);
    if let Some(c) = chmod.as_deref().filter(|c| !c.contains('$')) {
        check_chmod(Some(c))?;
    }
    Ok(chmod)
}

pub(crate) fn no_destination(cmd: &str) -> InstrError {
    InstrError::new(format!(
        "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
    ))
}

/// Whether shell processing would change `word` (variables, quotes, escapes):
/// such `--from` values are rejected like BuildKit rejects them.
fn needs_expansion(word: &str, escape: char) -> bool {
    let chars: Vec<char> = word.chars().collect();
    chars
        .iter()
        .enumerate()
        .any(|(i, &c)| c == '\'' || c == '"' || c == escape || (c == '$' && i + 1 < chars.len()))
}

/// If `word` is a heredoc marker (`<<EOF`, `<<-"EOF"`, `3<<EOF`): its name and chomp flag.
fn heredoc_marker(word: &str) -> Option<(String, bool)> {
    let digits = word.bytes().take_while(|b| b.is_ascii_digit()).count();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start();
    if rest.contains('<') || rest.is_empty() {
        return None;
    }
    let name: String = rest.chars().filter(|c| *c != '\'' && *c != '"').collect();
    Some((name, chomp))
}

type SourcesAndDest = (Vec<String>, Vec<InlineFile>, String);

/// The sources (heredocs apart) and the destination of COPY or ADD.
pub(crate) fn sources_and_dest(node: &Node, cmd: &str) -> Result<SourcesAndDest, InstrError> {
    let (dest, srcs) = node.args.split_last().ok_or_else(|| no_destination(cmd))?;
    if heredoc_marker(dest).is_some() {
        return Err(InstrError::new(format!(
            "{cmd} cannot accept a heredoc as a destination"
        )));
    }
    let mut sources = Vec::new();
    let mut inline = Vec::new();
    for s in srcs {
        match heredoc_marker(s) {
            Some((name, chomp)) => {
                let doc = node.heredocs.iter().find(|h| h.name == name);
                let content = doc.map(|h| h.content.clone()).unwrap_or_default();
                inline.push(InlineFile {
                    content: if chomp {
                        crate::parser::chomp_heredoc_content(&content)
                    } else {
                        content
                    },
                    expand: doc.is_none_or(|h| h.expand),
                    name,
                });
            }
            None => sources.push(s.clone()),
        }
    }
    Ok((sources, inline, dest.clone()))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, node, parse, Table};
    use super::super::{Kind, ShellExpand};
    use super::*;
    use crate::ast::Heredoc;

    #[test]
    fn copy_flags() {
        let Kind::Copy(c) = parse(&node(
            "copy",
            &[
                "--from=builder",
                "--chown=1001:1001",
                "--chmod=0755",
                "--link",
                "--parents=true",
                "--exclude=*.md",
                "--exclude=tests/",
            ],
            &["/home/build/dist", "/a", "dist/"],
        ))
        .kind
        else {
            panic!()
        };
        assert_eq!(c.sources, vec!["/home/build/dist", "/a"]);
        assert_eq!(c.dest, "dist/");
        assert_eq!(c.from.as_deref(), Some("builder"));
        assert_eq!(c.chown.as_deref(), Some("1001:1001"));
        assert_eq!(c.chmod.as_deref(), Some("0755"));
        assert!(c.link);
        assert!(c.parents);
        assert_eq!(c.excludes, vec!["*.md", "tests/"]);

        let Kind::Copy(c) = parse(&node("copy", &["--link=false"], &["a", "b"])).kind else {
            panic!()
        };
        assert!(!c.link);
        assert_eq!(c.from, None);
    }

    #[test]
    fn copy_errors() {
        assert_eq!(
            err(&node("copy", &[], &["onlyone"])),
            "COPY requires at least two arguments, but only one was provided. Destination could not be determined"
        );
        assert_eq!(
            err(&node("copy", &["--checksum=sha256:x"], &["a", "b"])),
            "unknown flag: --checksum"
        );
        assert_eq!(
            err(&node("copy", &["--from"], &["a", "b"])),
            "missing a value on flag: --from"
        );
        assert_eq!(
            err(&node("copy", &["--link=maybe"], &["a", "b"])),
            "expecting boolean value for flag --link, not: maybe"
        );
        assert_eq!(
            err(&node("copy", &["--chmod=999"], &["a", "b"])),
            "invalid chmod parameter: '999'. it should be octal string and between 0 and 07777"
        );
        assert!(err(&node("copy", &["--chmod=u+q"], &["a", "b"]))
            .starts_with("invalid chmod parameter: 'u+q'"));
        assert_eq!(
            err(&node("copy", &["--from=$STAGE"], &["a", "b"])),
            "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
        );
        assert_eq!(
            err(&node("copy", &[], &["https://example.com/x", "b"])),
            "source can't be a URL for COPY"
        );
        assert_eq!(
            err(&node("copy", &[], &["a", "<<EOF"])),
            "COPY cannot accept a heredoc as a destination"
        );
        // A variable in --chmod is checked once its value is known.
        let Kind::Copy(c) = parse(&node("copy", &["--chmod=$MODE"], &["a", "b"])).kind else {
            panic!()
        };
        assert_eq!(c.chmod.as_deref(), Some("$MODE"));
    }

    #[test]
    fn copy_heredoc_sources() {
        let mut n = node("copy", &[], &["<<-EOF", "plain", "/dst"]);
        n.heredocs = vec![Heredoc {
            name: "EOF".into(),
            file_descriptor: 0,
            expand: false,
            chomp: true,
            content: "\thello\n\t\tworld\n".into(),
        }];
        let Kind::Copy(c) = parse(&n).kind else {
            panic!()
        };
        assert_eq!(c.sources, vec!["plain"]);
        assert_eq!(
            c.inline,
            vec![InlineFile {
                name: "EOF".into(),
                content: "hello\nworld\n".into(),
                expand: false,
            }]
        );
    }

    #[test]
    fn copy_expansion() {
        let mut t = Table::sample();
        let mut n = node(
            "copy",
            &["--chown=$U", "--chmod=$M", "--from=builder"],
            &["<<EOF", "$DIR/a", "$DIR/"],
        );
        n.heredocs = vec![Heredoc {
            name: "EOF".into(),
            file_descriptor: 0,
            expand: true,
            chomp: false,
            content: "at $DIR\n".into(),
        }];
        let Kind::Copy(c) = parse(&n).expanded(&mut t).unwrap().kind else {
            panic!()
        };
        assert_eq!(c.sources, vec!["/srv/a"]);
        assert_eq!(c.dest, "/srv/");
        assert_eq!(c.chown.as_deref(), Some("app"));
        assert_eq!(c.chmod.as_deref(), Some("0640"));
        assert_eq!(c.from.as_deref(), Some("builder"));
        assert_eq!(c.inline[0].content, "raw:at /srv\n");
    }

    #[test]
    fn copy_expansion_with_the_shell_lexer() {
        let env: std::collections::BTreeMap<String, String> =
            [("APP".to_string(), "/srv/app".to_string())].into();
        let mut ex = ShellExpand::new('\\', &env);
        let mut n = node("copy", &[], &["<<EOF", "\"$APP/x\"", "/dst"]);
        n.heredocs = vec![Heredoc {
            name: "EOF".into(),
            file_descriptor: 0,
            expand: true,
            chomp: false,
            content: "dir=\"$APP\"\n".into(),
        }];
        let Kind::Copy(c) = parse(&n).expanded(&mut ex).unwrap().kind else {
            panic!()
        };
        assert_eq!(
            c.sources,
            vec!["/srv/app/x"],
            "quotes are removed from words"
        );
        assert_eq!(
            c.inline[0].content, "dir=\"/srv/app\"\n",
            "heredoc keeps its quotes"
        );
    }
}
