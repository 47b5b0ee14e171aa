//! SQL for roles, assignments and grants, and the one query that gathers everything feeding a
//! user's permissions. Runs only inside a tenant `Tx` (unqualified table names); holds no
//! rules (validation, delegation checks, audit and invalidation are the service's) and never
//! opens or finishes a transaction itself.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Jsonb, Text, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use uuid::Uuid;

use super::perm::{Inputs, Perm, RoleDef, Via};
use crate::schema::tenant::{
    permission_resources, role_parents, roles, user_grants, user_roles, users,
};

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = roles)]
pub struct RoleRow {
    pub id: Uuid,
    pub key: String,
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub template: Option<String>,
    pub is_default: bool,
    pub protected: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Doc {
    #[diesel(sql_type = Jsonb)]
    doc: Value,
}

/// Everything feeding `user`'s permissions, in one round trip: roles held directly, by
/// default, through the identity provider (`idp_roles`, role keys) and through teams (the
/// user's teams and every team above them), the closure of their parents, live grants, and
/// the teams `team` scope reaches (the user's teams and every team below them), the user's
/// teams, and their ancestry (those teams and every team above them).
pub async fn load_inputs(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    idp_roles: &[String],
) -> QueryResult<Inputs> {
    let row: Doc = diesel::sql_query(
        r#"
WITH RECURSIVE
  member AS (
    SELECT t.id, t.path FROM team_members m JOIN teams t ON t.id = m.team_id WHERE m.user_id = $1
  ),
  above AS (SELECT DISTINCT unnest(path) AS id FROM member),
  below AS (
    SELECT t.id FROM teams t
    WHERE t.path && (SELECT coalesce(array_agg(id), '{}') FROM member)
  ),
  held AS (
    SELECT role_id, 'direct' AS via, NULL::uuid AS team FROM user_roles
      WHERE user_id = $1 AND (expires_at IS NULL OR expires_at > now())
    UNION ALL SELECT id, 'default', NULL FROM roles WHERE is_default
    UNION ALL SELECT id, 'idp', NULL FROM roles WHERE key = ANY($2)
    UNION ALL SELECT tr.role_id, 'team', tr.team_id FROM team_roles tr JOIN above a ON a.id = tr.team_id
  ),
  closure AS (
    SELECT role_id AS id FROM held
    UNION
    SELECT p.parent_id FROM role_parents p JOIN closure c ON p.role_id = c.id
  )
SELECT jsonb_build_object(
  'held', (SELECT coalesce(jsonb_agg(jsonb_build_array(role_id, via, team)), '[]') FROM held),
  'roles', (SELECT coalesce(jsonb_agg(jsonb_build_object(
              'id', r.id, 'key', r.key, 'permissions', r.permissions,
              'parents', (SELECT coalesce(array_agg(parent_id), '{}') FROM role_parents WHERE role_id = r.id))), '[]')
            FROM roles r JOIN closure c ON c.id = r.id),
  'grants', (SELECT coalesce(jsonb_agg(jsonb_build_array(id, permission, effect)), '[]') FROM user_grants
             WHERE user_id = $1 AND (expires_at IS NULL OR expires_at > now())),
  'teams', (SELECT coalesce(jsonb_agg(id), '[]') FROM below),
  'member_of', (SELECT coalesce(jsonb_agg(id), '[]') FROM member),
  'ancestry', (SELECT coalesce(jsonb_agg(id ORDER BY id), '[]') FROM above)
) AS doc
"#,
    )
    .bind::<SqlUuid, _>(user)
    .bind::<Array<Text>, _>(idp_roles)
    .get_result(conn)
    .await?;
    Ok(inputs_from(&row.doc))
}

fn uuid_of(v: &Value) -> Option<Uuid> {
    v.as_str().and_then(|s| Uuid::parse_str(s).ok())
}

fn inputs_from(doc: &Value) -> Inputs {
    let mut inputs = Inputs::default();
    let list = |k: &str| doc[k].as_array().cloned().unwrap_or_default();
    for h in list("held") {
        let Some(role) = uuid_of(&h[0]) else { continue };
        let via = match h[1].as_str() {
            Some("default") => Via::Default,
            Some("idp") => Via::IdentityProvider,
            Some("team") => match uuid_of(&h[2]) {
                Some(team) => Via::Team {
                    team: crate::ids::TeamId(team),
                },
                None => continue,
            },
            _ => Via::Direct,
        };
        inputs.held.push((role, via));
    }
    for r in list("roles") {
        let Some(id) = uuid_of(&r["id"]) else {
            continue;
        };
        let permissions = r["permissions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str()?.parse::<Perm>().ok())
            .collect();
        let parents = r["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(uuid_of)
            .collect();
        inputs.roles.insert(
            id,
            RoleDef {
                key: r["key"].as_str().unwrap_or_default().to_string(),
                permissions,
                parents,
            },
        );
    }
    for g in list("grants") {
        let (Some(id), Some(perm)) = (
            uuid_of(&g[0]),
            g[1].as_str().and_then(|p| p.parse::<Perm>().ok()),
        ) else {
            continue;
        };
        inputs.grants.push((id, perm, g[2] == "allow"));
    }
    inputs.teams = list("teams").iter().filter_map(uuid_of).collect();
    inputs.member_of = list("member_of").iter().filter_map(uuid_of).collect();
    inputs.ancestry = list("ancestry").iter().filter_map(uuid_of).collect();
    inputs.held.sort();
    inputs
}

/// Serialises role-graph changes of one tenant (cycle checks must see each other).
pub async fn lock_roles(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':roles'))")
        .execute(conn)
        .await?;
    Ok(())
}

/// The columns of a new role.
pub struct NewRoleRow<'a> {
    pub id: Uuid,
    pub key: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub permissions: Vec<String>,
    pub template: Option<&'a str>,
    pub is_default: bool,
}

pub async fn insert_role(conn: &mut AsyncPgConnection, role: &NewRoleRow<'_>) -> QueryResult<()> {
    diesel::insert_into(roles::table)
        .values((
            roles::id.eq(role.id),
            roles::key.eq(role.key),
            roles::name.eq(role.name),
            roles::description.eq(role.description),
            roles::permissions.eq(&role.permissions),
            roles::template.eq(role.template),
            roles::is_default.eq(role.is_default),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts `role` (protected or not) unless a role with its key exists: seeding.
pub async fn insert_role_unless_key_exists(
    conn: &mut AsyncPgConnection,
    role: &NewRoleRow<'_>,
    protected: bool,
) -> QueryResult<()> {
    diesel::insert_into(roles::table)
        .values((
            roles::id.eq(role.id),
            roles::key.eq(role.key),
            roles::name.eq(role.name),
            roles::description.eq(role.description),
            roles::permissions.eq(&role.permissions),
            roles::template.eq(role.template),
            roles::is_default.eq(role.is_default),
            roles::protected.eq(protected),
        ))
        .on_conflict(roles::key)
        .do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn role_count(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
    roles::table.count().get_result(conn).await
}

/// Sets the given fields of a role (absent ones stay) and stamps `updated_at`.
pub async fn update_role(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    name: Option<String>,
    description: Option<String>,
    permissions: Option<Vec<String>>,
    is_default: Option<bool>,
) -> QueryResult<usize> {
    diesel::update(roles::table.filter(roles::id.eq(id)))
        .set((
            name.map(|n| roles::name.eq(n)),
            description.map(|d| roles::description.eq(d)),
            permissions.map(|p| roles::permissions.eq(p)),
            is_default.map(|d| roles::is_default.eq(d)),
            roles::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await
}

/// Deletes a role (its assignments, parent edges and team roles go with it).
pub async fn delete_role(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::delete(roles::table.filter(roles::id.eq(id)))
        .execute(conn)
        .await
}

pub async fn list_roles(mut conn: &AsyncPgConnection) -> QueryResult<Vec<RoleRow>> {
    roles::table
        .select(RoleRow::as_select())
        .order(roles::key.asc())
        .load(&mut conn)
        .await
}

pub async fn role_by_key(mut conn: &AsyncPgConnection, key: &str) -> QueryResult<Option<RoleRow>> {
    roles::table
        .filter(roles::key.eq(key))
        .select(RoleRow::as_select())
        .first(&mut conn)
        .await
        .optional()
}

pub async fn roles_by_keys(
    conn: &mut AsyncPgConnection,
    keys: &[String],
) -> QueryResult<Vec<RoleRow>> {
    roles::table
        .filter(roles::key.eq_any(keys))
        .select(RoleRow::as_select())
        .load(conn)
        .await
}

/// (role, parent key) for every edge.
pub async fn parent_keys(mut conn: &AsyncPgConnection) -> QueryResult<Vec<(Uuid, String)>> {
    role_parents::table
        .inner_join(roles::table.on(roles::id.eq(role_parents::parent_id)))
        .select((role_parents::role_id, roles::key))
        .order(roles::key.asc())
        .load(&mut conn)
        .await
}

/// Every role reachable from `ids` through parents, as resolution inputs.
pub async fn role_closure(
    conn: &mut AsyncPgConnection,
    ids: &[Uuid],
) -> QueryResult<std::collections::HashMap<Uuid, RoleDef>> {
    let row: Doc = diesel::sql_query(
        r#"
WITH RECURSIVE closure AS (
  SELECT unnest($1::uuid[]) AS id
  UNION
  SELECT p.parent_id FROM role_parents p JOIN closure c ON p.role_id = c.id
)
SELECT jsonb_build_object('held', '[]'::jsonb, 'grants', '[]'::jsonb, 'teams', '[]'::jsonb,
  'roles', (SELECT coalesce(jsonb_agg(jsonb_build_object(
              'id', r.id, 'key', r.key, 'permissions', r.permissions,
              'parents', (SELECT coalesce(array_agg(parent_id), '{}') FROM role_parents WHERE role_id = r.id))), '[]')
            FROM roles r JOIN closure c ON c.id = r.id)) AS doc
"#,
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .get_result(conn)
    .await?;
    Ok(inputs_from(&row.doc).roles)
}

/// Whether `parent` reaches `role` through parent edges (so adding role → parent would close
/// a cycle).
pub async fn reaches(conn: &mut AsyncPgConnection, parent: Uuid, role: Uuid) -> QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    let row: Found = diesel::sql_query(
        r#"
WITH RECURSIVE up AS (
  SELECT $1::uuid AS id
  UNION
  SELECT p.parent_id FROM role_parents p JOIN up ON p.role_id = up.id
)
SELECT EXISTS (SELECT 1 FROM up WHERE id = $2) AS found
"#,
    )
    .bind::<SqlUuid, _>(parent)
    .bind::<SqlUuid, _>(role)
    .get_result(conn)
    .await?;
    Ok(row.found)
}

pub async fn set_parents(
    conn: &mut AsyncPgConnection,
    role: Uuid,
    parents: &[Uuid],
) -> QueryResult<()> {
    diesel::delete(role_parents::table.filter(role_parents::role_id.eq(role)))
        .execute(conn)
        .await?;
    let rows: Vec<_> = parents
        .iter()
        .map(|p| {
            (
                role_parents::role_id.eq(role),
                role_parents::parent_id.eq(*p),
            )
        })
        .collect();
    diesel::insert_into(role_parents::table)
        .values(rows)
        .execute(conn)
        .await?;
    Ok(())
}

/// The tenant's registered resource types: (resource, actions).
pub async fn registered_resources(
    conn: &mut AsyncPgConnection,
) -> QueryResult<Vec<(String, Vec<String>)>> {
    permission_resources::table
        .select((
            permission_resources::resource,
            permission_resources::actions,
        ))
        .load(conn)
        .await
}

/// Which of `ids` are users of the tenant who are not deleted.
pub async fn live_user_ids(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> QueryResult<Vec<Uuid>> {
    users::table
        .filter(users::id.eq_any(ids))
        .filter(users::status.ne("deleted"))
        .select(users::id)
        .load(conn)
        .await
}

/// Whether `user` is a user of the tenant who is not deleted.
pub async fn user_exists(conn: &mut AsyncPgConnection, user: Uuid) -> QueryResult<bool> {
    let n: i64 = users::table
        .filter(users::id.eq(user))
        .filter(users::status.ne("deleted"))
        .count()
        .get_result(conn)
        .await?;
    Ok(n > 0)
}

/// Gives `role` to `users`; an existing assignment takes the new expiry and granter.
pub async fn assign(
    conn: &mut AsyncPgConnection,
    role: Uuid,
    users: &[Uuid],
    granted_by: Uuid,
    expires_at: Option<DateTime<Utc>>,
) -> QueryResult<usize> {
    let rows: Vec<_> = users
        .iter()
        .map(|u| {
            (
                user_roles::user_id.eq(*u),
                user_roles::role_id.eq(role),
                user_roles::granted_by.eq(Some(granted_by)),
                user_roles::expires_at.eq(expires_at),
            )
        })
        .collect();
    diesel::insert_into(user_roles::table)
        .values(rows)
        .on_conflict((user_roles::user_id, user_roles::role_id))
        .do_update()
        .set((
            user_roles::expires_at.eq(expires_at),
            user_roles::granted_by.eq(Some(granted_by)),
        ))
        .execute(conn)
        .await
}

/// Gives `role` to `user` with no granter and no expiry (an existing assignment loses its
/// expiry).
pub async fn assign_without_expiry(
    conn: &mut AsyncPgConnection,
    role: Uuid,
    user: Uuid,
) -> QueryResult<usize> {
    diesel::insert_into(user_roles::table)
        .values((user_roles::user_id.eq(user), user_roles::role_id.eq(role)))
        .on_conflict((user_roles::user_id, user_roles::role_id))
        .do_update()
        .set(user_roles::expires_at.eq(None::<DateTime<Utc>>))
        .execute(conn)
        .await
}

/// Takes `role` from `user`; 0 when they did not hold it directly.
pub async fn unassign(conn: &mut AsyncPgConnection, role: Uuid, user: Uuid) -> QueryResult<usize> {
    diesel::delete(
        user_roles::table
            .filter(user_roles::role_id.eq(role))
            .filter(user_roles::user_id.eq(user)),
    )
    .execute(conn)
    .await
}

/// How many users hold `role` directly.
pub async fn holder_count(conn: &mut AsyncPgConnection, role: Uuid) -> QueryResult<i64> {
    user_roles::table
        .filter(user_roles::role_id.eq(role))
        .count()
        .get_result(conn)
        .await
}

/// (user, expires) of those holding `role` directly, by user.
pub async fn holders(
    conn: &mut AsyncPgConnection,
    role: Uuid,
) -> QueryResult<Vec<(Uuid, Option<DateTime<Utc>>)>> {
    user_roles::table
        .filter(user_roles::role_id.eq(role))
        .select((user_roles::user_id, user_roles::expires_at))
        .order(user_roles::user_id.asc())
        .load(conn)
        .await
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = user_grants)]
pub struct GrantRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub permission: String,
    pub effect: String,
    pub reason: String,
    pub granted_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

pub async fn grants_of(conn: &mut AsyncPgConnection, user: Uuid) -> QueryResult<Vec<GrantRow>> {
    user_grants::table
        .filter(user_grants::user_id.eq(user))
        .select(GrantRow::as_select())
        .order(user_grants::id.asc())
        .load(conn)
        .await
}

/// The columns of a new grant or deny.
pub struct NewGrantRow<'a> {
    pub id: Uuid,
    pub user: Uuid,
    pub permission: String,
    pub effect: &'a str,
    pub reason: &'a str,
    pub granted_by: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
}

pub async fn insert_grant(
    conn: &mut AsyncPgConnection,
    grant: &NewGrantRow<'_>,
) -> QueryResult<()> {
    diesel::insert_into(user_grants::table)
        .values((
            user_grants::id.eq(grant.id),
            user_grants::user_id.eq(grant.user),
            user_grants::permission.eq(&grant.permission),
            user_grants::effect.eq(grant.effect),
            user_grants::reason.eq(grant.reason),
            user_grants::granted_by.eq(Some(grant.granted_by)),
            user_grants::expires_at.eq(grant.expires_at),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn grant(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<GrantRow> {
    user_grants::table
        .find(id)
        .select(GrantRow::as_select())
        .first(conn)
        .await
}

/// The grant `id` if it is `user`'s.
pub async fn grant_of(
    conn: &mut AsyncPgConnection,
    user: Uuid,
    id: Uuid,
) -> QueryResult<Option<GrantRow>> {
    user_grants::table
        .filter(user_grants::id.eq(id))
        .filter(user_grants::user_id.eq(user))
        .select(GrantRow::as_select())
        .first(conn)
        .await
        .optional()
}

pub async fn delete_grant(conn: &mut AsyncPgConnection, id: Uuid) -> QueryResult<usize> {
    diesel::delete(user_grants::table.find(id))
        .execute(conn)
        .await
}

/// (role key, expires) of the roles assigned to `user` directly.
pub async fn roles_of(
    conn: &mut AsyncPgConnection,
    user: Uuid,
) -> QueryResult<Vec<(String, Option<DateTime<Utc>>)>> {
    user_roles::table
        .inner_join(roles::table)
        .filter(user_roles::user_id.eq(user))
        .select((roles::key, user_roles::expires_at))
        .order(roles::key.asc())
        .load(conn)
        .await
}
