//! Bulk writes: up to [`BULK_MAX`] creates, updates and deletes of one type, atomically (one
//! transaction; the first failure rolls all back) or one by one (a transaction each).

use diesel_async::AsyncPgConnection;

use super::resources::{Edit, create_in, edit_in, set_deleted_in};
use super::{Ctx, invalid};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::resources::{
    BulkError, BulkOp, BulkRequest, BulkResponse, BulkResult, Resource, ResourceInput,
    ResourcePatch,
};

pub const BULK_MAX: usize = 1000;

/// How a bulk transaction ended without committing its work: it never opened, its commit
/// failed, or the operation at an index failed (and rolled the transaction back).
enum BulkFailure {
    Begin(ApiError),
    Commit(ApiError),
    Op(usize, ApiError),
}

impl From<crate::db::DbError> for BulkFailure {
    fn from(e: crate::db::DbError) -> Self {
        BulkFailure::Begin(e.into())
    }
}

impl From<diesel::result::Error> for BulkFailure {
    fn from(e: diesel::result::Error) -> Self {
        BulkFailure::Commit(e.into())
    }
}

fn bulk_error(e: &ApiError) -> BulkError {
    BulkError {
        type_uri: e.code.type_uri(),
        detail: e.detail.to_string(),
        errors: e.errors.clone(),
    }
}

async fn bulk_one(
    ctx: &Ctx<'_>,
    conn: &mut AsyncPgConnection,
    type_name: &str,
    op: &BulkOp,
) -> ApiResult<(u16, Resource)> {
    match op {
        BulkOp::Create {
            data,
            tags,
            category,
            team_id,
        } => {
            ctx.caller
                .require("resources", "create", crate::rbac::perm::Scope::Own)?;
            let input = ResourceInput {
                data: data.clone(),
                tags: tags.clone(),
                category: category.clone(),
                team_id: *team_id,
            };
            Ok((201, create_in(ctx, conn, type_name, &input).await?))
        }
        BulkOp::Update {
            id,
            if_match,
            data,
            tags,
            category,
        } => {
            let patch = ResourcePatch {
                data: data.clone(),
                tags: tags.clone(),
                category: category.clone(),
                team_id: None,
            };
            Ok((
                200,
                edit_in(
                    ctx,
                    conn,
                    type_name,
                    *id,
                    if_match.as_deref(),
                    Edit::Patch(&patch),
                )
                .await?,
            ))
        }
        BulkOp::Delete { id, if_match } => Ok((
            200,
            set_deleted_in(ctx, conn, type_name, *id, if_match.as_deref(), true).await?,
        )),
    }
}

/// Applies many operations, atomically (one transaction; the first failure rolls all back)
/// or one by one (each in its own transaction).
pub async fn bulk(ctx: &Ctx<'_>, type_name: &str, req: &BulkRequest) -> ApiResult<BulkResponse> {
    if req.operations.is_empty() || req.operations.len() > BULK_MAX {
        return Err(invalid(
            "/operations",
            format!("must hold 1-{BULK_MAX} operations"),
        ));
    }
    let mut results = Vec::with_capacity(req.operations.len());
    if !req.atomic {
        for (index, op) in req.operations.iter().enumerate() {
            let r = ctx
                .db()
                .transaction(async |tx| {
                    bulk_one(ctx, tx.conn(), type_name, op)
                        .await
                        .map_err(|e| BulkFailure::Op(index, e))
                })
                .await;
            results.push(match r {
                Ok((status, resource)) => BulkResult {
                    index,
                    status,
                    resource: Some(resource),
                    error: None,
                },
                // No transaction, no answer for the rest either: the request fails.
                Err(BulkFailure::Begin(e)) => return Err(e),
                Err(BulkFailure::Commit(e) | BulkFailure::Op(_, e)) => BulkResult {
                    index,
                    status: e.code.status(),
                    resource: None,
                    error: Some(bulk_error(&e)),
                },
            });
        }
        return Ok(BulkResponse {
            atomic: false,
            committed: true,
            results,
        });
    }
    let applied = ctx
        .db()
        .transaction(async |tx| {
            for (index, op) in req.operations.iter().enumerate() {
                let (status, resource) = bulk_one(ctx, tx.conn(), type_name, op)
                    .await
                    .map_err(|e| BulkFailure::Op(index, e))?;
                results.push(BulkResult {
                    index,
                    status,
                    resource: Some(resource),
                    error: None,
                });
            }
            Ok(())
        })
        .await;
    let (at, e) = match applied {
        Ok(()) => {
            return Ok(BulkResponse {
                atomic: true,
                committed: true,
                results,
            });
        }
        Err(BulkFailure::Begin(e) | BulkFailure::Commit(e)) => return Err(e),
        Err(BulkFailure::Op(at, e)) => (at, e),
    };
    // Server-side failures are not the caller's to see item by item.
    if e.code.is_server_error() {
        return Err(ApiError::internal("bulk operation failed"));
    }
    let not_applied = |index: usize, detail: String| BulkResult {
        index,
        status: 424,
        resource: None,
        error: Some(BulkError {
            type_uri: ErrorCode::Conflict.type_uri(),
            detail,
            errors: Vec::new(),
        }),
    };
    let mut out: Vec<BulkResult> = (0..at)
        .map(|i| not_applied(i, format!("rolled back: operation {at} failed")))
        .collect();
    out.push(BulkResult {
        index: at,
        status: e.code.status(),
        resource: None,
        error: Some(bulk_error(&e)),
    });
    out.extend(
        (at + 1..req.operations.len())
            .map(|i| not_applied(i, format!("not attempted: operation {at} failed"))),
    );
    Ok(BulkResponse {
        atomic: true,
        committed: false,
        results: out,
    })
}
