//! Status changes: PayInvoice (OPEN → PAID from credits), VoidInvoice (DRAFT/OPEN →
//! VOID) and MarkInvoiceUncollectible (OPEN → UNCOLLECTIBLE).

use sea_orm::ActiveValue::Set;
use serde_json::json;

use crate::{
    auth::Caller,
    domain::{
        billing::InvoiceStatus,
        ids::{self, IdKind},
    },
    error::{Error, Result, Violations},
    grpc::Ctx,
    proto,
    service::{
        audit, audit_request_id, check_etag, commit, idempotency_key, orgs::lock_live, replayed,
        settle, subscriptions,
    },
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{invoices, organizations, subscriptions as subscriptions_table},
    },
};

use super::{
    super::{ledger, require_reason, require_request_id},
    pay::{self, not_open, shown},
};

/// PayInvoice: pays an OPEN invoice from the organization's credits with one
/// INVOICE_PAYMENT entry. A retry with the same `request_id` returns the first result;
/// paying an invoice that is no longer OPEN fails `INVOICE_NOT_OPEN`, so concurrent
/// payments with different request ids debit once.
pub async fn pay_invoice(
    ctx: Ctx,
    caller: Caller,
    req: proto::PayInvoiceRequest,
) -> Result<proto::PayInvoiceResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org = access.org().clone();
    let mut v = Violations::new();
    let id = super::parse_id(&mut v, &req.invoice_id);
    require_request_id(&mut v, &req.request_id);
    v.finish()?;
    let id = id.ok_or_else(|| Error::invalid("invoice_id", "is required"))?;
    let principal = access.principal().clone();
    let key = idempotency_key(&principal, "PayInvoice", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        let org = lock_live(&tx, &org).await?;
        // Lock order: organization → subscription → billing account → invoice.
        let subscription = subscriptions::lock_current(&tx, org.id).await?;
        let now = ctx.store.now();
        let mut account = ledger::lock_account(&tx, &org, now).await?;
        // Checked under the account lock, so a concurrent twin's commit is visible.
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let invoice = super::lock(&tx, org.id, id).await?;
        let request_id = audit_request_id(&caller, key.as_ref()).to_owned();
        let paid = pay::pay_from_credits(
            &tx,
            &ctx,
            &org,
            &mut account,
            &invoice,
            principal.author(),
            &request_id,
            now,
        )
        .await?;
        let invoice = paid.invoice;
        let reactivated = recover_subscription(
            &tx,
            &ctx,
            &org,
            subscription.as_ref(),
            &invoice,
            &request_id,
            now,
        )
        .await?;
        let money = |m| shown(&invoice.currency, m);
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "PayInvoice",
                target_type: "invoice",
                target_id: ids::encode(IdKind::Invoice, invoice.id),
                request_id: &request_id,
                summary: json!({
                    "number": invoice.number,
                    "amount": money(invoice.amount_paid_micros),
                    "currency": invoice.currency,
                    "transaction_id": paid
                        .transaction
                        .as_ref()
                        .map(|t| ids::encode(IdKind::Transaction, t.id)),
                    "balance_after": money(account.balance_micros),
                    "subscription_reactivated": reactivated
                        .as_ref()
                        .map(|s| ids::encode(IdKind::Subscription, s.id)),
                }),
            },
        )
        .await?;
        let lines = super::lines_of(&*tx, vec![invoice.id]).await?;
        let response = proto::PayInvoiceResponse {
            invoice: Some(super::to_proto(&invoice, &lines)),
            transaction: paid.transaction.as_ref().map(ledger::to_proto),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}

/// Makes the invoice's PAST_DUE subscription ACTIVE again once this transition (paid,
/// voided, uncollectible) left none of its invoices overdue, emitting
/// `subscription.changed` (`recovered`). The caller holds the organization's and the
/// subscription's locks (taken before the invoice's).
async fn recover_subscription(
    tx: &Tx,
    ctx: &Ctx,
    org: &organizations::Model,
    subscription: Option<&subscriptions_table::Model>,
    invoice: &invoices::Model,
    request_id: &str,
    now: i64,
) -> Result<Option<subscriptions_table::Model>> {
    let Some(sub) = subscription.filter(|s| invoice.subscription_id == Some(s.id)) else {
        return Ok(None);
    };
    let cutoff = subscriptions::cycle::overdue_cutoff(ctx, now);
    let reactivated = subscriptions::cycle::reactivate_if_settled(tx, sub, cutoff, now).await?;
    if let Some(sub) = &reactivated {
        subscriptions::events::changed(tx, now, org, sub, "recovered", request_id).await?;
    }
    Ok(reactivated)
}

/// A closing transition requested by an operator.
struct Close<'a> {
    method: &'static str,
    organization_id: &'a str,
    invoice_id: &'a str,
    reason: &'a str,
    etag: &'a str,
    to: InvoiceStatus,
    from: &'static [InvoiceStatus],
}

/// Moves an invoice to VOID or UNCOLLECTIBLE under its row lock: the etag (when given)
/// must match (else ABORTED), the status must be one of `from` (else
/// `INVOICE_NOT_OPEN`). No money moves; the reason is kept on the invoice and audited.
async fn close(ctx: &Ctx, caller: &Caller, close: Close<'_>) -> Result<proto::Invoice> {
    let access = caller
        .authorize(&ctx.store, "organization_id", close.organization_id)
        .await?;
    let org_id = access.org().id;
    let mut v = Violations::new();
    let id = super::parse_id(&mut v, close.invoice_id);
    let reason = require_reason(&mut v, "reason", close.reason, 500);
    if close.etag.chars().count() > 64 {
        v.add("etag", "must be at most 64 characters");
    }
    v.finish()?;
    let id = id.ok_or_else(|| Error::invalid("invoice_id", "is required"))?;
    let tx = ctx.store.write().await?;
    // Lock order: organization → subscription → invoice, as PayInvoice.
    let org = lock_live(&tx, access.org()).await?;
    let subscription = subscriptions::lock_current(&tx, org_id).await?;
    let now = ctx.store.now();
    let invoice = super::lock(&tx, org_id, id).await?;
    check_etag(close.etag, invoice.version)?;
    if !close.from.iter().any(|s| s.as_str() == invoice.status) {
        return Err(not_open(&invoice));
    }
    let change = invoices::ActiveModel {
        status: Set(close.to.as_str().to_owned()),
        void_time: Set(Some(now)),
        status_reason: Set(reason.clone()),
        ..Default::default()
    };
    let updated = pay::save(&tx, &invoice, change, now).await?;
    let request_id = audit_request_id(caller, None);
    let reactivated = recover_subscription(
        &tx,
        ctx,
        &org,
        subscription.as_ref(),
        &updated,
        request_id,
        now,
    )
    .await?;
    let principal = access.principal().clone();
    audit(
        &tx,
        ctx,
        &principal,
        AuditRecord {
            organization_id: org_id,
            action: close.method,
            target_type: "invoice",
            target_id: ids::encode(IdKind::Invoice, id),
            request_id,
            summary: json!({
                "number": updated.number,
                "from": invoice.status,
                "to": updated.status,
                "reason": reason,
                "total": shown(&updated.currency, updated.total_micros),
                "amount_due": shown(
                    &updated.currency,
                    updated.total_micros - updated.amount_paid_micros
                ),
                "currency": updated.currency,
                "subscription_reactivated": reactivated
                    .as_ref()
                    .map(|s| ids::encode(IdKind::Subscription, s.id)),
            }),
        },
    )
    .await?;
    let lines = super::lines_of(&*tx, vec![id]).await?;
    tx.commit().await?;
    Ok(super::to_proto(&updated, &lines))
}

/// VoidInvoice: DRAFT or OPEN → VOID (operators); reason required, optional etag.
pub async fn void_invoice(
    ctx: Ctx,
    caller: Caller,
    req: proto::VoidInvoiceRequest,
) -> Result<proto::VoidInvoiceResponse> {
    let invoice = close(
        &ctx,
        &caller,
        Close {
            method: "VoidInvoice",
            organization_id: &req.organization_id,
            invoice_id: &req.invoice_id,
            reason: &req.reason,
            etag: &req.etag,
            to: InvoiceStatus::Void,
            from: &[InvoiceStatus::Draft, InvoiceStatus::Open],
        },
    )
    .await?;
    Ok(proto::VoidInvoiceResponse {
        invoice: Some(invoice),
    })
}

/// MarkInvoiceUncollectible: OPEN → UNCOLLECTIBLE (operators); reason required,
/// optional etag.
pub async fn mark_uncollectible(
    ctx: Ctx,
    caller: Caller,
    req: proto::MarkInvoiceUncollectibleRequest,
) -> Result<proto::MarkInvoiceUncollectibleResponse> {
    let invoice = close(
        &ctx,
        &caller,
        Close {
            method: "MarkInvoiceUncollectible",
            organization_id: &req.organization_id,
            invoice_id: &req.invoice_id,
            reason: &req.reason,
            etag: &req.etag,
            to: InvoiceStatus::Uncollectible,
            from: &[InvoiceStatus::Open],
        },
    )
    .await?;
    Ok(proto::MarkInvoiceUncollectibleResponse {
        invoice: Some(invoice),
    })
}
