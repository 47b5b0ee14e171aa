//! SQL for the directory export: the roles and teams of a page of users.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::tenant::{roles, team_members, user_roles};

/// Role keys held directly by each of `users` (unexpired).
pub async fn roles_of(
    mut conn: &AsyncPgConnection,
    users: &[Uuid],
) -> QueryResult<HashMap<Uuid, Vec<String>>> {
    let rows: Vec<(Uuid, String)> = user_roles::table
        .inner_join(roles::table)
        .filter(user_roles::user_id.eq_any(users))
        .filter(
            user_roles::expires_at
                .is_null()
                .or(user_roles::expires_at.gt(diesel::dsl::now)),
        )
        .select((user_roles::user_id, roles::key))
        .order((user_roles::user_id, roles::key))
        .load(&mut conn)
        .await?;
    let mut out: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (user, key) in rows {
        out.entry(user).or_default().push(key);
    }
    Ok(out)
}

/// Teams each of `users` is a member of.
pub async fn teams_of(
    mut conn: &AsyncPgConnection,
    users: &[Uuid],
) -> QueryResult<HashMap<Uuid, Vec<Uuid>>> {
    let rows: Vec<(Uuid, Uuid)> = team_members::table
        .filter(team_members::user_id.eq_any(users))
        .select((team_members::user_id, team_members::team_id))
        .order((team_members::user_id, team_members::team_id))
        .load(&mut conn)
        .await?;
    let mut out: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (user, team) in rows {
        out.entry(user).or_default().push(team);
    }
    Ok(out)
}

/// The attributes of each of `users`.
pub async fn attributes_of(
    mut conn: &AsyncPgConnection,
    users: &[Uuid],
) -> QueryResult<HashMap<Uuid, serde_json::Value>> {
    use crate::schema::tenant::users;
    Ok(users::table
        .filter(users::id.eq_any(users))
        .select((users::id, users::attributes))
        .load::<(Uuid, serde_json::Value)>(&mut conn)
        .await?
        .into_iter()
        .collect())
}
