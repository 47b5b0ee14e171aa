//! Sealing (numbering, chaining and signing new entries just behind the writes), verification,
//! retention, and the background worker that runs them.
//!
//! Sealing, verification and pruning of one tenant are serialised by a transaction-scoped
//! advisory lock on the tenant's schema, so instances can run the worker side by side.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bytea, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

use super::chain::{ANCHOR, Broken, CHECKPOINT, Entry, GENESIS, Signer, Verifier, link};
use crate::db::{PgPool, TenantDb};
use crate::error::{ApiError, ApiResult};
use crate::schema::admin::audit_heads;
use crate::schema::tenant::{audit_anchors, audit_checkpoints, audit_log, audit_redactions};

const BATCH: i64 = 5000;

pub(super) async fn lock(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':audit'))")
        .execute(conn)
        .await?;
    Ok(())
}

fn hash32(v: &[u8]) -> [u8; 32] {
    v.try_into().unwrap_or(GENESIS)
}

/// The newest anchor of a pruned prefix: (seq, hash, signature).
async fn anchor(conn: &mut AsyncPgConnection) -> QueryResult<Option<(i64, Vec<u8>, Vec<u8>)>> {
    audit_anchors::table
        .select((
            audit_anchors::seq,
            audit_anchors::hash,
            audit_anchors::signature,
        ))
        .order(audit_anchors::seq.desc())
        .first(conn)
        .await
        .optional()
}

/// Where sealing continues: the newest signed checkpoint (or anchor), never merely the
/// highest `seq` in the table, so a row forged into the table cannot hijack the chain. Sealed
/// entries beyond the newest checkpoint mean tampering: sealing stops (new entries wait,
/// unsealed and intact) and verification reports the break.
async fn head(
    conn: &mut AsyncPgConnection,
    signer: &Signer,
    tenant: Uuid,
) -> ApiResult<(i64, [u8; 32])> {
    let checkpoint: Option<(i64, Vec<u8>, Vec<u8>)> = audit_checkpoints::table
        .select((
            audit_checkpoints::seq,
            audit_checkpoints::hash,
            audit_checkpoints::signature,
        ))
        .order(audit_checkpoints::seq.desc())
        .first(conn)
        .await
        .optional()?;
    let anchor = anchor(conn).await?;
    let (seq, hash, sig, kind) = match (checkpoint, anchor) {
        (Some(c), Some(a)) if a.0 >= c.0 => (a.0, a.1, a.2, ANCHOR),
        (Some(c), _) => (c.0, c.1, c.2, CHECKPOINT),
        (None, Some(a)) => (a.0, a.1, a.2, ANCHOR),
        (None, None) => (0, GENESIS.to_vec(), Vec::new(), CHECKPOINT),
    };
    let refuse = |why: &str| {
        ApiError::new(
            crate::error::ErrorCode::Conflict,
            format!("audit chain of tenant {tenant} is tampered ({why}); sealing stopped"),
        )
    };
    if seq > 0 && !signer.verify(kind, tenant, seq, &hash, &sig) {
        return Err(refuse("its newest checkpoint is not validly signed"));
    }
    let beyond: i64 = audit_log::table
        .filter(audit_log::seq.gt(seq))
        .count()
        .get_result(conn)
        .await?;
    if beyond > 0 {
        return Err(refuse("sealed entries lie beyond the newest checkpoint"));
    }
    Ok((seq, hash32(&hash)))
}

/// Seals every unsealed entry of one tenant: numbers them in the order the sealer finds them,
/// chains them and signs a checkpoint at the end of each batch, in the same transaction; then
/// records the new head in the platform registry. Returns how many were sealed.
pub async fn seal_tenant(
    signer: &Signer,
    registry: &PgPool,
    tenant: Uuid,
    db: &TenantDb,
) -> ApiResult<u64> {
    let mut total = 0u64;
    loop {
        match db
            .transaction(async |tx| {
                let conn = tx.conn();
                lock(conn).await?;
                let rows: Vec<Entry> = audit_log::table
                    .filter(audit_log::seq.is_null())
                    .select(Entry::as_select())
                    .order(audit_log::id.asc())
                    .limit(BATCH)
                    .load(conn)
                    .await?;
                if rows.is_empty() {
                    return Ok::<_, ApiError>(None);
                }
                let (mut seq, mut prev) = head(conn, signer, tenant).await?;
                let mut ids = Vec::with_capacity(rows.len());
                let mut seqs = Vec::with_capacity(rows.len());
                let mut hashes = Vec::with_capacity(rows.len());
                for e in &rows {
                    seq += 1;
                    prev = link(&prev, seq, e);
                    ids.push(e.id);
                    seqs.push(seq);
                    hashes.push(prev.to_vec());
                }
                diesel::sql_query(
                    "UPDATE audit_log a SET seq = v.seq, hash = v.hash \
                 FROM unnest($1, $2, $3) AS v(id, seq, hash) WHERE a.id = v.id",
                )
                .bind::<Array<SqlUuid>, _>(&ids)
                .bind::<Array<BigInt>, _>(&seqs)
                .bind::<Array<Bytea>, _>(&hashes)
                .execute(conn)
                .await?;
                let signature = signer.sign(CHECKPOINT, tenant, seq, &prev);
                diesel::insert_into(audit_checkpoints::table)
                    .values((
                        audit_checkpoints::seq.eq(seq),
                        audit_checkpoints::hash.eq(prev.to_vec()),
                        audit_checkpoints::signature.eq(&signature),
                    ))
                    .execute(conn)
                    .await?;
                Ok(Some((rows.len(), seq, prev, signature)))
            })
            .await?
        {
            None => break,
            Some((n, seq, hash, signature)) => {
                total += n as u64;
                record_head(registry, tenant, seq, &hash, &signature).await?;
                if (n as i64) < BATCH {
                    break;
                }
            }
        }
    }
    Ok(total)
}

/// Signed redactions after `from`, for the verifier.
pub async fn redactions_after(
    conn: &mut AsyncPgConnection,
    from: i64,
) -> QueryResult<super::chain::Redactions> {
    Ok(audit_redactions::table
        .filter(audit_redactions::seq.gt(from))
        .select((
            audit_redactions::seq,
            audit_redactions::prev,
            audit_redactions::hash,
            audit_redactions::content,
            audit_redactions::signature,
        ))
        .load::<(i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>)>(conn)
        .await?
        .into_iter()
        .map(|(seq, prev, hash, content, signature)| {
            (
                seq,
                super::chain::Redaction {
                    prev,
                    hash,
                    content,
                    signature,
                },
            )
        })
        .collect())
}

/// Keeps the newest signed head in the registry (never moving it backwards).
async fn record_head(
    registry: &PgPool,
    tenant: Uuid,
    seq: i64,
    hash: &[u8; 32],
    signature: &[u8],
) -> ApiResult<()> {
    let mut conn = registry.get().await?;
    diesel::sql_query(
        "INSERT INTO admin.audit_heads (tenant_id, seq, hash, signature) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, \
         signature = excluded.signature, updated_at = now() WHERE audit_heads.seq < excluded.seq",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<BigInt, _>(seq)
    .bind::<Bytea, _>(hash.to_vec())
    .bind::<Bytea, _>(signature)
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// The outcome of verifying one tenant's chain.
#[derive(Debug, Clone, Serialize, salvo::oapi::ToSchema)]
pub struct VerifyReport {
    /// True when every sealed entry is intact and covered by a valid signed checkpoint.
    pub ok: bool,
    /// Entries checked.
    pub entries: u64,
    pub checkpoints: u64,
    /// The anchor of the pruned prefix the check started after, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor_seq: Option<i64>,
    /// The last sequence number verified.
    pub last_seq: i64,
    /// Entries written but not sealed yet (checked once sealed).
    pub unsealed: i64,
    /// Entries an erasure pseudonymised, each accepted through its signed redaction.
    pub redacted: u64,
    /// The first broken link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<Broken>,
    pub elapsed_ms: u64,
    pub entries_per_sec: u64,
}

/// Recomputes the whole chain of one tenant, checks every checkpoint, the anchor and the
/// registry's head, and reports the first broken link.
pub async fn verify_tenant(
    signer: &Signer,
    registry: &PgPool,
    tenant: Uuid,
    db: &TenantDb,
) -> ApiResult<VerifyReport> {
    let started = Instant::now();
    let head = {
        let mut conn = registry.get().await?;
        audit_heads::table
            .filter(audit_heads::tenant_id.eq(tenant))
            .select((audit_heads::seq, audit_heads::hash, audit_heads::signature))
            .first::<(i64, Vec<u8>, Vec<u8>)>(&mut conn)
            .await
            .optional()?
    };
    db.transaction(async |tx| {
        let conn = tx.conn();
        lock(conn).await?;
        let anchor = anchor(conn).await?;
        let mut anchor_broken = None;
        if let Some((seq, hash, sig)) = &anchor
            && !signer.verify(ANCHOR, tenant, *seq, hash, sig)
        {
            anchor_broken = Some(Broken {
                seq: *seq,
                entry_id: None,
                reason: "the anchor of the pruned prefix is not validly signed".into(),
            });
        }
        let from = anchor.as_ref().map_or(0, |a| a.0);
        let checkpoints: BTreeMap<i64, (Vec<u8>, Vec<u8>)> = audit_checkpoints::table
            .filter(audit_checkpoints::seq.gt(from))
            .select((
                audit_checkpoints::seq,
                audit_checkpoints::hash,
                audit_checkpoints::signature,
            ))
            .load::<(i64, Vec<u8>, Vec<u8>)>(conn)
            .await?
            .into_iter()
            .map(|(s, h, sig)| (s, (h, sig)))
            .collect();
        let redactions = redactions_after(conn, from).await?;
        let mut v = Verifier::new(
            tenant,
            signer.clone(),
            anchor.as_ref().map(|(s, h, _)| (*s, hash32(h))),
            checkpoints,
        )
        .with_redactions(redactions)
        .with_head(head);
        // Entries the prefix should have taken with it must be gone.
        let stale: i64 = audit_log::table
            .filter(audit_log::seq.le(from))
            .count()
            .get_result(conn)
            .await?;
        if stale > 0 && anchor_broken.is_none() {
            anchor_broken = Some(Broken {
                seq: from,
                entry_id: None,
                reason: "entries inside the pruned prefix reappeared".into(),
            });
        }
        let mut after = from;
        'pages: loop {
            let page: Vec<Entry> = audit_log::table
                .filter(audit_log::seq.gt(after))
                .select(Entry::as_select())
                .order(audit_log::seq.asc())
                .limit(10_000)
                .load(conn)
                .await?;
            let n = page.len();
            for e in &page {
                if !v.feed(e) {
                    break 'pages;
                }
                after = e.seq.unwrap_or(after);
            }
            if n < 10_000 {
                break;
            }
        }
        v.finish();
        let unsealed: i64 = audit_log::table
            .filter(audit_log::seq.is_null())
            .count()
            .get_result(conn)
            .await?;
        let broken = anchor_broken.or(v.broken.clone());
        let elapsed = started.elapsed();
        Ok::<_, ApiError>(VerifyReport {
            ok: broken.is_none(),
            entries: v.checked,
            checkpoints: v.checkpoints_checked,
            anchor_seq: anchor.map(|a| a.0),
            last_seq: v.last_seq(),
            unsealed,
            redacted: v.redacted,
            broken,
            elapsed_ms: elapsed.as_millis() as u64,
            entries_per_sec: (v.checked as f64 / elapsed.as_secs_f64().max(1e-6)) as u64,
        })
    })
    .await
}

/// Applies the tenant's retention policy: sealed entries older than `retention_days` are
/// deleted after their prefix was verified, and a signed anchor (the hash at the last pruned
/// entry) lets the rest keep verifying. Returns how many were pruned.
pub async fn prune_tenant(signer: &Signer, tenant: Uuid, db: &TenantDb) -> ApiResult<u64> {
    db.transaction(async |tx| {
        let conn = tx.conn();
        lock(conn).await?;
        let days = crate::settings::repo::audit_retention_days(conn).await?;
        let Some(days) = days else {
            return Ok::<_, ApiError>(0);
        };
        let cutoff = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        // Only a prefix can go: up to the entry before the first one still inside the window.
        let first_kept: Option<i64> = audit_log::table
            .filter(audit_log::seq.is_not_null())
            .filter(audit_log::at.ge(cutoff))
            .select(diesel::dsl::min(audit_log::seq))
            .first(conn)
            .await?;
        let last: Option<i64> = match first_kept {
            Some(k) => Some(k - 1),
            None => {
                audit_log::table
                    .select(diesel::dsl::max(audit_log::seq))
                    .first(conn)
                    .await?
            }
        };
        let from_anchor = anchor(conn).await?.map_or(0, |a| a.0);
        let Some(last) = last.filter(|l| *l > from_anchor) else {
            return Ok(0);
        };
        // Never sign over a chain that does not verify.
        let anchor = anchor(conn).await?;
        let from = anchor.as_ref().map_or(0, |a| a.0);
        let redactions = redactions_after(conn, from).await?;
        let mut v = Verifier::new(
            tenant,
            signer.clone(),
            anchor.as_ref().map(|(s, h, _)| (*s, hash32(h))),
            BTreeMap::new(),
        )
        .with_redactions(redactions);
        let mut after = from;
        while after < last {
            let page: Vec<Entry> = audit_log::table
                .filter(audit_log::seq.gt(after))
                .filter(audit_log::seq.le(last))
                .select(Entry::as_select())
                .order(audit_log::seq.asc())
                .limit(10_000)
                .load(conn)
                .await?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                if !v.feed(e) {
                    let b = v.broken.clone().expect("broken");
                    return Err(ApiError::new(
                        crate::error::ErrorCode::Conflict,
                        format!(
                            "retention refused: the chain is broken at {} ({})",
                            b.seq, b.reason
                        ),
                    ));
                }
                after = e.seq.unwrap_or(after);
            }
        }
        if v.last_seq() != last {
            return Ok(0);
        }
        let hash = v.last_hash();
        let pruned = diesel::delete(audit_log::table.filter(audit_log::seq.le(last)))
            .execute(conn)
            .await? as i64;
        diesel::insert_into(audit_anchors::table)
            .values((
                audit_anchors::seq.eq(last),
                audit_anchors::hash.eq(hash.to_vec()),
                audit_anchors::signature.eq(signer.sign(ANCHOR, tenant, last, &hash)),
                audit_anchors::pruned.eq(pruned),
            ))
            .execute(conn)
            .await?;
        diesel::delete(audit_checkpoints::table.filter(audit_checkpoints::seq.le(last)))
            .execute(conn)
            .await?;
        diesel::delete(audit_redactions::table.filter(audit_redactions::seq.le(last)))
            .execute(conn)
            .await?;
        Ok(pruned as u64)
    })
    .await
}

/// Every active tenant: (id, database).
pub(crate) async fn all_tenants(state: &crate::tenancy::TenancyState) -> Vec<(Uuid, TenantDb)> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = match crate::tenancy::service::list(state, after, 500).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e.detail, "audit worker cannot list tenants");
                return out;
            }
        };
        let n = page.len();
        for t in page {
            after = Some(t.id.0);
            if t.status == crate::tenancy::model::TenantStatus::Active {
                out.push((t.id.0, crate::tenancy::service::tenant_db(state, &t)));
            }
        }
        if n < 500 {
            return out;
        }
    }
}

/// The background jobs: sealing behind recent writes, a sweep of every tenant, forwarding to
/// syslog collectors and retention. Runs until `stop` changes.
pub async fn worker(state: Arc<super::AuditState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let cfg = state.config.audit.clone();
    let signer = Signer::new(cfg.signing_key.expose());
    let allow = crate::netguard::AllowList::parse(&state.config.webhooks.allow_hosts);
    let seal_every = Duration::from_millis(cfg.seal_interval_ms);
    let mut seal = tokio::time::interval(seal_every);
    let mut sweep = tokio::time::interval(Duration::from_secs(cfg.sweep_interval_secs));
    let mut forward = tokio::time::interval(Duration::from_millis(cfg.forward_interval_ms));
    let mut retention = tokio::time::interval(Duration::from_secs(cfg.retention_interval_secs));
    for t in [&mut seal, &mut sweep, &mut forward, &mut retention] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    // Tenants this worker knows to forward for (learned by the sweep and by writes).
    let mut known: Vec<(Uuid, TenantDb)> = Vec::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = seal.tick() => {
                for (id, db) in state.audit_recent.tenants(Duration::from_secs(10) + seal_every) {
                    if let Err(e) = seal_tenant(&signer, &state.registry, id, &db).await {
                        state.audit_recent.forget(id);
                        tracing::warn!(tenant = %id, error = %e.detail, cause = ?e.source, "audit sealing failed; the sweep retries it");
                    }
                }
            }
            _ = sweep.tick() => {
                known = all_tenants(&state.tenancy).await;
                for (id, db) in &known {
                    if let Err(e) = seal_tenant(&signer, &state.registry, *id, db).await {
                        tracing::warn!(tenant = %id, error = %e.detail, cause = ?e.source, "audit sealing failed; retrying next sweep");
                    }
                }
            }
            _ = forward.tick() => {
                let mut targets = known.clone();
                for r in state.audit_recent.tenants(Duration::from_secs(3600)) {
                    if !targets.iter().any(|(id, _)| *id == r.0) {
                        targets.push(r);
                    }
                }
                for (id, db) in &targets {
                    if let Err(e) = super::forward::forward_tenant(*id, db, &allow).await {
                        tracing::debug!(tenant = %id, error = %e.detail, "audit forwarding round failed");
                    }
                }
            }
            _ = retention.tick() => {
                for (id, db) in &known {
                    match prune_tenant(&signer, *id, db).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(tenant = %id, pruned = n, "audit retention applied"),
                        Err(e) => tracing::warn!(tenant = %id, error = %e.detail, "audit retention failed"),
                    }
                }
            }
        }
    }
}
