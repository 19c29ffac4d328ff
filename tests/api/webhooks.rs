//! Webhook endpoints and deliveries: CRUD and validation, signed deliveries, retries
//! with the same event id, dead letters, type filters, cancellation on delete, an
//! agency receiving its tenants' events, and racing dispatchers sending each delivery
//! once.

use std::{collections::HashMap, sync::Arc, time::Duration};

use hmac::{Hmac, Mac};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use sha2::Sha256;
use tenantry::{
    config::Settings,
    domain::{
        clock::{FixedClock, from_micros},
        events::types,
        ids::{self, IdKind},
    },
    events::{dispatcher, outbox},
    grpc::Ctx,
    proto,
    storage::entities::{audit_entries, webhook_deliveries, webhook_endpoints},
};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::{
    helpers::{Backend, SECRET, TestApp, authed, reason, violations},
    on_both_backends,
    organizations::{agency, audit_actions, mask, named, org_row, tenant},
    sinks::{HttpSink, WAIT},
};

on_both_backends!(
    endpoints_are_created_listed_and_deleted,
    bad_endpoints_are_refused_with_every_violation,
    members_may_not_manage_endpoints,
    an_organization_has_at_most_twenty_endpoints,
    events_are_delivered_signed,
    an_rpcs_event_reaches_the_endpoint,
    failed_deliveries_are_retried_with_the_same_event_id,
    deliveries_that_keep_failing_are_dead_lettered,
    endpoints_receive_only_the_event_types_they_filter,
    deleting_an_endpoint_cancels_its_pending_deliveries,
    an_agencys_endpoint_receives_its_tenants_events,
    an_agency_endpoint_gets_its_tenants_events_only_when_its_agency_admin_made_it,
    retries_wait_for_their_backoff_on_the_clock,
    racing_dispatchers_send_each_delivery_once,
);

/// Dispatcher rounds every 50 ms, retries after 100 ms, 200 ms, …
pub(crate) fn fast(s: &mut Settings) {
    s.events.poll_interval = Duration::from_millis(50);
    s.events.retry_base = Duration::from_millis(100);
}

fn endpoint(url: &str, event_types: &[&str]) -> proto::WebhookEndpoint {
    proto::WebhookEndpoint {
        url: url.into(),
        event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
        description: "test receiver".into(),
        ..Default::default()
    }
}

async fn try_create_endpoint(
    app: &TestApp,
    token: &str,
    org: &str,
    endpoint: proto::WebhookEndpoint,
    request_id: &str,
) -> Result<proto::CreateWebhookEndpointResponse, Status> {
    app.orgs()
        .create_webhook_endpoint(authed(
            proto::CreateWebhookEndpointRequest {
                organization_id: org.into(),
                endpoint: Some(endpoint),
                request_id: request_id.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

/// An endpoint of `org` for `url`, created by the root admin; returns (id, secret).
async fn create_endpoint(
    app: &TestApp,
    org: &str,
    url: &str,
    event_types: &[&str],
) -> (String, String) {
    let created = try_create_endpoint(app, &app.root(), org, endpoint(url, event_types), "")
        .await
        .expect("create endpoint");
    (created.endpoint.expect("endpoint").id, created.secret)
}

async fn list_endpoints(
    app: &TestApp,
    token: &str,
    org: &str,
) -> Result<Vec<proto::WebhookEndpoint>, Status> {
    app.orgs()
        .list_webhook_endpoints(authed(
            proto::ListWebhookEndpointsRequest {
                organization_id: org.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().endpoints)
}

async fn delete_endpoint(app: &TestApp, token: &str, org: &str, id: &str) -> Result<(), Status> {
    app.orgs()
        .delete_webhook_endpoint(authed(
            proto::DeleteWebhookEndpointRequest {
                organization_id: org.into(),
                endpoint_id: id.into(),
            },
            token,
        ))
        .await
        .map(|_| ())
}

/// Writes an event of `org` straight into the outbox, as a change would; returns its id.
pub(crate) async fn emit(
    app: &TestApp,
    org: &str,
    event_type: &'static str,
    data: serde_json::Value,
) -> String {
    let row = org_row(app, org).await;
    let tx = app.store.write().await.expect("transaction");
    let id = outbox::emit(&tx, app.store.now(), &row, event_type, "req-test", data)
        .await
        .expect("emit");
    tx.commit().await.expect("commit");
    ids::encode(IdKind::Event, id)
}

/// A context over the test server's database, as another replica's dispatcher has.
fn replica(app: &TestApp) -> Ctx {
    let mut settings = Settings::local("unused", SECRET);
    fast(&mut settings);
    Ctx::new(app.store.clone(), settings)
}

/// Checks a request's signature the way a receiver does.
fn assert_signed(secret: &str, request: &crate::sinks::Received) {
    let signature = request.header("tenantry-signature");
    let (t, v1) = signature
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature header {signature:?}"));
    assert_eq!(t, request.header("tenantry-timestamp"));
    let t: i64 = t.parse().expect("timestamp");
    assert!(
        (chrono::Utc::now().timestamp() - t).abs() < 300,
        "fresh timestamp"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(&request.body);
    mac.verify_slice(&hex::decode(v1).expect("hex signature"))
        .expect("the signature verifies with the endpoint's secret");
}

fn endpoint_uuid(id: &str) -> Uuid {
    ids::decode(IdKind::WebhookEndpoint, id).expect("endpoint id")
}

fn event_uuid(id: &str) -> Uuid {
    ids::decode(IdKind::Event, id).expect("event id")
}

/// The delivery rows of an endpoint.
async fn deliveries(app: &TestApp, endpoint: &str) -> Vec<webhook_deliveries::Model> {
    webhook_deliveries::Entity::find()
        .filter(webhook_deliveries::Column::EndpointId.eq(endpoint_uuid(endpoint)))
        .all(app.store.db())
        .await
        .expect("read deliveries")
}

/// The delivery of `event` to `endpoint`, once it has `status` (bounded wait).
async fn delivery_with_status(
    app: &TestApp,
    endpoint: &str,
    event: &str,
    status: &str,
) -> webhook_deliveries::Model {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let row = webhook_deliveries::Entity::find()
            .filter(webhook_deliveries::Column::EndpointId.eq(endpoint_uuid(endpoint)))
            .filter(webhook_deliveries::Column::EventId.eq(event_uuid(event)))
            .one(app.store.db())
            .await
            .expect("read delivery");
        match row {
            Some(row) if row.status == status => return row,
            other if tokio::time::Instant::now() >= deadline => {
                panic!("delivery never reached {status}: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn endpoints_are_created_listed_and_deleted(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Hooked", "").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    let wanted = endpoint(
        "https://hooks.example.com/tenantry?k=1",
        &[
            types::ORGANIZATION_UPDATED,
            types::MEMBER_INVITED,
            types::ORGANIZATION_UPDATED,
        ],
    );
    let created = try_create_endpoint(&app, &admin, &org.id, wanted.clone(), "create-1")
        .await
        .expect("create");
    let made = created.endpoint.clone().expect("endpoint");
    assert!(made.id.starts_with("whe_"), "{}", made.id);
    assert_eq!(made.organization_id, org.id);
    assert_eq!(made.url, "https://hooks.example.com/tenantry?k=1");
    assert_eq!(
        made.event_types,
        vec![types::ORGANIZATION_UPDATED, types::MEMBER_INVITED],
        "duplicates dropped, order kept"
    );
    assert_eq!(made.description, "test receiver");
    assert!(made.create_time.is_some());
    assert!(created.secret.starts_with("whsec_"));
    assert_eq!(created.secret.len(), "whsec_".len() + 64);
    let row = webhook_endpoints::Entity::find_by_id(endpoint_uuid(&made.id))
        .one(app.store.db())
        .await
        .expect("read")
        .expect("endpoint row");
    assert_eq!(row.secret, created.secret, "kept to sign deliveries");

    let again = try_create_endpoint(&app, &admin, &org.id, wanted, "create-1")
        .await
        .expect("retry");
    assert_eq!(
        again, created,
        "a retry returns the same endpoint and secret"
    );

    let (second, second_secret) = create_endpoint(&app, &org.id, "http://localhost:9/x", &[]).await;
    assert_ne!(second_secret, created.secret);
    let listed = list_endpoints(&app, &admin, &org.id).await.expect("list");
    assert_eq!(
        listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec![made.id.as_str(), second.as_str()]
    );
    assert_eq!(listed[0], made, "listed as created, without the secret");
    assert!(listed[1].event_types.is_empty(), "empty means all");

    // Another organization's admin cannot see or delete it; unknown ids are not found.
    let other = tenant(&app, "Other", "").await;
    let status = delete_endpoint(&app, &app.root(), &other.id, &made.id)
        .await
        .expect_err("another org's endpoint");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = delete_endpoint(&app, &admin, &org.id, "not-an-id")
        .await
        .expect_err("bad id");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(violations(&status), vec!["endpoint_id"]);

    delete_endpoint(&app, &admin, &org.id, &made.id)
        .await
        .expect("delete");
    let status = delete_endpoint(&app, &admin, &org.id, &made.id)
        .await
        .expect_err("deleted twice");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let listed = list_endpoints(&app, &admin, &org.id).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, second);

    assert_eq!(
        audit_actions(&app, &made.id).await,
        vec!["CreateWebhookEndpoint", "DeleteWebhookEndpoint"],
        "the retry wrote nothing"
    );
    let summaries = audit_entries::Entity::find()
        .filter(audit_entries::Column::TargetId.eq(made.id.as_str()))
        .all(app.store.db())
        .await
        .expect("audit");
    for entry in summaries {
        assert!(
            !format!("{entry:?}").contains(&created.secret),
            "no secret in the audit trail"
        );
    }
    app.stop().await;
}

async fn bad_endpoints_are_refused_with_every_violation(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Picky", "").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    let bad = proto::WebhookEndpoint {
        url: "http://hooks.example.com/x".into(),
        event_types: vec![
            types::ORGANIZATION_UPDATED.into(),
            "organization.exploded".into(),
        ],
        description: "d".repeat(501),
        ..Default::default()
    };
    let status = try_create_endpoint(&app, &admin, &org.id, bad, "")
        .await
        .expect_err("bad endpoint");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        violations(&status),
        vec![
            "endpoint.url",
            "endpoint.event_types[1]",
            "endpoint.description"
        ]
    );
    for url in [
        "",
        "not a url",
        "ftp://hooks.example.com/x",
        "http://10.0.0.1/x",
        "https://user:password@hooks.example.com/x",
        &format!("https://hooks.example.com/{}", "p".repeat(2048)),
    ] {
        let status = try_create_endpoint(&app, &admin, &org.id, endpoint(url, &[]), "")
            .await
            .expect_err(url);
        assert_eq!(status.code(), Code::InvalidArgument, "{url}: {status:?}");
        assert_eq!(violations(&status), vec!["endpoint.url"], "{url}");
    }
    let status = try_create_endpoint(&app, &admin, &org.id, proto::WebhookEndpoint::default(), "")
        .await
        .expect_err("empty endpoint");
    assert_eq!(violations(&status), vec!["endpoint.url"]);
    for url in [
        "http://127.0.0.1:8080/x",
        "http://[::1]/x",
        "http://localhost/x",
    ] {
        try_create_endpoint(&app, &admin, &org.id, endpoint(url, &[]), "")
            .await
            .unwrap_or_else(|s| panic!("{url}: {s:?}"));
    }
    assert_eq!(
        list_endpoints(&app, &admin, &org.id)
            .await
            .expect("list")
            .len(),
        3,
        "refused endpoints wrote nothing"
    );
    app.stop().await;
}

async fn members_may_not_manage_endpoints(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Guarded", "").await;
    let (id, _) = create_endpoint(&app, &org.id, "https://hooks.example.com/", &[]).await;
    let member = app.token("MEMBER", &org.id);
    let status = try_create_endpoint(
        &app,
        &member,
        &org.id,
        endpoint("https://a.example.com/", &[]),
        "",
    )
    .await
    .expect_err("member creates");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = list_endpoints(&app, &member, &org.id)
        .await
        .expect_err("member lists");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = delete_endpoint(&app, &member, &org.id, &id)
        .await
        .expect_err("member deletes");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // An admin of another organization is out of scope.
    let other = tenant(&app, "Elsewhere", "").await;
    let outsider = app.token("CONFIG_ADMIN", &other.id);
    let status = list_endpoints(&app, &outsider, &org.id)
        .await
        .expect_err("outsider lists");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(deliveries(&app, &id).await.len(), 0);
    app.stop().await;
}

async fn an_organization_has_at_most_twenty_endpoints(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = tenant(&app, "Busy", "").await;
    for i in 0..20 {
        create_endpoint(
            &app,
            &org.id,
            &format!("https://hooks.example.com/{i}"),
            &[],
        )
        .await;
    }
    let status = try_create_endpoint(
        &app,
        &app.root(),
        &org.id,
        endpoint("https://hooks.example.com/20", &[]),
        "",
    )
    .await
    .expect_err("21st endpoint");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "WEBHOOK_ENDPOINT_LIMIT");
    assert_eq!(
        list_endpoints(&app, &app.root(), &org.id)
            .await
            .expect("list")
            .len(),
        20
    );
    app.stop().await;
}

async fn events_are_delivered_signed(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, fast).await else {
        return;
    };
    let sink = HttpSink::start().await;
    let org = tenant(&app, "Signed", "").await;
    let (endpoint_id, secret) = create_endpoint(&app, &org.id, &sink.url(), &[]).await;
    let event = emit(
        &app,
        &org.id,
        types::MEMBER_INVITED,
        json!({ "email": "a@b.io" }),
    )
    .await;
    let got = sink.wait_for_event(&event, 1).await;
    assert_eq!(got.len(), 1, "delivered once");
    let request = &got[0];
    assert_signed(&secret, request);
    assert_eq!(request.path, "/hook");
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.header("user-agent"), "tenantry-webhooks/1");
    assert_eq!(request.header("tenantry-event-type"), "member.invited");
    assert_eq!(request.attempt(), 1);
    let delivery = request.header("tenantry-delivery-id");
    assert!(delivery.starts_with("whd_"), "{delivery}");
    let body = request.json();
    assert_eq!(body["id"], event);
    assert_eq!(body["type"], "member.invited");
    assert_eq!(body["organization_id"], org.id);
    assert_eq!(body["agency_id"], serde_json::Value::Null);
    assert_eq!(body["request_id"], "req-test");
    assert_eq!(body["data"], json!({ "email": "a@b.io" }));
    assert!(body["position"].as_i64().expect("position") >= 1);

    let row = delivery_with_status(&app, &endpoint_id, &event, "DELIVERED").await;
    assert_eq!(ids::encode(IdKind::WebhookDelivery, row.id), delivery);
    assert_eq!(row.attempts, 1);
    assert_eq!(row.last_status_code, Some(200));
    assert!(row.deliver_time.is_some());
    assert_eq!(row.lease_until, None);
    app.stop().await;
}

async fn an_rpcs_event_reaches_the_endpoint(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, fast).await else {
        return;
    };
    let sink = HttpSink::start().await;
    let org = tenant(&app, "Renamed", "").await;
    let (_, secret) =
        create_endpoint(&app, &org.id, &sink.url(), &[types::ORGANIZATION_UPDATED]).await;
    app.orgs()
        .update_organization(authed(
            proto::UpdateOrganizationRequest {
                organization: Some(proto::Organization {
                    id: org.id.clone(),
                    ..named("Renamed Again")
                }),
                update_mask: mask(&["name"]),
            },
            &app.root(),
        ))
        .await
        .expect("update");
    let got = sink
        .wait_until(WAIT, |all| {
            all.iter()
                .any(|r| r.header("tenantry-event-type") == "organization.updated")
        })
        .await;
    let request = got
        .iter()
        .find(|r| r.header("tenantry-event-type") == "organization.updated")
        .expect("organization.updated delivered");
    assert_signed(&secret, request);
    assert_eq!(request.json()["organization_id"], org.id);
    app.stop().await;
}

async fn failed_deliveries_are_retried_with_the_same_event_id(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, fast).await else {
        return;
    };
    let sink = HttpSink::failing_first(2).await;
    let org = tenant(&app, "Flaky", "").await;
    let (endpoint_id, secret) = create_endpoint(&app, &org.id, &sink.url(), &[]).await;
    let event = emit(&app, &org.id, types::ORGANIZATION_UPDATED, json!({})).await;
    let got = sink.wait_for_event(&event, 3).await;
    assert_eq!(
        got.iter().map(|r| r.attempt()).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        got.iter().map(|r| r.answered).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    let delivery = got[0].header("tenantry-delivery-id").to_owned();
    for request in &got {
        assert_eq!(request.event_id(), event);
        assert_eq!(request.header("tenantry-delivery-id"), delivery);
        assert_signed(&secret, request);
    }
    let row = delivery_with_status(&app, &endpoint_id, &event, "DELIVERED").await;
    assert_eq!(row.attempts, 3);
    assert_eq!(row.last_status_code, Some(200));
    assert_eq!(row.last_error, "");
    app.stop().await;
}

async fn deliveries_that_keep_failing_are_dead_lettered(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| {
        fast(s);
        s.events.max_attempts = 3;
    })
    .await
    else {
        return;
    };
    let sink = HttpSink::with_plan(Arc::new(|_| 503)).await;
    let org = tenant(&app, "Down", "").await;
    let (endpoint_id, _) = create_endpoint(&app, &org.id, &sink.url(), &[]).await;
    let event = emit(&app, &org.id, types::ORGANIZATION_UPDATED, json!({})).await;
    let row = delivery_with_status(&app, &endpoint_id, &event, "DEAD").await;
    assert_eq!(row.attempts, 3);
    assert_eq!(row.last_status_code, Some(503));
    assert!(row.last_error.contains("503"), "{}", row.last_error);
    assert_eq!(row.deliver_time, None);
    assert_eq!(row.lease_until, None);
    // Well past the next retry would have been due: nothing more is sent.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        sink.for_event(&event)
            .iter()
            .map(|r| r.attempt())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );

    // A receiver that is not listening at all fails the same way, with a reason.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let (unreachable, _) = create_endpoint(
        &app,
        &org.id,
        &format!("http://127.0.0.1:{closed}/hook"),
        &[types::MEMBER_REMOVED],
    )
    .await;
    let event = emit(&app, &org.id, types::MEMBER_REMOVED, json!({})).await;
    let row = delivery_with_status(&app, &unreachable, &event, "DEAD").await;
    assert_eq!(row.attempts, 3);
    assert_eq!(row.last_status_code, None);
    assert!(
        row.last_error.starts_with("connection failed"),
        "{}",
        row.last_error
    );
    app.stop().await;
}

async fn endpoints_receive_only_the_event_types_they_filter(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, fast).await else {
        return;
    };
    let (filtered_sink, all_sink) = (HttpSink::start().await, HttpSink::start().await);
    let org = tenant(&app, "Filtered", "").await;
    let (filtered, _) = create_endpoint(
        &app,
        &org.id,
        &filtered_sink.url(),
        &[types::ORGANIZATION_UPDATED],
    )
    .await;
    let (everything, _) = create_endpoint(&app, &org.id, &all_sink.url(), &[]).await;
    let invited = emit(&app, &org.id, types::MEMBER_INVITED, json!({})).await;
    let updated = emit(&app, &org.id, types::ORGANIZATION_UPDATED, json!({})).await;
    assert_eq!(all_sink.wait_for_event(&invited, 1).await.len(), 1);
    assert_eq!(all_sink.wait_for_event(&updated, 1).await.len(), 1);
    assert_eq!(filtered_sink.wait_for_event(&updated, 1).await.len(), 1);
    delivery_with_status(&app, &everything, &invited, "DELIVERED").await;
    delivery_with_status(&app, &filtered, &updated, "DELIVERED").await;
    assert!(
        deliveries(&app, &filtered)
            .await
            .iter()
            .all(|d| d.event_id != event_uuid(&invited)),
        "no delivery of a filtered-out type"
    );
    assert!(filtered_sink.for_event(&invited).is_empty());
    app.stop().await;
}

async fn deleting_an_endpoint_cancels_its_pending_deliveries(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| {
        fast(s);
        s.events.dispatcher = false;
    })
    .await
    else {
        return;
    };
    let sink = HttpSink::start().await;
    let org = tenant(&app, "Unhooked", "").await;
    let (endpoint_id, _) = create_endpoint(&app, &org.id, &sink.url(), &[]).await;
    let (kept, _) = create_endpoint(&app, &org.id, &sink.url(), &[]).await;
    let event = emit(&app, &org.id, types::ORGANIZATION_UPDATED, json!({})).await;
    while outbox::sequence(&app.store).await.expect("sequence") > 0 {}
    let pending = deliveries(&app, &endpoint_id).await;
    assert!(
        pending
            .iter()
            .any(|d| d.event_id == event_uuid(&event) && d.status == "PENDING")
    );
    delete_endpoint(&app, &app.root(), &org.id, &endpoint_id)
        .await
        .expect("delete");
    let rows = deliveries(&app, &endpoint_id).await;
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|d| d.status == "CANCELED"), "{rows:?}");
    dispatcher::round(&replica(&app)).await;
    let got = sink.for_event(&event);
    assert_eq!(got.len(), 1, "only the remaining endpoint got it");
    delivery_with_status(&app, &kept, &event, "DELIVERED").await;
    assert!(
        deliveries(&app, &endpoint_id)
            .await
            .iter()
            .all(|d| d.status == "CANCELED" && d.attempts == 0)
    );
    app.stop().await;
}

async fn an_agencys_endpoint_receives_its_tenants_events(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, fast).await else {
        return;
    };
    let sink = HttpSink::start().await;
    let parent = agency(&app, "Umbrella").await;
    let client = tenant(&app, "Client", &parent.id).await;
    let stranger = tenant(&app, "Stranger", "").await;
    let agency_admin = app.token("AGENCY_ADMIN", &parent.id);
    let created = try_create_endpoint(
        &app,
        &agency_admin,
        &parent.id,
        endpoint(&sink.url(), &[]),
        "",
    )
    .await
    .expect("agency endpoint");
    let (endpoint_id, secret) = (created.endpoint.expect("endpoint").id, created.secret);
    let strangers = emit(&app, &stranger.id, types::ORGANIZATION_UPDATED, json!({})).await;
    let clients = emit(
        &app,
        &client.id,
        types::ORGANIZATION_UPDATED,
        json!({ "n": 1 }),
    )
    .await;
    let got = sink.wait_for_event(&clients, 1).await;
    assert_eq!(got.len(), 1);
    assert_signed(&secret, &got[0]);
    let body = got[0].json();
    assert_eq!(body["organization_id"], client.id);
    assert_eq!(body["agency_id"], parent.id);
    delivery_with_status(&app, &endpoint_id, &clients, "DELIVERED").await;
    assert!(
        deliveries(&app, &endpoint_id)
            .await
            .iter()
            .all(|d| d.event_id != event_uuid(&strangers)),
        "an unrelated organization's events are not delivered"
    );
    app.stop().await;
}

async fn an_agency_endpoint_gets_its_tenants_events_only_when_its_agency_admin_made_it(
    backend: Backend,
) {
    let Some(app) = TestApp::spawn_with(backend, fast).await else {
        return;
    };
    let (by_config_admin, by_agency_admin) = (HttpSink::start().await, HttpSink::start().await);
    let parent = agency(&app, "Umbrella").await;
    let client = tenant(&app, "Client", &parent.id).await;
    let mut made = Vec::new();
    for (role, sink) in [
        ("CONFIG_ADMIN", &by_config_admin),
        ("AGENCY_ADMIN", &by_agency_admin),
    ] {
        let token = app.token(role, &parent.id);
        let created = try_create_endpoint(&app, &token, &parent.id, endpoint(&sink.url(), &[]), "")
            .await
            .unwrap_or_else(|s| panic!("{role} creates: {s:?}"));
        made.push(created.endpoint.expect("endpoint").id);
    }
    let included = |id: &str| {
        let id = endpoint_uuid(id);
        let db = app.store.db();
        async move {
            webhook_endpoints::Entity::find_by_id(id)
                .one(db)
                .await
                .expect("read")
                .expect("endpoint row")
                .include_tenants
        }
    };
    assert!(!included(&made[0]).await, "the CONFIG_ADMIN's");
    assert!(included(&made[1]).await, "the AGENCY_ADMIN's");

    let clients = emit(&app, &client.id, types::ORGANIZATION_UPDATED, json!({})).await;
    let own = emit(&app, &parent.id, types::ORGANIZATION_UPDATED, json!({})).await;
    assert_eq!(by_agency_admin.wait_for_event(&clients, 1).await.len(), 1);
    assert_eq!(by_agency_admin.wait_for_event(&own, 1).await.len(), 1);
    // Numbered after the tenant's event, so its fan-out has happened.
    assert_eq!(by_config_admin.wait_for_event(&own, 1).await.len(), 1);
    delivery_with_status(&app, &made[0], &own, "DELIVERED").await;
    assert!(
        deliveries(&app, &made[0])
            .await
            .iter()
            .all(|d| d.event_id != event_uuid(&clients)),
        "no delivery of the tenant's event to the CONFIG_ADMIN's endpoint"
    );
    assert!(by_config_admin.for_event(&clients).is_empty());
    app.stop().await;
}

/// The one delivery row of an endpoint.
async fn only_delivery(app: &TestApp, endpoint: &str) -> webhook_deliveries::Model {
    let mut rows = deliveries(app, endpoint).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.remove(0)
}

async fn retries_wait_for_their_backoff_on_the_clock(backend: Backend) {
    // Near the real time: receivers check the signature's timestamp against theirs.
    let clock = Arc::new(FixedClock::new(chrono::Utc::now()));
    let Some(app) = TestApp::spawn_with_clock(backend, clock.clone(), |s| {
        s.events.dispatcher = false;
    })
    .await
    else {
        return;
    };
    let sink = HttpSink::failing_first(2).await;
    let org = tenant(&app, "Patient", "").await;
    // Number the organization's creation before the endpoint exists: it gets one event.
    while outbox::sequence(&app.store).await.expect("sequence") > 0 {}
    let (endpoint_id, secret) = create_endpoint(&app, &org.id, &sink.url(), &[]).await;
    let ctx = replica(&app);
    let base = i64::try_from(ctx.settings.events.retry_base.as_micros()).expect("base");
    let event = emit(&app, &org.id, types::ORGANIZATION_UPDATED, json!({})).await;
    let start = app.store.now();

    dispatcher::round(&ctx).await;
    let row = only_delivery(&app, &endpoint_id).await;
    assert_eq!(row.event_id, event_uuid(&event));
    assert_eq!((row.status.as_str(), row.attempts), ("PENDING", 1));
    assert_eq!(row.last_status_code, Some(500));
    assert_eq!(
        row.next_attempt_time,
        start + base,
        "retried after the base"
    );
    assert_eq!(row.lease_until, None);

    dispatcher::round(&ctx).await;
    assert_eq!(
        sink.for_event(&event).len(),
        1,
        "not due at the same instant"
    );

    clock.set(from_micros(start + base));
    dispatcher::round(&ctx).await;
    let row = only_delivery(&app, &endpoint_id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("PENDING", 2));
    assert_eq!(
        row.next_attempt_time,
        start + base + 2 * base,
        "the second failure waits twice the base"
    );

    clock.set(from_micros(start + 3 * base - 1));
    dispatcher::round(&ctx).await;
    assert_eq!(
        sink.for_event(&event).len(),
        2,
        "not due a microsecond early"
    );

    clock.set(from_micros(start + 3 * base));
    dispatcher::round(&ctx).await;
    let row = only_delivery(&app, &endpoint_id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("DELIVERED", 3));
    assert_eq!(row.last_status_code, Some(200));
    assert_eq!(row.deliver_time, Some(start + 3 * base));
    let got = sink.for_event(&event);
    assert_eq!(
        got.iter()
            .map(|r| (r.attempt(), r.answered))
            .collect::<Vec<_>>(),
        vec![(1, 500), (2, 500), (3, 200)]
    );
    assert_signed(&secret, &got[2]);
    app.stop().await;
}

async fn racing_dispatchers_send_each_delivery_once(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| {
        fast(s);
        s.events.dispatcher = false;
    })
    .await
    else {
        return;
    };
    let sink = HttpSink::start().await;
    // Slow answers keep the claims held while the other dispatchers look.
    sink.set_delay(Duration::from_millis(30));
    let org = tenant(&app, "Raced", "").await;
    let (first, _) = create_endpoint(&app, &org.id, &sink.url(), &[]).await;
    let (second, _) = create_endpoint(&app, &org.id, &sink.url(), &[]).await;
    let mut events = Vec::new();
    for i in 0..10 {
        events.push(
            emit(
                &app,
                &org.id,
                types::ORGANIZATION_UPDATED,
                json!({ "i": i }),
            )
            .await,
        );
    }
    let replicas: Vec<Ctx> = (0..3).map(|_| replica(&app)).collect();
    for _ in 0..3 {
        let rounds = replicas.iter().map(|ctx| {
            let ctx = ctx.clone();
            tokio::spawn(async move { dispatcher::round(&ctx).await })
        });
        for round in rounds.collect::<Vec<_>>() {
            round.await.expect("round");
        }
    }
    let mut rows = deliveries(&app, &first).await;
    rows.extend(deliveries(&app, &second).await);
    assert!(rows.len() >= 20, "{} deliveries", rows.len());
    assert!(
        rows.iter()
            .all(|d| d.status == "DELIVERED" && d.attempts == 1),
        "{rows:?}"
    );
    let mut sent: HashMap<String, usize> = HashMap::new();
    for request in sink.requests() {
        *sent
            .entry(request.header("tenantry-delivery-id").to_owned())
            .or_default() += 1;
    }
    assert_eq!(sent.len(), rows.len(), "every delivery was sent");
    assert!(
        sent.values().all(|n| *n == 1),
        "a delivery was sent twice: {sent:?}"
    );
    for event in &events {
        assert_eq!(sink.for_event(event).len(), 2, "once per endpoint");
    }
    app.stop().await;
}
