//! A small semantic-version parser and comparator for the `semver_*` condition ops.
//!
//! Owns parsing `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]` (an optional leading `v`/`V` is
//! accepted) and ordering per Semantic Versioning 2.0 (build metadata ignored). It must never
//! allocate: versions borrow their pre-release text from the input.
//!
//! Lenient on purpose in one way: leading zeros in the numeric parts are accepted and read as
//! numbers (`2024.01.05` is `2024.1.5`), since calendar-style app versions use them.

use std::cmp::Ordering;

/// A parsed version; `pre` is the pre-release text without its `-` (empty for a release).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Version<'a> {
    major: u64,
    minor: u64,
    patch: u64,
    pre: &'a str,
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl<'a> Version<'a> {
    /// Parses `s`, or `None` if it is not a version.
    pub(crate) fn parse(s: &'a str) -> Option<Self> {
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        let (s, build) = match s.split_once('+') {
            Some((s, build)) => (s, Some(build)),
            None => (s, None),
        };
        if let Some(build) = build
            && !build.split('.').all(is_identifier)
        {
            return None;
        }
        let (core, pre) = match s.split_once('-') {
            Some((core, pre)) => {
                if !pre.split('.').all(is_identifier) {
                    return None;
                }
                (core, pre)
            }
            None => (s, ""),
        };
        let mut parts = core.split('.');
        let major = number(parts.next()?)?;
        let minor = number(parts.next()?)?;
        let patch = number(parts.next()?)?;
        if parts.next().is_some() {
            return None;
        }
        Some(Version {
            major,
            minor,
            patch,
            pre,
        })
    }
}

fn cmp_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        let ord = match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match (number(x), number(y)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => x.cmp(y),
            },
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| cmp_pre(self.pre, other.pre))
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version<'_> {
        Version::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn parses_and_rejects() {
        for ok in [
            "1.2.3",
            "v1.2.3",
            "V0.0.0",
            "1.2.3-alpha",
            "1.2.3-alpha.1",
            "1.2.3+build.5",
            "1.2.3-rc.1+sha.abc",
            "2024.01.05",
            "1.2.3-x-y-z.--",
        ] {
            assert!(Version::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "a.b.c",
            "1.2.x",
            "v",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-a..b",
            "1.2.3-é",
            " 1.2.3",
            "1.-2.3",
            "vv1.2.3",
        ] {
            assert!(Version::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn orders_per_semver_2() {
        // The precedence example from the specification, in ascending order.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
            "10.0.0",
        ];
        for pair in chain.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
            assert!(v(pair[1]) > v(pair[0]));
        }
        assert_eq!(v("v1.2.3"), v("1.2.3+build.7"));
        assert_eq!(v("2024.01.05"), v("2024.1.5"));
        assert_ne!(v("1.2.3"), v("1.2.3-rc.1"));
    }
}
