//! Every Redis key and pub/sub channel the host uses, built in one place.
//!
//! Foundation: features name what they store, this module names where. Keys that one script
//! or transaction touches together share a hash tag (`{…}`), so they land in one slot of a
//! Redis Cluster; everything else is spread by tenant. Never holds a value or a connection.

use std::fmt::Display;

use crate::ids::TenantId;

/// Every key and channel starts with this.
pub const PREFIX: &str = "neotenant";

/// Channels of the invalidation broadcasts.
pub mod channel {
    /// `<slug>` of every tenant whose registry row changed.
    pub const TENANT_CHANGED: &str = "neotenant:tenant-changed";
    /// `<tenant id>:<sid>` of every revoked session.
    pub const SESSION_REVOKED: &str = "neotenant:session-revoked";
    /// `<tenant id>` whose permission inputs changed.
    pub const RBAC: &str = "neotenant:rbac";
    /// `<tenant id>:<version>` whose settings changed.
    pub const SETTINGS: &str = "neotenant:settings";
    /// `<tenant id>:<version>` whose feature flags changed.
    pub const FLAGS: &str = "neotenant:flags";
    /// `<tenant id>:<user id>` whose in-app inbox changed.
    pub const INBOX: &str = "neotenant:inbox";
}

/// A tenant's request count for one UTC day (`yyyymmdd`), for its daily quota.
pub fn tenant_quota(namespace: &str, tenant: TenantId, day: &str) -> String {
    format!("{PREFIX}:{namespace}:quota:{}:{day}", tenant.0.simple())
}

/// A machine client's (API key's) credits left and the refill period they belong to (a hash).
pub fn client_quota(namespace: &str, tenant: TenantId, client: &str) -> String {
    format!(
        "{PREFIX}:{namespace}:credits:{}:{client}",
        tenant.0.simple()
    )
}

/// A machine client's requests on one UTC day (`yyyymmdd`): a hash of `ok` and `refused`.
pub fn client_usage(namespace: &str, tenant: TenantId, client: &str, day: &str) -> String {
    format!(
        "{PREFIX}:{namespace}:usage:{}:{client}:{day}",
        tenant.0.simple()
    )
}

/// One session's record (device, first and last seen).
pub fn session(tenant: TenantId, sid: &str) -> String {
    format!("{PREFIX}:sess:{tenant}:{sid}")
}

/// The sessions of one user (a sorted set of sids).
pub fn user_sessions(tenant: TenantId, subject: &str) -> String {
    format!("{PREFIX}:sess-user:{tenant}:{subject}")
}

/// The device fingerprints one user has signed in from.
pub fn user_devices(tenant: TenantId, subject: &str) -> String {
    format!("{PREFIX}:devices:{tenant}:{subject}")
}

/// The marker of a revoked session.
pub fn revoked_session(tenant: TenantId, sid: &str) -> String {
    format!("{PREFIX}:revoked:{tenant}:{sid}")
}

/// The pattern matching every revoked-session marker, and the prefix to strip from each.
pub const REVOKED_SESSIONS_PATTERN: &str = "neotenant:revoked:*";
pub const REVOKED_SESSIONS_PREFIX: &str = "neotenant:revoked:";

/// A local-mode refresh token, by the digest of its secret.
pub fn local_refresh_token(tenant: TenantId, digest: &str) -> String {
    format!("{PREFIX}:rt:{tenant}:{digest}")
}

/// The once-a-minute guard on password-reset mails for one account.
pub fn password_reset_throttle(tenant: TenantId, account: &str) -> String {
    format!("{PREFIX}:pwreset:{tenant}:{account}")
}

/// The per-round lock of one tenant's user reconciliation.
pub fn reconcile_lock(tenant: TenantId) -> String {
    format!("{PREFIX}:lock:reconcile:{tenant}")
}

/// The generation counter of a tenant's permission inputs.
pub fn rbac_generation(tenant: TenantId) -> String {
    format!("{PREFIX}:rbac:gen:{}", tenant.0.simple())
}

/// The hash of a tenant's cached effective permissions (L2). The version names the shape
/// of an entry (v2: entries carry the user's teams and their ancestry), so an instance never
/// reads an entry an older build wrote.
pub fn rbac_permissions(tenant: TenantId) -> String {
    format!("{PREFIX}:rbac:perm:v2:{}", tenant.0.simple())
}

/// Rate-limit keys live under their namespace as one hash tag: the limiter's script reads an
/// IP's lock, the IP's bucket and the user's bucket in one call, which Redis Cluster allows
/// only within one slot.
pub mod rate {
    use super::Display;

    fn tag(namespace: &str) -> String {
        format!("{{{namespace}}}")
    }

    pub fn ip_lock(namespace: &str, ip: impl Display) -> String {
        format!("{}:lock:ip:{ip}", tag(namespace))
    }
    pub fn ip_bucket(namespace: &str, ip: impl Display) -> String {
        format!("{}:ip:{ip}", tag(namespace))
    }
    pub fn user_bucket(namespace: &str, user: impl Display) -> String {
        format!("{}:user:{user}", tag(namespace))
    }
    pub fn ip_failures(namespace: &str, ip: impl Display) -> String {
        format!("{}:fail:ip:{ip}", tag(namespace))
    }
    /// One credential's or account's (a fingerprint) failures and lock at one IP.
    pub fn pair_lock(namespace: &str, ip: impl Display, who: &str) -> String {
        format!("{}:lock:pair:{ip}:{who}", tag(namespace))
    }
    pub fn pair_failures(namespace: &str, ip: impl Display, who: &str) -> String {
        format!("{}:fail:pair:{ip}:{who}", tag(namespace))
    }
    /// An account's (a fingerprint) failures and lock from every address.
    pub fn account_lock(namespace: &str, who: &str) -> String {
        format!("{}:lock:acct:{who}", tag(namespace))
    }
    pub fn account_failures(namespace: &str, who: &str) -> String {
        format!("{}:fail:acct:{who}", tag(namespace))
    }

    /// The slot-defining part of a key (what Redis Cluster hashes).
    pub fn hash_tag(key: &str) -> &str {
        match key.find('{') {
            Some(open) => match key[open + 1..].find('}') {
                Some(len) if len > 0 => &key[open + 1..open + 1 + len],
                _ => key,
            },
            None => key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_limiter_call_stays_in_one_slot() {
        let keys = [
            rate::ip_lock("rl", "10.0.0.1"),
            rate::ip_bucket("rl", "10.0.0.1"),
            rate::user_bucket("rl", "t:alice"),
            rate::ip_failures("rl", "10.0.0.1"),
            rate::pair_lock("rl", "10.0.0.1", "ab12"),
            rate::pair_failures("rl", "10.0.0.1", "ab12"),
            rate::account_lock("rl", "ab12"),
            rate::account_failures("rl", "ab12"),
        ];
        for k in &keys {
            assert_eq!(rate::hash_tag(k), "rl", "{k}");
        }
        // Without a tag the whole key is hashed: different slots.
        assert_ne!(rate::hash_tag("rl:ip:1"), rate::hash_tag("rl:user:1"));
    }

    #[test]
    fn keys_are_namespaced() {
        let t = TenantId(Uuid::nil());
        for k in [
            session(t, "s"),
            user_sessions(t, "u"),
            user_devices(t, "u"),
            revoked_session(t, "s"),
            local_refresh_token(t, "d"),
            password_reset_throttle(t, "a"),
            reconcile_lock(t),
            rbac_generation(TenantId(Uuid::nil())),
            rbac_permissions(TenantId(Uuid::nil())),
        ] {
            assert!(k.starts_with("neotenant:"), "{k}");
        }
        assert!(revoked_session(t, "s").starts_with(REVOKED_SESSIONS_PREFIX));
    }
}
