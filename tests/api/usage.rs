//! Usage metering: RecordUsage, RecordUsageBatch and StreamUsage — duplicates counted
//! once, the event window, per-event refusals, attribution at `occurred_at`, recorders.

use chrono::Datelike;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
};
use tenantry::{
    proto::{self, UsageEventStatus as S, UsageMetric as M},
    storage::entities::{agent_assignments, usage_counters},
};
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, authed, reason, violations},
    on_both_backends,
    organizations::{
        agent_row, agent_uuid, create, named_on, org_uuid, register_agent, tenant, usd,
    },
};

/// A timestamp `seconds` from now (negative = past).
pub(crate) fn at(seconds: i64) -> prost_types::Timestamp {
    let t = chrono::Utc::now() + chrono::Duration::seconds(seconds);
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A usage event happening now (after the agents a test registered).
pub(crate) fn event(
    id: &str,
    agent: &str,
    metric: M,
    quantity: i64,
    cost: &str,
) -> proto::UsageEvent {
    proto::UsageEvent {
        event_id: id.into(),
        agent_id: agent.into(),
        metric: metric as i32,
        quantity,
        cost: Some(usd(cost)),
        occurred_at: Some(at(0)),
        dimensions: Default::default(),
    }
}

/// A SYSTEM token.
pub(crate) fn system(app: &TestApp) -> String {
    app.token("SYSTEM", "internal")
}

/// RecordUsage as `token`.
pub(crate) async fn record(
    app: &TestApp,
    token: &str,
    org: &str,
    event: proto::UsageEvent,
) -> Result<proto::UsageEventResult, tonic::Status> {
    app.billing()
        .record_usage(authed(
            proto::RecordUsageRequest {
                organization_id: org.into(),
                event: Some(event),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().result.expect("result"))
}

/// RecordUsageBatch as `token`, expected to succeed.
pub(crate) async fn batch(
    app: &TestApp,
    token: &str,
    org: &str,
    events: Vec<proto::UsageEvent>,
) -> proto::RecordUsageBatchResponse {
    app.billing()
        .record_usage_batch(authed(
            proto::RecordUsageBatchRequest {
                organization_id: org.into(),
                events,
            },
            token,
        ))
        .await
        .expect("record batch")
        .into_inner()
}

async fn counters(app: &TestApp, org: &str) -> usage_counters::Model {
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    usage_counters::Entity::find_by_id((org_uuid(org), month))
        .one(app.store.db())
        .await
        .expect("read counters")
        .expect("counter row")
}

async fn duplicates_are_counted_once_and_the_window_is_enforced(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let org = tenant(&app, "Metered", "").await;
    let agent = register_agent(&app, &root, &org.id, "Counter").await;
    let sys = system(&app);

    let first = record(
        &app,
        &sys,
        &org.id,
        event("e-1", &agent.id, M::Tokens, 1200, "0.36"),
    )
    .await
    .expect("first");
    assert_eq!(first.status, S::Accepted as i32);
    let again = record(
        &app,
        &sys,
        &org.id,
        event("e-1", &agent.id, M::Tokens, 1200, "0.36"),
    )
    .await
    .expect("retry");
    assert_eq!(again.status, S::Duplicate as i32);
    let c = counters(&app, &org.id).await;
    assert_eq!((c.tokens, c.cost_micros, c.events), (1200, 360_000, 1));

    for (offset, name) in [(-36 * 24 * 3600, "too old"), (6 * 60, "too far ahead")] {
        let mut late = event(name, &agent.id, M::Tokens, 1, "0.01");
        late.occurred_at = Some(at(offset));
        let err = record(&app, &sys, &org.id, late).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}");
        assert_eq!(reason(&err), "EVENT_OUT_OF_WINDOW", "{name}");
        assert_eq!(violations(&err), vec!["event.occurred_at".to_owned()]);
    }
    let mut edge = event("edge", &agent.id, M::Messages, 3, "0");
    edge.occurred_at = Some(at(4 * 60));
    let ok = record(&app, &sys, &org.id, edge)
        .await
        .expect("4 minutes ahead");
    assert_eq!(ok.status, S::Accepted as i32);

    let mut bad = event("bad", &agent.id, M::Unspecified, 1, "0.0000001");
    bad.cost = Some(usd("0.0000001"));
    let err = record(&app, &sys, &org.id, bad)
        .await
        .expect_err("bad event");
    assert_eq!(reason(&err), "INVALID_EVENT");
    let c = counters(&app, &org.id).await;
    assert_eq!((c.tokens, c.messages, c.events), (1200, 3, 2));
    app.stop().await;
}

async fn a_bad_event_never_fails_the_others(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    // Two agents: more than the free plan's one.
    let org = create(&app, &root, named_on("Batcher", "pro")).await;
    let other = tenant(&app, "Elsewhere", "").await;
    let good = register_agent(&app, &root, &org.id, "Good").await;
    let sleepy = register_agent(&app, &root, &org.id, "Sleepy").await;
    let foreign = register_agent(&app, &root, &other.id, "Foreign").await;
    let mut row = agent_row(&app, &sleepy.id).await.into_active_model();
    row.status = Set("SUSPENDED".into());
    row.update(app.store.db()).await.expect("suspend agent");
    let sys = system(&app);

    batch(
        &app,
        &sys,
        &org.id,
        vec![event("seen", &good.id, M::Tokens, 5, "0.01")],
    )
    .await;
    let mut old = event("old", &good.id, M::Tokens, 1, "0.01");
    old.occurred_at = Some(at(-40 * 24 * 3600));
    let mut euros = event("euros", &good.id, M::Tokens, 1, "0.01");
    euros.cost = Some(proto::Money {
        currency_code: "EUR".into(),
        amount: "0.01".into(),
    });
    let events = vec![
        event("a", &good.id, M::Tokens, 100, "0.03"),
        event("seen", &good.id, M::Tokens, 5, "0.01"),
        event("a", &good.id, M::Tokens, 100, "0.03"),
        event("b", &foreign.id, M::Tokens, 1, "0.01"),
        event("c", &sleepy.id, M::Tokens, 1, "0.01"),
        old,
        euros,
        event("d", "agt_nonsense", M::Tokens, 1, "0.01"),
        event("e", &good.id, M::Conversations, 2, "0.50"),
        event("b", &foreign.id, M::Tokens, 1, "0.01"),
    ];
    let response = batch(&app, &sys, &org.id, events).await;
    let shape: Vec<(u32, i32, String)> = response
        .results
        .iter()
        .map(|r| (r.index, r.status, r.reason.clone()))
        .collect();
    let expected = vec![
        (0, S::Accepted as i32, String::new()),
        (1, S::Duplicate as i32, String::new()),
        (2, S::Duplicate as i32, String::new()),
        (3, S::Refused as i32, "UNKNOWN_AGENT".into()),
        (4, S::Refused as i32, "AGENT_SUSPENDED".into()),
        (5, S::Refused as i32, "EVENT_OUT_OF_WINDOW".into()),
        (6, S::Refused as i32, "INVALID_EVENT".into()),
        (7, S::Refused as i32, "INVALID_EVENT".into()),
        (8, S::Accepted as i32, String::new()),
        // A repeat of a refused event is refused the same way, not a duplicate.
        (9, S::Refused as i32, "UNKNOWN_AGENT".into()),
    ];
    assert_eq!(shape, expected);
    assert_eq!(
        (
            response.accepted_count,
            response.duplicate_count,
            response.refused_count
        ),
        (2, 2, 6)
    );
    let c = counters(&app, &org.id).await;
    assert_eq!(
        (c.tokens, c.conversations, c.cost_micros),
        (105, 2, 540_000)
    );

    let empty = app
        .billing()
        .record_usage_batch(authed(
            proto::RecordUsageBatchRequest {
                organization_id: org.id.clone(),
                events: vec![],
            },
            &sys,
        ))
        .await
        .expect_err("empty batch");
    assert_eq!(empty.code(), Code::InvalidArgument);
    let too_many = (0..1001)
        .map(|i| event(&format!("x{i}"), &good.id, M::Logs, 1, "0"))
        .collect();
    let err = app
        .billing()
        .record_usage_batch(authed(
            proto::RecordUsageBatchRequest {
                organization_id: org.id.clone(),
                events: too_many,
            },
            &sys,
        ))
        .await
        .expect_err("1001 events");
    assert_eq!(violations(&err), vec!["events".to_owned()]);
    assert_eq!(
        counters(&app, &org.id).await.logs,
        0,
        "nothing of a refused batch is written"
    );
    app.stop().await;
}

async fn inactive_orgs_refuse_usage_but_acknowledge_duplicates(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let org = tenant(&app, "Sleeper", "").await;
    let agent = register_agent(&app, &root, &org.id, "Worker").await;
    let sys = system(&app);
    record(
        &app,
        &sys,
        &org.id,
        event("before", &agent.id, M::Tokens, 10, "0.01"),
    )
    .await
    .expect("active");
    app.orgs()
        .deactivate_organization(authed(
            proto::DeactivateOrganizationRequest {
                organization_id: org.id.clone(),
                reason: "unpaid".into(),
                ..Default::default()
            },
            &root,
        ))
        .await
        .expect("deactivate");
    let err = record(
        &app,
        &sys,
        &org.id,
        event("after", &agent.id, M::Tokens, 10, "0.01"),
    )
    .await
    .expect_err("inactive");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "ORG_INACTIVE");
    let replay = record(
        &app,
        &sys,
        &org.id,
        event("before", &agent.id, M::Tokens, 10, "0.01"),
    )
    .await
    .expect("retry of an accepted event");
    assert_eq!(replay.status, S::Duplicate as i32);
    assert_eq!(counters(&app, &org.id).await.events, 1);
    app.stop().await;
}

async fn events_belong_to_the_org_of_the_agent_at_occurred_at(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let a = tenant(&app, "Origin", "").await;
    let b = tenant(&app, "Destination", "").await;
    let agent = register_agent(&app, &root, &a.id, "Traveller").await;
    let sys = system(&app);
    let before_move = at(0);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.orgs()
        .assign_agent(authed(
            proto::AssignAgentRequest {
                agent_id: agent.id.clone(),
                organization_id: b.id.clone(),
                ..Default::default()
            },
            &root,
        ))
        .await
        .expect("move agent");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let after_move = at(0);
    let when = |id: &str, t: &prost_types::Timestamp| proto::UsageEvent {
        occurred_at: Some(*t),
        ..event(id, &agent.id, M::Tokens, 7, "0.07")
    };
    let late_for_a = record(&app, &sys, &a.id, when("late-a", &before_move))
        .await
        .expect("late event of the old org");
    assert_eq!(late_for_a.status, S::Accepted as i32);
    for (org, id, t) in [
        (&b.id, "early-b", &before_move),
        (&a.id, "stray-a", &after_move),
    ] {
        let err = record(&app, &sys, org, when(id, t)).await.expect_err(id);
        assert_eq!(
            (err.code(), reason(&err).as_str()),
            (Code::NotFound, "UNKNOWN_AGENT")
        );
    }
    record(&app, &sys, &b.id, when("now-b", &after_move))
        .await
        .expect("new org after the move");
    assert_eq!(counters(&app, &a.id).await.tokens, 7);
    assert_eq!(counters(&app, &b.id).await.tokens, 7);
    app.stop().await;
}

async fn recorders_are_system_and_the_orgs_own_api_key(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let org = tenant(&app, "Keyed", "").await;
    let other = tenant(&app, "Other Keyed", "").await;
    let agent = register_agent(&app, &root, &org.id, "Keyed Agent").await;
    let key_of = |id: String| {
        let app = &app;
        let root = root.clone();
        async move {
            app.orgs()
                .regenerate_api_key(authed(
                    proto::RegenerateApiKeyRequest {
                        organization_id: id,
                    },
                    &root,
                ))
                .await
                .expect("api key")
                .into_inner()
                .api_key
        }
    };
    let own_key = key_of(org.id.clone()).await;
    let other_key = key_of(other.id.clone()).await;
    let ok = record(
        &app,
        &own_key,
        &org.id,
        event("k1", &agent.id, M::Minutes, 3, "0.30"),
    )
    .await
    .expect("own api key");
    assert_eq!(ok.status, S::Accepted as i32);
    for credential in [other_key, app.token("CONFIG_ADMIN", &org.id), root.clone()] {
        let err = record(
            &app,
            &credential,
            &org.id,
            event("k2", &agent.id, M::Minutes, 1, "0"),
        )
        .await
        .expect_err("not a recorder");
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    assert_eq!(counters(&app, &org.id).await.minutes, 3);
    app.stop().await;
}

async fn streams_commit_each_batch_and_ack_all(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let org = tenant(&app, "Streamer", "").await;
    let agent = register_agent(&app, &root, &org.id, "Chatty").await;
    let sys = system(&app);
    let batches: Vec<proto::StreamUsageRequest> = (0..3)
        .map(|b| proto::StreamUsageRequest {
            organization_id: if b == 0 {
                org.id.clone()
            } else {
                String::new()
            },
            events: (0..200)
                .map(|i| {
                    // Batch 2 repeats batch 1's events 0..99, of which s200 was refused
                    // (invalid metric) and so is accepted now.
                    let n = if b == 2 && i >= 100 {
                        200 + i - 100
                    } else {
                        b * 200 + i
                    };
                    let mut e = event(&format!("s{n}"), &agent.id, M::Messages, 1, "0.001");
                    if i == 0 {
                        e.metric = M::Unspecified as i32;
                    }
                    e
                })
                .collect(),
        })
        .collect();
    let response = app
        .billing()
        .stream_usage(authed(tokio_stream::iter(batches), &sys))
        .await
        .expect("stream")
        .into_inner();
    let acks: Vec<(u32, u32, u32, u32)> = response
        .batches
        .iter()
        .map(|b| {
            (
                b.batch_index,
                b.accepted_count,
                b.duplicate_count,
                b.refused_count,
            )
        })
        .collect();
    assert_eq!(acks, vec![(0, 199, 0, 1), (1, 199, 0, 1), (2, 100, 99, 1)]);
    assert_eq!(
        response.batches[2].refused_results[0].reason,
        "INVALID_EVENT"
    );
    assert_eq!(
        (
            response.accepted_count,
            response.duplicate_count,
            response.refused_count
        ),
        (498, 99, 3)
    );
    let c = counters(&app, &org.id).await;
    assert_eq!((c.messages, c.cost_micros), (498, 498_000));

    let other = tenant(&app, "Not Mine", "").await;
    let mixed = vec![
        proto::StreamUsageRequest {
            organization_id: org.id.clone(),
            events: vec![event("m1", &agent.id, M::Messages, 1, "0")],
        },
        proto::StreamUsageRequest {
            organization_id: other.id.clone(),
            events: vec![event("m2", &agent.id, M::Messages, 1, "0")],
        },
    ];
    let err = app
        .billing()
        .stream_usage(authed(tokio_stream::iter(mixed), &sys))
        .await
        .expect_err("two orgs in one stream");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        counters(&app, &org.id).await.messages,
        499,
        "the first batch stays committed"
    );
    app.stop().await;
}

async fn micro_amounts_sum_exactly(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let org = tenant(&app, "Tiny", "").await;
    let agent = register_agent(&app, &root, &org.id, "Tiny Agent").await;
    let sys = system(&app);
    for b in 0..10 {
        let events = (0..1000)
            .map(|i| event(&format!("t{b}-{i}"), &agent.id, M::Tokens, 1, "0.000001"))
            .collect();
        let response = batch(&app, &sys, &org.id, events).await;
        assert_eq!(response.accepted_count, 1000);
    }
    let c = counters(&app, &org.id).await;
    assert_eq!(
        (c.tokens, c.cost_micros),
        (10_000, 10_000),
        "0.000001 × 10,000 = 0.01 exactly"
    );
    app.stop().await;
}

/// Concurrent recorders send the same event ids, half of them dated in the previous
/// month: each id is counted once in total, whichever month's counter lock a batch held
/// (a batch that lost the race on the unique key is retried and sees the duplicate).
async fn concurrent_duplicates_are_counted_once_across_months(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let root = app.root();
    let org = tenant(&app, "Racy", "").await;
    let agent = register_agent(&app, &root, &org.id, "Racer").await;
    // The agent must have belonged to the org at the earlier date: backdate its assignment.
    let month_start = chrono::Utc::now()
        .date_naive()
        .with_day(1)
        .expect("first day")
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    let last_month = month_start - chrono::Duration::hours(1);
    let assignment = agent_assignments::Entity::find()
        .filter(agent_assignments::Column::AgentId.eq(agent_uuid(&agent.id)))
        .one(app.store.db())
        .await
        .expect("read assignment")
        .expect("assignment");
    let mut row = assignment.into_active_model();
    row.assign_time = Set(last_month.timestamp_micros() - 1_000_000);
    row.update(app.store.db())
        .await
        .expect("backdate assignment");
    let sys = system(&app);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (org_id, agent_id, sys) = (org.id.clone(), agent.id.clone(), sys.clone());
        let mut client = app.billing();
        tasks.push(tokio::spawn(async move {
            let events = (0..50)
                .map(|i| {
                    let mut e = event(&format!("same-{i}"), &agent_id, M::Tokens, 1, "0.01");
                    if t % 2 == 1 {
                        e.occurred_at = Some(prost_types::Timestamp {
                            seconds: last_month.timestamp(),
                            nanos: 0,
                        });
                    }
                    e
                })
                .collect();
            client
                .record_usage_batch(authed(
                    proto::RecordUsageBatchRequest {
                        organization_id: org_id,
                        events,
                    },
                    &sys,
                ))
                .await
                .expect("batch")
                .into_inner()
        }));
    }
    let (mut accepted, mut duplicate) = (0, 0);
    for task in tasks {
        let response = task.await.expect("recorder");
        accepted += response.accepted_count;
        duplicate += response.duplicate_count;
    }
    assert_eq!((accepted, duplicate), (50, 350));
    let all = usage_counters::Entity::find()
        .filter(usage_counters::Column::OrganizationId.eq(org_uuid(&org.id)))
        .all(app.store.db())
        .await
        .expect("counters");
    let tokens: i64 = all.iter().map(|c| c.tokens).sum();
    let cost: i64 = all.iter().map(|c| c.cost_micros).sum();
    assert_eq!((tokens, cost), (50, 500_000));
    app.stop().await;
}

on_both_backends!(
    concurrent_duplicates_are_counted_once_across_months,
    duplicates_are_counted_once_and_the_window_is_enforced,
    a_bad_event_never_fails_the_others,
    inactive_orgs_refuse_usage_but_acknowledge_duplicates,
    events_belong_to_the_org_of_the_agent_at_occurred_at,
    recorders_are_system_and_the_orgs_own_api_key,
    streams_commit_each_batch_and_ack_all,
    micro_amounts_sum_exactly,
);
