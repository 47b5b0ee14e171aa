//! diesel table definitions. Registry tables are schema-qualified (`admin.*`); tenant tables
//! are deliberately unqualified so that they resolve only inside a tenant transaction
//! (see `db::TenantDb`). Keep in step with `migrations/`.

pub mod admin {
    diesel::table! {
        admin.database_connections (id) {
            id -> Uuid,
            region -> Text,
            kind -> Text,
            host -> Text,
            port -> Integer,
            database_name -> Text,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        admin.tenants (id) {
            id -> Uuid,
            slug -> Text,
            display_name -> Text,
            region -> Text,
            isolation -> Text,
            status -> Text,
            connection_id -> Uuid,
            schema_name -> Text,
            schema_version -> BigInt,
            last_error -> Nullable<Text>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            suspended_at -> Nullable<Timestamptz>,
            identity_mode -> Text,
            identity_realm -> Nullable<Text>,
            identity_org_alias -> Nullable<Text>,
            identity_org_id -> Nullable<Text>,
            identity_linked -> Bool,
            identity_created -> Array<Text>,
            identity_ready -> Bool,
        }
    }

    diesel::joinable!(tenants -> database_connections (connection_id));
    diesel::allow_tables_to_appear_in_same_query!(tenants, database_connections);
}

pub mod tenant {
    diesel::table! {
        credentials (user_id) {
            user_id -> Uuid,
            password_hash -> Text,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        api_keys (id) {
            id -> Uuid,
            name -> Text,
            prefix -> Text,
            secret_hash -> Bytea,
            owner_id -> Uuid,
            scopes -> Array<Text>,
            created_at -> Timestamptz,
            expires_at -> Nullable<Timestamptz>,
            last_used_at -> Nullable<Timestamptz>,
            revoked_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        users (id) {
            id -> Uuid,
            subject -> Text,
            username -> Nullable<Text>,
            email -> Nullable<Text>,
            display_name -> Nullable<Text>,
            status -> Text,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            last_seen_at -> Timestamptz,
        }
    }

    diesel::table! {
        notes (id) {
            id -> Uuid,
            title -> Text,
            body -> Text,
            external_id -> Nullable<Text>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::allow_tables_to_appear_in_same_query!(api_keys, users, credentials);
}
