//! One integration-test binary: every test boots the real server against the real local
//! PostgreSQL and Redis (`make up`) and works on tenants of its own.

mod apikeys;
mod audit;
mod auth;
mod changes;
mod clients;
mod conventions;
mod directory;
mod events;
mod flags;
mod invitations;
mod isolation;
mod lifecycle;
mod local;
mod migrations;
mod notifications;
mod oauthclients;
mod ops;
mod password_reset;
mod pinning;
mod plugins;
mod privacy;
mod profile;
mod ratelimit;
mod rbac;
mod resources;
mod sdks;
mod search;
mod security;
mod sessions;
mod settings;
mod teams;
mod useradmin;
mod users;
mod webhooks;
