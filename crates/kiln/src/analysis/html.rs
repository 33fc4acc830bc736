//! The report as one self-contained HTML page: the report's JSON inside it and
//! a script (no network, no external scripts or fonts) that draws the stages
//! and layers as bars, the final image's files as a zoomable treemap, the
//! waste and the findings table.

use kiln_insight::Report;

const TEMPLATE: &str = include_str!("report.html");

pub fn render(r: &Report) -> String {
    // `<` only occurs inside JSON strings, where \u003c means the same: the
    // data cannot close its <script> element.
    let json = serde_json::to_string(r)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c");
    let title = r
        .image
        .name
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    TEMPLATE
        .replace("__TITLE__", &title)
        .replacen("__REPORT__", &json, 1)
}
