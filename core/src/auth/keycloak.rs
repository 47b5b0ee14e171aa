//! Keycloak admin REST client: provisions each tenant's identity home (a realm of its own, or
//! an organization in the region's shared realm) and manages users there.
//!
//! Owns every call to Keycloak's admin API and the admin token they use. Every operation is
//! idempotent (an existing realm, client, role or organization is reused), so provisioning can
//! be re-run after a failure. Never logs the admin password or tokens; never sits on the
//! request hot path (token validation uses only cached keys, see `jwks`).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::config::{AuthConfig, KeycloakConfig};

/// Why a Keycloak call failed.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    #[error("Keycloak is unreachable: {0}")]
    Unreachable(String),
    #[error("Keycloak answered {status} to {what}: {body}")]
    Status {
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("Keycloak returned an unexpected response to {0}")]
    Unexpected(String),
}

/// Attribute marking a realm or organization as provisioned for one tenant, so a retried
/// provisioning recognises its own work and never adopts someone else's.
pub const OWNER_ATTRIBUTE: &str = "neotenant.tenant";

/// Whether an existing realm or organization was made by the owner we asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    Ours,
    Foreign,
}

/// Roles every tenant realm (and shared realm) has; `member` is given to every new user.
pub const TENANT_ROLES: &[&str] = &["owner", "admin", "member", "viewer"];
pub const DEFAULT_ROLE: &str = "member";

pub struct KeycloakAdmin {
    http: reqwest::Client,
    base: String,
    config: KeycloakConfig,
    audience: String,
    app_client: String,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl KeycloakAdmin {
    pub fn new(config: &KeycloakConfig, auth: &AuthConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .build()
            .expect("HTTP client builds");
        Self {
            http,
            base: config.url.trim_end_matches('/').to_string(),
            config: config.clone(),
            audience: auth.audience.clone(),
            app_client: auth.app_client_id.clone(),
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// The issuer (`iss`) of tokens from `realm`.
    pub fn issuer(&self, realm: &str) -> String {
        format!("{}/realms/{realm}", self.base)
    }

    /// The token endpoint of `realm` (for clients and tests).
    pub fn token_endpoint(&self, realm: &str) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer(realm))
    }

    async fn admin_token(&self, refresh: bool) -> Result<String, IdpError> {
        let mut slot = self.token.lock().await;
        if !refresh
            && let Some((token, until)) = slot.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let res = self
            .http
            .post(self.token_endpoint(&self.config.admin_realm))
            .form(&[
                ("grant_type", "password"),
                ("client_id", self.config.admin_client_id.as_str()),
                ("username", self.config.admin_username.as_str()),
                ("password", self.config.admin_password.expose()),
            ])
            .send()
            .await
            .map_err(|e| IdpError::Unreachable(e.to_string()))?;
        let status = res.status();
        let body: Value = res
            .json()
            .await
            .map_err(|e| IdpError::Unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(IdpError::Status {
                what: "admin login".into(),
                status,
                body: body.get("error").map(|e| e.to_string()).unwrap_or_default(),
            });
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| IdpError::Unexpected("admin login".into()))?
            .to_string();
        let lifetime = body["expires_in"].as_u64().unwrap_or(60);
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(15).max(5));
        *slot = Some((token.clone(), until));
        Ok(token)
    }

    /// One admin call; retried once with a fresh admin token on 401.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, String), IdpError> {
        for attempt in 0..2 {
            let token = self.admin_token(attempt > 0).await?;
            let mut req = self
                .http
                .request(method.clone(), format!("{}/admin/realms{path}", self.base))
                .bearer_auth(token);
            if let Some(body) = body {
                req = req.json(body);
            }
            let res = req
                .send()
                .await
                .map_err(|e| IdpError::Unreachable(e.to_string()))?;
            let status = res.status();
            let text = res
                .text()
                .await
                .map_err(|e| IdpError::Unreachable(e.to_string()))?;
            if status == StatusCode::UNAUTHORIZED && attempt == 0 {
                continue;
            }
            return Ok((status, text));
        }
        unreachable!("the loop returns on its second pass")
    }

    /// A call whose success statuses are listed; anything else is an error.
    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        ok: &[StatusCode],
    ) -> Result<(StatusCode, String), IdpError> {
        let what = format!("{method} {path}");
        let (status, text) = self.call(method, path, body).await?;
        if ok.contains(&status) {
            Ok((status, text))
        } else {
            Err(IdpError::Status {
                what,
                status,
                body: text.chars().take(300).collect(),
            })
        }
    }

    /// DELETE where a missing target counts as done (every delete here is idempotent).
    async fn delete(&self, path: &str) -> Result<(), IdpError> {
        self.expect(
            Method::DELETE,
            path,
            None,
            &[StatusCode::NO_CONTENT, StatusCode::NOT_FOUND],
        )
        .await?;
        Ok(())
    }

    async fn get_json(&self, path: &str) -> Result<Option<Value>, IdpError> {
        let (status, text) = self
            .expect(
                Method::GET,
                path,
                None,
                &[StatusCode::OK, StatusCode::NOT_FOUND],
            )
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|_| IdpError::Unexpected(format!("GET {path}")))
    }

    /// A GET whose answer is a JSON array; a missing resource is an empty list.
    async fn get_list(&self, path: &str) -> Result<Vec<Value>, IdpError> {
        Ok(self
            .get_json(path)
            .await?
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default())
    }

    pub async fn realm_exists(&self, realm: &str) -> Result<bool, IdpError> {
        Ok(self.get_json(&format!("/{realm}")).await?.is_some())
    }

    /// Creates `realm` tagged with `owner` unless it exists; says whether the realm is ours.
    pub async fn ensure_realm(
        &self,
        realm: &str,
        display_name: &str,
        organizations: bool,
        owner: &str,
    ) -> Result<Ownership, IdpError> {
        let body = json!({
            "realm": realm,
            "displayName": display_name,
            "enabled": true,
            "organizationsEnabled": organizations,
            "bruteForceProtected": true,
            "revokeRefreshToken": true,
            "refreshTokenMaxReuse": 0,
            "attributes": {OWNER_ATTRIBUTE: owner},
        });
        let (status, _) = self
            .expect(
                Method::POST,
                "",
                Some(&body),
                &[StatusCode::CREATED, StatusCode::CONFLICT],
            )
            .await?;
        if status == StatusCode::CREATED {
            return Ok(Ownership::Ours);
        }
        let existing = self
            .get_json(&format!("/{realm}"))
            .await?
            .unwrap_or(Value::Null);
        Ok(if existing["attributes"][OWNER_ATTRIBUTE] == owner {
            Ownership::Ours
        } else {
            Ownership::Foreign
        })
    }

    /// Makes sure `realm` has the API's client, the end-user client (whose tokens carry the
    /// API audience, and in a tenant's own realm a `tenant` claim) and the tenant roles.
    /// Returns what it created (`client:<id>`, `role:<name>`), for linked realms whose
    /// additions must be removed again when the tenant goes.
    pub async fn ensure_realm_setup(
        &self,
        realm: &str,
        tenant_claim: Option<&str>,
    ) -> Result<Vec<String>, IdpError> {
        let mut created = Vec::new();
        let api = json!({
            "clientId": self.audience,
            "name": "NeoTenantApi",
            "publicClient": false,
            "standardFlowEnabled": false,
            "directAccessGrantsEnabled": false,
            "serviceAccountsEnabled": false,
        });
        if self.ensure_client(realm, &self.audience, &api).await? {
            created.push(format!("client:{}", self.audience));
        }
        let mut mappers = vec![json!({
            "name": "api-audience",
            "protocol": "openid-connect",
            "protocolMapper": "oidc-audience-mapper",
            "config": {"included.client.audience": self.audience, "access.token.claim": "true", "id.token.claim": "false"}
        })];
        if let Some(slug) = tenant_claim {
            mappers.push(json!({
                "name": "tenant",
                "protocol": "openid-connect",
                "protocolMapper": "oidc-hardcoded-claim-mapper",
                "config": {"claim.name": "tenant", "claim.value": slug, "jsonType.label": "String",
                           "access.token.claim": "true", "id.token.claim": "true", "userinfo.token.claim": "true"}
            }));
        }
        let app = json!({
            "clientId": self.app_client,
            "name": "NeoTenantApi applications",
            "publicClient": true,
            "standardFlowEnabled": true,
            "directAccessGrantsEnabled": true,
            "redirectUris": ["http://localhost/*", "http://127.0.0.1/*"],
            "webOrigins": ["+"],
            "attributes": {"pkce.code.challenge.method": "S256"},
            "protocolMappers": mappers,
        });
        if self.ensure_client(realm, &self.app_client, &app).await? {
            created.push(format!("client:{}", self.app_client));
        }
        for role in TENANT_ROLES {
            let (status, _) = self
                .expect(
                    Method::POST,
                    &format!("/{realm}/roles"),
                    Some(&json!({"name": role, "description": format!("NeoTenantApi {role}")})),
                    &[StatusCode::CREATED, StatusCode::CONFLICT],
                )
                .await?;
            if status == StatusCode::CREATED {
                created.push(format!("role:{role}"));
            }
        }
        // New users get `member`.
        let member = self
            .get_json(&format!("/{realm}/roles/{DEFAULT_ROLE}"))
            .await?
            .ok_or_else(|| IdpError::Unexpected("member role".into()))?;
        self.expect(
            Method::POST,
            &format!("/{realm}/roles/default-roles-{realm}/composites"),
            Some(&json!([member])),
            &[
                StatusCode::NO_CONTENT,
                StatusCode::CONFLICT,
                StatusCode::NOT_FOUND,
            ],
        )
        .await?;
        Ok(created)
    }

    pub async fn client_exists(&self, realm: &str, client_id: &str) -> Result<bool, IdpError> {
        Ok(self.client_uuid(realm, client_id).await?.is_some())
    }

    async fn client_uuid(&self, realm: &str, client_id: &str) -> Result<Option<String>, IdpError> {
        Ok(self
            .get_json(&format!("/{realm}/clients?clientId={client_id}"))
            .await?
            .and_then(|v| v[0]["id"].as_str().map(str::to_string)))
    }

    /// Creates the client unless it exists; returns whether this call created it.
    async fn ensure_client(
        &self,
        realm: &str,
        client_id: &str,
        body: &Value,
    ) -> Result<bool, IdpError> {
        if self.client_uuid(realm, client_id).await?.is_some() {
            return Ok(false);
        }
        let (status, _) = self
            .expect(
                Method::POST,
                &format!("/{realm}/clients"),
                Some(body),
                &[StatusCode::CREATED, StatusCode::CONFLICT],
            )
            .await?;
        Ok(status == StatusCode::CREATED)
    }

    /// Creates a confidential client for the client-credentials grant only, with `secret`, the
    /// API's audience and a `tenant` claim of `slug` (what ties its tokens to one tenant, also
    /// in a shared realm). Returns Keycloak's id of the client.
    pub async fn create_service_client(
        &self,
        realm: &str,
        client_id: &str,
        name: &str,
        secret: &str,
        slug: &str,
    ) -> Result<String, IdpError> {
        let body = json!({
            "clientId": client_id,
            "name": name,
            "publicClient": false,
            "clientAuthenticatorType": "client-secret",
            "secret": secret,
            "standardFlowEnabled": false,
            "implicitFlowEnabled": false,
            "directAccessGrantsEnabled": false,
            "serviceAccountsEnabled": true,
            "attributes": {"access.token.lifespan": "300"},
            "protocolMappers": [
                {"name": "api-audience", "protocol": "openid-connect",
                 "protocolMapper": "oidc-audience-mapper",
                 "config": {"included.custom.audience": self.audience,
                            "access.token.claim": "true", "id.token.claim": "false"}},
                {"name": "tenant", "protocol": "openid-connect",
                 "protocolMapper": "oidc-hardcoded-claim-mapper",
                 "config": {"claim.name": "tenant", "claim.value": slug, "jsonType.label": "String",
                            "access.token.claim": "true", "id.token.claim": "false",
                            "userinfo.token.claim": "false"}}
            ],
        });
        self.expect(
            Method::POST,
            &format!("/{realm}/clients"),
            Some(&body),
            &[StatusCode::CREATED],
        )
        .await?;
        self.client_uuid(realm, client_id)
            .await?
            .ok_or_else(|| IdpError::Unexpected("client created but not found".into()))
    }

    /// Replaces a client's secret.
    pub async fn set_client_secret(
        &self,
        realm: &str,
        uuid: &str,
        secret: &str,
    ) -> Result<(), IdpError> {
        let mut client = self
            .get_json(&format!("/{realm}/clients/{uuid}"))
            .await?
            .ok_or_else(|| IdpError::Unexpected("the client is gone".into()))?;
        client["secret"] = json!(secret);
        self.expect(
            Method::PUT,
            &format!("/{realm}/clients/{uuid}"),
            Some(&client),
            &[StatusCode::NO_CONTENT],
        )
        .await?;
        Ok(())
    }

    /// Deletes a client (its tokens can no longer be obtained); a missing one is done.
    pub async fn delete_client(&self, realm: &str, uuid: &str) -> Result<(), IdpError> {
        self.delete(&format!("/{realm}/clients/{uuid}")).await
    }

    /// Removes one thing `ensure_realm_setup` created (`client:<id>` or `role:<name>`).
    pub async fn remove_created(&self, realm: &str, item: &str) -> Result<(), IdpError> {
        let ok = [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND];
        if let Some(client_id) = item.strip_prefix("client:") {
            if let Some(uuid) = self.client_uuid(realm, client_id).await? {
                self.expect(
                    Method::DELETE,
                    &format!("/{realm}/clients/{uuid}"),
                    None,
                    &ok,
                )
                .await?;
            }
        } else if let Some(role) = item.strip_prefix("role:") {
            self.expect(Method::DELETE, &format!("/{realm}/roles/{role}"), None, &ok)
                .await?;
        }
        Ok(())
    }

    /// Deletes `realm`; a missing realm is not an error.
    pub async fn delete_realm(&self, realm: &str) -> Result<(), IdpError> {
        self.delete(&format!("/{realm}")).await
    }

    /// The organization with `alias` in `realm`, if any: its id and owner tag. Organizations
    /// we create are named after their alias, so one exact name search finds them; a linked
    /// organization named otherwise is found by scanning the realm's organizations.
    pub async fn find_organization(
        &self,
        realm: &str,
        alias: &str,
    ) -> Result<Option<(String, Option<String>)>, IdpError> {
        // Lists ask for brief representations: a full one loads each organization's
        // attributes lazily, and Keycloak answers 400 when another client deletes an
        // organization of the page meanwhile. The owner tag is read from the one match.
        let pick = |found: &Value| {
            found
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["alias"] == alias)
                .and_then(|o| o["id"].as_str().map(str::to_string))
        };
        let mut hit = pick(
            &self
                .get_json(&format!(
                    "/{realm}/organizations?search={alias}&exact=true&briefRepresentation=true"
                ))
                .await?
                .unwrap_or(Value::Null),
        );
        let mut first = 0;
        while hit.is_none() {
            let page = self
                .get_json(&format!(
                    "/{realm}/organizations?first={first}&max=100&briefRepresentation=true"
                ))
                .await?
                .unwrap_or(Value::Null);
            hit = pick(&page);
            if hit.is_none() && page.as_array().map_or(0, Vec::len) < 100 {
                return Ok(None);
            }
            first += 100;
        }
        let Some(id) = hit else { return Ok(None) };
        // Deleted between the listing and now: it is gone.
        let Some(org) = self
            .get_json(&format!("/{realm}/organizations/{id}"))
            .await?
        else {
            return Ok(None);
        };
        let owner = org["attributes"][OWNER_ATTRIBUTE][0]
            .as_str()
            .map(str::to_string);
        Ok(Some((id, owner)))
    }

    /// Creates the organization `alias` tagged with `owner` unless it exists; returns its id
    /// and whether it is ours.
    pub async fn ensure_organization(
        &self,
        realm: &str,
        alias: &str,
        name: &str,
        owner: &str,
    ) -> Result<(String, Ownership), IdpError> {
        if self.find_organization(realm, alias).await?.is_none() {
            self.expect(
                Method::POST,
                &format!("/{realm}/organizations"),
                Some(
                    &json!({"name": alias, "alias": alias, "description": name, "enabled": true,
                             "attributes": {OWNER_ATTRIBUTE: [owner]}}),
                ),
                &[StatusCode::CREATED, StatusCode::CONFLICT],
            )
            .await?;
        }
        let (id, tag) = self
            .find_organization(realm, alias)
            .await?
            .ok_or_else(|| IdpError::Unexpected("organization created but not found".into()))?;
        let ownership = if tag.as_deref() == Some(owner) {
            Ownership::Ours
        } else {
            Ownership::Foreign
        };
        Ok((id, ownership))
    }

    pub async fn delete_organization(&self, realm: &str, id: &str) -> Result<(), IdpError> {
        self.delete(&format!("/{realm}/organizations/{id}")).await
    }

    /// Creates a user; `Ok(None)` when the username or email is taken. Returns the user id.
    pub async fn create_user(
        &self,
        realm: &str,
        representation: &Value,
    ) -> Result<Option<String>, IdpError> {
        let (status, _) = self
            .expect(
                Method::POST,
                &format!("/{realm}/users"),
                Some(representation),
                &[StatusCode::CREATED, StatusCode::CONFLICT],
            )
            .await?;
        if status == StatusCode::CONFLICT {
            return Ok(None);
        }
        let username = representation["username"].as_str().unwrap_or_default();
        let q: String = url::form_urlencoded::byte_serialize(username.as_bytes()).collect();
        let users = self
            .get_json(&format!("/{realm}/users?username={q}&exact=true"))
            .await?
            .unwrap_or(Value::Null);
        users[0]["id"]
            .as_str()
            .map(|id| Some(id.to_string()))
            .ok_or_else(|| IdpError::Unexpected("user created but not found".into()))
    }

    /// Creates a user with a password (or finds the existing one); returns the user id.
    pub async fn ensure_user(
        &self,
        realm: &str,
        username: &str,
        email: &str,
        password: &str,
    ) -> Result<String, IdpError> {
        let representation = json!({
            "username": username, "email": email, "emailVerified": true, "enabled": true,
            "firstName": username, "lastName": "User",
            "credentials": [{"type": "password", "value": password, "temporary": false}],
        });
        if let Some(id) = self.create_user(realm, &representation).await? {
            return Ok(id);
        }
        self.find_user(realm, username)
            .await?
            .ok_or_else(|| IdpError::Unexpected("user exists but was not found".into()))
    }

    pub async fn add_organization_member(
        &self,
        realm: &str,
        org_id: &str,
        user_id: &str,
    ) -> Result<(), IdpError> {
        self.expect(
            Method::POST,
            &format!("/{realm}/organizations/{org_id}/members"),
            Some(&Value::String(user_id.to_string())),
            &[StatusCode::CREATED, StatusCode::CONFLICT],
        )
        .await?;
        Ok(())
    }

    pub async fn delete_user(&self, realm: &str, user_id: &str) -> Result<(), IdpError> {
        self.delete(&format!("/{realm}/users/{user_id}")).await
    }

    /// Exchanges a refresh token at `realm`'s token endpoint through the end-user client.
    /// `Ok(None)` when Keycloak refuses it (invalid, expired, or reused after rotation).
    pub async fn refresh(
        &self,
        realm: &str,
        refresh_token: &str,
        scope: &str,
    ) -> Result<Option<Value>, IdpError> {
        let res = self
            .http
            .post(self.token_endpoint(realm))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", self.app_client.as_str()),
                ("refresh_token", refresh_token),
                ("scope", scope),
            ])
            .send()
            .await
            .map_err(|e| IdpError::Unreachable(e.to_string()))?;
        let status = res.status();
        let body: Value = res
            .json()
            .await
            .map_err(|e| IdpError::Unreachable(e.to_string()))?;
        if status.is_success() {
            Ok(Some(body))
        } else if status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED {
            Ok(None)
        } else {
            Err(IdpError::Status {
                what: "refresh".into(),
                status,
                body: body["error"].to_string(),
            })
        }
    }

    /// One page of a realm's users (realm mode) or of an organization's members.
    pub async fn list_users(
        &self,
        realm: &str,
        org_id: Option<&str>,
        first: usize,
        max: usize,
    ) -> Result<Vec<Value>, IdpError> {
        let path = match org_id {
            Some(org) => format!("/{realm}/organizations/{org}/members?first={first}&max={max}"),
            None => format!("/{realm}/users?first={first}&max={max}&briefRepresentation=false"),
        };
        self.get_list(&path).await
    }

    /// Changes a user's representation fields (e.g. `{"email": …}` or `{"enabled": false}`).
    pub async fn update_user(
        &self,
        realm: &str,
        user_id: &str,
        fields: &Value,
    ) -> Result<(), IdpError> {
        self.expect(
            Method::PUT,
            &format!("/{realm}/users/{user_id}"),
            Some(fields),
            &[StatusCode::NO_CONTENT],
        )
        .await?;
        Ok(())
    }

    /// The id of the user whose username or email is `login`, if exactly one matches.
    pub async fn find_user(&self, realm: &str, login: &str) -> Result<Option<String>, IdpError> {
        let q: String = url::form_urlencoded::byte_serialize(login.as_bytes()).collect();
        for field in ["username", "email"] {
            let found = self
                .get_json(&format!("/{realm}/users?{field}={q}&exact=true"))
                .await?
                .unwrap_or(Value::Null);
            if let Some([one]) = found.as_array().map(Vec::as_slice) {
                return Ok(one["id"].as_str().map(str::to_string));
            }
        }
        Ok(None)
    }

    /// Withdraws a user's membership of an organization.
    pub async fn remove_organization_member(
        &self,
        realm: &str,
        org_id: &str,
        user_id: &str,
    ) -> Result<(), IdpError> {
        self.delete(&format!(
            "/{realm}/organizations/{org_id}/members/{user_id}"
        ))
        .await
    }

    /// Whether the user belongs to the organization.
    pub async fn is_member(
        &self,
        realm: &str,
        org_id: &str,
        user_id: &str,
    ) -> Result<bool, IdpError> {
        let orgs = self
            .get_json(&format!(
                "/{realm}/organizations/members/{user_id}/organizations"
            ))
            .await?
            .unwrap_or(Value::Null);
        Ok(orgs
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["id"] == org_id))
    }

    /// Has Keycloak mail the user a link to set a new password.
    pub async fn send_password_reset(&self, realm: &str, user_id: &str) -> Result<(), IdpError> {
        self.expect(
            Method::PUT,
            &format!(
                "/{realm}/users/{user_id}/execute-actions-email?client_id={}&lifespan=900",
                self.app_client
            ),
            Some(&json!(["UPDATE_PASSWORD"])),
            &[StatusCode::NO_CONTENT],
        )
        .await?;
        Ok(())
    }

    /// Identity providers of a realm, or those linked to an organization.
    pub async fn list_identity_providers(
        &self,
        realm: &str,
        org_id: Option<&str>,
    ) -> Result<Vec<Value>, IdpError> {
        let path = match org_id {
            Some(org) => format!("/{realm}/organizations/{org}/identity-providers"),
            None => format!("/{realm}/identity-provider/instances"),
        };
        self.get_list(&path).await
    }

    /// Creates or replaces an identity provider in `realm`, linked to the organization if given.
    pub async fn put_identity_provider(
        &self,
        realm: &str,
        org_id: Option<&str>,
        idp: &Value,
    ) -> Result<(), IdpError> {
        let alias = idp["alias"]
            .as_str()
            .ok_or_else(|| IdpError::Unexpected("identity provider alias".into()))?;
        let exists = self
            .get_json(&format!("/{realm}/identity-provider/instances/{alias}"))
            .await?
            .is_some();
        if exists {
            self.expect(
                Method::PUT,
                &format!("/{realm}/identity-provider/instances/{alias}"),
                Some(idp),
                &[StatusCode::NO_CONTENT],
            )
            .await?;
        } else {
            self.expect(
                Method::POST,
                &format!("/{realm}/identity-provider/instances"),
                Some(idp),
                &[StatusCode::CREATED, StatusCode::CONFLICT],
            )
            .await?;
        }
        if let Some(org) = org_id {
            self.expect(
                Method::POST,
                &format!("/{realm}/organizations/{org}/identity-providers"),
                Some(&Value::String(alias.to_string())),
                &[StatusCode::NO_CONTENT, StatusCode::CONFLICT],
            )
            .await?;
        }
        Ok(())
    }

    /// Removes an identity provider (and its organization link).
    pub async fn delete_identity_provider(
        &self,
        realm: &str,
        org_id: Option<&str>,
        alias: &str,
    ) -> Result<(), IdpError> {
        if let Some(org) = org_id {
            self.delete(&format!(
                "/{realm}/organizations/{org}/identity-providers/{alias}"
            ))
            .await?;
        }
        self.delete(&format!("/{realm}/identity-provider/instances/{alias}"))
            .await
    }

    /// Gives a user one of the realm's roles.
    pub async fn grant_realm_role(
        &self,
        realm: &str,
        user_id: &str,
        role: &str,
    ) -> Result<(), IdpError> {
        let role = self
            .get_json(&format!("/{realm}/roles/{role}"))
            .await?
            .ok_or_else(|| IdpError::Unexpected(format!("role {role}")))?;
        self.expect(
            Method::POST,
            &format!("/{realm}/users/{user_id}/role-mappings/realm"),
            Some(&json!([role])),
            &[StatusCode::NO_CONTENT],
        )
        .await?;
        Ok(())
    }

    /// Ends one session in Keycloak (its refresh token stops working); a missing one is fine.
    pub async fn delete_session(&self, realm: &str, sid: &str) -> Result<(), IdpError> {
        self.delete(&format!("/{realm}/sessions/{sid}")).await
    }

    /// Ends every session of a user in Keycloak.
    pub async fn logout_user(&self, realm: &str, user_id: &str) -> Result<(), IdpError> {
        self.expect(
            Method::POST,
            &format!("/{realm}/users/{user_id}/logout"),
            None,
            &[StatusCode::NO_CONTENT, StatusCode::NOT_FOUND],
        )
        .await?;
        Ok(())
    }

    /// Updates realm settings (e.g. `{"accessTokenLifespan": 60}`). Keycloak answers 409 when
    /// two updates of one realm race (tenants of one region provisioned at once): retried.
    pub async fn update_realm(&self, realm: &str, settings: &Value) -> Result<(), IdpError> {
        let mut attempt = 0;
        loop {
            match self
                .expect(
                    Method::PUT,
                    &format!("/{realm}"),
                    Some(settings),
                    &[StatusCode::NO_CONTENT],
                )
                .await
            {
                Err(IdpError::Status {
                    status: StatusCode::CONFLICT,
                    ..
                }) if attempt < 5 => {
                    attempt += 1;
                    let jitter = rand::random::<u64>() % 100;
                    tokio::time::sleep(Duration::from_millis(50 * attempt + jitter)).await;
                }
                other => return other.map(|_| ()),
            }
        }
    }
}
