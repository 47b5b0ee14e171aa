//! Search at scale, against the local PostgreSQL (`make up`):
//! - indexing throughput: a rebuild of 100,000 resources (PostgreSQL → tantivy), and the
//!   outbox-fed path over 10,000 change events;
//! - query latency over 100,000 resources of one tenant, and the same queries with
//!   PostgreSQL full-text search (GIN over `to_tsvector`) on the same data, side by side;
//! - memory with 1,000 tenants' indexes on disk and 50 open.
//!
//! A local-mode tenant `bench-search` gets a type `article` and 100,000 generated articles
//! (title + 40-word body from a 400-word vocabulary) once. Plain timing harness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::sql_types::Text;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use neotenant::app::AppState;
use neotenant::config::Config;
use neotenant::resources::indexer;
use neotenant::tenancy::model::{CreateTenant, IdentityMode, IdentityRequest, Isolation, Region};
use neotenant_search::{Doc, Registry, SearchQuery, Visibility};

const SLUG: &str = "bench-search";
const N: usize = 100_000;

const WORDS: &str = "able about account acid across addition adjustment advertisement after again against agreement air all almost among amount amusement angle angry animal answer ant any apparatus apple approval arch argument arm army art attack attempt attention attraction authority automatic awake baby back bad bag balance ball band base basin basket bath beautiful because bed bee before behaviour belief bell bent berry between bird birth bit bite bitter black blade blood blow blue board boat body boiling bone book boot bottle box boy brain brake branch brass bread breath brick bridge bright broken brother brown brush bucket building bulb burn burst business butter button cake camera canvas card care carriage cart cat cause certain chain chalk chance change cheap cheese chemical chest chief chin church circle clean clear clock cloth cloud coal coat cold collar colour comb comfort committee common company comparison competition complete complex condition connection conscious control cook copper copy cord cork cotton cough country cover cow crack credit crime cruel crush cry cup current curtain curve cushion damage danger dark daughter dead dear death debt decision deep degree delicate dependent design desire destruction detail development different digestion direction dirty discovery discussion disease disgust distance distribution division dog door doubt down drain drawer dress drink driving drop dry dust ear early earth east edge education effect egg elastic electric end engine enough equal error even event ever every example exchange existence expansion experience expert eye face fact fall false family far farm fat father fear feather feeble feeling female fertile fiction field fight finger fire first fish fixed flag flame flat flight floor flower fly fold food foolish foot force fork form forward fowl frame free frequent friend front fruit full future garden general girl glass glove goat gold good government grain grass great green grey grip group growth guide gun hair hammer hand hanging happy harbour hard harmony hat hate head healthy hearing heart heat help high history hole hollow hook hope horn horse hospital hour house humour idea ill important impulse increase industry ink insect instrument insurance interest invention iron island jelly jewel join journey judge jump kettle key kick kind kiss knee knife knot knowledge land language last late laugh law lead leaf learning leather left leg letter level library lift light limit line linen lip liquid list little living lock long loose loss loud love low machine make male man manager map mark market married mass match material meal measure meat medical meeting memory metal middle military milk mind mine minute mist mixed money monkey month moon morning mother motion mountain mouth move muscle music nail name narrow nation natural near necessary neck need needle nerve net new news night noise normal north nose note number nut observation offer office oil old open operation opinion opposite orange order organization ornament other oven owner page pain paint paper parallel parcel part past paste payment peace pen pencil person physical picture pig pin pipe place plane plant plate play pleasure plough pocket point poison polish political poor porter position possible pot potato powder power present price print prison private probable process produce profit property prose protest public pull pump punishment purpose push quality question quick quiet quite rail rain range rat rate ray reaction reading ready reason receipt record regret regular relation religion representative request respect responsible rest reward rhythm rice right ring river road rod roll roof room root rough round rub rule run sad safe sail salt same sand scale school science scissors screw sea seat second secret secretary seed seem selection self send sense separate serious servant sex shade shake shame sharp sheep shelf ship shirt shock shoe short side sign silk silver simple sister size skin skirt sky sleep slip slope slow small smash smell smile smoke smooth snake sneeze snow soap society sock soft solid some son song sort sound soup south space spade special sponge spoon spring square stage stamp star start statement station steam steel stem step stick sticky stiff still stitch stocking stomach stone stop store story straight strange street stretch strong structure substance such sudden sugar suggestion summer sun support surprise sweet swim system table tail talk tall taste tax teaching tendency test than that the then theory there thick thin thing this thought thread throat through thumb thunder ticket tight till time tin tired toe together tomorrow tongue tooth top touch town trade train transport tray tree trick trouble trousers true turn twist umbrella under unit use value verse very vessel view violent voice waiting walk wall war warm wash waste watch water wave wax way weather week weight well west wet wheel whip whistle white wide wind window wine wing winter wire wise woman wood wool word work worm wound writing wrong year yellow young";

fn report(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{name:<56} n={:<5} p50 {:>9.2?}  p99 {:>9.2?}",
        samples.len(),
        at(0.5),
        at(0.99)
    );
    (at(0.5), at(0.99))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let path = ["neotenant.toml", "../neotenant.toml"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("neotenant.toml");
    let dir = std::env::temp_dir().join("neotenant-bench-search");
    let _ = std::fs::remove_dir_all(&dir);
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.push((
        "NEOTENANT_DATABASE__STATEMENT_TIMEOUT_MS".into(),
        "600000".into(),
    ));
    env.push((
        "NEOTENANT_SEARCH__DATA_DIR".into(),
        dir.join("main").display().to_string(),
    ));
    let config = Config::load(Some(&path), env).expect("config");
    let state: Arc<AppState> = AppState::connect(config).await.expect("services (make up)");
    neotenant::tenancy::service::ensure_platform(&state.tenancy)
        .await
        .expect("platform");
    neotenant::tenancy::service::create(
        &state.tenancy,
        &CreateTenant {
            slug: SLUG.into(),
            display_name: "Search bench".into(),
            region: Region::Us,
            isolation: Isolation::Schema,
            identity: IdentityRequest {
                mode: IdentityMode::Local,
                link: None,
            },
        },
    )
    .await
    .expect("bench tenant");
    let tenant = neotenant::tenancy::resolve::resolve(&state.tenancy, SLUG)
        .await
        .expect("resolves");
    let db = tenant.db.clone();
    let tid = tenant.tenant.id.0;

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut tx = db.begin().await.unwrap();
    let have: Count =
        diesel::sql_query("SELECT count(*) AS n FROM resources WHERE type = 'article'")
            .get_result(tx.conn())
            .await
            .unwrap();
    tx.commit().await.unwrap();
    if (have.n as usize) < N {
        let t = Instant::now();
        let words: Vec<&str> = WORDS.split_whitespace().collect();
        let array = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(",");
        let nw = words.len();
        let sql = format!(
            "INSERT INTO resource_types (name, title, schema, searchable, filterable, sortable) VALUES \
             ('article', 'Article', '{{\"type\": \"object\", \"properties\": {{\"title\": {{\"type\": \"string\"}}, \
               \"body\": {{\"type\": \"string\"}}, \"status\": {{\"type\": \"string\"}}}}}}', \
              ARRAY['title', 'body'], ARRAY['status'], ARRAY[]::text[]) ON CONFLICT DO NOTHING;
             INSERT INTO resources (id, type, data, tags, owner_id, version)
             SELECT gen_random_uuid(), 'article',
                    jsonb_build_object(
                      'title', w[1 + (g * 31) % {nw}] || ' ' || w[1 + (g * 17 + 3) % {nw}] || ' ' || w[1 + (g * 7 + 11) % {nw}],
                      'body', array_to_string(ARRAY(SELECT w[1 + ((g * 7919 + k * 104729 + k * k * 13) % {nw})]
                                                    FROM generate_series(1, 40) k), ' '),
                      'status', (ARRAY['draft', 'published', 'archived'])[1 + g % 3]),
                    ARRAY[(ARRAY['news', 'howto', 'review', 'opinion'])[1 + g % 4]],
                    '00000000-0000-7000-8000-000000000001', 1
             FROM generate_series(1, {N}) g, (SELECT ARRAY[{array}] AS w) v;
             CREATE INDEX IF NOT EXISTS bench_articles_fts ON resources USING gin
               (to_tsvector('english', (data ->> 'title') || ' ' || (data ->> 'body')))
               WHERE type = 'article' AND deleted_at IS NULL;
             ANALYZE resources;"
        );
        let mut tx = db.begin().await.unwrap();
        tx.conn().batch_execute(&sql).await.expect("generate");
        tx.commit().await.unwrap();
        println!("generated {N} articles in {:.1?}", t.elapsed());
    }

    // Indexing: a full rebuild, PostgreSQL → index.
    let registry = state.search.clone();
    let t = Instant::now();
    let n = indexer::rebuild(&registry, tid, &db)
        .await
        .expect("rebuild");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "rebuild: {n} resources indexed in {secs:.1} s ({:.0} resources/s)",
        n as f64 / secs
    );
    // Indexing from the outbox: 10,000 change events for 10,000 resources.
    let mut tx = db.begin().await.unwrap();
    tx.conn()
        .batch_execute(
            "INSERT INTO outbox (topic, aggregate_type, aggregate_id, payload)
             SELECT 'resource.updated', 'article', 'res_' || replace(id::text, '-', ''), '{}'
             FROM resources WHERE type = 'article' ORDER BY id LIMIT 10000",
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let t = Instant::now();
    let applied = indexer::index_tenant(&registry, tid, &db, usize::MAX)
        .await
        .expect("index");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "outbox-fed indexing: {applied} events applied in {secs:.2} s ({:.0} events/s)",
        applied as f64 / secs
    );

    // Queries: the index vs PostgreSQL full-text search, same words, first page of 20.
    let index = registry.get(&indexer::index_key(tid)).unwrap();
    // Three words: the title of a stored article (so both engines have hits).
    #[derive(diesel::QueryableByName)]
    struct Title {
        #[diesel(sql_type = Text)]
        title: String,
    }
    let mut tx = db.begin().await.unwrap();
    let title: Title = diesel::sql_query(
        "SELECT data ->> 'title' AS title FROM resources WHERE type = 'article' \
         AND data ->> 'title' !~ '\\m(the|this|that|then|there|than|some|such|very|what|when)\\M' \
         ORDER BY id LIMIT 1",
    )
    .get_result(tx.conn())
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let three: &'static str = Box::leak(title.title.into_boxed_str());
    let queries: [(&str, &str); 4] = [
        ("one common word", "bridge"),
        ("two words", "copper engine"),
        ("three words (a stored title)", three),
        ("word + filter (status)", "music"),
    ];
    println!(
        "query latency over {} indexed resources (first page of 20):",
        index.len()
    );
    let mut ratios = Vec::new();
    for (name, words) in queries {
        let filter = name.contains("filter");
        let mut idx_samples = Vec::new();
        for _ in 0..200 {
            let q = SearchQuery {
                text: if filter {
                    format!("{words} status:published")
                } else {
                    words.to_string()
                },
                types: vec![],
                tags: vec![],
                category: None,
                owner: None,
                team: None,
                created: (None, None),
                updated: (None, None),
                visibility: Visibility::All,
                limit: 20,
                offset: 0,
            };
            let i2 = index.clone();
            let t = Instant::now();
            let r = tokio::task::spawn_blocking(move || i2.search(&q))
                .await
                .unwrap()
                .unwrap();
            idx_samples.push(t.elapsed());
            assert!(!r.hits.is_empty(), "{words}: no hits");
        }
        let (i50, i99) = report(&format!("  tantivy: {name}"), idx_samples);
        let mut pg_samples = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let mut tx = db.begin().await.unwrap();
            #[derive(diesel::QueryableByName)]
            #[allow(dead_code)]
            struct Row {
                #[diesel(sql_type = diesel::sql_types::Uuid)]
                id: uuid::Uuid,
            }
            let sql = format!(
                "SELECT id FROM resources WHERE type = 'article' AND deleted_at IS NULL \
                 AND to_tsvector('english', (data ->> 'title') || ' ' || (data ->> 'body')) @@ plainto_tsquery('english', $1) {} \
                 ORDER BY ts_rank(to_tsvector('english', (data ->> 'title') || ' ' || (data ->> 'body')), plainto_tsquery('english', $1)) DESC \
                 LIMIT 20",
                if filter {
                    "AND data @> '{\"status\": \"published\"}'"
                } else {
                    ""
                }
            );
            let rows: Vec<Row> = diesel::sql_query(sql)
                .bind::<Text, _>(words)
                .load(tx.conn())
                .await
                .unwrap();
            tx.commit().await.unwrap();
            pg_samples.push(t.elapsed());
            assert!(!rows.is_empty());
        }
        let (p50, p99) = report(&format!("  PostgreSQL FTS: {name}"), pg_samples);
        let ratio = p50.as_secs_f64() / i50.as_secs_f64();
        ratios.push(ratio);
        println!(
            "  → PostgreSQL / tantivy: p50 ×{ratio:.1}, p99 ×{:.1}",
            p99.as_secs_f64() / i99.as_secs_f64()
        );
    }

    // Memory: 1,000 tenants' indexes on disk, at most 50 open.
    let many = Registry::new(dir.join("many"), 50);
    let before = rss_kib();
    for i in 0..1000 {
        let idx = many.get(&format!("t{i:04}")).unwrap();
        idx.apply(
            &[Doc {
                id: format!("res_{i:032x}"),
                type_name: "article".into(),
                title: "hello world".into(),
                body: "hello world of search".into(),
                owner: "usr_1".into(),
                ..Default::default()
            }],
            &[],
            "{}",
        )
        .unwrap();
    }
    let after = rss_kib();
    println!(
        "1,000 tenant indexes known ({} on disk), {} open: process RSS {} MiB → {} MiB (+{} MiB)",
        many.known(),
        many.open_count(),
        before / 1024,
        after / 1024,
        after.saturating_sub(before) / 1024
    );
    let _ = std::fs::remove_dir_all(&dir);
}
