//! The manifest that comes with every upload, and the checks that it matches the component
//! and that an installation's grants stay within what it asks for.

use salvo::oapi::naming::{self, NameRule};
use salvo::oapi::{Components, ComposeSchema, Ref, RefOr, Schema, ToSchema};
use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use neotenant_runtime::{Grants, Kind};

/// What a manifest's `capabilities` are in the OpenAPI document: the shape of [`Grants`]
/// under their own published name and description (a plugin asks for interfaces; `http` may
/// also be `*`).
pub struct CapabilitiesSchema;

impl ToSchema for CapabilitiesSchema {
    fn to_schema(components: &mut Components) -> RefOr<Schema> {
        let name = naming::assign_name::<CapabilitiesSchema>(NameRule::Force(
            "neotenant.plugins.manifest.Capabilities",
        ));
        let reference = RefOr::Ref(Ref::new(format!("#/components/schemas/{name}")));
        if !components.schemas.contains_key(&name) {
            let mut schema = <Grants as ComposeSchema>::compose(components, Vec::new());
            if let RefOr::Type(Schema::Object(object)) = &mut schema {
                object.description = Some(
                    "The host interfaces a plugin asks for. `http` lists hosts (`host` or \
                     `host:port`), or\n`*` to let the tenant choose at install time."
                        .into(),
                );
            }
            components.schemas.insert(name, schema);
        }
        reference
    }
}

/// `plugin.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `[a-z][a-z0-9_]{0,39}`.
    pub name: String,
    /// Semantic version `MAJOR.MINOR.PATCH[-pre]`.
    pub version: String,
    /// `resource-type` or `integration`: the world the component implements.
    pub kind: String,
    pub publisher: String,
    #[serde(default)]
    pub description: String,
    /// The host interfaces it asks for; `http` lists hosts, or `*` to let the tenant choose
    /// at install time.
    #[serde(default)]
    #[salvo(schema(value_type = CapabilitiesSchema))]
    pub capabilities: Grants,
    /// Integrations: event kinds to receive (`resource.created`, `resource.*`, `*`).
    #[serde(default)]
    pub events: Vec<String>,
}

pub fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 40
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

pub fn is_version(s: &str) -> bool {
    let (core, pre) = match s.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (s, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
        && pre.is_none_or(|p| {
            !p.is_empty()
                && p.len() <= 40
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
        && s.len() <= 60
}

/// `host` or `host:port`: a DNS name or an IP address (IPv6 in brackets with a port).
pub fn is_host(s: &str) -> bool {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !h.is_empty() => (h, Some(p)),
        _ => (s, None),
    };
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return false;
    }
    if host.starts_with('[') {
        return port.is_some()
            && host.ends_with(']')
            && host[1..host.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// An event pattern: a topic, a prefix ending in `.*`, or `*`.
pub fn is_event_pattern(s: &str) -> bool {
    let body = s.strip_suffix(".*").unwrap_or(s);
    s == "*"
        || (!body.is_empty()
            && body.len() <= 100
            && body.as_bytes()[0].is_ascii_lowercase()
            && body
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'))
}

/// Whether `topic` matches `pattern`; given a pattern for `topic`, whether `pattern` covers
/// it (`resource.*` covers `resource.created` and `resource.x.*`, not `*`).
pub fn matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

fn err(pointer: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        pointer: pointer.into(),
        message: message.into(),
    }
}

impl Manifest {
    /// `plugin.json` as uploaded: parsed and [checked](Self::check) on its own.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, Vec<FieldError>> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| vec![err("/manifest", e.to_string())])?;
        let errors = m.check();
        if errors.is_empty() {
            Ok(m)
        } else {
            Err(errors)
        }
    }

    /// Everything wrong with the manifest on its own.
    pub fn check(&self) -> Vec<FieldError> {
        let mut e = Vec::new();
        if !is_name(&self.name) {
            e.push(err("/name", "must match [a-z][a-z0-9_]{0,39}"));
        }
        if !is_version(&self.version) {
            e.push(err(
                "/version",
                "must be a semantic version MAJOR.MINOR.PATCH[-pre]",
            ));
        }
        let kind = Kind::parse(&self.kind);
        if kind.is_none() {
            e.push(err("/kind", "must be resource-type or integration"));
        }
        if self.publisher.trim().is_empty() || self.publisher.chars().count() > 100 {
            e.push(err("/publisher", "must be 1-100 characters"));
        }
        if self.description.chars().count() > 2000 {
            e.push(err("/description", "must be at most 2000 characters"));
        }
        if self.capabilities.http.len() > 50 {
            e.push(err("/capabilities/http", "at most 50 hosts"));
        }
        for (i, h) in self.capabilities.http.iter().enumerate() {
            if h != "*" && !is_host(h) {
                e.push(err(
                    &format!("/capabilities/http/{i}"),
                    "must be host, host:port or *",
                ));
            }
        }
        match kind {
            Some(Kind::Integration) if self.events.is_empty() => e.push(err(
                "/events",
                "an integration must subscribe to at least one event kind",
            )),
            Some(Kind::ResourceType) if !self.events.is_empty() => {
                e.push(err("/events", "only integrations subscribe to events"))
            }
            _ => {}
        }
        if self.events.len() > 50 {
            e.push(err("/events", "at most 50 event kinds"));
        }
        for (i, p) in self.events.iter().enumerate() {
            if !is_event_pattern(p) {
                e.push(err(
                    &format!("/events/{i}"),
                    "must be a kind, a prefix ending in .* or *",
                ));
            }
        }
        e
    }

    /// Everything the manifest claims that the component contradicts: its world, and the
    /// host interfaces it imports (each must be asked for, and nothing more).
    pub fn contradictions(&self, kind: Kind, imports: &[String]) -> Vec<FieldError> {
        let mut e = Vec::new();
        if Kind::parse(&self.kind) != Some(kind) {
            e.push(err(
                "/kind",
                format!("the component implements the {} world", kind.as_str()),
            ));
        }
        let asked = [
            ("logging", self.capabilities.logging),
            ("kv", self.capabilities.kv),
            ("events", self.capabilities.events),
            ("http", !self.capabilities.http.is_empty()),
        ];
        for (cap, asked) in asked {
            let imported = imports.iter().any(|i| i == cap);
            if imported && !asked {
                e.push(err(
                    &format!("/capabilities/{cap}"),
                    format!("the component imports `{cap}` but the manifest does not ask for it"),
                ));
            } else if asked && !imported {
                e.push(err(
                    &format!("/capabilities/{cap}"),
                    format!("the manifest asks for `{cap}` but the component never uses it"),
                ));
            }
        }
        e
    }
}

/// Checks grants against what the manifest asked for, and against the operator's rule over
/// inside addresses (`allow`: the hosts the operator lets integrations reach).
pub fn check_grants(
    m: &Manifest,
    g: &Grants,
    allow: &crate::netguard::AllowList,
) -> Vec<FieldError> {
    let mut e = Vec::new();
    for (cap, granted, asked) in [
        ("logging", g.logging, m.capabilities.logging),
        ("kv", g.kv, m.capabilities.kv),
        ("events", g.events, m.capabilities.events),
    ] {
        if granted && !asked {
            e.push(err(
                &format!("/grants/{cap}"),
                "the plugin does not ask for this",
            ));
        }
    }
    if g.http.len() > 50 {
        e.push(err("/grants/http", "at most 50 hosts"));
    }
    let any = m.capabilities.http.iter().any(|h| h == "*");
    for (i, h) in g.http.iter().enumerate() {
        let p = format!("/grants/http/{i}");
        if !is_host(h) {
            e.push(err(&p, "must be host or host:port (no wildcards)"));
        } else if crate::netguard::refuses_grant(h, allow) {
            e.push(err(
                &p,
                "an address inside the platform's network (loopback, private, link-local, metadata); only the operator can allow it",
            ));
        } else if !any
            && !m
                .capabilities
                .http
                .iter()
                .any(|a| a.eq_ignore_ascii_case(h))
        {
            e.push(err(&p, "the plugin does not ask for this host"));
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        serde_json::from_value(serde_json::json!({
            "name": "hook", "version": "1.2.3", "kind": "integration", "publisher": "x",
            "capabilities": {"http": ["api.example.com"], "kv": true},
            "events": ["resource.*"]
        }))
        .unwrap()
    }

    #[test]
    fn manifests_are_checked() {
        assert!(manifest().check().is_empty());
        let mut m = manifest();
        m.name = "Bad-Name".into();
        m.version = "1.2".into();
        m.kind = "other".into();
        m.events = vec!["Resource.created".into()];
        m.capabilities.http = vec!["http://x".into()];
        let e = m.check();
        let pointers: Vec<_> = e.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/name",
                "/version",
                "/kind",
                "/capabilities/http/0",
                "/events/0"
            ]
        );
        assert!(is_version("0.1.0-beta.1"));
        assert!(!is_version("01.2.3.4"));
        assert!(is_host("127.0.0.1:8080") && is_host("[::1]:80") && is_host("a.b-c.d"));
        assert!(
            !is_host("a.b:0") && !is_host("*.example.com") && !is_host("a..b") && !is_host("::1")
        );
    }

    #[test]
    fn a_manifest_that_lies_is_caught() {
        let m = manifest();
        assert!(
            m.contradictions(Kind::Integration, &["kv".into(), "http".into()])
                .is_empty()
        );
        let e = m.contradictions(
            Kind::ResourceType,
            &["kv".into(), "http".into(), "events".into()],
        );
        let pointers: Vec<_> = e.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/kind", "/capabilities/events"]);
        let e = m.contradictions(Kind::Integration, &["kv".into()]);
        assert_eq!(e[0].pointer, "/capabilities/http");
    }

    #[test]
    fn grants_stay_within_what_was_asked() {
        let m = manifest();
        let ok = crate::plugins::Grants {
            kv: true,
            http: vec!["API.example.com".into()],
            ..Default::default()
        };
        assert!(check_grants(&m, &ok, &Default::default()).is_empty());
        let bad = crate::plugins::Grants {
            events: true,
            http: vec!["evil.test".into(), "*".into()],
            ..Default::default()
        };
        let pointers: Vec<_> = check_grants(&m, &bad, &Default::default())
            .into_iter()
            .map(|e| e.pointer)
            .collect();
        assert_eq!(
            pointers,
            ["/grants/events", "/grants/http/0", "/grants/http/1"]
        );
        // A plugin asking for any host still cannot be granted an inside address, unless the
        // operator allows it.
        let mut any = manifest();
        any.capabilities.http = vec!["*".into()];
        let inside = crate::plugins::Grants {
            http: vec![
                "169.254.169.254".into(),
                "127.0.0.1:6379".into(),
                "localhost:80".into(),
                "api.example.com".into(),
            ],
            ..Default::default()
        };
        let pointers: Vec<_> = check_grants(&any, &inside, &Default::default())
            .into_iter()
            .map(|e| e.pointer)
            .collect();
        assert_eq!(
            pointers,
            ["/grants/http/0", "/grants/http/1", "/grants/http/2"]
        );
        let allowed = crate::netguard::AllowList::parse("127.0.0.1");
        assert_eq!(check_grants(&any, &inside, &allowed).len(), 2);
        assert!(matches("resource.*", "resource.created") && !matches("resource.*", "resources"));
        assert!(matches("*", "x") && matches("a.b", "a.b") && !matches("a.b", "a.bc"));
        // Narrowing subscriptions: a pattern covers narrower ones only.
        assert!(matches("resource.*", "resource.*") && matches("resource.*", "resource.x.*"));
        assert!(!matches("resource.*", "*") && !matches("resource.created", "resource.*"));
    }
}
