//! The reference docs keep up with the code: every problem type the API can answer with is in
//! docs/API.md's error table with its status, and every id prefix is in its list of ids.

use neotenant::error::ErrorCode;

fn api_md() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/API.md"))
        .expect("docs/API.md")
}

#[test]
fn every_problem_type_is_documented() {
    let doc = api_md();
    let missing: Vec<String> = ErrorCode::ALL
        .iter()
        .map(|c| format!("| `{}` | {} |", c.slug(), c.status()))
        .filter(|row| !doc.contains(row.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/API.md lacks these error rows:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_id_prefix_is_documented() {
    let ids = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/ids.rs"))
        .expect("ids.rs");
    let doc = api_md();
    let prefixes: Vec<&str> = ids
        .split("prefixed_id!(")
        .skip(1) // the text before the first use
        .filter_map(|chunk| chunk.split('"').nth(1))
        .collect();
    assert!(prefixes.len() >= 13, "found only {prefixes:?}");
    let missing: Vec<&&str> = prefixes
        .iter()
        .filter(|p| !doc.contains(&format!("`{p}_…`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/API.md lacks the id prefixes {missing:?}"
    );
}
