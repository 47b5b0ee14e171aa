//! Token validation costs: the first sight of a token (parse, RS256 signature with a cached
//! key, claims) against a repeat (digest + cache lookup), as the request path does them.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{Criterion, criterion_group, criterion_main};
use neotenant::auth::TokenCache;
use neotenant::auth::token::{Expected, check_claims, parse};
use openidconnect::core::{CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey};
use openidconnect::{JsonWebKey, PrivateSigningKey};
use serde_json::json;

fn fixture() -> (String, openidconnect::core::CoreJsonWebKey) {
    let pem = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "2048"])
        .output()
        .expect("openssl");
    let key =
        CoreRsaPrivateSigningKey::from_pem(&String::from_utf8(pem.stdout).unwrap(), None).unwrap();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "k1"});
    let claims = json!({"iss": "http://kc/realms/neotenant-us", "aud": ["neotenant-api", "account"],
        "sub": "6d541208-d541-455b-ae04-197f04100992", "typ": "Bearer", "azp": "neotenant-app",
        "exp": 4_000_000_000i64, "iat": 1_700_000_000i64, "organization": ["acme"],
        "realm_access": {"roles": ["member", "offline_access"]}, "preferred_username": "alice",
        "email": "alice@example.com", "name": "Alice Example", "scope": "openid organization:acme email profile"});
    let enc = |v: &serde_json::Value| B64.encode(serde_json::to_vec(v).unwrap());
    let input = format!("{}.{}", enc(&header), enc(&claims));
    let sig = key
        .sign(
            &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            input.as_bytes(),
        )
        .unwrap();
    (
        format!("{input}.{}", B64.encode(sig)),
        key.as_verification_key(),
    )
}

fn bench(c: &mut Criterion) {
    let (token, public) = fixture();
    let expected = Expected {
        issuer: "http://kc/realms/neotenant-us",
        audience: "neotenant-api",
        organization: Some("acme"),
        tenant: "acme",
        leeway_secs: 30,
        max_bytes: 8192,
    };
    let now = 1_800_000_000;
    c.bench_function("token: first sight (parse + RS256 verify + claims)", |b| {
        b.iter(|| {
            let parsed = parse(&token, 8192).unwrap();
            let (input, sig) = token.rsplit_once('.').unwrap();
            let sig = B64.decode(sig).unwrap();
            public
                .verify_signature(
                    &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
                    input.as_bytes(),
                    &sig,
                )
                .unwrap();
            let _ = parsed;
            check_claims(
                &serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap())
                    .unwrap(),
                &expected,
                now,
            )
            .unwrap()
        })
    });
    c.bench_function("token: parse + claims only", |b| {
        b.iter(|| {
            parse(&token, 8192).unwrap();
            check_claims(
                &serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap())
                    .unwrap(),
                &expected,
                now,
            )
            .unwrap()
        })
    });
    let cache = TokenCache::default();
    let principal = Arc::new(
        check_claims(
            &serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap())
                .unwrap(),
            &expected,
            now,
        )
        .unwrap(),
    );
    cache.put(TokenCache::key("acme", &token), principal, now);
    c.bench_function("token: repeat (digest + cache hit)", |b| {
        b.iter(|| cache.get(&TokenCache::key("acme", &token), now).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
