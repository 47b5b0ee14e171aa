//! The feature-flag document model: flags, environments, rules, conditions, rollouts and
//! segments, with their exact JSON shapes.
//!
//! Owns only data types and their (de)serialization. It must never evaluate or validate
//! anything beyond what serde itself checks (unknown fields are rejected, `serve` must be
//! exactly one of `variant` or `rollout`), and it must never perform I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The type every variant value of a flag must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `true` / `false`.
    Boolean,
    /// Any JSON string.
    String,
    /// Any JSON number.
    Number,
    /// Any JSON object.
    Object,
}

impl Kind {
    /// The JSON name of this kind (`"boolean"`, `"string"`, `"number"`, `"object"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Boolean => "boolean",
            Kind::String => "string",
            Kind::Number => "number",
            Kind::Object => "object",
        }
    }

    /// Whether `value` is of this kind.
    pub fn matches(self, value: &Value) -> bool {
        match self {
            Kind::Boolean => value.is_boolean(),
            Kind::String => value.is_string(),
            Kind::Number => value.is_number(),
            Kind::Object => value.is_object(),
        }
    }
}

/// One flag's definition, per tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flag {
    /// Unique key, `^[a-z0-9][a-z0-9._-]{0,127}$`.
    pub key: String,
    /// The type of every variant value.
    pub kind: Kind,
    /// Named values this flag can serve (1..=50).
    pub variants: BTreeMap<String, Value>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Other flags that must evaluate to given variants (in the same environment) before this
    /// flag's rules are considered; if any fails, the environment's `off_variant` is served.
    #[serde(default)]
    pub prerequisites: Vec<Prerequisite>,
    /// Targeting per environment name (e.g. `production`, `staging`).
    pub environments: BTreeMap<String, Environment>,
}

/// Another flag (same environment, same context) must evaluate to one of `variants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prerequisite {
    /// Key of the prerequisite flag.
    pub flag: String,
    /// Variants of that flag for which the prerequisite holds.
    pub variants: Vec<String>,
}

/// A flag's targeting in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Kill switch: when `false`, `off_variant` is served with reason `DISABLED`.
    pub enabled: bool,
    /// Served when disabled or when a prerequisite fails.
    pub off_variant: String,
    /// Served when no rule matches.
    pub default: Serve,
    /// Evaluated in order; the first rule whose conditions all match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A targeting rule: when every condition matches, `serve` decides the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// All must match (1..=20).
    pub conditions: Vec<Condition>,
    /// What the rule serves.
    pub serve: Serve,
}

/// What to serve: one fixed variant, or a sticky percentage rollout.
///
/// JSON: `{"variant": "on"}` or
/// `{"rollout": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}], "bucket_by": "plan_id"}`
/// (`bucket_by` is optional and defaults to the targeting key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawServe", into = "RawServe")]
pub enum Serve {
    /// Always this variant.
    Variant {
        /// Variant name.
        variant: String,
    },
    /// A sticky split: each bucket value (the targeting key unless `bucket_by` names another
    /// context attribute) always lands on the same variant.
    Rollout {
        /// Variants with integer percentage weights (must add up to 100 in our flags).
        rollout: Vec<Weighted>,
        /// Context attribute to bucket by; `None` means the targeting key.
        bucket_by: Option<String>,
    },
}

/// Wire form of [`Serve`], so that a document with both or neither of `variant` and
/// `rollout` gets a clear error instead of an untagged-enum mismatch.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollout: Option<Vec<Weighted>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bucket_by: Option<String>,
}

impl TryFrom<RawServe> for Serve {
    type Error = &'static str;

    fn try_from(raw: RawServe) -> Result<Self, Self::Error> {
        match (raw.variant, raw.rollout, raw.bucket_by) {
            (Some(variant), None, None) => Ok(Serve::Variant { variant }),
            (None, Some(rollout), bucket_by) => Ok(Serve::Rollout { rollout, bucket_by }),
            (Some(_), None, Some(_)) => Err("`bucket_by` is only allowed with `rollout`"),
            (Some(_), Some(_), _) => Err("serve takes either `variant` or `rollout`, not both"),
            (None, None, _) => Err("serve needs either `variant` or `rollout`"),
        }
    }
}

impl From<Serve> for RawServe {
    fn from(serve: Serve) -> Self {
        match serve {
            Serve::Variant { variant } => RawServe {
                variant: Some(variant),
                rollout: None,
                bucket_by: None,
            },
            Serve::Rollout { rollout, bucket_by } => RawServe {
                variant: None,
                rollout: Some(rollout),
                bucket_by,
            },
        }
    }
}

/// One entry of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weighted {
    /// Variant name.
    pub variant: String,
    /// Integer percentage.
    pub weight: u32,
}

/// A test of one context attribute (or, for segment ops, of segment membership).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// `targetingKey` or a name in the context's attributes; ignored by segment ops
    /// (`"segment"` by convention).
    pub attribute: String,
    /// The comparison.
    pub op: Op,
    /// Operands; how many and of which type depends on `op`. May be omitted for `exists`.
    #[serde(default)]
    pub values: Vec<Value>,
}

/// Condition operators. See the crate docs for their exact semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Attribute equals `values[0]` (numbers compare by value).
    Eq,
    /// Attribute is present and does not equal `values[0]`.
    Neq,
    /// Scalar attribute is among `values`; array attribute has an element among `values`.
    In,
    /// Scalar attribute is not among `values`; array attribute has no element among `values`.
    NotIn,
    /// String attribute contains the substring `values[0]`; array attribute contains `values[0]`.
    Contains,
    /// String attribute starts with `values[0]`.
    StartsWith,
    /// String attribute ends with `values[0]`.
    EndsWith,
    /// Numeric attribute `>` `values[0]`.
    Gt,
    /// Numeric attribute `>=` `values[0]`.
    Gte,
    /// Numeric attribute `<` `values[0]`.
    Lt,
    /// Numeric attribute `<=` `values[0]`.
    Lte,
    /// Semantic version attribute equals `values[0]` (build metadata ignored).
    SemverEq,
    /// Semantic version attribute is greater than `values[0]`.
    SemverGt,
    /// Semantic version attribute is less than `values[0]`.
    SemverLt,
    /// The context matches any of the segments named in `values`.
    InSegment,
    /// The context matches none of the segments named in `values`.
    NotInSegment,
    /// The attribute is present and not null.
    Exists,
}

impl Op {
    /// The JSON name of this operator, e.g. `"starts_with"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Neq => "neq",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Contains => "contains",
            Op::StartsWith => "starts_with",
            Op::EndsWith => "ends_with",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::SemverEq => "semver_eq",
            Op::SemverGt => "semver_gt",
            Op::SemverLt => "semver_lt",
            Op::InSegment => "in_segment",
            Op::NotInSegment => "not_in_segment",
            Op::Exists => "exists",
        }
    }

    /// Whether this op tests segment membership (and so ignores `attribute`).
    pub fn is_segment_op(self) -> bool {
        matches!(self, Op::InSegment | Op::NotInSegment)
    }
}

/// A reusable, named set of conditions, referenced by `in_segment` / `not_in_segment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Unique key, same syntax as flag keys.
    pub key: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// All must match; segment ops are not allowed here.
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serve_round_trips_both_shapes() {
        let v: Serve = serde_json::from_value(json!({"variant": "on"})).unwrap();
        assert_eq!(
            v,
            Serve::Variant {
                variant: "on".into()
            }
        );
        assert_eq!(serde_json::to_value(&v).unwrap(), json!({"variant": "on"}));

        let r: Serve = serde_json::from_value(json!({
            "rollout": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}],
            "bucket_by": "org"
        }))
        .unwrap();
        let Serve::Rollout { rollout, bucket_by } = &r else {
            panic!("not a rollout")
        };
        assert_eq!(rollout.len(), 2);
        assert_eq!(bucket_by.as_deref(), Some("org"));
        let back: Serve = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);

        let plain: Serve = serde_json::from_value(json!({"rollout": []})).unwrap();
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            json!({"rollout": []})
        );
    }

    #[test]
    fn serve_rejects_ambiguous_or_unknown_shapes() {
        for bad in [
            json!({}),
            json!({"variant": "on", "rollout": []}),
            json!({"variant": "on", "bucket_by": "x"}),
            json!({"variant": "on", "extra": 1}),
            json!({"rollout": [{"variant": "on", "weight": 100, "x": 1}]}),
        ] {
            assert!(
                serde_json::from_value::<Serve>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn flag_parses_with_defaults_and_rejects_unknown_fields() {
        let doc = json!({
            "key": "new-checkout",
            "kind": "boolean",
            "variants": {"on": true, "off": false},
            "environments": {
                "production": {"enabled": true, "off_variant": "off", "default": {"variant": "off"},
                    "rules": [{"conditions": [{"attribute": "plan", "op": "in", "values": ["pro"]},
                                              {"attribute": "email", "op": "exists"}],
                               "serve": {"variant": "on"}}]}
            }
        });
        let flag: Flag = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(flag.kind, Kind::Boolean);
        assert!(flag.prerequisites.is_empty());
        let rule = &flag.environments["production"].rules[0];
        assert_eq!(rule.conditions[0].op, Op::In);
        assert!(rule.conditions[1].values.is_empty());

        let mut extra = doc;
        extra["colour"] = json!("red");
        assert!(serde_json::from_value::<Flag>(extra).is_err());
    }

    #[test]
    fn op_names_match_serde() {
        for op in [
            Op::Eq,
            Op::Neq,
            Op::In,
            Op::NotIn,
            Op::Contains,
            Op::StartsWith,
            Op::EndsWith,
            Op::Gt,
            Op::Gte,
            Op::Lt,
            Op::Lte,
            Op::SemverEq,
            Op::SemverGt,
            Op::SemverLt,
            Op::InSegment,
            Op::NotInSegment,
            Op::Exists,
        ] {
            assert_eq!(serde_json::to_value(op).unwrap(), Value::from(op.as_str()));
        }
        for kind in [Kind::Boolean, Kind::String, Kind::Number, Kind::Object] {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                Value::from(kind.as_str())
            );
        }
    }
}
