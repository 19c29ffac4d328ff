//! Invoices in proto form.

use crate::{
    domain::{
        billing::{InvoiceStatus, LineKind, to_minor_units},
        ids::{self, IdKind},
        money::{Currency, Money},
    },
    grpc::convert,
    proto,
    storage::entities::{invoice_lines, invoices},
};

/// The proto enum of an invoice status.
pub fn status(status: InvoiceStatus) -> proto::InvoiceStatus {
    use proto::InvoiceStatus as P;
    match status {
        InvoiceStatus::Draft => P::Draft,
        InvoiceStatus::Open => P::Open,
        InvoiceStatus::Paid => P::Paid,
        InvoiceStatus::Void => P::Void,
        InvoiceStatus::Uncollectible => P::Uncollectible,
    }
}

/// The proto enum of a line kind.
pub fn line_kind(kind: LineKind) -> proto::InvoiceLineKind {
    use proto::InvoiceLineKind as P;
    match kind {
        LineKind::Subscription => P::Subscription,
        LineKind::ProrationCredit => P::ProrationCredit,
        LineKind::ProrationCharge => P::ProrationCharge,
        LineKind::AgentFee => P::AgentFee,
        LineKind::Usage => P::Usage,
        LineKind::Addon => P::Addon,
        LineKind::OneOff => P::OneOff,
    }
}

/// An invoice with its lines in proto form.
pub fn to_proto(row: &invoices::Model, lines: &[invoice_lines::Model]) -> proto::Invoice {
    let currency = row.currency.parse().unwrap_or(Currency::Usd);
    let money = |m| Some(convert::money(Money::from_micros(currency, m)));
    let time = |t: Option<i64>| t.and_then(convert::timestamp);
    proto::Invoice {
        id: ids::encode(IdKind::Invoice, row.id),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        number: row.number.clone(),
        subscription_id: row
            .subscription_id
            .map(|id| ids::encode(IdKind::Subscription, id))
            .unwrap_or_default(),
        period_start: convert::timestamp(row.period_start),
        period_end: convert::timestamp(row.period_end),
        lines: lines
            .iter()
            .filter(|l| l.invoice_id == row.id)
            .map(|l| line(l, currency))
            .collect(),
        subtotal: money(row.subtotal_micros),
        total: money(row.total_micros),
        amount_due: money(row.total_micros - row.amount_paid_micros),
        amount_paid: money(row.amount_paid_micros),
        currency: currency.code().to_owned(),
        total_minor_units: to_minor_units(row.total_micros, currency),
        status: row
            .status
            .parse()
            .map(status)
            .unwrap_or(proto::InvoiceStatus::Unspecified) as i32,
        issue_time: time(row.issue_time),
        due_time: time(row.due_time),
        paid_time: time(row.paid_time),
        void_time: time(row.void_time),
        pdf_url: String::new(),
        memo: row.memo.clone(),
        payment_transaction_id: row
            .payment_transaction_id
            .map(|id| ids::encode(IdKind::Transaction, id))
            .unwrap_or_default(),
        create_time: convert::timestamp(row.create_time),
        update_time: convert::timestamp(row.update_time),
        etag: convert::etag(row.version),
    }
}

fn line(row: &invoice_lines::Model, currency: Currency) -> proto::InvoiceLine {
    let money = |m| Some(convert::money(Money::from_micros(currency, m)));
    proto::InvoiceLine {
        description: row.description.clone(),
        kind: row
            .kind
            .parse()
            .map(line_kind)
            .unwrap_or(proto::InvoiceLineKind::Unspecified) as i32,
        quantity: row.quantity,
        unit_amount: money(row.unit_amount_micros),
        amount: money(row.amount_micros),
        period_start: convert::timestamp(row.period_start),
        period_end: convert::timestamp(row.period_end),
        plan_id: row.plan_id.clone(),
        agent_id: row
            .agent_id
            .map(|id| ids::encode(IdKind::Agent, id))
            .unwrap_or_default(),
        service_id: row.service_id.clone(),
    }
}
