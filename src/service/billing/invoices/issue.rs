//! Issuing an invoice: the step every invoice producer (CreateInvoice, the subscription
//! renewal cycle) shares, run inside the caller's transaction on the caller's locked
//! billing account. Callers write their own audit entry (with the amounts) in the same
//! transaction.

use sea_orm::{ActiveModelTrait, EntityTrait};
use uuid::Uuid;

use crate::{
    domain::{
        billing::{InvoiceStatus, LineKind, round_to_minor},
        events::types,
        ids::new_id,
        money::{Currency, MAX_AMOUNT_UNITS, MICROS_PER_UNIT},
    },
    error::{Error, Result},
    grpc::Ctx,
    service::billing::ledger,
    storage::{
        Tx,
        entities::{billing_accounts, invoice_lines, invoices, organizations},
    },
};

/// Largest absolute line amount or invoice total, in micro-units.
pub const MAX_TOTAL_MICROS: i64 = MAX_AMOUNT_UNITS * MICROS_PER_UNIT;

const DAY_MICROS: i64 = 24 * 3600 * 1_000_000;

/// A line to invoice.
#[derive(Debug, Clone)]
pub struct NewLine {
    /// Shown on the invoice.
    pub description: String,
    /// What the line is for.
    pub kind: LineKind,
    /// At least 1.
    pub quantity: i64,
    /// Price of one unit (negative for a discount or credit), micro-units.
    pub unit_amount_micros: i64,
    /// Start of the period the line covers.
    pub period_start: i64,
    /// End of the period the line covers (exclusive).
    pub period_end: i64,
    /// Plan of subscription and proration lines, else empty.
    pub plan_id: String,
    /// Agent of agent fee lines.
    pub agent_id: Option<Uuid>,
    /// Add-on service of add-on lines, else empty.
    pub service_id: String,
}

/// An invoice to issue.
#[derive(Debug, Clone)]
pub struct NewInvoice {
    /// The subscription billed, if any.
    pub subscription_id: Option<Uuid>,
    /// Start of the billed period.
    pub period_start: i64,
    /// End of the billed period (exclusive).
    pub period_end: i64,
    /// At least one line.
    pub lines: Vec<NewLine>,
    /// Free text shown on the invoice.
    pub memo: String,
    /// When payment is due; `None` means the configured payment terms after issue.
    pub due_time: Option<i64>,
}

/// An issued invoice with its lines.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The invoice row.
    pub invoice: invoices::Model,
    /// Its lines in order.
    pub lines: Vec<invoice_lines::Model>,
}

/// `quantity × unit` rounded half-up to the currency's minor unit, in micro-units;
/// `None` beyond ±[`MAX_TOTAL_MICROS`].
pub fn line_amount(quantity: i64, unit_micros: i64, currency: Currency) -> Option<i64> {
    let product = i128::from(quantity) * i128::from(unit_micros);
    let product = i64::try_from(product)
        .ok()
        .filter(|p| p.abs() <= MAX_TOTAL_MICROS)?;
    Some(round_to_minor(product, currency))
}

/// The rounded amount of every line and their sum, or why they cannot be invoiced.
fn price(lines: &[NewLine], currency: Currency) -> Result<(Vec<i64>, i64)> {
    if lines.is_empty() {
        return Err(Error::invalid("lines", "must have at least one line"));
    }
    let mut amounts = Vec::with_capacity(lines.len());
    let mut total: i64 = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.quantity < 1 {
            return Err(Error::invalid(
                format!("lines[{i}].quantity"),
                "must be at least 1",
            ));
        }
        let amount = line_amount(line.quantity, line.unit_amount_micros, currency)
            .ok_or_else(|| Error::invalid(format!("lines[{i}]"), "amount is too large"))?;
        total = total
            .checked_add(amount)
            .filter(|t| t.abs() <= MAX_TOTAL_MICROS)
            .ok_or_else(|| Error::invalid("lines", "the total is too large"))?;
        amounts.push(amount);
    }
    if total < 0 {
        return Err(Error::invalid("lines", "the total must not be negative"));
    }
    Ok((amounts, total))
}

/// Issues an invoice on the locked `account` (from [`ledger::lock_account`]): takes the
/// next number of the organization's sequence, prices the lines, and stores it OPEN
/// (PAID at once when the total is zero). The currency is the account's, the one its
/// payment will be debited in. Fails INVALID_ARGUMENT on no lines, a quantity below 1,
/// amounts out of bounds or a negative total, writing nothing. Emits `invoice.issued`
/// (and `invoice.paid` for a zero total) with `request_id` in `org`, the account's
/// organization.
pub async fn issue(
    tx: &Tx,
    ctx: &Ctx,
    org: &organizations::Model,
    account: &mut billing_accounts::Model,
    draft: NewInvoice,
    request_id: &str,
    now: i64,
) -> Result<Issued> {
    let currency = account.currency.parse().unwrap_or(Currency::Usd);
    let (amounts, total) = price(&draft.lines, currency)?;
    let (seq, number) = ledger::next_invoice_number(tx, account, now).await?;
    let terms = i64::from(ctx.settings.billing.invoice_payment_terms_days) * DAY_MICROS;
    let paid = total == 0;
    let invoice = invoices::Model {
        id: new_id(),
        organization_id: account.organization_id,
        seq,
        number,
        subscription_id: draft.subscription_id,
        period_start: draft.period_start,
        period_end: draft.period_end,
        subtotal_micros: total,
        total_micros: total,
        amount_paid_micros: 0,
        currency: currency.code().to_owned(),
        status: if paid {
            InvoiceStatus::Paid
        } else {
            InvoiceStatus::Open
        }
        .as_str()
        .to_owned(),
        issue_time: Some(now),
        due_time: Some(draft.due_time.unwrap_or(now + terms)),
        paid_time: paid.then_some(now),
        void_time: None,
        memo: draft.memo,
        status_reason: String::new(),
        payment_transaction_id: None,
        create_time: now,
        update_time: now,
        version: 1,
    };
    let invoice = invoices::ActiveModel::from(invoice).insert(&**tx).await?;
    let lines: Vec<invoice_lines::Model> = draft
        .lines
        .into_iter()
        .zip(amounts)
        .enumerate()
        .map(|(i, (line, amount))| invoice_lines::Model {
            id: new_id(),
            invoice_id: invoice.id,
            position: i32::try_from(i + 1).unwrap_or(i32::MAX),
            description: line.description,
            kind: line.kind.as_str().to_owned(),
            quantity: line.quantity,
            unit_amount_micros: line.unit_amount_micros,
            amount_micros: amount,
            period_start: line.period_start,
            period_end: line.period_end,
            plan_id: line.plan_id,
            agent_id: line.agent_id,
            service_id: line.service_id,
        })
        .collect();
    invoice_lines::Entity::insert_many(lines.iter().cloned().map(invoice_lines::ActiveModel::from))
        .exec(&**tx)
        .await?;
    super::events::emit(tx, now, org, &invoice, types::INVOICE_ISSUED, request_id).await?;
    if paid {
        super::events::emit(tx, now, org, &invoice, types::INVOICE_PAID, request_id).await?;
    }
    Ok(Issued { invoice, lines })
}
