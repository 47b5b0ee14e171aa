//! Checks the role and grant changes share: keys, permission strings against the catalog,
//! bounded text fields, that users exist; and the shape of their audit entries. No SQL beyond
//! what it is handed a connection for; never opens a transaction.

use diesel_async::AsyncPgConnection;
use uuid::Uuid;

use crate::audit::{self, Actor, Change};
use crate::error::{ApiError, ApiResult, FieldError};
use crate::rbac::perm::{Catalog, Perm};
use crate::rbac::repo;

pub(super) fn is_key(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(b'a'..=b'z'))
        && s.len() <= 63
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Validates permission strings against the catalog, collecting field errors under `pointer`.
pub(super) fn validate_perms(
    catalog: &Catalog,
    perms: &[String],
    pointer: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<Perm> {
    if perms.len() > 200 {
        errors.push(FieldError {
            pointer: pointer.into(),
            message: "at most 200 permissions".into(),
        });
    }
    perms
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match catalog.validate(p) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(FieldError {
                    pointer: format!("{pointer}/{i}"),
                    message: e.to_string(),
                });
                None
            }
        })
        .collect()
}

pub(super) fn text_field(
    value: &str,
    max: usize,
    min: usize,
    pointer: &str,
    errors: &mut Vec<FieldError>,
) -> String {
    let v = value.trim().to_string();
    let n = v.chars().count();
    if n < min || n > max {
        errors.push(FieldError {
            pointer: pointer.into(),
            message: format!("must be {min}-{max} characters"),
        });
    }
    v
}

/// Checks every id names a user of the tenant who is not deleted.
pub(super) async fn existing_users(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> ApiResult<()> {
    let found = repo::live_user_ids(conn, ids).await?;
    if let Some((i, _)) = ids.iter().enumerate().find(|(_, id)| !found.contains(id)) {
        return Err(ApiError::validation(vec![FieldError {
            pointer: format!("/user_ids/{i}"),
            message: "no such user".into(),
        }]));
    }
    Ok(())
}

/// The audit entry of a change, in the caller's transaction.
pub(super) async fn audit(
    conn: &mut AsyncPgConnection,
    actor: &Actor,
    action: &str,
    target_type: &str,
    target_id: String,
    data: serde_json::Value,
) -> ApiResult<()> {
    audit::record(
        conn,
        actor,
        Change {
            action,
            target_type,
            target_id: Some(target_id),
            data,
        },
    )
    .await?;
    Ok(())
}
