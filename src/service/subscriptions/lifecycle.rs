//! CreateSubscription, CancelSubscription, ResumeSubscription and
//! AdminUpdateSubscription.
//!
//! Decisions:
//! - Subscription fees are invoiced in advance: CreateSubscription issues the first
//!   period's invoice at once (paid from credits when the balance covers it, else OPEN;
//!   the renewal cycle marks the subscription PAST_DUE once it is older than the grace
//!   period). A trial (paid plans only; a zero-priced plan starts ACTIVE) invoices
//!   nothing until the trial ends.
//! - Cancelling at the period end keeps everything until `current_period_end`, where
//!   the renewal cycle ends it; cancelling immediately ends it now without a refund
//!   (as Stripe does by default) and puts the organization back on the free plan.
//! - AdminUpdateSubscription is an operator override without proration or invoices:
//!   a new plan takes its catalogue price for the organization's currency (0 when the
//!   plan is custom-priced, e.g. enterprise), a new interval keeps the current period's
//!   start and ends it at the next boundary of the new interval, a status is set as
//!   given (CANCELED ends the subscription now). Without a subscription it creates an
//!   ACTIVE one (the given plan, else the organization's current one; monthly unless
//!   said). The reason is required and audited with the before/after values.

use serde_json::json;

use crate::{
    auth::{Caller, Principal},
    domain::{
        billing::LineKind,
        clock::from_micros,
        ids::{self, IdKind, new_id},
        money::Money,
        plans::{Catalogue, Interval, Plan},
        subscription::{SECOND, SubStatus, next_boundary, to_second},
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert::org_currency},
    proto,
    service::{
        audit, audit_request_id,
        billing::invoices,
        billing::ledger,
        billing::require_reason,
        billing::require_request_id,
        check_etag, commit, idempotency_key,
        orgs::{
            activation::{MAX_REASON_LEN, reason_of},
            lock_live,
        },
        replayed, settle,
    },
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{organizations, subscriptions},
    },
};

use sea_orm::{ActiveModelTrait, ActiveValue::Set};

use super::{
    end, events, interval_of, lock_current, no_subscription, save, set_plan, status_of, to_proto,
};

/// Longest trial.
const MAX_TRIAL_DAYS: u32 = 90;
const DAY: i64 = 24 * 3600 * SECOND;

/// A plan id of a request, checked against the catalogue.
pub(super) fn parse_plan<'a>(
    ctx: &'a Ctx,
    v: &mut Violations,
    field: &str,
    id: &str,
) -> Option<&'a Plan> {
    if id.is_empty() {
        v.add(field, "is required");
        return None;
    }
    let plan = ctx.settings.billing.catalogue.plan(id);
    if plan.is_none() {
        v.add(
            field,
            format!("unknown plan {id:?}; ListPlans shows the catalogue"),
        );
    }
    plan
}

/// The plan's price for the organization, or FAILED_PRECONDITION `PLAN_NOT_AVAILABLE`.
pub fn price_for(plan: &Plan, org: &organizations::Model, interval: Interval) -> Result<i64> {
    let currency = org_currency(org);
    plan.price(currency, interval).ok_or_else(|| {
        Error::precondition(
            "PLAN_NOT_AVAILABLE",
            format!(
                "the {} plan has no {} price in {}; contact sales",
                plan.id,
                interval.adjective(),
                currency.code()
            ),
        )
        .with("plan_id", &plan.id)
        .with("currency", currency.code())
    })
}

/// The SUBSCRIPTION line of the period `[start, end)` paid in advance: "Pro plan,
/// monthly: 2026-11-23 – 2026-12-23" (the plan named by its id once it left the
/// catalogue).
pub fn subscription_line(
    catalogue: &Catalogue,
    plan_id: &str,
    interval: Interval,
    price: i64,
    (start, end): (i64, i64),
) -> invoices::NewLine {
    let day = |t: i64| from_micros(t).format("%Y-%m-%d");
    let description = match catalogue.plan(plan_id) {
        Some(plan) => format!(
            "{} plan, {}: {} – {}",
            plan.name,
            interval.adjective(),
            day(start),
            day(end)
        ),
        None => format!("{plan_id} plan: {} – {}", day(start), day(end)),
    };
    invoices::NewLine {
        description,
        kind: LineKind::Subscription,
        quantity: 1,
        unit_amount_micros: price,
        period_start: start,
        period_end: end,
        plan_id: plan_id.to_owned(),
        agent_id: None,
        service_id: String::new(),
    }
}

/// Issues the invoice of a subscription period paid in advance and pays it from
/// credits when the balance covers it. The caller holds the organization's lock.
#[allow(clippy::too_many_arguments)]
async fn invoice_period(
    tx: &Tx,
    ctx: &Ctx,
    org: &organizations::Model,
    sub_id: uuid::Uuid,
    plan: &Plan,
    interval: Interval,
    price: i64,
    (start, end): (i64, i64),
    principal: &Principal,
    request_id: &str,
    now: i64,
) -> Result<invoices::Issued> {
    let mut account = ledger::lock_account(tx, org, now).await?;
    let (issued, _) = invoices::issue_and_collect(
        tx,
        ctx,
        org,
        &mut account,
        invoices::NewInvoice {
            subscription_id: Some(sub_id),
            period_start: start,
            period_end: end,
            lines: vec![subscription_line(
                &ctx.settings.billing.catalogue,
                &plan.id,
                interval,
                price,
                (start, end),
            )],
            memo: String::new(),
            due_time: None,
        },
        principal.author(),
        request_id,
        now,
    )
    .await?;
    Ok(issued)
}

/// CreateSubscription: subscribes the organization (ALREADY_EXISTS when a
/// subscription that is not CANCELED exists) and invoices the first period in advance.
pub async fn create_subscription(
    ctx: Ctx,
    caller: Caller,
    req: proto::CreateSubscriptionRequest,
) -> Result<proto::CreateSubscriptionResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let principal = access.principal().clone();
    let mut v = Violations::new();
    let plan = parse_plan(&ctx, &mut v, "plan_id", &req.plan_id);
    let interval = interval_of(req.interval);
    if interval.is_none() {
        v.add(
            "interval",
            "must be BILLING_INTERVAL_MONTH or BILLING_INTERVAL_YEAR",
        );
    }
    if req.trial_days > MAX_TRIAL_DAYS {
        v.add("trial_days", format!("must be at most {MAX_TRIAL_DAYS}"));
    }
    require_request_id(&mut v, &req.request_id);
    v.finish()?;
    let (Some(plan), Some(interval)) = (plan, interval) else {
        return Err(Error::Internal("validated fields missing".into()));
    };
    let key = idempotency_key(&principal, "CreateSubscription", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let now = ctx.store.now();
        let org = lock_live(&tx, access.org()).await?;
        if let Some(existing) = lock_current(&tx, org.id).await? {
            return Err(Error::rejected(
                tonic::Code::AlreadyExists,
                "SUBSCRIPTION_EXISTS",
                format!(
                    "organization {} already has a {} subscription to {}",
                    org.slug, existing.status, existing.plan_id
                ),
            )
            .with(
                "subscription_id",
                ids::encode(IdKind::Subscription, existing.id),
            ));
        }
        let price = price_for(plan, &org, interval)?;
        let anchor = to_second(now);
        let trialing = req.trial_days > 0 && price > 0;
        let (status, trial_end, end) = if trialing {
            let trial_end = anchor + i64::from(req.trial_days) * DAY;
            (SubStatus::Trialing, Some(trial_end), trial_end)
        } else {
            let end = next_boundary(anchor, interval, anchor)
                .ok_or_else(|| Error::Internal("period end beyond the calendar".into()))?;
            (SubStatus::Active, None, end)
        };
        let id = new_id();
        let request_id = audit_request_id(&caller, key.as_ref()).to_owned();
        let invoice = if !trialing && price > 0 {
            Some(
                invoice_period(
                    &tx,
                    &ctx,
                    &org,
                    id,
                    plan,
                    interval,
                    price,
                    (anchor, end),
                    &principal,
                    &request_id,
                    now,
                )
                .await?,
            )
        } else {
            None
        };
        let row = subscriptions::ActiveModel {
            id: Set(id),
            organization_id: Set(org.id),
            plan_id: Set(plan.id.clone()),
            interval: Set(interval.as_str().to_owned()),
            status: Set(status.as_str().to_owned()),
            currency: Set(org.currency.clone()),
            price_micros: Set(price),
            anchor_time: Set(if trialing { end } else { anchor }),
            current_period_start: Set(anchor),
            current_period_end: Set(end),
            trial_end: Set(trial_end),
            cancel_at_period_end: Set(false),
            cancel_request_time: Set(None),
            end_time: Set(None),
            scheduled_plan_id: Set(None),
            scheduled_interval: Set(None),
            status_reason: Set(String::new()),
            request_id: Set(req.request_id.clone()),
            create_time: Set(now),
            update_time: Set(now),
            version: Set(1),
        }
        .insert(&*tx)
        .await?;
        let org = set_plan(&tx, &org, &plan.id, now).await?;
        events::changed(&tx, now, &org, &row, "created", &request_id).await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "CreateSubscription",
                target_type: "subscription",
                target_id: ids::encode(IdKind::Subscription, id),
                request_id: &request_id,
                summary: json!({
                    "plan_id": plan.id,
                    "interval": interval.as_str(),
                    "status": status.as_str(),
                    "price": Money::from_micros(org_currency(&org), price).amount_string(),
                    "trial_days": req.trial_days,
                    "invoice": invoice.as_ref().map(|i| i.invoice.number.clone()),
                }),
            },
        )
        .await?;
        let response = proto::CreateSubscriptionResponse {
            subscription: Some(to_proto(&row)),
            invoice: invoice
                .as_ref()
                .map(|i| invoices::to_proto(&i.invoice, &i.lines)),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}

/// CancelSubscription: at the period end (default; asking again changes nothing) or
/// immediately (CANCELED now, no refund, back to the free plan).
pub async fn cancel_subscription(
    ctx: Ctx,
    caller: Caller,
    req: proto::CancelSubscriptionRequest,
) -> Result<proto::CancelSubscriptionResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let principal = access.principal().clone();
    let mut v = Violations::new();
    let reason = reason_of(&mut v, &req.reason, false);
    v.finish()?;
    let tx = ctx.store.write().await?;
    let now = ctx.store.now();
    let org = lock_live(&tx, access.org()).await?;
    let sub = lock_current(&tx, org.id)
        .await?
        .ok_or_else(|| no_subscription(&org))?;
    check_etag(&req.etag, sub.version)?;
    let saved = if req.immediately {
        end(&tx, &org, &sub, &reason, now, now).await?.1
    } else if sub.cancel_at_period_end {
        return Ok(proto::CancelSubscriptionResponse {
            subscription: Some(to_proto(&sub)),
        });
    } else {
        let change = subscriptions::ActiveModel {
            cancel_at_period_end: Set(true),
            cancel_request_time: Set(Some(now)),
            status_reason: Set(reason.clone()),
            ..Default::default()
        };
        save(&tx, &sub, change, now).await?
    };
    let change = if req.immediately {
        "canceled"
    } else {
        "cancel_scheduled"
    };
    events::changed(&tx, now, &org, &saved, change, &caller.trace_id).await?;
    audit(
        &tx,
        &ctx,
        &principal,
        AuditRecord {
            organization_id: org.id,
            action: "CancelSubscription",
            target_type: "subscription",
            target_id: ids::encode(IdKind::Subscription, sub.id),
            request_id: &caller.trace_id,
            summary: json!({
                "immediately": req.immediately,
                "reason": reason,
                "plan_id": sub.plan_id,
                "effective_time": if req.immediately { now } else { sub.current_period_end },
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::CancelSubscriptionResponse {
        subscription: Some(to_proto(&saved)),
    })
}

/// ResumeSubscription: undoes a cancellation scheduled for the period end, while the
/// period has not ended.
pub async fn resume_subscription(
    ctx: Ctx,
    caller: Caller,
    req: proto::ResumeSubscriptionRequest,
) -> Result<proto::ResumeSubscriptionResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let principal = access.principal().clone();
    let tx = ctx.store.write().await?;
    let now = ctx.store.now();
    let org = lock_live(&tx, access.org()).await?;
    let sub = lock_current(&tx, org.id)
        .await?
        .ok_or_else(|| no_subscription(&org))?;
    check_etag(&req.etag, sub.version)?;
    if !sub.cancel_at_period_end {
        return Err(Error::precondition(
            "CANCELLATION_NOT_SCHEDULED",
            "the subscription is not scheduled to cancel",
        ));
    }
    if now >= sub.current_period_end {
        return Err(Error::precondition(
            "PERIOD_ENDED",
            "the period has ended; the subscription is being cancelled — create a new one",
        ));
    }
    let change = subscriptions::ActiveModel {
        cancel_at_period_end: Set(false),
        cancel_request_time: Set(None),
        status_reason: Set(String::new()),
        ..Default::default()
    };
    let saved = save(&tx, &sub, change, now).await?;
    events::changed(&tx, now, &org, &saved, "resumed", &caller.trace_id).await?;
    audit(
        &tx,
        &ctx,
        &principal,
        AuditRecord {
            organization_id: org.id,
            action: "ResumeSubscription",
            target_type: "subscription",
            target_id: ids::encode(IdKind::Subscription, sub.id),
            request_id: &caller.trace_id,
            summary: json!({ "plan_id": sub.plan_id, "current_period_end": sub.current_period_end }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::ResumeSubscriptionResponse {
        subscription: Some(to_proto(&saved)),
    })
}

/// AdminUpdateSubscription: the operator override (see the module notes).
pub async fn admin_update_subscription(
    ctx: Ctx,
    caller: Caller,
    req: proto::AdminUpdateSubscriptionRequest,
) -> Result<proto::AdminUpdateSubscriptionResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let principal = access.principal().clone();
    let mut v = Violations::new();
    let plan = if req.plan_id.is_empty() {
        None
    } else {
        parse_plan(&ctx, &mut v, "plan_id", &req.plan_id)
    };
    let interval = interval_of(req.interval);
    if req.interval != 0 && interval.is_none() {
        v.add("interval", "unknown interval");
    }
    let status = status_of(req.status);
    if req.status != 0 && status.is_none() {
        v.add("status", "unknown status");
    }
    let reason = require_reason(&mut v, "reason", &req.reason, MAX_REASON_LEN);
    require_request_id(&mut v, &req.request_id);
    v.finish()?;
    let key = idempotency_key(&principal, "AdminUpdateSubscription", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let now = ctx.store.now();
        let org = lock_live(&tx, access.org()).await?;
        let catalogue = &ctx.settings.billing.catalogue;
        let currency = org_currency(&org);
        let before = lock_current(&tx, org.id).await?;
        if let Some(sub) = &before {
            check_etag(&req.etag, sub.version)?;
        }
        let saved = match &before {
            None => {
                let plan = plan.unwrap_or_else(|| catalogue.plan_or_free(&org.plan));
                let interval = interval.unwrap_or(Interval::Month);
                let anchor = to_second(now);
                let end = next_boundary(anchor, interval, anchor)
                    .ok_or_else(|| Error::Internal("period end beyond the calendar".into()))?;
                let status = status.unwrap_or(SubStatus::Active);
                if status == SubStatus::Canceled {
                    return Err(Error::invalid("status", "cannot create a CANCELED subscription"));
                }
                let row = subscriptions::ActiveModel {
                    id: Set(new_id()),
                    organization_id: Set(org.id),
                    plan_id: Set(plan.id.clone()),
                    interval: Set(interval.as_str().to_owned()),
                    status: Set(status.as_str().to_owned()),
                    currency: Set(org.currency.clone()),
                    price_micros: Set(plan.price(currency, interval).unwrap_or(0)),
                    anchor_time: Set(anchor),
                    current_period_start: Set(anchor),
                    current_period_end: Set(end),
                    trial_end: Set((status == SubStatus::Trialing).then_some(end)),
                    cancel_at_period_end: Set(false),
                    cancel_request_time: Set(None),
                    end_time: Set(None),
                    scheduled_plan_id: Set(None),
                    scheduled_interval: Set(None),
                    status_reason: Set(reason.clone()),
                    request_id: Set(req.request_id.clone()),
                    create_time: Set(now),
                    update_time: Set(now),
                    version: Set(1),
                }
                .insert(&*tx)
                .await?;
                set_plan(&tx, &org, &plan.id, now).await?;
                row
            }
            Some(sub) if status == Some(SubStatus::Canceled) => {
                end(&tx, &org, sub, &reason, now, now).await?.1
            }
            Some(sub) => {
                let current_interval: Interval = sub.interval.parse().unwrap_or(Interval::Month);
                let new_interval = interval.unwrap_or(current_interval);
                let new_plan = plan.map_or(sub.plan_id.as_str(), |p| p.id.as_str());
                let mut change = subscriptions::ActiveModel {
                    status_reason: Set(reason.clone()),
                    ..Default::default()
                };
                if new_plan != sub.plan_id || new_interval != current_interval {
                    let target = catalogue.plan_or_free(new_plan);
                    change.plan_id = Set(target.id.clone());
                    change.interval = Set(new_interval.as_str().to_owned());
                    change.price_micros = Set(target.price(currency, new_interval).unwrap_or(0));
                    change.scheduled_plan_id = Set(None);
                    change.scheduled_interval = Set(None);
                }
                if new_interval != current_interval {
                    let end = next_boundary(sub.anchor_time, new_interval, sub.current_period_start)
                        .ok_or_else(|| Error::Internal("period end beyond the calendar".into()))?;
                    change.current_period_end = Set(end);
                }
                if let Some(status) = status {
                    change.status = Set(status.as_str().to_owned());
                    if status == SubStatus::Trialing && sub.trial_end.is_none() {
                        change.trial_end = Set(Some(sub.current_period_end));
                    }
                }
                let saved = save(&tx, sub, change, now).await?;
                set_plan(&tx, &org, &saved.plan_id, now).await?;
                saved
            }
        };
        let request_id = audit_request_id(&caller, key.as_ref()).to_owned();
        events::changed(&tx, now, &org, &saved, "admin_updated", &request_id).await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "AdminUpdateSubscription",
                target_type: "subscription",
                target_id: ids::encode(IdKind::Subscription, saved.id),
                request_id: &request_id,
                summary: json!({
                    "reason": reason,
                    "before": before.as_ref().map(|b| json!({
                        "plan_id": b.plan_id, "interval": b.interval, "status": b.status,
                    })),
                    "after": {
                        "plan_id": saved.plan_id, "interval": saved.interval, "status": saved.status,
                        "price": Money::from_micros(currency, saved.price_micros).amount_string(),
                    },
                }),
            },
        )
        .await?;
        let response = proto::AdminUpdateSubscriptionResponse {
            subscription: Some(to_proto(&saved)),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}
