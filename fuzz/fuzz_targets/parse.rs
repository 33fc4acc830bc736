//! Fuzz target: any bytes (as lossy UTF-8) through the Dockerfile parser.
//! The parser must return `Ok` or a located error — never panic, hang or
//! overflow the stack — and whatever it returns must render.

#![no_main]

use kiln_dockerfile::{parse, Source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let src = Source::new("Dockerfile", text);
    match parse(&src) {
        Ok(df) => {
            let dump = df.dump();
            assert_eq!(dump.lines().count(), df.nodes.len());
            for n in &df.nodes {
                assert!(n.start_line >= 1 && n.start_line <= n.end_line);
            }
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = format!("{:?}", miette::Report::new(e));
        }
    }
});
