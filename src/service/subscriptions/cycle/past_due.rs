//! PAST_DUE. A subscription (ACTIVE or TRIALING) is PAST_DUE once one of its invoices
//! has stayed OPEN for the grace period (`subscription_grace_days`) after its issue; it
//! is ACTIVE again as soon as none is left — PayInvoice, VoidInvoice and
//! MarkInvoiceUncollectible check that in their own transaction
//! ([`reactivate_if_settled`]), and each run of the cycle catches any other way out
//! (e.g. a longer grace period configured since). The rule looks at every OPEN invoice
//! of the subscription, not only the latest: paying the newest one while an older one
//! is still overdue keeps it PAST_DUE.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Query};
use serde_json::json;
use uuid::Uuid;

use crate::{
    domain::{
        billing::InvoiceStatus,
        clock::from_micros,
        ids::{self, IdKind},
        subscription::{SECOND, SubStatus},
    },
    error::Result,
    grpc::Ctx,
    service::{
        audit,
        subscriptions::{events, save},
    },
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{invoices, subscriptions},
    },
};

use super::{Claim, Run, Summary, claim_org, claim_subscription};

/// Largest id list in one `IN (…)`.
const CHUNK: usize = 500;

/// Invoices issued at or before this instant are overdue at `at`.
pub fn overdue_cutoff(ctx: &Ctx, at: i64) -> i64 {
    at.saturating_sub(i64::from(ctx.settings.billing.subscription_grace_days) * 24 * 3600 * SECOND)
}

/// The oldest OPEN invoice of the subscription issued at or before `cutoff`.
async fn oldest_overdue<C: sea_orm::ConnectionTrait>(
    db: &C,
    sub_id: Uuid,
    cutoff: i64,
) -> Result<Option<invoices::Model>> {
    Ok(invoices::Entity::find()
        .filter(invoices::Column::SubscriptionId.eq(sub_id))
        .filter(invoices::Column::Status.eq(InvoiceStatus::Open.as_str()))
        .filter(invoices::Column::IssueTime.lte(cutoff))
        .order_by_asc(invoices::Column::IssueTime)
        .one(db)
        .await?)
}

/// Puts a PAST_DUE subscription (read under the organization's and its own lock) back
/// to ACTIVE when none of its OPEN invoices was issued at or before `cutoff` (see
/// [`overdue_cutoff`]); returns the saved row when it did. For the invoice transitions
/// that may settle it (PayInvoice, VoidInvoice, MarkInvoiceUncollectible), in their
/// transaction, and for the cycle.
pub async fn reactivate_if_settled(
    tx: &Tx,
    sub: &subscriptions::Model,
    cutoff: i64,
    now: i64,
) -> Result<Option<subscriptions::Model>> {
    if sub.status != SubStatus::PastDue.as_str()
        || oldest_overdue(&**tx, sub.id, cutoff).await?.is_some()
    {
        return Ok(None);
    }
    let change = subscriptions::ActiveModel {
        status: sea_orm::ActiveValue::Set(SubStatus::Active.as_str().to_owned()),
        ..Default::default()
    };
    Ok(Some(save(tx, sub, change, now).await?))
}

/// Marks the run's overdue subscriptions PAST_DUE and reactivates the settled ones.
pub(super) async fn run(run: &Run<'_>, org: Option<Uuid>, summary: &mut Summary) -> Result<()> {
    let db = run.ctx.store.db();
    let cutoff = overdue_cutoff(run.ctx, run.at);
    let mut overdue = invoices::Entity::find()
        .select_only()
        .column(invoices::Column::SubscriptionId)
        .filter(invoices::Column::Status.eq(InvoiceStatus::Open.as_str()))
        .filter(invoices::Column::SubscriptionId.is_not_null())
        .filter(invoices::Column::IssueTime.lte(cutoff))
        .distinct();
    if let Some(org) = org {
        overdue = overdue.filter(invoices::Column::OrganizationId.eq(org));
    }
    let overdue: Vec<Uuid> = overdue
        .into_tuple::<Option<Uuid>>()
        .all(db)
        .await?
        .into_iter()
        .flatten()
        .collect();
    for chunk in overdue.chunks(CHUNK) {
        let due: Vec<(Uuid, Uuid)> = subscriptions::Entity::find()
            .select_only()
            .column(subscriptions::Column::Id)
            .column(subscriptions::Column::OrganizationId)
            .filter(subscriptions::Column::Id.is_in(chunk.iter().copied()))
            .filter(
                subscriptions::Column::Status
                    .is_in([SubStatus::Active.as_str(), SubStatus::Trialing.as_str()]),
            )
            .into_tuple()
            .all(db)
            .await?;
        for (sub_id, org_id) in due {
            match mark(run, sub_id, org_id, cutoff).await {
                Ok(true) => summary.subscriptions_past_due += 1,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(subscription = %sub_id, %error, "marking a subscription past due failed");
                    summary.failed += 1;
                }
            }
        }
    }
    // Settled is a fact of the present: an invoice overdue now keeps it PAST_DUE even
    // when the run is made as of an earlier instant.
    let settled_cutoff = overdue_cutoff(run.ctx, run.at.max(run.ctx.store.now()));
    let overdue_subscriptions = Query::select()
        .column(invoices::Column::SubscriptionId)
        .from(invoices::Entity)
        .and_where(invoices::Column::SubscriptionId.is_not_null())
        .and_where(invoices::Column::Status.eq(InvoiceStatus::Open.as_str()))
        .and_where(invoices::Column::IssueTime.lte(settled_cutoff))
        .to_owned();
    let mut settled = subscriptions::Entity::find()
        .select_only()
        .column(subscriptions::Column::Id)
        .column(subscriptions::Column::OrganizationId)
        .filter(subscriptions::Column::Status.eq(SubStatus::PastDue.as_str()))
        .filter(subscriptions::Column::Id.not_in_subquery(overdue_subscriptions));
    if let Some(org) = org {
        settled = settled.filter(subscriptions::Column::OrganizationId.eq(org));
    }
    let settled: Vec<(Uuid, Uuid)> = settled.into_tuple().all(db).await?;
    for (sub_id, org_id) in settled {
        match settle(run, sub_id, org_id, settled_cutoff).await {
            Ok(true) => summary.subscriptions_reactivated += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(subscription = %sub_id, %error, "reactivating a subscription failed");
                summary.failed += 1;
            }
        }
    }
    Ok(())
}

/// Marks one subscription PAST_DUE if it still has an overdue invoice under its locks;
/// `false` when not (or when another writer holds it: the next run looks again).
async fn mark(run: &Run<'_>, sub_id: Uuid, org_id: Uuid, cutoff: i64) -> Result<bool> {
    let ctx = run.ctx;
    let tx = ctx.store.write().await?;
    let now = ctx.store.now();
    let Claim::Got(org) = claim_org(&tx, org_id).await? else {
        return Ok(false);
    };
    let Claim::Got(sub) = claim_subscription(&tx, sub_id).await? else {
        return Ok(false);
    };
    if sub.status != SubStatus::Active.as_str() && sub.status != SubStatus::Trialing.as_str() {
        return Ok(false);
    }
    let Some(invoice) = oldest_overdue(&*tx, sub.id, cutoff).await? else {
        return Ok(false);
    };
    let change = subscriptions::ActiveModel {
        status: sea_orm::ActiveValue::Set(SubStatus::PastDue.as_str().to_owned()),
        ..Default::default()
    };
    let saved = save(&tx, &sub, change, now).await?;
    events::changed(&tx, now, &org, &saved, "past_due", run.request_id).await?;
    audit(
        &tx,
        ctx,
        run.principal,
        AuditRecord {
            organization_id: org.id,
            action: "MarkSubscriptionPastDue",
            target_type: "subscription",
            target_id: ids::encode(IdKind::Subscription, sub.id),
            request_id: run.request_id,
            summary: json!({
                "was": sub.status,
                "invoice_id": ids::encode(IdKind::Invoice, invoice.id),
                "invoice_number": invoice.number,
                "issue_time": invoice.issue_time.map(|t| from_micros(t).to_rfc3339()),
                "grace_days": ctx.settings.billing.subscription_grace_days,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Puts one PAST_DUE subscription without overdue invoices back to ACTIVE.
async fn settle(run: &Run<'_>, sub_id: Uuid, org_id: Uuid, cutoff: i64) -> Result<bool> {
    let ctx = run.ctx;
    let tx = ctx.store.write().await?;
    let now = ctx.store.now();
    let Claim::Got(org) = claim_org(&tx, org_id).await? else {
        return Ok(false);
    };
    let Claim::Got(sub) = claim_subscription(&tx, sub_id).await? else {
        return Ok(false);
    };
    let Some(saved) = reactivate_if_settled(&tx, &sub, cutoff, now).await? else {
        return Ok(false);
    };
    events::changed(&tx, now, &org, &saved, "recovered", run.request_id).await?;
    audit(
        &tx,
        ctx,
        run.principal,
        AuditRecord {
            organization_id: org.id,
            action: "ClearSubscriptionPastDue",
            target_type: "subscription",
            target_id: ids::encode(IdKind::Subscription, sub.id),
            request_id: run.request_id,
            summary: json!({ "status": SubStatus::Active.as_str() }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
