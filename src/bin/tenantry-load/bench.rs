//! One benchmark run: start both servers, create the data, run the selected scenarios
//! in order (the baseline first and again last), and collect the report.

use std::{future::Future, path::Path, sync::Arc, time::Duration};

use prost::Message;
use serde_json::{Value, json};

use crate::{
    Args, Scenario, auth, baseline,
    drive::Measured,
    payments,
    report::{Report, Row},
    scenarios::{self, Run},
    server::{self, Process},
    setup,
};

/// The HS256 secret the server under test trusts.
const SECRET: &str = "tenantry-load-secret-of-at-least-32-bytes";

/// Measures one scenario on `process`, with its CPU and memory.
async fn measure<F>(
    name: &str,
    unit: &'static str,
    process: &Process,
    run: F,
) -> anyhow::Result<Row>
where
    F: Future<Output = anyhow::Result<(Measured, Value)>>,
{
    let (server_before, client_before) = (process.cpu_ms(), server::cpu_ms("/proc/self/stat"));
    let (measured, extra) = run.await?;
    let wall_ms = measured.elapsed.as_secs_f64() * 1000.0;
    let pct = |ms: u64| {
        if wall_ms > 0.0 {
            ms as f64 * 100.0 / wall_ms
        } else {
            0.0
        }
    };
    let row = Row {
        name: name.to_owned(),
        unit,
        server_cpu_pct: pct(process.cpu_ms().saturating_sub(server_before)),
        client_cpu_pct: pct(server::cpu_ms("/proc/self/stat").saturating_sub(client_before)),
        memory: process.memory()?,
        measured,
        extra,
        same_bytes: None,
    };
    eprintln!(
        "{:<22} {:>9.0} calls/s",
        row.name,
        row.measured.calls_per_second()
    );
    Ok(row)
}

/// A scenario's figures with nothing extra.
fn plain(measured: anyhow::Result<Measured>) -> anyhow::Result<(Measured, Value)> {
    Ok((measured?, Value::Null))
}

/// Runs the benchmark against a tenantry on `database_url`, logging under `logs`.
pub async fn run(args: &Args, database_url: &str, logs: &Path) -> anyhow::Result<Report> {
    let base = Process::baseline(&logs.join("baseline.log")).await?;
    let tenantry =
        Process::tenantry(database_url, SECRET, args.pool, &logs.join("tenantry.log")).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = tenantry.memory()?;
    let (mut channels, mut base_channels) = (Vec::new(), Vec::new());
    for _ in 0..args.connections {
        channels.push(server::channel(tenantry.port).await?);
        base_channels.push(server::channel(base.port).await?);
    }
    let usage_orgs = args.usage_orgs.unwrap_or(args.concurrency);
    eprintln!(
        "creating the data ({usage_orgs} usage tenants with {} agents each)",
        args.agents
    );
    let fixture = setup::create(&channels[0], SECRET.as_bytes(), usage_orgs, args.agents).await?;
    let (get, list) = setup::read_answers(&channels[0], &fixture).await?;
    let answer_bytes = json!({
        "get_organization": get.encoded_len(),
        "list_organizations": list.encoded_len(),
    });
    baseline::prime(base_channels[0].clone(), get, list).await?;
    let run = Run {
        channels,
        concurrency: args.concurrency,
        batch: args.batch,
        stream_messages: args.stream_messages,
        fixture: Arc::new(fixture),
    };
    let one_org = Run {
        fixture: Arc::new(setup::Fixture {
            usage_orgs: run.fixture.usage_orgs.iter().take(1).cloned().collect(),
            ..(*run.fixture).clone()
        }),
        ..run.clone()
    };
    let base_run = Run {
        channels: base_channels,
        ..run.clone()
    };
    let selected = |s: Scenario| args.scenario.is_empty() || args.scenario.contains(&s);
    let mut rows = Vec::new();
    let mut auth = None;

    if selected(Scenario::Baseline) {
        let m = scenarios::health(&base_run, args.bounds());
        rows.push(measure("baseline", "calls", &base, async { plain(m.await) }).await?);
    }
    for (scenario, name, path) in [
        (Scenario::BaselineGet, "baseline-get", baseline::GET),
        (Scenario::BaselineList, "baseline-list", baseline::LIST),
    ] {
        if selected(scenario) {
            let m = scenarios::replay(&base_run, args.bounds(), path);
            rows.push(measure(name, "calls", &base, async { plain(m.await) }).await?);
        }
    }
    let reads = [
        (Scenario::GetOrgJwt, "get-org-jwt", "baseline-get"),
        (Scenario::GetOrgApikey, "get-org-apikey", "baseline-get"),
        (Scenario::ListOrgs, "list-orgs", "baseline-list"),
    ];
    for (scenario, name, same_bytes) in reads {
        if !selected(scenario) {
            continue;
        }
        let m = async {
            match scenario {
                Scenario::GetOrgJwt => {
                    scenarios::get_org(&run, args.bounds(), &run.fixture.member).await
                }
                Scenario::GetOrgApikey => {
                    scenarios::get_org(&run, args.bounds(), &run.fixture.api_key).await
                }
                _ => scenarios::list_orgs(&run, args.bounds()).await,
            }
        };
        let mut row = measure(name, "calls", &tenantry, async { plain(m.await) }).await?;
        row.same_bytes = Some(same_bytes);
        rows.push(row);
    }
    if selected(Scenario::Auth) {
        let figure = auth::measure(
            run.channels[0].clone(),
            database_url,
            SECRET.as_bytes(),
            &run.fixture,
            args.auth_samples,
        );
        auth = Some(figure.await?);
    }
    let usage: [(Scenario, &str, &Run); 5] = [
        (Scenario::UsageUnary, "usage-unary", &run),
        (Scenario::UsageBatch, "usage-batch", &run),
        (Scenario::UsageStream, "usage-stream", &run),
        (Scenario::UsageUnaryOneOrg, "usage-unary-one-org", &one_org),
        (Scenario::UsageBatchOneOrg, "usage-batch-one-org", &one_org),
    ];
    for (scenario, name, on) in usage {
        if !selected(scenario) {
            continue;
        }
        let m = async {
            match scenario {
                Scenario::UsageUnary | Scenario::UsageUnaryOneOrg => {
                    scenarios::usage_unary(on, args.bounds()).await
                }
                Scenario::UsageStream => scenarios::usage_stream(on, args.bounds()).await,
                _ => scenarios::usage_batch(on, args.bounds()).await,
            }
        };
        let tenants = on.fixture.usage_orgs.len();
        let row = measure(name, "events", &tenantry, async {
            Ok((m.await?, json!({ "tenants": tenants })))
        });
        rows.push(row.await?);
    }
    if selected(Scenario::PaymentContention) {
        let c = payments::contention(&run, args.bounds(), args.intents);
        let row = measure("payment-contention", "calls", &tenantry, async {
            let c = c.await?;
            let extra = json!({
                "intents": c.intents,
                "intents_raced_at_once": args.intents,
                "credited_by_complete": c.credited_by_complete,
                "exactly_once": c.exactly_once,
                "check": c.check,
            });
            Ok((c.measured, extra))
        });
        rows.push(row.await?);
    }
    if selected(Scenario::Baseline) {
        let m = scenarios::health(&base_run, args.bounds());
        rows.push(measure("baseline-end", "calls", &base, async { plain(m.await) }).await?);
    }
    let report = Report {
        params: json!({
            "backend": format!("{:?}", args.backend).to_lowercase(),
            "concurrency": args.concurrency,
            "connections": args.connections,
            "seconds": args.seconds,
            "max_calls": args.requests,
            "batch": args.batch,
            "stream_messages": args.stream_messages,
            "usage_tenants": usage_orgs,
            "agents_per_tenant": args.agents,
            "pool": args.pool,
            "answer_bytes": answer_bytes,
        }),
        idle,
        last: tenantry.memory()?,
        baseline_memory: base.memory()?,
        rows,
        auth,
    };
    tenantry.stop().await;
    base.stop().await;
    Ok(report)
}
