//! Flag evaluation: an immutable [`Snapshot`] of flags and segments answers "which variant does
//! this context get for this flag in this environment, and why".
//!
//! Owns condition semantics, rule order, the kill switch, prerequisites (recursive, depth- and
//! cycle-limited), segments, and serving fixed variants or sticky rollouts. It must never do
//! I/O, never block, never panic on a well-formed document it was not validated against (it
//! returns an [`EvalError`] instead), and should allocate only what the returned
//! [`Evaluation`] owns.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::bucket;
use crate::model::{Condition, Flag, Op, Segment, Serve};
use crate::semver::Version;

/// The context attribute name that refers to [`Context::targeting_key`].
pub const TARGETING_KEY: &str = "targetingKey";

/// How many prerequisite levels below the evaluated flag are followed before giving up.
pub const MAX_PREREQUISITE_DEPTH: usize = 10;

/// Who (or what) a flag is evaluated for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// The targeting key (user id, session id, ...); the default rollout bucket value.
    pub targeting_key: Option<String>,
    /// Every other attribute, looked up by exact name (no dotted paths).
    pub attributes: Map<String, Value>,
}

impl Context {
    /// A context with this targeting key and no attributes.
    pub fn new(targeting_key: impl Into<String>) -> Self {
        Context {
            targeting_key: Some(targeting_key.into()),
            attributes: Map::new(),
        }
    }

    /// This context with attribute `name` set to `value`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// The attribute `name`: the targeting key for `targetingKey`, else from `attributes`.
    /// Absent and JSON `null` are both `None`.
    fn get(&self, name: &str) -> Option<Attr<'_>> {
        if name == TARGETING_KEY {
            return self.targeting_key.as_deref().map(Attr::Str);
        }
        match self.attributes.get(name) {
            None | Some(Value::Null) => None,
            Some(v) => Some(Attr::Json(v)),
        }
    }
}

impl From<Map<String, Value>> for Context {
    /// An OFREP-style context object: a string `targetingKey` becomes the targeting key and
    /// every other member an attribute.
    fn from(mut attributes: Map<String, Value>) -> Self {
        let targeting_key = match attributes.remove(TARGETING_KEY) {
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                attributes.insert(TARGETING_KEY.to_owned(), other);
                None
            }
            None => None,
        };
        Context {
            targeting_key,
            attributes,
        }
    }
}

/// Why a variant was served. Serialized as OFREP reason strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// No targeting at all: no rules and no prerequisites; the default variant.
    Static,
    /// A rule matched and served a fixed variant.
    TargetingMatch,
    /// A rollout decided (from a matched rule or from the default).
    Split,
    /// The environment's kill switch is off; the off variant.
    Disabled,
    /// Rules or prerequisites exist but no rule matched; the default variant.
    Default,
    /// A prerequisite did not hold; the off variant.
    PrerequisiteFailed,
    /// Evaluation failed (for callers reporting an [`EvalError`]; never produced here).
    Error,
}

impl Reason {
    /// The OFREP string, e.g. `"TARGETING_MATCH"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Disabled => "DISABLED",
            Reason::Default => "DEFAULT",
            Reason::PrerequisiteFailed => "PREREQUISITE_FAILED",
            Reason::Error => "ERROR",
        }
    }
}

/// The outcome of evaluating one flag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// The flag key.
    pub key: String,
    /// The served variant's value.
    pub value: Value,
    /// The served variant's name.
    pub variant: String,
    /// Why it was served.
    pub reason: Reason,
}

/// Why a flag could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// No flag with that key in the snapshot.
    #[error("flag not found")]
    FlagNotFound,
    /// The flag does not define the requested environment.
    #[error("environment not found for this flag")]
    EnvironmentNotFound,
    /// A rollout buckets by the targeting key and the context has none (or an empty one).
    #[error("targeting key is required to evaluate this flag")]
    TargetingKeyMissing,
    /// The flag's prerequisites lead back to itself.
    #[error("prerequisite cycle")]
    PrerequisiteCycle,
    /// Anything else, e.g. a missing `bucket_by` attribute or an undefined variant.
    #[error("{0}")]
    General(String),
}

impl EvalError {
    /// The OFREP `errorCode`: `FLAG_NOT_FOUND`, `TARGETING_KEY_MISSING` or `GENERAL`.
    pub fn code(&self) -> &'static str {
        match self {
            EvalError::FlagNotFound => "FLAG_NOT_FOUND",
            EvalError::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            EvalError::EnvironmentNotFound
            | EvalError::PrerequisiteCycle
            | EvalError::General(_) => "GENERAL",
        }
    }
}

/// An immutable set of flags and segments, ready to evaluate.
///
/// Build it from documents that passed [`validate`](crate::validate()); evaluation stays safe on
/// anything else (undefined variants and prerequisite cycles become errors, unknown segments
/// match nobody) but answers may then be surprising.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    flags: HashMap<String, Arc<Flag>>,
    segments: HashMap<String, Segment>,
    /// Every flag key, sorted, for [`Snapshot::evaluate_all`].
    order: Vec<String>,
}

/// Flag keys whose prerequisites are being evaluated, outermost first.
struct Chain<'s> {
    keys: [&'s str; MAX_PREREQUISITE_DEPTH],
    len: usize,
    /// Set once the depth limit was hit, so the error reaches the caller.
    too_deep: bool,
}

impl Snapshot {
    /// A snapshot of `flags` and `segments` (a later duplicate key replaces an earlier one).
    pub fn new<F>(flags: F, segments: impl IntoIterator<Item = Segment>) -> Self
    where
        F: IntoIterator,
        F::Item: Into<Arc<Flag>>,
    {
        let flags: HashMap<String, Arc<Flag>> = flags
            .into_iter()
            .map(|f| {
                let f = f.into();
                (f.key.clone(), f)
            })
            .collect();
        let segments = segments.into_iter().map(|s| (s.key.clone(), s)).collect();
        let mut order: Vec<String> = flags.keys().cloned().collect();
        order.sort_unstable();
        Snapshot {
            flags,
            segments,
            order,
        }
    }

    /// The flag with this key.
    pub fn flag(&self, key: &str) -> Option<&Arc<Flag>> {
        self.flags.get(key)
    }

    /// The segment with this key.
    pub fn segment(&self, key: &str) -> Option<&Segment> {
        self.segments.get(key)
    }

    /// Evaluates flag `key` in environment `env` for `ctx`.
    pub fn evaluate(&self, env: &str, key: &str, ctx: &Context) -> Result<Evaluation, EvalError> {
        let mut chain = Chain {
            keys: [""; MAX_PREREQUISITE_DEPTH],
            len: 0,
            too_deep: false,
        };
        let (flag, variant, reason) = self.resolve(env, key, ctx, &mut chain)?;
        let value = flag
            .variants
            .get(variant)
            .ok_or_else(|| EvalError::General(format!("variant `{variant}` is not defined")))?;
        Ok(Evaluation {
            key: flag.key.clone(),
            value: value.clone(),
            variant: variant.to_owned(),
            reason,
        })
    }

    /// Evaluates every flag in environment `env` for `ctx`, sorted by flag key; each result is
    /// paired with its flag key so errors can be reported per flag.
    pub fn evaluate_all(
        &self,
        env: &str,
        ctx: &Context,
    ) -> Vec<(String, Result<Evaluation, EvalError>)> {
        self.order
            .iter()
            .map(|key| (key.clone(), self.evaluate(env, key, ctx)))
            .collect()
    }

    /// The flag, the name of the variant it serves and why, without cloning any value.
    fn resolve<'s>(
        &'s self,
        env_name: &str,
        key: &str,
        ctx: &Context,
        chain: &mut Chain<'s>,
    ) -> Result<(&'s Flag, &'s str, Reason), EvalError> {
        let flag = self.flags.get(key).ok_or(EvalError::FlagNotFound)?;
        let env = flag
            .environments
            .get(env_name)
            .ok_or(EvalError::EnvironmentNotFound)?;
        if !env.enabled {
            return Ok((flag, &env.off_variant, Reason::Disabled));
        }
        if !flag.prerequisites.is_empty() && !self.prerequisites_hold(flag, env_name, ctx, chain)? {
            return Ok((flag, &env.off_variant, Reason::PrerequisiteFailed));
        }
        for rule in &env.rules {
            if rule.conditions.iter().all(|c| self.matches(c, ctx, false)) {
                let (variant, split) = self.serve(flag, &rule.serve, ctx)?;
                let reason = if split {
                    Reason::Split
                } else {
                    Reason::TargetingMatch
                };
                return Ok((flag, variant, reason));
            }
        }
        let (variant, split) = self.serve(flag, &env.default, ctx)?;
        let reason = if split {
            Reason::Split
        } else if env.rules.is_empty() && flag.prerequisites.is_empty() {
            Reason::Static
        } else {
            Reason::Default
        };
        Ok((flag, variant, reason))
    }

    /// Whether every prerequisite of `flag` holds. Cycles and over-deep chains are errors;
    /// a prerequisite that fails to evaluate for any other reason simply does not hold.
    fn prerequisites_hold<'s>(
        &'s self,
        flag: &'s Flag,
        env: &str,
        ctx: &Context,
        chain: &mut Chain<'s>,
    ) -> Result<bool, EvalError> {
        if chain.keys[..chain.len].contains(&flag.key.as_str()) {
            return Err(EvalError::PrerequisiteCycle);
        }
        if chain.len == MAX_PREREQUISITE_DEPTH {
            chain.too_deep = true;
            return Err(EvalError::General(format!(
                "prerequisites nested deeper than {MAX_PREREQUISITE_DEPTH} levels"
            )));
        }
        chain.keys[chain.len] = &flag.key;
        chain.len += 1;
        let mut result = Ok(true);
        for pre in &flag.prerequisites {
            match self.resolve(env, &pre.flag, ctx, chain) {
                Ok((_, variant, _)) if pre.variants.iter().any(|v| v == variant) => {}
                Ok(_) => {
                    result = Ok(false);
                    break;
                }
                Err(e) if e == EvalError::PrerequisiteCycle || chain.too_deep => {
                    result = Err(e);
                    break;
                }
                Err(_) => {
                    result = Ok(false);
                    break;
                }
            }
        }
        chain.len -= 1;
        result
    }

    /// The variant `serve` picks and whether it was a rollout.
    fn serve<'s>(
        &self,
        flag: &Flag,
        serve: &'s Serve,
        ctx: &Context,
    ) -> Result<(&'s str, bool), EvalError> {
        match serve {
            Serve::Variant { variant } => Ok((variant, false)),
            Serve::Rollout { rollout, bucket_by } => {
                let attribute = bucket_by.as_deref().unwrap_or(TARGETING_KEY);
                let value: Cow<'_, str> = match ctx.get(attribute) {
                    Some(Attr::Str(s)) => Cow::Borrowed(s),
                    Some(Attr::Json(Value::String(s))) => Cow::Borrowed(s),
                    Some(Attr::Json(Value::Number(n))) => Cow::Owned(n.to_string()),
                    _ => Cow::Borrowed(""),
                };
                if value.is_empty() {
                    return Err(if attribute == TARGETING_KEY {
                        EvalError::TargetingKeyMissing
                    } else {
                        EvalError::General(format!(
                            "rollout bucket attribute `{attribute}` is missing or not a non-empty string or number"
                        ))
                    });
                }
                let index =
                    bucket::fractional_by(&flag.key, &value, rollout.len(), |i| rollout[i].weight)
                        .ok_or_else(|| {
                            EvalError::General("rollout has no weight to split".to_owned())
                        })?;
                Ok((&rollout[index].variant, true))
            }
        }
    }

    /// Whether condition `c` holds for `ctx`. Inside a segment, segment ops never match.
    fn matches(&self, c: &Condition, ctx: &Context, inside_segment: bool) -> bool {
        match c.op {
            Op::InSegment => !inside_segment && self.in_any_segment(&c.values, ctx),
            Op::NotInSegment => !inside_segment && !self.in_any_segment(&c.values, ctx),
            op => ctx
                .get(&c.attribute)
                .is_some_and(|a| attr_matches(op, a, &c.values)),
        }
    }

    fn in_any_segment(&self, keys: &[Value], ctx: &Context) -> bool {
        keys.iter().any(|k| {
            k.as_str()
                .and_then(|k| self.segments.get(k))
                .is_some_and(|s| s.conditions.iter().all(|c| self.matches(c, ctx, true)))
        })
    }
}

/// A borrowed attribute value: the targeting key or a JSON value (never null).
#[derive(Clone, Copy)]
enum Attr<'a> {
    Str(&'a str),
    Json(&'a Value),
}

impl<'a> Attr<'a> {
    fn as_str(self) -> Option<&'a str> {
        match self {
            Attr::Str(s) => Some(s),
            Attr::Json(v) => v.as_str(),
        }
    }

    fn as_f64(self) -> Option<f64> {
        match self {
            Attr::Str(_) => None,
            Attr::Json(v) => v.as_f64(),
        }
    }

    fn as_array(self) -> Option<&'a [Value]> {
        match self {
            Attr::Str(_) => None,
            Attr::Json(v) => v.as_array().map(Vec::as_slice),
        }
    }

    fn equals(self, other: &Value) -> bool {
        match self {
            Attr::Str(s) => other.as_str() == Some(s),
            Attr::Json(v) => json_eq(v, other),
        }
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        _ => a == b,
    }
}

fn number_eq(x: &Number, y: &Number) -> bool {
    if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
        return x == y;
    }
    x.as_f64() == y.as_f64()
}

/// Whether `values` contains `a` (for an array attribute: any of its elements).
fn among(a: Attr<'_>, values: &[Value]) -> bool {
    match a.as_array() {
        Some(items) => items
            .iter()
            .any(|item| values.iter().any(|v| json_eq(item, v))),
        None => values.iter().any(|v| a.equals(v)),
    }
}

/// An attribute op (not a segment op) applied to a present attribute.
fn attr_matches(op: Op, a: Attr<'_>, values: &[Value]) -> bool {
    let first = values.first();
    match op {
        Op::Eq => first.is_some_and(|v| a.equals(v)),
        Op::Neq => first.is_some_and(|v| !a.equals(v)),
        Op::In => among(a, values),
        Op::NotIn => !among(a, values),
        Op::Contains => match (a.as_array(), first) {
            (Some(items), Some(v)) => items.iter().any(|item| json_eq(item, v)),
            (None, Some(v)) => match (a.as_str(), v.as_str()) {
                (Some(s), Some(needle)) => s.contains(needle),
                _ => false,
            },
            (_, None) => false,
        },
        Op::StartsWith | Op::EndsWith => match (a.as_str(), first.and_then(Value::as_str)) {
            (Some(s), Some(affix)) if op == Op::StartsWith => s.starts_with(affix),
            (Some(s), Some(affix)) => s.ends_with(affix),
            _ => false,
        },
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => match (a.as_f64(), first.and_then(Value::as_f64)) {
            (Some(x), Some(y)) => match op {
                Op::Gt => x > y,
                Op::Gte => x >= y,
                Op::Lt => x < y,
                _ => x <= y,
            },
            _ => false,
        },
        Op::SemverEq | Op::SemverGt | Op::SemverLt => {
            let x = a.as_str().and_then(Version::parse);
            let y = first.and_then(Value::as_str).and_then(Version::parse);
            match (x, y) {
                (Some(x), Some(y)) => match op {
                    Op::SemverEq => x == y,
                    Op::SemverGt => x > y,
                    _ => x < y,
                },
                _ => false,
            }
        }
        Op::Exists => true,
        Op::InSegment | Op::NotInSegment => false,
    }
}
