//! Partial updates: telling a field that is absent from one that is `null`.
//!
//! `#[serde(default, deserialize_with = "crate::patch::present")]` on an `Option<Option<T>>`
//! gives `None` when the field is absent (keep), `Some(None)` for `null` (remove) and
//! `Some(Some(v))` for a value (replace). Pure serde; no I/O.

use serde::{Deserialize, Deserializer};

/// Deserializes a present field (a value or `null`) as `Some(…)`.
pub fn present<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct P {
        #[serde(default, deserialize_with = "super::present")]
        v: Option<Option<u32>>,
    }

    #[test]
    fn absent_null_and_value_differ() {
        let p = |s: &str| serde_json::from_str::<P>(s).unwrap().v;
        assert_eq!(p("{}"), None);
        assert_eq!(p(r#"{"v": null}"#), Some(None));
        assert_eq!(p(r#"{"v": 3}"#), Some(Some(3)));
    }
}
