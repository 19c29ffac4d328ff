//! ChangePlan: the computed change written under the organization → subscription →
//! billing account locks, with its proration invoice.

use sea_orm::ActiveValue::Set;
use serde_json::json;

use super::{Prepared, compute::Effect, limits_exceeded, prepare, wanted};
use crate::{
    auth::{Caller, Principal},
    domain::{
        billing::TxnKind,
        ids::{self, IdKind},
    },
    error::{Error, Result, Violations},
    grpc::Ctx,
    proto,
    service::{
        audit, audit_request_id,
        billing::{
            invoices::{self, NewInvoice},
            ledger::{self, Entry},
            require_request_id,
        },
        check_etag, commit, idempotency_key,
        orgs::lock_live,
        replayed, settle,
        subscriptions::{events, lock_current, no_subscription, save, set_plan, to_proto},
    },
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{organizations, subscriptions},
    },
};

/// ChangePlan: applies an upgrade (or monthly → annual) at once with its proration
/// invoice, schedules a downgrade (or annual → monthly) for the period end, or drops a
/// scheduled change; idempotent by `request_id`.
pub async fn change_plan(
    ctx: Ctx,
    caller: Caller,
    req: proto::ChangePlanRequest,
) -> Result<proto::ChangePlanResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let principal = access.principal().clone();
    let mut v = Violations::new();
    let wanted = wanted(&ctx, &mut v, &req.plan_id, req.interval);
    require_request_id(&mut v, &req.request_id);
    v.finish()?;
    let wanted = wanted.ok_or_else(|| Error::Internal("validated fields missing".into()))?;
    let key = idempotency_key(&principal, "ChangePlan", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let now = ctx.store.now();
        let org = lock_live(&tx, access.org()).await?;
        let sub = lock_current(&tx, org.id)
            .await?
            .ok_or_else(|| no_subscription(&org))?;
        check_etag(&req.etag, sub.version)?;
        let prepared = prepare(&ctx, &org, &sub, &wanted, now)?;
        let found = prepared.violations(&ctx, &*tx, &org, now).await?;
        if !found.is_empty() {
            return Err(limits_exceeded(prepared.to, &found));
        }
        let request_id = audit_request_id(&caller, key.as_ref()).to_owned();
        let c = &prepared.computed;
        let mut change = subscriptions::ActiveModel::default();
        let mut invoice = None;
        match c.effect {
            Effect::Unscheduled => {
                change.scheduled_plan_id = Set(None);
                change.scheduled_interval = Set(None);
            }
            Effect::Scheduled => {
                change.scheduled_plan_id = Set(Some(prepared.to.id.clone()));
                change.scheduled_interval = Set(Some(prepared.to_interval.as_str().to_owned()));
            }
            Effect::Immediate { reset } => {
                change.plan_id = Set(prepared.to.id.clone());
                change.interval = Set(prepared.to_interval.as_str().to_owned());
                change.price_micros = Set(c.new_price_micros);
                change.scheduled_plan_id = Set(None);
                change.scheduled_interval = Set(None);
                if let Some(reset) = reset {
                    change.anchor_time = Set(reset.anchor);
                    change.current_period_start = Set(reset.anchor);
                    change.current_period_end = Set(reset.end);
                }
                if !c.lines.is_empty() {
                    invoice = Some(
                        invoice_change(&tx, &ctx, &org, &sub, &prepared, &principal, &request_id, now)
                            .await?,
                    );
                }
                set_plan(&tx, &org, &prepared.to.id, now).await?;
            }
        }
        let saved = save(&tx, &sub, change, now).await?;
        let what = match c.effect {
            Effect::Immediate { .. } => "plan_changed",
            Effect::Scheduled => "plan_change_scheduled",
            Effect::Unscheduled => "scheduled_change_dropped",
        };
        events::changed(&tx, now, &org, &saved, what, &request_id).await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "ChangePlan",
                target_type: "subscription",
                target_id: ids::encode(IdKind::Subscription, sub.id),
                request_id: &request_id,
                summary: json!({
                    "from": { "plan_id": prepared.from.id, "interval": prepared.from_interval.as_str() },
                    "to": { "plan_id": prepared.to.id, "interval": prepared.to_interval.as_str() },
                    "kind": c.kind.as_str_name(),
                    "effect": match c.effect {
                        Effect::Immediate { .. } => "IMMEDIATE",
                        Effect::Scheduled => "SCHEDULED",
                        Effect::Unscheduled => "SCHEDULED_CHANGE_DROPPED",
                    },
                    "effective_time": c.effective_time,
                    "credit": prepared.amount(c.credit_micros),
                    "charge": prepared.amount(c.charge_micros),
                    "net": prepared.amount(c.net_micros()),
                    "new_price": prepared.amount(c.new_price_micros),
                    "currency": prepared.currency.code(),
                    "invoice": invoice.as_ref().map(|i| i.invoice.number.clone()),
                }),
            },
        )
        .await?;
        let response = proto::ChangePlanResponse {
            subscription: Some(to_proto(&saved)),
            change: Some(prepared.proto()),
            invoice: invoice
                .as_ref()
                .map(|i| invoices::to_proto(&i.invoice, &i.lines)),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}

/// Issues the proration invoice of an immediate change on the locked billing account;
/// pays it from credits when the balance covers it, or credits a negative net to the
/// balance.
#[allow(clippy::too_many_arguments)]
async fn invoice_change(
    tx: &Tx,
    ctx: &Ctx,
    org: &organizations::Model,
    sub: &subscriptions::Model,
    prepared: &Prepared<'_>,
    principal: &Principal,
    request_id: &str,
    now: i64,
) -> Result<invoices::Issued> {
    let c = &prepared.computed;
    let mut account = ledger::lock_account(tx, org, now).await?;
    let (issued, _) = invoices::issue_and_collect(
        tx,
        ctx,
        org,
        &mut account,
        NewInvoice {
            subscription_id: Some(sub.id),
            period_start: c.invoice_start,
            period_end: c.invoice_end,
            lines: c.lines.clone(),
            memo: format!(
                "Plan change: {} ({}) → {} ({})",
                prepared.from.name,
                prepared.from_interval.adjective(),
                prepared.to.name,
                prepared.to_interval.adjective(),
            ),
            due_time: None,
        },
        principal.author(),
        request_id,
        now,
    )
    .await?;
    // A negative net was invoiced at zero (PAID at issue): the difference goes to the
    // balance.
    let net = c.net_micros();
    if net < 0 {
        ledger::post(
            tx,
            &mut account,
            Entry {
                kind: Some(TxnKind::Credit),
                amount_micros: -net,
                reason: format!(
                    "unused time credited by plan change (invoice {})",
                    issued.invoice.number
                ),
                request_id: request_id.to_owned(),
                author: principal.author(),
                invoice_id: Some(issued.invoice.id),
                ..Entry::default()
            },
            ctx.settings.billing.credit_overdraft_micros,
            now,
        )
        .await?;
    }
    Ok(issued)
}
