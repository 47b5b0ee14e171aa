//! NeoTenantApi host: a multi-tenant API kernel (tenancy, authentication, RBAC with teams,
//! the audit log) on salvo, diesel-async and Redis.
//!
//! Map: `config` (settings) · `app` (wiring, server lifecycle) · `http` (router, conventions)
//! · `error` (problem responses) · `db` (pools, tenant transactions, migrations) · `tenancy`
//! (registry, provisioning, resolution, admin API) · `auth` (tokens, keys, local mode) ·
//! `users` · `invitations` · `privacy` (data-subject export, erasure) · `directory` (user import/export) · `sessions` · `apikeys` · `ratelimit` · `settings` (typed, versioned tenant settings and their cache) · `crypto` (secrets sealed at rest, constant-time compare) · `picture` (untrusted images) · `versioned_cache` (per-tenant caches dropped by broadcast) · `rbac` (permissions, roles, `Can<P>`) ·
//! `teams` · `audit` (chain, sealing, search, forwarding) · `pubsub` (broadcast listeners) ·
//! `outbox` (events in the change's transaction) · `resources` (types, records, versions,
//! shares) · `plugins` (WebAssembly components: uploads, installs, hooks, delivery) · `flags` (feature flags, OFREP) · `notes` (first tenant-scoped feature) · `webhooks` (Standard Webhooks delivery) · `events` (the CloudEvents feed) · `metrics` · `telemetry` · `ids` · `schema`.
//! See docs/ARCHITECTURE.md.

pub mod account;
pub mod apikeys;
pub mod apiversion;
pub mod app;
pub mod audit;
pub mod auth;
pub mod changes;
pub mod config;
pub mod crypto;
pub mod csv;
pub mod cursor;
pub mod db;
pub mod directory;
pub mod error;
pub mod events;
pub mod flags;
pub mod http;
pub mod idempotency;
pub mod ids;
pub mod invitations;
pub mod json_schema;
pub mod keys;
pub mod mail;
pub mod metrics;
pub mod netguard;
pub mod notes;
pub mod notifications;
pub mod oauthclients;
pub mod onetime;
pub mod outbox;
pub mod patch;
pub mod picture;
pub mod plugins;
pub mod privacy;
pub mod pubsub;
pub mod ratelimit;
pub mod rbac;
pub mod redis_link;
pub mod region;
pub mod resources;
pub mod schema;
pub mod sessions;
pub mod settings;
pub mod teams;
pub mod telemetry;
pub mod tenancy;
pub mod users;
pub mod versioned_cache;
pub mod webhooks;
