//! Tenancy: the platform registry of tenants and their databases, provisioning, resolution
//! of the tenant of a request, and the platform-admin API.
//!
//! Shape: `handlers` (HTTP) → `service` (rules, provisioning) → `repo` (registry SQL);
//! `resolve` and `cache` put the current tenant on each tenant-scoped request.

pub mod cache;
pub mod handlers;
pub mod idp;
pub mod model;
pub mod repo;
pub mod resolve;
pub mod service;
