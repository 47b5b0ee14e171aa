//! Team templates: the platform's built-in ones and a tenant's own (their key, name and
//! spec checked before they are stored). Creating teams from a template is `tree`'s; never
//! runs SQL itself.

use serde_json::json;

use super::rules::{check_description, check_name, field};
use crate::audit::{self, Change};
use crate::db::TenantDb;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::rbac::Caller;
use crate::teams::repo;
use crate::teams::{TeamTemplate, TemplateChild, TemplateSpec};

/// The platform's team templates.
pub fn builtin_templates() -> Vec<TeamTemplate> {
    let child = |name: &str| TemplateChild {
        name: name.into(),
        roles: vec![],
        children: vec![],
    };
    vec![
        TeamTemplate {
            key: "department".into(),
            name: "Department".into(),
            description: "A department with leadership and operations teams".into(),
            spec: TemplateSpec {
                roles: vec![],
                children: vec![child("Leadership"), child("Operations")],
            },
            builtin: true,
        },
        TeamTemplate {
            key: "product-squad".into(),
            name: "Product squad".into(),
            description: "A cross-functional squad: engineering, design and product".into(),
            spec: TemplateSpec {
                roles: vec![],
                children: vec![child("Engineering"), child("Design"), child("Product")],
            },
            builtin: true,
        },
    ]
}

/// The platform's templates, then the tenant's own by key (a stored spec that no longer
/// parses is left out).
pub async fn templates(db: &TenantDb) -> ApiResult<Vec<TeamTemplate>> {
    let rows = db
        .transaction(async |tx| Ok::<_, ApiError>(repo::templates(tx.conn()).await?))
        .await?;
    let mut out = builtin_templates();
    out.extend(
        rows.into_iter()
            .filter_map(|(key, name, description, spec)| {
                Some(TeamTemplate {
                    key,
                    name,
                    description,
                    spec: serde_json::from_value(spec).ok()?,
                    builtin: false,
                })
            }),
    );
    Ok(out)
}

fn spec_size(children: &[TemplateChild], depth: usize) -> Option<usize> {
    if depth > 10 {
        return None;
    }
    let mut n = 0;
    for c in children {
        n += 1 + spec_size(&c.children, depth + 1)?;
    }
    Some(n)
}

pub async fn create_template(caller: &Caller, input: &TeamTemplate) -> ApiResult<TeamTemplate> {
    let mut b = input.key.bytes();
    if !(matches!(b.next(), Some(b'a'..=b'z'))
        && input.key.len() <= 63
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-'))
    {
        return Err(field("/key", "must be 1-63 of a-z, 0-9, _ and -"));
    }
    if builtin_templates().iter().any(|t| t.key == input.key) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "a platform template has this key",
        ));
    }
    let name = check_name(&input.name, "/name")?;
    let description = check_description(&input.description)?;
    match spec_size(&input.spec.children, 1) {
        Some(n) if n <= 200 => {}
        _ => {
            return Err(field(
                "/spec",
                "at most 200 sub-teams, nested at most 10 deep",
            ));
        }
    }
    caller
        .db()
        .transaction(async |tx| {
            let conn = tx.conn();
            let spec = serde_json::to_value(&input.spec).expect("serialisable");
            repo::insert_template(conn, &input.key, &name, &description, &spec).await?;
            audit::record(
                conn,
                &caller.actor,
                Change {
                    action: "team_template.created",
                    target_type: "team_template",
                    target_id: Some(input.key.clone()),
                    data: json!({"name": name, "spec": spec}),
                },
            )
            .await?;
            Ok::<_, ApiError>(())
        })
        .await?;
    Ok(TeamTemplate {
        key: input.key.clone(),
        name,
        description,
        spec: input.spec.clone(),
        builtin: false,
    })
}
