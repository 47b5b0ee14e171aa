//! Prefixed, typed identifiers (`ten_…`, `note_…`): a UUIDv7 (time-ordered, so ids sort by
//! creation) shown as a prefix plus 32 hex digits.
//!
//! Owns parsing and printing of ids only. An id of one kind never parses as another, so a
//! note id pasted where a tenant id belongs is a 400, not a lookup.

use std::fmt;
use std::str::FromStr;

/// The reason an id failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an id of the form {prefix}_<32 hex digits>")]
pub struct IdParseError {
    pub prefix: &'static str,
}

macro_rules! prefixed_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            /// A new, time-ordered id.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}_{}", $prefix, self.0.simple())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let err = IdParseError { prefix: $prefix };
                let hex = s
                    .strip_prefix($prefix)
                    .and_then(|r| r.strip_prefix('_'))
                    .ok_or(err.clone())?;
                if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(err);
                }
                uuid::Uuid::parse_str(hex).map(Self).map_err(|_| err)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl salvo::oapi::ToSchema for $name {
            fn to_schema(_components: &mut salvo::oapi::Components) -> salvo::oapi::RefOr<salvo::oapi::schema::Schema> {
                salvo::oapi::Object::new()
                    .schema_type(salvo::oapi::schema::BasicType::String)
                    .pattern(concat!("^", $prefix, "_[0-9a-f]{32}$"))
                    .example(serde_json::Value::String(concat!($prefix, "_0193a8c5e1f27b3c9d4e5f6a7b8c9d0e").into()))
                    .into()
            }
        }
    };
}

prefixed_id!(
    /// A tenant.
    TenantId,
    "ten"
);
prefixed_id!(
    /// A physical database connection in the registry.
    ConnectionId,
    "dbc"
);
prefixed_id!(
    /// A user of a tenant.
    UserId,
    "usr"
);
prefixed_id!(
    /// An API key.
    ApiKeyId,
    "key"
);
prefixed_id!(
    /// A note, the first tenant-scoped record type.
    NoteId,
    "note"
);
prefixed_id!(
    /// A role of a tenant.
    RoleId,
    "rol"
);
prefixed_id!(
    /// A custom grant or deny on a user.
    GrantId,
    "grt"
);
prefixed_id!(
    /// A team.
    TeamId,
    "team"
);
prefixed_id!(
    /// An audit log entry.
    AuditId,
    "aud"
);
prefixed_id!(
    /// A team's share of a resource with another team.
    ShareId,
    "shr"
);
prefixed_id!(
    /// A resource (an instance of a tenant's resource type).
    ResourceId,
    "res"
);
prefixed_id!(
    /// A resource's share with a user or a team.
    ResourceShareId,
    "rsh"
);
prefixed_id!(
    /// A plugin (a tenant's upload or a marketplace listing) with its versions.
    PluginId,
    "plg"
);
prefixed_id!(
    /// An invitation to join a tenant.
    InvitationId,
    "inv"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let id = NoteId::generate();
        let text = id.to_string();
        assert!(text.starts_with("note_"));
        assert_eq!(text.parse::<NoteId>().unwrap(), id);
        assert!(
            text.parse::<TenantId>().is_err(),
            "another kind's id must not parse"
        );
        assert!("note_xyz".parse::<NoteId>().is_err());
        assert!("note_".parse::<NoteId>().is_err());
        assert!(format!("{text}0").parse::<NoteId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<NoteId>(&json).unwrap(), id);
    }

    #[test]
    fn ids_sort_by_creation() {
        let a = NoteId::generate();
        let b = NoteId::generate();
        assert!(a < b);
    }
}

/// The id of the current request (accepted from `X-Request-Id` when well-formed, else new):
/// it correlates a response, its log lines and the audit entries it wrote.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The name of a tenant's search index (its id without dashes): the indexer writes it and
/// tenant deletion removes it.
pub fn search_index_key(tenant: uuid::Uuid) -> String {
    tenant.simple().to_string()
}
