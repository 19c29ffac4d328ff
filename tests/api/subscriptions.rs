//! Subscription lifecycle (SPEC §6): create with the first period invoiced in advance,
//! trials, GetSubscription (seed 003's current plan with usage), cancel at the period
//! end and resume, cancel at once, and the operator override.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use tenantry::{domain::clock::FixedClock, proto, storage::entities::subscriptions};
use tonic::Code;

use crate::{
    credits::{balance_amount, gift},
    helpers::{Backend, TestApp, authed, reason, violations},
    invoices::invoice_count,
    on_both_backends,
    organizations::{audit_actions, org_row, org_uuid, tenant},
};

/// 2026-11-15T12:00:00.5Z: periods start at the second.
pub(crate) fn mid_november() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 15, 12, 0, 0)
        .single()
        .expect("instant")
        + chrono::Duration::milliseconds(500)
}

pub(crate) fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .expect("instant")
}

/// A server on a fixed clock at `start`.
pub(crate) async fn on_clock(
    backend: Backend,
    start: DateTime<Utc>,
) -> Option<(TestApp, FixedClock)> {
    let clock = FixedClock::new(start);
    let app = TestApp::spawn_with_clock(backend, Arc::new(clock.clone()), |_| {}).await?;
    Some((app, clock))
}

/// CreateSubscription as `token`.
pub(crate) async fn try_subscribe(
    app: &TestApp,
    token: &str,
    org_id: &str,
    plan: &str,
    interval: proto::BillingInterval,
    trial_days: u32,
    request_id: &str,
) -> Result<proto::CreateSubscriptionResponse, tonic::Status> {
    let request = proto::CreateSubscriptionRequest {
        organization_id: org_id.into(),
        plan_id: plan.into(),
        interval: interval as i32,
        trial_days,
        request_id: request_id.into(),
    };
    app.subscriptions()
        .create_subscription(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

/// CreateSubscription by the org's CONFIG_ADMIN, monthly, expected to succeed.
pub(crate) async fn subscribe(
    app: &TestApp,
    org_id: &str,
    plan: &str,
) -> proto::CreateSubscriptionResponse {
    let admin = app.token("CONFIG_ADMIN", org_id);
    try_subscribe(
        app,
        &admin,
        org_id,
        plan,
        proto::BillingInterval::Month,
        0,
        &uuid::Uuid::now_v7().to_string(),
    )
    .await
    .expect("subscribe")
}

/// GetSubscription as the root admin.
pub(crate) async fn current(app: &TestApp, org_id: &str) -> proto::GetSubscriptionResponse {
    let request = proto::GetSubscriptionRequest {
        organization_id: org_id.into(),
    };
    app.subscriptions()
        .get_subscription(authed(request, &app.root()))
        .await
        .expect("get subscription")
        .into_inner()
}

async fn cancel(
    app: &TestApp,
    org_id: &str,
    immediately: bool,
) -> Result<proto::Subscription, tonic::Status> {
    let request = proto::CancelSubscriptionRequest {
        organization_id: org_id.into(),
        immediately,
        reason: "too expensive".into(),
        etag: String::new(),
    };
    app.subscriptions()
        .cancel_subscription(authed(request, &app.token("CONFIG_ADMIN", org_id)))
        .await
        .map(|r| r.into_inner().subscription.expect("subscription"))
}

async fn resume(app: &TestApp, org_id: &str) -> Result<proto::Subscription, tonic::Status> {
    let request = proto::ResumeSubscriptionRequest {
        organization_id: org_id.into(),
        etag: String::new(),
    };
    app.subscriptions()
        .resume_subscription(authed(request, &app.token("CONFIG_ADMIN", org_id)))
        .await
        .map(|r| r.into_inner().subscription.expect("subscription"))
}

/// The organization's latest subscription row (the live one when it has one).
pub(crate) async fn sub_row(app: &TestApp, org_id: &str) -> subscriptions::Model {
    subscriptions::Entity::find()
        .filter(subscriptions::Column::OrganizationId.eq(org_uuid(org_id)))
        .order_by_desc(subscriptions::Column::CreateTime)
        .order_by_desc(subscriptions::Column::Id)
        .one(app.store.db())
        .await
        .expect("read subscription")
        .expect("subscription row")
}

on_both_backends!(
    the_first_period_is_invoiced_in_advance_and_paid_from_credits,
    without_credits_the_first_invoice_stays_open,
    a_trial_invoices_nothing_until_it_ends,
    an_organization_without_a_subscription_is_on_the_free_plan,
    cancel_at_period_end_then_resume,
    cancelling_immediately_returns_to_the_free_plan,
    the_operator_override_changes_plan_and_status_without_proration,
    the_operator_override_to_annual_ends_the_period_at_the_yearly_boundary,
    plans_without_a_price_are_not_sold_and_bad_input_is_named,
);

async fn the_first_period_is_invoiced_in_advance_and_paid_from_credits(backend: Backend) {
    let Some((app, _clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Seed Three", "").await;
    gift(&app, &org.id, "100.00").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    let created = try_subscribe(
        &app,
        &admin,
        &org.id,
        "pro",
        proto::BillingInterval::Month,
        0,
        "sub-1",
    )
    .await
    .expect("subscribe");
    let sub = created.subscription.clone().expect("subscription");
    assert!(sub.id.starts_with("sub_"));
    assert_eq!(sub.plan_id, "pro");
    assert_eq!(sub.status, proto::SubscriptionStatus::Active as i32);
    assert_eq!(sub.price.as_ref().map(|m| m.amount.as_str()), Some("29.00"));
    // The period starts at the second and ends a calendar month later.
    assert_eq!(sub.current_period_start, ts(at(2026, 11, 15, 12)));
    assert_eq!(sub.current_period_end, ts(at(2026, 12, 15, 12)));
    let invoice = created.invoice.clone().expect("first invoice");
    assert_eq!(invoice.status, proto::InvoiceStatus::Paid as i32);
    assert_eq!(invoice.number, "INV-000001");
    assert_eq!(invoice.subscription_id, sub.id);
    assert_eq!(
        invoice.total.as_ref().map(|m| m.amount.as_str()),
        Some("29.00")
    );
    assert_eq!(invoice.lines.len(), 1);
    assert_eq!(
        invoice.lines[0].kind,
        proto::InvoiceLineKind::Subscription as i32
    );
    assert_eq!(balance_amount(&app, &org.id).await, "71.00");
    assert_eq!(org_row(&app, &org.id).await.plan, "pro");

    // A retry returns the same subscription and invoice; nothing is charged twice.
    let again = try_subscribe(
        &app,
        &admin,
        &org.id,
        "pro",
        proto::BillingInterval::Month,
        0,
        "sub-1",
    )
    .await
    .expect("retry");
    assert_eq!(again.subscription.map(|s| s.id), Some(sub.id.clone()));
    assert_eq!(balance_amount(&app, &org.id).await, "71.00");
    assert_eq!(invoice_count(&app, &org.id).await, 1);

    // A second subscription is refused.
    let twice = try_subscribe(
        &app,
        &admin,
        &org.id,
        "team",
        proto::BillingInterval::Month,
        0,
        "sub-2",
    )
    .await
    .expect_err("one live subscription");
    assert_eq!(twice.code(), Code::AlreadyExists);
    assert_eq!(reason(&twice), "SUBSCRIPTION_EXISTS");

    // Seed 003: the current plan with its limits, usage and features.
    let got = current(&app, &org.id).await;
    assert_eq!(got.subscription.map(|s| s.id), Some(sub.id));
    let plan = got.plan.expect("plan");
    assert_eq!((plan.id.as_str(), plan.name.as_str()), ("pro", "Pro"));
    assert_eq!(plan.description, "For growing teams");
    let limits = got.limits.expect("limits");
    assert_eq!(limits.max_agents, Some(10));
    assert_eq!(limits.max_logs_per_month, Some(50_000));
    assert_eq!(limits.log_retention_days, Some(30));
    assert_eq!(limits.max_team_members, Some(5));
    let usage = got.usage.expect("usage");
    assert_eq!((usage.agents_count, usage.logs_this_month), (0, 0));
    for flag in [
        "advanced_permissions",
        "approval_workflows",
        "webhooks",
        "priority_support",
    ] {
        assert!(got.effective_features.iter().any(|f| f == flag), "{flag}");
    }
    assert!(
        audit_actions(&app, &invoice.subscription_id)
            .await
            .contains(&"CreateSubscription".to_owned())
    );
    app.stop().await;
}

async fn without_credits_the_first_invoice_stays_open(backend: Backend) {
    let Some((app, _clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Postpaid", "").await;
    let created = subscribe(&app, &org.id, "basic").await;
    let invoice = created.invoice.expect("invoice");
    assert_eq!(invoice.status, proto::InvoiceStatus::Open as i32);
    assert_eq!(invoice.total.map(|m| m.amount), Some("9.00".into()));
    assert_eq!(
        created.subscription.map(|s| s.status),
        Some(proto::SubscriptionStatus::Active as i32)
    );
    assert_eq!(balance_amount(&app, &org.id).await, "0.00");
    app.stop().await;
}

async fn a_trial_invoices_nothing_until_it_ends(backend: Backend) {
    let Some((app, _clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Trial Co", "").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    let created = try_subscribe(
        &app,
        &admin,
        &org.id,
        "team",
        proto::BillingInterval::Year,
        14,
        "trial",
    )
    .await
    .expect("trial");
    assert!(created.invoice.is_none());
    let sub = created.subscription.expect("subscription");
    assert_eq!(sub.status, proto::SubscriptionStatus::Trialing as i32);
    assert_eq!(sub.trial_end, ts(at(2026, 11, 29, 12)));
    assert_eq!(sub.current_period_end, ts(at(2026, 11, 29, 12)));
    assert_eq!(sub.interval, proto::BillingInterval::Year as i32);
    assert_eq!(invoice_count(&app, &org.id).await, 0);
    // The trial already grants the plan.
    assert_eq!(org_row(&app, &org.id).await.plan, "team");
    // A free plan has nothing to try: it starts ACTIVE.
    let free_org = tenant(&app, "Free Trial", "").await;
    let admin = app.token("CONFIG_ADMIN", &free_org.id);
    let free = try_subscribe(
        &app,
        &admin,
        &free_org.id,
        "free",
        proto::BillingInterval::Month,
        30,
        "f",
    )
    .await
    .expect("free");
    assert_eq!(
        free.subscription.map(|s| s.status),
        Some(proto::SubscriptionStatus::Active as i32)
    );
    assert!(free.invoice.is_none());
    app.stop().await;
}

async fn an_organization_without_a_subscription_is_on_the_free_plan(backend: Backend) {
    let Some((app, _clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Nobody Pays", "").await;
    let got = current(&app, &org.id).await;
    assert!(got.subscription.is_none());
    let plan = got.plan.expect("plan");
    assert_eq!(plan.id, "free");
    // Only the organization's currency is shown.
    assert!(
        plan.prices
            .iter()
            .all(|p| p.price.as_ref().is_some_and(|m| m.currency_code == "USD"))
    );
    assert_eq!(got.limits.and_then(|l| l.max_agents), Some(1));
    assert_eq!(got.effective_features, vec!["basic_analytics".to_owned()]);
    // A member may read it; another tenant may not.
    let member = app.token("MEMBER", &org.id);
    let request = proto::GetSubscriptionRequest {
        organization_id: org.id.clone(),
    };
    app.subscriptions()
        .get_subscription(authed(request.clone(), &member))
        .await
        .expect("member reads");
    let other = tenant(&app, "Other", "").await;
    let denied = app
        .subscriptions()
        .get_subscription(authed(request, &app.token("CONFIG_ADMIN", &other.id)))
        .await
        .expect_err("foreign");
    assert_eq!(denied.code(), Code::PermissionDenied);
    app.stop().await;
}

async fn cancel_at_period_end_then_resume(backend: Backend) {
    let Some((app, clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Wavering", "").await;
    gift(&app, &org.id, "50.00").await;
    subscribe(&app, &org.id, "pro").await;
    let cancelled = cancel(&app, &org.id, false).await.expect("cancel");
    assert!(cancelled.cancel_at_period_end);
    assert_eq!(cancelled.status, proto::SubscriptionStatus::Active as i32);
    assert_eq!(cancelled.status_reason, "too expensive");
    assert!(cancelled.cancel_request_time.is_some());
    // Asking again changes nothing.
    let again = cancel(&app, &org.id, false).await.expect("cancel again");
    assert_eq!(again.etag, cancelled.etag);
    // The plan stays until the period ends.
    assert_eq!(org_row(&app, &org.id).await.plan, "pro");
    let resumed = resume(&app, &org.id).await.expect("resume");
    assert!(!resumed.cancel_at_period_end);
    assert!(resumed.cancel_request_time.is_none());
    assert_eq!(resumed.status, proto::SubscriptionStatus::Active as i32);
    let not_scheduled = resume(&app, &org.id).await.expect_err("nothing to resume");
    assert_eq!(not_scheduled.code(), Code::FailedPrecondition);
    assert_eq!(reason(&not_scheduled), "CANCELLATION_NOT_SCHEDULED");
    // Once the period is over it is too late to resume.
    cancel(&app, &org.id, false).await.expect("cancel");
    clock.set(at(2026, 12, 15, 13));
    let late = resume(&app, &org.id).await.expect_err("period ended");
    assert_eq!(reason(&late), "PERIOD_ENDED");
    // A stale etag is refused.
    let request = proto::CancelSubscriptionRequest {
        organization_id: org.id.clone(),
        immediately: true,
        reason: String::new(),
        etag: "\"1\"".into(),
    };
    let stale = app
        .subscriptions()
        .cancel_subscription(authed(request, &app.token("CONFIG_ADMIN", &org.id)))
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Code::Aborted);
    app.stop().await;
}

async fn cancelling_immediately_returns_to_the_free_plan(backend: Backend) {
    let Some((app, clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Leaving", "").await;
    gift(&app, &org.id, "100.00").await;
    subscribe(&app, &org.id, "pro").await;
    clock.set(at(2026, 11, 20, 0));
    // A reason over 500 characters is refused before anything changes.
    let long = app
        .subscriptions()
        .cancel_subscription(authed(
            proto::CancelSubscriptionRequest {
                organization_id: org.id.clone(),
                immediately: true,
                reason: "x".repeat(501),
                etag: String::new(),
            },
            &app.token("CONFIG_ADMIN", &org.id),
        ))
        .await
        .expect_err("reason too long");
    assert_eq!(long.code(), Code::InvalidArgument);
    assert_eq!(violations(&long), ["reason"]);
    assert_eq!(sub_row(&app, &org.id).await.status, "ACTIVE");
    let ended = cancel(&app, &org.id, true).await.expect("cancel now");
    assert_eq!(ended.status, proto::SubscriptionStatus::Canceled as i32);
    assert_eq!(ended.end_time, ts(at(2026, 11, 20, 0)));
    // No refund.
    assert_eq!(balance_amount(&app, &org.id).await, "71.00");
    assert_eq!(org_row(&app, &org.id).await.plan, "free");
    let got = current(&app, &org.id).await;
    assert!(got.subscription.is_none());
    assert_eq!(got.plan.map(|p| p.id), Some("free".into()));
    let none = cancel(&app, &org.id, true).await.expect_err("nothing left");
    assert_eq!(reason(&none), "NO_SUBSCRIPTION");
    // A new subscription may start.
    subscribe(&app, &org.id, "basic").await;
    assert_eq!(org_row(&app, &org.id).await.plan, "basic");
    app.stop().await;
}

async fn the_operator_override_changes_plan_and_status_without_proration(backend: Backend) {
    let Some((app, _clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Special Deal", "").await;
    let admin_update = |plan: &str, status: proto::SubscriptionStatus, reason: &str, rid: &str| {
        proto::AdminUpdateSubscriptionRequest {
            organization_id: org.id.clone(),
            plan_id: plan.into(),
            interval: 0,
            status: status as i32,
            reason: reason.into(),
            etag: String::new(),
            request_id: rid.into(),
        }
    };
    // Reason and request id are required.
    let bad = app
        .subscriptions()
        .admin_update_subscription(authed(
            admin_update("platinum", proto::SubscriptionStatus::Unspecified, " ", ""),
            &app.root(),
        ))
        .await
        .expect_err("bad input");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mut fields = violations(&bad);
    fields.sort();
    assert_eq!(fields, ["plan_id", "reason", "request_id"]);
    // The org's own admin may not override.
    let denied = app
        .subscriptions()
        .admin_update_subscription(authed(
            admin_update(
                "enterprise",
                proto::SubscriptionStatus::Unspecified,
                "deal",
                "a",
            ),
            &app.token("CONFIG_ADMIN", &org.id),
        ))
        .await
        .expect_err("operators only");
    assert_eq!(denied.code(), Code::PermissionDenied);
    // Without a subscription there is nothing to cancel.
    let nothing = app
        .subscriptions()
        .admin_update_subscription(authed(
            admin_update("", proto::SubscriptionStatus::Canceled, "fraud", "z"),
            &app.root(),
        ))
        .await
        .expect_err("no subscription to cancel");
    assert_eq!(nothing.code(), Code::InvalidArgument);
    assert_eq!(violations(&nothing), ["status"]);
    // Without a subscription it creates an ACTIVE one, without an invoice.
    let created = app
        .subscriptions()
        .admin_update_subscription(authed(
            admin_update(
                "enterprise",
                proto::SubscriptionStatus::Unspecified,
                "signed contract #42",
                "a",
            ),
            &app.root(),
        ))
        .await
        .expect("override")
        .into_inner()
        .subscription
        .expect("subscription");
    assert_eq!(created.plan_id, "enterprise");
    assert_eq!(created.status, proto::SubscriptionStatus::Active as i32);
    assert_eq!(created.price.map(|m| m.amount), Some("0.00".into()));
    assert_eq!(org_row(&app, &org.id).await.plan, "enterprise");
    assert_eq!(invoice_count(&app, &org.id).await, 0);
    // Enterprise has no agent limit.
    assert_eq!(
        current(&app, &org.id)
            .await
            .limits
            .and_then(|l| l.max_agents),
        None
    );
    // Status only.
    let past_due = app
        .subscriptions()
        .admin_update_subscription(authed(
            admin_update(
                "",
                proto::SubscriptionStatus::PastDue,
                "payment chased by phone",
                "b",
            ),
            &app.root(),
        ))
        .await
        .expect("status")
        .into_inner()
        .subscription
        .expect("subscription");
    assert_eq!(past_due.status, proto::SubscriptionStatus::PastDue as i32);
    assert_eq!(past_due.plan_id, "enterprise");
    assert_eq!(past_due.status_reason, "payment chased by phone");
    assert_eq!(invoice_count(&app, &org.id).await, 0);
    let actions = audit_actions(&app, &created.id).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "AdminUpdateSubscription")
            .count(),
        2
    );
    // CANCELED ends it: back to free.
    app.subscriptions()
        .admin_update_subscription(authed(
            admin_update("", proto::SubscriptionStatus::Canceled, "fraud", "c"),
            &app.root(),
        ))
        .await
        .expect("cancel");
    assert_eq!(org_row(&app, &org.id).await.plan, "free");
    app.stop().await;
}

/// A monthly subscription moved to YEAR by an operator keeps its period start, ends at
/// the next yearly boundary and takes the annual price, without an invoice.
async fn the_operator_override_to_annual_ends_the_period_at_the_yearly_boundary(backend: Backend) {
    let Some((app, clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Going Annual", "").await;
    gift(&app, &org.id, "100.00").await;
    let monthly = subscribe(&app, &org.id, "pro")
        .await
        .subscription
        .expect("subscription");
    assert_eq!(monthly.current_period_end, ts(at(2026, 12, 15, 12)));
    clock.set(at(2026, 11, 20, 0));
    let annual = app
        .subscriptions()
        .admin_update_subscription(authed(
            proto::AdminUpdateSubscriptionRequest {
                organization_id: org.id.clone(),
                plan_id: String::new(),
                interval: proto::BillingInterval::Year as i32,
                status: 0,
                reason: "annual contract".into(),
                etag: monthly.etag.clone(),
                request_id: "annual".into(),
            },
            &app.root(),
        ))
        .await
        .expect("override")
        .into_inner()
        .subscription
        .expect("subscription");
    assert_eq!(annual.interval, proto::BillingInterval::Year as i32);
    assert_eq!(annual.plan_id, "pro");
    assert_eq!(annual.current_period_start, ts(at(2026, 11, 15, 12)));
    assert_eq!(annual.current_period_end, ts(at(2027, 11, 15, 12)));
    assert_eq!(annual.price.map(|m| m.amount), Some("290.00".into()));
    assert_eq!(
        invoice_count(&app, &org.id).await,
        1,
        "no proration invoice"
    );
    assert_eq!(sub_row(&app, &org.id).await.price_micros, 290_000_000);
    app.stop().await;
}

async fn plans_without_a_price_are_not_sold_and_bad_input_is_named(backend: Backend) {
    let Some((app, _clock)) = on_clock(backend, mid_november()).await else {
        return;
    };
    let org = tenant(&app, "Big Ambitions", "").await;
    let admin = app.token("CONFIG_ADMIN", &org.id);
    let custom = try_subscribe(
        &app,
        &admin,
        &org.id,
        "enterprise",
        proto::BillingInterval::Month,
        0,
        "e",
    )
    .await
    .expect_err("contact sales");
    assert_eq!(custom.code(), Code::FailedPrecondition);
    assert_eq!(reason(&custom), "PLAN_NOT_AVAILABLE");
    let bad = try_subscribe(
        &app,
        &admin,
        &org.id,
        "platinum",
        proto::BillingInterval::Unspecified,
        91,
        "",
    )
    .await
    .expect_err("bad input");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mut fields = violations(&bad);
    fields.sort();
    assert_eq!(fields, ["interval", "plan_id", "request_id", "trial_days"]);
    assert_eq!(org_row(&app, &org.id).await.plan, "free");
    assert_eq!(invoice_count(&app, &org.id).await, 0);
    app.stop().await;
}
