//! CSV cells for exports: quoting and the spreadsheet formula guard.
//!
//! Foundation: audit search and resource export both write CSV; neither is HTTP.

/// One CSV cell, quoted, with spreadsheet formulas defused (a leading `=`, `+`, `-`, `@`,
/// tab or carriage return gets a `'` in front).
pub fn csv_field(out: &mut String, s: &str) {
    let guarded = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    out.push('"');
    out.push_str(&guarded.replace('"', "\"\""));
    out.push('"');
}
