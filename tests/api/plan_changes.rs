//! Plan changes (SPEC §6): upgrades at once with exact proration invoiced (paid from
//! credits when they cover it), downgrades and annual → monthly at the period end
//! (replaced by a later one, dropped by choosing the current plan, cleared by an
//! upgrade), limits blocking a downgrade with the numbers, interval changes, trials
//! without money, idempotent retries, stale etags, a preview that writes nothing, and an
//! independent reference model of proration checked against PreviewPlanChange.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use chrono::{DateTime, Duration, Months, TimeZone, Utc};
use proptest::{
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config, TestCaseError, TestRunner},
};
use rust_decimal::{Decimal, RoundingStrategy};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use tenantry::{
    domain::{
        clock::FixedClock,
        ids::{self, IdKind},
        plans::Catalogue,
    },
    proto::{self, BillingInterval as I, InvoiceLineKind as L, InvoiceStatus, PlanChangeKind as K},
    storage::entities::{invoices, members, usage_counters},
};
use tonic::{Code, Status};

use crate::{
    credits::{all_transactions, balance_amount, gift},
    helpers::{Backend, TestApp, authed, metadata, reason, violations},
    invoices::invoice_count,
    on_both_backends,
    organizations::{audit_actions, org_row, org_uuid, register_agent, tenant},
    plan_limits::register,
    subscriptions::{current, mid_november, on_clock, sub_row, subscribe, try_subscribe, ts},
};

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .expect("instant")
}

/// PreviewPlanChange as the org's CONFIG_ADMIN.
async fn preview(
    app: &TestApp,
    org_id: &str,
    plan: &str,
    interval: I,
) -> Result<proto::PreviewPlanChangeResponse, Status> {
    let request = proto::PreviewPlanChangeRequest {
        organization_id: org_id.into(),
        plan_id: plan.into(),
        interval: interval as i32,
    };
    app.subscriptions()
        .preview_plan_change(authed(request, &app.token("CONFIG_ADMIN", org_id)))
        .await
        .map(|r| r.into_inner())
}

/// ChangePlan as the org's CONFIG_ADMIN.
async fn change(
    app: &TestApp,
    org_id: &str,
    plan: &str,
    interval: I,
    etag: &str,
    request_id: &str,
) -> Result<proto::ChangePlanResponse, Status> {
    let request = proto::ChangePlanRequest {
        organization_id: org_id.into(),
        plan_id: plan.into(),
        interval: interval as i32,
        etag: etag.into(),
        request_id: request_id.into(),
    };
    app.subscriptions()
        .change_plan(authed(request, &app.token("CONFIG_ADMIN", org_id)))
        .await
        .map(|r| r.into_inner())
}

/// ChangePlan with a fresh request id, expected to succeed.
async fn change_ok(
    app: &TestApp,
    org_id: &str,
    plan: &str,
    interval: I,
) -> proto::ChangePlanResponse {
    change(
        app,
        org_id,
        plan,
        interval,
        "",
        &uuid::Uuid::now_v7().to_string(),
    )
    .await
    .expect("change plan")
}

fn amount(m: &Option<proto::Money>) -> &str {
    m.as_ref().map_or("<unset>", |m| m.amount.as_str())
}

/// (kind, amount) of each line.
fn lines(lines: &[proto::InvoiceLine]) -> Vec<(i32, String)> {
    lines
        .iter()
        .map(|l| (l.kind, amount(&l.amount).to_owned()))
        .collect()
}

on_both_backends!(
    an_upgrade_applies_at_once_and_is_paid_from_credits,
    without_credits_the_proration_invoice_stays_open,
    a_downgrade_waits_for_the_period_end,
    a_downgrade_over_the_target_limits_is_refused_with_the_numbers,
    a_downgrade_is_checked_against_each_target_limit,
    a_downgrade_keeps_the_accounts_organization_limit,
    monthly_to_annual_resets_the_period_and_annual_to_monthly_waits,
    an_upgrade_to_a_shorter_interval_credits_the_difference,
    a_trial_changes_plan_at_once_without_money,
    preview_writes_nothing_and_matches_the_change,
    bad_input_missing_subscription_and_policy,
    proration_agrees_with_an_independent_reference_model,
);

async fn an_upgrade_applies_at_once_and_is_paid_from_credits(backend: Backend) {
    let Some((app, clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Growing Fast", "").await;
    gift(&app, &org.id, "300.00").await;
    let created = subscribe(&app, &org.id, "pro").await;
    assert_eq!(balance_amount(&app, &org.id).await, "271.00");
    // Exactly half of the 30-day period [11-15 12:00, 12-15 12:00) is left; the
    // sub-second part of the instant does not count.
    clock.set(at(2026, 11, 30, 12) + Duration::milliseconds(700));
    let done = change(&app, &org.id, "business", I::Unspecified, "", "up-1")
        .await
        .expect("upgrade");
    let c = done.change.clone().expect("change");
    assert_eq!(c.kind, K::Upgrade as i32);
    assert!(!c.scheduled);
    assert_eq!(c.effective_time, ts(at(2026, 11, 30, 12)));
    assert_eq!(
        (c.from_plan_id.as_str(), c.to_plan_id.as_str()),
        ("pro", "business")
    );
    assert_eq!(c.to_interval, I::Month as i32);
    assert_eq!(amount(&c.credit_amount), "14.50");
    assert_eq!(amount(&c.charge_amount), "99.50");
    assert_eq!(amount(&c.net_amount), "85.00");
    assert_eq!(amount(&c.new_price), "199.00");
    assert_eq!(
        lines(&c.lines),
        [
            (L::ProrationCredit as i32, "-14.50".to_owned()),
            (L::ProrationCharge as i32, "99.50".to_owned())
        ]
    );
    assert_eq!(
        c.lines[0].description,
        "Unused time on Pro (monthly) after 2026-11-30 12:00:00 UTC"
    );
    assert_eq!(
        c.lines[1].description,
        "Remaining time on Business (monthly) from 2026-11-30 12:00:00 UTC"
    );
    let invoice = done.invoice.clone().expect("proration invoice");
    assert_eq!(invoice.status, InvoiceStatus::Paid as i32);
    assert_eq!(invoice.number, "INV-000002");
    assert_eq!(amount(&invoice.total), "85.00");
    assert_eq!(lines(&invoice.lines), lines(&c.lines));
    assert_eq!(invoice.period_start, ts(at(2026, 11, 30, 12)));
    assert_eq!(invoice.period_end, ts(at(2026, 12, 15, 12)));
    assert_eq!(balance_amount(&app, &org.id).await, "186.00");
    // The period is kept; plan, price and the org's plan mirror change.
    let sub = done.subscription.clone().expect("subscription");
    let before = created.subscription.expect("created");
    assert_eq!(sub.plan_id, "business");
    assert_eq!(amount(&sub.price), "199.00");
    assert_eq!(sub.current_period_start, before.current_period_start);
    assert_eq!(sub.current_period_end, before.current_period_end);
    assert_ne!(sub.etag, before.etag);
    assert_eq!(org_row(&app, &org.id).await.plan, "business");
    assert!(
        audit_actions(&app, &sub.id)
            .await
            .contains(&"ChangePlan".to_owned())
    );
    // A retry returns the first response: no second invoice, no second payment.
    let again = change(&app, &org.id, "business", I::Unspecified, "", "up-1")
        .await
        .expect("retry");
    assert_eq!(again.invoice.map(|i| i.id), Some(invoice.id));
    assert_eq!(invoice_count(&app, &org.id).await, 2);
    assert_eq!(balance_amount(&app, &org.id).await, "186.00");
    // Now on the top priced plan, business again is the same plan.
    let same = change(&app, &org.id, "business", I::Month, "", "up-2")
        .await
        .expect_err("same plan");
    assert_eq!(same.code(), Code::FailedPrecondition);
    assert_eq!(reason(&same), "SAME_PLAN");
    // A stale etag is refused and changes nothing.
    let stale = change(
        &app,
        &org.id,
        "team",
        I::Unspecified,
        &before.etag,
        "down-1",
    )
    .await
    .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    assert!(sub_row(&app, &org.id).await.scheduled_plan_id.is_none());
    // The current etag passes.
    let ok = change(&app, &org.id, "team", I::Unspecified, &sub.etag, "down-2")
        .await
        .expect("fresh etag");
    assert!(ok.change.expect("change").scheduled);
    app.stop().await;
}

async fn without_credits_the_proration_invoice_stays_open(backend: Backend) {
    let Some((app, clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Pays Later", "").await;
    subscribe(&app, &org.id, "basic").await;
    clock.set(at(2026, 11, 30, 12));
    let done = change_ok(&app, &org.id, "pro", I::Unspecified).await;
    let c = done.change.expect("change");
    assert_eq!(
        (
            amount(&c.credit_amount),
            amount(&c.charge_amount),
            amount(&c.net_amount)
        ),
        ("4.50", "14.50", "10.00")
    );
    let invoice = done.invoice.expect("invoice");
    assert_eq!(invoice.status, InvoiceStatus::Open as i32);
    assert_eq!(amount(&invoice.amount_due), "10.00");
    assert_eq!(balance_amount(&app, &org.id).await, "0.00");
    // It is the subscription's invoice, so the renewal cycle's past-due rule watches it.
    let row = sub_row(&app, &org.id).await;
    let stored = invoices::Entity::find_by_id(
        ids::decode(IdKind::Invoice, &invoice.id).expect("invoice id"),
    )
    .one(app.store.db())
    .await
    .expect("read invoice")
    .expect("invoice row");
    assert_eq!(
        (stored.subscription_id, stored.status.as_str()),
        (Some(row.id), "OPEN")
    );
    assert_eq!(row.plan_id, "pro");
    assert_eq!(org_row(&app, &org.id).await.plan, "pro");
    app.stop().await;
}

async fn a_downgrade_waits_for_the_period_end(backend: Backend) {
    let Some((app, clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Slimming Down", "").await;
    gift(&app, &org.id, "500.00").await;
    subscribe(&app, &org.id, "team").await;
    clock.set(at(2026, 11, 20, 0));
    let balance = balance_amount(&app, &org.id).await;
    let period_end = ts(at(2026, 12, 15, 12));

    let down = change_ok(&app, &org.id, "pro", I::Unspecified).await;
    let c = down.change.expect("change");
    assert_eq!(c.kind, K::Downgrade as i32);
    assert!(c.scheduled);
    assert_eq!(c.effective_time, period_end);
    assert!(c.lines.is_empty());
    assert_eq!(amount(&c.net_amount), "0.00");
    assert_eq!(amount(&c.new_price), "29.00");
    assert!(down.invoice.is_none());
    let sub = down.subscription.expect("subscription");
    assert_eq!(sub.plan_id, "team");
    let scheduled = sub.scheduled_change.expect("scheduled");
    assert_eq!(
        (
            scheduled.plan_id.as_str(),
            scheduled.interval,
            scheduled.effective_time
        ),
        ("pro", I::Month as i32, period_end)
    );
    // Shown by GetSubscription; nothing else changed.
    let got = current(&app, &org.id).await;
    assert_eq!(
        got.subscription
            .and_then(|s| s.scheduled_change)
            .map(|s| s.plan_id),
        Some("pro".into())
    );
    assert_eq!(got.plan.map(|p| p.id), Some("team".into()));
    assert_eq!(org_row(&app, &org.id).await.plan, "team");
    assert_eq!(invoice_count(&app, &org.id).await, 1);
    assert_eq!(balance_amount(&app, &org.id).await, balance);

    // A later downgrade replaces it.
    let replaced = change_ok(&app, &org.id, "basic", I::Year).await;
    let scheduled = replaced
        .subscription
        .and_then(|s| s.scheduled_change)
        .expect("scheduled");
    assert_eq!(
        (scheduled.plan_id.as_str(), scheduled.interval),
        ("basic", I::Year as i32)
    );
    // Choosing the current plan and interval drops it.
    let dropped = change_ok(&app, &org.id, "team", I::Unspecified).await;
    let c = dropped.change.expect("change");
    assert_eq!(c.kind, K::Unspecified as i32);
    assert!(!c.scheduled);
    assert!(c.lines.is_empty());
    assert!(dropped.invoice.is_none());
    assert!(
        dropped
            .subscription
            .expect("sub")
            .scheduled_change
            .is_none()
    );
    // With nothing scheduled, the same plan is refused.
    let same = change(&app, &org.id, "team", I::Month, "", "same")
        .await
        .expect_err("same plan");
    assert_eq!(reason(&same), "SAME_PLAN");

    // An upgrade applies at once and clears a scheduled downgrade.
    change_ok(&app, &org.id, "basic", I::Unspecified).await;
    let up = change_ok(&app, &org.id, "business", I::Unspecified).await;
    let sub = up.subscription.expect("subscription");
    assert_eq!(sub.plan_id, "business");
    assert!(sub.scheduled_change.is_none());
    assert!(sub_row(&app, &org.id).await.scheduled_plan_id.is_none());
    assert_eq!(
        up.invoice.map(|i| i.status),
        Some(InvoiceStatus::Paid as i32)
    );
    let actions = audit_actions(&app, &sub.id).await;
    assert_eq!(actions.iter().filter(|a| *a == "ChangePlan").count(), 5);
    app.stop().await;
}

async fn a_downgrade_over_the_target_limits_is_refused_with_the_numbers(backend: Backend) {
    let Some((app, clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Many Agents", "").await;
    gift(&app, &org.id, "100.00").await;
    subscribe(&app, &org.id, "pro").await;
    for i in 0..4 {
        register_agent(&app, &app.root(), &org.id, &format!("Bot {i}")).await;
    }
    clock.set(at(2026, 11, 25, 0));
    // The preview shows the computed change and what blocks it.
    let shown = preview(&app, &org.id, "basic", I::Unspecified)
        .await
        .expect("preview");
    assert_eq!(
        shown.violations,
        [proto::PlanLimitViolation {
            limit: "max_agents".into(),
            current: 4,
            allowed: 3,
        }]
    );
    let c = shown.change.expect("change");
    assert_eq!(c.kind, K::Downgrade as i32);
    assert!(c.scheduled);
    let refused = change(&app, &org.id, "basic", I::Unspecified, "", "down")
        .await
        .expect_err("over the limits");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "PLAN_LIMITS_EXCEEDED");
    assert!(
        refused
            .message()
            .contains("max_agents: 4 in use, basic allows 3"),
        "{}",
        refused.message()
    );
    assert_eq!(metadata(&refused, "limit").as_deref(), Some("max_agents"));
    assert_eq!(metadata(&refused, "current").as_deref(), Some("4"));
    assert_eq!(metadata(&refused, "allowed").as_deref(), Some("3"));
    assert!(sub_row(&app, &org.id).await.scheduled_plan_id.is_none());
    // A plan whose limits hold is fine; an upgrade has no violations.
    assert!(
        preview(&app, &org.id, "team", I::Unspecified)
            .await
            .expect("preview")
            .violations
            .is_empty()
    );
    app.stop().await;
}

/// Members added as fixtures (usage reached elsewhere, e.g. before a plan change).
async fn add_members(app: &TestApp, org_id: &str, count: usize) {
    let now = mid_november().timestamp_micros();
    for i in 0..count {
        members::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            organization_id: Set(org_uuid(org_id)),
            user_id: Set(format!("member-{i}")),
            email: Set(format!("member-{i}@example.com")),
            name: Set(format!("Member {i}")),
            role: Set("MEMBER".into()),
            is_owner: Set(false),
            create_time: Set(now),
            update_time: Set(now),
            version: Set(1),
        }
        .insert(app.store.db())
        .await
        .expect("insert member");
    }
}

/// The organization's LOGS usage of `month` set as a fixture.
async fn set_logs(app: &TestApp, org_id: &str, month: &str, logs: i64) {
    usage_counters::ActiveModel {
        organization_id: Set(org_uuid(org_id)),
        month: Set(month.into()),
        cost_micros: Set(0),
        tokens: Set(0),
        messages: Set(0),
        conversations: Set(0),
        minutes: Set(0),
        logs: Set(logs),
        events: Set(0),
        update_time: Set(mid_november().timestamp_micros()),
    }
    .insert(app.store.db())
    .await
    .expect("insert usage");
}

/// Asserts a ChangePlan refused `PLAN_LIMITS_EXCEEDED` for `limit` alone, and the
/// preview's matching violation.
async fn assert_refused_for(
    app: &TestApp,
    org_id: &str,
    plan: &str,
    (limit, current, allowed): (&str, i64, i64),
) {
    let refused = change(
        app,
        org_id,
        plan,
        I::Unspecified,
        "",
        &uuid::Uuid::now_v7().to_string(),
    )
    .await
    .expect_err("over a limit");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "PLAN_LIMITS_EXCEEDED");
    assert_eq!(metadata(&refused, "limit").as_deref(), Some(limit));
    assert_eq!(metadata(&refused, "current"), Some(current.to_string()));
    assert_eq!(metadata(&refused, "allowed"), Some(allowed.to_string()));
    let shown = preview(app, org_id, plan, I::Unspecified)
        .await
        .expect("preview");
    assert_eq!(
        shown.violations,
        [proto::PlanLimitViolation {
            limit: limit.into(),
            current,
            allowed,
        }]
    );
}

/// Usage exactly at a target limit is no violation; one over any of them refuses the
/// downgrade (agents, members, the month's logs).
async fn a_downgrade_is_checked_against_each_target_limit(backend: Backend) {
    let Some((app, clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "At The Edge", "").await;
    gift(&app, &org.id, "100.00").await;
    subscribe(&app, &org.id, "pro").await;
    for i in 0..3 {
        register_agent(&app, &app.root(), &org.id, &format!("Bot {i}")).await;
    }
    clock.set(at(2026, 11, 25, 0));
    // Three agents where basic allows three: scheduled.
    let down = change_ok(&app, &org.id, "basic", I::Unspecified).await;
    assert!(down.change.expect("change").scheduled);
    assert_eq!(
        sub_row(&app, &org.id).await.scheduled_plan_id.as_deref(),
        Some("basic")
    );
    // Four members where basic allows three.
    add_members(&app, &org.id, 4).await;
    assert_refused_for(&app, &org.id, "basic", ("max_team_members", 4, 3)).await;
    members::Entity::delete_many()
        .filter(members::Column::OrganizationId.eq(org_uuid(&org.id)))
        .filter(members::Column::UserId.eq("member-0"))
        .exec(app.store.db())
        .await
        .expect("remove a member");
    // This month's logs over basic's 10,000.
    set_logs(&app, &org.id, "2026-11", 10_001).await;
    assert_refused_for(
        &app,
        &org.id,
        "basic",
        ("max_logs_per_month", 10_001, 10_000),
    )
    .await;
    app.stop().await;
}

/// A user's organizations share one `max_organizations`, the highest of their plans
/// (as RegisterOrganization counts it): downgrading one of two organizations to basic
/// (one organization) is fine while the other is on team (ten).
async fn a_downgrade_keeps_the_accounts_organization_limit(backend: Backend) {
    let Some((app, clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let first = register(&app, "founder", "Team Co", "")
        .await
        .expect("first organization");
    gift(&app, &first, "200.00").await;
    subscribe(&app, &first, "team").await;
    let second = register(&app, "founder", "Pro Co", "")
        .await
        .expect("team allows a second organization");
    gift(&app, &second, "100.00").await;
    subscribe(&app, &second, "pro").await;
    clock.set(at(2026, 11, 25, 0));
    let shown = preview(&app, &second, "basic", I::Unspecified)
        .await
        .expect("preview");
    assert_eq!(shown.violations, []);
    let down = change_ok(&app, &second, "basic", I::Unspecified).await;
    assert!(down.change.expect("change").scheduled);
    assert_eq!(
        sub_row(&app, &second).await.scheduled_plan_id.as_deref(),
        Some("basic")
    );
    assert_eq!(
        current(&app, &second)
            .await
            .usage
            .map(|u| u.organizations_count),
        Some(2)
    );
    app.stop().await;
}

async fn monthly_to_annual_resets_the_period_and_annual_to_monthly_waits(backend: Backend) {
    let Some((app, clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Committing", "").await;
    gift(&app, &org.id, "1000.00").await;
    subscribe(&app, &org.id, "pro").await;
    clock.set(at(2026, 11, 30, 12) + Duration::microseconds(999_999));
    // Annual costs more but is not an upgrade: same plan, other interval.
    let yearly = change_ok(&app, &org.id, "pro", I::Year).await;
    let c = yearly.change.expect("change");
    assert_eq!(c.kind, K::IntervalChange as i32);
    assert!(!c.scheduled);
    assert_eq!(
        (
            amount(&c.credit_amount),
            amount(&c.charge_amount),
            amount(&c.net_amount)
        ),
        ("14.50", "290.00", "275.50")
    );
    assert_eq!(c.lines[1].period_start, ts(at(2026, 11, 30, 12)));
    assert_eq!(c.lines[1].period_end, ts(at(2027, 11, 30, 12)));
    let sub = yearly.subscription.expect("subscription");
    assert_eq!(sub.interval, I::Year as i32);
    assert_eq!(amount(&sub.price), "290.00");
    assert_eq!(sub.current_period_start, ts(at(2026, 11, 30, 12)));
    assert_eq!(sub.current_period_end, ts(at(2027, 11, 30, 12)));
    assert_eq!(
        sub_row(&app, &org.id).await.anchor_time,
        at(2026, 11, 30, 12).timestamp_micros()
    );
    assert_eq!(
        yearly
            .invoice
            .map(|i| (i.status, i.total.expect("total").amount)),
        Some((InvoiceStatus::Paid as i32, "275.50".into()))
    );
    assert_eq!(balance_amount(&app, &org.id).await, "695.50");
    // Back to monthly waits for the end of the annual period.
    clock.set(at(2027, 3, 1, 0));
    let monthly = change_ok(&app, &org.id, "pro", I::Month).await;
    let c = monthly.change.expect("change");
    assert_eq!(c.kind, K::IntervalChange as i32);
    assert!(c.scheduled);
    assert_eq!(c.effective_time, ts(at(2027, 11, 30, 12)));
    assert!(monthly.invoice.is_none());
    let sub = monthly.subscription.expect("subscription");
    assert_eq!(sub.interval, I::Year as i32);
    let scheduled = sub.scheduled_change.expect("scheduled");
    assert_eq!(
        (scheduled.plan_id.as_str(), scheduled.interval),
        ("pro", I::Month as i32)
    );
    // A cheaper plan billed monthly is a downgrade by rank.
    let down = preview(&app, &org.id, "basic", I::Month)
        .await
        .expect("preview");
    assert_eq!(down.change.map(|c| c.kind), Some(K::Downgrade as i32));
    app.stop().await;
}

async fn an_upgrade_to_a_shorter_interval_credits_the_difference(backend: Backend) {
    let Some((app, clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Annual Then Monthly", "").await;
    gift(&app, &org.id, "1000.00").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    try_subscribe(&app, &admin, &org.id, "pro", I::Year, 0, "annual")
        .await
        .expect("annual pro");
    assert_eq!(balance_amount(&app, &org.id).await, "710.00");
    // One day of 365 used: 290.00 × 364/365 = 289.2054… → 289.21 back; team monthly is
    // charged in full for a new period starting now.
    clock.set(at(2026, 11, 16, 12));
    let done = change_ok(&app, &org.id, "team", I::Month).await;
    let c = done.change.expect("change");
    assert_eq!(c.kind, K::Upgrade as i32);
    assert_eq!(
        (
            amount(&c.credit_amount),
            amount(&c.charge_amount),
            amount(&c.net_amount)
        ),
        ("289.21", "79.00", "-210.21")
    );
    assert_eq!(
        lines(&c.lines),
        [
            (L::ProrationCredit as i32, "-289.21".to_owned()),
            (L::ProrationCharge as i32, "79.00".to_owned()),
            (L::OneOff as i32, "210.21".to_owned()),
        ]
    );
    let invoice = done.invoice.expect("invoice");
    assert_eq!(invoice.status, InvoiceStatus::Paid as i32);
    assert_eq!(amount(&invoice.total), "0.00");
    assert_eq!(balance_amount(&app, &org.id).await, "920.21");
    let credit = all_transactions(&app, &org.id)
        .await
        .into_iter()
        .find(|t| t.r#type == proto::CreditTransactionType::Credit as i32)
        .expect("credit entry");
    assert_eq!(amount(&credit.amount), "210.21");
    assert_eq!(credit.invoice_id, invoice.id);
    let sub = done.subscription.expect("subscription");
    assert_eq!(sub.current_period_start, ts(at(2026, 11, 16, 12)));
    assert_eq!(sub.current_period_end, ts(at(2026, 12, 16, 12)));
    assert_eq!(sub.interval, I::Month as i32);
    app.stop().await;
}

async fn a_trial_changes_plan_at_once_without_money(backend: Backend) {
    let Some((app, clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Just Looking", "").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    let trial = try_subscribe(&app, &admin, &org.id, "team", I::Year, 14, "trial")
        .await
        .expect("trial")
        .subscription
        .expect("subscription");
    clock.set(at(2026, 11, 20, 0));
    let up = change_ok(&app, &org.id, "business", I::Month).await;
    let c = up.change.expect("change");
    assert_eq!(c.kind, K::Upgrade as i32);
    assert!(!c.scheduled);
    assert!(c.lines.is_empty());
    assert_eq!(amount(&c.net_amount), "0.00");
    assert!(up.invoice.is_none());
    let sub = up.subscription.expect("subscription");
    assert_eq!(sub.status, proto::SubscriptionStatus::Trialing as i32);
    assert_eq!(sub.trial_end, trial.trial_end);
    assert_eq!(sub.current_period_end, trial.current_period_end);
    assert_eq!(
        (sub.plan_id.as_str(), sub.interval),
        ("business", I::Month as i32)
    );
    assert_eq!(amount(&sub.price), "199.00");
    // A downgrade applies at once too while trialing.
    let down = change_ok(&app, &org.id, "basic", I::Unspecified).await;
    assert!(!down.change.expect("change").scheduled);
    assert_eq!(down.subscription.map(|s| s.plan_id), Some("basic".into()));
    assert_eq!(org_row(&app, &org.id).await.plan, "basic");
    assert_eq!(invoice_count(&app, &org.id).await, 0);
    app.stop().await;
}

async fn preview_writes_nothing_and_matches_the_change(backend: Backend) {
    let Some((app, clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Careful Buyer", "").await;
    gift(&app, &org.id, "100.00").await;
    subscribe(&app, &org.id, "pro").await;
    clock.set(at(2026, 11, 22, 3) + Duration::seconds(245) + Duration::microseconds(600_000));
    let before = sub_row(&app, &org.id).await;
    let shown = preview(&app, &org.id, "team", I::Unspecified)
        .await
        .expect("preview");
    assert!(shown.violations.is_empty());
    assert_eq!(sub_row(&app, &org.id).await, before);
    assert_eq!(invoice_count(&app, &org.id).await, 1);
    assert_eq!(balance_amount(&app, &org.id).await, "71.00");
    assert_eq!(org_row(&app, &org.id).await.plan, "pro");
    let sub_id =
        tenantry::domain::ids::encode(tenantry::domain::ids::IdKind::Subscription, before.id);
    assert!(
        !audit_actions(&app, &sub_id)
            .await
            .contains(&"ChangePlan".to_owned())
    );
    // ChangePlan at the same instant does exactly what the preview showed.
    let done = change_ok(&app, &org.id, "team", I::Unspecified).await;
    assert_eq!(done.change, shown.change);
    let invoice = done.invoice.expect("invoice");
    assert_eq!(
        invoice.total.map(|m| m.amount),
        shown.change.and_then(|c| c.net_amount).map(|m| m.amount)
    );
    app.stop().await;
}

async fn bad_input_missing_subscription_and_policy(backend: Backend) {
    let Some((app, _clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Not Yet", "").await;
    let bad = change(&app, &org.id, "platinum", I::Unspecified, "", "")
        .await
        .expect_err("bad input");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mut fields = violations(&bad);
    fields.sort();
    assert_eq!(fields, ["plan_id", "request_id"]);
    let request = proto::PreviewPlanChangeRequest {
        organization_id: org.id.clone(),
        plan_id: String::new(),
        interval: 7,
    };
    let bad = app
        .subscriptions()
        .preview_plan_change(authed(request, &app.token("CONFIG_ADMIN", &org.id)))
        .await
        .expect_err("bad preview");
    let mut fields = violations(&bad);
    fields.sort();
    assert_eq!(fields, ["interval", "plan_id"]);
    // Without a subscription there is nothing to change.
    for status in [
        preview(&app, &org.id, "pro", I::Month)
            .await
            .expect_err("none"),
        change(&app, &org.id, "pro", I::Month, "", "x")
            .await
            .expect_err("none"),
    ] {
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status), "NO_SUBSCRIPTION");
    }
    subscribe(&app, &org.id, "basic").await;
    // A custom-priced plan is not sold this way.
    let custom = change(&app, &org.id, "enterprise", I::Unspecified, "", "e")
        .await
        .expect_err("contact sales");
    assert_eq!(reason(&custom), "PLAN_NOT_AVAILABLE");
    // Members may not change the plan; nor may another organization's admin.
    let other = tenant(&app, "Someone Else", "").await;
    for token in [
        app.token("MEMBER", &org.id),
        app.token("CONFIG_ADMIN", &other.id),
    ] {
        let request = proto::ChangePlanRequest {
            organization_id: org.id.clone(),
            plan_id: "pro".into(),
            interval: 0,
            etag: String::new(),
            request_id: "m".into(),
        };
        let denied = app
            .subscriptions()
            .change_plan(authed(request, &token))
            .await
            .expect_err("denied");
        assert_eq!(denied.code(), Code::PermissionDenied);
    }
    assert_eq!(sub_row(&app, &org.id).await.plan_id, "basic");
    app.stop().await;
}

// ---------------------------------------------------------------------------
// The reference model
// ---------------------------------------------------------------------------

/// A plan of the random catalogue: rank and USD prices in cents.
#[derive(Debug, Clone)]
struct RefPlan {
    id: String,
    rank: i32,
    month_cents: i64,
    year_cents: i64,
}

impl RefPlan {
    fn price(&self, year: bool) -> Decimal {
        Decimal::new(
            if year {
                self.year_cents
            } else {
                self.month_cents
            },
            2,
        )
    }
}

/// Free (rank 0, price 0) plus four plans at ranks 10..40 with prices unrelated to
/// their rank.
fn ref_catalogue(prices: &[(i64, i64)]) -> Vec<RefPlan> {
    let mut plans = vec![RefPlan {
        id: "free".into(),
        rank: 0,
        month_cents: 0,
        year_cents: 0,
    }];
    for (i, (month, year)) in prices.iter().enumerate() {
        let n = i32::try_from(i + 1).expect("small");
        plans.push(RefPlan {
            id: format!("p{n}"),
            rank: 10 * n,
            month_cents: *month,
            year_cents: *year,
        });
    }
    plans
}

fn catalogue_toml(plans: &[RefPlan]) -> String {
    let cents = |c: i64| Decimal::new(c, 2).to_string();
    plans
        .iter()
        .map(|p| {
            format!(
                "[[plans]]\nid = \"{}\"\nname = \"{}\"\ntier_rank = {}\nprices = {{ USD = {{ month = \"{}\", year = \"{}\" }} }}\n",
                p.id,
                p.id.to_uppercase(),
                p.rank,
                cents(p.month_cents),
                cents(p.year_cents)
            )
        })
        .collect()
}

/// One random case: subscribe at `start`, preview a change `offset` later.
#[derive(Debug, Clone)]
struct Case {
    from: usize,
    from_year: bool,
    to: usize,
    /// None = UNSPECIFIED (keep).
    to_year: Option<bool>,
    start: DateTime<Utc>,
    /// Millionths of (period length + 2 days) after the start.
    offset_ppm: i64,
    offset_micros: i64,
}

fn case_strategy(plans: usize) -> impl Strategy<Value = Case> {
    (
        (
            0..plans,
            any::<bool>(),
            0..plans,
            prop::option::of(any::<bool>()),
        ),
        (0i64..3 * 366 * 86_400, 0i64..1_000_000),
        (0i64..=1_000_000, 0i64..1_000_000),
    )
        .prop_map(
            |((from, from_year, to, to_year), (start_s, start_us), (offset_ppm, offset_micros))| {
                Case {
                    from,
                    from_year,
                    to,
                    to_year,
                    start: at(2026, 1, 1, 0)
                        + Duration::seconds(start_s)
                        + Duration::microseconds(start_us),
                    offset_ppm,
                    offset_micros,
                }
            },
        )
}

/// What the model expects PreviewPlanChange to return.
#[derive(Debug, PartialEq)]
enum Expected {
    SamePlan,
    Change {
        kind: K,
        scheduled: bool,
        effective: DateTime<Utc>,
        credit: Decimal,
        charge: Decimal,
        new_price: Decimal,
        /// The new period end when the period restarts.
        reset_end: Option<DateTime<Utc>>,
    },
}

fn half_up(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// The model: proration as exact decimal fractions of whole seconds, written without
/// the service's code.
fn reference(
    from: &RefPlan,
    from_year: bool,
    to: &RefPlan,
    to_year: bool,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    now: DateTime<Utc>,
) -> Expected {
    if from.id == to.id && from_year == to_year {
        return Expected::SamePlan;
    }
    let kind = if to.rank > from.rank {
        K::Upgrade
    } else if to.rank < from.rank {
        K::Downgrade
    } else {
        K::IntervalChange
    };
    let immediate = kind == K::Upgrade || (kind == K::IntervalChange && to_year);
    if !immediate {
        return Expected::Change {
            kind,
            scheduled: true,
            effective: end,
            credit: Decimal::ZERO,
            charge: Decimal::ZERO,
            new_price: to.price(to_year),
            reset_end: None,
        };
    }
    let now_s = DateTime::from_timestamp(now.timestamp(), 0).expect("second");
    let total = (end - start).num_seconds();
    let remaining = (end - now_s).num_seconds().clamp(0, total);
    let fraction =
        |price: Decimal| half_up(price * Decimal::from(remaining) / Decimal::from(total));
    let credit = fraction(from.price(from_year));
    let (charge, reset_end) = if from_year == to_year {
        (fraction(to.price(to_year)), None)
    } else {
        let months = if to_year { 12 } else { 1 };
        (
            to.price(to_year),
            Some(
                now_s
                    .checked_add_months(Months::new(months))
                    .expect("month"),
            ),
        )
    };
    Expected::Change {
        kind,
        scheduled: false,
        effective: now_s,
        credit,
        charge,
        new_price: to.price(to_year),
        reset_end,
    }
}

fn dec(m: &Option<proto::Money>) -> Decimal {
    Decimal::from_str(amount(m)).expect("decimal amount")
}

fn time(t: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let t = t.as_ref().expect("timestamp");
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).expect("nanos")).expect("instant")
}

/// Runs one case against the server and compares with the model.
async fn check_case(
    app: &TestApp,
    clock: &FixedClock,
    plans: &[RefPlan],
    case: Case,
    n: usize,
) -> Result<(), TestCaseError> {
    let (from, to) = (&plans[case.from], &plans[case.to]);
    clock.set(case.start);
    let org = tenant(app, &format!("Model Case {n}"), "").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    let interval = |year| if year { I::Year } else { I::Month };
    let created = try_subscribe(
        app,
        &admin,
        &org.id,
        &from.id,
        interval(case.from_year),
        0,
        &format!("model-{n}"),
    )
    .await
    .map_err(|e| TestCaseError::fail(format!("subscribe: {e}")))?
    .subscription
    .expect("subscription");
    // The period: from the start (to the second) one calendar month or year on.
    let start = DateTime::from_timestamp(case.start.timestamp(), 0).expect("second");
    let months = if case.from_year { 12 } else { 1 };
    let end = start.checked_add_months(Months::new(months)).expect("end");
    prop_assert_eq!(time(&created.current_period_start), start);
    prop_assert_eq!(time(&created.current_period_end), end);
    let span = (end - start).num_seconds() + 2 * 86_400;
    let now = start
        + Duration::seconds(span * case.offset_ppm / 1_000_000)
        + Duration::microseconds(case.offset_micros);
    clock.set(now);
    let to_year = case.to_year.unwrap_or(case.from_year);
    let expected = reference(from, case.from_year, to, to_year, (start, end), now);
    let wanted = case.to_year.map_or(I::Unspecified, interval);
    let got = preview(app, &org.id, &to.id, wanted).await;
    match (expected, got) {
        (Expected::SamePlan, Err(status)) => {
            prop_assert_eq!(reason(&status), "SAME_PLAN");
        }
        (
            Expected::Change {
                kind,
                scheduled,
                effective,
                credit,
                charge,
                new_price,
                reset_end,
            },
            Ok(response),
        ) => {
            prop_assert!(response.violations.is_empty());
            let c = response.change.expect("change");
            prop_assert_eq!(c.kind, kind as i32);
            prop_assert_eq!(c.scheduled, scheduled);
            prop_assert_eq!(time(&c.effective_time), effective);
            prop_assert_eq!(dec(&c.credit_amount), credit, "credit");
            prop_assert_eq!(dec(&c.charge_amount), charge, "charge");
            prop_assert_eq!(dec(&c.net_amount), charge - credit, "net");
            prop_assert_eq!(dec(&c.new_price), new_price);
            let mut want: Vec<(i32, Decimal)> = Vec::new();
            if !credit.is_zero() {
                want.push((L::ProrationCredit as i32, -credit));
            }
            if !charge.is_zero() {
                want.push((L::ProrationCharge as i32, charge));
            }
            if charge < credit {
                want.push((L::OneOff as i32, credit - charge));
            }
            let have: Vec<(i32, Decimal)> =
                c.lines.iter().map(|l| (l.kind, dec(&l.amount))).collect();
            prop_assert_eq!(have, want);
            if let (Some(end), Some(line)) = (
                reset_end,
                c.lines.iter().find(|l| l.kind == L::ProrationCharge as i32),
            ) {
                prop_assert_eq!(time(&line.period_end), end);
            }
        }
        (expected, got) => {
            return Err(TestCaseError::fail(format!(
                "expected {expected:?}, got {got:?}"
            )));
        }
    }
    Ok(())
}

async fn proration_agrees_with_an_independent_reference_model(backend: Backend) {
    // A random catalogue (prices unrelated to rank), drawn once per run and printed so a
    // failure can be replayed.
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let prices = prop::collection::vec((1i64..=99_999, 1i64..=999_999), 4)
        .new_tree(&mut runner)
        .expect("catalogue prices")
        .current();
    let plans = ref_catalogue(&prices);
    let toml = catalogue_toml(&plans);
    eprintln!("catalogue:\n{toml}");
    let catalogue = Catalogue::parse(&toml, false).expect("random catalogue");
    let clock = FixedClock::new(at(2026, 1, 1, 0));
    let Some(app) = TestApp::spawn_with_clock(backend, Arc::new(clock.clone()), |s| {
        s.billing.catalogue = Arc::new(catalogue);
    })
    .await
    else {
        return;
    };
    let counter = AtomicUsize::new(0);
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&case_strategy(plans.len()), |case| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            handle.block_on(check_case(&app, &clock, &plans, case, n))
        })
    });
    app.stop().await;
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
