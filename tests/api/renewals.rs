//! The renewal cycle (SPEC §6): periods closed in order on a fixed clock, scheduled
//! changes and cancellations at the period end, agent fees billed once in arrears,
//! add-ons with each renewal, trials, PAST_DUE after the grace period and back, parallel
//! runs that never invoice a period twice, the in-server job, and who may run it.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, TimeZone, Utc};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use tenantry::{
    domain::{
        clock::FixedClock,
        events::types,
        ids::{self, IdKind},
    },
    proto::{self, UsageMetric},
    service::{billing::credits::purchase::system_principal, subscriptions::cycle},
    storage::entities::{
        billing_records, invoice_lines, invoices, outbox_events, subscription_periods,
    },
};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::{
    billing_records::{event, record},
    credits::{balance_amount, gift},
    helpers::{Backend, TestApp, authed, reason, violations},
    on_both_backends,
    organizations::{audit_actions, create, named, org_row, org_uuid, register_agent, usd},
    subscriptions::{on_clock, sub_row, subscribe, try_subscribe},
};

on_both_backends!(
    fourteen_months_of_renewals_produce_exactly_the_expected_invoices,
    running_twice_for_the_same_instant_changes_nothing,
    parallel_runs_close_each_period_once,
    a_trial_ends_with_the_first_paid_invoice,
    unpaid_invoices_make_the_subscription_past_due_until_paid,
    past_due_lasts_until_the_last_overdue_invoice_is_settled,
    a_scheduled_interval_change_re_anchors_at_the_period_end,
    monthly_add_ons_are_charged_with_each_renewal,
    the_server_runs_the_cycle_on_an_interval,
    only_operators_run_the_cycle_and_bad_instants_are_refused,
);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, mi, s)
        .single()
        .expect("instant")
}

fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// RunBillingCycle as `token`.
async fn try_run(
    app: &TestApp,
    token: &str,
    org_id: &str,
    at: Option<DateTime<Utc>>,
    request_id: &str,
) -> Result<proto::RunBillingCycleResponse, Status> {
    let request = proto::RunBillingCycleRequest {
        organization_id: org_id.into(),
        at: at.and_then(ts),
        request_id: request_id.into(),
    };
    app.subscriptions()
        .run_billing_cycle(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

/// RunBillingCycle as the root admin for one organization (all when empty) as of `at`
/// (the clock's now when `None`), expected to succeed.
async fn run_cycle(
    app: &TestApp,
    org_id: &str,
    at: Option<DateTime<Utc>>,
) -> proto::RunBillingCycleResponse {
    try_run(app, &app.root(), org_id, at, "")
        .await
        .expect("run billing cycle")
}

/// A customer created by the root admin with a 15.00 monthly rate per agent, and
/// `credits` gifted when given.
async fn customer(app: &TestApp, name: &str, credits: Option<&str>) -> proto::Organization {
    let org = create(
        app,
        &app.root(),
        proto::Organization {
            billing_rate_per_agent: Some(usd("15.00")),
            ..named(name)
        },
    )
    .await;
    if let Some(amount) = credits {
        gift(app, &org.id, amount).await;
    }
    org
}

/// Records one token event of `agent_id` at `at` (so the agent has a billing record
/// for that month).
async fn work(app: &TestApp, org_id: &str, agent_id: &str, event_id: &str, at: DateTime<Utc>) {
    record(
        app,
        org_id,
        event(event_id, agent_id, UsageMetric::Tokens, 100, "0.01", at),
    )
    .await;
}

/// An invoice as the tests compare it: number, status, period, total and its lines
/// (kind, description, quantity, amount), all amounts in micro-units.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bill {
    number: String,
    status: String,
    period: (i64, i64),
    total: i64,
    lines: Vec<(String, String, i64, i64)>,
}

/// The organization's invoices in number order.
async fn bills(app: &TestApp, org_id: &str) -> Vec<Bill> {
    let rows = invoices::Entity::find()
        .filter(invoices::Column::OrganizationId.eq(org_uuid(org_id)))
        .order_by_asc(invoices::Column::Seq)
        .all(app.store.db())
        .await
        .expect("invoices");
    let mut out = Vec::new();
    for row in rows {
        let lines = invoice_lines::Entity::find()
            .filter(invoice_lines::Column::InvoiceId.eq(row.id))
            .order_by_asc(invoice_lines::Column::Position)
            .all(app.store.db())
            .await
            .expect("lines")
            .into_iter()
            .map(|l| (l.kind, l.description, l.quantity, l.amount_micros))
            .collect();
        out.push(Bill {
            number: row.number,
            status: row.status,
            period: (row.period_start, row.period_end),
            total: row.total_micros,
            lines,
        });
    }
    out
}

/// The invoice rows of an organization in number order.
async fn invoice_rows(app: &TestApp, org_id: &str) -> Vec<invoices::Model> {
    invoices::Entity::find()
        .filter(invoices::Column::OrganizationId.eq(org_uuid(org_id)))
        .order_by_asc(invoices::Column::Seq)
        .all(app.store.db())
        .await
        .expect("invoices")
}

/// The `change` of each `subscription.changed` event of an organization, in order.
async fn subscription_changes(app: &TestApp, org_id: &str) -> Vec<String> {
    outbox_events::Entity::find()
        .filter(outbox_events::Column::OrganizationId.eq(org_uuid(org_id)))
        .filter(outbox_events::Column::EventType.eq(types::SUBSCRIPTION_CHANGED))
        .order_by_asc(outbox_events::Column::CreateTime)
        .order_by_asc(outbox_events::Column::Id)
        .all(app.store.db())
        .await
        .expect("read outbox")
        .into_iter()
        .map(|event| {
            let data: serde_json::Value =
                serde_json::from_str(&event.payload).expect("payload is JSON");
            data["change"].as_str().expect("change").to_owned()
        })
        .collect()
}

/// PayInvoice as the organization's CONFIG_ADMIN.
async fn pay(app: &TestApp, org_id: &str, invoice_id: Uuid) -> proto::Invoice {
    app.billing()
        .pay_invoice(authed(
            proto::PayInvoiceRequest {
                organization_id: org_id.into(),
                invoice_id: ids::encode(IdKind::Invoice, invoice_id),
                request_id: Uuid::now_v7().to_string(),
            },
            &app.token("CONFIG_ADMIN", org_id),
        ))
        .await
        .expect("pay invoice")
        .into_inner()
        .invoice
        .expect("invoice")
}

/// ChangePlan as the organization's CONFIG_ADMIN.
async fn change_plan(
    app: &TestApp,
    org_id: &str,
    plan: &str,
    interval: proto::BillingInterval,
) -> proto::ChangePlanResponse {
    app.subscriptions()
        .change_plan(authed(
            proto::ChangePlanRequest {
                organization_id: org_id.into(),
                plan_id: plan.into(),
                interval: interval as i32,
                etag: String::new(),
                request_id: Uuid::now_v7().to_string(),
            },
            &app.token("CONFIG_ADMIN", org_id),
        ))
        .await
        .expect("change plan")
        .into_inner()
}

const UNIT: i64 = 1_000_000;

fn sub_line(
    plan: &str,
    label: &str,
    from: &str,
    to: &str,
    amount: i64,
) -> (String, String, i64, i64) {
    (
        "SUBSCRIPTION".into(),
        format!("{plan} plan, {label}: {from} – {to}"),
        1,
        amount * UNIT,
    )
}

fn fee_line(agent: &str, month: &str, amount: i64) -> (String, String, i64, i64) {
    (
        "AGENT_FEE".into(),
        format!("Agent {agent} — {month}"),
        1,
        amount * UNIT,
    )
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Pro monthly from 2026-01-31T10:00Z (periods clamp to short months and come back to
/// the 31st), a downgrade to basic scheduled mid-May, four months closed by one late
/// run, PAST_DUE while the basic invoices are unpaid, cancellation at the end of
/// November, then nothing more through March 2027. Agent fees are billed once, in
/// arrears, on the first renewal after their month ended.
async fn fourteen_months_of_renewals_produce_exactly_the_expected_invoices(backend: Backend) {
    let t0 = utc(2026, 1, 31, 10, 0, 0);
    let Some((app, clock)) = on_clock(backend, t0).await else {
        return;
    };
    let org = customer(&app, "Acme Renewals", Some("150.00")).await;
    let agent = register_agent(&app, &app.root(), &org.id, "Scout").await;
    work(&app, &org.id, &agent.id, "jan", t0).await;
    let created = subscribe(&app, &org.id, "pro").await;
    let sub = created.subscription.expect("subscription");
    assert_eq!(sub.current_period_end, ts(utc(2026, 2, 28, 10, 0, 0)));

    // Feb 28: pro for March, plus January's agent fee.
    clock.set(utc(2026, 2, 28, 10, 0, 0));
    let ran = run_cycle(&app, &org.id, None).await;
    assert_eq!(ran.at, ts(utc(2026, 2, 28, 10, 0, 0)));
    assert_eq!((ran.periods_closed, ran.invoices_paid), (1, 1));
    assert_eq!(ran.invoice_ids.len(), 1);
    assert_eq!(
        sub_row(&app, &org.id).await.current_period_end,
        micros(utc(2026, 3, 31, 10, 0, 0)),
        "the anchor's 31st comes back after February"
    );

    clock.set(utc(2026, 3, 10, 12, 0, 0));
    work(&app, &org.id, &agent.id, "mar", utc(2026, 3, 10, 12, 0, 0)).await;
    clock.set(utc(2026, 3, 31, 10, 0, 0));
    assert_eq!(run_cycle(&app, &org.id, None).await.periods_closed, 1);
    clock.set(utc(2026, 4, 30, 10, 0, 0));
    assert_eq!(run_cycle(&app, &org.id, None).await.periods_closed, 1);

    // Mid-May: the downgrade waits for the period end.
    clock.set(utc(2026, 5, 15, 9, 0, 0));
    let changed = change_plan(&app, &org.id, "basic", proto::BillingInterval::Month).await;
    assert!(
        changed.invoice.is_none(),
        "a downgrade invoices nothing now"
    );
    assert_eq!(
        sub_row(&app, &org.id).await.scheduled_plan_id.as_deref(),
        Some("basic")
    );
    assert_eq!(org_row(&app, &org.id).await.plan, "pro");
    clock.set(utc(2026, 5, 31, 10, 0, 0));
    let ran = run_cycle(&app, &org.id, None).await;
    assert_eq!((ran.periods_closed, ran.scheduled_changes_applied), (1, 1));
    assert_eq!(ran.invoices_paid, 0, "4.00 left does not cover 9.00");
    assert_eq!(org_row(&app, &org.id).await.plan, "basic");
    let row = sub_row(&app, &org.id).await;
    assert_eq!(
        (row.plan_id.as_str(), row.price_micros),
        ("basic", 9 * UNIT)
    );
    assert_eq!(row.scheduled_plan_id, None);

    // Nobody runs the cycle until Oct 15: one run closes Jun 30, Jul 31, Aug 31 and
    // Sep 30 in order, and the May invoice, unpaid for more than 7 days, makes the
    // subscription PAST_DUE.
    let late = utc(2026, 10, 15, 10, 0, 0);
    clock.set(late);
    let ran = run_cycle(&app, "", Some(late)).await;
    assert_eq!(ran.periods_closed, 4);
    assert_eq!(ran.invoice_ids.len(), 4);
    assert_eq!(ran.invoices_paid, 0);
    assert_eq!(ran.subscriptions_past_due, 1);
    let row = sub_row(&app, &org.id).await;
    assert_eq!(row.status, "PAST_DUE");
    assert_eq!(row.current_period_start, micros(utc(2026, 9, 30, 10, 0, 0)));
    assert_eq!(row.current_period_end, micros(utc(2026, 10, 31, 10, 0, 0)));
    let issued: Vec<String> = ran.invoice_ids.clone();
    let rows = invoice_rows(&app, &org.id).await;
    assert_eq!(
        rows[5..9]
            .iter()
            .map(|i| ids::encode(IdKind::Invoice, i.id))
            .collect::<Vec<_>>(),
        issued,
        "issued in period order"
    );
    // The latest renewal invoice bills the subscription's current period.
    assert_eq!(
        (
            rows[8].subscription_id,
            rows[8].period_start,
            rows[8].period_end
        ),
        (
            Some(row.id),
            row.current_period_start,
            row.current_period_end
        )
    );

    // Credits arrive; paying the overdue May invoice ends PAST_DUE (the four new ones
    // are not overdue yet), then the rest are paid too.
    gift(&app, &org.id, "100.00").await;
    work(&app, &org.id, &agent.id, "oct", late).await;
    pay(&app, &org.id, rows[4].id).await;
    assert_eq!(sub_row(&app, &org.id).await.status, "ACTIVE");
    for invoice in &rows[5..9] {
        pay(&app, &org.id, invoice.id).await;
    }

    clock.set(utc(2026, 10, 31, 10, 0, 0));
    let ran = run_cycle(&app, &org.id, None).await;
    assert_eq!((ran.periods_closed, ran.invoices_paid), (1, 1));

    // Cancelled in November: at the period end the subscription ends, and the agent
    // fees still owed are billed on its last invoice: October's (its month has ended)
    // and November's (no renewal follows to bill it later).
    clock.set(utc(2026, 11, 10, 8, 0, 0));
    work(&app, &org.id, &agent.id, "nov", utc(2026, 11, 10, 8, 0, 0)).await;
    app.subscriptions()
        .cancel_subscription(authed(
            proto::CancelSubscriptionRequest {
                organization_id: org.id.clone(),
                immediately: false,
                reason: "moving on".into(),
                etag: String::new(),
            },
            &app.token("CONFIG_ADMIN", &org.id),
        ))
        .await
        .expect("cancel at period end");
    let end = utc(2026, 11, 30, 10, 0, 0);
    clock.set(end);
    let ran = run_cycle(&app, &org.id, None).await;
    assert_eq!(
        (
            ran.periods_closed,
            ran.subscriptions_canceled,
            ran.invoices_paid
        ),
        (1, 1, 1)
    );
    let row = sub_row(&app, &org.id).await;
    assert_eq!(row.status, "CANCELED");
    assert_eq!(row.end_time, Some(micros(end)));
    assert_eq!(org_row(&app, &org.id).await.plan, "free");

    for month_end in [
        utc(2026, 12, 31, 10, 0, 0),
        utc(2027, 1, 31, 10, 0, 0),
        utc(2027, 2, 28, 10, 0, 0),
        utc(2027, 3, 31, 10, 0, 0),
    ] {
        clock.set(month_end);
        let ran = run_cycle(&app, &org.id, None).await;
        assert_eq!(ran.periods_closed, 0);
        assert!(ran.invoice_ids.is_empty());
    }

    let d = |y, m, day| utc(y, m, day, 10, 0, 0).timestamp_micros();
    let pro = |from: &str, to: &str| sub_line("Pro", "monthly", from, to, 29);
    let basic = |from: &str, to: &str| sub_line("Basic", "monthly", from, to, 9);
    let bill = |n: u32, from: i64, to: i64, total: i64, lines| Bill {
        number: format!("INV-{n:06}"),
        status: "PAID".into(),
        period: (from, to),
        total: total * UNIT,
        lines,
    };
    let expected = vec![
        bill(
            1,
            d(2026, 1, 31),
            d(2026, 2, 28),
            29,
            vec![pro("2026-01-31", "2026-02-28")],
        ),
        bill(
            2,
            d(2026, 2, 28),
            d(2026, 3, 31),
            44,
            vec![
                pro("2026-02-28", "2026-03-31"),
                fee_line("Scout", "2026-01", 15),
            ],
        ),
        bill(
            3,
            d(2026, 3, 31),
            d(2026, 4, 30),
            29,
            vec![pro("2026-03-31", "2026-04-30")],
        ),
        bill(
            4,
            d(2026, 4, 30),
            d(2026, 5, 31),
            44,
            vec![
                pro("2026-04-30", "2026-05-31"),
                fee_line("Scout", "2026-03", 15),
            ],
        ),
        bill(
            5,
            d(2026, 5, 31),
            d(2026, 6, 30),
            9,
            vec![basic("2026-05-31", "2026-06-30")],
        ),
        bill(
            6,
            d(2026, 6, 30),
            d(2026, 7, 31),
            9,
            vec![basic("2026-06-30", "2026-07-31")],
        ),
        bill(
            7,
            d(2026, 7, 31),
            d(2026, 8, 31),
            9,
            vec![basic("2026-07-31", "2026-08-31")],
        ),
        bill(
            8,
            d(2026, 8, 31),
            d(2026, 9, 30),
            9,
            vec![basic("2026-08-31", "2026-09-30")],
        ),
        bill(
            9,
            d(2026, 9, 30),
            d(2026, 10, 31),
            9,
            vec![basic("2026-09-30", "2026-10-31")],
        ),
        bill(
            10,
            d(2026, 10, 31),
            d(2026, 11, 30),
            9,
            vec![basic("2026-10-31", "2026-11-30")],
        ),
        bill(
            11,
            d(2026, 10, 31),
            d(2026, 11, 30),
            30,
            vec![
                fee_line("Scout", "2026-10", 15),
                fee_line("Scout", "2026-11", 15),
            ],
        ),
    ];
    assert_eq!(bills(&app, &org.id).await, expected);
    // 150 + 100 gifted − 29 − 44 − 29 − 44 − 6 × 9 − 30.
    assert_eq!(balance_amount(&app, &org.id).await, "20.00");

    // Each closed period once, linked to its invoice; each billing record billed once.
    let periods = subscription_periods::Entity::find()
        .filter(subscription_periods::Column::SubscriptionId.eq(row.id))
        .order_by_asc(subscription_periods::Column::PeriodEnd)
        .all(app.store.db())
        .await
        .expect("periods");
    let rows = invoice_rows(&app, &org.id).await;
    assert_eq!(
        periods
            .iter()
            .map(|p| (p.period_end, p.invoice_id))
            .collect::<Vec<_>>(),
        vec![
            (d(2026, 2, 28), Some(rows[1].id)),
            (d(2026, 3, 31), Some(rows[2].id)),
            (d(2026, 4, 30), Some(rows[3].id)),
            (d(2026, 5, 31), Some(rows[4].id)),
            (d(2026, 6, 30), Some(rows[5].id)),
            (d(2026, 7, 31), Some(rows[6].id)),
            (d(2026, 8, 31), Some(rows[7].id)),
            (d(2026, 9, 30), Some(rows[8].id)),
            (d(2026, 10, 31), Some(rows[9].id)),
            (d(2026, 11, 30), Some(rows[10].id)),
        ]
    );
    let records: HashMap<String, Option<Uuid>> = billing_records::Entity::find()
        .filter(billing_records::Column::OrganizationId.eq(org_uuid(&org.id)))
        .all(app.store.db())
        .await
        .expect("records")
        .into_iter()
        .map(|r| (r.month, r.invoice_id))
        .collect();
    assert_eq!(
        records,
        HashMap::from([
            ("2026-01".to_owned(), Some(rows[1].id)),
            ("2026-03".to_owned(), Some(rows[3].id)),
            ("2026-10".to_owned(), Some(rows[10].id)),
            ("2026-11".to_owned(), Some(rows[10].id)),
        ])
    );
    app.stop().await;
}

/// A second run as of the same instant (through the RPC or directly) closes nothing,
/// issues nothing and leaves the subscription row as it was.
async fn running_twice_for_the_same_instant_changes_nothing(backend: Backend) {
    let t0 = utc(2026, 3, 15, 12, 30, 0);
    let Some((app, clock)) = on_clock(backend, t0).await else {
        return;
    };
    let org = customer(&app, "Twice Inc", Some("200.00")).await;
    subscribe(&app, &org.id, "pro").await;
    let at = utc(2026, 5, 20, 0, 0, 0);
    clock.set(at);
    let first = run_cycle(&app, &org.id, Some(at)).await;
    assert_eq!(first.periods_closed, 2);
    let before = (
        sub_row(&app, &org.id).await,
        bills(&app, &org.id).await,
        balance_amount(&app, &org.id).await,
    );
    assert_eq!(before.1.len(), 3);
    let again = run_cycle(&app, &org.id, Some(at)).await;
    assert_eq!(
        again,
        proto::RunBillingCycleResponse {
            at: ts(at),
            ..Default::default()
        }
    );
    let direct = cycle::run(
        &app.replica_ctx(),
        micros(at),
        None,
        &system_principal("replica-test"),
    )
    .await
    .expect("direct run");
    assert_eq!(direct.periods_closed, 0);
    assert!(direct.invoice_ids.is_empty());
    let after = (
        sub_row(&app, &org.id).await,
        bills(&app, &org.id).await,
        balance_amount(&app, &org.id).await,
    );
    assert_eq!(before, after);

    // With a request id, a retry replays the first summary even though a new run
    // would close nothing.
    let later = utc(2026, 6, 20, 0, 0, 0);
    clock.set(later);
    let token = app.root();
    let once = try_run(&app, &token, &org.id, Some(later), "cycle-june")
        .await
        .expect("run");
    assert_eq!(once.periods_closed, 1);
    let replay = try_run(&app, &token, &org.id, Some(later), "cycle-june")
        .await
        .expect("replay");
    assert_eq!(replay, once);
    let reused = try_run(&app, &token, &org.id, None, "cycle-june")
        .await
        .expect_err("same id, other arguments");
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert_eq!(bills(&app, &org.id).await.len(), 4);
    app.stop().await;
}

/// Ten organizations, four concurrent runs (two through the RPC, two direct calls as
/// other replicas would make): every period is closed and invoiced exactly once.
async fn parallel_runs_close_each_period_once(backend: Backend) {
    let t0 = utc(2026, 1, 15, 8, 0, 0);
    let Some((app, clock)) = on_clock(backend, t0).await else {
        return;
    };
    let mut orgs = Vec::new();
    for i in 0..10 {
        let org = customer(&app, &format!("Parallel {i}"), Some("100.00")).await;
        subscribe(&app, &org.id, "pro").await;
        orgs.push(org);
    }
    let at = utc(2026, 4, 20, 0, 0, 0);
    clock.set(at);
    let ctx = app.replica_ctx();
    let token = app.root();
    let (one, two) = (system_principal("replica-1"), system_principal("replica-2"));
    let (a, b, c, d) = tokio::join!(
        try_run(&app, &token, "", Some(at), ""),
        try_run(&app, &token, "", Some(at), ""),
        cycle::run(&ctx, micros(at), None, &one),
        cycle::run(&ctx, micros(at), None, &two),
    );
    let (a, b) = (a.expect("rpc run a"), b.expect("rpc run b"));
    let (c, d) = (c.expect("direct run c"), d.expect("direct run d"));
    assert_eq!((c.failed, d.failed), (0, 0));
    assert_eq!(
        a.periods_closed + b.periods_closed + c.periods_closed as i32 + d.periods_closed as i32,
        30,
        "{a:?} {b:?} {c:?} {d:?}"
    );
    let mut issued: Vec<String> = a
        .invoice_ids
        .iter()
        .chain(&b.invoice_ids)
        .cloned()
        .collect();
    issued.extend(
        c.invoice_ids
            .iter()
            .chain(&d.invoice_ids)
            .map(|id| ids::encode(IdKind::Invoice, *id)),
    );
    assert_eq!(issued.len(), 30);
    assert_eq!(issued.iter().collect::<HashSet<_>>().len(), 30);

    for org in &orgs {
        let sub = sub_row(&app, &org.id).await;
        assert_eq!(sub.current_period_end, micros(utc(2026, 5, 15, 8, 0, 0)));
        let rows = invoice_rows(&app, &org.id).await;
        assert_eq!(rows.len(), 4, "the first period and three renewals");
        let periods: HashSet<(i64, i64)> = rows
            .iter()
            .map(|i| (i.period_start, i.period_end))
            .collect();
        assert_eq!(periods.len(), 4, "no period invoiced twice");
        assert!(rows.iter().all(|i| i.subscription_id == Some(sub.id)));
        let closed = subscription_periods::Entity::find()
            .filter(subscription_periods::Column::SubscriptionId.eq(sub.id))
            .count(app.store.db())
            .await
            .expect("count periods");
        assert_eq!(closed, 3);
    }

    // And again, all at once: nothing left to do.
    let (a, c) = tokio::join!(
        try_run(&app, &token, "", Some(at), ""),
        cycle::run(&ctx, micros(at), None, &one),
    );
    assert_eq!(a.expect("rpc").periods_closed, 0);
    assert_eq!(c.expect("direct").periods_closed, 0);
    app.stop().await;
}

/// A 14-day trial invoices nothing; at its end the first paid period starts (anchored
/// there) and is invoiced in advance, paid from credits.
async fn a_trial_ends_with_the_first_paid_invoice(backend: Backend) {
    let t0 = utc(2026, 3, 10, 9, 30, 15) + chrono::Duration::milliseconds(250);
    let Some((app, clock)) = on_clock(backend, t0).await else {
        return;
    };
    let org = customer(&app, "Trial Co", Some("50.00")).await;
    let created = try_subscribe(
        &app,
        &app.token("CONFIG_ADMIN", &org.id),
        &org.id,
        "pro",
        proto::BillingInterval::Month,
        14,
        "trial-1",
    )
    .await
    .expect("subscribe with a trial");
    assert!(created.invoice.is_none());
    let trial_end = utc(2026, 3, 24, 9, 30, 15);
    assert_eq!(
        created.subscription.expect("subscription").trial_end,
        ts(trial_end)
    );

    let just_before = trial_end - chrono::Duration::seconds(1);
    clock.set(just_before);
    assert_eq!(run_cycle(&app, &org.id, None).await.periods_closed, 0);
    assert_eq!(sub_row(&app, &org.id).await.status, "TRIALING");

    clock.set(trial_end);
    let ran = run_cycle(&app, &org.id, None).await;
    assert_eq!((ran.periods_closed, ran.invoices_paid), (1, 1));
    let row = sub_row(&app, &org.id).await;
    assert_eq!(row.status, "ACTIVE");
    assert_eq!(row.anchor_time, micros(trial_end));
    assert_eq!(row.current_period_start, micros(trial_end));
    assert_eq!(row.current_period_end, micros(utc(2026, 4, 24, 9, 30, 15)));
    assert_eq!(
        bills(&app, &org.id).await,
        vec![Bill {
            number: "INV-000001".into(),
            status: "PAID".into(),
            period: (micros(trial_end), micros(utc(2026, 4, 24, 9, 30, 15))),
            total: 29 * UNIT,
            lines: vec![sub_line("Pro", "monthly", "2026-03-24", "2026-04-24", 29)],
        }]
    );
    assert_eq!(balance_amount(&app, &org.id).await, "21.00");
    app.stop().await;
}

/// Without credits the first invoice stays OPEN; 7 days (the grace period) after its
/// issue the subscription is PAST_DUE; paying it makes it ACTIVE at once, and so does
/// voiding an overdue invoice. Each transition emits `subscription.changed`.
async fn unpaid_invoices_make_the_subscription_past_due_until_paid(backend: Backend) {
    let t0 = utc(2026, 6, 1, 12, 0, 0);
    let Some((app, clock)) = on_clock(backend, t0).await else {
        return;
    };
    let org = customer(&app, "Late Payer", None).await;
    let created = subscribe(&app, &org.id, "basic").await;
    let invoice = created.invoice.expect("first invoice");
    assert_eq!(invoice.status, proto::InvoiceStatus::Open as i32);

    clock.set(t0 + chrono::Duration::days(7) - chrono::Duration::seconds(1));
    let ran = run_cycle(&app, &org.id, None).await;
    assert_eq!(ran.subscriptions_past_due, 0);
    assert_eq!(sub_row(&app, &org.id).await.status, "ACTIVE");

    clock.set(t0 + chrono::Duration::days(7));
    let ran = run_cycle(&app, &org.id, None).await;
    assert_eq!(ran.subscriptions_past_due, 1);
    assert_eq!(sub_row(&app, &org.id).await.status, "PAST_DUE");
    assert_eq!(
        run_cycle(&app, &org.id, None).await.subscriptions_past_due,
        0,
        "already PAST_DUE"
    );
    let actions: Vec<String> = audit_actions(
        &app,
        &ids::encode(IdKind::Subscription, sub_row(&app, &org.id).await.id),
    )
    .await;
    assert!(
        actions.contains(&"MarkSubscriptionPastDue".to_owned()),
        "{actions:?}"
    );

    gift(&app, &org.id, "20.00").await;
    let invoice_id = ids::decode(IdKind::Invoice, &invoice.id).expect("invoice id");
    let paid = pay(&app, &org.id, invoice_id).await;
    assert_eq!(paid.status, proto::InvoiceStatus::Paid as i32);
    assert_eq!(sub_row(&app, &org.id).await.status, "ACTIVE");
    let ran = run_cycle(&app, &org.id, None).await;
    assert_eq!(ran.subscriptions_past_due, 0);
    assert_eq!(sub_row(&app, &org.id).await.status, "ACTIVE");

    // The July renewal (11.00 left covers 9.00) is paid; August's is not, becomes
    // overdue, and an operator voids it: the next run makes the subscription ACTIVE.
    clock.set(utc(2026, 7, 1, 12, 0, 0));
    assert_eq!(run_cycle(&app, &org.id, None).await.invoices_paid, 1);
    clock.set(utc(2026, 8, 1, 12, 0, 0));
    let ran = run_cycle(&app, &org.id, None).await;
    assert_eq!((ran.periods_closed, ran.invoices_paid), (1, 0));
    clock.set(utc(2026, 8, 9, 0, 0, 0));
    assert_eq!(
        run_cycle(&app, &org.id, None).await.subscriptions_past_due,
        1
    );
    let august = invoice_rows(&app, &org.id)
        .await
        .pop()
        .expect("august invoice");
    assert_eq!(august.status, "OPEN");
    app.billing()
        .void_invoice(authed(
            proto::VoidInvoiceRequest {
                organization_id: org.id.clone(),
                invoice_id: ids::encode(IdKind::Invoice, august.id),
                reason: "goodwill".into(),
                etag: String::new(),
            },
            &app.root(),
        ))
        .await
        .expect("void");
    assert_eq!(sub_row(&app, &org.id).await.status, "ACTIVE");
    let ran = run_cycle(&app, &org.id, None).await;
    assert_eq!(ran.subscriptions_past_due, 0);
    assert_eq!(sub_row(&app, &org.id).await.status, "ACTIVE");
    assert_eq!(
        subscription_changes(&app, &org.id).await,
        [
            "created",
            "past_due",
            "recovered",
            "renewed",
            "renewed",
            "past_due",
            "recovered"
        ]
    );
    app.stop().await;
}

/// Two invoices overdue: paying the newer keeps the subscription PAST_DUE (the older
/// one is still overdue); voiding the older then makes it ACTIVE at once.
async fn past_due_lasts_until_the_last_overdue_invoice_is_settled(backend: Backend) {
    let t0 = utc(2026, 6, 1, 12, 0, 0);
    let Some((app, clock)) = on_clock(backend, t0).await else {
        return;
    };
    let org = customer(&app, "Two Behind", None).await;
    subscribe(&app, &org.id, "basic").await;
    // The July renewal stays OPEN too; June's invoice is overdue.
    clock.set(utc(2026, 7, 1, 12, 0, 0));
    let ran = run_cycle(&app, &org.id, None).await;
    assert_eq!(
        (
            ran.periods_closed,
            ran.invoices_paid,
            ran.subscriptions_past_due
        ),
        (1, 0, 1)
    );
    // A week later July's is overdue as well.
    clock.set(utc(2026, 7, 8, 12, 0, 0));
    let ran = run_cycle(&app, &org.id, None).await;
    assert_eq!((ran.periods_closed, ran.subscriptions_past_due), (0, 0));
    let rows = invoice_rows(&app, &org.id).await;
    let statuses: Vec<&str> = rows.iter().map(|i| i.status.as_str()).collect();
    assert_eq!(statuses, ["OPEN", "OPEN"], "June and July are overdue");

    gift(&app, &org.id, "9.00").await;
    pay(&app, &org.id, rows[1].id).await;
    assert_eq!(
        sub_row(&app, &org.id).await.status,
        "PAST_DUE",
        "June is still overdue"
    );
    app.billing()
        .void_invoice(authed(
            proto::VoidInvoiceRequest {
                organization_id: org.id.clone(),
                invoice_id: ids::encode(IdKind::Invoice, rows[0].id),
                reason: "written off".into(),
                etag: String::new(),
            },
            &app.root(),
        ))
        .await
        .expect("void");
    assert_eq!(sub_row(&app, &org.id).await.status, "ACTIVE");
    let voided = audit_actions(&app, &ids::encode(IdKind::Invoice, rows[0].id)).await;
    assert!(voided.contains(&"VoidInvoice".to_owned()), "{voided:?}");
    assert_eq!(
        subscription_changes(&app, &org.id).await,
        ["created", "renewed", "past_due", "recovered"]
    );
    app.stop().await;
}

/// Basic annual, changed to monthly (which waits for the period end): at the year's
/// end the monthly price applies and the periods count from there.
async fn a_scheduled_interval_change_re_anchors_at_the_period_end(backend: Backend) {
    let t0 = utc(2026, 1, 31, 0, 0, 0);
    let Some((app, clock)) = on_clock(backend, t0).await else {
        return;
    };
    let org = customer(&app, "Yearly Ltd", Some("200.00")).await;
    try_subscribe(
        &app,
        &app.token("CONFIG_ADMIN", &org.id),
        &org.id,
        "basic",
        proto::BillingInterval::Year,
        0,
        "yearly-1",
    )
    .await
    .expect("subscribe annually");
    clock.set(utc(2026, 6, 1, 0, 0, 0));
    let changed = change_plan(&app, &org.id, "basic", proto::BillingInterval::Month).await;
    assert!(changed.invoice.is_none());
    assert_eq!(
        sub_row(&app, &org.id).await.scheduled_interval.as_deref(),
        Some("MONTH")
    );

    let year_end = utc(2027, 1, 31, 0, 0, 0);
    clock.set(year_end);
    let ran = run_cycle(&app, &org.id, None).await;
    assert_eq!((ran.periods_closed, ran.scheduled_changes_applied), (1, 1));
    let row = sub_row(&app, &org.id).await;
    assert_eq!(row.interval, "MONTH");
    assert_eq!(row.price_micros, 9 * UNIT);
    assert_eq!(row.anchor_time, micros(year_end));
    assert_eq!(row.current_period_end, micros(utc(2027, 2, 28, 0, 0, 0)));
    clock.set(utc(2027, 3, 1, 0, 0, 0));
    assert_eq!(run_cycle(&app, &org.id, None).await.periods_closed, 1);
    assert_eq!(
        sub_row(&app, &org.id).await.current_period_end,
        micros(utc(2027, 3, 31, 0, 0, 0)),
        "counted from the new anchor, the 31st"
    );
    let all = bills(&app, &org.id).await;
    assert_eq!(
        all.iter().map(|b| b.total).collect::<Vec<_>>(),
        vec![90 * UNIT, 9 * UNIT, 9 * UNIT]
    );
    assert_eq!(
        all[1].lines,
        vec![sub_line("Basic", "monthly", "2027-01-31", "2027-02-28", 9)]
    );
    app.stop().await;
}

/// An ACTIVE monthly add-on is charged again with every renewal: quantity × the
/// months of the next period (twelve for an annual subscription).
async fn monthly_add_ons_are_charged_with_each_renewal(backend: Backend) {
    let t0 = utc(2026, 2, 1, 0, 0, 0);
    let Some((app, clock)) = on_clock(backend, t0).await else {
        return;
    };
    let org = customer(&app, "Storage Hungry", Some("1000.00")).await;
    subscribe(&app, &org.id, "pro").await;
    app.subscriptions()
        .purchase_service(authed(
            proto::PurchaseServiceRequest {
                organization_id: org.id.clone(),
                service_id: "extra_storage_100gb".into(),
                quantity: 2,
                payment_source: proto::ServicePaymentSource::Credits as i32,
                gateway: String::new(),
                payment_method_id: String::new(),
                request_id: "storage-1".into(),
            },
            &app.token("CONFIG_ADMIN", &org.id),
        ))
        .await
        .expect("purchase add-on");
    clock.set(utc(2026, 3, 1, 0, 0, 0));
    run_cycle(&app, &org.id, None).await;
    let renewal = bills(&app, &org.id).await.pop().expect("renewal");
    assert_eq!(renewal.total, (29 + 20) * UNIT);
    assert_eq!(
        renewal.lines[1],
        (
            "ADDON".into(),
            "Extra storage (100 GB) × 2, 1 month: 2026-03-01 – 2026-04-01".into(),
            2,
            20 * UNIT
        )
    );
    assert_eq!(renewal.status, "PAID");
    app.stop().await;
}

/// With `billing_cycle_interval` set the server closes due periods by itself, and stops
/// the job on shutdown.
async fn the_server_runs_the_cycle_on_an_interval(backend: Backend) {
    let t0 = utc(2026, 4, 1, 0, 0, 0);
    let clock = FixedClock::new(t0);
    let Some(app) = TestApp::spawn_with_clock(backend, Arc::new(clock.clone()), |s| {
        s.billing.billing_cycle_interval = Some(Duration::from_millis(100));
    })
    .await
    else {
        return;
    };
    let org = customer(&app, "Hands Off", Some("100.00")).await;
    subscribe(&app, &org.id, "pro").await;
    clock.set(utc(2026, 5, 2, 0, 0, 0));
    let mut closed = false;
    for _ in 0..100 {
        if sub_row(&app, &org.id).await.current_period_end == micros(utc(2026, 6, 1, 0, 0, 0)) {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed, "the interval job closed the May period");
    assert_eq!(bills(&app, &org.id).await.len(), 2);
    app.stop().await;
}

/// Operators only; an organization's admin is refused before anything is validated;
/// `at` must be a sane instant; a run for one organization leaves the others alone.
async fn only_operators_run_the_cycle_and_bad_instants_are_refused(backend: Backend) {
    let t0 = utc(2026, 9, 1, 0, 0, 0);
    let Some((app, clock)) = on_clock(backend, t0).await else {
        return;
    };
    let a = customer(&app, "Scoped A", Some("100.00")).await;
    let b = customer(&app, "Scoped B", Some("100.00")).await;
    subscribe(&app, &a.id, "pro").await;
    subscribe(&app, &b.id, "pro").await;
    clock.set(utc(2026, 10, 2, 0, 0, 0));

    for (token, org) in [
        (app.token("CONFIG_ADMIN", &a.id), a.id.as_str()),
        (app.token("CONFIG_ADMIN", &a.id), ""),
        (app.token("MEMBER", &a.id), a.id.as_str()),
    ] {
        let refused = try_run(&app, &token, org, Some(utc(1990, 1, 1, 0, 0, 0)), "")
            .await
            .expect_err("not an operator");
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
    for bad in [utc(1999, 12, 31, 23, 59, 59), utc(2070, 1, 1, 0, 0, 0)] {
        let refused = try_run(&app, &app.root(), "", Some(bad), "")
            .await
            .expect_err("out of bounds");
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(violations(&refused), vec!["at"]);
    }
    let unknown = try_run(&app, &app.root(), "org_nope", None, "")
        .await
        .expect_err("bad organization");
    assert_eq!(
        unknown.code(),
        Code::InvalidArgument,
        "{}",
        reason(&unknown)
    );

    let ran = try_run(
        &app,
        &app.token("ROOT_POWER_USER", "internal"),
        &a.id,
        None,
        "",
    )
    .await
    .expect("power user runs it for one organization");
    assert_eq!(ran.periods_closed, 1);
    assert_eq!(bills(&app, &a.id).await.len(), 2);
    assert_eq!(
        bills(&app, &b.id).await.len(),
        1,
        "the other organization waits"
    );
    let ran = try_run(&app, &app.token("SYSTEM", "internal"), "", None, "")
        .await
        .expect("system runs it for all");
    assert_eq!(ran.periods_closed, 1);
    assert_eq!(bills(&app, &b.id).await.len(), 2);
    app.stop().await;
}
