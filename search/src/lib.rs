//! Per-tenant full-text indexes for NeoTenantApi resources, on tantivy.
//!
//! Owns: one index directory per tenant under a root, the index schema, applying batches of
//! changes together with the position (cursor) of the last event they came from — in the same
//! commit, so a crash can never leave the index ahead of or behind its recorded position —
//! and queries with filters, facets, highlights and typo tolerance. An LRU bounds how many
//! indexes are open at once (each open index holds a writer); a closed index is reopened on
//! demand. Never talks to PostgreSQL and never decides who may see what: callers pass the
//! visibility filter in.
//!
//! Schema (fixed; what varies per resource type goes into fields of it): `id`, `type`,
//! `tags`, `category`, `owner`, `team`, `shared_user`, `shared_team` (exact terms), `type_f`
//! and `tags_f` (facets), `created`/`updated` (seconds, range-filterable), `title` (the type's
//! first searchable field, boosted) and `body` (all searchable fields), and `data` (a JSON
//! field holding the type's other scalar fields as exact terms, queried as `field:value`).
//! All tantivy work is blocking: callers run it off async threads.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use serde_json::Value as Json;
use tantivy::collector::{Count, FacetCollector, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery,
    TermSetQuery,
};
use tantivy::schema::{
    FAST, FacetOptions, Field, INDEXED, IndexRecordOption, JsonObjectOptions, STORED, STRING,
    Schema, TEXT, TextFieldIndexing, Value,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// Memory budget of one index writer (tantivy's minimum is 15 MB; the arena grows on demand).
pub const WRITER_MEMORY: usize = 15_000_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("search index: {0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A resource as the index sees it.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    pub id: String,
    pub type_name: String,
    /// The first searchable field's text (boosted).
    pub title: String,
    /// Every searchable field's text.
    pub body: String,
    /// The other scalar data fields, for `field:value` terms.
    pub data: serde_json::Map<String, Json>,
    pub tags: Vec<String>,
    pub category: Option<String>,
    pub owner: String,
    pub team: Option<String>,
    pub shared_users: Vec<String>,
    pub shared_teams: Vec<String>,
    /// Unix seconds.
    pub created: i64,
    pub updated: i64,
}

/// Who may see what: everything, or what one of these terms reaches.
#[derive(Debug, Clone)]
pub enum Visibility {
    All,
    Only {
        owner: String,
        /// Teams whose resources the caller reaches by team scope.
        teams: Vec<String>,
        shared_user: String,
        /// Teams a share with which reaches the caller.
        shared_teams: Vec<String>,
    },
}

/// A search request.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// Words (all must match; words of 5+ characters tolerate one typo, 9+ two) and
    /// `field:value` terms on the type's other fields.
    pub text: String,
    pub types: Vec<String>,
    /// All must match.
    pub tags: Vec<String>,
    pub category: Option<String>,
    pub owner: Option<String>,
    pub team: Option<String>,
    pub created: (Option<i64>, Option<i64>),
    pub updated: (Option<i64>, Option<i64>),
    pub visibility: Visibility,
    pub limit: usize,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub type_name: String,
    pub score: f32,
    pub title: String,
    /// An HTML fragment with matched words in `<b>` (empty if none matched the body).
    pub highlight: String,
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub total: usize,
    pub hits: Vec<Hit>,
    /// Counts by type and by tag over every match (not just this page).
    pub types: Vec<(String, u64)>,
    pub tags: Vec<(String, u64)>,
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    type_name: Field,
    type_f: Field,
    tags: Field,
    tags_f: Field,
    category: Field,
    owner: Field,
    team: Field,
    shared_user: Field,
    shared_team: Field,
    created: Field,
    updated: Field,
    title: Field,
    body: Field,
    data: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let raw_json = JsonObjectOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("raw")
            .set_index_option(IndexRecordOption::Basic),
    );
    let f = Fields {
        id: b.add_text_field("id", STRING | STORED),
        type_name: b.add_text_field("type", STRING | STORED),
        type_f: b.add_facet_field("type_f", FacetOptions::default()),
        tags: b.add_text_field("tags", STRING),
        tags_f: b.add_facet_field("tags_f", FacetOptions::default()),
        category: b.add_text_field("category", STRING),
        owner: b.add_text_field("owner", STRING),
        team: b.add_text_field("team", STRING),
        shared_user: b.add_text_field("shared_user", STRING),
        shared_team: b.add_text_field("shared_team", STRING),
        created: b.add_i64_field("created", INDEXED | FAST),
        updated: b.add_i64_field("updated", INDEXED | FAST),
        title: b.add_text_field("title", TEXT | STORED),
        body: b.add_text_field("body", TEXT | STORED),
        data: b.add_json_field("data", raw_json),
    };
    (b.build(), f)
}

/// One tenant's index: a writer (behind a lock: one batch at a time) and a reader.
pub struct TenantIndex {
    index: Index,
    f: Fields,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
}

impl TenantIndex {
    fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (schema, f) = schema();
        let directory = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|e| Error::Other(e.to_string()))?;
        let index = Index::open_or_create(directory, schema)?;
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            f,
            writer: Mutex::new(writer),
            reader,
        })
    }

    /// The position recorded with the last commit (`None` for a new index).
    pub fn cursor(&self) -> Result<Option<String>> {
        Ok(self.index.load_metas()?.payload)
    }

    /// Removes `deletes` and replaces `upserts` (by id), then commits with `cursor`, all or
    /// nothing.
    pub fn apply(&self, upserts: &[Doc], deletes: &[String], cursor: &str) -> Result<()> {
        let mut writer = self.writer.lock().expect("index writer");
        for id in deletes.iter().chain(upserts.iter().map(|d| &d.id)) {
            writer.delete_term(Term::from_field_text(self.f.id, id));
        }
        for d in upserts {
            writer.add_document(self.document(d))?;
        }
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(cursor);
        commit.commit()?;
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    /// Empties the index (for a rebuild), recording `cursor`.
    pub fn clear(&self, cursor: &str) -> Result<()> {
        let mut writer = self.writer.lock().expect("index writer");
        writer.delete_all_documents()?;
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(cursor);
        commit.commit()?;
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    /// Number of documents searchable now.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn document(&self, d: &Doc) -> TantivyDocument {
        let f = self.f;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, &d.id);
        doc.add_text(f.type_name, &d.type_name);
        doc.add_facet(
            f.type_f,
            tantivy::schema::Facet::from_path([d.type_name.as_str()]),
        );
        for t in &d.tags {
            doc.add_text(f.tags, t);
            doc.add_facet(f.tags_f, tantivy::schema::Facet::from_path([t.as_str()]));
        }
        if let Some(c) = &d.category {
            doc.add_text(f.category, c);
        }
        doc.add_text(f.owner, &d.owner);
        if let Some(t) = &d.team {
            doc.add_text(f.team, t);
        }
        for u in &d.shared_users {
            doc.add_text(f.shared_user, u);
        }
        for t in &d.shared_teams {
            doc.add_text(f.shared_team, t);
        }
        doc.add_i64(f.created, d.created);
        doc.add_i64(f.updated, d.updated);
        doc.add_text(f.title, &d.title);
        doc.add_text(f.body, &d.body);
        let scalars: serde_json::Map<String, Json> = d
            .data
            .iter()
            .filter(|(_, v)| matches!(v, Json::String(_) | Json::Number(_) | Json::Bool(_)))
            .map(|(k, v)| {
                let text = match v {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), Json::String(text))
            })
            .collect();
        if !scalars.is_empty() {
            doc.add_object(
                f.data,
                scalars
                    .into_iter()
                    .map(|(k, v)| (k, tantivy::schema::OwnedValue::from(v)))
                    .collect::<BTreeMap<_, _>>(),
            );
        }
        doc
    }

    fn words(&self, text: &str) -> Result<Vec<String>> {
        let mut analyzer = self.index.tokenizer_for_field(self.f.body)?;
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while let Some(t) = stream.next() {
            if !out.contains(&t.text) {
                out.push(t.text.clone());
            }
        }
        Ok(out)
    }

    fn exact(field: Field, value: &str) -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, value),
            IndexRecordOption::Basic,
        ))
    }

    fn any_of(field: Field, values: &[String]) -> Box<dyn Query> {
        Box::new(TermSetQuery::new(
            values.iter().map(|v| Term::from_field_text(field, v)),
        ))
    }

    fn range(field: Field, (from, to): (Option<i64>, Option<i64>)) -> Option<Box<dyn Query>> {
        if from.is_none() && to.is_none() {
            return None;
        }
        let bound = |v: Option<i64>| match v {
            Some(v) => Bound::Included(Term::from_field_i64(field, v)),
            None => Bound::Unbounded,
        };
        Some(Box::new(RangeQuery::new(bound(from), bound(to))))
    }

    /// Runs `q`: the text query scored, every filter as a must-match clause.
    pub fn search(&self, q: &SearchQuery) -> Result<Results> {
        let f = self.f;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut highlight_terms: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut free = String::new();
        for token in q.text.split_whitespace() {
            match token.split_once(':') {
                Some((field, value))
                    if !field.is_empty()
                        && !value.is_empty()
                        && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    let mut term = Term::from_field_json_path(f.data, field, false);
                    term.append_type_and_str(value);
                    clauses.push((
                        Occur::Must,
                        Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
                    ));
                }
                _ => {
                    free.push_str(token);
                    free.push(' ');
                }
            }
        }
        for word in self.words(&free)? {
            let chars = word.chars().count();
            let per_field = |field: Field| -> Box<dyn Query> {
                let term = Term::from_field_text(field, &word);
                match chars {
                    0..=4 => Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                    5..=8 => Box::new(FuzzyTermQuery::new(term, 1, true)),
                    _ => Box::new(FuzzyTermQuery::new(term, 2, true)),
                }
            };
            let either = BooleanQuery::new(vec![
                (
                    Occur::Should,
                    Box::new(BoostQuery::new(per_field(f.title), 2.0)) as Box<dyn Query>,
                ),
                (Occur::Should, per_field(f.body)),
            ]);
            clauses.push((Occur::Must, Box::new(either)));
            highlight_terms.push((Occur::Should, Self::exact(f.body, &word)));
        }
        let mut filters: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if !q.types.is_empty() {
            filters.push((Occur::Must, Self::any_of(f.type_name, &q.types)));
        }
        for t in &q.tags {
            filters.push((Occur::Must, Self::exact(f.tags, t)));
        }
        if let Some(c) = &q.category {
            filters.push((Occur::Must, Self::exact(f.category, c)));
        }
        if let Some(o) = &q.owner {
            filters.push((Occur::Must, Self::exact(f.owner, o)));
        }
        if let Some(t) = &q.team {
            filters.push((Occur::Must, Self::exact(f.team, t)));
        }
        for r in [
            Self::range(f.created, q.created),
            Self::range(f.updated, q.updated),
        ]
        .into_iter()
        .flatten()
        {
            filters.push((Occur::Must, r));
        }
        if let Visibility::Only {
            owner,
            teams,
            shared_user,
            shared_teams,
        } = &q.visibility
        {
            let mut reach: Vec<(Occur, Box<dyn Query>)> = vec![
                (Occur::Should, Self::exact(f.owner, owner)),
                (Occur::Should, Self::exact(f.shared_user, shared_user)),
            ];
            if !teams.is_empty() {
                reach.push((Occur::Should, Self::any_of(f.team, teams)));
            }
            if !shared_teams.is_empty() {
                reach.push((Occur::Should, Self::any_of(f.shared_team, shared_teams)));
            }
            filters.push((Occur::Must, Box::new(BooleanQuery::new(reach))));
        }
        if clauses.is_empty() {
            clauses.push((Occur::Must, Box::new(AllQuery)));
        }
        let filter_count = filters.len();
        clauses.extend(filters.into_iter().map(|(_, q)| {
            // Filters constrain but do not score.
            (
                Occur::Must,
                Box::new(BoostQuery::new(q, 0.0)) as Box<dyn Query>,
            )
        }));
        let query = BooleanQuery::new(clauses);
        tracing::trace!(filters = filter_count, "search");

        let searcher = self.reader.searcher();
        let mut by_type = FacetCollector::for_field("type_f");
        by_type.add_facet("/");
        let mut by_tag = FacetCollector::for_field("tags_f");
        by_tag.add_facet("/");
        let top = TopDocs::with_limit(q.limit.max(1))
            .and_offset(q.offset)
            .order_by_score();
        let (top, total, types, tags) = searcher.search(&query, &(top, Count, by_type, by_tag))?;

        let snippets = if highlight_terms.is_empty() {
            None
        } else {
            let hq = BooleanQuery::new(highlight_terms);
            let mut g = SnippetGenerator::create(&searcher, &hq, f.body)?;
            g.set_max_num_chars(200);
            Some(g)
        };
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            hits.push(self.hit(&searcher, score, addr, snippets.as_ref())?);
        }
        let facet = |c: &tantivy::collector::FacetCounts| -> Vec<(String, u64)> {
            let mut v: Vec<(String, u64)> = c
                .get("/")
                .map(|(facet, n)| {
                    let path = facet.to_path();
                    (path.last().map(|s| s.to_string()).unwrap_or_default(), n)
                })
                .collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(50);
            v
        };
        Ok(Results {
            total,
            hits,
            types: facet(&types),
            tags: facet(&tags),
        })
    }

    fn hit(
        &self,
        searcher: &tantivy::Searcher,
        score: f32,
        addr: DocAddress,
        snippets: Option<&SnippetGenerator>,
    ) -> Result<Hit> {
        let doc: TantivyDocument = searcher.doc(addr)?;
        let text = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        Ok(Hit {
            id: text(self.f.id),
            type_name: text(self.f.type_name),
            score,
            title: text(self.f.title),
            highlight: snippets
                .map(|g| g.snippet_from_doc(&doc).to_html())
                .unwrap_or_default(),
        })
    }
}

/// Every tenant's index under one root, at most `max_open` open at once.
pub struct Registry {
    root: PathBuf,
    open: Mutex<LruCache<String, Arc<TenantIndex>>>,
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Registry {
    pub fn new(root: impl Into<PathBuf>, max_open: usize) -> Self {
        Self {
            root: root.into(),
            open: Mutex::new(LruCache::new(
                NonZeroUsize::new(max_open.max(1)).expect("non-zero"),
            )),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The index of tenant `key` (a plain identifier), opened or created; the least recently
    /// used open index is closed (its writer released) when the limit is reached.
    pub fn get(&self, key: &str) -> Result<Arc<TenantIndex>> {
        if !valid_key(key) {
            return Err(Error::Other(format!("invalid index key {key:?}")));
        }
        if let Some(i) = self.open.lock().expect("index registry").get(key) {
            return Ok(i.clone());
        }
        let mut open = self.open.lock().expect("index registry");
        if let Some(i) = open.get(key) {
            return Ok(i.clone());
        }
        // Close the evicted one first, so its writer's lock is released before we open.
        if open.len() == open.cap().get() {
            open.pop_lru();
        }
        let index = Arc::new(TenantIndex::open(&self.root.join(key))?);
        open.put(key.to_string(), index.clone());
        Ok(index)
    }

    /// Closes tenant `key`'s index if it is open (its writer released; the files stay), so
    /// the next [`Self::get`] opens it again from disk.
    pub fn close(&self, key: &str) {
        self.open.lock().expect("index registry").pop(key);
    }

    /// Closes and deletes tenant `key`'s index.
    pub fn remove(&self, key: &str) -> Result<()> {
        if !valid_key(key) {
            return Err(Error::Other(format!("invalid index key {key:?}")));
        }
        self.open.lock().expect("index registry").pop(key);
        match std::fs::remove_dir_all(self.root.join(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Whether tenant `key` has an index on disk (open or not).
    pub fn exists(&self, key: &str) -> bool {
        valid_key(key) && self.root.join(key).is_dir()
    }

    /// Indexes open now.
    pub fn open_count(&self) -> usize {
        self.open.lock().expect("index registry").len()
    }

    /// Indexes on disk.
    pub fn known(&self) -> usize {
        std::fs::read_dir(&self.root).map_or(0, |d| d.filter(|e| e.is_ok()).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(id: &str, title: &str, body: &str, owner: &str) -> Doc {
        Doc {
            id: id.into(),
            type_name: "ticket".into(),
            title: title.into(),
            body: format!("{title}\n{body}"),
            data: json!({"status": "open", "priority": 3})
                .as_object()
                .unwrap()
                .clone(),
            tags: vec!["hw".into()],
            owner: owner.into(),
            created: 100,
            updated: 200,
            ..Default::default()
        }
    }

    fn query(text: &str) -> SearchQuery {
        SearchQuery {
            text: text.into(),
            types: vec![],
            tags: vec![],
            category: None,
            owner: None,
            team: None,
            created: (None, None),
            updated: (None, None),
            visibility: Visibility::All,
            limit: 10,
            offset: 0,
        }
    }

    fn ids(r: &Results) -> Vec<String> {
        let mut v: Vec<String> = r.hits.iter().map(|h| h.id.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn finds_with_typos_filters_highlights_and_remembers_its_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path(), 4);
        let idx = reg.get("t1").unwrap();
        assert_eq!(idx.cursor().unwrap(), None);
        let mut b = doc("b", "Broken keyboard", "keys stick", "u2");
        b.tags = vec!["desk".into()];
        b.data.insert("status".into(), json!("closed"));
        idx.apply(
            &[
                doc(
                    "a",
                    "Printer on fire",
                    "the printer in room 4 is burning",
                    "u1",
                ),
                b,
            ],
            &[],
            "c1",
        )
        .unwrap();
        assert_eq!(idx.cursor().unwrap().as_deref(), Some("c1"));

        let r = idx.search(&query("printer")).unwrap();
        assert_eq!(ids(&r), ["a"]);
        assert!(
            r.hits[0].highlight.contains("<b>printer</b>"),
            "{:?}",
            r.hits[0]
        );
        // One typo in a 7-letter word; none allowed in short words.
        assert_eq!(ids(&idx.search(&query("pronter")).unwrap()), ["a"]);
        assert!(idx.search(&query("kez")).unwrap().hits.is_empty());
        // field:value terms, tags, ranges, facets.
        assert_eq!(ids(&idx.search(&query("status:closed")).unwrap()), ["b"]);
        let mut q = query("");
        q.tags = vec!["desk".into()];
        assert_eq!(ids(&idx.search(&q).unwrap()), ["b"]);
        let mut q = query("");
        q.updated = (Some(201), None);
        assert!(idx.search(&q).unwrap().hits.is_empty());
        let all = idx.search(&query("")).unwrap();
        assert_eq!(all.total, 2);
        assert_eq!(all.types, [("ticket".to_string(), 2)]);
        assert_eq!(all.tags, [("desk".to_string(), 1), ("hw".to_string(), 1)]);

        // Visibility: only the owner's, or shared.
        let mut q = query("");
        q.visibility = Visibility::Only {
            owner: "u1".into(),
            teams: vec![],
            shared_user: "u1".into(),
            shared_teams: vec![],
        };
        assert_eq!(ids(&idx.search(&q).unwrap()), ["a"]);

        // Replace and delete by id, in one commit with the next cursor.
        let mut a2 = doc("a", "Printer repaired", "all good", "u1");
        a2.shared_users = vec!["u3".into()];
        idx.apply(&[a2], &["b".to_string()], "c2").unwrap();
        assert_eq!(idx.search(&query("")).unwrap().total, 1);
        assert!(idx.search(&query("fire")).unwrap().hits.is_empty());
        if let Visibility::Only {
            owner, shared_user, ..
        } = &mut q.visibility
        {
            *owner = "u3".into();
            *shared_user = "u3".into();
        }
        assert_eq!(ids(&idx.search(&q).unwrap()), ["a"]);
        assert_eq!(idx.cursor().unwrap().as_deref(), Some("c2"));
    }

    #[test]
    fn the_lru_closes_idle_indexes_and_reopens_them_intact() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::new(dir.path(), 2);
        for key in ["a", "b", "c"] {
            reg.get(key)
                .unwrap()
                .apply(&[doc(key, "hello", "world", "u")], &[], key)
                .unwrap();
        }
        assert_eq!(reg.open_count(), 2);
        assert_eq!(reg.known(), 3);
        let a = reg.get("a").unwrap();
        assert_eq!(a.cursor().unwrap().as_deref(), Some("a"));
        assert_eq!(a.len(), 1);
        reg.remove("a").unwrap();
        assert_eq!(reg.known(), 2);
        assert!(reg.get("../x").is_err());
    }
}
