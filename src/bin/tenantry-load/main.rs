//! `tenantry-load`: a bounded load generator (calls and seconds capped per scenario,
//! loopback only) built on the generated client. It starts `tenantry serve` (the
//! binary next to this one) as a separate process on a fresh SQLite file or a fresh
//! PostgreSQL database, plus a baseline server (bare tonic with the same transport
//! settings, also a separate process: see `baseline`), creates its data through the API,
//! and runs each scenario from `--concurrency` callers. It prints calls/s, events/s,
//! p50/p90/p99, the ratios to the baselines measured in the same run, server RSS (idle,
//! after each scenario, peak) and CPU; `--json FILE` writes the same as JSON.
//!
//! ```text
//! cargo build --release --bins
//! target/release/tenantry-load --backend sqlite
//! target/release/tenantry-load --backend postgres \
//!     --postgres postgres://postgres@127.0.0.1:5432/postgres --json pg.json
//! ```
//!
//! `scripts/performance` runs every scenario on both backends and pgbench, and writes
//! `docs/performance.md`.

mod auth;
mod baseline;
mod bench;
mod drive;
mod payments;
mod report;
mod scenarios;
mod server;
mod setup;

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Parser, ValueEnum};

use crate::{drive::Bounds, server::FreshDatabase};

/// The database of the server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the `--postgres` server.
    Postgres,
}

/// The scenarios, in the order they run by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Bare tonic health Check on the baseline server (run first and last).
    Baseline,
    /// Bare tonic answering tenantry's recorded GetOrganization answer.
    BaselineGet,
    /// Bare tonic answering tenantry's recorded ListOrganizations page.
    BaselineList,
    /// GetOrganization with a member's JWT.
    GetOrgJwt,
    /// GetOrganization with an API key.
    GetOrgApikey,
    /// ListOrganizations, a full page of 50.
    ListOrgs,
    /// In-process Authenticator::admit vs a GetOrganization round trip, sequential.
    Auth,
    /// RecordUsage, one event per call; one tenant per caller.
    UsageUnary,
    /// RecordUsageBatch of --batch events; one tenant per caller.
    UsageBatch,
    /// StreamUsage of --stream-messages messages of --batch events; one tenant per caller.
    UsageStream,
    /// RecordUsage with every caller on one tenant.
    UsageUnaryOneOrg,
    /// RecordUsageBatch with every caller on one tenant.
    UsageBatchOneOrg,
    /// ConfirmManualPayment and CompletePayment racing on the same few intents.
    PaymentContention,
}

/// Bounded load against tenantry and a bare tonic baseline, both on 127.0.0.1.
#[derive(Debug, Parser)]
pub struct Args {
    /// Storage backend.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    pub backend: Backend,
    /// PostgreSQL server (on this machine); a fresh database is created and dropped.
    #[arg(
        long,
        env = "TENANTRY_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub postgres: String,
    /// Scenarios to run (repeatable; default: all).
    #[arg(long, value_enum)]
    pub scenario: Vec<Scenario>,
    /// Concurrent callers.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// HTTP/2 connections the callers share (round-robin), to each server.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Maximum calls per scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub requests: u64,
    /// Maximum seconds per scenario.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Events per RecordUsageBatch call and per StreamUsage message.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Messages per StreamUsage call.
    #[arg(long, default_value_t = 10)]
    pub stream_messages: usize,
    /// Tenants the usage callers spread over (default: one per caller).
    #[arg(long)]
    pub usage_orgs: Option<usize>,
    /// Agents per usage tenant.
    #[arg(long, default_value_t = 8)]
    pub agents: usize,
    /// Payment intents raced at once in payment-contention.
    #[arg(long, default_value_t = 4)]
    pub intents: usize,
    /// The server's database pool (`--db-max-connections`).
    #[arg(long, default_value_t = 16)]
    pub pool: u32,
    /// Sequential samples of each auth measurement.
    #[arg(long, default_value_t = 2000)]
    pub auth_samples: u32,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Internal: serve the baseline on this port until killed.
    #[arg(long, hide = true)]
    pub serve_baseline: Option<u16>,
}

impl Args {
    fn check(&self) -> anyhow::Result<()> {
        let ok = (1..=256).contains(&self.concurrency)
            && (1..=self.concurrency).contains(&self.connections)
            && (1..=1000).contains(&self.batch)
            && (1..=100).contains(&self.stream_messages)
            && (1..=600).contains(&self.seconds)
            && (1..=10_000_000).contains(&self.requests)
            && (1..=64).contains(&self.intents)
            && (1..=100).contains(&self.agents)
            && self.usage_orgs.is_none_or(|n| (1..=256).contains(&n));
        if !ok {
            bail!(
                "bounds: --concurrency 1-256, --connections 1-concurrency, --batch 1-1000, \
                 --stream-messages 1-100, --seconds 1-600, --requests 1-10000000, \
                 --intents 1-64, --agents 1-100, --usage-orgs 1-256"
            );
        }
        Ok(())
    }

    /// The bounds of one scenario starting now.
    pub fn bounds(&self) -> Bounds {
        Bounds {
            deadline: Instant::now() + Duration::from_secs(self.seconds),
            max_calls: self.requests,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(port) = args.serve_baseline {
        return baseline::serve(port).await;
    }
    args.check()?;
    let dir = std::env::temp_dir().join(format!("tenantry-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (url, database) = match args.backend {
        Backend::Sqlite => (format!("sqlite://{}", dir.join("load.db").display()), None),
        Backend::Postgres => {
            let db = FreshDatabase::create(&args.postgres).await?;
            (db.url.clone(), Some(db))
        }
    };
    let result = bench::run(&args, &url, &dir).await;
    if let Some(db) = database {
        db.drop_now().await;
    }
    let report = match result {
        Ok(report) => report,
        Err(error) => bail!("{error:#} (server logs in {})", dir.display()),
    };
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
