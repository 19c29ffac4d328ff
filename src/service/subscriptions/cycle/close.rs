//! Closing the next period `[start, E)` of one subscription, in its own transaction.
//!
//! In order: a trial ends at `E` (the first paid period starts there: anchor := `E`);
//! a cancellation scheduled for the period end ends the subscription at `E` (CANCELED,
//! back to the free plan) after billing the agent fees owed; else a scheduled change
//! is applied (plan, interval and the catalogue price for the organization's currency;
//! an interval change re-anchors at `E`; a target no longer sold is dropped, and the
//! audit entry says why). Then one invoice is issued for the period closed: the next
//! period's subscription fee in advance, the MONTHLY add-ons for the next period (unit
//! price × quantity × the months it spans: monthly add-ons are charged with each
//! renewal, an annual subscription's renewal charges twelve months), and in arrears one
//! AGENT_FEE line per billing record of a month that ended by `E` and was not billed
//! yet. No line, no invoice. It is paid from credits when the balance covers it, else
//! it stays OPEN. Then the period advances to `[E, next boundary)`.

use sea_orm::{ActiveValue::Set, EntityTrait, sea_query::OnConflict};
use serde_json::json;
use uuid::Uuid;

use crate::{
    domain::{
        clock::from_micros,
        ids::{self, IdKind},
        money::Money,
        plans::Interval,
        subscription::{SubStatus, next_boundary},
    },
    error::{Error, Result},
    grpc::convert::org_currency,
    service::{
        audit,
        subscriptions::{
            end as subscriptions_end, events,
            lifecycle::{price_for, subscription_line},
            save, set_plan,
        },
    },
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{invoices, organizations, subscription_periods, subscriptions},
    },
};

use super::{
    Claim, Run,
    billing::{addon_lines, agent_fees, bill},
    claim_org, claim_subscription,
};

/// What closing the next period did, or why nothing was closed.
pub(super) enum Outcome {
    /// A period was closed.
    Closed(Closed),
    /// Nothing to close: the period ends after `at`, the subscription (or its
    /// organization) is gone or CANCELED, or another run closed the period first.
    NotDue,
    /// Another writer holds the organization or subscription row (PostgreSQL).
    Locked,
}

/// A closed period.
pub(super) struct Closed {
    /// The invoice issued, and whether it was paid from credits.
    pub invoice: Option<(Uuid, bool)>,
    /// A scheduled plan or interval change took effect.
    pub scheduled_change_applied: bool,
    /// The subscription ended (cancellation at the period end).
    pub canceled: bool,
}

/// The plan terms of the next period.
struct Terms {
    plan_id: String,
    interval: Interval,
    price: i64,
    anchor: i64,
    applied: bool,
    dropped: Option<String>,
}

/// Closes the subscription's next period if it ends at or before the run's `at`.
pub(super) async fn close_next(run: &Run<'_>, sub_id: Uuid, org_id: Uuid) -> Result<Outcome> {
    let ctx = run.ctx;
    let tx = ctx.store.write().await?;
    let now = ctx.store.now();
    let org = match claim_org(&tx, org_id).await? {
        Claim::Got(org) => org,
        Claim::Locked => return Ok(Outcome::Locked),
        Claim::Gone => return Ok(Outcome::NotDue),
    };
    let sub = match claim_subscription(&tx, sub_id).await? {
        Claim::Got(sub) => sub,
        Claim::Locked => return Ok(Outcome::Locked),
        Claim::Gone => return Ok(Outcome::NotDue),
    };
    // Re-checked under the locks: another replica may have closed it meanwhile.
    if sub.status == SubStatus::Canceled.as_str() || sub.current_period_end > run.at {
        return Ok(Outcome::NotDue);
    }
    let end = sub.current_period_end;
    let claimed = subscription_periods::Entity::insert(subscription_periods::ActiveModel {
        subscription_id: Set(sub.id),
        period_end: Set(end),
        organization_id: Set(org.id),
        invoice_id: Set(None),
        create_time: Set(now),
    })
    .on_conflict(
        OnConflict::columns([
            subscription_periods::Column::SubscriptionId,
            subscription_periods::Column::PeriodEnd,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(&*tx)
    .await?;
    if claimed == 0 {
        tracing::debug!(subscription = %sub.id, end, "period already closed by another run");
        return Ok(Outcome::NotDue);
    }
    let closed = if sub.cancel_at_period_end {
        end_subscription(run, &tx, &org, &sub, now).await?
    } else {
        advance(run, &tx, &org, &sub, now).await?
    };
    tx.commit().await?;
    Ok(Outcome::Closed(closed))
}

/// Ends a subscription cancelled for its period end at that end (CANCELED, back to the
/// free plan), billing the agent fees it still owes.
async fn end_subscription(
    run: &Run<'_>,
    tx: &Tx,
    org: &organizations::Model,
    sub: &subscriptions::Model,
    now: i64,
) -> Result<Closed> {
    let end = sub.current_period_end;
    let (fees, records) = agent_fees(tx, org.id, end, true).await?;
    let period = (sub.current_period_start, end);
    let invoice = bill(run, tx, org, sub, period, fees, &records, now).await?;
    let (_, saved) = subscriptions_end(tx, org, sub, "", end, now).await?;
    let details = json!({
        "canceled": true,
        "end_time": from_micros(end).to_rfc3339(),
    });
    finish(run, tx, org, &saved, end, invoice.as_ref(), details).await?;
    Ok(Closed {
        invoice: invoice.map(|(i, paid)| (i.id, paid)),
        scheduled_change_applied: false,
        canceled: true,
    })
}

/// Ends a trial or applies a scheduled change, invoices the period closed and moves
/// the subscription to the next period.
async fn advance(
    run: &Run<'_>,
    tx: &Tx,
    org: &organizations::Model,
    sub: &subscriptions::Model,
    now: i64,
) -> Result<Closed> {
    let end = sub.current_period_end;
    let trial_ended = sub.status == SubStatus::Trialing.as_str();
    let status = if trial_ended {
        SubStatus::Active.as_str()
    } else {
        sub.status.as_str()
    };
    let currency = org_currency(org);
    let terms = next_terms(run, org, sub, trial_ended, end);
    let next_end = next_boundary(terms.anchor, terms.interval, end)
        .filter(|next| *next > end)
        .ok_or_else(|| Error::Internal("the next period end is beyond the calendar".into()))?;
    let mut lines = Vec::new();
    if terms.price > 0 {
        lines.push(subscription_line(
            &run.ctx.settings.billing.catalogue,
            &terms.plan_id,
            terms.interval,
            terms.price,
            (end, next_end),
        ));
    }
    lines.extend(addon_lines(tx, org.id, currency, terms.interval, (end, next_end)).await?);
    let (fees, records) = agent_fees(tx, org.id, end, false).await?;
    lines.extend(fees);
    let invoice = bill(run, tx, org, sub, (end, next_end), lines, &records, now).await?;
    let change = subscriptions::ActiveModel {
        status: Set(status.to_owned()),
        plan_id: Set(terms.plan_id.clone()),
        interval: Set(terms.interval.as_str().to_owned()),
        price_micros: Set(terms.price),
        anchor_time: Set(terms.anchor),
        current_period_start: Set(end),
        current_period_end: Set(next_end),
        scheduled_plan_id: Set(None),
        scheduled_interval: Set(None),
        ..Default::default()
    };
    let saved = save(tx, sub, change, now).await?;
    if terms.applied {
        set_plan(tx, org, &terms.plan_id, now).await?;
    }
    let details = json!({
        "trial_ended": trial_ended,
        "scheduled_change_applied": terms.applied,
        "scheduled_change_dropped": terms.dropped,
        "plan_id": terms.plan_id,
        "interval": terms.interval.as_str(),
        "price": Money::from_micros(currency, terms.price).amount_string(),
        "next_period_end": from_micros(next_end).to_rfc3339(),
    });
    finish(run, tx, org, &saved, end, invoice.as_ref(), details).await?;
    Ok(Closed {
        invoice: invoice.map(|(i, paid)| (i.id, paid)),
        scheduled_change_applied: terms.applied,
        canceled: false,
    })
}

/// The plan, interval, price and anchor of the period after `end`: the current ones,
/// or the scheduled change's when it can still be sold.
fn next_terms(
    run: &Run<'_>,
    org: &organizations::Model,
    sub: &subscriptions::Model,
    trial_ended: bool,
    end: i64,
) -> Terms {
    let interval: Interval = sub.interval.parse().unwrap_or(Interval::Month);
    let mut terms = Terms {
        plan_id: sub.plan_id.clone(),
        interval,
        price: sub.price_micros,
        anchor: if trial_ended { end } else { sub.anchor_time },
        applied: false,
        dropped: None,
    };
    if sub.scheduled_plan_id.is_none() && sub.scheduled_interval.is_none() {
        return terms;
    }
    let target_id = sub.scheduled_plan_id.as_deref().unwrap_or(&sub.plan_id);
    let target_interval = match sub.scheduled_interval.as_deref() {
        None => Ok(interval),
        Some(text) => text
            .parse::<Interval>()
            .map_err(|_| format!("unknown scheduled interval {text:?}")),
    };
    let priced = target_interval.and_then(|target_interval| {
        let plan = run
            .ctx
            .settings
            .billing
            .catalogue
            .plan(target_id)
            .ok_or_else(|| format!("plan {target_id:?} is no longer in the catalogue"))?;
        let price = price_for(plan, org, target_interval).map_err(|e| e.to_string())?;
        Ok((target_interval, price))
    });
    match priced {
        Ok((target_interval, price)) => {
            if target_interval != interval {
                terms.anchor = end;
            }
            terms.plan_id = target_id.to_owned();
            terms.interval = target_interval;
            terms.price = price;
            terms.applied = true;
        }
        Err(why) => {
            tracing::warn!(
                subscription = %ids::encode(IdKind::Subscription, sub.id),
                %why,
                "scheduled plan change dropped; the subscription keeps its plan"
            );
            terms.dropped = Some(why);
        }
    }
    terms
}

/// Writes the RenewSubscription audit entry of a closed period and emits
/// `subscription.changed` (`renewed`, or `canceled` at the period end).
async fn finish(
    run: &Run<'_>,
    tx: &Tx,
    org: &organizations::Model,
    saved: &subscriptions::Model,
    closed_end: i64,
    invoice: Option<&(invoices::Model, bool)>,
    mut details: serde_json::Value,
) -> Result<()> {
    let currency = org_currency(org);
    details["period_end"] = json!(from_micros(closed_end).to_rfc3339());
    details["invoice"] = match invoice {
        Some((invoice, paid)) => json!({
            "id": ids::encode(IdKind::Invoice, invoice.id),
            "number": invoice.number,
            "total": Money::from_micros(currency, invoice.total_micros).amount_string(),
            "status": invoice.status,
            "paid_from_credits": paid,
        }),
        None => serde_json::Value::Null,
    };
    let change = if saved.status == SubStatus::Canceled.as_str() {
        "canceled"
    } else {
        "renewed"
    };
    let now = run.ctx.store.now();
    events::changed(tx, now, org, saved, change, run.request_id).await?;
    audit(
        tx,
        run.ctx,
        run.principal,
        AuditRecord {
            organization_id: org.id,
            action: "RenewSubscription",
            target_type: "subscription",
            target_id: ids::encode(IdKind::Subscription, saved.id),
            request_id: run.request_id,
            summary: details,
        },
    )
    .await
}
