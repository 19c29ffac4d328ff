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
