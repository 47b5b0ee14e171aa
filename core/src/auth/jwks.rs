//! Signing keys per issuer (realm), from OIDC discovery and the JWKS endpoint, cached.
//!
//! Owns when Keycloak is asked for keys. **Invariants:** a request never waits on Keycloak when
//! the cache holds the key it needs (stale keys are refreshed in the background); an unknown
//! `kid` triggers at most one fetch per realm per `unknown_kid_refetch_ms`, whoever asks and
//! however many ask at once (single flight), so a flood of forged kids never becomes a flood of
//! Keycloak requests; cached keys keep validating while Keycloak is down, up to
//! `jwks_max_staleness_secs`. Keys are looked up only for the issuer the tenant expects, never
//! for an issuer named by a token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreProviderMetadata};
use openidconnect::{IssuerUrl, JsonWebKey, JsonWebKeySetUrl};

use crate::config::AuthConfig;

/// Why no key could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no signing key with this kid")]
    UnknownKid,
    #[error("signing keys unavailable: {0}")]
    Unavailable(String),
}

struct KeySet {
    keys: HashMap<String, CoreJsonWebKey>,
    jwks_uri: JsonWebKeySetUrl,
    fetched: Instant,
}

#[derive(Default)]
struct RealmKeys {
    current: RwLock<Option<Arc<KeySet>>>,
    /// Single flight: one fetch per realm at a time.
    fetching: tokio::sync::Mutex<()>,
    last_attempt: Mutex<Option<Instant>>,
}

pub struct JwksCache {
    http: reqwest::Client,
    realms: RwLock<HashMap<String, Arc<RealmKeys>>>,
    refresh_after: Duration,
    max_staleness: Duration,
    min_refetch: Duration,
    fetches: prometheus::IntCounterVec,
}

impl JwksCache {
    pub fn new(config: &AuthConfig, fetches: prometheus::IntCounterVec) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client builds");
        Self {
            http,
            realms: RwLock::new(HashMap::new()),
            refresh_after: Duration::from_secs(config.jwks_refresh_secs),
            max_staleness: Duration::from_secs(config.jwks_max_staleness_secs),
            min_refetch: Duration::from_millis(config.unknown_kid_refetch_ms),
            fetches,
        }
    }

    fn realm(&self, issuer: &str) -> Arc<RealmKeys> {
        if let Some(r) = self.realms.read().expect("jwks lock").get(issuer) {
            return r.clone();
        }
        self.realms
            .write()
            .expect("jwks lock")
            .entry(issuer.to_string())
            .or_default()
            .clone()
    }

    /// The key `kid` of `issuer`.
    pub async fn key(
        self: &Arc<Self>,
        issuer: &str,
        kid: &str,
    ) -> Result<CoreJsonWebKey, KeyError> {
        let realm = self.realm(issuer);
        let snapshot = realm.current.read().expect("jwks lock").clone();
        if let Some(set) = &snapshot {
            let age = set.fetched.elapsed();
            if let Some(key) = set.keys.get(kid) {
                if age >= self.refresh_after {
                    if age < self.max_staleness {
                        // Serve from cache; refresh behind the request.
                        let this = self.clone();
                        let issuer = issuer.to_string();
                        tokio::spawn(async move {
                            let realm = this.realm(&issuer);
                            let _ = this.refresh(&issuer, &realm).await;
                        });
                    } else if self.refresh(issuer, &realm).await.is_err() {
                        return Err(KeyError::Unavailable(
                            "cached keys are older than auth.jwks_max_staleness_secs and Keycloak cannot be reached".into(),
                        ));
                    } else {
                        return self.lookup(&realm, kid);
                    }
                }
                return Ok(key.clone());
            }
        }
        // Unknown kid (or no keys yet): one rate-limited fetch, then look again.
        match self.refresh(issuer, &realm).await {
            Ok(()) | Err(RefreshError::RateLimited) => {}
            Err(RefreshError::Failed(e)) => {
                // Keys we still hold stay usable; a kid we never saw cannot be trusted.
                return Err(if realm.current.read().expect("jwks lock").is_some() {
                    KeyError::UnknownKid
                } else {
                    KeyError::Unavailable(e)
                });
            }
        }
        match self.lookup(&realm, kid) {
            Err(KeyError::UnknownKid) if realm.current.read().expect("jwks lock").is_none() => {
                Err(KeyError::Unavailable("no keys fetched yet".into()))
            }
            other => other,
        }
    }

    fn lookup(&self, realm: &RealmKeys, kid: &str) -> Result<CoreJsonWebKey, KeyError> {
        realm
            .current
            .read()
            .expect("jwks lock")
            .as_ref()
            .and_then(|set| set.keys.get(kid).cloned())
            .ok_or(KeyError::UnknownKid)
    }

    async fn refresh(&self, issuer: &str, realm: &RealmKeys) -> Result<(), RefreshError> {
        let _single_flight = realm.fetching.lock().await;
        {
            let mut last = realm.last_attempt.lock().expect("jwks lock");
            if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
                return Err(RefreshError::RateLimited);
            }
            *last = Some(Instant::now());
        }
        let previous = realm.current.read().expect("jwks lock").clone();
        let fetched = match &previous {
            Some(set) => CoreJsonWebKeySet::fetch_async(&set.jwks_uri, &self.http)
                .await
                .map(|jwks| (jwks, set.jwks_uri.clone()))
                .map_err(|e| e.to_string()),
            None => {
                let issuer_url = IssuerUrl::new(issuer.to_string())
                    .map_err(|e| RefreshError::Failed(e.to_string()))?;
                CoreProviderMetadata::discover_async(issuer_url, &self.http)
                    .await
                    .map(|meta| (meta.jwks().clone(), meta.jwks_uri().clone()))
                    .map_err(|e| e.to_string())
            }
        };
        match fetched {
            Ok((jwks, jwks_uri)) => {
                self.fetches.with_label_values(&["ok"]).inc();
                let keys = jwks
                    .keys()
                    .iter()
                    .filter_map(|k| k.key_id().map(|id| (id.as_str().to_string(), k.clone())))
                    .collect();
                *realm.current.write().expect("jwks lock") = Some(Arc::new(KeySet {
                    keys,
                    jwks_uri,
                    fetched: Instant::now(),
                }));
                Ok(())
            }
            Err(e) => {
                self.fetches.with_label_values(&["error"]).inc();
                tracing::warn!(issuer, error = %e, "fetching signing keys failed");
                Err(RefreshError::Failed(e))
            }
        }
    }
}

enum RefreshError {
    RateLimited,
    Failed(String),
}
