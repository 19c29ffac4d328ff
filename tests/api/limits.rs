//! Request limits: oversized messages, request timeouts (the server's and the client's
//! `grpc-timeout`), the cap on calls in progress, per-connection header limits and the
//! webhook body limit. A call is made slow without hooks in the service: the test holds
//! the database's write path (the store's writer on SQLite; on PostgreSQL a SHARE lock
//! on `audit_entries`, which CreateOrganization reaches after inserting its row).

use std::time::{Duration, Instant};

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tenantry::{
    config::Limits,
    proto::{self, organization_service_client::OrganizationServiceClient},
    storage::{Tx, entities::organizations},
};
use tonic::{Code, Request, Status, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    helpers::{Backend, TestApp, authed, reason},
    on_both_backends,
};

on_both_backends!(
    a_call_past_the_request_timeout_fails_deadline_exceeded_and_writes_nothing,
    a_client_deadline_shorter_than_the_servers_ends_the_call,
    calls_over_the_concurrency_cap_are_shed_at_once_and_health_still_answers,
);

const CREATE: &str = "tenantry.v1.OrganizationService/CreateOrganization";

/// A tenantry with the given limits (and a fast event poll).
async fn spawn(backend: Backend, limits: Limits) -> Option<TestApp> {
    TestApp::spawn_with(backend, |settings| {
        settings.events.poll_interval = Duration::from_millis(50);
        settings.limits = limits;
    })
    .await
}

/// What these tests do with a running tenantry beyond [`TestApp`]'s own helpers.
trait LimitsApp {
    fn channel_url(&self) -> String;
    async fn block_writes(&self) -> Tx;
    fn create(&self, name: &str) -> Request<proto::CreateOrganizationRequest>;
    async fn orgs_named(&self, name: &str) -> u64;
    async fn calls(&self, method: &str, code: &str) -> i64;
}

impl LimitsApp for TestApp {
    fn channel_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Holds the write path so that writing calls wait; released by committing.
    async fn block_writes(&self) -> Tx {
        let tx = self.store.write().await.expect("write transaction");
        if self.backend == Backend::Postgres {
            tx.execute_unprepared("LOCK TABLE audit_entries IN SHARE MODE")
                .await
                .expect("lock audit_entries");
        }
        tx
    }

    /// A CreateOrganization of `name` as root.
    fn create(&self, name: &str) -> Request<proto::CreateOrganizationRequest> {
        let request = proto::CreateOrganizationRequest {
            organization: Some(proto::Organization {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        authed(request, &self.root())
    }

    async fn orgs_named(&self, name: &str) -> u64 {
        organizations::Entity::find()
            .filter(organizations::Column::Name.eq(name))
            .count(self.store.db())
            .await
            .expect("count organizations")
    }

    /// The request counter of `method` with `code` on `/metrics`.
    async fn calls(&self, method: &str, code: &str) -> i64 {
        let body = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        let series = format!("tenantry_rpc_requests_total{{method=\"{method}\",code=\"{code}\"}} ");
        body.lines()
            .find_map(|line| line.strip_prefix(&series)?.parse().ok())
            .unwrap_or(0)
    }
}

/// Whether a PostgreSQL session of this database waits on a lock in an INSERT into
/// `audit_entries`: the blocked call is in the middle of its transaction.
async fn waits_inserting_audit(app: &TestApp) -> bool {
    let row = app
        .store
        .db()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO \"audit_entries\"%'",
        ))
        .await
        .expect("read pg_stat_activity")
        .expect("a row");
    row.try_get::<i64>("", "n").expect("count") > 0
}

async fn a_call_past_the_request_timeout_fails_deadline_exceeded_and_writes_nothing(
    backend: Backend,
) {
    let limits = Limits {
        request_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let Some(app) = spawn(backend, limits).await else {
        return;
    };
    let hold = app.block_writes().await;
    let started = Instant::now();
    let status = app
        .orgs()
        .create_organization(app.create("Slow Corp"))
        .await
        .expect_err("the call times out");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(reason(&status), "TIMED_OUT");
    assert!(status.message().contains("500 ms"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(20));
    if backend == Backend::Postgres {
        // The dropped call's session still waits, after its organization INSERT.
        assert!(waits_inserting_audit(&app).await);
    }
    hold.commit().await.expect("release the write path");
    app.orgs()
        .create_organization(app.create("After Corp"))
        .await
        .expect("the database is usable again");
    assert_eq!(app.orgs_named("After Corp").await, 1);
    assert_eq!(app.orgs_named("Slow Corp").await, 0, "rolled back");
    assert_eq!(app.calls(CREATE, "DEADLINE_EXCEEDED").await, 1);
    app.stop().await;
}

async fn a_client_deadline_shorter_than_the_servers_ends_the_call(backend: Backend) {
    let limits = Limits {
        request_timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    let Some(app) = spawn(backend, limits).await else {
        return;
    };
    let hold = app.block_writes().await;
    let mut request = app.create("Hasty Corp");
    request.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let status = app
        .orgs()
        .create_organization(request)
        .await
        .expect_err("the client's deadline passes");
    // The tonic client enforces its deadline too (CANCELLED); the server gives up just
    // before it (DEADLINE_EXCEEDED): whichever answer comes first.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "not the server's 120 s"
    );
    // The client stops waiting at its deadline; the server drops the call when it sees
    // the deadline (or the client's reset) itself, and records how the call ended.
    // Released before that, the call could still finish and commit.
    let mut ended = 0;
    for _ in 0..200 {
        ended = app.calls(CREATE, "DEADLINE_EXCEEDED").await + app.calls(CREATE, "CANCELLED").await;
        if ended > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        ended, 1,
        "the server ended the call without the server's timeout"
    );
    hold.commit().await.expect("release the write path");
    app.orgs()
        .create_organization(app.create("Patient Corp"))
        .await
        .expect("the database is usable again");
    assert_eq!(
        app.orgs_named("Hasty Corp").await,
        0,
        "the call was abandoned"
    );
    app.stop().await;
}

async fn calls_over_the_concurrency_cap_are_shed_at_once_and_health_still_answers(
    backend: Backend,
) {
    let limits = Limits {
        max_concurrent_requests: 2,
        request_timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    let Some(app) = spawn(backend, limits).await else {
        return;
    };
    let hold = app.block_writes().await;
    let blocked = |name: String| {
        let (mut orgs, request) = (app.orgs(), app.create(&name));
        tokio::spawn(async move { orgs.create_organization(request).await })
    };
    let mut calls = [blocked("Blocked 0".into()), blocked("Blocked 1".into())];
    let probe = || {
        let request = proto::GetOrganizationRequest {
            organization_id: "internal".into(),
        };
        let mut orgs = app.orgs();
        let request = authed(request, &app.root());
        async move { orgs.get_organization(request).await }
    };
    // Probe until both blocked calls hold the two slots; a blocked call that arrived
    // while a probe held a slot was itself shed, and is sent again.
    let mut shed = None;
    for attempt in 0..400 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        for (i, call) in calls.iter_mut().enumerate() {
            if call.is_finished() {
                let early = (&mut *call)
                    .await
                    .expect("task")
                    .expect_err("only shed early");
                assert_eq!(reason(&early), "OVERLOADED", "{early:?}");
                *call = blocked(format!("Blocked {i} again {attempt}"));
            }
        }
        match probe().await {
            Ok(_) => continue,
            Err(status) => {
                shed = Some(status);
                break;
            }
        }
    }
    let shed = shed.expect("a call over the cap is shed");
    assert_eq!(shed.code(), Code::Unavailable, "{shed:?}");
    assert_eq!(reason(&shed), "OVERLOADED");
    assert!(
        calls.iter().all(|call| !call.is_finished()),
        "refused while the two calls still wait: nothing queued behind them"
    );
    let health = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("health answers at the cap");
    assert_eq!(health.into_inner().status, 1, "SERVING");

    hold.commit().await.expect("release the write path");
    for call in calls {
        let created = tokio::time::timeout(Duration::from_secs(60), call).await;
        created
            .expect("the blocked calls finish once released")
            .expect("task")
            .expect("created");
    }
    probe().await.expect("the slots came back");
    assert!(
        app.calls(
            "tenantry.v1.OrganizationService/GetOrganization",
            "UNAVAILABLE"
        )
        .await
            >= 1
    );
    app.stop().await;
}

/// A CreateOrganization whose description is `bytes` long.
fn with_description(app: &TestApp, bytes: usize) -> Request<proto::CreateOrganizationRequest> {
    let mut request = app.create("Big Corp");
    if let Some(org) = request.get_mut().organization.as_mut() {
        org.description = "x".repeat(bytes);
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_fails_resource_exhausted_and_one_under_the_limit_is_decoded() {
    let app = spawn(Backend::Sqlite, Limits::default())
        .await
        .expect("SQLite always runs");
    let status = app
        .orgs()
        .create_organization(with_description(&app, 5_000_000))
        .await
        .expect_err("5 MB is over the 4 MiB limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "MESSAGE_TOO_LARGE");
    assert_eq!(app.orgs_named("Big Corp").await, 0);
    assert_eq!(app.calls(CREATE, "RESOURCE_EXHAUSTED").await, 1);
    // Just under the limit: decoded, then refused by validation (description ≤ 1,000).
    let status = app
        .orgs()
        .create_organization(with_description(&app, 4 * 1024 * 1024 - 1024))
        .await
        .expect_err("the description is too long");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(app.orgs_named("Big Corp").await, 0);
    // The limit is a setting.
    app.stop().await;
    let small = Limits {
        max_message_bytes: 64 * 1024,
        ..Limits::default()
    };
    let app = spawn(Backend::Sqlite, small).await.expect("SQLite");
    let status = app
        .orgs()
        .create_organization(with_description(&app, 65 * 1024))
        .await
        .expect_err("over 64 KiB");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    app.orgs()
        .create_organization(app.create("Small Corp"))
        .await
        .expect("a small message passes");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_outlives_the_request_timeout() {
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let app = spawn(Backend::Sqlite, limits).await.expect("SQLite");
    let created = app
        .orgs()
        .create_organization(app.create("Watched Corp"))
        .await
        .expect("create")
        .into_inner()
        .organization
        .expect("organization");
    let watch = proto::WatchEventsRequest {
        organization_id: created.id.clone(),
        ..Default::default()
    };
    let mut stream = app
        .orgs()
        .watch_events(authed(watch, &app.root()))
        .await
        .expect("watch")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let update = proto::UpdateOrganizationRequest {
        organization: Some(proto::Organization {
            id: created.id.clone(),
            description: "still watched".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["description".into()],
        }),
    };
    app.orgs()
        .update_organization(authed(update, &app.root()))
        .await
        .expect("update");
    // The creation may still be sequenced after the watch began: skip it.
    let mut types = Vec::new();
    while types.len() < 3 && !types.contains(&"organization.updated".to_owned()) {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("an event in time")
            .expect("the stream is still open")
            .expect("not ended")
            .event
            .expect("event");
        types.push(event.r#type);
    }
    assert_eq!(
        types.last().map(String::as_str),
        Some("organization.updated"),
        "{types:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_metadata_and_webhook_bodies_are_refused() {
    let app = spawn(Backend::Sqlite, Limits::default())
        .await
        .expect("SQLite");
    let padded = |name: &str, bytes: usize| {
        let mut request = app.create(name);
        let padding = "y".repeat(bytes).parse().expect("metadata value");
        request.metadata_mut().insert("x-padding", padding);
        request
    };
    // Over the 16 KiB header block: HTTP/2 answers 431 before any service runs (gRPC
    // clients map that status to UNKNOWN).
    let refused: Status = app
        .orgs()
        .create_organization(padded("Loud Corp", 20 * 1024))
        .await
        .expect_err("a 20 KiB header block is over the limit");
    assert!(refused.message().contains("431"), "{refused:?}");
    assert_eq!(app.orgs_named("Loud Corp").await, 0);
    app.orgs()
        .create_organization(padded("Quiet Corp", 8 * 1024))
        .await
        .expect("an 8 KiB header block passes, and the server still answers");

    let webhook = format!("http://127.0.0.1:{}/webhooks/stripe", app.http_port);
    let client = reqwest::Client::new();
    // The server answers 413 once the body passes the limit and closes the connection
    // without reading the rest, so the client may still be writing then and see its
    // write fail (a broken pipe or reset) instead of reading the answer. Either way the
    // body was refused unread: without the limit the server would read all 2 MiB and
    // answer something else (a bad signature), and the next request shows it still serves.
    match client
        .post(&webhook)
        .body(vec![b'{'; 2 * 1024 * 1024])
        .send()
        .await
    {
        Ok(big) => assert_eq!(big.status(), 413),
        Err(e) => assert!(e.is_request(), "neither 413 nor a refused body: {e:?}"),
    }
    // A new client: the refused request's connection is closed by the server.
    let small = reqwest::Client::new()
        .post(&webhook)
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_ne!(small.status(), 413);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_at_most_max_concurrent_streams() {
    let limits = Limits {
        max_concurrent_streams: 1,
        ..Limits::default()
    };
    let app = spawn(Backend::Sqlite, limits).await.expect("SQLite");
    let watch = proto::WatchEventsRequest {
        organization_id: "internal".into(),
        ..Default::default()
    };
    let stream = app
        .orgs()
        .watch_events(authed(watch, &app.root()))
        .await
        .expect("watch")
        .into_inner();
    let get = || {
        let mut request = authed(
            proto::GetOrganizationRequest {
                organization_id: "internal".into(),
            },
            &app.root(),
        );
        request.set_timeout(Duration::from_secs(1));
        request
    };
    // The open watch is the connection's one stream: the client holds the next call
    // back until its deadline, while another connection is served.
    let waited = app.orgs().get_organization(get()).await;
    let waited = waited.expect_err("no stream free on this connection");
    assert!(
        matches!(waited.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{waited:?}"
    );
    let other = Channel::from_shared(app.channel_url())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    OrganizationServiceClient::new(other)
        .get_organization(get())
        .await
        .expect("another connection has its own streams");
    drop(stream);
    let mut served = None;
    for _ in 0..50 {
        match app.orgs().get_organization(get()).await {
            Ok(response) => {
                served = Some(response);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(served.is_some(), "the stream is free once the watch ends");
    app.stop().await;
}
