//! Feature flags for NeoTenantApi: the flag document model, its validation, and a pure,
//! allocation-light evaluation engine.
//!
//! Owns what a flag *means*. It must never do I/O, touch a database, speak HTTP, spawn
//! threads or be async: storage, APIs (REST, OFREP) and caching live in other crates and hand
//! documents in and evaluations out.
//!
//! ```
//! use neotenant_flags::{Context, Flag, Reason, Snapshot};
//!
//! let flag: Flag = serde_json::from_value(serde_json::json!({
//!     "key": "new-checkout",
//!     "kind": "boolean",
//!     "variants": {"on": true, "off": false},
//!     "environments": {"production": {
//!         "enabled": true,
//!         "off_variant": "off",
//!         "rules": [{"conditions": [{"attribute": "plan", "op": "eq", "values": ["pro"]}],
//!                    "serve": {"variant": "on"}}],
//!         "default": {"rollout": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]}
//!     }}
//! }))?;
//! let snapshot = Snapshot::new([flag], []);
//! let pro = Context::new("user-1").with("plan", "pro");
//! let got = snapshot.evaluate("production", "new-checkout", &pro)?;
//! assert_eq!((got.value, got.reason), (serde_json::json!(true), Reason::TargetingMatch));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Model
//! A [`Flag`] has a [`Kind`], 1..=50 named variants, optional [`Prerequisite`]s and one
//! [`Environment`] per environment name. An environment has a kill switch (`enabled`), an
//! `off_variant`, ordered [`Rule`]s (first match wins) and a `default` [`Serve`]. A serve is a
//! fixed variant or a sticky percentage rollout. [`Segment`]s are reusable condition sets.
//!
//! # Evaluation order and reasons
//! 1. environment disabled → `off_variant`, [`Reason::Disabled`];
//! 2. a prerequisite does not hold → `off_variant`, [`Reason::PrerequisiteFailed`];
//! 3. first rule whose conditions all match → its serve: [`Reason::TargetingMatch`] for a
//!    fixed variant, [`Reason::Split`] for a rollout;
//! 4. otherwise the default serve: [`Reason::Split`] for a rollout, else [`Reason::Static`]
//!    when the flag has neither rules (in that environment) nor prerequisites, else
//!    [`Reason::Default`].
//!
//! Prerequisites are other flags evaluated in the same environment with the same context;
//! one holds when that flag's served variant is among those listed. A prerequisite that
//! cannot be evaluated (unknown flag, missing targeting key, ...) does not hold. Chains are
//! followed at most [`MAX_PREREQUISITE_DEPTH`] levels deep; a cycle is
//! [`EvalError::PrerequisiteCycle`].
//!
//! # Conditions
//! The attribute `targetingKey` is [`Context::targeting_key`]; any other name is looked up
//! in [`Context::attributes`] (no dotted paths). **A missing or `null` attribute makes every
//! attribute op false** — including `neq` and `not_in`. Segment ops ignore the attribute.
//!
//! | op | true when |
//! | --- | --- |
//! | `eq` / `neq` | attribute equals / differs from `values[0]` (JSON equality; numbers by value) |
//! | `in` / `not_in` | scalar attribute is / is not among `values`; array attribute has some / no element among `values` |
//! | `contains` | string attribute contains substring `values[0]`; array attribute has element `values[0]` |
//! | `starts_with` / `ends_with` | string attribute starts / ends with `values[0]` |
//! | `gt` `gte` `lt` `lte` | numeric attribute compared with numeric `values[0]` (no string coercion) |
//! | `semver_eq` `semver_gt` `semver_lt` | both parse as `MAJOR.MINOR.PATCH[-pre][+build]` (optional leading `v`), compared per SemVer 2.0 |
//! | `in_segment` / `not_in_segment` | the context matches some / none of the segments named in `values` (an unknown segment matches nobody) |
//! | `exists` | the attribute is present and not `null` |
//!
//! An attribute of the wrong type (e.g. `gt` on a string) makes the condition false.
//!
//! # Rollouts
//! Sticky and compatible with flagd's `fractional` operator: see [`bucket`]. The bucket value
//! is the targeting key, or the attribute named by `bucket_by` (a string, or a number in its
//! JSON text form); the hashed text is always the flag key immediately followed by the
//! bucket value. A missing or empty targeting key is [`EvalError::TargetingKeyMissing`]; a
//! missing `bucket_by` attribute is [`EvalError::General`].

pub mod bucket;
mod eval;
mod model;
mod semver;
mod validate;

pub use eval::{
    Context, EvalError, Evaluation, MAX_PREREQUISITE_DEPTH, Reason, Snapshot, TARGETING_KEY,
};
pub use model::{
    Condition, Environment, Flag, Kind, Op, Prerequisite, Rule, Segment, Serve, Weighted,
};
pub use validate::{
    MAX_CONDITIONS, MAX_RULES, MAX_VARIANTS, Problem, ValidationContext, prerequisite_cycle,
    validate, validate_segment,
};
