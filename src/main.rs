//! The `tenantry` command: `serve`, `migrate`, `token`, `payments`, `billing-cycle`.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use rand::RngCore;
use tenantry::{
    auth::jwt::{self, MintClaims},
    auth::{OrgRef, find_org},
    config::{AuthArgs, BillingArgs, DatabaseArgs, Secret, ServeArgs, Settings},
    domain::clock::SystemClock,
    grpc::Ctx,
    service::{billing::credits, subscriptions::cycle},
    startup::Application,
    storage::Store,
    telemetry::otel,
};

#[derive(Debug, Parser)]
#[command(
    name = "tenantry",
    version,
    about = "System of record for organizations, their agents, members, money and transfers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; boxing the variants would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the gRPC and HTTP servers.
    Serve(ServeArgs),
    /// Applies, rolls back or lists migrations.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Operator work on payments.
    Payments {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(subcommand)]
        action: PaymentsAction,
    },
    /// Runs the renewal cycle once as of an instant and prints its summary as JSON.
    BillingCycle {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        billing: BillingArgs,
        /// The instant to run as of (RFC 3339, e.g. 2026-12-01T00:00:00Z); default now.
        #[arg(long)]
        at: Option<String>,
        /// Only this organization (id `org_…` or slug); default all.
        #[arg(long)]
        organization: Option<String>,
    },
    /// Mints an HS256 token with the configured (or dev) secret.
    Token {
        #[command(flatten)]
        auth: AuthArgs,
        /// Role: MEMBER, CONFIG_ADMIN, AGENCY_ADMIN, ROOT_POWER_USER, ROOT_ADMIN or SYSTEM.
        #[arg(long)]
        role: String,
        /// Organization id or slug.
        #[arg(long, default_value = "internal")]
        org: String,
        /// Subject (user or service id).
        #[arg(long, default_value = "operator")]
        sub: String,
        /// Email claim.
        #[arg(long)]
        email: Option<String>,
        /// Lifetime, e.g. 3600s, 60m, 12h, 7d.
        #[arg(long, default_value = "12h")]
        ttl: String,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Applies every pending migration.
    Up,
    /// Rolls back the last N migrations.
    Down {
        /// How many.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// Lists applied and pending migrations.
    Status,
}

#[derive(Debug, Subcommand)]
enum PaymentsAction {
    /// Confirms a `manual` payment intent (the money arrived) and completes the purchase
    /// it pays for, exactly once, as ConfirmManualPayment does.
    Confirm {
        /// The intent id (`pi_manual_…`).
        intent_id: String,
        /// Operator note recorded in the audit log.
        #[arg(long, default_value = "")]
        note: String,
    },
}

/// Runs a payments action against the database.
async fn payments(database: DatabaseArgs, action: PaymentsAction) -> anyhow::Result<()> {
    let store = Store::connect(&database.database_url, 2, Arc::new(SystemClock)).await?;
    let settings = Settings::local(database.database_url.clone(), b"");
    let ctx = Ctx::new(store, settings);
    match action {
        PaymentsAction::Confirm { intent_id, note } => {
            let principal = credits::purchase::system_principal("cli");
            let by = credits::completion::By {
                principal: &principal,
                action: "ConfirmManualPayment",
                request_id: "cli",
                note: &note,
                stripe_event: None,
            };
            let done = credits::confirm_manual(&ctx, by, None, &intent_id, None)
                .await
                .map_err(|e| anyhow::anyhow!("cannot confirm {intent_id}: {e}"))?;
            if !done.service_purchase_id.is_empty() {
                println!(
                    "confirmed {intent_id}: service purchase {}",
                    done.service_purchase_id
                );
                ctx.store.close().await;
                return Ok(());
            }
            let txn = done.transaction.unwrap_or_default();
            let amount = txn.amount.unwrap_or_default();
            let status = tenantry::proto::CreditTransactionStatus::try_from(txn.status)
                .map(|s| {
                    s.as_str_name()
                        .trim_start_matches("CREDIT_TRANSACTION_STATUS_")
                })
                .unwrap_or("UNKNOWN");
            println!(
                "confirmed {intent_id}: transaction {} {status}, {} {}",
                txn.id, amount.amount, amount.currency_code
            );
        }
    }
    ctx.store.close().await;
    Ok(())
}

/// Runs the renewal cycle once as the system and prints the summary as JSON; fails
/// when a subscription could not be renewed (after printing the summary).
async fn billing_cycle(
    database: DatabaseArgs,
    billing: BillingArgs,
    at: Option<String>,
    organization: Option<String>,
) -> anyhow::Result<()> {
    let at = match at {
        Some(text) => chrono::DateTime::parse_from_rfc3339(&text)
            .with_context(|| format!("--at {text:?} is not an RFC 3339 instant"))?
            .timestamp_micros(),
        None => chrono::Utc::now().timestamp_micros(),
    };
    anyhow::ensure!(
        cycle::at_in_bounds(at, chrono::Utc::now().timestamp_micros()),
        "--at must be from 2000-01-01 to 20 years from now"
    );
    let billing = billing.settings().map_err(anyhow::Error::msg)?;
    let store = Store::connect(
        &database.database_url,
        database.db_max_connections.clamp(1, 4),
        Arc::new(SystemClock),
    )
    .await?;
    let mut settings = Settings::local(database.database_url.clone(), b"");
    settings.billing = billing;
    let ctx = Ctx::new(store, settings);
    let org = match organization {
        None => None,
        Some(reference) => {
            let parsed = OrgRef::parse(&reference)
                .with_context(|| format!("--organization {reference:?} is not an id or slug"))?;
            let org = find_org(&ctx.store, &parsed)
                .await?
                .with_context(|| format!("organization {reference} not found"))?;
            Some(org.id)
        }
    };
    let principal = credits::purchase::system_principal(cycle::SYSTEM_SUBJECT);
    let summary = cycle::run(&ctx, at, org, &principal).await;
    ctx.store.close().await;
    let summary = summary.map_err(|e| anyhow::anyhow!("billing cycle failed: {e}"))?;
    println!("{}", serde_json::to_string_pretty(&summary.to_json())?);
    anyhow::ensure!(
        summary.failed == 0,
        "{} subscription(s) could not be renewed; see the log",
        summary.failed
    );
    Ok(())
}

const DEV_SECRET_FILE: &str = "tenantry-dev-secret";

fn parse_ttl(text: &str) -> anyhow::Result<Duration> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .with_context(|| format!("bad ttl {text:?}"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => anyhow::bail!("bad ttl unit in {text:?}; use s, m, h or d"),
    };
    Ok(Duration::from_secs(seconds))
}

fn dev_secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DEV_SECRET_FILE)
}

/// Reads the dev secret, creating and persisting it (mode 0600) when absent.
fn load_or_create_dev_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = dev_secret_path(data_dir);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(text.trim().as_bytes().to_vec());
    }
    std::fs::create_dir_all(data_dir)?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    std::fs::write(&path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(secret.into_bytes())
}

fn secret_for(auth: &AuthArgs, dev: bool) -> anyhow::Result<Option<Secret>> {
    if let Some(secret) = &auth.jwt_secret {
        return Ok(Some(Secret::new(secret.as_bytes())));
    }
    if dev {
        return Ok(Some(Secret::new(load_or_create_dev_secret(
            &auth.data_dir,
        )?)));
    }
    Ok(std::fs::read_to_string(dev_secret_path(&auth.data_dir))
        .ok()
        .map(|s| Secret::new(s.trim().as_bytes())))
}

fn mint(
    auth: &AuthArgs,
    secret: &Secret,
    role: &str,
    org: &str,
    sub: &str,
    email: Option<String>,
    ttl: Duration,
) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    jwt::mint(
        secret.expose(),
        &MintClaims {
            sub: sub.to_owned(),
            org: org.to_owned(),
            roles: vec![role.to_owned()],
            iss: auth.jwt_issuer.clone(),
            aud: auth.jwt_audience.clone(),
            exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            iat: now,
            email,
        },
    )
    .map_err(anyhow::Error::msg)
}

/// Installs the SIGTERM/SIGINT handlers now (so a signal that arrives while the server
/// is still starting is not fatal) and returns the future that completes on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Runs the server with logs and OpenTelemetry installed; the spans still queued are
/// flushed when it stops, whichever way.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let telemetry = otel::init(args.log_format)?;
    let served = serve_until_stopped(args).await;
    telemetry.shutdown().await;
    served
}

async fn serve_until_stopped(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let secret = if args.dev {
        secret_for(&args.auth, true)?
    } else {
        args.auth
            .jwt_secret
            .as_ref()
            .map(|s| Secret::new(s.as_bytes()))
    };
    let settings = Settings {
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        database_url: args.database.database_url.clone(),
        db_max_connections: args.database.db_max_connections,
        migrate: !args.no_migrate,
        jwt_issuer: args.auth.jwt_issuer.clone(),
        jwt_audience: args.auth.jwt_audience.clone(),
        jwt_secret: secret.clone(),
        jwt_public_keys: args.auth.jwt_public_keys.clone(),
        jwks_file: args.auth.jwks_file.clone(),
        closed_signup: args.closed_signup,
        invitation_ttl: Duration::from_secs(args.invitation_ttl_hours * 3600),
        public_rate_per_minute: args.public_rate_per_minute,
        drain: Duration::from_secs(args.drain_seconds),
        billing: args.billing.settings().map_err(anyhow::Error::msg)?,
        events: args.events.settings().map_err(anyhow::Error::msg)?,
        limits: args.limits.settings().map_err(anyhow::Error::msg)?,
    };
    let app = Application::build(settings).await?;
    tracing::info!(
        grpc_port = app.grpc_port(),
        http_port = app.http_port(),
        "tenantry is listening"
    );
    if args.dev
        && let Some(secret) = &secret
    {
        let token = mint(
            &args.auth,
            secret,
            "ROOT_ADMIN",
            "internal",
            "dev-admin",
            None,
            Duration::from_secs(12 * 3600),
        )?;
        let port = app.grpc_port();
        println!(
            "\ntenantry dev mode — signing secret persisted in {}",
            dev_secret_path(&args.auth.data_dir).display()
        );
        println!("root-admin token (12h):\n\n  export TOKEN={token}\n");
        println!(
            "try:\n  grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" -d '{{\"organization\":{{\"name\":\"Acme Corp\"}}}}' localhost:{port} tenantry.v1.OrganizationService/CreateOrganization\n"
        );
    }
    app.run_until_stopped(shutdown).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate { database, action } => {
            let store = Store::connect(&database.database_url, 2, Arc::new(SystemClock)).await?;
            match action {
                MigrateAction::Up => {
                    store.migrate_up().await?;
                    println!("migrations applied");
                }
                MigrateAction::Down { steps } => {
                    store.migrate_down(steps).await?;
                    println!("rolled back {steps} migration(s)");
                }
                MigrateAction::Status => {
                    let (applied, pending) = store.migration_status().await?;
                    for name in applied {
                        println!("applied  {name}");
                    }
                    for name in pending {
                        println!("pending  {name}");
                    }
                }
            }
            Ok(())
        }
        Command::Payments { database, action } => payments(database, action).await,
        Command::BillingCycle {
            database,
            billing,
            at,
            organization,
        } => {
            // Logs go to stderr: stdout carries the JSON summary.
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                        tracing_subscriber::EnvFilter::new("warn,sqlx=warn,sea_orm=warn")
                    }),
                )
                .init();
            billing_cycle(database, billing, at, organization).await
        }
        Command::Token {
            auth,
            role,
            org,
            sub,
            email,
            ttl,
        } => {
            let secret = secret_for(&auth, false)?.context(
                "no signing secret: set TENANTRY_JWT_SECRET, or run `tenantry serve --dev` once to create a dev secret in the data directory",
            )?;
            println!(
                "{}",
                mint(&auth, &secret, &role, &org, &sub, email, parse_ttl(&ttl)?)?
            );
            Ok(())
        }
    }
}
