//! Tenant provisioning and lifecycle: create, suspend, resume, delete, migrate.
//!
//! Business rules live here; SQL lives in `repo` and `db::migrate`. **Invariants:**
//! creation is idempotent and resumable — the registry row is written first as
//! `provisioning`, the database and schema are made idempotently, and only then is the row
//! `active`, so a failure half-way leaves a row that re-running `create` finishes and no tenant
//! that requests can reach half-made. A tenant's schema is created only in its region's
//! database. Every status change is broadcast so other instances drop their cached copy.

use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use super::TenancyState;
use super::model::{
    self, CreateTenant, IdentityMode, Isolation, Region, Tenant, TenantStatus,
    dedicated_database_name, schema_name, shared_database_name, shared_realm_name,
    tenant_realm_name, validate_slug,
};
use super::repo::{self, ConnectionRow, NewTenantRow};
use crate::auth::keycloak::{IdpError, Ownership};
use crate::db::{self, migrate};
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::ids::{ConnectionId, TenantId};

/// Checks a create request and lists every problem at once.
pub fn validate_create(input: &CreateTenant) -> ApiResult<()> {
    let mut errors = Vec::new();
    if let Err(message) = validate_slug(&input.slug) {
        errors.push(FieldError {
            pointer: "/slug".into(),
            message,
        });
    }
    let name_len = input.display_name.trim().chars().count();
    if !(1..=200).contains(&name_len) {
        errors.push(FieldError {
            pointer: "/display_name".into(),
            message: "must be 1-200 characters".into(),
        });
    }
    if let Some(link) = &input.identity.link {
        let ok = (1..=100).contains(&link.len())
            && link
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && link
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            errors.push(FieldError {
                pointer: "/identity/link".into(),
                message: "must be 1-100 characters of A-Z, a-z, 0-9, _ . -".into(),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

async fn registry_conn(state: &TenancyState) -> ApiResult<crate::db::PooledConn> {
    Ok(state.registry.get_owned().await?)
}

/// Host and port of a server URL, for the registry's (non-secret) record of a connection.
fn host_port(server_url: &str) -> (String, i32) {
    let url = url::Url::parse(server_url).ok();
    let host = url
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let port = url.and_then(|u| u.port()).unwrap_or(5432);
    (host, i32::from(port))
}

async fn ensure_connection(
    conn: &mut AsyncPgConnection,
    state: &TenancyState,
    region: Region,
    isolation: Isolation,
    database_name: &str,
) -> ApiResult<ConnectionRow> {
    if let Some(row) = repo::find_connection(conn, region, database_name).await? {
        return Ok(row);
    }
    let (host, port) = host_port(state.config.region_server_url(region));
    let row = ConnectionRow {
        id: ConnectionId::generate().0,
        region: region.as_str().into(),
        kind: repo::kind_for(isolation).into(),
        host,
        port,
        database_name: database_name.into(),
        created_at: chrono::Utc::now(),
    };
    Ok(repo::upsert_connection(conn, &row).await?)
}

/// Creates a tenant, or finishes one whose creation was interrupted. Returns the tenant and
/// whether this call created its registry row.
pub async fn create(state: &TenancyState, input: &CreateTenant) -> ApiResult<(Tenant, bool)> {
    validate_create(input)?;
    let mut conn = registry_conn(state).await?;
    let (tenant, created) = match repo::find_by_slug(&mut conn, &input.slug).await? {
        Some(existing) => {
            if existing.region != input.region
                || existing.isolation != input.isolation
                || existing.identity.mode != input.identity.mode
            {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "tenant {} already exists in region {} with isolation {} and identity mode {}",
                        existing.slug, existing.region, existing.isolation, existing.identity.mode
                    ),
                ));
            }
            if existing.status == TenantStatus::Deleting {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "tenant {} is being deleted; finish the deletion first",
                        existing.slug
                    ),
                ));
            }
            (existing, false)
        }
        None => {
            let database_name = match input.isolation {
                Isolation::Schema => shared_database_name(input.region),
                Isolation::Database => dedicated_database_name(&input.slug),
            };
            let connection = ensure_connection(
                &mut conn,
                state,
                input.region,
                input.isolation,
                &database_name,
            )
            .await?;
            let schema = schema_name(&input.slug);
            let link = input.identity.link.as_deref();
            let (identity_realm, identity_org_alias) = match input.identity.mode {
                IdentityMode::Realm => (
                    Some(
                        link.map(str::to_string)
                            .unwrap_or_else(|| tenant_realm_name(&input.slug)),
                    ),
                    None,
                ),
                IdentityMode::Organization => (
                    Some(shared_realm_name(input.region)),
                    Some(link.unwrap_or(&input.slug).to_string()),
                ),
                IdentityMode::Local => (None, None),
            };
            let row = NewTenantRow {
                id: TenantId::generate().0,
                slug: &input.slug,
                display_name: input.display_name.trim(),
                region: input.region.as_str(),
                isolation: input.isolation.as_str(),
                status: TenantStatus::Provisioning.as_str(),
                connection_id: connection.id,
                schema_name: &schema,
                identity_mode: input.identity.mode.as_str(),
                identity_realm: identity_realm.as_deref(),
                identity_org_alias: identity_org_alias.as_deref(),
                identity_linked: link.is_some(),
            };
            match repo::insert_tenant(&mut conn, &row).await {
                Ok(()) => {}
                // A concurrent create of the same slug won the insert: continue with its row.
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                )) => {}
                Err(e) => return Err(e.into()),
            }
            let tenant = repo::find_by_slug(&mut conn, &input.slug)
                .await?
                .ok_or_else(|| ApiError::internal("tenant row vanished after insert"))?;
            let created = tenant.id.0 == row.id;
            (tenant, created)
        }
    };
    if tenant.status != TenantStatus::Provisioning {
        return Ok((tenant, created));
    }
    let provisioned = with_tenant_lock(state, &tenant.slug, async |conn| {
        // Re-read under the lock: another process may have finished (or deleted) it meanwhile.
        let Some(tenant) = repo::find_by_slug(conn, &input.slug).await? else {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "the tenant was deleted while being created",
            ));
        };
        if tenant.status == TenantStatus::Provisioning {
            if let Err(err) = provision(state, &tenant, conn).await {
                let message = err.to_string();
                repo::set_error(conn, tenant.id, &message).await?;
                // Committed: the next attempt reads why this one stopped.
                return Ok(Err((tenant, message, err)));
            }
            tracing::info!(tenant = %tenant.slug, region = %tenant.region, isolation = %tenant.isolation, "tenant provisioned");
        }
        Ok(Ok(repo::find_by_slug(conn, &tenant.slug).await?))
    })
    .await?;
    let tenant = match provisioned {
        Ok(tenant) => tenant.ok_or_else(|| ApiError::not_found("tenant"))?,
        Err((tenant, message, err)) => {
            tracing::warn!(tenant = %tenant.slug, error = %message, "tenant provisioning failed; re-run create to resume");
            return Err(match err {
                ProvisionError::Refused(reason) => ApiError::new(
                    ErrorCode::Conflict,
                    format!("{reason}; the tenant stays unprovisioned until this is resolved"),
                ),
                other => ApiError::new(
                    ErrorCode::Unavailable,
                    "provisioning did not finish; repeat the same request to resume it",
                )
                .with_source(other),
            });
        }
    };
    state.tenant_cache.invalidate(&tenant.slug).await;
    Ok((tenant, created))
}

/// Runs `work` under the registry-side lock that serialises provisioning, migration and
/// deletion of one tenant across all processes, in one registry transaction (`work`'s `Ok`
/// commits it, its `Err` rolls it back). The lock is a transaction-scoped advisory lock: it
/// is released when the transaction ends, including when a cancelled caller drops it.
async fn with_tenant_lock<T>(
    state: &TenancyState,
    slug: &str,
    work: impl AsyncFnOnce(&mut AsyncPgConnection) -> ApiResult<T>,
) -> ApiResult<T> {
    db::transaction(&state.registry, "BEGIN", async |tx| {
        repo::lock_tenant(tx.conn(), slug).await?;
        work(tx.conn()).await
    })
    .await
}

/// Makes the tenant's database (dedicated isolation) and schema, then marks it active.
/// Runs under the tenant's lock; `registry` is the lock's transaction.
async fn provision(
    state: &TenancyState,
    tenant: &Tenant,
    registry: &mut AsyncPgConnection,
) -> Result<(), ProvisionError> {
    let server = state.config.region_server_url(tenant.region);
    if tenant.isolation == Isolation::Database {
        migrate::ensure_database(server, &tenant.database_name).await?;
    }
    let version = migrate_tenant(state, tenant).await?;
    if !tenant.identity.is_complete() {
        provision_identity(state, tenant, registry).await?;
    }
    repo::mark_provisioned(registry, tenant.id, version).await?;
    Ok(())
}

/// Why provisioning stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Database(#[from] migrate::MigrateError),
    #[error(transparent)]
    Identity(#[from] IdpError),
    #[error("{0}")]
    Refused(String),
}

impl From<diesel::result::Error> for ProvisionError {
    fn from(e: diesel::result::Error) -> Self {
        ProvisionError::Database(e.into())
    }
}

/// Settings for realms we manage: a refresh token works once (using it again fails), and
/// account mail goes through the configured SMTP server.
fn managed_realm_settings(config: &crate::config::Config) -> serde_json::Value {
    serde_json::json!({
        "revokeRefreshToken": true,
        "refreshTokenMaxReuse": 0,
        "smtpServer": {
            "host": config.smtp.host,
            "port": config.smtp.port.to_string(),
            "from": config.smtp.from,
            "fromDisplayName": config.smtp.from_display_name,
            "starttls": (config.smtp.security == crate::config::SmtpSecurity::Starttls).to_string(),
            "ssl": (config.smtp.security == crate::config::SmtpSecurity::Tls).to_string(),
        },
    })
}

/// Makes the tenant's identity home in Keycloak: its own realm (tagged as ours, or the linked
/// one) with the API's clients and roles, or an organization in the region's shared realm.
/// Records what it created, so deletion removes exactly that. Idempotent.
async fn provision_identity(
    state: &TenancyState,
    tenant: &Tenant,
    registry: &mut AsyncPgConnection,
) -> Result<(), ProvisionError> {
    let kc = &state.keycloak;
    let identity = &tenant.identity;
    let owner = tenant.id.to_string();
    let realm = match identity.mode {
        // Users and passwords live in the tenant's own tables: nothing to make in Keycloak.
        IdentityMode::Local => {
            repo::set_identity(registry, tenant.id, None, None, &[], true).await?;
            return Ok(());
        }
        IdentityMode::Realm => identity
            .realm
            .clone()
            .unwrap_or_else(|| tenant_realm_name(&tenant.slug)),
        IdentityMode::Organization => identity
            .realm
            .clone()
            .unwrap_or_else(|| shared_realm_name(tenant.region)),
    };
    let mut created = identity.created.clone();
    let mut org: Option<(String, String)> = None;
    match identity.mode {
        IdentityMode::Local => unreachable!("returned above"),
        IdentityMode::Realm if identity.linked => {
            if !kc.realm_exists(&realm).await? {
                return Err(ProvisionError::Refused(format!(
                    "realm {realm} does not exist to be linked"
                )));
            }
            for item in kc.ensure_realm_setup(&realm, Some(&tenant.slug)).await? {
                if !created.contains(&item) {
                    created.push(item);
                }
            }
        }
        IdentityMode::Realm => {
            if kc
                .ensure_realm(&realm, &tenant.display_name, false, &owner)
                .await?
                == Ownership::Foreign
            {
                return Err(ProvisionError::Refused(format!(
                    "realm {realm} already exists and was not made for this tenant; link it instead"
                )));
            }
            if !created.iter().any(|c| c == "realm") {
                created.push("realm".into());
            }
            kc.ensure_realm_setup(&realm, Some(&tenant.slug)).await?;
            kc.update_realm(&realm, &managed_realm_settings(&state.config))
                .await?;
        }
        IdentityMode::Organization => {
            kc.ensure_realm(
                &realm,
                &format!("NeoTenantApi {}", tenant.region),
                true,
                "platform",
            )
            .await?;
            kc.ensure_realm_setup(&realm, None).await?;
            kc.update_realm(&realm, &managed_realm_settings(&state.config))
                .await?;
            let alias = identity
                .org_alias
                .clone()
                .unwrap_or_else(|| tenant.slug.clone());
            if identity.linked {
                let (id, _) = kc.find_organization(&realm, &alias).await?.ok_or_else(|| {
                    ProvisionError::Refused(format!(
                        "organization {alias} does not exist in realm {realm} to be linked"
                    ))
                })?;
                org = Some((alias, id));
            } else {
                let (id, ownership) = kc
                    .ensure_organization(&realm, &alias, &tenant.display_name, &owner)
                    .await?;
                if ownership == Ownership::Foreign {
                    return Err(ProvisionError::Refused(format!(
                        "organization {alias} already exists and was not made for this tenant; link it instead"
                    )));
                }
                if !created.iter().any(|c| c == "organization") {
                    created.push("organization".into());
                }
                org = Some((alias, id));
            }
        }
    }
    let org = org
        .as_ref()
        .map(|(alias, id)| (alias.as_str(), id.as_str()));
    repo::set_identity(registry, tenant.id, Some(&realm), org, &created, true).await?;
    Ok(())
}

/// Removes from Keycloak what provisioning created for this tenant, and nothing else.
async fn remove_identity(state: &TenancyState, tenant: &Tenant) -> Result<(), IdpError> {
    let kc = &state.keycloak;
    let identity = &tenant.identity;
    let Some(realm) = identity.realm.as_deref() else {
        return Ok(());
    };
    // Login providers configured for an organization-mode tenant live in the shared realm.
    if identity.mode == IdentityMode::Organization
        && let Some(org) = identity.org_id.as_deref()
    {
        let prefix = format!("{}--", tenant.slug);
        for provider in kc.list_identity_providers(realm, Some(org)).await? {
            if let Some(alias) = provider["alias"]
                .as_str()
                .filter(|a| a.starts_with(&prefix))
            {
                kc.delete_identity_provider(realm, Some(org), alias).await?;
            }
        }
    }
    for item in &identity.created {
        match item.as_str() {
            "realm" => kc.delete_realm(realm).await?,
            "organization" => {
                if let Some(id) = identity.org_id.as_deref() {
                    kc.delete_organization(realm, id).await?;
                }
            }
            other => kc.remove_created(realm, other).await?,
        }
    }
    Ok(())
}

/// Applies the tenant template to one tenant's schema; returns its version.
async fn migrate_tenant(
    state: &TenancyState,
    tenant: &Tenant,
) -> Result<i64, migrate::MigrateError> {
    use diesel_async::AsyncConnection;
    let url = db::database_url(
        state.config.region_server_url(tenant.region),
        &tenant.database_name,
    );
    let mut conn = AsyncPgConnection::establish(&url).await?;
    let version = migrate::apply(&mut conn, &tenant.schema_name, &migrate::set("tenant")).await?;
    // The platform's role templates, through an ordinary tenant transaction.
    tenant_db(state, tenant)
        .transaction(async |tx| {
            crate::rbac::service::seed(tx.conn()).await?;
            Ok::<_, migrate::MigrateError>(())
        })
        .await?;
    Ok(version)
}

pub async fn get(state: &TenancyState, slug: &str) -> ApiResult<Tenant> {
    let mut conn = registry_conn(state).await?;
    repo::find_by_slug(&mut conn, slug)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::TenantNotFound, format!("no tenant {slug:?}")))
}

/// Every active tenant, resolved, for background sweeps; `what` names the sweep in the log
/// when the registry cannot be read (the sweep then sees the tenants listed so far).
pub async fn active_tenants(
    state: &TenancyState,
    what: &str,
) -> Vec<std::sync::Arc<super::cache::ResolvedTenant>> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = match list(state, after, 200).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, sweep = what, "a sweep could not list tenants");
                break;
            }
        };
        let Some(last) = page.last() else { break };
        after = Some(last.id.0);
        for t in page
            .into_iter()
            .filter(|t| t.status == super::model::TenantStatus::Active)
        {
            all.push(std::sync::Arc::new(super::resolve::resolved(state, t)));
        }
    }
    all
}

pub async fn list(state: &TenancyState, after: Option<Uuid>, limit: i64) -> ApiResult<Vec<Tenant>> {
    let mut conn = registry_conn(state).await?;
    Ok(repo::list(&mut conn, after, limit).await?)
}

async fn transition(
    state: &TenancyState,
    slug: &str,
    to: TenantStatus,
    from: &[TenantStatus],
) -> ApiResult<Tenant> {
    let tenant = get(state, slug).await?;
    if tenant.status != to {
        let mut conn = registry_conn(state).await?;
        if !repo::set_status(&mut conn, tenant.id, to, from).await? {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("tenant {slug} is {}; cannot become {to}", tenant.status),
            ));
        }
        state.tenant_cache.invalidate(slug).await;
        tracing::info!(tenant = slug, status = %to, "tenant status changed");
    }
    get(state, slug).await
}

pub async fn suspend(state: &TenancyState, slug: &str) -> ApiResult<Tenant> {
    transition(
        state,
        slug,
        TenantStatus::Suspended,
        &[TenantStatus::Active],
    )
    .await
}

pub async fn resume(state: &TenancyState, slug: &str) -> ApiResult<Tenant> {
    transition(
        state,
        slug,
        TenantStatus::Active,
        &[TenantStatus::Suspended],
    )
    .await
}

/// Deletes a tenant and all its data. `confirm` must repeat the slug. Idempotent: an
/// interrupted deletion (status `deleting`) finishes when called again.
pub async fn delete(state: &TenancyState, slug: &str, confirm: Option<&str>) -> ApiResult<()> {
    if confirm != Some(slug) {
        return Err(ApiError::new(
            ErrorCode::ConfirmationRequired,
            format!("deleting a tenant destroys its data; repeat the request with confirm={slug}"),
        ));
    }
    let tenant = get(state, slug).await?;
    {
        let mut conn = registry_conn(state).await?;
        repo::set_status(
            &mut conn,
            tenant.id,
            TenantStatus::Deleting,
            &[
                TenantStatus::Provisioning,
                TenantStatus::Active,
                TenantStatus::Suspended,
                TenantStatus::Deleting,
            ],
        )
        .await?;
    }
    // Stop serving it everywhere before the data goes.
    state.tenant_cache.invalidate(slug).await;
    // Wait for any provisioning or migration of this tenant to finish, then remove it.
    let deleted = with_tenant_lock(state, slug, async |conn| {
        let Some(tenant) = repo::find_by_slug(conn, slug).await? else {
            return Ok(false);
        };
        state.audit_recent.forget(tenant.id.0);
        let key = crate::ids::search_index_key(tenant.id.0);
        let search = state.search.clone();
        match tokio::task::spawn_blocking(move || search.remove(&key)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not remove the tenant's search index"),
            Err(e) => tracing::warn!(error = %e, "could not remove the tenant's search index"),
        }
        if let Err(e) = remove_identity(state, &tenant).await {
            return Err(ApiError::new(
                ErrorCode::IdentityUnavailable,
                "the identity provider could not remove the tenant's users; repeat the deletion",
            )
            .with_source(e));
        }
        let server = state.config.region_server_url(tenant.region);
        let dropped = match tenant.isolation {
            Isolation::Database => {
                state.pools.remove(tenant.connection_id);
                migrate::drop_database(server, &tenant.database_name).await
            }
            Isolation::Schema => drop_schema(server, &tenant).await,
        };
        match dropped {
            Err(e) => Err(ApiError::unavailable("the tenant's database", e)),
            Ok(()) => remove_rows(conn, &tenant).await.map(|()| true),
        }
    })
    .await?;
    if deleted {
        state.tenant_cache.invalidate(slug).await;
        tracing::info!(tenant = slug, "tenant deleted");
    }
    Ok(())
}

async fn remove_rows(conn: &mut AsyncPgConnection, tenant: &Tenant) -> ApiResult<()> {
    repo::delete_tenant(conn, tenant.id).await?;
    if tenant.isolation == Isolation::Database {
        repo::delete_connection(conn, tenant.connection_id).await?;
    }
    Ok(())
}

async fn drop_schema(server: &str, tenant: &Tenant) -> Result<(), migrate::MigrateError> {
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    let url = db::database_url(server, &tenant.database_name);
    let mut conn = AsyncPgConnection::establish(&url).await?;
    // schema_name passed is_identifier when the row was written (CHECK constraint too).
    conn.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        tenant.schema_name
    ))
    .await?;
    Ok(())
}

/// What `neotenant migrate` did.
#[derive(Debug, Default)]
pub struct MigrateReport {
    pub registry_version: i64,
    pub tenants_migrated: usize,
    pub tenants_failed: Vec<(String, String)>,
}

/// Creates the registry and shared databases if missing, migrates the registry, then applies
/// the tenant template to every tenant. Safe to run from several processes at once.
pub async fn migrate_platform(
    config: &crate::config::Config,
) -> Result<i64, migrate::MigrateError> {
    use diesel_async::AsyncConnection;
    let registry_db = &config.database.registry_database;
    migrate::ensure_database(config.database.url.expose(), registry_db).await?;
    for region in Region::ALL {
        migrate::ensure_database(
            config.region_server_url(*region),
            &shared_database_name(*region),
        )
        .await?;
    }
    let mut conn =
        AsyncPgConnection::establish(&db::database_url(config.database.url.expose(), registry_db))
            .await?;
    migrate::apply(&mut conn, "admin", &migrate::set("registry")).await
}

/// Migrates the registry and records each region's shared database; returns the registry
/// version. Enough for a fresh platform to provision tenants.
pub async fn ensure_platform(state: &TenancyState) -> ApiResult<i64> {
    let version = migrate_platform(&state.config)
        .await
        .map_err(|e| ApiError::unavailable("the registry database", e))?;
    let mut conn = registry_conn(state).await?;
    for region in Region::ALL {
        ensure_connection(
            &mut conn,
            state,
            *region,
            Isolation::Schema,
            &shared_database_name(*region),
        )
        .await?;
    }
    Ok(version)
}

pub async fn migrate_all(state: &TenancyState) -> ApiResult<MigrateReport> {
    let mut report = MigrateReport {
        registry_version: ensure_platform(state).await?,
        ..Default::default()
    };
    let mut after = None;
    loop {
        let page = list(state, after, 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.0);
        for listed in page.iter().filter(|t| t.status != TenantStatus::Deleting) {
            match migrate_one(state, &listed.slug).await {
                Ok(true) => report.tenants_migrated += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(tenant = %listed.slug, error = %e, "tenant migration failed");
                    report
                        .tenants_failed
                        .push((listed.slug.clone(), e.to_string()));
                }
            }
        }
    }
    Ok(report)
}

/// Migrates (or finishes provisioning) one tenant under its lock; `false` when it was deleted
/// or is being deleted meanwhile.
pub async fn migrate_one(state: &TenancyState, slug: &str) -> ApiResult<bool> {
    with_tenant_lock(state, slug, async |conn| {
        let tenant = match repo::find_by_slug(conn, slug).await? {
            Some(t) if t.status != TenantStatus::Deleting => t,
            _ => return Ok(false),
        };
        let outcome = if tenant.status == TenantStatus::Provisioning {
            provision(state, &tenant, conn).await
        } else {
            async {
                let version = migrate_tenant(state, &tenant).await?;
                if !tenant.identity.is_complete() {
                    provision_identity(state, &tenant, conn).await?;
                }
                repo::mark_provisioned(conn, tenant.id, version).await?;
                Ok::<(), ProvisionError>(())
            }
            .await
        };
        outcome
            .map(|()| true)
            .map_err(|e| ApiError::unavailable("the tenant's database", e))
    })
    .await
}

pub use super::resolve::{resolved, tenant_db};

/// `model` re-exported for callers that only need the types.
pub use model::TenantView;
