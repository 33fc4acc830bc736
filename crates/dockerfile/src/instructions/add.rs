//! `ADD [--checksum=] [--keep-git-dir] [--chown=] [--chmod=] [--link] [--exclude=]... [--unpack] src... dest`.
//! Sources, heredocs and `--chmod` are handled as COPY handles them ([`super::copy`]).

use super::copy::{
    check_chmod, checked_chmod, expand_inline, expand_opt, expand_word, no_destination,
    sources_and_dest, InlineFile,
};
use super::flags::Flags;
use super::{Expand, InstrError};
use crate::ast::Node;

/// `ADD [--checksum=] [--keep-git-dir] [--chown=] [--chmod=] [--link] [--exclude=]... [--unpack] src... dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Add {
    pub sources: Vec<String>,
    pub inline: Vec<InlineFile>,
    pub dest: String,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub excludes: Vec<String>,
    /// `--keep-git-dir` when given (only meaningful for git sources).
    pub keep_git_dir: Option<bool>,
    pub checksum: Option<String>,
    /// `--unpack` when given; by default local archives are unpacked and URLs are not.
    pub unpack: Option<bool>,
}

impl Add {
    pub(crate) fn parse(node: &Node) -> Result<Add, InstrError> {
        if node.args.len() < 2 {
            return Err(no_destination("ADD"));
        }
        let mut flags = Flags::new(&node.flags);
        let chown = flags.string("chown");
        let chmod = flags.string("chmod");
        let link = flags.bool("link");
        let keep_git_dir = flags.bool("keep-git-dir");
        let checksum = flags.string("checksum");
        let unpack = flags.bool("unpack");
        let exclude = flags.list("exclude");
        let f = flags.parse()?;
        let (sources, inline, dest) = sources_and_dest(node, "ADD")?;
        let checksum = f.non_empty(checksum);
        if checksum.is_some() && sources.len() + inline.len() != 1 {
            return Err(InstrError::new(
                "checksum can't be specified for multiple sources",
            ));
        }
        Ok(Add {
            sources,
            inline,
            dest,
            chown: f.non_empty(chown),
            chmod: checked_chmod(&f, chmod)?,
            link: f.bool(link),
            excludes: f.list(exclude),
            keep_git_dir: f.bool_opt(keep_git_dir),
            checksum,
            unpack: f.bool_opt(unpack),
        })
    }

    /// As [`super::Copy::expanded`], plus `--checksum`.
    pub fn expanded(&self, ex: &mut dyn Expand) -> Result<Add, InstrError> {
        let mut a = self.clone();
        a.chown = expand_opt(ex, &a.chown)?;
        a.chmod = expand_opt(ex, &a.chmod)?;
        a.checksum = expand_opt(ex, &a.checksum)?;
        for p in &mut a.sources {
            *p = expand_word(ex, p)?;
        }
        a.dest = expand_word(ex, &a.dest)?;
        check_chmod(a.chmod.as_deref())?;
        expand_inline(ex, &mut a.inline)?;
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{err, node, parse, Table};
    use super::super::Kind;

    #[test]
    fn add_flags() {
        let Kind::Add(a) = parse(&node(
            "add",
            &[
                "--checksum=sha256:abc",
                "--keep-git-dir=true",
                "--chown=app",
                "--chmod=u+x",
                "--link",
                "--exclude=x",
                "--unpack=false",
            ],
            &["https://example.com/a.tar.gz", "/opt/"],
        ))
        .kind
        else {
            panic!()
        };
        assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
        assert_eq!(a.keep_git_dir, Some(true));
        assert_eq!(a.unpack, Some(false));
        assert_eq!(a.chmod.as_deref(), Some("u+x"));
        assert!(a.link);
        assert_eq!(a.excludes, vec!["x"]);
        let Kind::Add(a) = parse(&node("add", &[], &["a.tar", "/"])).kind else {
            panic!()
        };
        assert_eq!(a.unpack, None);
        assert_eq!(a.keep_git_dir, None);
        assert_eq!(
            err(&node("add", &["--from=x"], &["a", "b"])),
            "unknown flag: --from"
        );
        assert_eq!(
            err(&node("add", &["--parents"], &["a", "b"])),
            "unknown flag: --parents"
        );
        assert_eq!(
            err(&node("add", &["--checksum=sha256:x"], &["a", "b", "/c"])),
            "checksum can't be specified for multiple sources"
        );
        assert_eq!(
            err(&node("add", &[], &["a"])),
            "ADD requires at least two arguments, but only one was provided. Destination could not be determined"
        );
    }

    #[test]
    fn add_expansion() {
        let mut t = Table::sample();
        let Kind::Add(a) = parse(&node(
            "add",
            &["--checksum=$SUM", "--chmod=$M"],
            &["$DIR/a.tar", "$DIR/"],
        ))
        .expanded(&mut t)
        .unwrap()
        .kind
        else {
            panic!()
        };
        assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
        assert_eq!(a.chmod.as_deref(), Some("0640"));
        assert_eq!(a.sources, vec!["/srv/a.tar"]);
        assert_eq!(a.dest, "/srv/");
        // An expanded --chmod is checked.
        assert_eq!(
            parse(&node("add", &["--chmod=$WRONGMODE"], &["a", "b"]))
                .expanded(&mut t)
                .unwrap_err()
                .message,
            "invalid chmod parameter: '99'. it should be octal string and between 0 and 07777"
        );
    }
}
