//! Invitations: how a tenant gets people in. An admin invites addresses (one or up to 1,000 at
//! once) into roles and teams; a mail carries a single-use link; the invitee opens it and
//! accepts, becoming (or linking) a user of the tenant with the pre-assigned roles and teams.
//!
//! Shape: `handlers` → `service` (rules: delegation, domain policy, abuse limits, the accept
//! transaction, templates) → `repo` (SQL); `delivery` is the mail queue's worker (claims due
//! mails, mints each mail's token, sends with retries and backoff, records the outcome, and
//! expires invitations); `template` renders mails (pure). Team membership is another feature's:
//! this module reaches it only through the [`Teams`] port, which `app` wires.
//!
//! **Invariants:** a token holds 256 random bits, exists only in the mail, and is stored as its
//! SHA-256, set when the mail is sent and cleared when the invitation closes, so a used,
//! revoked or expired token matches nothing; every token that does not work gets the same
//! `invitation-token-invalid` answer after the same single indexed lookup. Nobody invites into
//! a role or team they could not assign directly. Accepting locks the invitation's row: the
//! user, their roles and teams and the `accepted` status are written in one transaction, so
//! two accepts yield one membership. Every change writes an audit entry and an outbox event in
//! its transaction. Never logs a token.

pub mod delivery;
pub mod handlers;
pub mod repo;
pub mod service;
pub mod template;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit::Recent;
use crate::auth::keycloak::KeycloakAdmin;
use crate::config::Config;
use crate::error::ApiResult;
use crate::ids::{InvitationId, TeamId, UserId};
use crate::rbac::Caller;
use crate::rbac::cache::PermCache;
use crate::tenancy::TenancyState;
use crate::tenancy::cache::ResolvedTenant;

/// Every invitation token starts with this.
pub const TOKEN_PREFIX: &str = "nti_";
/// Addresses in one bulk call.
pub const MAX_BULK: usize = 1_000;

/// Team membership, as invitations need it (implemented by the teams feature).
#[async_trait::async_trait]
pub trait Teams: Send + Sync {
    /// Refuses unless `team` exists (404) and the caller may add members to it (403).
    async fn check_joinable(
        &self,
        caller: &Caller,
        conn: &mut AsyncPgConnection,
        team: Uuid,
    ) -> ApiResult<()>;
    /// Makes `user` a member of those of `teams` that still exist; returns them.
    async fn join(
        &self,
        conn: &mut AsyncPgConnection,
        user: Uuid,
        teams: &[Uuid],
    ) -> ApiResult<Vec<Uuid>>;
}

/// What the invitation endpoints and the delivery worker use, built once by `app`.
pub struct InvitationsState {
    pub config: Arc<Config>,
    pub tenancy: Arc<TenancyState>,
    pub keycloak: Arc<KeycloakAdmin>,
    pub mailer: Arc<dyn crate::mail::Mailer>,
    pub audit_recent: Arc<Recent>,
    pub perms: Arc<PermCache>,
    pub teams: Arc<dyn Teams>,
    /// The tenant's settings: invitation lifetime and allowed domains live there.
    pub settings: Arc<crate::settings::SettingsState>,
    /// Wakes the delivery worker for a tenant with mail to send now.
    pub nudge: tokio::sync::mpsc::UnboundedSender<Arc<ResolvedTenant>>,
}

/// Where an invitation is in its life; an open invitation past its expiry shows as `expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[salvo(schema(name = "neotenant.invitations.Status"))]
pub enum Status {
    Pending,
    Sent,
    Opened,
    Accepted,
    Expired,
    Revoked,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Pending,
        Status::Sent,
        Status::Opened,
        Status::Accepted,
        Status::Expired,
        Status::Revoked,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Sent => "sent",
            Status::Opened => "opened",
            Status::Accepted => "accepted",
            Status::Expired => "expired",
            Status::Revoked => "revoked",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|v| v.as_str() == s)
    }
    /// Still waiting for the invitee.
    pub fn is_open(self) -> bool {
        matches!(self, Status::Pending | Status::Sent | Status::Opened)
    }
}

/// How the invitation's mail went.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.invitations.Delivery"))]
pub struct Delivery {
    /// `queued`, `sent` or `failed`.
    pub status: String,
    pub attempts: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An invitation (never with its token).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.invitations.Invitation"))]
pub struct Invitation {
    pub id: InvitationId,
    pub email: String,
    pub roles: Vec<String>,
    pub teams: Vec<TeamId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub locale: String,
    // An open invitation past its expiry shows as `expired` (said on the enum: a description
    // here would wrap its reference in `allOf`).
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invited_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_by: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    pub delivery: Delivery,
}

/// One address to invite.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.invitations.NewInvitation"))]
pub struct NewInvitation {
    pub email: String,
    /// Role keys the invitee will hold (each one the inviter could assign).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Teams the invitee will join as a member (each one the inviter may add members to).
    #[serde(default)]
    pub teams: Vec<TeamId>,
    /// A personal note shown in the mail (at most 2,000 characters).
    #[serde(default)]
    pub message: Option<String>,
    /// The mail's language (`en`, `de`, `pt-BR`…): the tenant's template for it, else `en`'s,
    /// else the built-in one.
    #[serde(default)]
    pub locale: Option<String>,
    /// Hours until it expires (1-2160); absent means the tenant's policy.
    #[serde(default)]
    pub expires_in_hours: Option<u32>,
}

/// Many addresses at once (1-1,000), each answered on its own.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.invitations.BulkInvite"))]
pub struct BulkInvite {
    pub items: Vec<NewInvitation>,
}

/// One item's outcome in a bulk call.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.invitations.BulkItem"))]
pub struct BulkItem {
    pub index: usize,
    /// The status a single call would have answered (201, 409, 422, 403…).
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation: Option<Invitation>,
    /// The problem type, when refused.
    #[serde(skip_serializing_if = "Option::is_none", rename = "type")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<crate::error::FieldError>,
}

/// A bulk call's outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.invitations.BulkResult"))]
pub struct BulkResult {
    pub created: usize,
    pub refused: usize,
    pub items: Vec<BulkItem>,
}

/// Which invitations to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<Status>,
    /// Compared case-insensitively, exactly.
    pub email: Option<String>,
    pub invited_by: Option<UserId>,
}

/// How many invitations are in each status.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.invitations.Counts"))]
pub struct Counts {
    pub pending: i64,
    pub sent: i64,
    pub opened: i64,
    pub accepted: i64,
    pub expired: i64,
    pub revoked: i64,
    pub total: i64,
}

/// A token from an invitation link.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.invitations.TokenRequest"))]
pub struct TokenRequest {
    pub token: String,
}

/// What the invitee sees before accepting.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.invitations.Preview"))]
pub struct Preview {
    pub tenant: String,
    pub tenant_name: String,
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inviter: Option<String>,
    pub roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// Whether accepting needs a password (no account exists yet for the address).
    pub password_required: bool,
}

/// Accepting an invitation.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.invitations.AcceptRequest"))]
pub struct AcceptRequest {
    pub token: String,
    /// Required when no account exists for the address yet (see `password_required`).
    #[serde(default)]
    pub password: Option<String>,
    /// For a new account: 3-64 characters of a-z, 0-9, `.`, `_`, `-` (default: the address).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// The membership an accepted invitation made.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.invitations.Accepted"))]
pub struct Accepted {
    pub invitation_id: InvitationId,
    pub user_id: UserId,
    /// Whether an existing account was linked rather than a new one made.
    pub linked: bool,
    pub roles: Vec<String>,
    pub teams: Vec<TeamId>,
}

/// A mail template for one locale.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.invitations.Template"))]
pub struct Template {
    pub locale: String,
    pub subject: String,
    pub text_body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Whether this is the platform's built-in template (no tenant template for the locale).
    pub builtin: bool,
}

/// A template to save.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.invitations.TemplateInput"))]
pub struct TemplateInput {
    pub subject: String,
    pub text_body: String,
    #[serde(default)]
    pub html_body: Option<String>,
}

/// A template variable.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[salvo(schema(name = "neotenant.invitations.Variable"))]
pub struct Variable {
    pub name: String,
    pub description: String,
}

/// The tenant's invitation policy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.invitations.Policy"))]
pub struct Policy {
    /// Hours an invitation stays open by default (1-2160).
    pub expiry_hours: u32,
    /// Only addresses at these domains may be invited (empty: any). Lowercase; a leading
    /// `*.` allows subdomains too.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
}
