//! Validation of flag and segment documents against a tenant's known attributes, segments,
//! flags and environments.
//!
//! Owns every rule a stored flag must satisfy, reported all at once as [`Problem`]s that point
//! (RFC 6901 JSON pointers) at the offending part of the document. It must never stop at the
//! first problem, never mutate or normalize the document, and never look anything up itself:
//! everything it checks against comes in through [`ValidationContext`].

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::eval::TARGETING_KEY;
use crate::model::{Condition, Flag, Op, Segment, Serve};
use crate::semver::Version;

/// Most variants a flag may have.
pub const MAX_VARIANTS: usize = 50;
/// Most rules an environment may have.
pub const MAX_RULES: usize = 100;
/// Most conditions a rule (or a segment) may have.
pub const MAX_CONDITIONS: usize = 20;

/// One thing wrong with a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// JSON pointer into the document, e.g. `/environments/production/rules/0/serve/rollout`.
    pub pointer: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer, self.message)
    }
}

/// What a flag is validated against.
#[derive(Debug, Clone, Copy)]
pub struct ValidationContext<'a> {
    /// Context attributes conditions may use, besides `targetingKey`.
    pub known_attributes: &'a BTreeSet<String>,
    /// Keys of the tenant's segments.
    pub segments: &'a BTreeSet<String>,
    /// Other flags' keys and their variant names, for prerequisites.
    pub flags: &'a HashMap<String, Vec<String>>,
    /// The tenant's environment names; every flag must define exactly these.
    pub environments: &'a [String],
}

/// Escapes one JSON-pointer reference token (`~` → `~0`, `/` → `~1`).
fn token(s: &str) -> Cow<'_, str> {
    if s.contains(['~', '/']) {
        Cow::Owned(s.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(s)
    }
}

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            pointer: pointer.into(),
            message: message.into(),
        });
    }
}

/// Whether `s` matches `^[a-z0-9][a-z0-9._-]{0,127}$` (flag and segment keys).
fn valid_key(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

/// Whether `s` matches `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$` (variant names).
fn valid_variant_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every problem with `flag`, in document order; empty when it is valid.
pub fn validate(flag: &Flag, ctx: &ValidationContext<'_>) -> Vec<Problem> {
    let mut p = Problems(Vec::new());

    if !valid_key(&flag.key) {
        p.add(
            "/key",
            format!(
                "flag key `{}` must be 1 to 128 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit",
                flag.key
            ),
        );
    }

    if flag.variants.is_empty() {
        p.add("/variants", "a flag needs at least one variant");
    } else if flag.variants.len() > MAX_VARIANTS {
        p.add(
            "/variants",
            format!(
                "a flag has at most {MAX_VARIANTS} variants, found {}",
                flag.variants.len()
            ),
        );
    }
    for (name, value) in &flag.variants {
        let at = format!("/variants/{}", token(name));
        if !valid_variant_name(name) {
            p.add(
                at.clone(),
                format!(
                    "variant name `{name}` must be 1 to 64 characters of A-Z, a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
                ),
            );
        }
        if !flag.kind.matches(value) {
            p.add(
                at,
                format!(
                    "variant `{name}` must be a {} (the flag's kind), found {}",
                    flag.kind.as_str(),
                    json_type(value)
                ),
            );
        }
    }
    let has_variant = |v: &str| flag.variants.contains_key(v);

    for (i, pre) in flag.prerequisites.iter().enumerate() {
        let at = format!("/prerequisites/{i}");
        let target = if pre.flag == flag.key {
            p.add(
                format!("{at}/flag"),
                "a flag cannot be its own prerequisite",
            );
            None
        } else if let Some(variants) = ctx.flags.get(&pre.flag) {
            Some(variants)
        } else {
            p.add(format!("{at}/flag"), format!("unknown flag `{}`", pre.flag));
            None
        };
        if flag.prerequisites[..i].iter().any(|o| o.flag == pre.flag) {
            p.add(
                format!("{at}/flag"),
                format!("flag `{}` is already a prerequisite", pre.flag),
            );
        }
        if pre.variants.is_empty() {
            p.add(
                format!("{at}/variants"),
                "a prerequisite needs at least one variant",
            );
        }
        if let Some(known) = target {
            for (j, v) in pre.variants.iter().enumerate() {
                if !known.contains(v) {
                    p.add(
                        format!("{at}/variants/{j}"),
                        format!("unknown variant `{v}` of flag `{}`", pre.flag),
                    );
                }
            }
        }
    }

    for env in ctx.environments {
        if !flag.environments.contains_key(env) {
            p.add("/environments", format!("missing environment `{env}`"));
        }
    }
    for (name, env) in &flag.environments {
        let at = format!("/environments/{}", token(name));
        if !ctx.environments.iter().any(|e| e == name) {
            p.add(
                at.clone(),
                format!(
                    "unknown environment `{name}` (allowed: {})",
                    ctx.environments.join(", ")
                ),
            );
        }
        if !has_variant(&env.off_variant) {
            p.add(
                format!("{at}/off_variant"),
                format!("unknown variant `{}`", env.off_variant),
            );
        }
        check_serve(
            &mut p,
            &format!("{at}/default"),
            &env.default,
            &has_variant,
            ctx,
        );
        if env.rules.len() > MAX_RULES {
            p.add(
                format!("{at}/rules"),
                format!(
                    "an environment has at most {MAX_RULES} rules, found {}",
                    env.rules.len()
                ),
            );
        }
        for (i, rule) in env.rules.iter().enumerate() {
            let at = format!("{at}/rules/{i}");
            check_conditions(
                &mut p,
                &at,
                &rule.conditions,
                ctx.known_attributes,
                ctx.segments,
                false,
            );
            check_serve(
                &mut p,
                &format!("{at}/serve"),
                &rule.serve,
                &has_variant,
                ctx,
            );
        }
    }

    p.0
}

fn check_serve(
    p: &mut Problems,
    at: &str,
    serve: &Serve,
    has_variant: &dyn Fn(&str) -> bool,
    ctx: &ValidationContext<'_>,
) {
    match serve {
        Serve::Variant { variant } => {
            if !has_variant(variant) {
                p.add(
                    format!("{at}/variant"),
                    format!("unknown variant `{variant}`"),
                );
            }
        }
        Serve::Rollout { rollout, bucket_by } => {
            let at_rollout = format!("{at}/rollout");
            if rollout.is_empty() {
                p.add(at_rollout.clone(), "a rollout needs at least one variant");
            }
            let mut seen = HashSet::new();
            for (i, w) in rollout.iter().enumerate() {
                let at_variant = format!("{at_rollout}/{i}/variant");
                if !has_variant(&w.variant) {
                    p.add(
                        at_variant.clone(),
                        format!("unknown variant `{}`", w.variant),
                    );
                }
                if !seen.insert(w.variant.as_str()) {
                    p.add(
                        at_variant,
                        format!(
                            "variant `{}` appears more than once in the rollout",
                            w.variant
                        ),
                    );
                }
            }
            if !rollout.is_empty() {
                let total: u64 = rollout.iter().map(|w| u64::from(w.weight)).sum();
                if total > 100 {
                    p.add(
                        at_rollout,
                        format!("rollout weights add up to {total}%, above 100%"),
                    );
                } else if total < 100 {
                    p.add(
                        at_rollout,
                        format!("rollout weights add up to {total}%, below 100%"),
                    );
                }
            }
            if let Some(attribute) = bucket_by
                && !known_attribute(attribute, ctx.known_attributes)
            {
                p.add(
                    format!("{at}/bucket_by"),
                    format!("unknown attribute `{attribute}`"),
                );
            }
        }
    }
}

fn known_attribute(name: &str, known: &BTreeSet<String>) -> bool {
    name == TARGETING_KEY || known.contains(name)
}

fn check_conditions(
    p: &mut Problems,
    at: &str,
    conditions: &[Condition],
    known_attributes: &BTreeSet<String>,
    segments: &BTreeSet<String>,
    inside_segment: bool,
) {
    if conditions.is_empty() {
        p.add(
            format!("{at}/conditions"),
            "at least one condition is required",
        );
    } else if conditions.len() > MAX_CONDITIONS {
        p.add(
            format!("{at}/conditions"),
            format!(
                "at most {MAX_CONDITIONS} conditions are allowed, found {}",
                conditions.len()
            ),
        );
    }
    for (i, c) in conditions.iter().enumerate() {
        check_condition(
            p,
            &format!("{at}/conditions/{i}"),
            c,
            known_attributes,
            segments,
            inside_segment,
        );
    }
}

fn check_condition(
    p: &mut Problems,
    at: &str,
    c: &Condition,
    known_attributes: &BTreeSet<String>,
    segments: &BTreeSet<String>,
    inside_segment: bool,
) {
    let op = c.op.as_str();
    let values = &c.values;
    if c.op.is_segment_op() {
        if inside_segment {
            p.add(
                format!("{at}/op"),
                format!("`{op}` is not allowed inside a segment"),
            );
        }
    } else if !known_attribute(&c.attribute, known_attributes) {
        p.add(
            format!("{at}/attribute"),
            format!("unknown attribute `{}`", c.attribute),
        );
    }

    let exactly_one = |p: &mut Problems| -> Option<&Value> {
        if values.len() == 1 {
            Some(&values[0])
        } else {
            p.add(
                format!("{at}/values"),
                format!("`{op}` takes exactly one value, found {}", values.len()),
            );
            None
        }
    };
    match c.op {
        Op::Eq | Op::Neq | Op::Contains => {
            exactly_one(p);
        }
        Op::StartsWith | Op::EndsWith => {
            if let Some(v) = exactly_one(p)
                && !v.is_string()
            {
                p.add(
                    format!("{at}/values/0"),
                    format!("`{op}` needs a string, found {}", json_type(v)),
                );
            }
        }
        Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
            if let Some(v) = exactly_one(p)
                && !v.is_number()
            {
                p.add(
                    format!("{at}/values/0"),
                    format!("`{op}` needs a number, found {}", json_type(v)),
                );
            }
        }
        Op::SemverEq | Op::SemverGt | Op::SemverLt => {
            if let Some(v) = exactly_one(p)
                && v.as_str().and_then(Version::parse).is_none()
            {
                p.add(
                    format!("{at}/values/0"),
                    format!(
                        "`{op}` needs a semantic version like \"1.2.3\" or \"v2.0.0-rc.1\", found {v}"
                    ),
                );
            }
        }
        Op::In | Op::NotIn => {
            if values.is_empty() {
                p.add(
                    format!("{at}/values"),
                    format!("`{op}` needs at least one value"),
                );
            }
        }
        Op::InSegment | Op::NotInSegment => {
            if values.is_empty() {
                p.add(
                    format!("{at}/values"),
                    format!("`{op}` needs at least one segment key"),
                );
            }
            for (i, v) in values.iter().enumerate() {
                match v.as_str() {
                    Some(key) if segments.contains(key) => {}
                    Some(key) => p.add(
                        format!("{at}/values/{i}"),
                        format!("unknown segment `{key}`"),
                    ),
                    None => p.add(
                        format!("{at}/values/{i}"),
                        format!("a segment key must be a string, found {}", json_type(v)),
                    ),
                }
            }
        }
        Op::Exists => {
            if !values.is_empty() {
                p.add(format!("{at}/values"), "`exists` takes no values");
            }
        }
    }
}

/// Every problem with `segment`; `segments` are the tenant's segment keys (segment ops are
/// rejected inside a segment regardless).
pub fn validate_segment(
    segment: &Segment,
    known_attributes: &BTreeSet<String>,
    segments: &BTreeSet<String>,
) -> Vec<Problem> {
    let mut p = Problems(Vec::new());
    if !valid_key(&segment.key) {
        p.add(
            "/key",
            format!(
                "segment key `{}` must be 1 to 128 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit",
                segment.key
            ),
        );
    }
    check_conditions(
        &mut p,
        "",
        &segment.conditions,
        known_attributes,
        segments,
        true,
    );
    p.0
}

/// A prerequisite cycle among `flags` (flag key → its prerequisite flag keys), as the path
/// that closes it (`["a", "b", "a"]`; a self-reference is `["a", "a"]`), or `None`.
/// Deterministic: flags are explored in key order. Keys that are not in the map are ignored.
pub fn prerequisite_cycle(flags: &HashMap<String, Vec<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }

    fn visit<'a>(
        key: &'a str,
        flags: &'a HashMap<String, Vec<String>>,
        marks: &mut HashMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(key) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = path.iter().position(|k| *k == key).unwrap_or(0);
                let mut cycle: Vec<String> =
                    path[start..].iter().map(|k| (*k).to_owned()).collect();
                cycle.push(key.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(key, Mark::Visiting);
        path.push(key);
        let mut next: Vec<&str> = flags[key]
            .iter()
            .map(String::as_str)
            .filter(|k| flags.contains_key(*k))
            .collect();
        next.sort_unstable();
        for n in next {
            if let Some(cycle) = visit(n, flags, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(key, Mark::Done);
        None
    }

    let mut keys: Vec<&str> = flags.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut marks = HashMap::new();
    let mut path = Vec::new();
    keys.into_iter()
        .find_map(|k| visit(k, flags, &mut marks, &mut path))
}
