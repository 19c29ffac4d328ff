//! Billing records and summaries (seed 000): one record per (organization, agent, month)
//! with tokens, cost and the agent's effective monthly rate as revenue; monthly sums.
//! The usage helpers at the top are shared by the quota and analytics suites.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Utc};
use sea_orm::{ActiveModelTrait, Set};
use tenantry::{
    domain::ids::{self, IdKind},
    proto::{self, UsageMetric},
    storage::entities::billing_records,
};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::{
    helpers::{Backend, TestApp, authed, violations},
    on_both_backends,
    organizations::{create, mask, named, named_on, org_uuid, register_agent, usd},
};

/// A usage event at `at` without dimensions.
pub(crate) fn event(
    id: &str,
    agent_id: &str,
    metric: UsageMetric,
    quantity: i64,
    cost: &str,
    at: DateTime<Utc>,
) -> proto::UsageEvent {
    proto::UsageEvent {
        event_id: id.into(),
        agent_id: agent_id.into(),
        metric: metric as i32,
        quantity,
        cost: Some(proto::Money {
            currency_code: String::new(),
            amount: cost.into(),
        }),
        occurred_at: Some(prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: at.timestamp_subsec_nanos() as i32,
        }),
        dimensions: Default::default(),
    }
}

/// The event with a `channel` dimension.
pub(crate) fn on_channel(mut event: proto::UsageEvent, channel: &str) -> proto::UsageEvent {
    event.dimensions.insert("channel".into(), channel.into());
    event
}

/// RecordUsage as SYSTEM, expected to be accepted.
pub(crate) async fn record(app: &TestApp, org_id: &str, event: proto::UsageEvent) {
    let result = app
        .billing()
        .record_usage(authed(
            proto::RecordUsageRequest {
                organization_id: org_id.into(),
                event: Some(event),
            },
            &app.token("SYSTEM", "internal"),
        ))
        .await
        .expect("record usage")
        .into_inner()
        .result
        .expect("result");
    assert_eq!(
        result.status,
        proto::UsageEventStatus::Accepted as i32,
        "{result:?}"
    );
}

/// The current instant: taken after the setup calls, so agents registered before it
/// belonged to their organization at it.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// `YYYY-MM` of an instant.
pub(crate) fn month_of(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
}

/// `YYYY-MM` `n` months before `month`.
fn months_before(month: &str, n: i32) -> String {
    let (y, m) = month.split_once('-').expect("month");
    let index = y.parse::<i32>().unwrap() * 12 + m.parse::<i32>().unwrap() - 1 - n;
    format!(
        "{:04}-{:02}",
        index.div_euclid(12),
        index.rem_euclid(12) + 1
    )
}

/// Sets an agent's custom monthly rate as the root admin.
async fn set_rate(app: &TestApp, agent: &proto::Agent, rate: &str) -> proto::Agent {
    app.orgs()
        .update_agent(authed(
            proto::UpdateAgentRequest {
                agent: Some(proto::Agent {
                    id: agent.id.clone(),
                    billing_rate: Some(usd(rate)),
                    ..Default::default()
                }),
                update_mask: mask(&["billing_rate"]),
            },
            &app.root(),
        ))
        .await
        .expect("set agent rate")
        .into_inner()
        .agent
        .expect("agent")
}

/// The seed's organization: rate 99.00, agent A with a custom 149.50, agent B on the
/// organization's rate.
struct Seed {
    org: proto::Organization,
    a: proto::Agent,
    b: proto::Agent,
    at: DateTime<Utc>,
}

async fn seed(app: &TestApp) -> Seed {
    let org = create(
        app,
        &app.root(),
        proto::Organization {
            billing_rate_per_agent: Some(usd("99.00")),
            // Two agents: more than the free plan's one.
            ..named_on("AgenticMail", "pro")
        },
    )
    .await;
    let a = register_agent(app, &app.root(), &org.id, "Agent A").await;
    let a = set_rate(app, &a, "149.50").await;
    let b = register_agent(app, &app.root(), &org.id, "Agent B").await;
    let at = now();
    use UsageMetric::{Messages, Tokens};
    record(app, &org.id, event("a-1", &a.id, Tokens, 1200, "0.36", at)).await;
    record(app, &org.id, event("a-2", &a.id, Tokens, 800, "0.24", at)).await;
    record(app, &org.id, event("b-1", &b.id, Tokens, 500, "0.15", at)).await;
    record(app, &org.id, event("b-2", &b.id, Messages, 3, "0.05", at)).await;
    Seed { org, a, b, at }
}

async fn try_list(
    app: &TestApp,
    request: proto::ListBillingRecordsRequest,
) -> Result<proto::ListBillingRecordsResponse, Status> {
    app.billing()
        .list_billing_records(authed(request, &app.root()))
        .await
        .map(|r| r.into_inner())
}

async fn list(
    app: &TestApp,
    request: proto::ListBillingRecordsRequest,
) -> Vec<proto::BillingRecord> {
    try_list(app, request).await.expect("list").billing_records
}

async fn try_summary(
    app: &TestApp,
    request: proto::GetBillingSummaryRequest,
) -> Result<proto::GetBillingSummaryResponse, Status> {
    app.billing()
        .get_billing_summary(authed(request, &app.root()))
        .await
        .map(|r| r.into_inner())
}

fn amount(money: &Option<proto::Money>) -> String {
    money.as_ref().expect("money").amount.clone()
}

/// Inserts a record directly (months beyond the 35-day usage window).
async fn insert_record(
    app: &TestApp,
    org_id: &str,
    agent: Uuid,
    month: &str,
    tokens: i64,
    cost_micros: i64,
    revenue_micros: i64,
) -> Uuid {
    let id = Uuid::now_v7();
    billing_records::ActiveModel {
        id: Set(id),
        organization_id: Set(org_uuid(org_id)),
        agent_id: Set(agent),
        month: Set(month.into()),
        agent_name: Set("Imported".into()),
        tokens: Set(tokens),
        cost_micros: Set(cost_micros),
        revenue_micros: Set(revenue_micros),
        custom_rate: Set(false),
        invoice_id: Set(None),
        create_time: Set(0),
        update_time: Set(0),
    }
    .insert(app.store.db())
    .await
    .expect("insert billing record");
    id
}

on_both_backends!(
    records_carry_tokens_cost_and_the_effective_rate,
    the_summary_sums_revenue_cost_margin_tokens_and_agents,
    a_new_organization_has_no_billing,
    records_filter_by_agent_and_month_range,
    records_order_and_page_through_everything_once,
    bad_list_and_summary_input_names_the_field,
);

async fn records_carry_tokens_cost_and_the_effective_rate(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let s = seed(&app).await;
    let records = list(
        &app,
        proto::ListBillingRecordsRequest {
            organization_id: s.org.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(records.len(), 2);
    let a = records.iter().find(|r| r.agent_id == s.a.id).expect("A");
    assert!(a.id.starts_with("brec_"), "{}", a.id);
    assert_eq!(a.organization_id, s.org.id);
    assert_eq!(a.agent_name, "Agent A");
    assert_eq!(a.month, month_of(s.at));
    assert_eq!(a.tokens, 2000);
    assert_eq!(amount(&a.cost), "0.60");
    assert_eq!(amount(&a.revenue), "149.50");
    assert_eq!(amount(&a.margin), "148.90");
    assert_eq!(a.cost.as_ref().unwrap().currency_code, "USD");
    assert!(a.custom_rate);
    assert!(a.create_time.is_some() && a.update_time.is_some());

    let b = records.iter().find(|r| r.agent_id == s.b.id).expect("B");
    assert_eq!(b.agent_name, "Agent B");
    assert_eq!(b.tokens, 500, "MESSAGES events add no tokens");
    assert_eq!(amount(&b.cost), "0.20", "every event's cost counts");
    assert_eq!(amount(&b.revenue), "99.00");
    assert_eq!(amount(&b.margin), "98.80");
    assert!(!b.custom_rate);

    // A duplicate event changes nothing; a later event of the month adds cost and
    // tokens but never charges the monthly rate again.
    record_duplicate(&app, &s).await;
    record(
        &app,
        &s.org.id,
        event("a-3", &s.a.id, UsageMetric::Tokens, 100, "0.03", s.at),
    )
    .await;
    let a = list(
        &app,
        proto::ListBillingRecordsRequest {
            organization_id: s.org.id.clone(),
            agent_id: s.a.id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].tokens, 2100);
    assert_eq!(amount(&a[0].cost), "0.63");
    assert_eq!(amount(&a[0].revenue), "149.50");
    assert_eq!(amount(&a[0].margin), "148.87");
    app.stop().await;
}

async fn record_duplicate(app: &TestApp, s: &Seed) {
    let result = app
        .billing()
        .record_usage(authed(
            proto::RecordUsageRequest {
                organization_id: s.org.id.clone(),
                event: Some(event(
                    "a-1",
                    &s.a.id,
                    UsageMetric::Tokens,
                    1200,
                    "0.36",
                    s.at,
                )),
            },
            &app.token("SYSTEM", "internal"),
        ))
        .await
        .expect("duplicate")
        .into_inner()
        .result
        .expect("result");
    assert_eq!(result.status, proto::UsageEventStatus::Duplicate as i32);
}

async fn the_summary_sums_revenue_cost_margin_tokens_and_agents(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let s = seed(&app).await;
    let month = month_of(s.at);
    // An older month with one imported record for A, inside the default 12 months, and
    // one 12 months back, outside it.
    let a = ids::decode(IdKind::Agent, &s.a.id).unwrap();
    let previous = months_before(&month, 1);
    insert_record(&app, &s.org.id, a, &previous, 700, 210_000, 149_500_000).await;
    insert_record(
        &app,
        &s.org.id,
        a,
        &months_before(&month, 12),
        1,
        1,
        5_000_000,
    )
    .await;
    // Another organization's records never show.
    let other = create(&app, &app.root(), named("Other Co")).await;
    insert_record(&app, &other.id, a, &month, 9, 9, 9_000_000).await;

    let summary = try_summary(
        &app,
        proto::GetBillingSummaryRequest {
            organization_id: s.org.id.clone(),
            to_month: month.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("summary");
    assert_eq!(summary.currency, "USD");
    let months: Vec<&str> = summary.months.iter().map(|m| m.month.as_str()).collect();
    assert_eq!(
        months,
        vec![month.as_str(), previous.as_str()],
        "newest first"
    );
    let this = &summary.months[0];
    assert_eq!(amount(&this.revenue), "248.50");
    assert_eq!(amount(&this.cost), "0.80");
    assert_eq!(amount(&this.margin), "247.70");
    assert_eq!(this.tokens, 2500);
    assert_eq!(this.agents_billed, 2);
    let before = &summary.months[1];
    assert_eq!(amount(&before.revenue), "149.50");
    assert_eq!(amount(&before.cost), "0.21");
    assert_eq!(amount(&before.margin), "149.29");
    assert_eq!(before.tokens, 700);
    assert_eq!(before.agents_billed, 1);
    let total = summary.total.expect("total");
    assert_eq!(total.month, "");
    assert_eq!(amount(&total.revenue), "398.00");
    assert_eq!(amount(&total.cost), "1.01");
    assert_eq!(amount(&total.margin), "396.99");
    assert_eq!(total.tokens, 3200);
    assert_eq!(total.agents_billed, 2, "distinct agents over the range");

    // An explicit range reaches the older month and can leave out the newest.
    let summary = try_summary(
        &app,
        proto::GetBillingSummaryRequest {
            organization_id: s.org.id.clone(),
            from_month: months_before(&month, 12),
            to_month: previous.clone(),
        },
    )
    .await
    .expect("summary");
    let months: Vec<&str> = summary.months.iter().map(|m| m.month.as_str()).collect();
    let oldest = months_before(&month, 12);
    assert_eq!(months, vec![previous.as_str(), oldest.as_str()]);
    let total = summary.total.expect("total");
    assert_eq!(amount(&total.revenue), "154.50");
    assert_eq!(amount(&total.cost), "0.210001");
    assert_eq!(total.agents_billed, 1);
    app.stop().await;
}

async fn a_new_organization_has_no_billing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = create(
        &app,
        &app.root(),
        proto::Organization {
            currency: "EUR".into(),
            ..named("Fresh Start")
        },
    )
    .await;
    register_agent(&app, &app.root(), &org.id, "Idle").await;
    let response = try_list(
        &app,
        proto::ListBillingRecordsRequest {
            organization_id: org.id.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("list");
    assert!(response.billing_records.is_empty());
    assert_eq!(response.next_page_token, "");
    let summary = try_summary(
        &app,
        proto::GetBillingSummaryRequest {
            organization_id: org.slug.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("summary");
    assert!(summary.months.is_empty());
    assert_eq!(summary.currency, "EUR");
    let total = summary.total.expect("total");
    assert_eq!(
        total.revenue,
        Some(proto::Money {
            currency_code: "EUR".into(),
            amount: "0.00".into()
        })
    );
    assert_eq!(amount(&total.margin), "0.00");
    assert_eq!(total.tokens, 0);
    assert_eq!(total.agents_billed, 0);
    app.stop().await;
}

async fn records_filter_by_agent_and_month_range(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let s = seed(&app).await;
    let month = month_of(s.at);
    let a = ids::decode(IdKind::Agent, &s.a.id).unwrap();
    let m1 = months_before(&month, 1);
    let m2 = months_before(&month, 2);
    insert_record(&app, &s.org.id, a, &m1, 10, 1, 149_500_000).await;
    insert_record(&app, &s.org.id, a, &m2, 20, 2, 149_500_000).await;
    let months = |records: &[proto::BillingRecord]| -> Vec<(String, String)> {
        records
            .iter()
            .map(|r| (r.month.clone(), r.agent_id.clone()))
            .collect()
    };
    let query =
        |from: &str, to: &str, agent: &str, filter: &str| proto::ListBillingRecordsRequest {
            organization_id: s.org.id.clone(),
            from_month: from.into(),
            to_month: to.into(),
            agent_id: agent.into(),
            filter: filter.into(),
            ..Default::default()
        };

    let by_a = list(&app, query("", "", &s.a.id, "")).await;
    assert_eq!(
        months(&by_a),
        vec![
            (month.clone(), s.a.id.clone()),
            (m1.clone(), s.a.id.clone()),
            (m2.clone(), s.a.id.clone())
        ],
        "month desc by default"
    );
    let by_b = list(&app, query("", "", "", &format!("agent_id = {}", s.b.id))).await;
    assert_eq!(months(&by_b), vec![(month.clone(), s.b.id.clone())]);

    let range = list(&app, query(&m2, &m1, "", "")).await;
    assert_eq!(
        months(&range),
        vec![(m1.clone(), s.a.id.clone()), (m2.clone(), s.a.id.clone())]
    );
    let one = list(&app, query(&m1, &m1, "", "")).await;
    assert_eq!(months(&one), vec![(m1.clone(), s.a.id.clone())]);
    let since = list(&app, query("", "", "", &format!("month >= {m1}"))).await;
    assert_eq!(since.len(), 3, "this month's two and {m1}");
    assert!(since.iter().all(|r| r.month >= m1));
    let before = list(&app, query("", "", "", &format!("month < {m1}"))).await;
    assert_eq!(months(&before), vec![(m2.clone(), s.a.id.clone())]);
    let exact = list(
        &app,
        query(
            &m2,
            "",
            &s.a.id,
            &format!("month = {month} AND agent_id = {}", s.a.id),
        ),
    )
    .await;
    assert_eq!(months(&exact), vec![(month.clone(), s.a.id.clone())]);
    let nobody = list(&app, query("", "", &s.b.id, &format!("month = {m1}"))).await;
    assert!(nobody.is_empty(), "filters combine with AND");
    // An unknown agent is simply not billed here.
    let stranger = ids::encode(IdKind::Agent, Uuid::now_v7());
    assert!(list(&app, query("", "", &stranger, "")).await.is_empty());
    app.stop().await;
}

async fn records_order_and_page_through_everything_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = create(&app, &app.root(), named("Paged Billing")).await;
    let agents: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let mut inserted = HashSet::new();
    // Eleven records over four months with repeated token counts, so ties need the id.
    for i in 0..11_i64 {
        let month = format!("2026-{:02}", 1 + i % 4);
        let agent = agents[(i % 3) as usize];
        let id = insert_record(
            &app,
            &org.id,
            agent,
            &month,
            i % 2 * 100,
            i * 1_000,
            (11 - i) * 1_000_000,
        )
        .await;
        inserted.insert(ids::encode(IdKind::BillingRecord, id));
    }
    for order_by in [
        "",
        "month",
        "agent_id desc",
        "revenue",
        "cost desc",
        "tokens",
        "tokens desc",
    ] {
        let mut seen: Vec<proto::BillingRecord> = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let page = try_list(
                &app,
                proto::ListBillingRecordsRequest {
                    organization_id: org.id.clone(),
                    page_size: 3,
                    page_token: token.clone(),
                    order_by: order_by.into(),
                    ..Default::default()
                },
            )
            .await
            .expect("page");
            assert!(page.billing_records.len() <= 3);
            seen.extend(page.billing_records);
            pages += 1;
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(pages, 4, "{order_by}: 11 records in pages of 3");
        let ids: HashSet<String> = seen.iter().map(|r| r.id.clone()).collect();
        assert_eq!(ids, inserted, "{order_by}: every record exactly once");
        assert_eq!(seen.len(), 11, "{order_by}");
        let pairs = seen.windows(2);
        match order_by {
            "" => pairs.for_each(|w| assert!(w[0].month >= w[1].month)),
            "month" => pairs.for_each(|w| assert!(w[0].month <= w[1].month)),
            "revenue" => {
                pairs.for_each(|w| assert!(dec(&w[0].revenue) <= dec(&w[1].revenue), "{order_by}"))
            }
            "cost desc" => pairs.for_each(|w| assert!(dec(&w[0].cost) >= dec(&w[1].cost))),
            "tokens" => pairs.for_each(|w| assert!(w[0].tokens <= w[1].tokens)),
            "tokens desc" => pairs.for_each(|w| assert!(w[0].tokens >= w[1].tokens)),
            _ => {}
        }
        if order_by == "revenue" {
            assert_eq!(amount(&seen[0].revenue), "1.00");
            assert_eq!(amount(&seen[10].revenue), "11.00");
        }
    }

    // A token belongs to its query.
    let first = try_list(
        &app,
        proto::ListBillingRecordsRequest {
            organization_id: org.id.clone(),
            page_size: 3,
            order_by: "tokens".into(),
            ..Default::default()
        },
    )
    .await
    .expect("page");
    let err = try_list(
        &app,
        proto::ListBillingRecordsRequest {
            organization_id: org.id.clone(),
            page_size: 3,
            page_token: first.next_page_token,
            order_by: "cost".into(),
            ..Default::default()
        },
    )
    .await
    .expect_err("token of another order");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), vec!["page_token"]);
    app.stop().await;
}

fn dec(money: &Option<proto::Money>) -> rust_decimal::Decimal {
    amount(money).parse().expect("decimal")
}

async fn bad_list_and_summary_input_names_the_field(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let org = create(&app, &app.root(), named("Picky Billing")).await;
    let err = try_list(
        &app,
        proto::ListBillingRecordsRequest {
            organization_id: org.id.clone(),
            from_month: "2026-13".into(),
            to_month: "2026/01".into(),
            agent_id: "org_nope".into(),
            page_size: -1,
            filter: "name = x".into(),
            order_by: "name".into(),
            page_token: "garbage!".into(),
        },
    )
    .await
    .expect_err("bad list");
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violations(&err);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "agent_id",
            "filter",
            "from_month",
            "order_by",
            "page_size",
            "page_token",
            "to_month"
        ]
    );
    let err = try_list(
        &app,
        proto::ListBillingRecordsRequest {
            organization_id: org.id.clone(),
            from_month: "2026-05".into(),
            to_month: "2026-04".into(),
            filter: "month >= 2026-4".into(),
            ..Default::default()
        },
    )
    .await
    .expect_err("reversed range");
    assert_eq!(violations(&err), vec!["from_month", "filter"]);

    let err = try_summary(
        &app,
        proto::GetBillingSummaryRequest {
            organization_id: org.id.clone(),
            from_month: "2026-06".into(),
            to_month: "2026-05".into(),
        },
    )
    .await
    .expect_err("reversed summary range");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), vec!["from_month"]);
    let err = try_summary(
        &app,
        proto::GetBillingSummaryRequest {
            organization_id: org.id.clone(),
            from_month: "June".into(),
            to_month: "1999-01".into(),
        },
    )
    .await
    .expect_err("bad months");
    assert_eq!(violations(&err), vec!["from_month", "to_month"]);

    // Another organization's member is denied before any input is judged.
    let outsider = create(&app, &app.root(), named("Outsider")).await;
    let err = app
        .billing()
        .get_billing_summary(authed(
            proto::GetBillingSummaryRequest {
                organization_id: org.id.clone(),
                from_month: "bad".into(),
                ..Default::default()
            },
            &app.token("CONFIG_ADMIN", &outsider.id),
        ))
        .await
        .expect_err("foreign org");
    assert_eq!(err.code(), Code::PermissionDenied);
    app.stop().await;
}
