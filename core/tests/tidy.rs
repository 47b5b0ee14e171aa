//! Tidy: the structural rules of `core/src`, checked by reading the source (as rust-analyzer
//! keeps its conventions). Fails when a file lacks its `//!` line, an HTTP file (`handlers`,
//! `hoops`, `http/`) reaches for SQL, a service or repository reaches for salvo, a module
//! imports from a higher layer, or files import each other in a circle.
//!
//! Layers, bottom up (docs/ARCHITECTURE.md, "Layers"): foundation → kernel → features → http
//! → app. A file's layer is its top-level module's, except that `handlers.rs`, `hoops.rs` and
//! anything under a `handlers/` folder are the HTTP edge of their feature and count as http.
//! Imports are read as text: every `crate::…`, `super::…` and `self::…` path outside comments
//! and `#[cfg(test)]` modules, with `{…}` groups expanded.
//!
//! This file uses only the standard library, so it also builds on its own:
//! `rustc --edition 2024 --test core/tests/tidy.rs -o /tmp/tidy && /tmp/tidy`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    Foundation,
    Kernel,
    Features,
    Http,
    App,
}

const FOUNDATION: &[&str] = &[
    "ids",
    "region",
    "error",
    "config",
    "db",
    "schema",
    "pubsub",
    "metrics",
    "telemetry",
    "cursor",
    "csv",
    "keys",
    "mail",
    "onetime",
    "json_schema",
    "picture",
    "versioned_cache",
    "idempotency",
    "crypto",
    "apiversion",
    "patch",
    "netguard",
    "redis_link",
];
const KERNEL: &[&str] = &[
    "tenancy",
    "auth",
    "rbac",
    "audit",
    "outbox",
    "ratelimit",
    "settings",
];
const FEATURES: &[&str] = &[
    "account",
    "users",
    "sessions",
    "apikeys",
    "teams",
    "resources",
    "plugins",
    "notes",
    "invitations",
    "privacy",
    "directory",
    "flags",
    "notifications",
    "webhooks",
    "events",
    "changes",
    "oauthclients",
];
const HTTP: &[&str] = &["http"];
const APP: &[&str] = &["app", "main", "lib"];

/// A source file: its path relative to the source root, and its module path.
#[derive(Debug, Clone)]
struct SourceFile {
    rel: String,
    module: Vec<String>,
    text: String,
}

fn module_of(rel: &str) -> Vec<String> {
    let trimmed = rel.trim_end_matches(".rs");
    let mut parts: Vec<String> = trimmed.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        return Vec::new();
    }
    parts
}

/// The layer of a file, or an error naming a top-level module no layer claims.
fn layer_of(rel: &str) -> Result<Layer, String> {
    let parts: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
    let name = *parts.last().unwrap_or(&"");
    if parts.len() > 1
        && (name == "handlers" || name == "hoops" || parts[..parts.len() - 1].contains(&"handlers"))
    {
        return Ok(Layer::Http);
    }
    let top = parts[0];
    for (set, layer) in [
        (FOUNDATION, Layer::Foundation),
        (KERNEL, Layer::Kernel),
        (FEATURES, Layer::Features),
        (HTTP, Layer::Http),
        (APP, Layer::App),
    ] {
        if set.contains(&top) {
            return Ok(layer);
        }
    }
    Err(format!(
        "{rel}: the top-level module `{top}` has no layer; add it to one list in core/tests/tidy.rs and docs/ARCHITECTURE.md"
    ))
}

fn is_http_edge(rel: &str) -> bool {
    layer_of(rel) == Ok(Layer::Http)
}

fn is_service_or_repo(rel: &str) -> bool {
    let parts: Vec<&str> = rel.trim_end_matches(".rs").split('/').collect();
    parts.iter().any(|p| matches!(*p, "service" | "repo"))
}

/// The code of a file with comments, string contents and `#[cfg(test)]` modules removed.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut block = 0usize;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if block > 0 {
            if c == '*' && next == Some('/') {
                block -= 1;
                i += 2;
            } else if c == '/' && next == Some('*') {
                block += 1;
                i += 2;
            } else {
                if c == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            continue;
        }
        match (c, next) {
            ('/', Some('/')) => {
                while i < bytes.len() && bytes[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                block = 1;
                i += 2;
            }
            ('"', _) => {
                // A raw string `r#"…"#` or a plain one: skip its contents.
                let hashes = {
                    let mut h = 0;
                    let mut j = i;
                    while j > 0 && bytes[j - 1] == '#' {
                        h += 1;
                        j -= 1;
                    }
                    if j > 0 && bytes[j - 1] == 'r' { h } else { 0 }
                };
                out.push('"');
                i += 1;
                while i < bytes.len() {
                    if hashes == 0 && bytes[i] == '\\' {
                        i += 2;
                        continue;
                    }
                    if bytes[i] == '"' && (0..hashes).all(|k| bytes.get(i + 1 + k) == Some(&'#')) {
                        break;
                    }
                    if bytes[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
                out.push('"');
                i += 1;
            }
            ('\'', _) => {
                // A char literal ('x', '\n', '\'') is skipped; a lifetime is kept.
                if next == Some('\\') {
                    let mut j = i + 2;
                    while j < bytes.len() && bytes[j] != '\'' {
                        j += 1;
                    }
                    out.push_str("' '");
                    i = j + 1;
                } else if bytes.get(i + 2) == Some(&'\'') {
                    out.push_str("' '");
                    i += 3;
                } else {
                    out.push(c);
                    i += 1;
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    strip_test_modules(&out)
}

/// Removes `#[cfg(test)] mod name { … }` blocks (by brace counting on comment-free code).
fn strip_test_modules(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ");
        let open = trimmed.find(['{', ';']);
        if !is_mod || open.is_none() || trimmed.as_bytes()[open.unwrap()] == b';' {
            out.push_str(&rest[..at + "#[cfg(test)]".len()]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..at]);
        let start = rest.len() - trimmed.len() + open.unwrap();
        let mut depth = 0usize;
        let mut end = rest.len();
        for (k, ch) in rest[start..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = start + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        // Keep line numbers stable.
        out.extend(rest[at..end].chars().filter(|c| *c == '\n'));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts with `root::` (`crate`, `super` or `self`) in `code`, as segments
/// after the root, `{…}` groups expanded; each with its 1-based line.
fn paths_from(code: &str, root: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    let pat = format!("{root}::");
    let chars: Vec<char> = code.chars().collect();
    let text: String = chars.iter().collect();
    let mut search = 0;
    while let Some(pos) = text[search..].find(&pat) {
        let at = search + pos;
        search = at + pat.len();
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == '$' || c == ':') {
            continue;
        }
        let line = text[..at].matches('\n').count() + 1;
        let mut prefixes = Vec::new();
        expand(&text[search..], Vec::new(), &mut prefixes);
        for p in prefixes {
            found.push((line, p));
        }
    }
    found
}

/// Reads `a::b::{c, d::e}` from the start of `s` into full paths.
fn expand(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    let mut rest = s;
    loop {
        let rest_trim = rest.trim_start();
        if let Some(group) = rest_trim.strip_prefix('{') {
            let mut depth = 1;
            let mut end = group.len();
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let inner = &group[..end];
            let mut depth = 0;
            let mut item_start = 0;
            let mut items = Vec::new();
            for (k, ch) in inner.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&inner[item_start..k]);
                        item_start = k + 1;
                    }
                    _ => {}
                }
            }
            items.push(&inner[item_start..]);
            for item in items {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                if item == "self" {
                    out.push(path.clone());
                } else {
                    expand(item, path.clone(), out);
                }
            }
            return;
        }
        let ident: String = rest_trim.chars().take_while(|c| is_ident(*c)).collect();
        if ident.is_empty() {
            out.push(path);
            return;
        }
        path.push(ident.clone());
        rest = &rest_trim[ident.len()..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => {
                out.push(path);
                return;
            }
        }
    }
}

/// The file a module path names: the longest prefix that is a file.
fn resolve<'a>(
    files: &'a BTreeMap<Vec<String>, SourceFile>,
    path: &[String],
) -> Option<&'a SourceFile> {
    if let [name] = path
        && let Some(f) = files
            .values()
            .find(|f| f.text.contains(&format!("macro_rules! {name} ")))
    {
        // `crate::name!`: a `#[macro_export]` macro lives at the root but belongs to the
        // file that defines it.
        return Some(f);
    }
    (1..=path.len())
        .rev()
        .find_map(|n| files.get(&path[..n].to_vec()))
}

/// What a file imports: `(line, target file)` for every path into another file.
fn imports<'a>(
    files: &'a BTreeMap<Vec<String>, SourceFile>,
    file: &SourceFile,
) -> Vec<(usize, &'a SourceFile)> {
    let code = code_of(&file.text);
    let is_mod_file = file.rel.ends_with("mod.rs") || file.module.is_empty();
    let mut out = Vec::new();
    let mut push = |line: usize, path: Vec<String>| {
        if let Some(target) = resolve(files, &path)
            && target.rel != file.rel
        {
            out.push((line, target));
        }
    };
    for (line, p) in paths_from(&code, "crate") {
        push(line, p);
    }
    // `self::` names the file's own module; `super::` its parent (for `mod.rs`, the parent of
    // the folder).
    let own = file.module.clone();
    for (line, p) in paths_from(&code, "self") {
        let mut full = own.clone();
        full.extend(p);
        push(line, full);
    }
    for (line, p) in paths_from(&code, "super") {
        let mut base = own.clone();
        if !base.is_empty() {
            base.pop();
        }
        let _ = is_mod_file;
        let mut full = base;
        let mut p = p;
        while p.first().is_some_and(|s| s == "super") {
            full.pop();
            p.remove(0);
        }
        full.extend(p);
        push(line, full);
    }
    out
}

fn load(root: &Path) -> BTreeMap<Vec<String>, SourceFile> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .replace('\\', "/");
                let text = std::fs::read_to_string(&path).expect("read source");
                let module = module_of(&rel);
                // `main.rs` is its own crate root; keep it out of the module map.
                let key = if rel == "main.rs" {
                    vec!["<main>".to_string()]
                } else {
                    module.clone()
                };
                files.insert(key, SourceFile { rel, module, text });
            }
        }
    }
    files
}

/// Every rule broken in the tree under `root`, one line each.
fn violations(root: &Path) -> Vec<String> {
    let files = load(root);
    let mut problems = Vec::new();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for file in files.values() {
        let rel = file.rel.as_str();
        if !file.text.trim_start().starts_with("//!") {
            problems.push(format!(
                "{rel}: does not start with a `//!` line saying what it owns"
            ));
        }
        let layer = match layer_of(rel) {
            Ok(l) => l,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let code = code_of(&file.text);
        for (n, line) in code.lines().enumerate() {
            let n = n + 1;
            if is_http_edge(rel)
                && (line.contains("diesel::")
                    || line.contains("diesel_async::")
                    || line.contains("crate::schema"))
            {
                problems.push(format!(
                    "{rel}:{n}: an HTTP file touches SQL (move it to the feature's repo)"
                ));
            }
            if is_service_or_repo(rel) && contains_word_path(line, "salvo") {
                problems.push(format!(
                    "{rel}:{n}: a service or repository imports salvo (HTTP belongs in handlers)"
                ));
            }
        }
        for (line, target) in imports(&files, file) {
            if rel == "main.rs" {
                continue;
            }
            edges.entry(rel).or_default().insert(target.rel.as_str());
            if let Ok(to) = layer_of(&target.rel)
                && to > layer
            {
                problems.push(format!(
                    "{rel}:{line}: {layer:?} imports {to:?} ({})",
                    target.rel
                ));
            }
        }
    }
    for cycle in cycles(&edges) {
        problems.push(format!("import cycle: {}", cycle.join(" → ")));
    }
    problems
}

fn contains_word_path(line: &str, krate: &str) -> bool {
    let pat = format!("{krate}::");
    line.match_indices(&pat).any(|(at, _)| {
        !line[..at]
            .chars()
            .next_back()
            .is_some_and(|c| is_ident(c) || c == ':')
    })
}

/// Strongly connected components of more than one file (Tarjan), each sorted.
fn cycles<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Vec<Vec<&'a str>> {
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(v: &'a str, edges: &BTreeMap<&'a str, BTreeSet<&'a str>>, s: &mut State<'a>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        for &w in edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(w, edges, s);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    let nodes: Vec<&str> = edges.keys().copied().collect();
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(v, edges, &mut s);
        }
    }
    s.out
}

fn source_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn core_keeps_its_layers() {
    let problems = violations(&source_root());
    assert!(
        problems.is_empty(),
        "{} structural rule(s) broken in core/src (see core/tests/tidy.rs):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn other_crates_document_their_files() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["search/src", "runtime/src", "flags/src"] {
        let files = load(&root.join(krate));
        for f in files.values() {
            assert!(
                f.text.trim_start().starts_with("//!"),
                "{krate}/{}: does not start with a `//!` line",
                f.rel
            );
        }
    }
}

/// The checker catches each kind of break, on a small tree written for the purpose.
#[test]
fn broken_trees_are_caught() {
    let dir = std::env::temp_dir().join(format!("neotenant-tidy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "lib.rs",
        "//! root\npub mod error;\npub mod resources;\npub mod tenancy;\n",
    );
    write("error.rs", "//! errors\npub struct E;\n");
    write("tenancy/mod.rs", "//! tenancy\npub fn f() {}\n");
    write(
        "resources/mod.rs",
        "//! resources\npub mod service;\npub mod repo;\npub mod handlers;\n",
    );
    write("resources/repo.rs", "//! repo\nuse crate::error::E;\n");
    write("resources/service.rs", "//! service\nuse super::repo;\n");
    write(
        "resources/handlers.rs",
        "//! handlers\nuse super::service;\n",
    );
    assert_eq!(
        violations(&dir),
        Vec::<String>::new(),
        "a clean tree passes"
    );

    // A missing `//!` line.
    write("tenancy/mod.rs", "pub fn f() {}\n");
    assert!(
        violations(&dir)
            .iter()
            .any(|p| p.contains("tenancy/mod.rs: does not start"))
    );
    write("tenancy/mod.rs", "//! tenancy\npub fn f() {}\n");

    // SQL in a handler.
    write("resources/handlers.rs", "//! h\nuse diesel::prelude::*;\n");
    assert!(
        violations(&dir)
            .iter()
            .any(|p| p.contains("HTTP file touches SQL"))
    );
    write(
        "resources/handlers.rs",
        "//! handlers\nuse super::service;\n",
    );

    // salvo in a service (a comment or a string naming it does not count).
    write(
        "resources/service.rs",
        "//! s\n// salvo::x\nconst S: &str = \"salvo::y\";\nuse salvo::prelude::*;\n",
    );
    let p = violations(&dir);
    assert_eq!(
        p.iter().filter(|p| p.contains("imports salvo")).count(),
        1,
        "{p:?}"
    );
    write("resources/service.rs", "//! service\nuse super::repo;\n");

    // The kernel reaching up into a feature, inside a `{}` group.
    write(
        "tenancy/mod.rs",
        "//! t\nuse crate::{error::E, resources::service::x};\n",
    );
    assert!(
        violations(&dir)
            .iter()
            .any(|p| p.contains("tenancy/mod.rs:2: Kernel imports Features"))
    );
    // …or into an HTTP file, by a path in an expression.
    write(
        "tenancy/mod.rs",
        "//! t\nfn g() { crate::resources::handlers::h(); }\n",
    );
    assert!(
        violations(&dir)
            .iter()
            .any(|p| p.contains("Kernel imports Http"))
    );
    write("tenancy/mod.rs", "//! tenancy\npub fn f() {}\n");

    // A cycle inside one layer.
    write("resources/repo.rs", "//! repo\nuse super::service::x;\n");
    assert!(
        violations(&dir)
            .iter()
            .any(|p| p.starts_with("import cycle: resources/repo.rs → resources/service.rs"))
    );
    write("resources/repo.rs", "//! repo\nuse crate::error::E;\n");

    // A top-level module no layer claims.
    write("widgets.rs", "//! w\n");
    assert!(
        violations(&dir)
            .iter()
            .any(|p| p.contains("`widgets` has no layer"))
    );
    std::fs::remove_file(dir.join("widgets.rs")).unwrap();

    // Test modules may import what they like.
    write(
        "error.rs",
        "//! e\npub struct E;\n#[cfg(test)]\nmod tests {\n    use crate::resources::service;\n}\n",
    );
    assert_eq!(violations(&dir), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(&dir);
}
