//! Test harness: boots the real server in-process (a free port on 127.0.0.1) against the real
//! PostgreSQL and Redis that `make up` runs, and gives each test its own random tenants so
//! tests share services without seeing each other.
//!
//! Configuration is `../neotenant.toml` overlaid by `NEOTENANT_*` variables, exactly as the
//! binary reads it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use neotenant::app::{self, Server};
use neotenant::config::Config;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

static MIGRATED: OnceCell<()> = OnceCell::const_new();

/// The project's configuration file.
pub fn config_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../neotenant.toml")
}

/// The configuration tests run with: the project's file, env overrides, port 0, quiet logs.
pub fn test_config() -> Config {
    Config::load(Some(&config_path()), test_env()).expect("test configuration is valid")
}

/// The environment [`test_config`] reads (this process's, plus the tests' overrides); a
/// server started as a child process with it runs as the in-process ones do.
pub fn test_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.push(("NEOTENANT_SERVER__BIND".into(), "127.0.0.1:0".into()));
    if std::env::var("NEOTENANT_LOG__LEVEL").is_err() {
        env.push(("NEOTENANT_LOG__LEVEL".into(), "warn".into()));
    }
    // Tests share one client address: generous limits and a namespace of this process's own,
    // so only tests that set tight limits on purpose meet them.
    for (key, value) in [
        ("NEOTENANT_RATE_LIMIT__PER_IP_PER_SEC", "1000000"),
        ("NEOTENANT_RATE_LIMIT__PER_IP_BURST", "1000000"),
        ("NEOTENANT_RATE_LIMIT__PER_USER_PER_SEC", "1000000"),
        ("NEOTENANT_RATE_LIMIT__PER_USER_BURST", "1000000"),
        ("NEOTENANT_RATE_LIMIT__MAX_AUTH_FAILURES", "1000000"),
        ("NEOTENANT_RATE_LIMIT__TRUST_FORWARDED_FOR", "true"),
        // Seal and forward the audit log quickly, so tests need not wait.
        ("NEOTENANT_AUDIT__SEAL_INTERVAL_MS", "50"),
        ("NEOTENANT_AUDIT__FORWARD_INTERVAL_MS", "100"),
        ("NEOTENANT_SEARCH__INDEX_INTERVAL_MS", "50"),
        // Last-seen times are written every second.
        ("NEOTENANT_USERS__SEEN_FLUSH_SECS", "1"),
        // Plugins: a small pool, quick deliveries and retries, a breaker that trips early.
        ("NEOTENANT_PLUGINS__POOL_INSTANCES", "16"),
        ("NEOTENANT_PLUGINS__TIMEOUT_MS", "1000"),
        ("NEOTENANT_PLUGINS__BREAKER_THRESHOLD", "3"),
        ("NEOTENANT_PLUGINS__DELIVERY_INTERVAL_MS", "50"),
        ("NEOTENANT_PLUGINS__RETRY_BASE_MS", "100"),
        ("NEOTENANT_PLUGINS__DELIVERY_MAX_ATTEMPTS", "4"),
        // Invitation mail: two quick attempts, the same on every server of the run.
        ("NEOTENANT_INVITATIONS__MAIL_MAX_ATTEMPTS", "2"),
        ("NEOTENANT_INVITATIONS__MAIL_RETRY_BASE_MS", "50"),
        // Notifications: quick retries, three attempts, a quick worker.
        ("NEOTENANT_NOTIFICATIONS__RETRY_BASE_MS", "50"),
        ("NEOTENANT_NOTIFICATIONS__MAX_ATTEMPTS", "3"),
        ("NEOTENANT_NOTIFICATIONS__WORKER_INTERVAL_MS", "50"),
        ("NEOTENANT_NOTIFICATIONS__SWEEP_INTERVAL_SECS", "5"),
        ("NEOTENANT_NOTIFICATIONS__PROVIDER_TIMEOUT_MS", "1000"),
        ("NEOTENANT_NOTIFICATIONS__FAILOVER_AFTER", "2"),
        // A server stopped mid-batch (every test's, at its end) hands its claims on quickly.
        ("NEOTENANT_NOTIFICATIONS__LEASE_SECS", "1"),
        // Webhooks: the tests' receivers listen on loopback; three quick attempts; a receiver
        // that hangs is given up on after 10 s; small replays.
        ("NEOTENANT_WEBHOOKS__ALLOW_HOSTS", "127.0.0.1"),
        ("NEOTENANT_WEBHOOKS__RETRY_SCHEDULE", "0,0.2,0.2"),
        ("NEOTENANT_WEBHOOKS__TIMEOUT_MS", "10000"),
        ("NEOTENANT_WEBHOOKS__WORKER_INTERVAL_MS", "50"),
        ("NEOTENANT_WEBHOOKS__SWEEP_INTERVAL_SECS", "5"),
        ("NEOTENANT_WEBHOOKS__REPLAY_MAX", "50"),
    ] {
        env.push((key.into(), value.into()));
    }
    env.push((
        "NEOTENANT_RATE_LIMIT__NAMESPACE".into(),
        format!("test-{}", random_slug("rl")),
    ));
    // Each server its own search indexes (an index has one writer).
    env.push((
        "NEOTENANT_SEARCH__DATA_DIR".into(),
        std::env::temp_dir()
            .join(format!("neotenant-search-{}", random_slug("s")))
            .display()
            .to_string(),
    ));
    // Compiled components are content-addressed: servers may share the cache.
    env.push((
        "NEOTENANT_PLUGINS__CACHE_DIR".into(),
        std::env::temp_dir()
            .join("neotenant-plugin-cache")
            .display()
            .to_string(),
    ));
    let assets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.devstack/assets");
    env.push((
        "NEOTENANT_SERVER__ASSETS_DIR".into(),
        assets.display().to_string(),
    ));
    env
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
    /// Keycloak realm of its users, and (organization mode) its organization alias.
    pub realm: String,
    pub organization: Option<String>,
    /// An access token of a member of this tenant.
    pub token: String,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub server: Option<Server>,
    created: Mutex<Vec<String>>,
    tokens: Mutex<HashMap<String, String>>,
    users: Mutex<Vec<(String, String)>>,
}

/// The password every test user gets.
pub const TEST_PASSWORD: &str = "test-Password-123";

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> Self {
        neotenant::telemetry::init(&config.log);
        ensure_migrated(&config).await;
        let server = app::start(config).await.expect("server starts");
        // Make sure the shared-database connections exist in the registry.
        neotenant::tenancy::service::ensure_platform(&server.state.tenancy)
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
            tokens: Mutex::new(HashMap::new()),
            users: Mutex::new(Vec::new()),
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

    /// A request on behalf of `tenant` (X-Tenant header), with the token of its test member
    /// when the tenant was made by [`TestApp::with_tenant`].
    pub fn tenant_req(
        &self,
        method: reqwest::Method,
        tenant: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let req = self.anonymous(method, tenant, path);
        match self.tokens.lock().unwrap().get(tenant) {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// A request naming `tenant` without any credentials.
    pub fn anonymous(
        &self,
        method: reqwest::Method,
        tenant: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("x-tenant", tenant)
    }

    /// Creates a tenant (organization mode) and a member with a token; deleted by cleanup.
    pub async fn with_tenant(&self, region: &str, isolation: &str) -> TestTenant {
        self.with_tenant_identity(region, isolation, "organization")
            .await
    }

    /// Creates a tenant whose users live in `identity` mode (`realm` or `organization`).
    pub async fn with_tenant_identity(
        &self,
        region: &str,
        isolation: &str,
        identity: &str,
    ) -> TestTenant {
        let slug = random_slug("t");
        let res = self
            .admin(reqwest::Method::POST, "/admin/v1/tenants")
            .json(&json!({
                "slug": slug, "display_name": format!("Tenant {slug}"),
                "region": region, "isolation": isolation, "identity": {"mode": identity}
            }))
            .send()
            .await
            .expect("create tenant");
        let status = res.status();
        let body: Value = res.json().await.expect("json");
        assert_eq!(status, 201, "create tenant: {body}");
        self.created.lock().unwrap().push(slug.clone());
        let realm = body["identity"]["realm"]
            .as_str()
            .expect("identity realm")
            .to_string();
        let organization = body["identity"]["organization"]
            .as_str()
            .map(str::to_string);
        let user = format!("u-{slug}");
        let token = self
            .member_token(&realm, organization.as_deref(), &user)
            .await;
        self.tokens
            .lock()
            .unwrap()
            .insert(slug.clone(), token.clone());
        TestTenant {
            slug,
            region: region.into(),
            isolation: isolation.into(),
            database: body["database"].as_str().unwrap().into(),
            schema: body["schema"].as_str().unwrap().into(),
            realm,
            organization,
            token,
        }
    }

    /// Makes `username` a member (of `organization`, if given) in `realm` and logs it in.
    pub async fn member_token(
        &self,
        realm: &str,
        organization: Option<&str>,
        username: &str,
    ) -> String {
        let kc = &self.state().keycloak;
        let user_id = kc
            .ensure_user(
                realm,
                username,
                &format!("{username}@example.test"),
                TEST_PASSWORD,
            )
            .await
            .expect("test user");
        self.users
            .lock()
            .unwrap()
            .push((realm.to_string(), user_id.clone()));
        if let Some(alias) = organization {
            let (org_id, _) = kc
                .find_organization(realm, alias)
                .await
                .unwrap()
                .expect("organization exists");
            kc.add_organization_member(realm, &org_id, &user_id)
                .await
                .expect("membership");
        }
        self.login(realm, username, organization)
            .await
            .expect("login")
    }

    /// Password login through the end-user client; `organization` asks for a token scoped to it.
    pub async fn login(
        &self,
        realm: &str,
        username: &str,
        organization: Option<&str>,
    ) -> Result<String, Value> {
        self.login_full(realm, username, organization)
            .await
            .map(|body| {
                body["access_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
    }

    /// Like [`TestApp::login`], returning Keycloak's whole token response.
    pub async fn login_full(
        &self,
        realm: &str,
        username: &str,
        organization: Option<&str>,
    ) -> Result<Value, Value> {
        let state = self.state();
        let scope = match organization {
            Some(alias) => format!("openid organization:{alias}"),
            None => "openid".to_string(),
        };
        let res = self
            .client
            .post(state.keycloak.token_endpoint(realm))
            .form(&[
                ("grant_type", "password"),
                ("client_id", state.config.auth.app_client_id.as_str()),
                ("username", username),
                ("password", TEST_PASSWORD),
                ("scope", scope.as_str()),
            ])
            .send()
            .await
            .expect("token endpoint");
        let body: Value = res.json().await.expect("token JSON");
        if body["access_token"].is_string() {
            Ok(body)
        } else {
            Err(body)
        }
    }

    /// Makes [`TestApp::tenant_req`] send `token` for `slug` (a tenant another app made).
    pub fn use_token(&self, slug: &str, token: &str) {
        self.tokens
            .lock()
            .unwrap()
            .insert(slug.to_string(), token.to_string());
    }

    /// Gives a tenant made another way a member with a token, used by `tenant_req`.
    pub async fn add_member(&self, slug: &str) {
        let shown: Value = self
            .admin(reqwest::Method::GET, &format!("/admin/v1/tenants/{slug}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let realm = shown["identity"]["realm"].as_str().expect("realm");
        let organization = shown["identity"]["organization"].as_str();
        let token = self
            .member_token(realm, organization, &format!("u-{slug}"))
            .await;
        self.use_token(slug, &token);
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
        let users: Vec<(String, String)> = self.users.lock().unwrap().drain(..).collect();
        for (realm, id) in users {
            let _ = self.state().keycloak.delete_user(&realm, &id).await;
        }
        if let Some(server) = self.server.take() {
            // The server's own search indexes go with it (each test server has a directory).
            let dir = server.state.config.search.data_dir.clone();
            server.shutdown().await;
            if dir.starts_with(std::env::temp_dir()) {
                let _ = std::fs::remove_dir_all(dir);
            }
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

/// Send a request and read its JSON body (panics on transport or JSON errors: tests only).
pub trait Fetch {
    fn fetch_json(self) -> impl std::future::Future<Output = Value> + Send;
}

impl Fetch for reqwest::RequestBuilder {
    async fn fetch_json(self) -> Value {
        self.send()
            .await
            .expect("request")
            .json()
            .await
            .expect("JSON body")
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

/// A TCP forwarder on a free loopback port to `target`; stopping it makes the target look down
/// to whoever was configured with the forwarder's address.
pub struct Forwarder {
    pub addr: std::net::SocketAddr,
    tasks: std::sync::Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Forwarder {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let tasks: std::sync::Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Default::default();
        let registry = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                registry.lock().unwrap().push(conn);
            }
        });
        tasks.lock().unwrap().push(accept);
        Self { addr, tasks }
    }

    /// Closes the port and every forwarded connection.
    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// The caller's user id (creating the user row on first sight).
pub async fn me(app: &TestApp, slug: &str, token: &str) -> String {
    let me: Value = app
        .anonymous(reqwest::Method::GET, slug, "/v1/me")
        .bearer_auth(token)
        .fetch_json()
        .await;
    me["id"].as_str().expect("user id").to_string()
}

/// A tenant (organization mode) with a member (`t.token`) and an admin appointed by the
/// platform: (tenant, member id, admin token, admin id).
pub async fn tenant_with_admin(app: &TestApp) -> (TestTenant, String, String, String) {
    let t = app.with_tenant("eu", "schema").await;
    let member = me(app, &t.slug, &t.token).await;
    let boss_name = format!("boss-{}", t.slug);
    let boss = app
        .member_token(&t.realm, t.organization.as_deref(), &boss_name)
        .await;
    let boss_id = me(app, &t.slug, &boss).await;
    let res = app
        .admin(
            reqwest::Method::POST,
            &format!("/admin/v1/tenants/{}/role-assignments", t.slug),
        )
        .json(&json!({"role": "admin", "user_id": boss_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    (t, member, boss, boss_id)
}

/// The audit actions recorded in a tenant, oldest first (read directly from its schema).
pub async fn audit_actions(app: &TestApp, t: &TestTenant) -> Vec<String> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        action: String,
    }
    let mut conn = direct(&app.state().config, &t.database).await;
    diesel::sql_query(format!(
        "SELECT action FROM \"{}\".audit_log ORDER BY id",
        t.schema
    ))
    .load::<Row>(&mut conn)
    .await
    .expect("audit log")
    .into_iter()
    .map(|r| r.action)
    .collect()
}

/// Waits (up to 5 s) until the tenant's audit log holds `count` entries of `action`.
pub async fn await_audit(app: &TestApp, t: &TestTenant, action: &str, count: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let n = audit_actions(app, t)
            .await
            .iter()
            .filter(|a| *a == action)
            .count();
        if n >= count {
            assert_eq!(n, count, "exactly {count} {action} entries");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{action} recorded {n} times, expected {count}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `GET /v1/audit/verify` of the tenant, as `token`.
pub async fn audit_verify(app: &TestApp, t: &TestTenant, token: &str) -> Value {
    app.anonymous(reqwest::Method::GET, &t.slug, "/v1/audit/verify")
        .bearer_auth(token)
        .fetch_json()
        .await
}

/// Waits (up to 10 s) until everything written so far is sealed and verifies (each
/// verification writes one entry itself, so one may be unsealed).
pub async fn audit_settled(app: &TestApp, t: &TestTenant, token: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v = audit_verify(app, t, token).await;
        if v["ok"] == true && v["unsealed"].as_i64().unwrap() <= 1 {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "never settled: {v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The messages the devstack's SMTP sink received for `address` (each a whole RFC 5322 text).
pub fn mails_to(address: &str) -> Vec<String> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.devstack/smtp/maildir/new");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .filter(|m| {
                    m.lines()
                        .any(|l| l.eq_ignore_ascii_case(&format!("To: {address}")))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (up to 30 s) until the SMTP sink holds `count` messages for `address`; returns them.
pub async fn await_mails(address: &str, count: usize) -> Vec<String> {
    // Generous: under the whole suite's load the relay and the sink are slow at times.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mails = mails_to(address);
        if mails.len() >= count || std::time::Instant::now() > deadline {
            return mails;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The text of a message with quoted-printable soft line breaks and `=3D` undone (enough to
/// read links and tokens, which are ASCII).
pub fn unfold(mail: &str) -> String {
    mail.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

/// A multipart body with one file part `file` named `name`, declared as `content_type`.
pub fn upload(name: &str, content_type: &str, data: &[u8]) -> (String, Vec<u8>) {
    let boundary = "neotenant-avatar-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// PNG bytes of `img` (or another format).
pub fn encode(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// CRC-32 (IEEE) of `bytes`, as PNG chunks carry it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A 1×1 PNG whose header claims 100,000×100,000 pixels (its header checksum fixed up): a
/// decompression bomb as far as any reader of the header can tell.
pub fn lying_png() -> Vec<u8> {
    let mut flood = encode(
        image::DynamicImage::ImageLuma8(image::GrayImage::new(1, 1)),
        image::ImageFormat::Png,
    );
    flood[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    flood[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&flood[12..29]);
    flood[29..33].copy_from_slice(&crc.to_be_bytes());
    flood
}

/// The JSON pointers of a validation problem's field errors, in order.
pub fn problem_pointers(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["pointer"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
