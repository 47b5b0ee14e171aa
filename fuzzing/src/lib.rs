//! Fuzz harnesses: each takes arbitrary bytes and feeds them to one parser that reads
//! untrusted input, the way the server does. A harness must never panic, hang or grow memory
//! without bound whatever the bytes; where the input allows it, it also checks a property
//! (an accepted value stays within its documented limits).
//!
//! The coverage-guided targets in `fuzz/` call these (`make fuzz`), and `tests/replay.rs`
//! runs every committed seed and every input that once crashed a target through them in the
//! ordinary test suite, so a fixed crash stays fixed. Never reaches a database, a network or
//! anything outside a temporary directory.

use std::sync::OnceLock;

use bytes::Bytes;
use neotenant::error::FieldError;
use neotenant::resources::transfer::{self, Format, RowSink};
use neotenant::resources::{ResourceInput, ResourceType, TypeInput};
use serde::Deserialize;
use serde_json::{Value, json};

/// A harness: any bytes in, a panic only on a bug.
pub type Harness = fn(&[u8]);

/// The harnesses by name, as the targets and the replay test name them.
pub const TARGETS: &[(&str, Harness)] = &[
    ("token", token),
    ("json_schema", json_schema),
    ("search_query", search_query),
    ("plugin_manifest", plugin_manifest),
    ("multipart", multipart),
    ("import", import),
    ("netguard", netguard),
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}

/// Bearer credentials: JWT structure (header, algorithm, claims) and the claim checks run on
/// whatever the payload holds; API key shapes; pagination cursors.
pub fn token(data: &[u8]) {
    use neotenant::auth::token::{Expected, check_claims, parse};
    let text = String::from_utf8_lossy(data);
    let expected = Expected {
        issuer: "http://127.0.0.1/realms/acme",
        audience: "neotenant-api",
        organization: Some("acme"),
        tenant: "acme",
        leeway_secs: 30,
        max_bytes: 8192,
    };
    let now = 1_800_000_000;
    if let Ok(parsed) = parse(&text, expected.max_bytes) {
        if let Ok(p) = check_claims(parsed.claims(), &expected, now) {
            assert!(
                p.expires_at.saturating_add(30) >= now,
                "an expired token passed"
            );
        }
        let realm = Expected {
            organization: None,
            ..expected
        };
        let _ = check_claims(parsed.claims(), &realm, now);
    }
    if let Ok(claims) = serde_json::from_slice::<Value>(data) {
        let _ = check_claims(&claims, &expected, now);
    }
    if let Some((prefix, secret)) = neotenant::apikeys::service::split(&text) {
        assert!(text.starts_with(prefix) && text.ends_with(secret));
        assert_eq!(prefix.len() + 1 + secret.len(), text.len());
    }
    let _ = neotenant::cursor::decode_cursor::<usize>(&text);
    let _ = neotenant::cursor::decode_cursor::<(String, uuid::Uuid)>(&text);
}

/// What a tenant sends to define a resource type, and documents checked against it.
#[derive(Deserialize)]
struct SchemaCase {
    definition: TypeInput,
    #[serde(default)]
    data: Vec<Value>,
}

/// Tenant JSON Schemas: a resource type definition (`{"definition": …, "data": […]}`) checked
/// as `POST /v1/resource-types` checks it, then, if accepted, compiled and every document
/// validated; any other JSON is checked as a user-attribute schema.
pub fn json_schema(data: &[u8]) {
    use neotenant::json_schema::{check_object_schema, compile, violations};
    match serde_json::from_slice::<SchemaCase>(data) {
        Ok(case) => {
            let mut errors = Vec::new();
            neotenant::resources::types::check(&case.definition, &["other".into()], &mut errors);
            if errors.is_empty() {
                let v =
                    compile(&case.definition.schema).expect("a schema the checks accept compiles");
                for d in case.data.iter().take(16) {
                    let found = neotenant::resources::types::validate(&v, d, "/data");
                    assert!(found.len() <= 100, "at most 100 violations are listed");
                }
            }
        }
        Err(_) => {
            let Ok(schema) = serde_json::from_slice::<Value>(data) else {
                return;
            };
            if check_object_schema(&schema, "/schema", 64 * 1024).is_empty() {
                let v = compile(&schema).expect("a schema the checks accept compiles");
                let _ = violations(&v, &schema, "/attributes");
            }
        }
    }
}

struct SearchFixture {
    _dir: tempfile::TempDir,
    index: std::sync::Arc<neotenant_search::TenantIndex>,
}

fn search_fixture() -> &'static SearchFixture {
    static FIXTURE: OnceLock<SearchFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let registry = neotenant_search::Registry::new(dir.path(), 4);
        let index = registry.get("fuzz").expect("an index");
        let docs: Vec<neotenant_search::Doc> = [
            (
                "Printer on fire",
                "the printer on floor 3 is on fire",
                "open",
                5,
            ),
            ("Übergrößenträger", "naïve café façade résumé", "closed", 1),
            ("Quarterly report", "revenue grew; costs fell", "open", 3),
        ]
        .iter()
        .enumerate()
        .map(
            |(i, (title, body, status, priority))| neotenant_search::Doc {
                id: format!("res_{i}"),
                type_name: if i % 2 == 0 { "ticket" } else { "note" }.into(),
                title: (*title).into(),
                body: format!("{title} {body}"),
                data: json!({"status": status, "priority": priority})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                tags: vec!["hardware".into(), format!("t{i}")],
                category: Some("facilities".into()),
                owner: "owner-1".into(),
                team: Some("team-1".into()),
                shared_users: vec![],
                shared_teams: vec![],
                created: 1_700_000_000 + i as i64,
                updated: 1_700_000_100 + i as i64,
            },
        )
        .collect();
        index.apply(&docs, &[], "1").expect("indexing the fixture");
        SearchFixture { _dir: dir, index }
    })
}

/// Search queries as `GET /v1/search` passes them on: the first line is `q` (at most 500
/// characters, as the handler allows), later lines `type=`, `tag=`, `category=`, `owner=`,
/// `team=`, `created=<from>,<to>`, `offset=` filters.
pub fn search_query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let mut q = neotenant_search::SearchQuery {
        text: lines.next().unwrap_or_default().chars().take(500).collect(),
        types: vec![],
        tags: vec![],
        category: None,
        owner: None,
        team: None,
        created: (None, None),
        updated: (None, None),
        visibility: neotenant_search::Visibility::All,
        limit: 20,
        offset: 0,
    };
    for line in lines.take(40) {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "type" => q.types.push(v.into()),
            "tag" => q.tags.push(v.into()),
            "category" => q.category = Some(v.into()),
            "owner" => q.owner = Some(v.into()),
            "team" => q.team = Some(v.into()),
            "created" => {
                let (a, b) = v.split_once(',').unwrap_or((v, ""));
                q.created = (a.parse().ok(), b.parse().ok());
            }
            // The handler refuses cursors past 10,000 results.
            "offset" => q.offset = v.parse::<usize>().map_or(0, |o| o.min(10_000)),
            "only" => {
                q.visibility = neotenant_search::Visibility::Only {
                    owner: v.into(),
                    teams: vec!["team-1".into()],
                    shared_user: v.into(),
                    shared_teams: vec![],
                }
            }
            _ => {}
        }
    }
    let r = search_fixture()
        .index
        .search(&q)
        .expect("a query never fails");
    assert!(r.hits.len() <= q.limit);
    assert!(r.total <= 3);
}

/// `plugin.json` as uploaded, then the checks against a component's imports and against an
/// installation's grants.
pub fn plugin_manifest(data: &[u8]) {
    use neotenant::plugins::manifest::{Manifest, check_grants};
    let Ok(m) = Manifest::parse(data) else {
        return;
    };
    assert!(neotenant::plugins::manifest::is_name(&m.name));
    let all = ["logging", "kv", "events", "http"].map(String::from);
    for kind in [
        neotenant_runtime::Kind::ResourceType,
        neotenant_runtime::Kind::Integration,
    ] {
        let _ = m.contradictions(kind, &all);
        let _ = m.contradictions(kind, &[]);
    }
    let allow = neotenant::netguard::AllowList::parse("127.0.0.1:9000,hooks.internal");
    let _ = check_grants(&m, &m.capabilities, &allow);
    for topic in [
        "resource.created",
        "resource.ticket.updated",
        "user.deleted",
    ] {
        for p in &m.events {
            let _ = neotenant::plugins::manifest::matches(p, topic);
        }
    }
}

fn request(content_type: &str, body: Bytes) -> salvo::Request {
    let mut req = salvo::Request::new();
    if let Ok(v) = salvo::http::HeaderValue::from_str(content_type) {
        req.headers_mut()
            .insert(salvo::http::header::CONTENT_TYPE, v);
    }
    *req.body_mut() = salvo::http::ReqBody::Once(body);
    req
}

/// Multipart uploads: the first line is the boundary (or a whole `Content-Type` when it has a
/// `;`), the rest the body; read as a plugin upload and as a one-file upload (avatars).
pub fn multipart(data: &[u8]) {
    let (head, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let content_type = if head.contains(';') {
        head.to_string()
    } else {
        format!("multipart/form-data; boundary={head}")
    };
    let body = Bytes::copy_from_slice(body);
    runtime().block_on(async {
        let mut req = request(&content_type, body.clone());
        if let Ok((component, manifest)) =
            neotenant::plugins::handlers::read_upload(&mut req, 64 * 1024, 32 * 1024).await
        {
            assert!(component.len() <= 32 * 1024);
            assert!(manifest.len() <= 64 * 1024);
        }
        let mut req = request(&content_type, body);
        if let Ok(file) =
            neotenant::http::extract::read_file_part(&mut req, 16 * 1024, "a file").await
        {
            assert!(file.len() <= 16 * 1024);
        }
    });
}

/// The rows an import produced, and the order they came in.
#[derive(Default)]
struct Rows {
    lines: Vec<usize>,
    good: usize,
}

impl RowSink for Rows {
    fn row(&mut self, line: usize, row: Result<ResourceInput, Vec<FieldError>>) {
        if let Some(last) = self.lines.last() {
            assert!(line > *last, "rows come in file order: {line} after {last}");
        }
        self.lines.push(line);
        if let Ok(input) = row {
            assert!(input.data.is_object(), "a row's data is an object");
            self.good += 1;
        }
    }

    async fn flush_if_full(&mut self) -> neotenant::error::ApiResult<()> {
        Ok(())
    }
}

fn import_type() -> ResourceType {
    ResourceType {
        name: "ticket".into(),
        title: "Ticket".into(),
        description: String::new(),
        version: 1,
        schema: json!({"type": "object", "properties": {
            "title": {"type": "string"}, "priority": {"type": "integer"},
            "score": {"type": "number"}, "done": {"type": "boolean"},
            "meta": {"type": "object"}, "list": {"type": "array"}, "a/b~c": {"type": "string"}
        }}),
        searchable: vec!["title".into()],
        filterable: vec![],
        sortable: vec![],
        relationships: vec![],
        source: "declarative".into(),
        plugin: None,
        created_at: chrono::DateTime::UNIX_EPOCH,
        updated_at: chrono::DateTime::UNIX_EPOCH,
    }
}

/// CSV and JSON Lines imports (the first byte chooses: even JSON Lines, odd CSV), read into a
/// sink that collects the rows; at most 256 KiB.
pub fn import(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let format = if first % 2 == 0 {
        Format::JsonLines
    } else {
        Format::Csv
    };
    let t = import_type();
    let body = salvo::http::ReqBody::Once(Bytes::copy_from_slice(rest));
    let mut rows = Rows::default();
    let r = runtime().block_on(transfer::read_rows(&mut rows, &t, format, body, 256 * 1024));
    if r.is_ok() && format == Format::JsonLines {
        let lines = rest.split(|b| *b == b'\n').count();
        assert!(rows.lines.len() <= lines);
    }
}

/// Webhook and integration URLs and the operator's allow-list: the shape check, the literal
/// check and the grant check, with an empty list and with one parsed from the input's first
/// line.
pub fn netguard(data: &[u8]) {
    use neotenant::netguard::{
        AllowList, check_shape, is_public, literal_permitted, refuses_grant,
    };
    let text = String::from_utf8_lossy(data);
    let (list, url) = text.split_once('\n').unwrap_or(("", &text));
    let listed = AllowList::parse(list);
    let none = AllowList::default();
    let _ = refuses_grant(url, &listed);
    let _ = refuses_grant(url, &none);
    if let Ok(u) = check_shape(url) {
        assert!(matches!(u.scheme(), "http" | "https"));
        let permitted = literal_permitted(&u, &none);
        match u.host() {
            Some(url::Host::Ipv4(ip)) => assert_eq!(permitted, is_public(ip.into())),
            Some(url::Host::Ipv6(ip)) => assert_eq!(permitted, is_public(ip.into())),
            _ => {}
        }
        let _ = literal_permitted(&u, &listed);
    }
}
