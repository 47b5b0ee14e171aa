//! The rules of invitations: who may invite whom into what (delegation, the tenant's domain
//! policy, hourly limits, one open invitation per address, no invitation to a member), the
//! lifecycle (open, resend, revoke), accepting (the identity side in Keycloak or a local
//! password, then one transaction that makes the membership and closes the invitation), and
//! templates and policy. Never runs SQL itself and never sends mail itself (the delivery worker
//! does, woken through the state's nudge).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use super::repo::{self, NewRow, Row};
use super::template::{self, Parts};
use super::{
    AcceptRequest, Accepted, BulkItem, BulkResult, Counts, Filter, Invitation, InvitationsState,
    MAX_BULK, NewInvitation, Policy, Preview, Status, TOKEN_PREFIX, Template, TemplateInput,
    Variable,
};
use crate::audit::{self, Actor, Change};
use crate::auth::keycloak::IdpError;
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode, FieldError};
use crate::ids::{InvitationId, TeamId, UserId};
use crate::rbac::Caller;
use crate::tenancy::cache::ResolvedTenant;
use crate::tenancy::model::IdentityMode;
use crate::users::profile::locale_ok;

fn field(pointer: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

/// The answer to every token that does not work, whatever the reason.
pub fn token_refused() -> ApiError {
    ApiError::new(
        ErrorCode::InvitationTokenInvalid,
        "the invitation token is invalid, expired, revoked or already used",
    )
}

/// Whether `email` is an address we accept: one `@`, a non-empty local part, a dotted domain,
/// no spaces or control characters, at most 254 bytes.
pub fn email_ok(email: &str) -> bool {
    email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty()
                && l.len() <= 64
                && !d.contains('@')
                && d.contains('.')
                && !d.starts_with('.')
                && !d.ends_with('.')
                && !d.contains("..")
        })
}

/// Whether the policy lets `email` in: no list, or its domain is listed (a `*.` entry also
/// admits subdomains).
pub fn domain_allowed(policy: &Policy, email: &str) -> bool {
    if policy.allowed_domains.is_empty() {
        return true;
    }
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default();
    policy
        .allowed_domains
        .iter()
        .any(|allowed| match allowed.strip_prefix("*.") {
            Some(parent) => domain == parent || domain.ends_with(&format!(".{parent}")),
            None => domain == *allowed,
        })
}

/// The tenant's policy, or the platform's default.
/// The tenant's invitation rules, read inside the caller's transaction from its settings:
/// the policy, and the hourly limits (the tenant's own where lower than the platform's).
struct Rules {
    policy: Policy,
    per_inviter_per_hour: u32,
    per_tenant_per_hour: u32,
}

async fn rules_in(
    state: &InvitationsState,
    conn: &mut diesel_async::AsyncPgConnection,
) -> ApiResult<Rules> {
    let (current, _) = crate::settings::repo::current(conn, false).await?;
    let eff =
        crate::settings::Effective::build(&state.settings.catalogue, current.as_ref(), None, "");
    let platform = &state.config.invitations;
    let lower = |own: Option<u32>, cap: u32| own.map_or(cap, |n| n.min(cap));
    Ok(Rules {
        per_inviter_per_hour: lower(
            eff.invitations.per_inviter_per_hour,
            platform.per_inviter_per_hour,
        ),
        per_tenant_per_hour: lower(
            eff.invitations.per_tenant_per_hour,
            platform.per_tenant_per_hour,
        ),
        policy: Policy {
            expiry_hours: eff.invitations.expiry_hours,
            allowed_domains: eff.invitations.allowed_domains,
        },
    })
}

async fn policy_in(
    state: &InvitationsState,
    conn: &mut diesel_async::AsyncPgConnection,
) -> ApiResult<Policy> {
    Ok(rules_in(state, conn).await?.policy)
}

/// The item-level checks that need no database: each problem of item `i` of the call.
fn check_item(item: &NewInvitation, policy: &Policy) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let email = item.email.trim();
    if !email_ok(email) {
        errors.push(field("/email", "must be an email address"));
    } else if !domain_allowed(policy, email) {
        errors.push(field(
            "/email",
            format!(
                "this tenant invites only addresses at {}",
                policy.allowed_domains.join(", ")
            ),
        ));
    }
    if item.roles.len() > 50 {
        errors.push(field("/roles", "at most 50 roles"));
    }
    for (i, role) in item.roles.iter().enumerate() {
        if role.is_empty() || role.len() > 100 {
            errors.push(field(format!("/roles/{i}"), "must be a role key"));
        }
    }
    if item.teams.len() > 50 {
        errors.push(field("/teams", "at most 50 teams"));
    }
    if item
        .message
        .as_ref()
        .is_some_and(|m| m.chars().count() > 2000)
    {
        errors.push(field("/message", "must be at most 2000 characters"));
    }
    if item.locale.as_deref().is_some_and(|l| !locale_ok(l)) {
        errors.push(field(
            "/locale",
            "must be a language tag such as en, de or pt-BR",
        ));
    }
    if item
        .expires_in_hours
        .is_some_and(|h| !(1..=2160).contains(&h))
    {
        errors.push(field("/expires_in_hours", "must be between 1 and 2160"));
    }
    errors
}

/// How a refused item is reported.
fn refused(index: usize, e: ApiError) -> BulkItem {
    BulkItem {
        index,
        status: e.code.status(),
        invitation: None,
        kind: Some(e.code.type_uri()),
        detail: Some(e.detail.into_owned()),
        errors: e.errors,
    }
}

/// Seconds until the oldest of `count` invitations in the window leaves it.
fn retry_secs(oldest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> u64 {
    oldest
        .map(|o| (o + Duration::hours(1) - now).num_seconds().max(1) as u64)
        .unwrap_or(3600)
}

/// Invites each of `items` on its own (one transaction for all): the valid ones are created
/// and queued for mail, the others answered with their problem. The call as a whole is
/// refused only when it is malformed (no items, too many) or over the hourly limits.
pub async fn invite(
    state: &InvitationsState,
    caller: &Caller,
    items: &[NewInvitation],
) -> ApiResult<BulkResult> {
    if items.is_empty() || items.len() > MAX_BULK {
        return Err(ApiError::validation(vec![field(
            "/items",
            format!("must list 1-{MAX_BULK} invitations"),
        )]));
    }
    let now = Utc::now();
    let result = caller
        .db()
        .transaction(async |tx| -> ApiResult<BulkResult> {
            let conn = tx.conn();
            repo::lock_creation(conn).await?;
            expire_in(conn, &caller.actor, 1_000).await?;
            let Rules {
                policy,
                per_inviter_per_hour,
                per_tenant_per_hour,
            } = rules_in(state, conn).await?;
            let mut outcome: Vec<Option<Result<(), ApiError>>> = items
                .iter()
                .map(|item| {
                    let errors = check_item(item, &policy);
                    (!errors.is_empty()).then(|| Err(ApiError::validation(errors)))
                })
                .collect();
            let valid = outcome.iter().filter(|o| o.is_none()).count() as i64;
            let ((mine, my_oldest), (all, oldest)) =
                repo::last_hour(conn, caller.user_id()).await?;
            if valid > 0 && mine + valid > i64::from(per_inviter_per_hour) {
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "you may send {} invitations per hour; {} were sent in the last hour",
                        per_inviter_per_hour, mine
                    ),
                )
                .retry_after(retry_secs(my_oldest, now)));
            }
            if valid > 0 && all + valid > i64::from(per_tenant_per_hour) {
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "this tenant may send {} invitations per hour; {} were sent in the last hour",
                        per_tenant_per_hour, all
                    ),
                )
                .retry_after(retry_secs(oldest, now)));
            }
            let lower: Vec<String> = items
                .iter()
                .map(|i| i.email.trim().to_lowercase())
                .collect();
            let members: BTreeSet<String> =
                repo::member_emails(conn, &lower).await?.into_iter().collect();
            let open: BTreeSet<String> = repo::open_for(conn, &lower).await?.into_iter().collect();
            // Roles and teams are checked once each, whatever number of items name them.
            let mut roles: HashMap<&str, Result<(), ApiError>> = HashMap::new();
            let mut teams: HashMap<Uuid, Result<(), ApiError>> = HashMap::new();
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                if outcome[i].is_some() {
                    continue;
                }
                let email = &lower[i];
                let verdict = if members.contains(email) {
                    Err(ApiError::new(
                        ErrorCode::AlreadyMember,
                        "this address already belongs to a user of this tenant",
                    ))
                } else if open.contains(email) || !seen.insert(email.clone()) {
                    Err(ApiError::new(
                        ErrorCode::InvitationExists,
                        "an open invitation for this address exists; resend or revoke it",
                    ))
                } else {
                    check_grants(state, caller, conn, item, &mut roles, &mut teams).await?
                };
                if let Err(e) = verdict {
                    outcome[i] = Some(Err(e));
                }
            }
            let ids: Vec<Uuid> = items.iter().map(|_| InvitationId::generate().0).collect();
            let team_ids: Vec<Vec<Uuid>> = items
                .iter()
                .map(|i| i.teams.iter().map(|t| t.0).collect())
                .collect();
            let locales: Vec<String> = items
                .iter()
                .map(|i| i.locale.clone().unwrap_or_else(|| "en".into()))
                .collect();
            let rows: Vec<NewRow> = items
                .iter()
                .enumerate()
                .filter(|(i, _)| outcome[*i].is_none())
                .map(|(i, item)| NewRow {
                    id: ids[i],
                    email: item.email.trim(),
                    roles: &item.roles,
                    teams: &team_ids[i],
                    message: item.message.as_deref().filter(|m| !m.is_empty()),
                    locale: &locales[i],
                    invited_by: caller.user_id(),
                    expires_at: now
                        + Duration::hours(i64::from(
                            item.expires_in_hours.unwrap_or(policy.expiry_hours),
                        )),
                })
                .collect();
            let created = repo::insert(conn, &rows).await?;
            for row in &created {
                record_change(conn, &caller.actor, "invitation.created", row, json!({
                    "email": row.email, "roles": row.roles,
                    "teams": row.teams.iter().map(|t| TeamId(*t).to_string()).collect::<Vec<_>>(),
                    "expires_at": row.expires_at,
                }))
                .await?;
            }
            let mut by_id: HashMap<Uuid, Row> = created.into_iter().map(|r| (r.id, r)).collect();
            let mut result = BulkResult {
                created: 0,
                refused: 0,
                items: Vec::with_capacity(items.len()),
            };
            for (i, o) in outcome.into_iter().enumerate() {
                match o {
                    Some(Err(e)) => {
                        result.refused += 1;
                        result.items.push(refused(i, e));
                    }
                    _ => {
                        let row = by_id.remove(&ids[i]).ok_or_else(|| {
                            ApiError::internal("an inserted invitation was not returned")
                        })?;
                        result.created += 1;
                        result.items.push(BulkItem {
                            index: i,
                            status: 201,
                            invitation: Some(row.view(now)),
                            kind: None,
                            detail: None,
                            errors: Vec::new(),
                        });
                    }
                }
            }
            Ok(result)
        })
        .await?;
    if result.created > 0 {
        let _ = state.nudge.send(caller.tenant.0.clone());
    }
    Ok(result)
}

/// Whether the caller could assign every role and add to every team of `item` directly.
async fn check_grants<'a>(
    state: &InvitationsState,
    caller: &Caller,
    conn: &mut diesel_async::AsyncPgConnection,
    item: &'a NewInvitation,
    roles: &mut HashMap<&'a str, Result<(), ApiError>>,
    teams: &mut HashMap<Uuid, Result<(), ApiError>>,
) -> ApiResult<Result<(), ApiError>> {
    for (j, key) in item.roles.iter().enumerate() {
        if !roles.contains_key(key.as_str()) {
            let verdict = match crate::rbac::repo::role_by_key(conn, key).await? {
                None => Err(ApiError::validation(vec![field(
                    format!("/roles/{j}"),
                    format!("no role {key:?}"),
                )])),
                Some(role) => {
                    let perms = crate::rbac::service::closure_perms(conn, &[role.id]).await?;
                    caller.require_delegable(&perms)
                }
            };
            roles.insert(key.as_str(), verdict);
        }
        if let Some(Err(e)) = roles.get(key.as_str()) {
            return Ok(Err(clone_error(e)));
        }
    }
    for (j, team) in item.teams.iter().enumerate() {
        if let std::collections::hash_map::Entry::Vacant(slot) = teams.entry(team.0) {
            let verdict = match state.teams.check_joinable(caller, conn, team.0).await {
                Err(e) if e.code == ErrorCode::NotFound => Err(ApiError::validation(vec![field(
                    format!("/teams/{j}"),
                    format!("no team {team}"),
                )])),
                other => other,
            };
            slot.insert(verdict);
        }
        if let Some(Err(e)) = teams.get(&team.0) {
            return Ok(Err(clone_error(e)));
        }
    }
    Ok(Ok(()))
}

fn clone_error(e: &ApiError) -> ApiError {
    ApiError {
        errors: e.errors.clone(),
        ..ApiError::new(e.code, e.detail.clone())
    }
}

/// Writes the audit entry and the outbox event of an invitation change.
pub(super) async fn record_change(
    conn: &mut diesel_async::AsyncPgConnection,
    actor: &Actor,
    action: &str,
    row: &Row,
    data: serde_json::Value,
) -> ApiResult<()> {
    let id = InvitationId(row.id).to_string();
    audit::record(
        conn,
        actor,
        Change {
            action,
            target_type: "invitation",
            target_id: Some(id.clone()),
            data: data.clone(),
        },
    )
    .await?;
    crate::outbox::emit(
        conn,
        action,
        "invitation",
        &id,
        json!({"id": id, "email": row.email, "invited_by": row.invited_by.map(UserId),
               "data": data}),
    )
    .await?;
    Ok(())
}

/// Closes up to `limit` invitations past their expiry, each with its audit entry and event.
pub(super) async fn expire_in(
    conn: &mut diesel_async::AsyncPgConnection,
    actor: &Actor,
    limit: i64,
) -> ApiResult<usize> {
    let expired = repo::expire_due(conn, limit).await?;
    for row in &expired {
        record_change(
            conn,
            actor,
            "invitation.expired",
            row,
            json!({"expires_at": row.expires_at}),
        )
        .await?;
    }
    Ok(expired.len())
}

pub async fn get(db: &TenantDb, id: InvitationId) -> ApiResult<Invitation> {
    let row = db
        .read(async |conn| Ok::<_, ApiError>(repo::get(conn, id.0).await?))
        .await?;
    Ok(crate::error::found(row, "invitation")?.view(Utc::now()))
}

/// A page of invitations (`limit` + 1 rows: the extra one says there is a next page).
pub async fn list(
    db: &TenantDb,
    filter: &Filter,
    after: Option<InvitationId>,
    limit: i64,
) -> ApiResult<Vec<Invitation>> {
    let rows = db
        .read(async |conn| {
            Ok::<_, ApiError>(repo::page(conn, filter, after.map(|a| a.0), limit).await?)
        })
        .await?;
    let now = Utc::now();
    Ok(rows.into_iter().map(|r| r.view(now)).collect())
}

pub async fn counts(db: &TenantDb) -> ApiResult<Counts> {
    db.read(async |conn| Ok::<_, ApiError>(repo::counts(conn).await?))
        .await
}

/// Revokes an open invitation: its token stops working at once.
pub async fn revoke(caller: &Caller, id: InvitationId) -> ApiResult<Invitation> {
    let row = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let row = crate::error::found(repo::lock(conn, id.0).await?, "invitation")?;
            if !row.status_at(Utc::now()).is_open() {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("the invitation is {}", row.status_at(Utc::now()).as_str()),
                ));
            }
            let row = repo::close(conn, id.0, Status::Revoked, None).await?;
            record_change(conn, &caller.actor, "invitation.revoked", &row, json!({})).await?;
            Ok::<_, ApiError>(row)
        })
        .await?;
    Ok(row.view(Utc::now()))
}

/// Sends an open (or expired) invitation again with a new token; the old token stops working
/// at once and the invitation is open for the policy's lifetime from now.
pub async fn resend(
    state: &InvitationsState,
    caller: &Caller,
    id: InvitationId,
) -> ApiResult<Invitation> {
    let row = caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            repo::lock_creation(conn).await?;
            let row = crate::error::found(repo::lock(conn, id.0).await?, "invitation")?;
            let status = row.status_at(Utc::now());
            if matches!(status, Status::Accepted | Status::Revoked) {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!("the invitation is {}", status.as_str()),
                ));
            }
            if status == Status::Expired
                && !repo::open_for(conn, &[row.email.to_lowercase()])
                    .await?
                    .is_empty()
            {
                return Err(ApiError::new(
                    ErrorCode::InvitationExists,
                    "another open invitation for this address exists",
                ));
            }
            let policy = policy_in(state, conn).await?;
            let expires_at = Utc::now() + Duration::hours(i64::from(policy.expiry_hours));
            let row = repo::requeue(conn, id.0, expires_at).await?;
            record_change(
                conn,
                &caller.actor,
                "invitation.resent",
                &row,
                json!({"expires_at": expires_at}),
            )
            .await?;
            Ok::<_, ApiError>(row)
        })
        .await?;
    let _ = state.nudge.send(caller.tenant.0.clone());
    Ok(row.view(Utc::now()))
}

/// The open invitation a presented token belongs to, read without a lock; any token that does
/// not work is [`token_refused`].
async fn open_by_token(db: &TenantDb, token: &str) -> ApiResult<Row> {
    let digest = crate::onetime::digest_of(TOKEN_PREFIX, token).ok_or_else(token_refused)?;
    let row = db
        .read(async |conn| Ok::<_, ApiError>(repo::by_digest(conn, &digest, false).await?))
        .await?
        .ok_or_else(token_refused)?;
    if !row.status_at(Utc::now()).is_open() {
        return Err(token_refused());
    }
    Ok(row)
}

fn realm_of(tenant: &ResolvedTenant) -> ApiResult<&str> {
    let identity = &tenant.tenant.identity;
    identity
        .realm
        .as_deref()
        .filter(|_| identity.is_complete())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::IdentityUnavailable,
                "the tenant's identity home is not provisioned",
            )
        })
}

fn idp_down(e: IdpError) -> ApiError {
    ApiError::new(
        ErrorCode::IdentityUnavailable,
        "Keycloak is unavailable; nothing was changed",
    )
    .with_source(e)
}

/// Whether an account for `email` exists where the tenant's users live.
async fn account_exists(
    state: &InvitationsState,
    tenant: &ResolvedTenant,
    email: &str,
) -> ApiResult<bool> {
    if tenant.tenant.identity.mode == IdentityMode::Local {
        let found = tenant
            .db
            .read(async |conn| Ok::<_, ApiError>(repo::user_by_email(conn, email).await?))
            .await?;
        return Ok(found.is_some());
    }
    let realm = realm_of(tenant)?;
    Ok(state
        .keycloak
        .find_user(realm, email)
        .await
        .map_err(idp_down)?
        .is_some())
}

/// What the invitee sees when the link is opened; the first opening moves the invitation to
/// `opened` (audited).
pub async fn open(
    state: &InvitationsState,
    tenant: &ResolvedTenant,
    actor: &Actor,
    token: &str,
) -> ApiResult<Preview> {
    let row = open_by_token(&tenant.db, token).await?;
    let inviter = match row.invited_by {
        Some(by) => tenant
            .db
            .transaction(async |tx| {
                Ok::<_, ApiError>(crate::users::repo::get(tx.conn(), UserId(by)).await?)
            })
            .await?
            .map(|u| display_of(&u)),
        None => None,
    };
    if row.opened_at.is_none() {
        tenant
            .db
            .transaction(async |tx| {
                if repo::mark_opened(tx.conn(), row.id).await? {
                    record_change(tx.conn(), actor, "invitation.opened", &row, json!({})).await?;
                }
                Ok::<_, ApiError>(())
            })
            .await?;
    }
    Ok(Preview {
        tenant: tenant.tenant.slug.clone(),
        tenant_name: tenant.tenant.display_name.clone(),
        password_required: !account_exists(state, tenant, &row.email).await?,
        email: row.email,
        inviter,
        roles: row.roles,
        message: row.message,
        expires_at: row.expires_at,
    })
}

fn display_of(u: &crate::users::User) -> String {
    u.display_name
        .clone()
        .or_else(|| u.username.clone())
        .or_else(|| u.email.clone())
        .unwrap_or_else(|| u.id.to_string())
}

/// Checks the new-account fields of an acceptance.
fn check_new_account(input: &AcceptRequest, needs_password: bool) -> ApiResult<()> {
    let mut errors = Vec::new();
    match &input.password {
        None if needs_password => errors.push(field(
            "/password",
            "required: no account exists for this address yet",
        )),
        Some(p) => {
            if let Err(message) = crate::auth::local::check_password_rule(p) {
                errors.push(field("/password", message));
            }
        }
        None => {}
    }
    if let Some(name) = &input.username {
        let ok = (3..=64).contains(&name.len())
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if !ok {
            errors.push(field(
                "/username",
                "must be 3-64 characters of a-z, 0-9, . _ -",
            ));
        }
    }
    if input
        .display_name
        .as_ref()
        .is_some_and(|n| n.trim().is_empty() || n.chars().count() > 200)
    {
        errors.push(field("/display_name", "must be 1-200 characters"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(errors))
    }
}

/// Keycloak's side of an acceptance: the account's subject, and what to undo if the
/// membership cannot be written.
struct IdentitySide {
    subject: String,
    linked: bool,
    created: bool,
    added_to_org: bool,
}

async fn keycloak_side(
    state: &InvitationsState,
    tenant: &ResolvedTenant,
    email: &str,
    input: &AcceptRequest,
) -> ApiResult<IdentitySide> {
    let realm = realm_of(tenant)?;
    let kc = &state.keycloak;
    let mut side = match kc.find_user(realm, email).await.map_err(idp_down)? {
        Some(subject) => IdentitySide {
            subject,
            linked: true,
            created: false,
            added_to_org: false,
        },
        None => {
            check_new_account(input, true)?;
            let display = input.display_name.clone().unwrap_or_else(|| email.into());
            let (first, last) = match display.trim().split_once(' ') {
                Some((f, l)) => (f.to_string(), l.trim().to_string()),
                None => (display.trim().to_string(), display.trim().to_string()),
            };
            let representation = json!({
                "username": input.username.clone().unwrap_or_else(|| email.to_lowercase()),
                "email": email, "emailVerified": true, "enabled": true,
                "firstName": first, "lastName": last,
                "credentials": [{"type": "password", "value": input.password, "temporary": false}],
            });
            match kc
                .create_user(realm, &representation)
                .await
                .map_err(idp_down)?
            {
                Some(subject) => IdentitySide {
                    subject,
                    linked: false,
                    created: true,
                    added_to_org: false,
                },
                // Made meanwhile (a racing accept, or the username is taken): link it if the
                // address has it; otherwise the username is someone else's.
                None => match kc.find_user(realm, email).await.map_err(idp_down)? {
                    Some(subject) => IdentitySide {
                        subject,
                        linked: true,
                        created: false,
                        added_to_org: false,
                    },
                    None => {
                        return Err(ApiError::new(
                            ErrorCode::Conflict,
                            "the username is taken; choose another",
                        ));
                    }
                },
            }
        }
    };
    let identity = &tenant.tenant.identity;
    if let (IdentityMode::Organization, Some(org)) = (identity.mode, identity.org_id.as_deref())
        && !kc
            .is_member(realm, org, &side.subject)
            .await
            .map_err(idp_down)?
    {
        kc.add_organization_member(realm, org, &side.subject)
            .await
            .map_err(idp_down)?;
        side.added_to_org = true;
    }
    Ok(side)
}

/// Undoes Keycloak changes of an acceptance whose membership was not written.
async fn undo_keycloak_side(
    state: &InvitationsState,
    tenant: &ResolvedTenant,
    side: &IdentitySide,
) {
    let Ok(realm) = realm_of(tenant) else { return };
    let kc = &state.keycloak;
    let undone = if side.created {
        kc.delete_user(realm, &side.subject).await
    } else if let (true, Some(org)) = (side.added_to_org, tenant.tenant.identity.org_id.as_deref())
    {
        kc.remove_organization_member(realm, org, &side.subject)
            .await
    } else {
        Ok(())
    };
    if let Err(error) = undone {
        tracing::error!(%error, subject = side.subject, "undoing an acceptance in Keycloak failed; reconciliation will pick it up");
    }
}

/// Accepts an invitation: the account is made or linked where the tenant's users live, then
/// one transaction re-checks the invitation under a row lock, writes the user, their roles and
/// teams, closes the invitation and audits it. Any token that does not work, at either check,
/// is [`token_refused`].
pub async fn accept(
    state: &InvitationsState,
    tenant: &ResolvedTenant,
    actor: Actor,
    input: AcceptRequest,
) -> ApiResult<Accepted> {
    let first = open_by_token(&tenant.db, &input.token).await?;
    let digest = crate::onetime::digest_of(TOKEN_PREFIX, &input.token).ok_or_else(token_refused)?;
    let local = tenant.tenant.identity.mode == IdentityMode::Local;
    check_new_account(&input, false)?;
    let side = if local {
        None
    } else {
        Some(keycloak_side(state, tenant, &first.email, &input).await?)
    };
    let written = tenant
        .db
        .transaction(async |tx| -> ApiResult<Accepted> {
            let conn = tx.conn();
            let row = repo::by_digest(conn, &digest, true)
                .await?
                .filter(|r| r.status_at(Utc::now()).is_open())
                .ok_or_else(token_refused)?;
            let (user_id, linked) = match &side {
                None => local_user(conn, &row, &input).await?,
                Some(side) => {
                    let seen = crate::users::repo::SeenUser {
                        subject: &side.subject,
                        username: input.username.as_deref(),
                        email: Some(&row.email),
                        display_name: input.display_name.as_deref(),
                        as_of: Utc::now().timestamp(),
                    };
                    let user = crate::users::repo::upsert_seen(conn, &seen)
                        .await?
                        .ok_or_else(|| {
                            ApiError::new(
                                ErrorCode::UserInactive,
                                "the account for this address was erased a moment ago",
                            )
                        })?;
                    if user.status != "active" {
                        return Err(ApiError::new(
                            ErrorCode::UserInactive,
                            format!("the account for this address is {}", user.status),
                        ));
                    }
                    (user.id.0, side.linked)
                }
            };
            let granted_by = row.invited_by.unwrap_or(user_id);
            let mut roles = Vec::new();
            for key in &row.roles {
                // A role deleted since the invitation was made is skipped (and audited).
                if let Some(role) = crate::rbac::repo::role_by_key(conn, key).await? {
                    crate::rbac::repo::assign(conn, role.id, &[user_id], granted_by, None)
                        .await?;
                    roles.push(key.clone());
                }
            }
            let teams = state.teams.join(conn, user_id, &row.teams).await?;
            let closed = repo::close(conn, row.id, Status::Accepted, Some(user_id)).await?;
            let actor = Actor {
                kind: "user",
                id: Some(UserId(user_id).to_string()),
                ..actor
            };
            record_change(
                conn,
                &actor,
                "invitation.accepted",
                &closed,
                json!({"user": UserId(user_id).to_string(), "linked": linked,
                       "roles": roles, "skipped_roles": row.roles.iter().filter(|r| !roles.contains(r)).collect::<Vec<_>>(),
                       "teams": teams.iter().map(|t| TeamId(*t).to_string()).collect::<Vec<_>>()}),
            )
            .await?;
            Ok(Accepted {
                invitation_id: InvitationId(row.id),
                user_id: UserId(user_id),
                linked,
                roles,
                teams: teams.into_iter().map(TeamId).collect(),
            })
        })
        .await;
    match written {
        Ok(accepted) => {
            state.perms.invalidate(tenant.tenant.id).await;
            Ok(accepted)
        }
        Err(e) => {
            if let Some(side) = &side {
                undo_keycloak_side(state, tenant, side).await;
            }
            Err(e)
        }
    }
}

/// A local-mode tenant's user for the invited address: the existing one (linked), or a new one
/// with the chosen password.
async fn local_user(
    conn: &mut diesel_async::AsyncPgConnection,
    row: &Row,
    input: &AcceptRequest,
) -> ApiResult<(Uuid, bool)> {
    if let Some((id, status)) = repo::user_by_email(conn, &row.email).await? {
        if status != "active" {
            return Err(ApiError::new(
                ErrorCode::UserInactive,
                format!("the account for this address is {status}"),
            ));
        }
        return Ok((id, true));
    }
    check_new_account(input, true)?;
    let password = input.password.clone().unwrap_or_default();
    // Hashed only for a token that works, so bad tokens cost no argon2 work.
    let hash = tokio::task::spawn_blocking(move || crate::auth::local::hash_password(&password))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let username = input
        .username
        .clone()
        .unwrap_or_else(|| row.email.to_lowercase());
    let user = crate::users::repo::create_local(
        conn,
        &username,
        &row.email,
        input.display_name.as_deref(),
        &hash,
    )
    .await?;
    Ok((user.id.0, false))
}

// ---- templates and policy -------------------------------------------------------------

/// The template variables.
pub fn variables() -> Vec<Variable> {
    template::VARIABLES
        .iter()
        .map(|(n, d)| Variable {
            name: (*n).into(),
            description: (*d).into(),
        })
        .collect()
}

fn builtin(locale: &str) -> Template {
    let parts = Parts::builtin();
    Template {
        locale: locale.into(),
        subject: parts.subject.into(),
        text_body: parts.text.into(),
        html_body: parts.html.map(Into::into),
        updated_at: None,
        builtin: true,
    }
}

pub async fn templates(db: &TenantDb) -> ApiResult<Vec<Template>> {
    let mut all = db
        .read(async |conn| Ok::<_, ApiError>(repo::templates(conn).await?))
        .await?;
    if !all.iter().any(|t| t.locale == "en") {
        all.insert(0, builtin("en"));
    }
    Ok(all)
}

fn check_locale(locale: &str) -> ApiResult<()> {
    if locale_ok(locale) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "the locale must be a language tag such as en, de or pt-BR",
        ))
    }
}

/// The template mails in `locale` use: the tenant's for it, else its `en`, else the built-in.
pub async fn template_for(db: &TenantDb, locale: &str) -> ApiResult<Template> {
    check_locale(locale)?;
    let locales = vec![locale.to_string(), "en".to_string()];
    let found = db
        .read(async |conn| Ok::<_, ApiError>(repo::templates_for(conn, &locales).await?))
        .await?;
    Ok(pick(found, locale))
}

/// Among templates for `locale` and `en`, the one to use (or the built-in).
pub(super) fn pick(found: Vec<Template>, locale: &str) -> Template {
    let mut exact = None;
    let mut english = None;
    for t in found {
        if t.locale == locale {
            exact = Some(t);
        } else if t.locale == "en" {
            english = Some(t);
        }
    }
    exact.or(english).unwrap_or_else(|| builtin(locale))
}

/// Saves the tenant's template for `locale` after checking it (one 422 listing every problem).
pub async fn put_template(
    caller: &Caller,
    locale: &str,
    input: &TemplateInput,
) -> ApiResult<Template> {
    check_locale(locale)?;
    let mut errors = template::check(&Parts {
        subject: &input.subject,
        text: &input.text_body,
        html: input.html_body.as_deref(),
    });
    for (pointer, value, max) in [
        ("/subject", Some(&input.subject), 500),
        ("/text_body", Some(&input.text_body), 20_000),
        ("/html_body", input.html_body.as_ref(), 50_000),
    ] {
        if value.is_some_and(|v| v.len() > max) {
            errors.push(field(pointer, format!("must be at most {max} bytes")));
        }
    }
    if input.subject.trim().is_empty() {
        errors.push(field("/subject", "must not be empty"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let saved = repo::put_template(
                conn,
                locale,
                &input.subject,
                &input.text_body,
                input.html_body.as_deref(),
                caller.user_id(),
            )
            .await?;
            audit::record(
                conn,
                &caller.actor,
                Change {
                    action: "invitation.template_saved",
                    target_type: "invitation_template",
                    target_id: Some(locale.into()),
                    data: json!({"subject": input.subject}),
                },
            )
            .await?;
            Ok::<_, ApiError>(saved)
        })
        .await
}

pub async fn delete_template(caller: &Caller, locale: &str) -> ApiResult<()> {
    check_locale(locale)?;
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            if !repo::delete_template(conn, locale).await? {
                return Err(ApiError::not_found("template"));
            }
            audit::record(
                conn,
                &caller.actor,
                Change {
                    action: "invitation.template_deleted",
                    target_type: "invitation_template",
                    target_id: Some(locale.into()),
                    data: json!({}),
                },
            )
            .await?;
            Ok(())
        })
        .await
}

pub async fn policy(state: &InvitationsState, db: &TenantDb) -> ApiResult<Policy> {
    db.transaction(async |tx| policy_in(state, tx.conn()).await)
        .await
}

/// Replaces the tenant's policy (validated: lifetime 1-2160 hours, at most 100 domains, each a
/// lowercase domain or `*.` and one).
pub async fn put_policy(
    state: &InvitationsState,
    caller: &Caller,
    input: &Policy,
) -> ApiResult<Policy> {
    let mut errors = Vec::new();
    if !(1..=2160).contains(&input.expiry_hours) {
        errors.push(field("/expiry_hours", "must be between 1 and 2160"));
    }
    if input.allowed_domains.len() > 100 {
        errors.push(field("/allowed_domains", "at most 100 domains"));
    }
    for (i, d) in input.allowed_domains.iter().enumerate() {
        let bare = d.strip_prefix("*.").unwrap_or(d);
        let ok = bare.len() <= 253
            && bare.contains('.')
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if !ok {
            errors.push(field(
                format!("/allowed_domains/{i}"),
                "must be a lowercase domain such as example.com or *.example.com",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    // Stored as settings (`invitations.*`): the same versions, audit and broadcast.
    let eff = crate::settings::service::patch_for(
        &state.settings,
        caller,
        &json!({"invitations": {
            "expiry_hours": input.expiry_hours,
            "allowed_domains": input.allowed_domains,
        }}),
        "invitation policy",
    )
    .await?;
    Ok(Policy {
        expiry_hours: eff.invitations.expiry_hours,
        allowed_domains: eff.invitations.allowed_domains.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for good in ["a@b.co", "first.last+tag@sub.example.com"] {
            assert!(email_ok(good), "{good}");
        }
        for bad in [
            "", "no-at", "@b.co", "a@b", "a@@b.co", "a b@c.co", "a@b.co\n", "a@.b.co", "a@b..co",
            "a@b.co.",
        ] {
            assert!(!email_ok(bad), "{bad:?}");
        }
        assert!(!email_ok(&format!("{}@b.co", "x".repeat(65))));
    }

    #[test]
    fn domain_policy() {
        let open = Policy {
            expiry_hours: 1,
            allowed_domains: vec![],
        };
        assert!(domain_allowed(&open, "x@anything.test"));
        let p = Policy {
            expiry_hours: 1,
            allowed_domains: vec!["acme.test".into(), "*.corp.test".into()],
        };
        assert!(domain_allowed(&p, "x@acme.test"));
        assert!(domain_allowed(&p, "x@ACME.test"));
        assert!(!domain_allowed(&p, "x@sub.acme.test"));
        assert!(domain_allowed(&p, "x@corp.test"));
        assert!(domain_allowed(&p, "x@eu.corp.test"));
        assert!(!domain_allowed(&p, "x@evilcorp.test"));
        assert!(!domain_allowed(&p, "x@acme.test.evil.test"));
    }

    #[test]
    fn locales() {
        for good in ["en", "de", "pt-BR", "fil"] {
            assert!(locale_ok(good), "{good}");
        }
        for bad in ["", "EN", "english", "pt-br", "pt_BR", "e"] {
            assert!(!locale_ok(bad), "{bad}");
        }
    }

    #[test]
    fn the_template_falls_back_to_english_then_the_builtin() {
        let t = |l: &str| Template {
            builtin: false,
            ..builtin(l)
        };
        assert_eq!(pick(vec![t("en"), t("de")], "de").locale, "de");
        assert_eq!(pick(vec![t("en")], "de").locale, "en");
        assert!(pick(vec![], "de").builtin);
    }
}
