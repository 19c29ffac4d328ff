//! Prometheus metrics on the HTTP port: calls counted and timed by method and code
//! (refusals and unknown methods included), streams ended by their body or by the
//! client, usage events counted once, pool and outbox gauges, renewal runs.

use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;
use tenantry::{
    domain::ids::{self, IdKind},
    proto::{self, UsageEventStatus as S, UsageMetric as M},
};
use tonic::{Code, Request};

use crate::{
    helpers::{Backend, TestApp, authed},
    on_both_backends,
    organizations::{get, register_agent, tenant},
    usage::{batch, event, record, system},
};

on_both_backends!(
    calls_are_counted_and_timed_by_method_and_code,
    usage_events_are_counted_once_and_renewal_runs_by_outcome,
    a_watch_the_client_drops_is_counted_cancelled,
);

const GET: &str = "tenantry.v1.OrganizationService/GetOrganization";

/// `GET /metrics` over HTTP: checks the status, content type and EOF marker.
async fn scrape(app: &TestApp) -> String {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/metrics", app.http_port))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let body = response.text().await.expect("metrics body");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body
}

/// The integer value of the sample named exactly `series` (name and labels).
fn sample(body: &str, series: &str) -> Option<i64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The request counter of `method` ending with `code`.
fn calls(body: &str, method: &str, code: &str) -> Option<i64> {
    sample(
        body,
        &format!("tenantry_rpc_requests_total{{method=\"{method}\",code=\"{code}\"}}"),
    )
}

async fn calls_are_counted_and_timed_by_method_and_code(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let org = tenant(&app, "Observed", "").await;
    get(&app, &root, &org.id).await.expect("get");
    let missing = ids::encode(IdKind::Organization, uuid::Uuid::now_v7());
    let err = get(&app, &root, &missing).await.expect_err("missing org");
    assert_eq!(err.code(), Code::NotFound);
    let anonymous = proto::GetOrganizationRequest {
        organization_id: org.id.clone(),
    };
    let err = app
        .orgs()
        .get_organization(Request::new(anonymous))
        .await
        .expect_err("no credentials");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut raw = tonic::client::Grpc::new(app.channel.clone());
    raw.ready().await.expect("channel ready");
    let err = raw
        .unary::<(), (), _>(
            Request::new(()),
            http::uri::PathAndQuery::from_static("/tenantry.v1.OrganizationService/Nope"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("unknown method");
    assert_eq!(err.code(), Code::Unimplemented);

    let body = scrape(&app).await;
    for code in ["OK", "NOT_FOUND", "UNAUTHENTICATED"] {
        assert_eq!(calls(&body, GET, code), Some(1), "{code}\n{body}");
        let series =
            format!("tenantry_rpc_duration_seconds_count{{method=\"{GET}\",code=\"{code}\"}}");
        assert_eq!(sample(&body, &series), Some(1), "{series}");
        let labels = format!(",method=\"{GET}\",code=\"{code}\"}}");
        let buckets: Vec<&str> = body
            .lines()
            .filter(|l| {
                l.starts_with("tenantry_rpc_duration_seconds_bucket{le=") && l.contains(&labels)
            })
            .collect();
        assert_eq!(buckets.len(), 15, "14 bounds and +Inf: {buckets:?}\n{body}");
        assert!(
            buckets
                .iter()
                .all(|b| b.ends_with(" 0") || b.ends_with(" 1"))
        );
        let inf = format!("tenantry_rpc_duration_seconds_bucket{{le=\"+Inf\"{labels}");
        assert_eq!(sample(&body, &inf), Some(1), "{inf}");
    }
    let create = "tenantry.v1.OrganizationService/CreateOrganization";
    assert_eq!(calls(&body, create, "OK"), Some(1));
    assert_eq!(calls(&body, GET, "INTERNAL"), None);
    assert_eq!(calls(&body, "unknown", "UNIMPLEMENTED"), Some(1));
    assert!(
        !body.contains("grpc.health"),
        "health calls are not counted"
    );

    let gauge = |name: &str| {
        sample(&body, &format!("tenantry_db_pool_{name}{{pool=\"main\"}}"))
            .unwrap_or_else(|| panic!("pool gauge {name}\n{body}"))
    };
    let (open, idle, max) = (
        gauge("connections"),
        gauge("idle_connections"),
        gauge("max_connections"),
    );
    assert_eq!(max, 8, "Settings::local's pool size");
    assert!(
        (1..=max).contains(&open) && (0..=open).contains(&idle),
        "open {open}, idle {idle}"
    );
    for queue in ["unsequenced_events", "webhook_deliveries", "emails"] {
        let series = format!("tenantry_outbox_backlog{{queue=\"{queue}\"}}");
        let backlog = sample(&body, &series).unwrap_or_else(|| panic!("{series}\n{body}"));
        assert!(backlog >= 0, "{series} {backlog}");
    }
    // Nothing delivers to webhooks or email here: both queues stay empty.
    assert_eq!(
        sample(
            &body,
            "tenantry_outbox_backlog{queue=\"webhook_deliveries\"}"
        ),
        Some(0)
    );

    // A backlog that cannot be read leaves it out; the rest is still served.
    app.store
        .db()
        .execute_unprepared("ALTER TABLE email_messages RENAME TO email_messages_away")
        .await
        .expect("rename email_messages");
    let partial = scrape(&app).await;
    assert!(!partial.contains("tenantry_outbox_backlog"), "{partial}");
    assert_eq!(calls(&partial, GET, "OK"), Some(1));
    assert!(partial.contains("tenantry_db_pool_connections{pool=\"main\"}"));
    app.stop().await;
}

async fn usage_events_are_counted_once_and_renewal_runs_by_outcome(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let org = tenant(&app, "Metered", "").await;
    let agent = register_agent(&app, &root, &org.id, "Counted").await;
    let sys = system(&app);
    let before = scrape(&app).await;
    assert_eq!(
        sample(&before, "tenantry_usage_events_ingested_total"),
        Some(0)
    );
    for outcome in ["ok", "partial", "error"] {
        let series = format!("tenantry_renewal_runs_total{{outcome=\"{outcome}\"}}");
        assert_eq!(sample(&before, &series), Some(0), "{series}");
    }

    let mut refused = event("m-3", &agent.id, M::Tokens, 1, "0.01");
    refused.metric = M::Unspecified as i32;
    let first = batch(
        &app,
        &sys,
        &org.id,
        vec![
            event("m-1", &agent.id, M::Tokens, 10, "0.01"),
            event("m-2", &agent.id, M::Tokens, 10, "0.01"),
            event("m-1", &agent.id, M::Tokens, 10, "0.01"),
            refused,
        ],
    )
    .await;
    assert_eq!(
        (
            first.accepted_count,
            first.duplicate_count,
            first.refused_count
        ),
        (2, 1, 1)
    );
    let again = record(
        &app,
        &sys,
        &org.id,
        event("m-2", &agent.id, M::Tokens, 10, "0.01"),
    )
    .await
    .expect("retry");
    assert_eq!(again.status, S::Duplicate as i32);
    let streamed = vec![proto::StreamUsageRequest {
        organization_id: org.id.clone(),
        events: vec![
            event("m-4", &agent.id, M::Messages, 1, "0.001"),
            event("m-1", &agent.id, M::Tokens, 10, "0.01"),
        ],
    }];
    let acked = app
        .billing()
        .stream_usage(authed(tokio_stream::iter(streamed), &sys))
        .await
        .expect("stream usage")
        .into_inner();
    assert_eq!((acked.accepted_count, acked.duplicate_count), (1, 1));

    app.subscriptions()
        .run_billing_cycle(authed(proto::RunBillingCycleRequest::default(), &root))
        .await
        .expect("run billing cycle");

    let body = scrape(&app).await;
    assert_eq!(
        sample(&body, "tenantry_usage_events_ingested_total"),
        Some(3),
        "m-1, m-2 and m-4\n{body}"
    );
    let billing = "tenantry.v1.BillingService";
    assert_eq!(
        calls(&body, &format!("{billing}/RecordUsageBatch"), "OK"),
        Some(1)
    );
    assert_eq!(
        calls(&body, &format!("{billing}/RecordUsage"), "OK"),
        Some(1)
    );
    assert_eq!(
        calls(&body, &format!("{billing}/StreamUsage"), "OK"),
        Some(1)
    );
    let cycle = "tenantry.v1.SubscriptionService/RunBillingCycle";
    assert_eq!(calls(&body, cycle, "OK"), Some(1));
    assert_eq!(
        sample(&body, "tenantry_renewal_runs_total{outcome=\"ok\"}"),
        Some(1)
    );
    assert_eq!(
        sample(&body, "tenantry_renewal_runs_total{outcome=\"partial\"}"),
        Some(0)
    );
    assert_eq!(sample(&body, "tenantry_renewal_failures_total"), Some(0));
    assert!(sample(&body, "tenantry_renewal_periods_closed_total").is_some_and(|n| n >= 0));
    app.stop().await;
}

async fn a_watch_the_client_drops_is_counted_cancelled(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let org = tenant(&app, "Watched", "").await;
    let stream = app
        .orgs()
        .watch_events(authed(
            proto::WatchEventsRequest {
                organization_id: org.id.clone(),
                ..Default::default()
            },
            &root,
        ))
        .await
        .expect("watch events")
        .into_inner();
    let watch = "tenantry.v1.OrganizationService/WatchEvents";
    // The call is open until its stream ends: not counted yet.
    assert_eq!(calls(&scrape(&app).await, watch, "OK"), None);
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = scrape(&app).await;
        if calls(&body, watch, "CANCELLED") == Some(1) {
            assert_eq!(calls(&body, watch, "OK"), None);
            break;
        }
        assert!(Instant::now() < deadline, "no CANCELLED watch in\n{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}
