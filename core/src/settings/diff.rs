//! Differences between two JSON documents, as the list of leaves that changed: each with its
//! JSON pointer, the value before (absent when added) and after (absent when removed).
//! Objects are compared key by key; arrays and scalars as wholes. Pure; used for settings
//! and flag versions alike.

use salvo::oapi::ToSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One changed place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    /// JSON pointer into the document.
    pub path: String,
    /// The value before; absent when the place was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    /// The value after; absent when the place was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

/// What changed from `before` to `after`, in key order.
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk(before, after, String::new(), &mut out);
    out
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn walk(before: &Value, after: &Value, at: String, out: &mut Vec<Change>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let here = format!("{at}/{}", escape(key));
                match (b.get(key), a.get(key)) {
                    (Some(x), Some(y)) => walk(x, y, here, out),
                    (Some(x), None) => out.push(Change {
                        path: here,
                        from: Some(x.clone()),
                        to: None,
                    }),
                    (None, Some(y)) => out.push(Change {
                        path: here,
                        from: None,
                        to: Some(y.clone()),
                    }),
                    (None, None) => {}
                }
            }
        }
        (b, a) if b == a => {}
        (b, a) => out.push(Change {
            path: at,
            from: Some(b.clone()),
            to: Some(a.clone()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leaves_that_changed_are_listed_with_their_pointers() {
        let d = diff(
            &json!({"a": {"b": 1, "c": [1]}, "gone": true, "same": "x"}),
            &json!({"a": {"b": 2, "c": [1], "n/ew": null}, "same": "x"}),
        );
        assert_eq!(
            d,
            vec![
                Change {
                    path: "/a/b".into(),
                    from: Some(json!(1)),
                    to: Some(json!(2))
                },
                Change {
                    path: "/a/n~1ew".into(),
                    from: None,
                    to: Some(json!(null))
                },
                Change {
                    path: "/gone".into(),
                    from: Some(json!(true)),
                    to: None
                },
            ]
        );
        assert!(diff(&json!({"a": [1, 2]}), &json!({"a": [1, 2]})).is_empty());
    }
}
