//! The Prometheus registry and the collectors behind `GET /metrics`.
//!
//! One [`Metrics`] per application (held by [`crate::grpc::Ctx`]), never a process-wide
//! registry, so several servers in one process (the tests) keep their own counts. The
//! exposition is OpenMetrics text:
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `tenantry_rpc_requests_total` | counter | `method`, `code` | finished gRPC calls (refused ones included) |
//! | `tenantry_rpc_duration_seconds` | histogram | `method`, `code` | call latency, from arrival to the end of the response (stream) |
//! | `tenantry_usage_events_ingested_total` | counter | | usage events newly recorded (committed; duplicates and refusals not counted) |
//! | `tenantry_renewal_runs_total` | counter | `outcome` = `ok`, `partial`, `error` | renewal cycle runs; `partial` when some subscriptions failed |
//! | `tenantry_renewal_periods_closed_total` | counter | | subscription periods closed (renewed or ended) by the cycle |
//! | `tenantry_renewal_failures_total` | counter | | subscriptions (or cancelled accounts) the cycle failed to handle; retried by the next run |
//! | `tenantry_db_pool_connections` | gauge | `pool` | open database connections (idle and in use) |
//! | `tenantry_db_pool_idle_connections` | gauge | `pool` | idle database connections |
//! | `tenantry_db_pool_max_connections` | gauge | `pool` | the pool's connection limit |
//! | `tenantry_outbox_backlog` | gauge | `queue` = `unsequenced_events`, `webhook_deliveries`, `emails` | events not yet numbered, webhook deliveries and emails not yet handled (retries included) |
//!
//! `method` is `tenantry.v1.Service/Method` for the RPCs of the policy table and
//! `unknown` otherwise (those calls fail UNIMPLEMENTED), so its values are bounded;
//! `code` is the gRPC code name (`OK`, `NOT_FOUND`…). The pool and backlog gauges are
//! read at scrape time; when the backlog query fails the scrape answers without it.

use std::{fmt, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder, text},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};
use sea_orm::{ConnectionTrait, DatabaseConnectionType, Statement, sqlx};
use tonic::Code;

use crate::{
    auth::method::Method, domain::events::DeliveryStatus, error::Result, storage::Store,
    telemetry::rpc::code_name,
};

/// Latency buckets (seconds): 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The `pool` label of the one database pool.
const MAIN_POOL: [(&str, &str); 1] = [("pool", "main")];

/// Labels of the per-RPC metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RpcLabels {
    method: Option<Method>,
    code: Code,
}

impl EncodeLabelSet for RpcLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        ("method", self.method.map_or("unknown", Method::name)).encode(encoder.encode_label())?;
        ("code", code_name(self.code)).encode(encoder.encode_label())
    }
}

type Labels = [(&'static str, &'static str); 1];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// How a run of the renewal cycle went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalOutcome {
    /// Every due subscription was handled.
    Ok,
    /// The run finished but some subscriptions failed.
    Partial,
    /// The run failed (the due subscriptions could not be listed).
    Error,
}

impl RenewalOutcome {
    fn label(self) -> Labels {
        [(
            "outcome",
            match self {
                RenewalOutcome::Ok => "ok",
                RenewalOutcome::Partial => "partial",
                RenewalOutcome::Error => "error",
            },
        )]
    }
}

/// This application's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_duration: Family<RpcLabels, Histogram, fn() -> Histogram>,
    usage_events: Counter,
    renewal_runs: Family<Labels, Counter>,
    renewal_periods: Counter,
    renewal_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tenantry");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpc_requests",
            "Finished gRPC calls by method and status code",
            rpc_requests.clone(),
        );
        let rpc_duration = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register_with_unit(
            "rpc_duration",
            "gRPC call latency until the end of the response, by method and status code",
            Unit::Seconds,
            rpc_duration.clone(),
        );
        let usage_events = Counter::default();
        registry.register(
            "usage_events_ingested",
            "Usage events newly recorded (duplicates and refusals not counted)",
            usage_events.clone(),
        );
        let renewal_runs = Family::<Labels, Counter>::default();
        for outcome in [
            RenewalOutcome::Ok,
            RenewalOutcome::Partial,
            RenewalOutcome::Error,
        ] {
            let _ = renewal_runs.get_or_create(&outcome.label());
        }
        registry.register(
            "renewal_runs",
            "Renewal cycle runs by outcome",
            renewal_runs.clone(),
        );
        let renewal_periods = Counter::default();
        registry.register(
            "renewal_periods_closed",
            "Subscription periods closed by the renewal cycle",
            renewal_periods.clone(),
        );
        let renewal_failures = Counter::default();
        registry.register(
            "renewal_failures",
            "Subscriptions (or cancelled accounts) the renewal cycle failed to handle",
            renewal_failures.clone(),
        );
        Metrics {
            registry,
            rpc_requests,
            rpc_duration,
            usage_events,
            renewal_runs,
            renewal_periods,
            renewal_failures,
        }
    }

    /// Counts a finished call of `method` (`None`: an unknown path) and its latency.
    pub fn observe_rpc(&self, method: Option<Method>, code: Code, elapsed: Duration) {
        let labels = RpcLabels { method, code };
        self.rpc_requests.get_or_create(&labels).inc();
        self.rpc_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts `count` newly recorded usage events.
    pub fn usage_events_ingested(&self, count: u64) {
        if count > 0 {
            self.usage_events.inc_by(count);
        }
    }

    /// Counts a run of the renewal cycle with the periods it closed and the
    /// subscriptions it failed to renew.
    pub fn renewal_run(&self, outcome: RenewalOutcome, periods_closed: u32, failed: u32) {
        self.renewal_runs.get_or_create(&outcome.label()).inc();
        self.renewal_periods.inc_by(u64::from(periods_closed));
        self.renewal_failures.inc_by(u64::from(failed));
    }

    /// The OpenMetrics text exposition, with the pool and backlog gauges of `store` as
    /// of now.
    pub async fn render(&self, store: &Store) -> Result<String, fmt::Error> {
        let mut scraped = Registry::with_prefix("tenantry");
        if let Some(pool) = pool_stats(store) {
            let gauges = [
                (
                    "db_pool_connections",
                    "Open database connections",
                    pool.open,
                ),
                (
                    "db_pool_idle_connections",
                    "Idle database connections",
                    pool.idle,
                ),
                (
                    "db_pool_max_connections",
                    "Connection limit of the pool",
                    pool.max,
                ),
            ];
            for (name, help, value) in gauges {
                let family = Family::<Labels, Gauge>::default();
                family.get_or_create(&MAIN_POOL).set(value);
                scraped.register(name, help, family);
            }
        }
        match backlog(store).await {
            Ok(queues) => {
                let family = Family::<Labels, Gauge>::default();
                for (queue, count) in queues {
                    family.get_or_create(&[("queue", queue)]).set(count);
                }
                scraped.register(
                    "outbox_backlog",
                    "Events not yet sequenced, webhook deliveries and emails not yet handled",
                    family,
                );
            }
            Err(error) => tracing::warn!(%error, "metrics: reading the outbox backlog failed"),
        }
        let mut out = String::with_capacity(16 * 1024);
        text::encode_registry(&mut out, &self.registry)?;
        text::encode_registry(&mut out, &scraped)?;
        text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// Connection counts of a pool.
struct PoolStats {
    open: i64,
    idle: i64,
    max: i64,
}

fn stats_of<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> PoolStats {
    PoolStats {
        open: i64::from(pool.size()),
        idle: i64::try_from(pool.num_idle()).unwrap_or(i64::MAX),
        max: i64::from(pool.options().get_max_connections()),
    }
}

fn pool_stats(store: &Store) -> Option<PoolStats> {
    match &store.db().inner {
        DatabaseConnectionType::SqlxSqlitePoolConnection(_) => {
            Some(stats_of(store.db().get_sqlite_connection_pool()))
        }
        DatabaseConnectionType::SqlxPostgresPoolConnection(_) => {
            Some(stats_of(store.db().get_postgres_connection_pool()))
        }
        _ => None,
    }
}

/// The outbox queues' lengths in one round trip. Each count is served by an index:
/// `ux_outbox_events_position` (NULL positions), `ix_webhook_deliveries_due` and
/// `ix_email_messages_due` (status first).
async fn backlog(store: &Store) -> Result<[(&'static str, i64); 3]> {
    let pending = DeliveryStatus::Pending.as_str();
    let sql = format!(
        "SELECT \
         (SELECT COUNT(*) FROM outbox_events WHERE position IS NULL) AS events, \
         (SELECT COUNT(*) FROM webhook_deliveries WHERE status = '{pending}') AS webhooks, \
         (SELECT COUNT(*) FROM email_messages WHERE status = '{pending}') AS emails"
    );
    let db = store.db();
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?;
    let count = |column: &str| -> Result<i64> {
        Ok(match &row {
            Some(row) => row.try_get::<i64>("", column)?,
            None => 0,
        })
    };
    Ok([
        ("unsequenced_events", count("events")?),
        ("webhook_deliveries", count("webhooks")?),
        ("emails", count("emails")?),
    ])
}
