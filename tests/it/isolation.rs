//! Tenant isolation under concurrency, and data residency checked in the databases themselves.

use std::collections::HashMap;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use futures::StreamExt;
use neotenant_tests::{Fetch, TestApp, TestTenant, all_pages, direct, expect_problem, test_config};
use rand::Rng;
use reqwest::Method;
use serde_json::{Value, json};

const TENANTS: usize = 24;
const WRITERS_PER_TENANT: usize = 12;

fn layout(i: usize) -> (&'static str, &'static str) {
    let region = if i.is_multiple_of(2) { "us" } else { "eu" };
    let isolation = if i.is_multiple_of(3) {
        "database"
    } else {
        "schema"
    };
    (region, isolation)
}

/// One unit of concurrent work against one tenant; returns the ids it created.
async fn work(app: &TestApp, t: &TestTenant, n: usize, foreign: &[String]) -> Vec<String> {
    let mut created = Vec::new();
    // A write that commits.
    let res = app
        .tenant_req(Method::POST, &t.slug, "/v1/notes")
        .json(
            &json!({"title": format!("{}#{n}", t.slug), "external_id": format!("{}-{n}", t.slug)}),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(res.status(), 201, "create in {}", t.slug);
    let note: Value = res.json().await.unwrap();
    created.push(note["id"].as_str().unwrap().to_string());

    // A batch that fails mid-transaction: the third item repeats the first's external_id,
    // after two rows were already inserted in the same transaction.
    let dup = format!("{}-batch-{n}", t.slug);
    let res = app
        .tenant_req(Method::POST, &t.slug, "/v1/notes/batch")
        .json(&json!({"items": [
            {"title": format!("{}#rolled-back-{n}-a", t.slug), "external_id": dup},
            {"title": format!("{}#rolled-back-{n}-b", t.slug)},
            {"title": format!("{}#rolled-back-{n}-c", t.slug), "external_id": dup},
        ]}))
        .send()
        .await
        .expect("batch");
    expect_problem(res, 409, "conflict").await;

    // A request abandoned by its client part-way (may cancel the server's transaction at
    // any point); its outcome is unknown, so it uses a title the final check tolerates.
    let jitter = rand::rng().random_range(0..4u64);
    let _ = app
        .tenant_req(Method::POST, &t.slug, "/v1/notes/batch")
        .timeout(Duration::from_millis(jitter))
        .json(&json!({"items": [{"title": format!("{}#maybe-{n}", t.slug)}]}))
        .send()
        .await;

    // Reads see only this tenant's rows.
    let page: Value = app
        .tenant_req(Method::GET, &t.slug, "/v1/notes?limit=200")
        .fetch_json()
        .await;
    for item in page["items"].as_array().unwrap() {
        let title = item["title"].as_str().unwrap();
        assert!(
            title.starts_with(&format!("{}#", t.slug)),
            "{} read a foreign row: {title}",
            t.slug
        );
    }

    // Another tenant's ids are invisible here.
    for id in foreign {
        let res = app
            .tenant_req(Method::GET, &t.slug, &format!("/v1/notes/{id}"))
            .send()
            .await
            .unwrap();
        expect_problem(res, 404, "not-found").await;
        let res = app
            .tenant_req(Method::DELETE, &t.slug, &format!("/v1/notes/{id}"))
            .send()
            .await
            .unwrap();
        expect_problem(res, 404, "not-found").await;
    }
    created
}

async fn all_titles(app: &TestApp, slug: &str) -> Vec<String> {
    all_pages(200, "/v1/notes?limit=200", |p| {
        app.tenant_req(Method::GET, slug, p)
    })
    .await
    .iter()
    .map(|n| n["title"].as_str().unwrap().to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_never_cross_tenants() {
    let app = TestApp::start().await;
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let (region, isolation) = layout(i);
        tenants.push(app.with_tenant(region, isolation).await);
    }

    // Seed one note per tenant whose id every other tenant then tries to read.
    let mut seeds: HashMap<String, String> = HashMap::new();
    for t in &tenants {
        let res = app
            .tenant_req(Method::POST, &t.slug, "/v1/notes")
            .json(&json!({"title": format!("{}#seed", t.slug)}))
            .send()
            .await
            .unwrap();
        let v: Value = res.json().await.unwrap();
        seeds.insert(t.slug.clone(), v["id"].as_str().unwrap().to_string());
    }

    let jobs: Vec<(usize, usize)> = (0..WRITERS_PER_TENANT)
        .flat_map(|n| (0..TENANTS).map(move |i| (i, n)))
        .collect();
    let app_ref = &app;
    let tenants_ref = &tenants;
    let seeds_ref = &seeds;
    let created: Vec<(usize, Vec<String>)> = futures::stream::iter(jobs)
        .map(|(i, n)| async move {
            let t = &tenants_ref[i];
            let other = &tenants_ref[(i + 1 + n % (TENANTS - 1)) % TENANTS];
            let foreign = vec![seeds_ref[&other.slug].clone()];
            (i, work(app_ref, t, n, &foreign).await)
        })
        .buffer_unordered(48)
        .collect()
        .await;
    assert_eq!(created.len(), TENANTS * WRITERS_PER_TENANT);

    for (i, t) in tenants.iter().enumerate() {
        let titles = all_titles(&app, &t.slug).await;
        let committed: Vec<&String> = titles.iter().filter(|x| !x.contains("#maybe-")).collect();
        assert_eq!(
            committed.len(),
            WRITERS_PER_TENANT + 1,
            "{}: {titles:?}",
            t.slug
        );
        for title in &titles {
            assert!(
                title.starts_with(&format!("{}#", t.slug)),
                "tenant {i} holds a foreign row {title}"
            );
            assert!(
                !title.contains("rolled-back"),
                "a failed batch leaked a row: {title}"
            );
        }
    }
    app.cleanup().await;
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

async fn schemas_in(config: &neotenant::config::Config, database: &str) -> Vec<String> {
    use diesel_async::RunQueryDsl;
    let mut conn = direct(config, database).await;
    diesel::sql_query("SELECT nspname AS name FROM pg_namespace WHERE nspname LIKE 't\\_%'")
        .load::<Name>(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect()
}

#[tokio::test]
async fn eu_rows_live_only_in_eu_databases() {
    use diesel_async::RunQueryDsl;
    let app = TestApp::start().await;
    let config = test_config();
    let eu_shared = app.with_tenant("eu", "schema").await;
    let eu_dedicated = app.with_tenant("eu", "database").await;
    let us_shared = app.with_tenant("us", "schema").await;
    for (t, n) in [(&eu_shared, 3), (&eu_dedicated, 4), (&us_shared, 5)] {
        for k in 0..n {
            let res = app
                .tenant_req(Method::POST, &t.slug, "/v1/notes")
                .json(&json!({"title": format!("{}#{k}", t.slug)}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201);
        }
    }
    assert_eq!(eu_shared.database, "neofast_shared_eu");
    assert_eq!(
        eu_dedicated.database,
        format!("tenant_{}", eu_dedicated.slug.replace('-', "_"))
    );
    assert_eq!(us_shared.database, "neofast_shared_us");

    // The registry places the dedicated database in the EU region.
    let mut registry = direct(&config, &config.database.registry_database).await;
    let region: Name = diesel::sql_query(
        "SELECT c.region AS name FROM admin.tenants t JOIN admin.database_connections c ON c.id = t.connection_id WHERE t.slug = $1",
    )
    .bind::<Text, _>(&eu_dedicated.slug)
    .get_result(&mut registry)
    .await
    .unwrap();
    assert_eq!(region.name, "eu");

    // Rows are where they belong, counted straight from each database.
    for (t, n) in [(&eu_shared, 3), (&eu_dedicated, 4), (&us_shared, 5)] {
        let mut conn = direct(&config, &t.database).await;
        let count: Count =
            diesel::sql_query(format!("SELECT count(*) AS n FROM \"{}\".notes", t.schema))
                .get_result(&mut conn)
                .await
                .unwrap();
        assert_eq!(count.n, n, "{} in {}", t.slug, t.database);
    }

    // ...and nowhere else: no EU schema in the US database, and no US schema in EU ones.
    let us_schemas = schemas_in(&config, "neofast_shared_us").await;
    let eu_schemas = schemas_in(&config, "neofast_shared_eu").await;
    let dedicated_schemas = schemas_in(&config, &eu_dedicated.database).await;
    assert!(!us_schemas.contains(&eu_shared.schema) && !us_schemas.contains(&eu_dedicated.schema));
    assert!(eu_schemas.contains(&eu_shared.schema));
    assert!(!eu_schemas.contains(&us_shared.schema) && !eu_schemas.contains(&eu_dedicated.schema));
    assert_eq!(dedicated_schemas, vec![eu_dedicated.schema.clone()]);
    app.cleanup().await;
}
