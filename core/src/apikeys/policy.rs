//! A machine credential's own policy — shared by API keys and OAuth clients: its pinned API
//! version, its own rate (at most the tenant's per-user rate) and an optional quota of credits
//! with a periodic refill. Owns the checks of a policy, the merge of a partial change, the
//! stored form (columns read back into `KeyRate` / `KeyQuota`) and the credits a client has
//! left. Never runs SQL (each credential's repo writes the columns), never touches HTTP.

use super::{KeyPolicyPatch, KeyQuota, KeyRate, Refill};
use crate::apiversion::ApiVersion;
use crate::auth::token::{ClientKind, ClientPolicy};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::ratelimit::{Quota, RateLimiter};

/// The most a credential's own rate may be: the tenant's per-user rate and burst.
#[derive(Debug, Clone, Copy)]
pub struct RateCeiling {
    pub per_sec: f64,
    pub burst: u32,
}

const MAX_CREDITS: i64 = 1_000_000_000_000;

/// A policy as written: version, rate, quota.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub api_version: ApiVersion,
    pub rate: Option<KeyRate>,
    pub quota: Option<KeyQuota>,
}

/// A policy's columns as stored (the same on every credential's table).
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub api_version: Option<String>,
    pub rate_per_sec: Option<f64>,
    pub rate_burst: Option<i32>,
    pub quota_credits: Option<i64>,
    pub quota_refill_amount: Option<i64>,
    pub quota_refill_secs: Option<i32>,
    /// The last snapshot of the credits left, and its refill period.
    pub quota_left: Option<i64>,
    pub quota_period: Option<i64>,
}

impl Stored {
    pub fn rate(&self) -> Option<KeyRate> {
        Some(KeyRate {
            per_sec: self.rate_per_sec?,
            burst: u32::try_from(self.rate_burst?).ok()?,
        })
    }

    pub fn quota(&self) -> Option<KeyQuota> {
        Some(KeyQuota {
            credits: self.quota_credits?,
            refill: self
                .quota_refill_amount
                .zip(self.quota_refill_secs)
                .map(|(amount, secs)| Refill {
                    amount,
                    interval_secs: i64::from(secs),
                }),
        })
    }

    /// The pinned version; the baseline for a credential made before versions were pinned.
    pub fn api_version(&self) -> ApiVersion {
        self.api_version
            .as_deref()
            .and_then(ApiVersion::parse)
            .unwrap_or(ApiVersion::BASELINE)
    }

    pub fn policy(&self) -> Policy {
        Policy {
            api_version: self.api_version(),
            rate: self.rate(),
            quota: self.quota(),
        }
    }

    /// What the request path enforces for the client named `id` (`apikey:…`, `oauth:…`),
    /// whose record is `record` of `kind`.
    pub fn client_policy(&self, id: String, kind: ClientKind, record: uuid::Uuid) -> ClientPolicy {
        ClientPolicy {
            id,
            kind,
            record,
            rate: self.rate().map(|r| (r.per_sec, r.burst)),
            quota: self.quota().map(|q| Quota {
                credits: q.credits,
                refill: q.refill.map(|r| (r.amount, r.interval_secs)),
                snapshot: self.quota_left.zip(self.quota_period),
            }),
            api_version: Some(self.api_version()),
        }
    }
}

impl Policy {
    /// The columns to write (the snapshot columns are not among them: a new quota clears them
    /// apart, see `PolicyChange::quota_set`).
    pub fn stored(&self) -> Stored {
        let refill = self.quota.and_then(|q| q.refill);
        Stored {
            api_version: Some(self.api_version.to_string()),
            rate_per_sec: self.rate.map(|r| r.per_sec),
            rate_burst: self
                .rate
                .map(|r| i32::try_from(r.burst).unwrap_or(i32::MAX)),
            quota_credits: self.quota.map(|q| q.credits),
            quota_refill_amount: refill.map(|r| r.amount),
            quota_refill_secs: refill.map(|r| i32::try_from(r.interval_secs).unwrap_or(i32::MAX)),
            quota_left: None,
            quota_period: None,
        }
    }

    /// Audit data.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"api_version": self.api_version.as_str(),
            "rate_limit": self.rate, "quota": self.quota})
    }
}

/// Checks a new credential's policy; the policy (pinned to the newest version when none is
/// named), problems going to `errors`.
pub fn check_new(
    api_version: Option<&str>,
    rate: Option<KeyRate>,
    quota: Option<KeyQuota>,
    ceiling: RateCeiling,
    errors: &mut Vec<FieldError>,
) -> Policy {
    let mut error = |pointer: &str, message: String| {
        errors.push(FieldError {
            pointer: pointer.into(),
            message,
        })
    };
    let api_version = match api_version {
        None => ApiVersion::LATEST,
        Some(v) => ApiVersion::parse(v).unwrap_or_else(|| {
            error(
                "/api_version",
                format!("must be one of {}", crate::apiversion::VERSIONS.join(", ")),
            );
            ApiVersion::LATEST
        }),
    };
    if let Some(r) = rate {
        if !(r.per_sec.is_finite() && r.per_sec > 0.0 && r.per_sec <= ceiling.per_sec) {
            error(
                "/rate_limit/per_sec",
                format!(
                    "must be more than 0 and at most {} (the tenant's per-user rate)",
                    ceiling.per_sec
                ),
            );
        }
        if !(1..=ceiling.burst).contains(&r.burst) {
            error(
                "/rate_limit/burst",
                format!(
                    "must be 1 to {} (the tenant's per-user burst)",
                    ceiling.burst
                ),
            );
        }
    }
    if let Some(q) = quota {
        if !(0..=MAX_CREDITS).contains(&q.credits) {
            error("/quota/credits", format!("must be 0 to {MAX_CREDITS}"));
        }
        if let Some(r) = q.refill {
            if !(1..=MAX_CREDITS).contains(&r.amount) {
                error(
                    "/quota/refill/amount",
                    format!("must be 1 to {MAX_CREDITS}"),
                );
            }
            if !(60..=31_622_400).contains(&r.interval_secs) {
                error(
                    "/quota/refill/interval_secs",
                    "must be 60 to 31622400 seconds (a minute to a year)".into(),
                );
            }
        }
    }
    Policy {
        api_version,
        rate,
        quota,
    }
}

/// A checked change of a credential's policy.
pub struct PolicyChange {
    pub policy: Policy,
    /// A quota was given: its credits start afresh (the stored snapshot and the live count are
    /// dropped).
    pub quota_set: bool,
}

/// `current` with each field present in `patch` replaced, checked as a new policy is.
pub fn merge(
    current: &Stored,
    patch: &KeyPolicyPatch,
    ceiling: RateCeiling,
) -> ApiResult<PolicyChange> {
    let mut errors = Vec::new();
    let version = current.api_version();
    let policy = check_new(
        Some(patch.api_version.as_deref().unwrap_or(version.as_str())),
        patch.rate_limit.unwrap_or_else(|| current.rate()),
        patch.quota.unwrap_or_else(|| current.quota()),
        ceiling,
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    Ok(PolicyChange {
        policy,
        quota_set: patch.quota.is_some(),
    })
}

/// The credits a client with `quota` has now: the live count, else the stored snapshot, else
/// the quota's own — a count of an earlier period reading as the refill that the next request
/// will make.
pub async fn credits_left(
    limiter: &RateLimiter,
    tenant: crate::ids::TenantId,
    client: &str,
    stored: &Stored,
) -> Option<i64> {
    let quota = stored.quota()?;
    let known = match limiter.credits_left(tenant, client).await {
        Some(live) => Some(live),
        None => stored.quota_left.zip(stored.quota_period),
    };
    Some(match known {
        None => quota.credits,
        Some((left, period)) => quota
            .refill
            .filter(|r| period < chrono::Utc::now().timestamp() / r.interval_secs)
            .map_or(left, |r| r.amount),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CEILING: RateCeiling = RateCeiling {
        per_sec: 10.0,
        burst: 20,
    };

    #[test]
    fn new_policies_are_checked_against_the_ceiling() {
        let mut errors = Vec::new();
        let p = check_new(
            None,
            Some(KeyRate {
                per_sec: 11.0,
                burst: 0,
            }),
            Some(KeyQuota {
                credits: -1,
                refill: Some(Refill {
                    amount: 0,
                    interval_secs: 59,
                }),
            }),
            CEILING,
            &mut errors,
        );
        let pointers: Vec<_> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/rate_limit/per_sec",
                "/rate_limit/burst",
                "/quota/credits",
                "/quota/refill/amount",
                "/quota/refill/interval_secs"
            ]
        );
        assert_eq!(p.api_version, ApiVersion::LATEST);
        let mut errors = Vec::new();
        check_new(Some("2001-01-01"), None, None, CEILING, &mut errors);
        assert_eq!(errors[0].pointer, "/api_version");
    }

    #[test]
    fn a_merge_keeps_what_the_patch_leaves_out_and_round_trips_the_columns() {
        let policy = Policy {
            api_version: ApiVersion::BASELINE,
            rate: Some(KeyRate {
                per_sec: 2.5,
                burst: 5,
            }),
            quota: Some(KeyQuota {
                credits: 100,
                refill: Some(Refill {
                    amount: 100,
                    interval_secs: 3600,
                }),
            }),
        };
        let stored = policy.stored();
        assert_eq!(stored.policy(), policy);
        let kept = merge(&stored, &KeyPolicyPatch::default(), CEILING).unwrap();
        assert_eq!(kept.policy, policy);
        assert!(!kept.quota_set);
        let patch: KeyPolicyPatch =
            serde_json::from_str(r#"{"rate_limit": null, "quota": {"credits": 7}}"#).unwrap();
        let changed = merge(&stored, &patch, CEILING).unwrap();
        assert!(changed.quota_set);
        assert_eq!(changed.policy.rate, None);
        assert_eq!(changed.policy.quota.unwrap().credits, 7);
        assert_eq!(changed.policy.api_version, ApiVersion::BASELINE);
        let wide: KeyPolicyPatch =
            serde_json::from_str(r#"{"rate_limit": {"per_sec": 99, "burst": 1}}"#).unwrap();
        assert!(merge(&stored, &wide, CEILING).is_err());
    }
}
