//! Group commit of usage: concurrent RecordUsage calls of several tenants share
//! ingestion transactions. Whatever groups form, each event is stored once, each caller
//! gets its own answer, the spend cap and alerts hold, one tenant's refusals do not
//! touch another's outcome, and billed records keep their invoice.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
};
use tenantry::{
    domain::events::types,
    proto::{self, UsageEventStatus as S, UsageMetric as M},
    storage::entities::{
        audit_entries, billing_records, email_messages, outbox_events, spend_alerts,
        usage_counters, usage_events,
    },
};
use tonic::Code;
use uuid::Uuid;

use crate::{
    helpers::{Backend, TestApp, authed, reason},
    on_both_backends,
    organizations::{agent_row, agent_uuid, create, named_on, org_uuid, register_agent, usd},
    usage::{event, record, system},
};

on_both_backends!(
    concurrent_unary_calls_store_each_event_once_and_answer_each_caller,
    concurrent_unary_calls_stop_one_event_past_the_cap_and_alert_once,
    one_tenants_refusals_leave_the_other_tenants_outcomes_alone,
    usage_on_a_billed_record_adds_to_it_and_keeps_its_invoice,
    a_failed_group_answers_every_caller_from_its_own_transaction,
);

/// A tenant on a plan with room for several agents, and `agents` of its agents.
async fn tenant_with_agents(app: &TestApp, name: &str, agents: usize) -> (String, Vec<String>) {
    let root = app.root();
    let org = create(app, &root, named_on(name, "pro")).await;
    let mut ids = Vec::new();
    for i in 0..agents {
        ids.push(
            register_agent(app, &root, &org.id, &format!("{name} {i}"))
                .await
                .id,
        );
    }
    (org.id, ids)
}

/// `micros` as a USD amount.
fn amount(micros: i64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// A TOKENS event of `quantity` tokens costing `quantity` micro-dollars.
fn tokens(id: &str, agent: &str, quantity: i64) -> proto::UsageEvent {
    event(id, agent, M::Tokens, quantity, &amount(quantity))
}

/// The month's counter of `org`, if any.
async fn counter(app: &TestApp, org: &str) -> Option<usage_counters::Model> {
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    usage_counters::Entity::find_by_id((org_uuid(org), month))
        .one(app.store.db())
        .await
        .expect("read counter")
}

/// The stored events of `org`.
async fn stored(app: &TestApp, org: &str) -> Vec<usage_events::Model> {
    usage_events::Entity::find()
        .filter(usage_events::Column::OrganizationId.eq(org_uuid(org)))
        .all(app.store.db())
        .await
        .expect("read events")
}

/// The billing records of `org` by agent id.
async fn records(app: &TestApp, org: &str) -> HashMap<Uuid, billing_records::Model> {
    billing_records::Entity::find()
        .filter(billing_records::Column::OrganizationId.eq(org_uuid(org)))
        .all(app.store.db())
        .await
        .expect("read records")
        .into_iter()
        .map(|r| (r.agent_id, r))
        .collect()
}

/// The `tenantry_usage_events_ingested_total` sample of the metrics endpoint.
async fn ingested_metric(app: &TestApp) -> i64 {
    let body = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/metrics", app.http_port))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    body.lines()
        .find_map(|line| {
            line.strip_prefix("tenantry_usage_events_ingested_total ")?
                .parse()
                .ok()
        })
        .expect("usage counter sample")
}

/// One answered event: tenant, event id, status, agent and quantity.
type Answer = (usize, String, i32, String, i64);

/// 16 callers × 30 unary calls: callers 0-7 on one tenant, 8-15 spread over three
/// more, every third event id shared by the callers of a tenant, and a few
/// RecordUsageBatch calls of the shared ids racing them. Each id is accepted once.
async fn concurrent_unary_calls_store_each_event_once_and_answer_each_caller(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut tenants = Vec::new();
    for name in ["Busy", "Quiet A", "Quiet B", "Quiet C"] {
        tenants.push(tenant_with_agents(&app, name, 2).await);
    }
    let sys = system(&app);
    // An event's content depends on its id only, so any winner stores the same row.
    let content = |t: usize, i: usize, shared: bool| -> (String, usize, i64) {
        if shared {
            (format!("shared-{i}"), i % 2, 1 + i as i64)
        } else {
            (
                format!("own-{t}-{i}"),
                i % 2,
                1000 * (t as i64 + 1) + i as i64,
            )
        }
    };
    let mut calls = Vec::new();
    for t in 0..16 {
        let tenant = if t < 8 { 0 } else { 1 + t % 3 };
        let (org, agents) = tenants[tenant].clone();
        let (app_sys, client) = (sys.clone(), app.billing());
        calls.push(tokio::spawn(async move {
            let mut client = client;
            let mut answers: Vec<Answer> = Vec::new();
            for i in 0..30 {
                let (id, agent, quantity) = content(t, i, i % 3 == 0);
                let request = proto::RecordUsageRequest {
                    organization_id: org.clone(),
                    event: Some(tokens(&id, &agents[agent], quantity)),
                };
                let result = client
                    .record_usage(authed(request, &app_sys))
                    .await
                    .expect("record usage")
                    .into_inner()
                    .result
                    .expect("result");
                assert_eq!(result.event_id, id);
                answers.push((tenant, id, result.status, agents[agent].clone(), quantity));
            }
            answers
        }));
    }
    for (tenant, (org, agents)) in tenants.iter().enumerate() {
        let (org, agents, app_sys, client) =
            (org.clone(), agents.clone(), sys.clone(), app.billing());
        calls.push(tokio::spawn(async move {
            let mut client = client;
            let mut answers: Vec<Answer> = Vec::new();
            for start in (0..30).step_by(6) {
                let shared: Vec<(String, usize, i64)> = (start..start + 6)
                    .filter(|i| i % 3 == 0)
                    .map(|i| content(0, i, true))
                    .collect();
                let request = proto::RecordUsageBatchRequest {
                    organization_id: org.clone(),
                    events: shared
                        .iter()
                        .map(|(id, agent, quantity)| tokens(id, &agents[*agent], *quantity))
                        .collect(),
                };
                let response = client
                    .record_usage_batch(authed(request, &app_sys))
                    .await
                    .expect("record batch")
                    .into_inner();
                for (result, (id, agent, quantity)) in response.results.iter().zip(shared) {
                    answers.push((tenant, id, result.status, agents[agent].clone(), quantity));
                }
            }
            answers
        }));
    }
    let mut answers: Vec<Answer> = Vec::new();
    for call in calls {
        answers.extend(call.await.expect("caller"));
    }

    let mut accepted_total = 0;
    for (tenant, (org, agents)) in tenants.iter().enumerate() {
        let mine: Vec<&Answer> = answers.iter().filter(|a| a.0 == tenant).collect();
        // Each id: accepted by exactly one caller, a duplicate for every other.
        let mut by_id: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for a in &mine {
            by_id.entry(a.1.as_str()).or_default().push(a.2);
        }
        for (id, statuses) in &by_id {
            let accepted = statuses
                .iter()
                .filter(|s| **s == S::Accepted as i32)
                .count();
            let duplicate = statuses
                .iter()
                .filter(|s| **s == S::Duplicate as i32)
                .count();
            assert_eq!(
                (accepted, duplicate),
                (1, statuses.len() - 1),
                "{id} of tenant {tenant}: {statuses:?}"
            );
        }
        accepted_total += by_id.len() as i64;
        // Storage holds exactly the accepted ids, and the sums of their events.
        let unique: BTreeMap<&str, (&str, i64)> = mine
            .iter()
            .map(|a| (a.1.as_str(), (a.3.as_str(), a.4)))
            .collect();
        let rows = stored(&app, org).await;
        let ids: BTreeSet<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(rows.len(), unique.len(), "tenant {tenant}: one row per id");
        assert_eq!(ids, unique.keys().copied().collect(), "tenant {tenant}");
        let total: i64 = unique.values().map(|(_, q)| q).sum();
        let c = counter(&app, org).await.expect("counter row");
        assert_eq!(
            (c.tokens, c.cost_micros, c.events),
            (total, total, unique.len() as i64),
            "tenant {tenant}"
        );
        let by_agent = records(&app, org).await;
        for agent in agents {
            let sum: i64 = unique
                .values()
                .filter(|(a, _)| a == agent)
                .map(|(_, q)| q)
                .sum();
            let record = &by_agent[&agent_uuid(agent)];
            assert_eq!((record.tokens, record.cost_micros), (sum, sum), "{agent}");
        }
    }
    assert_eq!(
        ingested_metric(&app).await,
        accepted_total,
        "accepted events counted once"
    );
    app.stop().await;
}

async fn set_cap(app: &TestApp, org: &str, limit: &str) {
    app.billing()
        .set_spend_limit(authed(
            proto::SetSpendLimitRequest {
                organization_id: org.into(),
                monthly_spend_limit: Some(usd(limit)),
                billing_alerts: Some(proto::BillingAlerts {
                    alert_thresholds: vec![50, 80, 100],
                    alert_emails: vec!["billing@example.com".into()],
                    action_at_100: proto::SpendLimitAction::SuspendUsage as i32,
                }),
                etag: String::new(),
            },
            &app.root(),
        ))
        .await
        .expect("set spend limit");
}

/// Unary calls of a capped tenant and an uncapped one, interleaved by 16 callers:
/// 0.07 × 15 = 1.05 is the first total at the 1.00 cap, so exactly 15 are accepted;
/// each threshold fires once, with the cost right after its crossing event.
async fn concurrent_unary_calls_stop_one_event_past_the_cap_and_alert_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (capped, capped_agents) = tenant_with_agents(&app, "Capped", 1).await;
    let (free, free_agents) = tenant_with_agents(&app, "Uncapped", 1).await;
    set_cap(&app, &capped, "1.00").await;
    let sys = system(&app);
    let mut calls = Vec::new();
    for t in 0..16 {
        let (org, agent) = if t % 2 == 0 {
            (capped.clone(), capped_agents[0].clone())
        } else {
            (free.clone(), free_agents[0].clone())
        };
        let (app_sys, client) = (sys.clone(), app.billing());
        calls.push(tokio::spawn(async move {
            let mut client = client;
            let mut answers = Vec::new();
            for i in 0..10 {
                let request = proto::RecordUsageRequest {
                    organization_id: org.clone(),
                    event: Some(event(&format!("c{t}-{i}"), &agent, M::Tokens, 10, "0.07")),
                };
                let answer = match client.record_usage(authed(request, &app_sys)).await {
                    Ok(r) => {
                        assert_eq!(
                            r.into_inner().result.expect("result").status,
                            S::Accepted as i32
                        );
                        String::new()
                    }
                    Err(status) => {
                        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                        reason(&status)
                    }
                };
                answers.push((t % 2 == 0, answer));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.extend(call.await.expect("caller"));
    }
    let accepted = |capped: bool| {
        answers
            .iter()
            .filter(|(c, reason)| *c == capped && reason.is_empty())
            .count()
    };
    assert_eq!(accepted(true), 15, "{answers:?}");
    assert_eq!(accepted(false), 80, "the uncapped tenant refuses nothing");
    assert!(
        answers
            .iter()
            .all(|(_, r)| r.is_empty() || r == "SPEND_LIMIT_REACHED")
    );
    let c = counter(&app, &capped).await.expect("capped counter");
    assert_eq!((c.cost_micros, c.events), (1_050_000, 15));
    assert_eq!(stored(&app, &capped).await.len(), 15);
    let c = counter(&app, &free).await.expect("uncapped counter");
    assert_eq!((c.cost_micros, c.events), (5_600_000, 80));

    let alerts: Vec<(i32, i64)> = {
        let mut rows = spend_alerts::Entity::find()
            .filter(spend_alerts::Column::OrganizationId.eq(org_uuid(&capped)))
            .all(app.store.db())
            .await
            .expect("alerts");
        rows.sort_by_key(|a| a.threshold);
        rows.iter()
            .map(|a| (a.threshold, a.month_to_date_micros))
            .collect()
    };
    assert_eq!(alerts, vec![(50, 560_000), (80, 840_000), (100, 1_050_000)]);
    let crossed = outbox_events::Entity::find()
        .filter(outbox_events::Column::OrganizationId.eq(org_uuid(&capped)))
        .filter(outbox_events::Column::EventType.eq(types::USAGE_THRESHOLD_CROSSED))
        .all(app.store.db())
        .await
        .expect("outbox");
    assert_eq!(crossed.len(), 3, "one event per threshold");
    let audited = audit_entries::Entity::find()
        .filter(audit_entries::Column::OrganizationId.eq(org_uuid(&capped)))
        .filter(audit_entries::Column::Action.eq("SpendThresholdCrossed"))
        .all(app.store.db())
        .await
        .expect("audit");
    assert_eq!(audited.len(), 3, "one audit entry per threshold");
    let emails = email_messages::Entity::find()
        .filter(email_messages::Column::OrganizationId.eq(org_uuid(&capped)))
        .filter(email_messages::Column::Kind.eq("BILLING_ALERT"))
        .all(app.store.db())
        .await
        .expect("emails");
    assert_eq!(emails.len(), 3, "one email per threshold");
    app.stop().await;
}

/// A deactivated tenant and a tenant naming another's agent are refused call by call,
/// while a live tenant's calls, interleaved with theirs, are all accepted.
async fn one_tenants_refusals_leave_the_other_tenants_outcomes_alone(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (live, live_agents) = tenant_with_agents(&app, "Alive", 1).await;
    let (dead, dead_agents) = tenant_with_agents(&app, "Closed", 1).await;
    let (stray, _) = tenant_with_agents(&app, "Stray", 1).await;
    app.orgs()
        .deactivate_organization(authed(
            proto::DeactivateOrganizationRequest {
                organization_id: dead.clone(),
                reason: "unpaid".into(),
                ..Default::default()
            },
            &app.root(),
        ))
        .await
        .expect("deactivate");
    let sys = system(&app);
    let mut calls = Vec::new();
    for t in 0..12 {
        // Stray's events name Alive's agent: it never belonged to Stray.
        let (kind, org, agent) = match t % 3 {
            0 => ("live", live.clone(), live_agents[0].clone()),
            1 => ("dead", dead.clone(), dead_agents[0].clone()),
            _ => ("stray", stray.clone(), live_agents[0].clone()),
        };
        let (app_sys, client) = (sys.clone(), app.billing());
        calls.push(tokio::spawn(async move {
            let mut client = client;
            let mut answers = Vec::new();
            for i in 0..10 {
                let request = proto::RecordUsageRequest {
                    organization_id: org.clone(),
                    event: Some(event(&format!("x{t}-{i}"), &agent, M::Tokens, 5, "0.01")),
                };
                let answer = client
                    .record_usage(authed(request, &app_sys))
                    .await
                    .map(|r| r.into_inner().result.expect("result").status)
                    .map_err(|s| (s.code(), reason(&s)));
                answers.push((kind, answer));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.extend(call.await.expect("caller"));
    }
    for (kind, answer) in &answers {
        let expected = match *kind {
            "live" => Ok(S::Accepted as i32),
            "dead" => Err((Code::FailedPrecondition, "ORG_INACTIVE".to_owned())),
            _ => Err((Code::NotFound, "UNKNOWN_AGENT".to_owned())),
        };
        assert_eq!(answer, &expected, "{kind}");
    }
    let c = counter(&app, &live).await.expect("live counter");
    assert_eq!((c.tokens, c.cost_micros, c.events), (200, 400_000, 40));
    assert_eq!(stored(&app, &live).await.len(), 40);
    for org in [&dead, &stray] {
        assert!(stored(&app, org).await.is_empty());
        assert_eq!(counter(&app, org).await.map_or(0, |c| c.events), 0);
        assert!(records(&app, org).await.is_empty());
    }
    app.stop().await;
}

/// A record already billed on an invoice (a late event of a billed month) gains the
/// tokens and cost of new events, takes the agent's current name, and keeps its
/// invoice, rate and `custom_rate`; a new record takes the agent's own rate.
async fn usage_on_a_billed_record_adds_to_it_and_keeps_its_invoice(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (org, agents) = tenant_with_agents(&app, "Billed", 2).await;
    let sys = system(&app);
    record(&app, &sys, &org, tokens("first", &agents[0], 100))
        .await
        .expect("first event");
    let invoice = Uuid::now_v7();
    let billed = records(&app, &org).await[&agent_uuid(&agents[0])].clone();
    let mut row = billed.clone().into_active_model();
    row.invoice_id = Set(Some(invoice));
    row.revenue_micros = Set(12_345);
    row.custom_rate = Set(true);
    row.update(app.store.db()).await.expect("bill the record");
    let mut agent = agent_row(&app, &agents[0]).await.into_active_model();
    agent.name = Set("Renamed".into());
    agent.update(app.store.db()).await.expect("rename agent");
    let mut other = agent_row(&app, &agents[1]).await.into_active_model();
    other.billing_rate_micros = Set(Some(77_000_000));
    other.update(app.store.db()).await.expect("rate agent");

    let mut calls = Vec::new();
    for t in 0..8 {
        let (org, agents, app_sys, client) =
            (org.clone(), agents.clone(), sys.clone(), app.billing());
        calls.push(tokio::spawn(async move {
            let mut client = client;
            for i in 0..5 {
                let request = proto::RecordUsageRequest {
                    organization_id: org.clone(),
                    event: Some(tokens(&format!("late-{t}-{i}"), &agents[i % 2], 10)),
                };
                let result = client
                    .record_usage(authed(request, &app_sys))
                    .await
                    .expect("record usage")
                    .into_inner()
                    .result
                    .expect("result");
                assert_eq!(result.status, S::Accepted as i32);
            }
        }));
    }
    for call in calls {
        call.await.expect("caller");
    }
    let again = record(&app, &sys, &org, tokens("first", &agents[0], 100))
        .await
        .expect("retry");
    assert_eq!(again.status, S::Duplicate as i32);

    let all = records(&app, &org).await;
    assert_eq!(all.len(), 2, "one record per agent and month");
    let after = &all[&agent_uuid(&agents[0])];
    // 8 callers × 3 events of 10 tokens on agent 0 (i = 0, 2, 4).
    assert_eq!(
        (after.id, after.tokens, after.cost_micros),
        (billed.id, 340, 340)
    );
    assert_eq!(
        (
            after.invoice_id,
            after.revenue_micros,
            after.custom_rate,
            after.agent_name.as_str()
        ),
        (Some(invoice), 12_345, true, "Renamed")
    );
    let fresh = &all[&agent_uuid(&agents[1])];
    assert_eq!((fresh.tokens, fresh.cost_micros), (160, 160));
    assert_eq!(
        (fresh.revenue_micros, fresh.custom_rate, fresh.invoice_id),
        (77_000_000, true, None)
    );
    app.stop().await;
}

/// Runs `sql` with `values` on the app's database; the rows it returns.
async fn query(
    db: &impl sea_orm::ConnectionTrait,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> Result<Vec<sea_orm::QueryResult>, sea_orm::DbErr> {
    db.query_all_raw(sea_orm::Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        sql,
        values,
    ))
    .await
}

/// Holds the month's counter row of `org` locked (as an ingestion of another replica
/// would) in a transaction of its own; returns it and its backend pid.
async fn hold_counter(app: &TestApp, org: &str) -> (sea_orm::DatabaseTransaction, i32) {
    use sea_orm::{QuerySelect, TransactionTrait, sea_query::LockType};
    let tx = app.store.db().begin().await.expect("begin");
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    usage_counters::Entity::find_by_id((org_uuid(org), month))
        .lock(LockType::Update)
        .one(&tx)
        .await
        .expect("lock counter")
        .expect("counter row");
    let pid = query(&tx, "SELECT pg_backend_pid()", vec![])
        .await
        .expect("pid")[0]
        .try_get_by_index(0)
        .expect("pid");
    (tx, pid)
}

/// The queries of the app's sessions waiting for a lock `holder` holds.
async fn blocked_by(app: &TestApp, holder: i32) -> Vec<String> {
    query(
        app.store.db(),
        "SELECT query FROM pg_stat_activity \
         WHERE datname = current_database() AND $1 = ANY(pg_blocking_pids(pid))",
        vec![holder.into()],
    )
    .await
    .expect("pg_stat_activity")
    .iter()
    .map(|row| row.try_get_by_index(0).expect("query"))
    .collect()
}

/// Whether some transaction holds `org`'s counter row locked right now.
async fn counter_locked(app: &TestApp, org: &str) -> bool {
    use sea_orm::TransactionTrait;
    let tx = app.store.db().begin().await.expect("begin");
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let probe = query(
        &tx,
        "SELECT 1 FROM usage_counters WHERE organization_id = $1 AND month = $2 \
         FOR UPDATE NOWAIT",
        vec![org_uuid(org).into(), month.into()],
    )
    .await;
    let _ = tx.rollback().await;
    match probe {
        Ok(_) => false,
        Err(e) if tenantry::error::db_code(&e).as_deref() == Some("55P03") => true,
        Err(e) => panic!("probe: {e}"),
    }
}

/// How the callers of a round were grouped, as seen from the locks they wait on.
#[derive(Debug, PartialEq)]
enum Seen {
    /// One transaction holds `lo`'s counter and waits for `hi`'s: both callers' group.
    Together,
    /// The callers went in separate transactions.
    Apart,
}

/// A group whose transaction fails because of one caller's batch — an event id that
/// another transaction (another replica) recorded after the group read the recorded
/// ids — still answers every caller correctly, each from a transaction of its own, and
/// storage holds what the answers say. PostgreSQL only: the trigger needs row locks
/// and a second writer, which SQLite's single in-process writer does not allow.
///
/// A round: a blocker transaction holds a third tenant's counter, so its caller keeps
/// the (single) drain busy while caller `lo` (its batch holds the id `x`) and caller
/// `hi` queue behind it. Transaction `u` holds `hi`'s counter and has inserted `x` for
/// `lo` without committing. Once the blocker lets go, the next group reads (not seeing
/// `x`), locks `lo`'s counter and waits on `hi`'s; the test sees exactly that in
/// `pg_stat_activity` and with a NOWAIT probe, then commits `u`: the group's INSERT
/// hits `x`'s unique key and fails for both callers. The locks only prove that the two
/// callers shared a group; whether they did depends on when their calls queued, so a
/// round where they went apart is repeated (it still checks every answer).
async fn a_failed_group_answers_every_caller_from_its_own_transaction(backend: Backend) {
    if backend == Backend::Sqlite {
        return;
    }
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut orgs = Vec::new();
    for name in ["Grouped One", "Grouped Two", "Blocker"] {
        orgs.push(tenant_with_agents(&app, name, 1).await);
    }
    let (blk, blk_agents) = orgs.pop().expect("blocker");
    // `lo` is the organization whose counter a group locks first.
    orgs.sort_by_key(|(org, _)| org_uuid(org));
    let [(lo, lo_agents), (hi, hi_agents)] = <[_; 2]>::try_from(orgs).expect("two tenants");
    let sys = system(&app);
    // Counter rows to lock.
    for (org, agents) in [(&lo, &lo_agents), (&hi, &hi_agents), (&blk, &blk_agents)] {
        let seed = record(&app, &sys, org, tokens("seed", &agents[0], 1)).await;
        assert_eq!(seed.expect("seed").status, S::Accepted as i32);
    }
    let batch = |org: &str, events: Vec<proto::UsageEvent>| {
        let (client, sys) = (app.billing(), sys.clone());
        let request = authed(
            proto::RecordUsageBatchRequest {
                organization_id: org.to_owned(),
                events,
            },
            &sys,
        );
        tokio::spawn(async move {
            let mut client = client;
            let response = client.record_usage_batch(request).await;
            response.map(|r| {
                let r = r.into_inner().results;
                r.iter()
                    .map(|e| (e.event_id.clone(), e.status))
                    .collect::<Vec<_>>()
            })
        })
    };
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let (mut lo_total, mut hi_total) = (1, 1);
    let mut together = 0;
    for round in 0..20 {
        let (blocker, blocker_pid) = hold_counter(&app, &blk).await;
        let (u, u_pid) = hold_counter(&app, &hi).await;
        let x = format!("x-{round}");
        usage_events::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org_uuid(&lo)),
            event_id: Set(x.clone()),
            agent_id: Set(agent_uuid(&lo_agents[0])),
            metric: Set("TOKENS".into()),
            quantity: Set(1000),
            cost_micros: Set(1000),
            occurred_at: Set(chrono::Utc::now().timestamp_micros()),
            month: Set(month.clone()),
            channel: Set(String::new()),
            dimensions: Set("{}".into()),
            recorded_by: Set("system:other-replica".into()),
            create_time: Set(chrono::Utc::now().timestamp_micros()),
        }
        .insert(&u)
        .await
        .expect("insert x");
        let busy = batch(&blk, vec![tokens(&format!("b-{round}"), &blk_agents[0], 1)]);
        while blocked_by(&app, blocker_pid).await.is_empty() {
            tokio::task::yield_now().await;
        }
        // The drain is stuck behind the blocker: both calls queue (how soon is not
        // observable; a round where one was late is told apart below).
        let lo_call = batch(
            &lo,
            vec![
                tokens(&x, &lo_agents[0], 1000),
                tokens(&format!("lo-{round}"), &lo_agents[0], 10),
            ],
        );
        let hi_call = batch(
            &hi,
            vec![
                tokens(&format!("hi-{round}-a"), &hi_agents[0], 20),
                tokens(&format!("hi-{round}-b"), &hi_agents[0], 30),
            ],
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        blocker.commit().await.expect("release the blocker");
        assert_eq!(
            busy.await.expect("blocker call").expect("blocker batch"),
            vec![(format!("b-{round}"), S::Accepted as i32)]
        );
        let seen = loop {
            let waiting = blocked_by(&app, u_pid).await;
            if waiting
                .iter()
                .any(|q| q.contains("INSERT INTO usage_events"))
            {
                break Seen::Apart; // `lo` alone, stopped at `x`
            }
            if waiting.iter().any(|q| q.contains("usage_counters")) {
                break if counter_locked(&app, &lo).await {
                    Seen::Together
                } else {
                    Seen::Apart // `hi` alone
                };
            }
            tokio::task::yield_now().await;
        };
        u.commit().await.expect("commit x");
        let lo_answers = lo_call.await.expect("lo call").expect("lo batch");
        let hi_answers = hi_call.await.expect("hi call").expect("hi batch");
        assert_eq!(
            lo_answers,
            vec![
                (x.clone(), S::Duplicate as i32),
                (format!("lo-{round}"), S::Accepted as i32)
            ],
            "round {round}, {seen:?}"
        );
        assert_eq!(
            hi_answers,
            vec![
                (format!("hi-{round}-a"), S::Accepted as i32),
                (format!("hi-{round}-b"), S::Accepted as i32)
            ],
            "round {round}, {seen:?}"
        );
        lo_total += 10;
        hi_total += 50;
        // Storage matches the answers: `x` is the other transaction's row, counted by
        // neither counter nor record; the accepted events are stored and counted once.
        let lo_rows = stored(&app, &lo).await;
        let x_row = lo_rows.iter().find(|r| r.event_id == x).expect("x stored");
        assert_eq!(x_row.recorded_by, "system:other-replica");
        assert_eq!(lo_rows.len(), 1 + 2 * (round + 1), "round {round}");
        assert_eq!(stored(&app, &hi).await.len(), 1 + 2 * (round + 1));
        for (org, agent, total) in [
            (&lo, &lo_agents[0], lo_total),
            (&hi, &hi_agents[0], hi_total),
        ] {
            let c = counter(&app, org).await.expect("counter");
            let events = 1 + (round as i64 + 1) * if org == &lo { 1 } else { 2 };
            assert_eq!((c.tokens, c.cost_micros, c.events), (total, total, events));
            let r = &records(&app, org).await[&agent_uuid(agent)];
            assert_eq!((r.tokens, r.cost_micros), (total, total));
        }
        if seen == Seen::Together {
            together += 1;
            break;
        }
    }
    assert_eq!(
        together, 1,
        "the two callers never shared a group in 20 rounds"
    );
    app.stop().await;
}
