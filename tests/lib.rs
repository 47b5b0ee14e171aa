//! Test harness: boots the real server in-process (a free port on 127.0.0.1) against the real
//! PostgreSQL and Redis that `make up` runs, and gives each test its own random tenants so
//! tests share services without seeing each other.
//!
//! Configuration is `../neotenant.toml` overlaid by `NEOTENANT_*` variables, exactly as the
//! binary reads it.

use std::path::PathBuf;
use std::sync::Mutex;

use neotenant::app::{self, Server};
use neotenant::config::Config;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

static MIGRATED: OnceCell<()> = OnceCell::const_new();

/// The configuration tests run with: the project's file, env overrides, port 0, quiet logs.
pub fn test_config() -> Config {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../neotenant.toml");
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.push(("NEOTENANT_SERVER__BIND".into(), "127.0.0.1:0".into()));
    if std::env::var("NEOTENANT_LOG__LEVEL").is_err() {
        env.push(("NEOTENANT_LOG__LEVEL".into(), "warn".into()));
    }
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.devstack/assets");
    env.push((
        "NEOTENANT_SERVER__ASSETS_DIR".into(),
        assets.display().to_string(),
    ));
    Config::load(Some(&path), env).expect("test configuration is valid")
}

/// Migrates the registry once per test process.
pub async fn ensure_migrated(config: &Config) {
    MIGRATED
        .get_or_init(|| async {
            neotenant::tenancy::service::migrate_platform(config)
                .await
                .expect("registry migrates (is `make up` running?)");
        })
        .await;
}

/// A random slug that no other test uses.
pub fn random_slug(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}-{:x}", n & 0xffff_ffff_ffff)
}

/// A tenant created for one test.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub slug: String,
    pub region: String,
    pub isolation: String,
    pub database: String,
    pub schema: String,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub server: Option<Server>,
    created: Mutex<Vec<String>>,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> Self {
        neotenant::telemetry::init(&config.log);
        ensure_migrated(&config).await;
        let server = app::start(config).await.expect("server starts");
        // Make sure the shared-database connections exist in the registry.
        neotenant::tenancy::service::migrate_all(&server.state)
            .await
            .expect("platform migrates");
        Self {
            base: format!("http://{}", server.addr),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("client"),
            server: Some(server),
            created: Mutex::new(Vec::new()),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn admin_token(&self) -> String {
        self.state().config.admin.token.expose().to_string()
    }

    pub fn state(&self) -> &neotenant::app::AppState {
        &self.server.as_ref().expect("running").state
    }

    /// A request to the admin API with the platform token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(self.admin_token())
    }

    /// A request on behalf of `tenant` (X-Tenant header).
    pub fn tenant_req(
        &self,
        method: reqwest::Method,
        tenant: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("x-tenant", tenant)
    }

    /// Creates a tenant through the admin API; it is deleted by [`TestApp::cleanup`].
    pub async fn with_tenant(&self, region: &str, isolation: &str) -> TestTenant {
        let slug = random_slug("t");
        let res = self
            .admin(reqwest::Method::POST, "/admin/v1/tenants")
            .json(&json!({
                "slug": slug, "display_name": format!("Tenant {slug}"),
                "region": region, "isolation": isolation
            }))
            .send()
            .await
            .expect("create tenant");
        let status = res.status();
        let body: Value = res.json().await.expect("json");
        assert_eq!(status, 201, "create tenant: {body}");
        self.created.lock().unwrap().push(slug.clone());
        TestTenant {
            slug,
            region: region.into(),
            isolation: isolation.into(),
            database: body["database"].as_str().unwrap().into(),
            schema: body["schema"].as_str().unwrap().into(),
        }
    }

    /// Registers a tenant created another way so that cleanup deletes it.
    pub fn track(&self, slug: &str) {
        self.created.lock().unwrap().push(slug.to_string());
    }

    /// Deletes the tenants this app created, then stops the server.
    pub async fn cleanup(mut self) {
        let slugs: Vec<String> = self.created.lock().unwrap().drain(..).collect();
        for slug in slugs {
            let _ = self
                .admin(
                    reqwest::Method::DELETE,
                    &format!("/admin/v1/tenants/{slug}?confirm={slug}"),
                )
                .send()
                .await;
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// Follows `next_cursor` from `path` (which already holds `?limit=…`) to the last page and
/// returns every page's `items`, checking each page respects the limit. `request` builds the
/// request for a path (tenant or admin).
pub async fn all_pages(
    limit: usize,
    path: &str,
    request: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_string(),
        };
        let res = request(&url).send().await.expect("list request");
        assert_eq!(res.status(), 200, "listing {url}");
        let page: Value = res.json().await.expect("list is JSON");
        let batch = page["items"].as_array().expect("items").clone();
        assert!(batch.len() <= limit, "page larger than its limit");
        items.extend(batch);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
}

/// A direct connection to one database of the local server, for assertions that bypass the API.
pub async fn direct(config: &Config, database: &str) -> diesel_async::AsyncPgConnection {
    use diesel_async::AsyncConnection;
    let url = neotenant::db::database_url(config.database.url.expose(), database);
    diesel_async::AsyncPgConnection::establish(&url)
        .await
        .expect("direct connection")
}

/// Asserts a problem response: status, content type, `type` slug; returns the body.
pub async fn expect_problem(res: reqwest::Response, status: u16, slug: &str) -> Value {
    let got = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let request_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = res.text().await.unwrap_or_default();
    assert_eq!(got, status, "status for {slug}: {text}");
    assert_eq!(
        content_type, "application/problem+json",
        "content type: {text}"
    );
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("problem is JSON: {text}"));
    assert_eq!(
        body["type"],
        format!("https://neotenant.dev/problems/{slug}"),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert!(!request_id.is_empty(), "x-request-id header present");
    assert_eq!(
        body["request_id"], request_id,
        "problem carries the request id"
    );
    body
}
