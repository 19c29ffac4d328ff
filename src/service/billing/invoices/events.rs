//! The `invoice.issued` and `invoice.paid` events, emitted where an invoice is issued
//! ([`super::issue`]) and where it is paid ([`super::pay_from_credits`]).

use serde_json::json;
use uuid::Uuid;

use crate::{
    domain::{
        clock::from_micros,
        ids::{self, IdKind},
    },
    error::Result,
    events::outbox,
    storage::{
        Tx,
        entities::{invoices, organizations},
    },
};

use super::pay::shown;

/// Emits `event_type` for `invoice` as it is now, in its organization `org`.
pub(super) async fn emit(
    tx: &Tx,
    now: i64,
    org: &organizations::Model,
    invoice: &invoices::Model,
    event_type: &'static str,
    request_id: &str,
) -> Result<Uuid> {
    let money = |m| shown(&invoice.currency, m);
    let data = json!({
        "organization_id": ids::encode(IdKind::Organization, invoice.organization_id),
        "invoice_id": ids::encode(IdKind::Invoice, invoice.id),
        "number": invoice.number,
        "status": invoice.status,
        "total": money(invoice.total_micros),
        "amount_paid": money(invoice.amount_paid_micros),
        "currency": invoice.currency,
        "subscription_id": invoice.subscription_id.map(|s| ids::encode(IdKind::Subscription, s)),
        "transaction_id": invoice.payment_transaction_id.map(|t| ids::encode(IdKind::Transaction, t)),
        "due_time": invoice.due_time.map(|t| from_micros(t).to_rfc3339()),
    });
    outbox::emit(tx, now, org, event_type, request_id, data).await
}
