//! Dated API versions on top of `/v1`: a client chooses one per request with the
//! `NeoTenant-Version` header, or gets its pinned default (an API key is pinned to the newest
//! version when it is made, or to the one it names), else the baseline. Every `/v1` answer
//! echoes the version it was served with.
//!
//! Owns the list of versions and what changed in each ([`CHANGES`]); the code that differs
//! asks `version.at_least("2026-12-01")`, so every behaviour change is found by its date.
//! Pure data: no I/O, never decides which version a request gets (that is `http::version`).

use std::fmt;

/// The request and response header.
pub const HEADER: &str = "neotenant-version";

/// Every supported version, oldest first.
pub const VERSIONS: &[&str] = &["2026-06-01", "2026-12-01"];

/// What each version changed, for the documentation and `GET /v1/api-versions`.
pub const CHANGES: &[(&str, &str)] = &[
    ("2026-06-01", "The baseline."),
    (
        "2026-12-01",
        "DELETE /v1/resources/{type}/{id} answers 200 with the deleted resource (its deleted_at and new version, the ETag a restore needs) instead of 204 without a body.",
    ),
];

/// A supported version (its place in [`VERSIONS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion(usize);

impl ApiVersion {
    /// What a request gets without a header or a pinned client.
    pub const BASELINE: Self = Self(0);
    /// The newest version, which new API keys are pinned to.
    pub const LATEST: Self = Self(VERSIONS.len() - 1);

    /// A supported version by its date (`YYYY-MM-DD`).
    pub fn parse(text: &str) -> Option<Self> {
        VERSIONS.iter().position(|v| *v == text.trim()).map(Self)
    }

    pub fn as_str(self) -> &'static str {
        VERSIONS[self.0]
    }

    /// Whether this version includes the change made on `date` (a version in [`VERSIONS`]).
    pub fn at_least(self, date: &str) -> bool {
        Self::parse(date).is_some_and(|v| self >= v)
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_order_and_document_their_changes() {
        assert_eq!(ApiVersion::parse("2026-06-01"), Some(ApiVersion::BASELINE));
        assert_eq!(ApiVersion::parse(" 2026-12-01 "), Some(ApiVersion::LATEST));
        assert_eq!(ApiVersion::parse("2026-07-01"), None);
        assert_eq!(ApiVersion::parse(""), None);
        assert!(ApiVersion::LATEST.at_least("2026-12-01"));
        assert!(!ApiVersion::BASELINE.at_least("2026-12-01"));
        assert!(ApiVersion::BASELINE.at_least("2026-06-01"));
        assert!(
            !ApiVersion::LATEST.at_least("1999-01-01"),
            "an unknown date is no version"
        );
        let mut sorted = VERSIONS.to_vec();
        sorted.sort();
        assert_eq!(sorted, VERSIONS, "oldest first");
        let documented: Vec<&str> = CHANGES.iter().map(|(v, _)| *v).collect();
        assert_eq!(documented, VERSIONS, "every version says what it changed");
    }
}
