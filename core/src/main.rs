//! The `neotenant` command: serve the API, migrate, and administer tenants.
//!
//! Owns argument parsing and exit codes only; every action calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use neotenant::config::Config;
use neotenant::tenancy::model::{
    CreateTenant, IdentityMode, IdentityRequest, Isolation, Region, TenantView,
};
use neotenant::tenancy::service;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "neotenant",
    version,
    about = "NeoTenantApi: multi-tenant API platform"
)]
struct Cli {
    /// Configuration file (TOML). Defaults to ./neotenant.toml when present.
    #[arg(long, env = "NEOTENANT_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API until SIGTERM/SIGINT.
    Serve,
    /// Create missing databases, migrate the registry and every tenant's schema.
    Migrate,
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Verify, seal or prune tenants' audit logs.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Maintain tenants' search indexes.
    Search {
        #[command(subcommand)]
        command: SearchCommand,
    },
    /// Manage the master keys that seal stored secrets.
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Validate the configuration and print it (secrets redacted).
    CheckConfig,
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Re-wrap every tenant's sealed secrets with the active master key (and seal any stored
    /// in clear); prints a JSON report and fails when a tenant could not be done.
    RotateMaster {
        /// Only this tenant (slug); default: every tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the tenant's hash chain and check its signed checkpoints; prints a JSON report
    /// and fails (exit 1) at the first broken link.
    Verify {
        #[arg(long)]
        tenant: String,
    },
    /// Seal the tenant's unsealed entries now (the server does it continuously).
    Seal {
        #[arg(long)]
        tenant: String,
    },
    /// Apply the tenant's retention policy now.
    Prune {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum SearchCommand {
    /// Empty the tenant's search index and refill it from PostgreSQL, then catch up with the
    /// outbox. Run it where the index lives, with no server holding that index open.
    Rebuild {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant (idempotent; resumes an interrupted creation).
    Create {
        slug: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        region: Region,
        #[arg(long, default_value = "schema")]
        isolation: Isolation,
        /// Where its users live: `organization` (in the region's shared realm) or `realm`.
        #[arg(long, default_value = "organization")]
        identity: IdentityMode,
        /// Link an existing realm (realm mode) or organization alias (organization mode).
        #[arg(long)]
        link: Option<String>,
    },
    /// List tenants.
    List,
    /// Show one tenant as JSON.
    Show { slug: String },
    /// Suspend a tenant.
    Suspend { slug: String },
    /// Resume a suspended tenant.
    Resume { slug: String },
    /// Delete a tenant and all its data; `--confirm` must repeat the slug.
    Delete {
        slug: String,
        #[arg(long)]
        confirm: Option<String>,
    },
}

fn load_config(path: Option<PathBuf>) -> Result<Config, String> {
    let path = path.or_else(|| {
        let default = PathBuf::from("neotenant.toml");
        default.exists().then_some(default)
    });
    Config::load(path.as_deref(), std::env::vars()).map_err(|e| e.to_string())
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Command::Openapi = cli.command {
        println!(
            "{}",
            neotenant::http::openapi()
                .to_pretty_json()
                .map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let config = load_config(cli.config)?;
    neotenant::telemetry::init(&config.log);
    match cli.command {
        Command::Openapi => unreachable!("handled above"),
        Command::CheckConfig => {
            println!("{config:#?}");
            Ok(())
        }
        Command::Serve => neotenant::app::serve_until_signal(config)
            .await
            .map_err(|e| e.to_string()),
        Command::Migrate => {
            service::migrate_platform(&config)
                .await
                .map_err(|e| e.to_string())?;
            let state = neotenant::app::AppState::connect(config)
                .await
                .map_err(|e| e.to_string())?;
            let report = service::migrate_all(&state.tenancy)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "registry at version {}; {} tenant(s) migrated, {} failed",
                report.registry_version,
                report.tenants_migrated,
                report.tenants_failed.len()
            );
            for (slug, error) in &report.tenants_failed {
                eprintln!("  {slug}: {error}");
            }
            if report.tenants_failed.is_empty() {
                Ok(())
            } else {
                Err("some tenants were not migrated".into())
            }
        }
        Command::Secrets {
            command: SecretsCommand::RotateMaster { tenant },
        } => {
            let state = neotenant::app::AppState::connect(config)
                .await
                .map_err(|e| e.to_string())?;
            let only = match tenant {
                Some(slug) => Some(
                    neotenant::tenancy::resolve::resolve(&state.tenancy, &slug)
                        .await
                        .map_err(|e| format!("{}: {}", e.code.slug(), e.detail))?
                        .tenant
                        .id
                        .0,
                ),
                None => None,
            };
            let report = neotenant::app::rotate_master(&state, only).await;
            print_json(&report);
            if report.failed_tenants.is_empty() {
                Ok(())
            } else {
                Err("some tenants' secrets were not re-sealed".into())
            }
        }
        Command::Audit { command } => {
            let state = neotenant::app::AppState::connect(config)
                .await
                .map_err(|e| e.to_string())?;
            let fail = |e: neotenant::error::ApiError| format!("{}: {}", e.code.slug(), e.detail);
            let slug = match &command {
                AuditCommand::Verify { tenant }
                | AuditCommand::Seal { tenant }
                | AuditCommand::Prune { tenant } => tenant.clone(),
            };
            let tenant = neotenant::tenancy::resolve::resolve(&state.tenancy, &slug)
                .await
                .map_err(fail)?;
            let signer =
                neotenant::audit::chain::Signer::new(state.config.audit.signing_key.expose());
            let id = tenant.tenant.id.0;
            match command {
                AuditCommand::Verify { .. } => {
                    let report = neotenant::audit::seal::verify_tenant(
                        &signer,
                        &state.registry,
                        id,
                        &tenant.db,
                    )
                    .await
                    .map_err(fail)?;
                    print_json(&report);
                    if !report.ok {
                        return Err("the audit chain is broken".into());
                    }
                }
                AuditCommand::Seal { .. } => {
                    let n = neotenant::audit::seal::seal_tenant(
                        &signer,
                        &state.registry,
                        id,
                        &tenant.db,
                    )
                    .await
                    .map_err(fail)?;
                    eprintln!("sealed {n} entries");
                }
                AuditCommand::Prune { .. } => {
                    let n = neotenant::audit::seal::prune_tenant(&signer, id, &tenant.db)
                        .await
                        .map_err(fail)?;
                    eprintln!("pruned {n} entries");
                }
            }
            Ok(())
        }
        Command::Search {
            command: SearchCommand::Rebuild { tenant },
        } => {
            let state = neotenant::app::AppState::connect(config)
                .await
                .map_err(|e| e.to_string())?;
            let fail = |e: neotenant::error::ApiError| format!("{}: {}", e.code.slug(), e.detail);
            let tenant = neotenant::tenancy::resolve::resolve(&state.tenancy, &tenant)
                .await
                .map_err(fail)?;
            let id = tenant.tenant.id.0;
            let n = neotenant::resources::indexer::rebuild(&state.search, id, &tenant.db)
                .await
                .map_err(fail)?;
            let caught_up = neotenant::resources::indexer::index_tenant(
                &state.search,
                id,
                &tenant.db,
                usize::MAX,
            )
            .await
            .map_err(fail)?;
            eprintln!("indexed {n} resources, then applied {caught_up} newer events");
            Ok(())
        }
        Command::Tenant { command } => {
            let state = neotenant::app::AppState::connect(config)
                .await
                .map_err(|e| e.to_string())?;
            let fail = |e: neotenant::error::ApiError| {
                let mut text = format!("{}: {}", e.code.slug(), e.detail);
                for f in &e.errors {
                    text.push_str(&format!("\n  {}: {}", f.pointer, f.message));
                }
                text
            };
            match command {
                TenantCommand::Create {
                    slug,
                    name,
                    region,
                    isolation,
                    identity,
                    link,
                } => {
                    let input = CreateTenant {
                        slug,
                        display_name: name,
                        region,
                        isolation,
                        identity: IdentityRequest {
                            mode: identity,
                            link,
                        },
                    };
                    let (tenant, created) = service::create(&state.tenancy, &input)
                        .await
                        .map_err(fail)?;
                    eprintln!("{}", if created { "created" } else { "already exists" });
                    print_json(&TenantView::from(&tenant));
                }
                TenantCommand::List => {
                    let mut after = None;
                    println!(
                        "{:<40} {:<6} {:<9} {:<12} {:<28} SCHEMA",
                        "SLUG", "REGION", "ISOLATION", "STATUS", "DATABASE"
                    );
                    loop {
                        let page = service::list(&state.tenancy, after, 500)
                            .await
                            .map_err(fail)?;
                        let Some(last) = page.last() else { break };
                        after = Some(last.id.0);
                        for t in &page {
                            println!(
                                "{:<40} {:<6} {:<9} {:<12} {:<28} {}",
                                t.slug,
                                t.region,
                                t.isolation,
                                t.status,
                                t.database_name,
                                t.schema_name
                            );
                        }
                    }
                }
                TenantCommand::Show { slug } => {
                    print_json(&TenantView::from(
                        &service::get(&state.tenancy, &slug).await.map_err(fail)?,
                    ));
                }
                TenantCommand::Suspend { slug } => {
                    print_json(&TenantView::from(
                        &service::suspend(&state.tenancy, &slug)
                            .await
                            .map_err(fail)?,
                    ));
                }
                TenantCommand::Resume { slug } => {
                    print_json(&TenantView::from(
                        &service::resume(&state.tenancy, &slug).await.map_err(fail)?,
                    ));
                }
                TenantCommand::Delete { slug, confirm } => {
                    service::delete(&state.tenancy, &slug, confirm.as_deref())
                        .await
                        .map_err(fail)?;
                    eprintln!("deleted {slug}");
                }
            }
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("neotenant: {message}");
            ExitCode::FAILURE
        }
    }
}
