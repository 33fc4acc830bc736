//! Parser tests: BuildKit's parser_test.go / parser_heredoc_test.go cases
//! plus the edge cases of directives, continuations and line numbers.

use super::*;
use crate::ast::Heredoc;

fn src(text: &str) -> Source {
    Source::new("Dockerfile", text)
}

fn parse_ok(text: &str) -> Dockerfile {
    match parse(&src(text)) {
        Ok(df) => df,
        Err(e) => panic!("unexpected error: {e}\n--- input\n{text}"),
    }
}

fn parse_err(text: &str) -> DockerfileError {
    match parse(&src(text)) {
        Ok(df) => panic!("expected an error, got:\n{}", df.dump()),
        Err(e) => e,
    }
}

fn doc(name: &str, content: &str, expand: bool, chomp: bool, fd: u32) -> Heredoc {
    Heredoc {
        name: name.into(),
        file_descriptor: fd,
        expand,
        chomp,
        content: content.into(),
    }
}

#[test]
fn heredocs_like_buildkit() {
    // BuildKit's TestParseExtractsHeredoc, input and expectations verbatim.
    let text = "
FROM alpine:3.6

ENV NAME=me

RUN ls

USER <<INVALID
INVALID

RUN <<EMPTY
EMPTY

RUN 3<<EMPTY2
EMPTY2

RUN \"<<NOHEREDOC\"

RUN <<INDENT
\tfoo
\tbar
INDENT

RUN <<-UNINDENT
\tbaz
\tquux
UNINDENT

RUN <<-UNINDENT2
\tbaz
\tquux
\tUNINDENT2

RUN <<-EXPAND
\texpand $NAME
EXPAND

RUN <<-'NOEXPAND'
\tdon't expand $NAME
NOEXPAND

RUN <<COPY
echo hello world
echo foo bar
COPY

RUN <<COMMENT
# internal comment
echo hello world
echo foo bar # trailing comment
COMMENT

RUN --mount=type=cache,target=/foo <<MOUNT
echo hello
MOUNT

COPY <<FILE1 <<FILE2 /dest
content 1
FILE1
content 2
FILE2

COPY <<EOF /quotes
\"foo\"
'bar'
EOF

COPY <<X <<Y /dest
Y
X
X
Y

RUN <<COMPLEX python3
print('hello world')
COMPLEX

COPY <<file.txt /dest
hello world
file.txt

RUN <<eo'f'
echo foo
eof

RUN <<eo\\'f
echo foo
eo'f

RUN <<'e'o\\'f
echo foo
eo'f

RUN <<'one two'
echo bar
one two

RUN <<$EOF
$EOF

RUN <<  EOF
EOF

RUN <<  EOF  > foo
EOF
\t";
    let expected: Vec<Vec<Heredoc>> = vec![
        vec![],                                  // ENV
        vec![],                                  // RUN ls
        vec![],                                  // USER <<INVALID
        vec![],                                  // INVALID
        vec![doc("EMPTY", "", true, false, 0)],  // RUN <<EMPTY
        vec![doc("EMPTY2", "", true, false, 3)], // RUN 3<<EMPTY2
        vec![],                                  // RUN "<<NOHEREDOC"
        vec![doc("INDENT", "\tfoo\n\tbar\n", true, false, 0)],
        vec![doc("UNINDENT", "\tbaz\n\tquux\n", true, true, 0)],
        vec![doc("UNINDENT2", "\tbaz\n\tquux\n", true, true, 0)],
        vec![doc("EXPAND", "\texpand $NAME\n", true, true, 0)],
        vec![doc("NOEXPAND", "\tdon't expand $NAME\n", false, true, 0)],
        vec![doc(
            "COPY",
            "echo hello world\necho foo bar\n",
            true,
            false,
            0,
        )],
        vec![doc(
            "COMMENT",
            "# internal comment\necho hello world\necho foo bar # trailing comment\n",
            true,
            false,
            0,
        )],
        vec![doc("MOUNT", "echo hello\n", true, false, 0)],
        vec![
            doc("FILE1", "content 1\n", true, false, 0),
            doc("FILE2", "content 2\n", true, false, 0),
        ],
        vec![doc("EOF", "\"foo\"\n'bar'\n", true, false, 0)],
        vec![
            doc("X", "Y\n", true, false, 0),
            doc("Y", "X\n", true, false, 0),
        ],
        vec![doc("COMPLEX", "print('hello world')\n", true, false, 0)],
        vec![doc("file.txt", "hello world\n", true, false, 0)],
        vec![doc("eof", "echo foo\n", false, false, 0)],
        vec![doc("eo'f", "echo foo\n", true, false, 0)],
        vec![doc("eo'f", "echo foo\n", false, false, 0)],
        vec![doc("one two", "echo bar\n", false, false, 0)],
        vec![doc("$EOF", "", true, false, 0)],
        vec![doc("EOF", "", true, false, 0)],
        vec![doc("EOF", "", true, false, 0)],
    ];
    let df = parse_ok(text);
    assert_eq!(df.nodes.len(), expected.len() + 1);
    for (i, want) in expected.iter().enumerate() {
        let node = &df.nodes[i + 1];
        assert_eq!(
            &node.heredocs,
            want,
            "instruction {}: {}",
            i + 1,
            node.original
        );
    }
    // The whole heredoc body counts into the instruction's lines.
    let copy2 = df
        .nodes
        .iter()
        .find(|n| n.original == "COPY <<FILE1 <<FILE2 /dest")
        .unwrap();
    let first = text
        .lines()
        .position(|l| l == "COPY <<FILE1 <<FILE2 /dest")
        .unwrap()
        + 1;
    assert_eq!((copy2.start_line, copy2.end_line), (first, first + 4));
    assert_eq!(copy2.args, ["<<FILE1", "<<FILE2", "/dest"]);
}

#[test]
fn json_form_never_has_heredocs() {
    // BuildKit's TestParseJSONHeredoc.
    let df =
        parse_ok("\nFROM alpine:3.6\n\nRUN [\"whoami\"]\nRUN [\"<<EOF\"]\nRUN [\"<<'EOF'\"]\n\t");
    for n in &df.nodes[1..] {
        assert!(n.json);
        assert!(n.heredocs.is_empty(), "{}", n.original);
    }
}

#[test]
fn heredoc_basic_forms() {
    let df = parse_ok("FROM a\nRUN <<EOF\necho hi\nEOF\nCOPY <<EOF /dst\nfile\nEOF\n");
    assert_eq!(
        df.nodes[1].heredocs,
        [doc("EOF", "echo hi\n", true, false, 0)]
    );
    assert_eq!((df.nodes[1].start_line, df.nodes[1].end_line), (2, 4));
    assert_eq!(df.nodes[2].heredocs, [doc("EOF", "file\n", true, false, 0)]);
    assert_eq!(df.nodes[2].args, ["<<EOF", "/dst"]);
    assert_eq!((df.nodes[2].start_line, df.nodes[2].end_line), (5, 7));

    let df = parse_ok("RUN <<A <<B\na\nA\nb\nB\nRUN x\n");
    assert_eq!(
        df.nodes[0].heredocs,
        [
            doc("A", "a\n", true, false, 0),
            doc("B", "b\n", true, false, 0)
        ]
    );
    assert_eq!((df.nodes[1].start_line, df.nodes[1].end_line), (6, 6));

    // <<-: the terminator may be tab-indented; the body is stored unchanged
    // and chomp_heredoc_content strips the tabs.
    let df = parse_ok("RUN <<-EOF\n\t\techo a\n\techo b\n\t\tEOF\n");
    let h = &df.nodes[0].heredocs[0];
    assert!(h.chomp);
    assert_eq!(h.content, "\t\techo a\n\techo b\n");
    assert_eq!(chomp_heredoc_content(&h.content), "echo a\necho b\n");

    // Quoted delimiters turn expansion off.
    let df = parse_ok("RUN <<\"EOF\"\n$X\nEOF\nRUN <<'EOF'\n$X\nEOF\nRUN <<EOF\n$X\nEOF\n");
    let expand: Vec<bool> = df.nodes.iter().map(|n| n.heredocs[0].expand).collect();
    assert_eq!(expand, [false, false, true]);

    // File descriptor prefix.
    let df = parse_ok("RUN 3<<EOF cat /proc/self/fd/3\nhi\nEOF\n");
    assert_eq!(df.nodes[0].heredocs, [doc("EOF", "hi\n", true, false, 3)]);

    // CRLF lines: the terminator matches without "\r", the body keeps it.
    let df = parse_ok("RUN <<EOF\r\necho hi\r\nEOF\r\n");
    assert_eq!(df.nodes[0].heredocs[0].content, "echo hi\r\n");

    // A last body line without newline at EOF.
    let err = parse_err("RUN <<EOF\necho hi");
    assert_eq!(err.message, "unterminated heredoc");
    assert_eq!(err.line, 1);
}

#[test]
fn heredoc_in_onbuild() {
    let df = parse_ok("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\nONBUILD COPY <<F /f\nx\nF\n");
    let ob = &df.nodes[1];
    assert_eq!(ob.dump(), "(onbuild (run \"<<EOF\"))");
    // Heredocs hang off the ONBUILD node, as in BuildKit.
    assert_eq!(ob.heredocs, [doc("EOF", "echo hi\n", true, false, 0)]);
    assert_eq!((ob.start_line, ob.end_line), (2, 4));
    assert_eq!(df.nodes[2].heredocs, [doc("F", "x\n", true, false, 0)]);
    // Other instructions, and JSON forms, take no heredoc.
    let df = parse_ok("ONBUILD CMD <<EOF\nUSER <<EOF\nONBUILD RUN [\"<<EOF\"]\n");
    assert_eq!(df.nodes.len(), 3);
    assert!(df.nodes.iter().all(|n| n.heredocs.is_empty()));
}

#[test]
fn unterminated_heredoc_is_an_error_over_the_instruction() {
    let err = parse_err("FROM a\nRUN <<EOF\necho\n");
    assert_eq!(err.message, "unterminated heredoc");
    assert_eq!(err.line, 2);
    assert_eq!(err.to_string(), "Dockerfile:2: unterminated heredoc");
}

#[test]
fn line_numbers() {
    let text = "# comment\n\nFROM a\nRUN a \\\n  b \\\n\n  # inner comment\n  c\n\nCOPY x y\n";
    let df = parse_ok(text);
    let lines: Vec<(usize, usize)> = df
        .nodes
        .iter()
        .map(|n| (n.start_line, n.end_line))
        .collect();
    assert_eq!(lines, [(3, 3), (4, 8), (10, 10)]);
    assert_eq!(df.nodes[1].original, "RUN a   b   c");
    assert_eq!(df.nodes[0].prev_comment, ["comment"]);
}

#[test]
fn empty_continuation_lines_warn() {
    // BuildKit's TestParseWarnsOnEmptyContinutationLine.
    let text = "
FROM alpine:3.6

RUN valid \\
    continuation

RUN something \\

    following \\

    more

RUN another \\

    thing

RUN non-indented \\
# this is a comment
   after-comment

RUN indented \\
    # this is an indented comment
    comment
\t";
    let df = parse_ok(text);
    assert_eq!(df.warnings.len(), 2, "{:?}", df.warnings);
    assert!(df.warnings[0]
        .1
        .starts_with("Empty continuation line found in"));
    assert!(df.warnings[0]
        .1
        .contains("RUN something     following     more"));
    assert!(df.warnings[1].1.contains("RUN another     thing"));
    assert_eq!(df.warnings[0].0, 11);
    assert_eq!(df.nodes[4].original, "RUN non-indented    after-comment");
    assert_eq!(df.nodes[5].original, "RUN indented     comment");
}

#[test]
fn too_long_line_is_a_scanner_error() {
    // BuildKit's TestParseReturnsScannerErrors.
    let label = "a".repeat(64 * 1024);
    let text = format!("\n\t\tFROM image\n\t\tLABEL test={label}\n");
    let err = parse_err(&text);
    assert_eq!(
        err.message,
        "dockerfile line greater than max allowed size of 65535"
    );
    // The error names the long line (BuildKit names the line before it),
    // without an excerpt of it.
    assert_eq!(err.line, 3);
    assert!(err.span.is_none());
    // A long first line, or one after a line continuation, is named too.
    assert_eq!(parse_err(&format!("FROM {label}\n")).line, 1);
    let err = parse_err(&format!("FROM a\nRUN x \\\n\n{label}\nRUN y\n"));
    assert_eq!(
        (err.line, err.message.contains("max allowed size")),
        (4, true)
    );
    // A line just under the limit is fine.
    let ok = format!("FROM a\nLABEL x={}\n", "a".repeat(65536 - 9));
    assert_eq!(parse_ok(&ok).nodes.len(), 2);
}

#[test]
fn continuation_edge_cases() {
    // Trailing escape at EOF: the instruction simply ends.
    let df = parse_ok("FROM a\nRUN echo \\");
    assert_eq!(df.nodes[1].args, ["echo"]);
    assert_eq!(df.nodes[1].original, "RUN echo ");
    // An escaped escape is not a continuation.
    let df = parse_ok("RUN echo \\\\\nRUN b\n");
    assert_eq!(df.nodes.len(), 2);
    assert_eq!(df.nodes[0].args, ["echo \\\\"]);
    // Trailing spaces/tabs after the escape still continue the line.
    let df = parse_ok("RUN a \\ \t\n b\n");
    assert_eq!(df.nodes[0].args, ["a  b"]);
    // An escape alone on a line joins nothing.
    let df = parse_ok("RUN a \\\n\\\nb\n");
    assert_eq!(df.nodes[0].args, ["a b"]);
    // A continued line may swallow the next instruction (BuildKit does too).
    let df = parse_ok("RUN a \\\n\nRUN b\n");
    assert_eq!(df.nodes.len(), 1);
    assert_eq!(df.nodes[0].args, ["a RUN b"]);
    // Continuation after a comment-only end.
    let df = parse_ok("RUN a \\\n# c\n");
    assert_eq!(df.nodes[0].original, "RUN a ");
    // A file that is only an escape: one empty instruction, like BuildKit.
    let df = parse_ok("\\\n");
    assert_eq!(df.dump(), "(\"\")\n");
}

#[test]
fn escape_directive_backtick() {
    let text = "# escape=`\nFROM windows\nRUN dir c:\\ `\n  && echo hi\nCOPY a\\b c\\\n";
    let df = parse_ok(text);
    assert_eq!(df.escape, '`');
    assert_eq!(
        df.directives,
        [Directive {
            name: "escape".into(),
            value: "`".into(),
            line: 1
        }]
    );
    assert_eq!(df.nodes[1].args, ["dir c:\\   && echo hi"]);
    assert_eq!((df.nodes[1].start_line, df.nodes[1].end_line), (3, 4));
    // A backslash at the end of a line is then literal.
    assert_eq!(df.nodes[2].args, ["a\\b", "c\\"]);
    assert_eq!(df.nodes.len(), 3);
}

#[test]
fn directives() {
    let df = parse_ok("# syntax = docker/dockerfile:1 \n#CHECK=skip=all\n#escape=\\\nFROM a\n");
    let d: Vec<(&str, &str, usize)> = df
        .directives
        .iter()
        .map(|d| (d.name.as_str(), d.value.as_str(), d.line))
        .collect();
    assert_eq!(
        d,
        [
            ("syntax", "docker/dockerfile:1", 1),
            ("check", "skip=all", 2),
            ("escape", "\\", 3)
        ]
    );
    // Directives are not comments of the first instruction.
    assert!(df.nodes[0].prev_comment.is_empty());

    // Scanning stops at the first non-directive line: a comment, an empty
    // line, an unknown directive or an instruction.
    for text in [
        "# hello\n# escape=`\nFROM a\n",
        "\n# escape=`\nFROM a\n",
        "# foo=bar\n# escape=`\nFROM a\n",
        "FROM a\n# escape=`\n",
    ] {
        let df = parse_ok(text);
        assert_eq!(df.escape, '\\', "{text:?}");
        assert!(df.directives.is_empty(), "{text:?}");
    }
    // Leading whitespace is allowed, and so is a BOM.
    let df = parse_ok("\u{feff}  # escape=`\nFROM a\n");
    assert_eq!(df.escape, '`');

    let err = parse_err("# escape=`\n# ESCAPE=\\\nFROM a\n");
    assert_eq!(err.message, "only one escape parser directive can be used");
    assert_eq!(err.line, 2);
    let err = parse_err("# syntax=a\n# syntax=b\nFROM a\n");
    assert_eq!(err.message, "only one syntax parser directive can be used");
    let err = parse_err("# escape=x\nFROM a\n");
    assert_eq!(
        err.message,
        "invalid escape token 'x' does not match ` or \\"
    );
    assert_eq!(err.line, 1);
    // A whitespace-only value is its last character (regexp backtracking).
    let err = parse_err("# escape= \t\nFROM a\n");
    assert_eq!(
        err.message,
        "invalid escape token '\t' does not match ` or \\"
    );
}

#[test]
fn comments_before_instructions() {
    let df = parse_ok("# one\n#  two  \n\nFROM a\n#\n# three\nRUN b\nRUN c\n");
    assert_eq!(df.nodes[0].prev_comment, ["one", "two"]);
    assert_eq!(df.nodes[1].prev_comment, ["three"]);
    assert!(df.nodes[2].prev_comment.is_empty());
}

#[test]
fn files_without_instructions() {
    for text in ["", "\n\n", "# only\n# comments\n", "   \n\t\n"] {
        let err = parse_err(text);
        assert_eq!(err.message, "file with no instructions", "{text:?}");
    }
    let err = parse_err("# a\n# b\n");
    assert_eq!(err.line, 2);
}

#[test]
fn keywords_in_any_case_and_unknown_ones() {
    let df = parse_ok("from a\nRuN echo\nCoPpY x y\n");
    assert_eq!(df.dump(), "(from \"a\")\n(run \"echo\")\n(coppy \"\")\n");
    assert_eq!(df.nodes[2].keyword, "coppy");
    assert_eq!(df.nodes[2].original, "CoPpY x y");
}

#[test]
fn instruction_argument_forms() {
    let dump = |t: &str| parse_ok(t).dump();
    assert_eq!(
        dump("ENV A=1 B=\"2 3\""),
        "(env \"A\" \"1\" \"=\" \"B\" \"\\\"2 3\\\"\" \"=\")\n"
    );
    assert_eq!(dump("ENV A  1 2"), "(env \"A\" \"1 2\" \"\")\n");
    assert_eq!(dump("LABEL a=b"), "(label \"a\" \"b\" \"=\")\n");
    assert_eq!(dump("ARG A B=1 C="), "(arg \"A\" \"B=1\" \"C=\")\n");
    assert_eq!(dump("CMD [\"a\", \"b\"]"), "(cmd \"a\" \"b\")\n");
    assert_eq!(dump("CMD [\"a\", 'b']"), "(cmd \"[\\\"a\\\", 'b']\")\n");
    assert_eq!(dump("VOLUME /a /b"), "(volume \"/a\" \"/b\")\n");
    assert_eq!(dump("VOLUME [\"/a\"]"), "(volume \"/a\")\n");
    assert_eq!(dump("EXPOSE 80 443/tcp"), "(expose \"80\" \"443/tcp\")\n");
    assert_eq!(dump("USER a b"), "(user \"a b\")\n");
    assert_eq!(dump("HEALTHCHECK NONE"), "(healthcheck \"NONE\")\n");
    assert_eq!(
        dump("HEALTHCHECK --interval=5s CMD [\"curl\", \"x\"]"),
        "(healthcheck [\"--interval=5s\"] \"CMD\" \"curl\" \"x\")\n"
    );
    assert_eq!(dump("ONBUILD"), "(onbuild)\n");
    assert_eq!(
        dump("ONBUILD ADD --chown=1 . /app"),
        "(onbuild (add [\"--chown=1\"] \".\" \"/app\"))\n"
    );
    assert_eq!(
        dump("RUN --mount=type=cache -- --x"),
        "(run [\"--mount=type=cache\"] \"--x\")\n"
    );
    let df = parse_ok("RUN [\"a\"]\nRUN a\n");
    assert!(df.nodes[0].json && !df.nodes[1].json);
    // JSON that is valid but not all strings is an error on its line.
    let err = parse_err("FROM a\nCMD [\"a\", 1]\n");
    assert_eq!(err.line, 2);
    assert_eq!(err.message, line_parsers::ERR_NOT_STRING_ARRAY);
    let err = parse_err("FROM a\nLABEL a=b c\n");
    assert_eq!(
        err.message,
        "Syntax error - can't find = in \"c\". Must be of the form: name=value"
    );
}

#[test]
fn deep_onbuild_nesting_is_an_error_not_a_stack_overflow() {
    let text = format!("{}RUN x\n", "ONBUILD ".repeat(5000));
    let err = parse_err(&text);
    assert_eq!(err.line, 1);
    let text = format!("{}RUN x\n", "ONBUILD ".repeat(3));
    assert_eq!(
        parse_ok(&text).dump(),
        "(onbuild (onbuild (onbuild (run \"x\"))))\n"
    );
}

#[test]
fn adversarial_inputs() {
    // JSON nested deeper than Go's limit is "not JSON": string form.
    let deep = format!("CMD {}{}\n", "[".repeat(20_000), "]".repeat(20_000));
    let df = parse_ok(&deep);
    assert!(!df.nodes[0].json);
    // Deep but within the limit: valid JSON, not strings: an error.
    let deep = format!("CMD [{}{}]\n", "[".repeat(5_000), "]".repeat(5_000));
    assert_eq!(parse_err(&deep).message, line_parsers::ERR_NOT_STRING_ARRAY);
    // Heredoc detection over a deeply nested word: no heredoc, no overflow.
    let nested = format!("RUN <<EOF {}\nEOF\n", "${a:-".repeat(5_000));
    let df = parse_ok(&nested);
    assert!(df.nodes[0].heredocs.is_empty());
    assert_eq!(df.nodes.len(), 2);
    // Byte-wise scanners meeting multi-byte characters (0xA0 inside "à" is a
    // space to BuildKit's flag and HEALTHCHECK scanners).
    let df = parse_ok("RUN --x=à y\nHEALTHCHECK CMDà x\n");
    assert_eq!(df.nodes[0].flags, ["--x=\u{c3}"]);
    assert_eq!(df.nodes[0].args, ["y"]);
    assert_eq!(df.nodes[1].args, ["CMD\u{fffd}", "x"]);
    // NUL bytes and lone escapes anywhere.
    assert_eq!(parse_ok("RUN \0\\\nENV a=\\").nodes.len(), 1);
    assert_eq!(parse_ok("ARG \"unterminated\nFROM x").nodes.len(), 2);
}
