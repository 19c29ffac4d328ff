//! `tenantry-load`: a bounded load generator for usage ingestion. It starts tenantry
//! in-process on 127.0.0.1 (a fresh SQLite file in a temp dir, or a fresh database on
//! the PostgreSQL server given by `--postgres`), creates one organization with agents,
//! and drives RecordUsage (unary) and RecordUsageBatch (100 events per call) from
//! `--concurrency` callers until `--requests` calls or `--seconds` have passed,
//! whichever comes first. It prints events/s and call latency p50/p90/p99.
//!
//! ```text
//! cargo run --release --bin tenantry-load -- --backend sqlite
//! cargo run --release --bin tenantry-load -- --backend postgres \
//!     --postgres postgres://postgres@127.0.0.1:5432/postgres
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use sea_orm::{ConnectionTrait, Database};
use tenantry::{
    auth::jwt::{MintClaims, mint},
    config::Settings,
    proto::{
        self, billing_service_client::BillingServiceClient,
        organization_service_client::OrganizationServiceClient,
    },
    startup::Application,
};
use tonic::{Request, metadata::MetadataValue, transport::Channel};

const SECRET: &[u8] = b"tenantry-load-secret-of-at-least-32-bytes";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// RecordUsage, one event per call.
    Unary,
    /// RecordUsageBatch, `--batch` events per call.
    Batch,
}

/// Bounded usage-ingestion load against an in-process tenantry.
#[derive(Debug, Parser)]
struct Args {
    /// Storage backend.
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// PostgreSQL server URL (a fresh database is created on it and dropped after).
    #[arg(long, env = "TENANTRY_TEST_DATABASE_URL")]
    postgres: Option<String>,
    /// Scenarios to run (default: both).
    #[arg(long, value_enum)]
    scenario: Vec<Scenario>,
    /// Concurrent callers.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Maximum calls per scenario.
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Maximum seconds per scenario.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Events per RecordUsageBatch call.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Agents the events are spread over.
    #[arg(long, default_value_t = 8)]
    agents: usize,
}

fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse::<MetadataValue<_>>() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn token(role: &str, org: &str) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    mint(
        SECRET,
        &MintClaims {
            sub: format!("load-{}", role.to_lowercase()),
            org: org.into(),
            roles: vec![role.into()],
            iss: "tenantry".into(),
            aud: "tenantry".into(),
            exp: now + 24 * 3600,
            iat: now,
            email: None,
        },
    )
    .map_err(anyhow::Error::msg)
}

/// The `per_mille`-th latency of a sorted list (500 = median).
fn percentile(sorted: &[u64], per_mille: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) * per_mille) / 1000;
    Duration::from_micros(sorted[index])
}

struct Target {
    org: String,
    agents: Vec<String>,
    system: String,
}

async fn setup(channel: Channel, agents: usize) -> anyhow::Result<Target> {
    let root = token("ROOT_ADMIN", "internal")?;
    let mut orgs = OrganizationServiceClient::new(channel);
    let org = orgs
        .create_organization(authed(
            proto::CreateOrganizationRequest {
                organization: Some(proto::Organization {
                    name: "Load Test".into(),
                    kind: proto::OrganizationKind::Tenant as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
            &root,
        ))
        .await?
        .into_inner()
        .organization
        .context("no organization")?;
    let mut ids = Vec::new();
    for i in 0..agents {
        let agent = orgs
            .register_agent(authed(
                proto::RegisterAgentRequest {
                    organization_id: org.id.clone(),
                    agent: Some(proto::Agent {
                        name: format!("Load Agent {i}"),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                &root,
            ))
            .await?
            .into_inner()
            .agent
            .context("no agent")?;
        ids.push(agent.id);
    }
    Ok(Target {
        org: org.id,
        agents: ids,
        system: token("SYSTEM", "internal")?,
    })
}

fn event(target: &Target, n: u64) -> proto::UsageEvent {
    let now = chrono::Utc::now();
    proto::UsageEvent {
        event_id: format!("load-{n}"),
        agent_id: target.agents[(n as usize) % target.agents.len()].clone(),
        metric: proto::UsageMetric::Tokens as i32,
        quantity: 100,
        cost: Some(proto::Money {
            currency_code: "USD".into(),
            amount: "0.000125".into(),
        }),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        }),
        dimensions: [("channel".to_owned(), "webchat".to_owned())].into(),
    }
}

async fn run(
    args: &Args,
    channel: Channel,
    target: Arc<Target>,
    scenario: Scenario,
) -> anyhow::Result<()> {
    let issued = Arc::new(AtomicU64::new(0));
    static NEXT_EVENT: AtomicU64 = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (issued, target, channel) = (issued.clone(), target.clone(), channel.clone());
        let (limit, batch) = (args.requests, args.batch);
        workers.push(tokio::spawn(async move {
            let mut client = BillingServiceClient::new(channel);
            let mut latencies = Vec::new();
            let mut events = 0u64;
            let mut errors = 0u64;
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < limit {
                let t = Instant::now();
                let ok = match scenario {
                    Scenario::Unary => {
                        let n = NEXT_EVENT.fetch_add(1, Ordering::Relaxed);
                        let request = proto::RecordUsageRequest {
                            organization_id: target.org.clone(),
                            event: Some(event(&target, n)),
                        };
                        match client.record_usage(authed(request, &target.system)).await {
                            Ok(_) => true,
                            Err(status) => {
                                if errors == 0 {
                                    eprintln!(
                                        "first error: {:?} {}",
                                        status.code(),
                                        status.message()
                                    );
                                }
                                false
                            }
                        }
                    }
                    Scenario::Batch => {
                        let first = NEXT_EVENT.fetch_add(batch as u64, Ordering::Relaxed);
                        let request = proto::RecordUsageBatchRequest {
                            organization_id: target.org.clone(),
                            events: (first..first + batch as u64)
                                .map(|n| event(&target, n))
                                .collect(),
                        };
                        client
                            .record_usage_batch(authed(request, &target.system))
                            .await
                            .map(|r| r.into_inner().accepted_count as usize == batch)
                            .unwrap_or(false)
                    }
                };
                latencies.push(t.elapsed().as_micros() as u64);
                if ok {
                    events += if scenario == Scenario::Batch {
                        batch as u64
                    } else {
                        1
                    };
                } else {
                    errors += 1;
                }
            }
            (latencies, events, errors)
        }));
    }
    let mut latencies = Vec::new();
    let (mut events, mut errors) = (0u64, 0u64);
    for worker in workers {
        let (l, e, x) = worker.await?;
        latencies.extend(l);
        events += e;
        errors += x;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let calls = latencies.len() as u64;
    let per_second = |n: u64| (n as u128 * 1_000_000 / elapsed.as_micros().max(1)) as u64;
    println!(
        "{:<8} {:<6} conc={:<3} calls={:<7} errors={:<4} calls/s={:<7} events/s={:<8} p50={:>8.2?} p90={:>8.2?} p99={:>8.2?}",
        format!("{:?}", args.backend).to_lowercase(),
        format!("{scenario:?}").to_lowercase(),
        args.concurrency,
        calls,
        errors,
        per_second(calls),
        per_second(events),
        percentile(&latencies, 500),
        percentile(&latencies, 900),
        percentile(&latencies, 990),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 || args.concurrency > 256 || args.batch == 0 || args.batch > 1000 {
        bail!("--concurrency must be 1-256 and --batch 1-1000");
    }
    let dir = std::env::temp_dir().join(format!("tenantry-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (url, cleanup) = match args.backend {
        Backend::Sqlite => (format!("sqlite://{}", dir.join("load.db").display()), None),
        Backend::Postgres => {
            let server = args
                .postgres
                .clone()
                .context("--backend postgres needs --postgres URL")?;
            let name = format!("tenantry_load_{}", std::process::id());
            let admin = Database::connect(&server).await?;
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await?;
            let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(&server);
            (format!("{base}/{name}"), Some((admin, name)))
        }
    };
    let mut settings = Settings::local(url, SECRET);
    settings.db_max_connections = 16;
    let app = Application::build(settings).await?;
    let port = app.grpc_port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?;
    let target = Arc::new(setup(channel.clone(), args.agents.max(1)).await?);
    let scenarios = if args.scenario.is_empty() {
        vec![Scenario::Unary, Scenario::Batch]
    } else {
        args.scenario.clone()
    };
    for scenario in scenarios {
        run(&args, channel.clone(), target.clone(), scenario).await?;
    }
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some((admin, name)) = cleanup {
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
    }
    Ok(())
}
