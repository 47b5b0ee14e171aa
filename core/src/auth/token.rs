//! Access-token validation: structure, algorithm allowlist, issuer, key, signature, lifetime,
//! audience, authorised party, token type and — for organization-mode tenants — the one
//! organization the token is for.
//!
//! Owns the order of the checks and the distinct failure of each. Only asymmetric algorithms
//! are accepted (no `none`, no HMAC: a public key can never act as a shared secret). Keys are
//! looked up only for the issuer the tenant expects, so a token naming another issuer is refused
//! before any key is fetched. Never logs a token.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::JsonWebKey;
use openidconnect::core::CoreJwsSigningAlgorithm;
use serde::Deserialize;
use serde_json::Value;

use super::jwks::{JwksCache, KeyError};

/// Why a token was refused; each maps to its own problem type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("the token is larger than the accepted maximum")]
    TooLarge,
    #[error("the token is not a well-formed JWT: {0}")]
    Malformed(&'static str),
    #[error("signing algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("the token was not issued for this tenant")]
    Issuer,
    #[error("the token's signing key is unknown")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is not meant for this API")]
    Audience,
    #[error("the token is not an access token")]
    Type,
    #[error("{0}")]
    Tenant(String),
    #[error("signing keys are unavailable: {0}")]
    KeysUnavailable(String),
    #[error("the session was revoked")]
    SessionRevoked,
}

/// The start of every OAuth client id this platform creates in Keycloak (`ntc-<slug>-<hex>`).
pub const MACHINE_CLIENT_PREFIX: &str = "ntc-";

/// What a valid token must match.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    /// Organization-mode tenants: the organization alias the token must be for (and only it).
    pub organization: Option<&'a str>,
    /// Realm-mode tenants: the `tenant` claim, when the token carries one, must equal it.
    pub tenant: &'a str,
    pub leeway_secs: u64,
    pub max_bytes: usize,
}

/// The authenticated caller, from a valid token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: String,
    pub session_id: Option<String>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub client: Option<String>,
    pub expires_at: i64,
    /// When the token was issued (`iat`, 0 when absent): how fresh its profile claims are.
    pub issued_at: i64,
    /// For an API key, its scopes (it may do only what they and its owner allow); `None` for
    /// tokens.
    pub key_scopes: Option<Vec<String>>,
    /// For a machine client (an API key, an OAuth client): its own bucket, quota and pinned
    /// API version.
    pub client_policy: Option<ClientPolicy>,
}

/// The kinds of machine client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    ApiKey,
    OAuthClient,
}

/// What a machine client carries of its own: a rate-limit bucket apart from its owner's (at
/// its own rate, or the tenant's per-user rate), an optional quota of credits, and the API
/// version it is pinned to.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientPolicy {
    /// Unique in the tenant (`apikey:<uuid>`, `oauth:<uuid>`): names its bucket, credits and
    /// usage.
    pub id: String,
    /// Which credential it is, and its record (where its credits are written back).
    pub kind: ClientKind,
    pub record: uuid::Uuid,
    /// Requests per second and burst; `None`: the tenant's per-user rate.
    pub rate: Option<(f64, u32)>,
    pub quota: Option<crate::ratelimit::Quota>,
    pub api_version: Option<crate::apiversion::ApiVersion>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// Accepted algorithms: asymmetric signatures only.
fn accepted(alg: &str) -> Option<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm as A;
    Some(match alg {
        "RS256" => A::RsaSsaPkcs1V15Sha256,
        "RS384" => A::RsaSsaPkcs1V15Sha384,
        "RS512" => A::RsaSsaPkcs1V15Sha512,
        "PS256" => A::RsaSsaPssSha256,
        "PS384" => A::RsaSsaPssSha384,
        "PS512" => A::RsaSsaPssSha512,
        "ES256" => A::EcdsaP256Sha256,
        "ES384" => A::EcdsaP384Sha384,
        "EdDSA" => A::EdDsa,
        _ => return None,
    })
}

/// A JWT split into its parts, with header and claims decoded but nothing verified.
pub struct Parsed<'t> {
    signing_input: &'t str,
    signature: Vec<u8>,
    alg: CoreJwsSigningAlgorithm,
    kid: String,
    claims: Value,
}

impl Parsed<'_> {
    /// The decoded claims, not yet verified.
    pub fn claims(&self) -> &Value {
        &self.claims
    }
}

/// Structure, size and algorithm checks, which need no key.
pub fn parse(token: &str, max_bytes: usize) -> Result<Parsed<'_>, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > max_bytes {
        return Err(TokenError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| TokenError::Malformed("a part is not base64url"))
    };
    let header: Header = serde_json::from_slice(&decode(h)?)
        .map_err(|_| TokenError::Malformed("the header is not a JOSE header"))?;
    let alg = accepted(&header.alg)
        .ok_or_else(|| TokenError::Algorithm(header.alg.chars().take(16).collect()))?;
    let kid = header
        .kid
        .ok_or(TokenError::Malformed("the header has no kid"))?;
    let claims: Value = serde_json::from_slice(&decode(p)?)
        .map_err(|_| TokenError::Malformed("the payload is not JSON"))?;
    if !claims.is_object() {
        return Err(TokenError::Malformed("the payload is not a JSON object"));
    }
    let signature = decode(s)?;
    Ok(Parsed {
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
        alg,
        kid,
        claims,
    })
}

/// Claim checks after the signature is verified.
pub fn check_claims(
    claims: &Value,
    expected: &Expected<'_>,
    now: i64,
) -> Result<Principal, TokenError> {
    let leeway = expected.leeway_secs as i64;
    let exp = claims["exp"]
        .as_i64()
        .ok_or(TokenError::Malformed("no exp claim"))?;
    // Claims are any i64 the issuer wrote: compare without overflow.
    if now > exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    for not_before in ["nbf", "iat"] {
        if let Some(t) = claims[not_before].as_i64()
            && now.saturating_add(leeway) < t
        {
            return Err(TokenError::NotYetValid);
        }
    }
    let audience_ok = match &claims["aud"] {
        Value::String(a) => a == expected.audience,
        Value::Array(list) => list.iter().any(|a| a == expected.audience),
        _ => false,
    };
    if !audience_ok {
        return Err(TokenError::Audience);
    }
    if let Some(typ) = claims["typ"].as_str()
        && !typ.eq_ignore_ascii_case("bearer")
    {
        return Err(TokenError::Type);
    }
    if let Some(tenant) = claims["tenant"].as_str()
        && tenant != expected.tenant
    {
        return Err(TokenError::Tenant(format!(
            "the token is for tenant {tenant:?}"
        )));
    }
    // A machine client made by this platform carries the tenant's claim (set on the client,
    // never by a user) instead of an organization: it belongs to no organization.
    let machine = claims["azp"]
        .as_str()
        .is_some_and(|azp| azp.starts_with(MACHINE_CLIENT_PREFIX))
        && claims["tenant"].as_str() == Some(expected.tenant);
    if let Some(alias) = expected.organization.filter(|_| !machine) {
        let orgs: Vec<&str> = match &claims["organization"] {
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            Value::Object(map) => map.keys().map(String::as_str).collect(),
            Value::String(s) => vec![s.as_str()],
            _ => Vec::new(),
        };
        match orgs.as_slice() {
            [one] if *one == alias => {}
            [] => {
                return Err(TokenError::Tenant(format!(
                    "the token names no organization; request it with scope `organization:{alias}`"
                )));
            }
            [_] => {
                return Err(TokenError::Tenant(
                    "the token is for another organization".into(),
                ));
            }
            _ => {
                return Err(TokenError::Tenant(format!(
                    "the token names several organizations; request it with scope `organization:{alias}`"
                )));
            }
        }
    }
    let subject = claims["sub"]
        .as_str()
        .ok_or(TokenError::Malformed("no sub claim"))?;
    let text = |name: &str| claims[name].as_str().map(str::to_string);
    Ok(Principal {
        subject: subject.to_string(),
        session_id: text("sid"),
        username: text("preferred_username"),
        email: text("email"),
        name: text("name"),
        roles: claims["realm_access"]["roles"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        client: text("azp"),
        expires_at: exp,
        issued_at: claims["iat"].as_i64().unwrap_or(0),
        key_scopes: None,
        client_policy: None,
    })
}

/// Validates `token` for a tenant.
pub async fn validate(
    token: &str,
    expected: &Expected<'_>,
    keys: &Arc<JwksCache>,
    local: Option<&super::local::LocalKeys>,
    now: i64,
) -> Result<Principal, TokenError> {
    let parsed = parse(token, expected.max_bytes)?;
    if parsed.claims["iss"].as_str() != Some(expected.issuer) {
        return Err(TokenError::Issuer);
    }
    if let Some(local) = local {
        // Local tenants: the platform's own Ed25519 key, no fetch.
        if parsed.alg != CoreJwsSigningAlgorithm::EdDsa {
            return Err(TokenError::Algorithm("local tokens are EdDSA".into()));
        }
        if !local.verify(
            &parsed.kid,
            parsed.signing_input.as_bytes(),
            &parsed.signature,
        ) {
            return Err(if parsed.kid == local.kid {
                TokenError::Signature
            } else {
                TokenError::UnknownKey
            });
        }
        return check_claims(&parsed.claims, expected, now);
    }
    let key = keys
        .key(expected.issuer, &parsed.kid)
        .await
        .map_err(|e| match e {
            KeyError::UnknownKid => TokenError::UnknownKey,
            KeyError::Unavailable(m) => TokenError::KeysUnavailable(m),
        })?;
    key.verify_signature(
        &parsed.alg,
        parsed.signing_input.as_bytes(),
        &parsed.signature,
    )
    .map_err(|_| TokenError::Signature)?;
    check_claims(&parsed.claims, expected, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expected() -> Expected<'static> {
        Expected {
            issuer: "http://kc/realms/r",
            audience: "neotenant-api",
            organization: None,
            tenant: "acme",
            leeway_secs: 5,
            max_bytes: 8192,
        }
    }

    fn claims() -> Value {
        json!({"iss": "http://kc/realms/r", "aud": ["neotenant-api", "account"], "sub": "u1",
               "exp": 1000, "iat": 900, "typ": "Bearer", "azp": "neotenant-app"})
    }

    fn token(header: Value, payload: Value) -> String {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        format!(
            "{}.{}.{}",
            enc(&header),
            enc(&payload),
            URL_SAFE_NO_PAD.encode(b"sig")
        )
    }

    #[test]
    fn structure_and_algorithms() {
        assert_eq!(parse("", 100).err(), Some(TokenError::Missing));
        assert_eq!(
            parse(&"a".repeat(200), 100).err(),
            Some(TokenError::TooLarge)
        );
        assert!(matches!(parse("a.b", 100), Err(TokenError::Malformed(_))));
        assert!(matches!(
            parse("a.b.c.d", 100),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            parse("!!.b.c", 100),
            Err(TokenError::Malformed(_))
        ));
        for alg in ["none", "HS256", "HS512", "None", "RS1"] {
            let t = token(json!({"alg": alg, "kid": "k"}), claims());
            assert!(
                matches!(parse(&t, 8192), Err(TokenError::Algorithm(_))),
                "{alg}"
            );
        }
        let t = token(json!({"alg": "RS256"}), claims());
        assert!(
            matches!(parse(&t, 8192), Err(TokenError::Malformed(_))),
            "kid is required"
        );
        let t = token(json!({"alg": "RS256", "kid": "k"}), json!([1, 2]));
        assert!(matches!(parse(&t, 8192), Err(TokenError::Malformed(_))));
        let t = token(json!({"alg": "RS256", "kid": "k"}), claims());
        assert!(parse(&t, 8192).is_ok());
    }

    #[test]
    fn extreme_times_neither_overflow_nor_pass() {
        let e = expected();
        let mut c = claims();
        c["exp"] = json!(i64::MAX);
        c["iat"] = json!(i64::MIN);
        assert!(check_claims(&c, &e, i64::MAX).is_ok());
        c["exp"] = json!(i64::MIN);
        assert_eq!(check_claims(&c, &e, 0).err(), Some(TokenError::Expired));
        let mut c = claims();
        c["nbf"] = json!(i64::MAX);
        assert_eq!(check_claims(&c, &e, 0).err(), Some(TokenError::NotYetValid));
    }

    #[test]
    fn lifetime_with_leeway() {
        let e = expected();
        assert!(check_claims(&claims(), &e, 1004).is_ok());
        assert_eq!(
            check_claims(&claims(), &e, 1006).err(),
            Some(TokenError::Expired)
        );
        let mut c = claims();
        c["nbf"] = json!(950);
        assert_eq!(
            check_claims(&c, &e, 944).err(),
            Some(TokenError::NotYetValid)
        );
        assert!(check_claims(&c, &e, 946).is_ok());
        let mut c = claims();
        c["iat"] = json!(990);
        assert_eq!(
            check_claims(&c, &e, 980).err(),
            Some(TokenError::NotYetValid)
        );
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert!(matches!(
            check_claims(&c, &e, 950),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn audience_type_and_tenant() {
        let e = expected();
        for aud in [json!("account"), json!(["account"]), json!(null), json!(5)] {
            let mut c = claims();
            c["aud"] = aud;
            assert_eq!(check_claims(&c, &e, 950).err(), Some(TokenError::Audience));
        }
        let mut c = claims();
        c["aud"] = json!("neotenant-api");
        assert!(check_claims(&c, &e, 950).is_ok());
        let mut c = claims();
        c["typ"] = json!("ID");
        assert_eq!(check_claims(&c, &e, 950).err(), Some(TokenError::Type));
        let mut c = claims();
        c["tenant"] = json!("other");
        assert!(matches!(
            check_claims(&c, &e, 950),
            Err(TokenError::Tenant(_))
        ));
    }

    #[test]
    fn exactly_one_organization() {
        let mut e = expected();
        e.organization = Some("acme");
        let with = |orgs: Value| {
            let mut c = claims();
            c["organization"] = orgs;
            c
        };
        assert!(check_claims(&with(json!(["acme"])), &e, 950).is_ok());
        assert!(check_claims(&with(json!({"acme": {"id": "1"}})), &e, 950).is_ok());
        for bad in [
            json!(["other"]),
            json!(["acme", "other"]),
            json!([]),
            json!(null),
        ] {
            assert!(
                matches!(
                    check_claims(&with(bad.clone()), &e, 950),
                    Err(TokenError::Tenant(_))
                ),
                "{bad}"
            );
        }
    }
}
