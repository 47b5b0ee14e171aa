//! Webhooks: deliveries signed per Standard Webhooks (checked by the specification's reference
//! Python library, during and after a secret rotation, and `v1a` Ed25519), retries on the
//! schedule into dead letters, manual retry and replay, 410 disabling the endpoint (the tenant
//! told), a hanging receiver that delays no other endpoint, SSRF refusals, redirects and huge
//! answers, secrets sealed in the database, and tenant isolation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use neotenant_tests::{
    Fetch, TestApp, TestTenant, direct, expect_problem, problem_pointers, tenant_with_admin,
};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// How a path of the receiver answers.
#[derive(Clone, Debug)]
enum Mode {
    Status(u16),
    /// Never answers.
    Hang,
    /// 307 to `/elsewhere`.
    Redirect,
    /// 200 with a 50 MB body.
    Huge,
    /// 429 with `Retry-After`.
    RetryAfter(u64),
}

#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// A loopback HTTP receiver that records every request and answers per path.
#[derive(Clone)]
struct Receiver {
    port: u16,
    log: Arc<Mutex<Vec<Received>>>,
    modes: Arc<Mutex<HashMap<String, Mode>>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            port: listener.local_addr().unwrap().port(),
            log: Default::default(),
            modes: Default::default(),
        };
        let me = r.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let _ = me.serve(sock).await;
                });
            }
        });
        r
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn set(&self, path: &str, mode: Mode) {
        self.modes.lock().unwrap().insert(path.to_string(), mode);
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    async fn serve(&self, sock: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = sock.into_split();
        let mut read = BufReader::new(read);
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let path = line.split(' ').nth(1).unwrap_or("/").to_string();
            let mut headers = HashMap::new();
            loop {
                let mut h = String::new();
                read.read_line(&mut h).await?;
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let len: usize = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            read.read_exact(&mut body).await?;
            self.log.lock().unwrap().push(Received {
                path: path.clone(),
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let mode = self
                .modes
                .lock()
                .unwrap()
                .get(&path)
                .cloned()
                .unwrap_or(Mode::Status(200));
            match mode {
                Mode::Status(s) => {
                    let text = format!("answer {s} from the receiver");
                    write
                        .write_all(
                            format!(
                                "HTTP/1.1 {s} X\r\ncontent-length: {}\r\n\r\n{text}",
                                text.len()
                            )
                            .as_bytes(),
                        )
                        .await?;
                }
                Mode::RetryAfter(secs) => {
                    write
                        .write_all(
                            format!(
                                "HTTP/1.1 429 X\r\nretry-after: {secs}\r\ncontent-length: 0\r\n\r\n"
                            )
                            .as_bytes(),
                        )
                        .await?;
                }
                Mode::Redirect => {
                    write
                        .write_all(
                            format!(
                                "HTTP/1.1 307 X\r\nlocation: {}\r\ncontent-length: 0\r\n\r\n",
                                self.url("/elsewhere")
                            )
                            .as_bytes(),
                        )
                        .await?;
                }
                Mode::Huge => {
                    write
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 52428800\r\n\r\n")
                        .await?;
                    let chunk = vec![b'x'; 65536];
                    for _ in 0..800 {
                        write.write_all(&chunk).await?;
                    }
                }
                Mode::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            }
        }
    }
}

fn call(
    app: &TestApp,
    t: &TestTenant,
    token: &str,
    method: Method,
    path: &str,
) -> reqwest::RequestBuilder {
    app.anonymous(method, &t.slug, path).bearer_auth(token)
}

async fn create_endpoint(app: &TestApp, t: &TestTenant, token: &str, body: Value) -> Value {
    let res = call(app, t, token, Method::POST, "/v1/webhooks/endpoints")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let v: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v
}

/// Creates resource type `name` (one `resource_type.created` event).
async fn make_type(app: &TestApp, t: &TestTenant, token: &str, name: &str) {
    let res = call(app, t, token, Method::POST, "/v1/resource-types")
        .json(&json!({"name": name, "title": name, "schema": {"type": "object"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
}

/// Waits (up to `secs`) until `check` holds for the receiver's requests at `path`.
async fn await_received(
    r: &Receiver,
    path: &str,
    secs: u64,
    check: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = r.at(path);
        if check(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "receiver at {path} got {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the endpoint's messages satisfy `check`.
async fn await_messages(
    app: &TestApp,
    t: &TestTenant,
    token: &str,
    endpoint: &str,
    secs: u64,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let page = call(
            app,
            t,
            token,
            Method::GET,
            &format!("/v1/webhooks/endpoints/{endpoint}/messages?limit=100"),
        )
        .fetch_json()
        .await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if check(&items) {
            return items;
        }
        assert!(Instant::now() < deadline, "messages: {items:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Verifies deliveries with the Standard Webhooks reference library: per delivery, which of
/// `secrets` verified it.
async fn reference_verify(secrets: &[&str], deliveries: &[Received]) -> Vec<Vec<bool>> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let lib = root.join("../.devstack/standardwebhooks/lib");
    let mut child = tokio::process::Command::new("python3")
        .arg(root.join("verify_webhooks.py"))
        .env("PYTHONPATH", &lib)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let input = json!({
        "secrets": secrets,
        "deliveries": deliveries.iter().map(|d| json!({"headers": d.headers, "body": d.body})).collect::<Vec<_>>(),
    });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the verifier failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn deliveries_verify_with_the_reference_library_through_a_rotation() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let r = Receiver::start().await;
    // The catalogue publishes every type with a schema.
    let types = call(&app, &t, &boss, Method::GET, "/v1/event-types")
        .fetch_json()
        .await;
    let created_type = types
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "resource_type.created")
        .expect("resource_type.created is published");
    assert_eq!(created_type["schema"]["type"], "object");

    let ep = create_endpoint(&app, &t, &boss, json!({"url": r.url("/a"), "event_types": ["resource_type.*"], "description": "all type changes", "asymmetric": true})).await;
    let id = ep["id"].as_str().unwrap();
    let secret = ep["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{ep}");
    let public = ep["public_key"].as_str().unwrap().to_string();
    assert!(public.starts_with("whpk_"));
    // The secret is shown once: never in a read.
    let read = call(
        &app,
        &t,
        &boss,
        Method::GET,
        &format!("/v1/webhooks/endpoints/{id}"),
    )
    .fetch_json()
    .await;
    assert!(read.get("secret").is_none(), "{read}");
    assert!(!read.to_string().contains(&secret[6..]));

    make_type(&app, &t, &boss, "alpha").await;
    // A settings change is not subscribed: it must not arrive.
    let got = await_received(&r, "/a", 20, |g| !g.is_empty()).await;
    let d = &got[0];
    let body: Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(body["type"], "resource_type.created");
    assert_eq!(body["subject"]["id"], "alpha");
    assert!(d.headers["webhook-id"].starts_with("msg_"));
    let sigs: Vec<&str> = d.headers["webhook-signature"].split(' ').collect();
    assert_eq!(sigs.len(), 2, "{sigs:?}");
    assert!(sigs.iter().any(|s| s.starts_with("v1a,")));
    assert_eq!(
        reference_verify(&[&secret], &got[..1]).await,
        vec![vec![true]]
    );
    // The Ed25519 signature verifies under the published public key.
    assert!(neotenant::webhooks::signing::verify(
        &d.headers["webhook-signature"],
        &public,
        &d.headers["webhook-id"],
        d.headers["webhook-timestamp"].parse().unwrap(),
        d.body.as_bytes(),
    ));
    // A tampered body fails the reference verifier.
    let mut forged = d.clone();
    forged.body = forged.body.replace("alpha", "omega");
    assert_eq!(
        reference_verify(&[&secret], &[forged]).await,
        vec![vec![false]]
    );

    // Rotation: both secrets sign during the overlap; each verifies with the library.
    let rotated = call(
        &app,
        &t,
        &boss,
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/secret/rotate"),
    )
    .fetch_json()
    .await;
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    make_type(&app, &t, &boss, "beta").await;
    let got = await_received(&r, "/a", 20, |g| g.len() >= 2).await;
    assert_eq!(
        reference_verify(&[&secret, &new_secret], &got[1..2]).await,
        vec![vec![true, true]]
    );
    // Ending the overlap now: only the new secret signs.
    let res = call(
        &app,
        &t,
        &boss,
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/secret/rotate?keep_previous_secs=0"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let newest = res.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    make_type(&app, &t, &boss, "gamma").await;
    let got = await_received(&r, "/a", 20, |g| g.len() >= 3).await;
    assert_eq!(
        reference_verify(&[&new_secret, &newest], &got[2..3]).await,
        vec![vec![false, true]]
    );
    // The log shows each message delivered once, in commit order.
    let msgs = await_messages(&app, &t, &boss, id, 10, |m| {
        m.len() == 3 && m.iter().all(|x| x["status"] == "succeeded")
    })
    .await;
    let subjects: Vec<&str> = msgs
        .iter()
        .rev()
        .map(|m| m["payload"]["subject"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["alpha", "beta", "gamma"]);

    // The database never holds a secret in clear.
    {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            secrets: String,
        }
        let mut conn = direct(&app.state().config, &t.database).await;
        let row: Row = diesel::sql_query(format!(
            "SELECT concat_ws(' ', secret, previous_secret, signing_key) AS secrets FROM \"{}\".webhook_endpoints",
            t.schema
        ))
        .get_result(&mut conn)
        .await
        .unwrap();
        for s in [&secret, &new_secret, &newest] {
            assert!(
                !row.secrets.contains(&s[6..]),
                "a secret is stored in clear"
            );
        }
        assert!(row.secrets.starts_with("nts1:"), "{}", row.secrets);
        assert!(!row.secrets.contains("whsk_"));
        let audit: Vec<String> = neotenant_tests::audit_actions(&app, &t).await;
        assert!(audit.iter().any(|a| a == "webhook.secret_rotated"));
    }
    app.cleanup().await;
}

#[tokio::test]
async fn failures_retry_into_dead_letters_and_gone_endpoints_are_disabled() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let r = Receiver::start().await;
    r.set("/fail", Mode::Status(500));
    let ep = create_endpoint(
        &app,
        &t,
        &boss,
        json!({"url": r.url("/fail"), "event_types": ["resource_type.created"]}),
    )
    .await;
    let id = ep["id"].as_str().unwrap().to_string();
    make_type(&app, &t, &boss, "delta").await;
    // The schedule of the tests has three attempts: then a dead letter.
    let msgs = await_messages(&app, &t, &boss, &id, 30, |m| {
        m.first().is_some_and(|x| x["status"] == "failed")
    })
    .await;
    assert_eq!(msgs[0]["attempts"], 3);
    assert_eq!(msgs[0]["last_status"], 500);
    assert_eq!(r.at("/fail").len(), 3);
    // All three carry the same webhook-id.
    let ids: std::collections::HashSet<String> = r
        .at("/fail")
        .iter()
        .map(|d| d.headers["webhook-id"].clone())
        .collect();
    assert_eq!(ids.len(), 1);
    let mid = msgs[0]["id"].as_str().unwrap().to_string();
    let dead = call(
        &app,
        &t,
        &boss,
        Method::GET,
        &format!("/v1/webhooks/endpoints/{id}/messages?status=failed"),
    )
    .fetch_json()
    .await;
    assert_eq!(dead["items"].as_array().unwrap().len(), 1);
    let detail = call(
        &app,
        &t,
        &boss,
        Method::GET,
        &format!("/v1/webhooks/messages/{mid}"),
    )
    .fetch_json()
    .await;
    let attempts = detail["attempt_log"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{detail}");
    assert_eq!(
        detail["attempts"], 3,
        "the count and the log agree: {detail}"
    );
    assert_eq!(attempts[0]["response_status"], 500);
    assert_eq!(attempts[0]["response_body"], "answer 500 from the receiver");
    assert!(
        attempts[0]["request_body"]
            .as_str()
            .unwrap()
            .contains("delta")
    );

    // A manual retry, the receiver mended: delivered.
    r.set("/fail", Mode::Status(204));
    let res = call(
        &app,
        &t,
        &boss,
        Method::POST,
        &format!("/v1/webhooks/messages/{mid}/retry"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    await_messages(&app, &t, &boss, &id, 20, |m| m[0]["status"] == "succeeded").await;

    // Replay of a time range: the same event again, as a new message.
    let since = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    let res = call(
        &app,
        &t,
        &boss,
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/replay"),
    )
    .json(&json!({"since": since}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.json::<Value>().await.unwrap()["queued"], 1);
    let msgs = await_messages(&app, &t, &boss, &id, 20, |m| {
        m.len() == 2 && m.iter().all(|x| x["status"] == "succeeded")
    })
    .await;
    assert_eq!(msgs[0]["event_id"], msgs[1]["event_id"]);
    assert_ne!(msgs[0]["id"], msgs[1]["id"]);

    // 410 Gone disables the endpoint; the tenant's admins are told in their inbox.
    r.set("/fail", Mode::Status(410));
    make_type(&app, &t, &boss, "epsilon").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = call(
            &app,
            &t,
            &boss,
            Method::GET,
            &format!("/v1/webhooks/endpoints/{id}"),
        )
        .fetch_json()
        .await;
        if e["enabled"] == false {
            assert_eq!(e["disabled_reason"], "gone");
            break;
        }
        assert!(Instant::now() < deadline, "{e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let inbox = call(&app, &t, &boss, Method::GET, "/v1/me/inbox")
            .fetch_json()
            .await;
        let told = inbox["items"].as_array().unwrap().iter().any(|i| {
            i["title"] == "A webhook endpoint was disabled"
                || i.to_string().contains("A webhook endpoint was disabled")
        });
        if told {
            break;
        }
        assert!(Instant::now() < deadline, "{inbox}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Messages wait while it is disabled, and go once it is enabled again.
    r.set("/fail", Mode::Status(200));
    make_type(&app, &t, &boss, "zeta").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = r.at("/fail").len();
    let res = call(
        &app,
        &t,
        &boss,
        Method::PATCH,
        &format!("/v1/webhooks/endpoints/{id}"),
    )
    .json(&json!({"enabled": true}))
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let got = await_received(&r, "/fail", 20, |g| g.len() > before).await;
    assert!(got[before..].iter().any(|d| d.body.contains("zeta")));
    app.cleanup().await;
}

#[tokio::test]
async fn a_hanging_receiver_delays_no_other_endpoint() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let (u, _, boss_u, _) = tenant_with_admin(&app).await;
    let r = Receiver::start().await;
    r.set("/hang", Mode::Hang);
    let hang = create_endpoint(&app, &t, &boss, json!({"url": r.url("/hang")})).await;
    create_endpoint(&app, &t, &boss, json!({"url": r.url("/fine")})).await;
    create_endpoint(&app, &u, &boss_u, json!({"url": r.url("/other-tenant")})).await;
    for i in 0..5 {
        make_type(&app, &t, &boss, &format!("hang{i}")).await;
        make_type(&app, &u, &boss_u, &format!("other{i}")).await;
    }
    // The receiver holds the hanging requests for the whole timeout (10 s in tests); the other
    // endpoints of the tenant and of another tenant get everything meanwhile.
    await_received(&r, "/fine", 8, |g| {
        g.iter()
            .filter(|d| d.body.contains("resource_type.created"))
            .count()
            == 5
    })
    .await;
    await_received(&r, "/other-tenant", 8, |g| {
        g.iter()
            .filter(|d| d.body.contains("resource_type.created"))
            .count()
            == 5
    })
    .await;
    let stuck = await_messages(&app, &t, &boss, hang["id"].as_str().unwrap(), 5, |m| {
        !m.is_empty()
    })
    .await;
    assert!(
        stuck
            .iter()
            .all(|m| m["status"] == "pending" && m["attempts"] == 0),
        "the hanging endpoint's attempts are still open: {stuck:?}"
    );
    // Tenants never see each other's deliveries.
    assert!(
        r.at("/other-tenant")
            .iter()
            .all(|d| !d.body.contains("hang"))
    );
    assert!(r.at("/fine").iter().all(|d| !d.body.contains("other")));
    app.cleanup().await;
}

#[tokio::test]
async fn bad_urls_filters_ranges_and_answers_are_clear() {
    let app = TestApp::start().await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let r = Receiver::start().await;
    let post = |body: Value| {
        call(&app, &t, &boss, Method::POST, "/v1/webhooks/endpoints")
            .json(&body)
            .send()
    };
    // Inside addresses, by literal or by name, are refused (only 127.0.0.1 is allowed here).
    for url in [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/",
        "http://localhost:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
        "http://100.64.1.1/",
    ] {
        let p = expect_problem(post(json!({"url": url})).await.unwrap(), 422, "url-refused").await;
        assert!(
            problem_pointers(&p).iter().any(|x| x == "/url"),
            "{url}: {p}"
        );
    }
    for url in [
        "ftp://example.com/",
        "not a url",
        "https://user:pw@example.com/",
        "javascript:alert(1)",
    ] {
        let p = expect_problem(post(json!({"url": url})).await.unwrap(), 422, "validation").await;
        assert!(
            problem_pointers(&p).iter().any(|x| x == "/url"),
            "{url}: {p}"
        );
    }
    let p = expect_problem(
        post(json!({"url": r.url("/x"), "event_types": ["resource.created", "resource.exploded", "nothing.*"], "rate_limit": 0})).await.unwrap(),
        422,
        "validation",
    )
    .await;
    let ptrs = problem_pointers(&p);
    for want in ["/event_types/1", "/event_types/2", "/rate_limit"] {
        assert!(ptrs.iter().any(|x| x == want), "{want}: {p}");
    }
    // A member without webhooks.configure cannot create endpoints or read them.
    let res = call(&app, &t, &t.token, Method::POST, "/v1/webhooks/endpoints")
        .json(&json!({"url": r.url("/x")}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;
    let res = call(&app, &t, &t.token, Method::GET, "/v1/webhooks/endpoints")
        .send()
        .await
        .unwrap();
    expect_problem(res, 403, "forbidden").await;

    // Redirects are recorded as failures and never followed; a huge answer is cut.
    r.set("/moved", Mode::Redirect);
    r.set("/huge", Mode::Huge);
    r.set("/later", Mode::RetryAfter(3600));
    let moved = create_endpoint(
        &app,
        &t,
        &boss,
        json!({"url": r.url("/moved"), "event_types": ["resource_type.created"]}),
    )
    .await;
    let huge = create_endpoint(
        &app,
        &t,
        &boss,
        json!({"url": r.url("/huge"), "event_types": ["resource_type.created"]}),
    )
    .await;
    let later = create_endpoint(
        &app,
        &t,
        &boss,
        json!({"url": r.url("/later"), "event_types": ["resource_type.created"]}),
    )
    .await;
    make_type(&app, &t, &boss, "eta").await;
    let m = await_messages(&app, &t, &boss, moved["id"].as_str().unwrap(), 20, |m| {
        m.first().is_some_and(|x| x["attempts"].as_i64() >= Some(1))
    })
    .await;
    assert_eq!(m[0]["last_status"], 307);
    assert_eq!(m[0]["last_error"], "redirects are not followed");
    assert!(r.at("/elsewhere").is_empty());
    let h = await_messages(&app, &t, &boss, huge["id"].as_str().unwrap(), 30, |m| {
        m.first().is_some_and(|x| x["status"] == "succeeded")
    })
    .await;
    let detail = call(
        &app,
        &t,
        &boss,
        Method::GET,
        &format!("/v1/webhooks/messages/{}", h[0]["id"].as_str().unwrap()),
    )
    .fetch_json()
    .await;
    assert_eq!(
        detail["attempt_log"][0]["response_body"]
            .as_str()
            .unwrap()
            .len(),
        4096
    );
    // Retry-After pushes the next attempt out (an hour, more than the test schedule's waits).
    let l = await_messages(&app, &t, &boss, later["id"].as_str().unwrap(), 20, |m| {
        m.first().is_some_and(|x| x["attempts"] == 1)
    })
    .await;
    let next: chrono::DateTime<chrono::Utc> =
        l[0]["next_attempt_at"].as_str().unwrap().parse().unwrap();
    assert!(
        next > chrono::Utc::now() + chrono::Duration::minutes(30),
        "{next}"
    );

    // Replays: an empty range, a reversed one, one over the limit (replay_max is 50 in tests).
    let id = moved["id"].as_str().unwrap();
    let replay = |body: Value| {
        call(
            &app,
            &t,
            &boss,
            Method::POST,
            &format!("/v1/webhooks/endpoints/{id}/replay"),
        )
        .json(&body)
        .send()
    };
    let p = expect_problem(
        replay(json!({"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}))
            .await
            .unwrap(),
        422,
        "validation",
    )
    .await;
    assert!(problem_pointers(&p).iter().any(|x| x == "/until"));
    expect_problem(
        replay(json!({"since": "yesterday"})).await.unwrap(),
        422,
        "validation",
    )
    .await;
    for i in 0..50 {
        make_type(&app, &t, &boss, &format!("bulk{i}")).await;
    }
    // Events become readable once no older transaction is still running anywhere in the
    // database: wait until the feed shows all of them, so the range surely holds over 50.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let feed = call(
            &app,
            &t,
            &boss,
            Method::GET,
            "/v1/events?limit=1000&types=resource_type.created",
        )
        .fetch_json()
        .await;
        if feed["items"].as_array().is_some_and(|i| i.len() >= 51) {
            break;
        }
        assert!(Instant::now() < deadline, "{feed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    expect_problem(
        replay(json!({"since": "2000-01-01T00:00:00Z"}))
            .await
            .unwrap(),
        422,
        "range-too-large",
    )
    .await;
    // Unknown ids are 404, in any shape.
    for path in [
        "/v1/webhooks/messages/msg_nothing",
        "/v1/webhooks/messages/00000000-0000-0000-0000-000000000000",
    ] {
        let res = call(&app, &t, &boss, Method::GET, path)
            .send()
            .await
            .unwrap();
        expect_problem(res, 404, "not-found").await;
    }
    let res = call(
        &app,
        &t,
        &boss,
        Method::GET,
        &format!("/v1/webhooks/endpoints/{}/messages?status=lost", id),
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    let res = call(
        &app,
        &t,
        &boss,
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/secret/rotate?keep_previous_secs=forever"),
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 400, "invalid-parameter").await;
    let res = call(
        &app,
        &t,
        &boss,
        Method::POST,
        &format!("/v1/webhooks/endpoints/{id}/secret/rotate?keep_previous_secs=9999999"),
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 422, "validation").await;
    app.cleanup().await;
}

#[tokio::test]
async fn endpoints_are_invisible_across_tenants() {
    let app = TestApp::start().await;
    let (a, _, boss_a, _) = tenant_with_admin(&app).await;
    let (b, _, boss_b, _) = tenant_with_admin(&app).await;
    let r = Receiver::start().await;
    let ep = create_endpoint(&app, &a, &boss_a, json!({"url": r.url("/iso")})).await;
    let id = ep["id"].as_str().unwrap();
    for (m, path) in [
        (Method::GET, format!("/v1/webhooks/endpoints/{id}")),
        (Method::PATCH, format!("/v1/webhooks/endpoints/{id}")),
        (Method::DELETE, format!("/v1/webhooks/endpoints/{id}")),
        (
            Method::POST,
            format!("/v1/webhooks/endpoints/{id}/secret/rotate"),
        ),
        (Method::GET, format!("/v1/webhooks/endpoints/{id}/messages")),
    ] {
        let res = call(&app, &b, &boss_b, m.clone(), &path)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_problem(res, 404, "not-found").await;
    }
    // A's token is refused in B (bound to its tenant).
    let res = call(&app, &b, &boss_a, Method::GET, "/v1/webhooks/endpoints")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let list = call(&app, &b, &boss_b, Method::GET, "/v1/webhooks/endpoints")
        .fetch_json()
        .await;
    assert_eq!(list, json!([]));
    app.cleanup().await;
}

#[tokio::test]
async fn rotating_the_master_key_rewraps_every_secret_without_changing_it() {
    use diesel_async::RunQueryDsl;
    let app = TestApp::start().await;
    let (t, _, boss, _) = tenant_with_admin(&app).await;
    let r = Receiver::start().await;
    // Disabled: no server of the run delivers for it while its keys move.
    let ep = create_endpoint(
        &app,
        &t,
        &boss,
        json!({"url": r.url("/rot"), "asymmetric": true, "enabled": false}),
    )
    .await;
    let id: uuid::Uuid = ep["id"].as_str().unwrap().parse().unwrap();
    let secret = ep["secret"].as_str().unwrap().to_string();
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        secret: String,
    }
    let stored = async || {
        let mut conn = direct(&app.state().config, &t.database).await;
        let row: Row = diesel::sql_query(format!(
            "SELECT secret FROM \"{}\".webhook_endpoints",
            t.schema
        ))
        .get_result(&mut conn)
        .await
        .unwrap();
        row.secret
    };
    let before = stored().await;
    let old_id = app.state().config.secrets.master_key_id.clone();
    assert!(before.starts_with(&format!("nts1:{old_id}:")), "{before}");

    // A new active key; the old one retired until the rotation has run.
    let mut config = neotenant_tests::test_config();
    config
        .secrets
        .retired_keys
        .insert(old_id.clone(), config.secrets.master_key.clone());
    config.secrets.master_key_id = "test-rotated".into();
    config.secrets.master_key = neotenant::config::Secret::new("ab".repeat(32));
    let ring = neotenant::crypto::Keyring::from_config(&config.secrets);
    let app2 = TestApp::start_with(config).await;
    let tenant = neotenant::tenancy::resolve::resolve(&app.state().tenancy, &t.slug)
        .await
        .unwrap()
        .tenant
        .id
        .0;
    // One tenant only: the other tests' servers of this run keep their key.
    let report = neotenant::app::rotate_master(app2.state(), Some(tenant)).await;
    assert_eq!(report.tenants, 1, "{report:?}");
    assert!(report.failed_tenants.is_empty(), "{report:?}");
    assert!(report.webhook_endpoints >= 1, "{report:?}");
    let after = stored().await;
    assert!(after.starts_with("nts1:test-rotated:"), "{after}");
    // The key alone opens it now, to the very secret shown at creation.
    let only_new = neotenant::crypto::Keyring::new(("test-rotated", [0xab; 32]), []);
    let ctx = neotenant::webhooks::WebhooksState::seal_context(tenant, id, "secret");
    assert_eq!(only_new.open_str(&ctx, &after).unwrap(), secret);
    assert!(only_new.open_str(&ctx, &before).is_err());
    assert_eq!(ring.open_str(&ctx, &before).unwrap(), secret);
    // A second run has nothing left to move.
    let again = neotenant::app::rotate_master(app2.state(), Some(tenant)).await;
    assert_eq!(again.webhook_endpoints, 0, "{again:?}");
    app2.cleanup().await;
    app.cleanup().await;
}

fn patch_settings(
    app: &TestApp,
    t: &TestTenant,
    token: &str,
    body: Value,
) -> reqwest::RequestBuilder {
    call(app, t, token, Method::PATCH, "/v1/settings")
        .header("content-type", "application/merge-patch+json")
        .body(body.to_string())
}

/// The tenant's `integrations` settings narrow what the platform allows: an allow-list of
/// hosts (refused at save, and at delivery for an endpoint saved before), fewer attempts; and
/// `limits.webhook_endpoints_per_tenant` caps the endpoints.
#[tokio::test]
async fn a_tenants_integration_settings_narrow_hosts_and_attempts() {
    let mut config = neotenant_tests::test_config();
    config.limits.webhook_endpoints_per_tenant = 2;
    let app = TestApp::start_with(config).await;
    let (t, _member, boss, _) = tenant_with_admin(&app).await;
    let r = Receiver::start().await;
    r.set("/fail", Mode::Status(500));
    let early = create_endpoint(
        &app,
        &t,
        &boss,
        json!({"url": r.url("/early"), "event_types": ["resource_type.created"]}),
    )
    .await;

    // Only hooks.example.com (and its subdomains) from now on.
    let res = patch_settings(
        &app,
        &t,
        &boss,
        json!({"integrations": {"allowed_hosts": ["hooks.example.com"], "webhook_max_attempts": 1}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = call(&app, &t, &boss, Method::POST, "/v1/webhooks/endpoints")
        .json(&json!({"url": r.url("/fail")}))
        .send()
        .await
        .unwrap();
    let p = expect_problem(res, 422, "url-refused").await;
    assert_eq!(problem_pointers(&p), vec!["/url"], "{p}");
    assert!(
        p["detail"].as_str().unwrap().contains("allowed_hosts"),
        "{p}"
    );
    // The endpoint saved before is not called: its attempt fails without a request, and with
    // one attempt allowed the message is a dead letter at once.
    make_type(&app, &t, &boss, "narrowed").await;
    let id = early["id"].as_str().unwrap();
    let msgs = await_messages(&app, &t, &boss, id, 30, |m| {
        m.first().is_some_and(|x| x["status"] == "failed")
    })
    .await;
    assert_eq!(msgs[0]["attempts"], 1, "{msgs:?}");
    assert!(
        msgs[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("allowed_hosts"),
        "{msgs:?}"
    );
    assert!(r.at("/early").is_empty(), "an unlisted host got a request");

    // The list emptied again: the platform's rule, but one attempt only (the tests' platform
    // schedule has three).
    let res = patch_settings(
        &app,
        &t,
        &boss,
        json!({"integrations": {"allowed_hosts": []}}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let failing = create_endpoint(
        &app,
        &t,
        &boss,
        json!({"url": r.url("/fail"), "event_types": ["resource_type.created"]}),
    )
    .await;
    make_type(&app, &t, &boss, "once").await;
    let fid = failing["id"].as_str().unwrap();
    let msgs = await_messages(&app, &t, &boss, fid, 30, |m| {
        m.first().is_some_and(|x| x["status"] == "failed")
    })
    .await;
    assert_eq!(msgs[0]["attempts"], 1, "{msgs:?}");
    assert_eq!(r.at("/fail").len(), 1);

    // Two endpoints exist: the cap.
    let res = call(&app, &t, &boss, Method::POST, "/v1/webhooks/endpoints")
        .json(&json!({"url": r.url("/third")}))
        .send()
        .await
        .unwrap();
    expect_problem(res, 409, "limit-reached").await;
    let res = call(
        &app,
        &t,
        &boss,
        Method::DELETE,
        &format!("/v1/webhooks/endpoints/{id}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
    create_endpoint(&app, &t, &boss, json!({"url": r.url("/third")})).await;

    // Settings above the platform's are accepted but cannot exceed it; out of range is 422.
    let res = patch_settings(
        &app,
        &t,
        &boss,
        json!({"integrations": {"webhook_max_attempts": 0}}),
    )
    .send()
    .await
    .unwrap();
    expect_problem(res, 422, "validation").await;
    app.cleanup().await;
}
