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

    diesel::table! {
        admin.audit_heads (tenant_id) {
            tenant_id -> Uuid,
            seq -> BigInt,
            hash -> Bytea,
            signature -> Bytea,
            updated_at -> Timestamptz,
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
            api_version -> Nullable<Text>,
            rate_per_sec -> Nullable<Float8>,
            rate_burst -> Nullable<Int4>,
            quota_credits -> Nullable<Int8>,
            quota_refill_amount -> Nullable<Int8>,
            quota_refill_secs -> Nullable<Int4>,
            quota_left -> Nullable<Int8>,
            quota_period -> Nullable<Int8>,
        }
    }

    diesel::table! {
        oauth_clients (id) {
            id -> Uuid,
            client_id -> Text,
            keycloak_id -> Text,
            name -> Text,
            owner_id -> Uuid,
            scopes -> Array<Text>,
            created_at -> Timestamptz,
            rotated_at -> Nullable<Timestamptz>,
            revoked_at -> Nullable<Timestamptz>,
            api_version -> Nullable<Text>,
            rate_per_sec -> Nullable<Float8>,
            rate_burst -> Nullable<Int4>,
            quota_credits -> Nullable<Int8>,
            quota_refill_amount -> Nullable<Int8>,
            quota_refill_secs -> Nullable<Int4>,
            quota_left -> Nullable<Int8>,
            quota_period -> Nullable<Int8>,
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
            attributes -> Jsonb,
            preferences -> Jsonb,
            erased_at -> Nullable<Timestamptz>,
            erased_subject -> Nullable<Bytea>,
        }
    }

    diesel::table! {
        user_attribute_schema (singleton) {
            singleton -> Bool,
            schema -> Jsonb,
            self_editable -> Array<Text>,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        password_resets (user_id) {
            user_id -> Uuid,
            token_hash -> Bytea,
            created_at -> Timestamptz,
            expires_at -> Timestamptz,
            used_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        invitations (id) {
            id -> Uuid,
            email -> Text,
            roles -> Array<Text>,
            teams -> Array<Uuid>,
            message -> Nullable<Text>,
            locale -> Text,
            status -> Text,
            token_hash -> Nullable<Bytea>,
            invited_by -> Nullable<Uuid>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            expires_at -> Timestamptz,
            sent_at -> Nullable<Timestamptz>,
            opened_at -> Nullable<Timestamptz>,
            accepted_at -> Nullable<Timestamptz>,
            accepted_by -> Nullable<Uuid>,
            revoked_at -> Nullable<Timestamptz>,
            mail_status -> Text,
            mail_attempts -> Integer,
            mail_error -> Nullable<Text>,
            mail_due_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        invitation_templates (locale) {
            locale -> Text,
            subject -> Text,
            text_body -> Text,
            html_body -> Nullable<Text>,
            updated_at -> Timestamptz,
            updated_by -> Nullable<Uuid>,
        }
    }

    diesel::table! {
        settings (singleton) {
            singleton -> Bool,
            version -> Integer,
            state -> Jsonb,
            updated_at -> Timestamptz,
            updated_by -> Nullable<Uuid>,
        }
    }

    diesel::table! {
        settings_versions (version) {
            version -> Integer,
            state -> Jsonb,
            diff -> Jsonb,
            author_id -> Nullable<Uuid>,
            author_name -> Nullable<Text>,
            reason -> Text,
            at -> Timestamptz,
        }
    }

    diesel::table! {
        settings_logo (singleton) {
            singleton -> Bool,
            etag -> Text,
            image -> Bytea,
            updated_at -> Timestamptz,
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

    diesel::table! {
        roles (id) {
            id -> Uuid,
            key -> Text,
            name -> Text,
            description -> Text,
            permissions -> Array<Text>,
            template -> Nullable<Text>,
            is_default -> Bool,
            protected -> Bool,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        role_parents (role_id, parent_id) {
            role_id -> Uuid,
            parent_id -> Uuid,
        }
    }

    diesel::table! {
        user_roles (user_id, role_id) {
            user_id -> Uuid,
            role_id -> Uuid,
            granted_by -> Nullable<Uuid>,
            created_at -> Timestamptz,
            expires_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        user_grants (id) {
            id -> Uuid,
            user_id -> Uuid,
            permission -> Text,
            effect -> Text,
            reason -> Text,
            granted_by -> Nullable<Uuid>,
            created_at -> Timestamptz,
            expires_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        permission_resources (resource) {
            resource -> Text,
            actions -> Array<Text>,
            description -> Text,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        teams (id) {
            id -> Uuid,
            parent_id -> Nullable<Uuid>,
            path -> Array<Uuid>,
            name -> Text,
            description -> Text,
            template -> Nullable<Text>,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        team_members (team_id, user_id) {
            team_id -> Uuid,
            user_id -> Uuid,
            team_role -> Text,
            joined_at -> Timestamptz,
        }
    }

    diesel::table! {
        team_roles (team_id, role_id) {
            team_id -> Uuid,
            role_id -> Uuid,
            granted_by -> Nullable<Uuid>,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        team_membership_log (id) {
            id -> BigInt,
            team_id -> Uuid,
            user_id -> Uuid,
            change -> Text,
            at -> Timestamptz,
        }
    }

    diesel::table! {
        team_shares (id) {
            id -> Uuid,
            team_id -> Uuid,
            shared_with -> Uuid,
            resource_type -> Text,
            resource_id -> Text,
            access -> Text,
            created_by -> Nullable<Uuid>,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        team_templates (key) {
            key -> Text,
            name -> Text,
            description -> Text,
            spec -> Jsonb,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        audit_log (id) {
            id -> Uuid,
            at -> Timestamptz,
            actor_type -> Text,
            actor_id -> Nullable<Text>,
            action -> Text,
            target_type -> Text,
            target_id -> Nullable<Text>,
            data -> Jsonb,
            request_id -> Nullable<Text>,
            ip -> Nullable<Text>,
            user_agent -> Nullable<Text>,
            seq -> Nullable<BigInt>,
            hash -> Nullable<Bytea>,
        }
    }

    diesel::table! {
        audit_checkpoints (seq) {
            seq -> BigInt,
            hash -> Bytea,
            signature -> Bytea,
            at -> Timestamptz,
        }
    }

    diesel::table! {
        audit_redactions (seq) {
            seq -> BigInt,
            entry_id -> Uuid,
            prev -> Bytea,
            hash -> Bytea,
            content -> Bytea,
            signature -> Bytea,
            reason -> Text,
            at -> Timestamptz,
        }
    }

    diesel::table! {
        user_avatars (user_id) {
            user_id -> Uuid,
            etag -> Text,
            small -> Bytea,
            large -> Bytea,
            updated_at -> Timestamptz,
        }
    }

    diesel::table! {
        audit_anchors (seq) {
            seq -> BigInt,
            hash -> Bytea,
            signature -> Bytea,
            pruned -> BigInt,
            at -> Timestamptz,
        }
    }

    diesel::table! {
        audit_settings (id) {
            id -> Bool,
            syslog_host -> Nullable<Text>,
            syslog_port -> Nullable<Integer>,
            syslog_tls -> Bool,
            forwarded_seq -> BigInt,
            forward_error -> Nullable<Text>,
            forwarded_at -> Nullable<Timestamptz>,
            updated_at -> Timestamptz,
            syslog_ca_pem -> Nullable<Text>,
        }
    }

    diesel::table! {
        outbox (seq) {
            seq -> BigInt,
            txid -> BigInt,
            topic -> Text,
            aggregate_type -> Text,
            aggregate_id -> Text,
            payload -> Jsonb,
            at -> Timestamptz,
        }
    }

    diesel::table! {
        resource_types (name) {
            name -> Text,
            title -> Text,
            description -> Text,
            version -> Integer,
            schema -> Jsonb,
            searchable -> Array<Text>,
            filterable -> Array<Text>,
            sortable -> Array<Text>,
            relationships -> Jsonb,
            source -> Text,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            plugin -> Nullable<Text>,
        }
    }

    diesel::table! {
        resource_type_versions (name, version) {
            name -> Text,
            version -> Integer,
            definition -> Jsonb,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        resources (id) {
            id -> Uuid,
            #[sql_name = "type"]
            type_ -> Text,
            data -> Jsonb,
            tags -> Array<Text>,
            category -> Nullable<Text>,
            owner_id -> Uuid,
            team_id -> Nullable<Uuid>,
            version -> Integer,
            created_at -> Timestamptz,
            updated_at -> Timestamptz,
            deleted_at -> Nullable<Timestamptz>,
        }
    }

    diesel::table! {
        resource_versions (resource_id, version) {
            resource_id -> Uuid,
            version -> Integer,
            data -> Jsonb,
            tags -> Array<Text>,
            category -> Nullable<Text>,
            deleted -> Bool,
            change -> Text,
            actor_id -> Nullable<Text>,
            at -> Timestamptz,
        }
    }

    diesel::table! {
        resource_shares (id) {
            id -> Uuid,
            resource_id -> Uuid,
            user_id -> Nullable<Uuid>,
            team_id -> Nullable<Uuid>,
            access -> Text,
            created_by -> Nullable<Uuid>,
            created_at -> Timestamptz,
        }
    }

    diesel::table! {
        resource_links (from_id, kind, to_id) {
            from_id -> Uuid,
            kind -> Text,
            to_id -> Uuid,
            created_by -> Nullable<Uuid>,
            created_at -> Timestamptz,
        }
    }

    diesel::joinable!(role_parents -> roles (role_id));
    diesel::joinable!(user_roles -> roles (role_id));
    diesel::joinable!(team_roles -> roles (role_id));
    diesel::joinable!(team_members -> teams (team_id));
    diesel::joinable!(team_members -> users (user_id));
    diesel::joinable!(password_resets -> users (user_id));
    diesel::allow_tables_to_appear_in_same_query!(
        api_keys,
        oauth_clients,
        users,
        credentials,
        password_resets,
        invitations,
        roles,
        role_parents,
        user_roles,
        user_grants,
        teams,
        team_members,
        team_roles,
        team_shares,
        resources,
        resource_versions,
        resource_shares,
        resource_links
    );
}
