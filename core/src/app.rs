//! Process wiring: the composition root [`AppState`] (every long-lived resource, and the
//! narrow state each feature receives), start-up checks, background workers, the HTTP server
//! and graceful shutdown.
//!
//! Owns the lifetime of every long-lived resource (pools, Redis connections, background
//! listeners). Start-up fails fast with a message naming the unreachable dependency; shutdown
//! stops accepting, lets in-flight requests finish within the grace period, then closes pools.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use salvo::conn::{Acceptor, TcpListener};
use salvo::prelude::*;
use salvo::server::ServerHandle;

use crate::account::AccountState;
use crate::audit::AuditState;
use crate::auth::AuthState;
use crate::config::Config;
use crate::db::{self, PgPool, PoolSettings, Pools};
use crate::http::Ops;
use crate::http::extract::Provide;
use crate::metrics::Metrics;
use crate::plugins::PluginsState;
use crate::rbac::RbacState;
use crate::resources::ResourcesState;
use crate::sessions::SessionsState;
use crate::tenancy::TenancyState;
use crate::tenancy::cache::{self, TenantCache};
use crate::users::UsersState;

/// The composition root: every long-lived resource, and the narrow state each layer and
/// feature receives (built here, once; nothing below `app` sees this struct).
pub struct AppState {
    pub config: Arc<Config>,
    /// The platform registry database.
    pub registry: PgPool,
    /// Tenant databases, one pool per physical database.
    pub pools: Arc<Pools>,
    pub redis: crate::redis_link::Link,
    pub redis_client: redis::Client,
    pub metrics: Arc<Metrics>,
    pub tenant_cache: Arc<TenantCache>,
    /// Keycloak admin API (provisioning, users); never used on the request path.
    pub keycloak: Arc<crate::auth::keycloak::KeycloakAdmin>,
    /// Per-tenant search indexes (an LRU of open ones).
    pub search: Arc<neotenant_search::Registry>,
    pub sessions: Arc<crate::sessions::Sessions>,
    pub perms: Arc<crate::rbac::cache::PermCache>,
    pub tenancy: Arc<TenancyState>,
    pub auth: Arc<AuthState>,
    pub rbac: Arc<RbacState>,
    pub audit: Arc<AuditState>,
    pub users: Arc<UsersState>,
    pub account: Arc<AccountState>,
    pub session_api: Arc<SessionsState>,
    pub resources: Arc<ResourcesState>,
    pub plugins: Arc<PluginsState>,
    pub invitations: Arc<crate::invitations::InvitationsState>,
    pub settings: Arc<crate::settings::SettingsState>,
    pub flags: Arc<crate::flags::FlagsState>,
    pub notifications: Arc<crate::notifications::NotificationsState>,
    pub webhooks: Arc<crate::webhooks::WebhooksState>,
    pub changes: Arc<crate::changes::ChangesState>,
    pub keyring: Arc<crate::crypto::Keyring>,
    /// The notification worker's wake-ups, taken by [`start`].
    notification_nudges: std::sync::Mutex<
        Option<tokio::sync::mpsc::UnboundedReceiver<Arc<crate::tenancy::cache::ResolvedTenant>>>,
    >,
    /// The invitation mail worker's wake-ups, taken by [`start`] when it spawns the worker.
    invitation_nudges: std::sync::Mutex<
        Option<tokio::sync::mpsc::UnboundedReceiver<Arc<crate::tenancy::cache::ResolvedTenant>>>,
    >,
    pub ops: Arc<Ops>,
    pub api_key_usage: Arc<crate::apikeys::UsageThrottle>,
    pub audit_recent: Arc<crate::audit::Recent>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("PostgreSQL at database.url is unreachable or refused the login: {0}")]
    Postgres(String),
    #[error("Redis at redis.url is unreachable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot listen on server.bind {addr}: {message}")]
    Bind { addr: SocketAddr, message: String },
    #[error("{0}")]
    Other(String),
}

impl AppState {
    /// Connects to PostgreSQL (registry) and Redis, checking both answer.
    pub async fn connect(config: Config) -> Result<Arc<Self>, StartError> {
        let settings = PoolSettings::from(&config.database);
        let registry_url = db::database_url(
            config.database.url.expose(),
            &config.database.registry_database,
        );
        let registry = db::build_pool(&registry_url, &settings);
        registry
            .get()
            .await
            .map_err(|e| StartError::Postgres(e.to_string()))?;
        let redis_client = redis::Client::open(config.redis.url.expose())?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        let manager = tokio::time::timeout(
            Duration::from_secs(5),
            redis_client.get_connection_manager_with_config(manager_config),
        )
        .await
        .map_err(|_| StartError::Other("Redis at redis.url did not answer within 5 s".into()))??;
        let metrics = Arc::new(Metrics::new());
        let redis = crate::redis_link::Link::new(manager, Some(metrics.redis_unreachable.clone()));
        let config = Arc::new(config);
        let tenant_cache = Arc::new(TenantCache::new(
            Duration::from_secs(config.tenancy.cache_ttl_secs),
            redis.clone(),
        ));
        let keycloak = Arc::new(crate::auth::keycloak::KeycloakAdmin::new(
            &config.keycloak,
            &config.auth,
        ));
        let jwks = Arc::new(crate::auth::jwks::JwksCache::new(
            &config.auth,
            metrics.jwks_fetches.clone(),
        ));
        let limiter = Arc::new(crate::ratelimit::RateLimiter::new(
            config.rate_limit.clone(),
            redis.clone(),
            metrics.auth_lockouts.clone(),
            metrics.rate_limit_errors.clone(),
        ));
        let sessions = Arc::new(crate::sessions::Sessions::new(
            redis.clone(),
            metrics.new_devices.clone(),
        ));
        let local_keys = Arc::new(
            crate::auth::local::LocalKeys::from_seed_hex(config.auth.local_signing_seed.expose())
                .ok_or_else(|| StartError::Other("auth.local_signing_seed is invalid".into()))?,
        );
        let runtime = Arc::new(
            crate::plugins::Plugins::new(
                &config.plugins,
                crate::netguard::AllowList::parse(&config.webhooks.allow_hosts),
            )
            .map_err(|e| StartError::Other(format!("plugin runtime: {e}")))?,
        );
        let search = Arc::new(neotenant_search::Registry::new(
            config.search.data_dir.clone(),
            config.search.max_open_indexes,
        ));
        let pools = Arc::new(Pools::new(settings));
        let perms = Arc::new(crate::rbac::cache::PermCache::new(redis.clone()));
        let audit_recent: Arc<crate::audit::Recent> = Default::default();
        let tenancy = Arc::new(TenancyState {
            config: config.clone(),
            registry: registry.clone(),
            pools: pools.clone(),
            tenant_cache: tenant_cache.clone(),
            keycloak: keycloak.clone(),
            search: search.clone(),
            audit_recent: audit_recent.clone(),
        });
        let auth = Arc::new(AuthState {
            config: config.clone(),
            tokens: Default::default(),
            jwks,
            limiter: limiter.clone(),
            local_keys: local_keys.clone(),
        });
        let rbac = Arc::new(RbacState {
            config: config.clone(),
            perms: perms.clone(),
            metrics: metrics.clone(),
            audit_recent: audit_recent.clone(),
        });
        let audit = Arc::new(AuditState {
            config: config.clone(),
            registry: registry.clone(),
            audit_recent: audit_recent.clone(),
            tenancy: tenancy.clone(),
        });
        let users = Arc::new(UsersState {
            config: config.clone(),
            tenancy: tenancy.clone(),
            users: Default::default(),
            sessions: sessions.clone(),
            keycloak: keycloak.clone(),
            redis: redis.clone(),
            seen: Default::default(),
        });
        let mailer: Arc<dyn crate::mail::Mailer> = Arc::new(
            crate::mail::SmtpMailer::new(&config.smtp)
                .map_err(|e| StartError::Other(format!("mail relay: {e}")))?,
        );
        let account = Arc::new(AccountState {
            config: config.clone(),
            keycloak: keycloak.clone(),
            limiter,
            local_keys,
            redis: redis.clone(),
            sessions: sessions.clone(),
            mailer: mailer.clone(),
            audit_recent: audit_recent.clone(),
        });
        let settings_state = Arc::new(crate::settings::SettingsState {
            config: config.clone(),
            catalogue: Arc::new(crate::settings::catalogue::Catalogue::new(
                &config.invitations,
            )),
            cache: Arc::new(crate::versioned_cache::VersionedCache::new(
                redis.clone(),
                crate::keys::channel::SETTINGS,
                crate::settings::CACHE_TTL,
            )),
            audit_recent: audit_recent.clone(),
        });
        let flags = Arc::new(crate::flags::FlagsState {
            config: config.clone(),
            cache: Arc::new(crate::versioned_cache::VersionedCache::new(
                redis.clone(),
                crate::keys::channel::FLAGS,
                crate::flags::CACHE_TTL,
            )),
            settings: settings_state.clone(),
            tenancy: tenancy.clone(),
            audit_recent: audit_recent.clone(),
        });
        let fallback_mailer: Option<Arc<dyn crate::mail::Mailer>> =
            match &config.notifications.email_fallback {
                Some(smtp) => Some(Arc::new(crate::mail::SmtpMailer::new(smtp).map_err(
                    |e| StartError::Other(format!("notifications.email_fallback: {e}")),
                )?)),
                None => None,
            };
        let (notify_nudge, notification_nudges) = tokio::sync::mpsc::unbounded_channel();
        let notifications = Arc::new(crate::notifications::NotificationsState {
            config: config.clone(),
            tenancy: tenancy.clone(),
            settings: settings_state.clone(),
            audit_recent: audit_recent.clone(),
            providers: Arc::new(crate::notifications::provider::Providers::from_config(
                &config.notifications,
                mailer.clone(),
                fallback_mailer,
            )),
            redis: redis.clone(),
            live: Default::default(),
            nudge: notify_nudge,
        });
        let keyring = Arc::new(crate::crypto::Keyring::from_config(&config.secrets));
        let allow = crate::netguard::AllowList::parse(&config.webhooks.allow_hosts);
        let webhooks = Arc::new(crate::webhooks::WebhooksState {
            client: crate::webhooks::WebhooksState::client(&config, &allow),
            allow,
            config: config.clone(),
            tenancy: tenancy.clone(),
            audit_recent: audit_recent.clone(),
            keyring: keyring.clone(),
            settings: settings_state.clone(),
            schedule: Arc::new(config.webhooks.schedule()),
        });
        let (nudge, invitation_nudges) = tokio::sync::mpsc::unbounded_channel();
        let invitations = Arc::new(crate::invitations::InvitationsState {
            config: config.clone(),
            tenancy: tenancy.clone(),
            keycloak: keycloak.clone(),
            mailer,
            audit_recent: audit_recent.clone(),
            perms: perms.clone(),
            teams: Arc::new(crate::teams::service::InvitationTeams),
            settings: settings_state.clone(),
            nudge,
        });
        let session_api = Arc::new(SessionsState {
            sessions: sessions.clone(),
            keycloak: keycloak.clone(),
        });
        let plugins = Arc::new(PluginsState {
            config: config.clone(),
            registry: registry.clone(),
            plugins: runtime,
            metrics: metrics.clone(),
            audit_recent: audit_recent.clone(),
            tenancy: tenancy.clone(),
            keyring: keyring.clone(),
            settings: settings_state.clone(),
        });
        let resources = Arc::new(ResourcesState {
            config: config.clone(),
            resource_validators: Default::default(),
            search: search.clone(),
            audit_recent: audit_recent.clone(),
            tenancy: tenancy.clone(),
            hooks: Arc::new(crate::plugins::hooks::PluginTypeHooks(plugins.clone())),
        });
        let ops = Arc::new(Ops {
            config: config.clone(),
            registry: registry.clone(),
            pools: pools.clone(),
            redis: redis.clone(),
            metrics: metrics.clone(),
        });
        Ok(Arc::new(Self {
            config,
            registry,
            pools,
            redis,
            redis_client,
            metrics,
            tenant_cache,
            keycloak,
            search,
            sessions,
            perms,
            tenancy,
            auth,
            rbac,
            audit,
            users,
            account,
            session_api,
            resources,
            plugins,
            invitations,
            settings: settings_state,
            flags,
            notifications,
            webhooks,
            changes: Arc::new(crate::changes::ChangesState {
                sources: vec![
                    Arc::new(crate::resources::changes::ResourceChanges),
                    Arc::new(crate::users::changes::UserChanges),
                ],
            }),
            keyring,
            notification_nudges: std::sync::Mutex::new(Some(notification_nudges)),
            invitation_nudges: std::sync::Mutex::new(Some(invitation_nudges)),
            ops,
            api_key_usage: Default::default(),
            audit_recent,
        }))
    }

    /// The hoop that hands every request the states its routes may ask for.
    fn provide(&self) -> Provide {
        Provide::default()
            .with(self.tenancy.clone())
            .with(self.auth.clone())
            .with(self.rbac.clone())
            .with(self.audit.clone())
            .with(self.users.clone())
            .with(self.account.clone())
            .with(self.session_api.clone())
            .with(self.sessions.clone())
            .with(self.resources.clone())
            .with(self.plugins.clone())
            .with(self.invitations.clone())
            .with(self.settings.clone())
            .with(self.flags.clone())
            .with(self.notifications.clone())
            .with(self.webhooks.clone())
            .with(self.changes.clone())
            .with(self.api_key_usage.clone())
            .with(self.audit_recent.clone())
    }
}

/// A running HTTP server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<()>,
    stop_background: tokio::sync::watch::Sender<bool>,
}

/// Connects, binds `config.server.bind` (port 0 picks a free port) and serves in the background.
/// What `neotenant secrets rotate-master` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Resealed {
    pub tenants: usize,
    pub webhook_endpoints: usize,
    pub plugin_installations: usize,
    pub failed_tenants: Vec<String>,
}

/// Moves every stored secret of every tenant to the active master key
/// (`secrets.master_key_id`): sealed values are re-wrapped, values stored in clear before
/// sealing existed are sealed. Once it reports no failures for all tenants (`only`: one), the
/// retired keys can be dropped.
pub async fn rotate_master(state: &AppState, only: Option<uuid::Uuid>) -> Resealed {
    let mut report = Resealed::default();
    for (tenant, db) in crate::audit::seal::all_tenants(&state.tenancy).await {
        if only.is_some_and(|o| o != tenant) {
            continue;
        }
        let hooks = crate::webhooks::service::reseal(&state.keyring, tenant, &db).await;
        let plugins = crate::plugins::service::reseal(&state.keyring, tenant, &db).await;
        match (hooks, plugins) {
            (Ok(h), Ok(p)) => {
                report.tenants += 1;
                report.webhook_endpoints += h;
                report.plugin_installations += p;
            }
            (Err(e), _) | (_, Err(e)) => {
                report
                    .failed_tenants
                    .push(format!("{tenant}: {}", e.detail));
            }
        }
    }
    report
}

pub async fn start(config: Config) -> Result<Server, StartError> {
    let bind = config.server.bind;
    let state = AppState::connect(config).await?;
    let acceptor = TcpListener::new(bind)
        .try_bind()
        .await
        .map_err(|e| StartError::Bind {
            addr: bind,
            message: e.to_string(),
        })?;
    let addr = acceptor
        .holdings()
        .first()
        .and_then(|h| h.local_addr.clone().into_std())
        .ok_or_else(|| StartError::Other("listener has no address".into()))?;
    let (stop_background, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(cache::listen(
        state.redis_client.clone(),
        state.tenant_cache.clone(),
        state.pools.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(crate::sessions::listen(
        state.redis_client.clone(),
        state.sessions.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(crate::audit::seal::worker(
        state.audit.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(crate::resources::indexer::worker(
        state.resources.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(crate::plugins::delivery::worker(
        state.plugins.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(crate::plugins::service::warm(state.plugins.clone()));
    if let Some(nudges) = state
        .invitation_nudges
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        tokio::spawn(crate::invitations::delivery::worker(
            state.invitations.clone(),
            nudges,
            stop_rx.clone(),
        ));
    }
    if let Some(nudges) = state
        .notification_nudges
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .filter(|_| state.config.notifications.worker)
    {
        tokio::spawn(crate::notifications::worker::worker(
            state.notifications.clone(),
            nudges,
            stop_rx.clone(),
        ));
    }
    if state.config.webhooks.worker {
        tokio::spawn(crate::webhooks::worker::worker(
            state.webhooks.clone(),
            stop_rx.clone(),
        ));
    }
    {
        let live = state.notifications.live.clone();
        tokio::spawn(crate::pubsub::listen(
            state.redis_client.clone(),
            crate::keys::channel::INBOX,
            "inbox changes",
            stop_rx.clone(),
            crate::pubsub::Subscriber {
                on_connect: || Box::pin(async { Ok(()) }) as futures::future::BoxFuture<'static, _>,
                on_message: move |payload: &str| live.on_message(payload),
                on_lost: || {},
            },
        ));
    }
    tokio::spawn(crate::rbac::cache::listen(
        state.redis_client.clone(),
        state.perms.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(crate::versioned_cache::listen(
        state.settings.cache.clone(),
        state.redis_client.clone(),
        "settings changes",
        stop_rx.clone(),
    ));
    tokio::spawn(crate::versioned_cache::listen(
        state.flags.cache.clone(),
        state.redis_client.clone(),
        "flag changes",
        stop_rx.clone(),
    ));
    tokio::spawn(crate::flags::schedule::worker(
        state.flags.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(
        state
            .auth
            .limiter
            .clone()
            .flush_loop(Duration::from_secs(1), stop_rx.clone()),
    );
    tokio::spawn(crate::users::activity::flush_loop(
        state.users.seen.clone(),
        Duration::from_secs(state.config.users.seen_flush_secs),
        stop_rx.clone(),
    ));
    if state.config.users.reconcile_interval_secs > 0 {
        tokio::spawn(crate::users::service::reconcile_loop(
            state.users.clone(),
            Duration::from_secs(state.config.users.reconcile_interval_secs),
            stop_rx,
        ));
    }
    let service = crate::http::service(state.ops.clone(), state.provide());
    let server = salvo::Server::new(acceptor);
    let handle = server.handle();
    let task = tokio::spawn(server.serve(service));
    tracing::info!(%addr, "listening");
    Ok(Server {
        addr,
        state,
        handle,
        task,
        stop_background,
    })
}

impl Server {
    /// Stops accepting, waits for in-flight requests (up to the grace period), closes pools.
    pub async fn shutdown(self) {
        let grace = Duration::from_secs(self.state.config.server.shutdown_grace_secs);
        tracing::info!(grace_secs = grace.as_secs(), "shutting down");
        self.handle.stop_graceful(grace);
        let _ = self.task.await;
        let _ = self.stop_background.send(true);
        self.state.pools.close_all();
        tracing::info!("stopped");
    }
}

/// Serves until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn serve_until_signal(config: Config) -> Result<(), StartError> {
    let server = start(config).await?;
    shutdown_signal().await;
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
