//! Paying an OPEN invoice from the organization's credits, and the guarded status
//! update every transition shares. Callers write their own audit entry in the same
//! transaction.

use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};

use crate::{
    domain::{
        billing::{InvoiceStatus, TxnKind},
        events::types,
        money::{Currency, Money},
    },
    error::{Error, Result},
    grpc::Ctx,
    service::billing::ledger::{self, Entry},
    storage::{
        Tx,
        entities::{billing_accounts, credit_transactions, invoices, organizations},
    },
};

/// A paid invoice and the ledger entry that paid it (none when nothing was due).
#[derive(Debug, Clone)]
pub struct Paid {
    /// The invoice row, now PAID.
    pub invoice: invoices::Model,
    /// The INVOICE_PAYMENT entry.
    pub transaction: Option<credit_transactions::Model>,
}

/// What is still owed on an invoice.
fn due_micros(invoice: &invoices::Model) -> i64 {
    invoice.total_micros - invoice.amount_paid_micros
}

/// Whether the locked account's balance (with the configured overdraft) covers what an
/// OPEN invoice still owes.
pub fn can_pay_from_credits(
    ctx: &Ctx,
    account: &billing_accounts::Model,
    invoice: &invoices::Model,
) -> bool {
    invoice.status == InvoiceStatus::Open.as_str()
        && ledger::covers(
            account,
            -due_micros(invoice),
            ctx.settings.billing.credit_overdraft_micros,
        )
}

/// Pays an OPEN invoice (read under [`super::lock`] after the account lock) from the
/// locked account: posts an INVOICE_PAYMENT entry of minus the amount due and marks the
/// invoice PAID (emitting `invoice.paid` in `org`, the account's organization). Fails
/// `INVOICE_NOT_OPEN` for any other status and `INSUFFICIENT_CREDITS` when the balance
/// does not cover it, writing nothing.
#[allow(clippy::too_many_arguments)]
pub async fn pay_from_credits(
    tx: &Tx,
    ctx: &Ctx,
    org: &organizations::Model,
    account: &mut billing_accounts::Model,
    invoice: &invoices::Model,
    author: String,
    request_id: &str,
    now: i64,
) -> Result<Paid> {
    if invoice.status != InvoiceStatus::Open.as_str() {
        return Err(not_open(invoice));
    }
    let due = due_micros(invoice);
    let transaction = if due > 0 {
        Some(
            ledger::post(
                tx,
                account,
                Entry {
                    kind: Some(TxnKind::InvoicePayment),
                    amount_micros: -due,
                    reason: format!("payment of invoice {}", invoice.number),
                    request_id: request_id.to_owned(),
                    author,
                    invoice_id: Some(invoice.id),
                    ..Entry::default()
                },
                ctx.settings.billing.credit_overdraft_micros,
                now,
            )
            .await?,
        )
    } else {
        None
    };
    let change = invoices::ActiveModel {
        status: Set(InvoiceStatus::Paid.as_str().to_owned()),
        amount_paid_micros: Set(invoice.total_micros),
        paid_time: Set(Some(now)),
        payment_transaction_id: Set(transaction.as_ref().map(|t| t.id)),
        ..Default::default()
    };
    let invoice = save(tx, invoice, change, now).await?;
    super::events::emit(tx, now, org, &invoice, types::INVOICE_PAID, request_id).await?;
    Ok(Paid {
        invoice,
        transaction,
    })
}

/// The "prepaid" rule of subscription invoices: pays a just-issued OPEN invoice from the
/// locked account when the balance (with the overdraft) covers it, else leaves it OPEN.
/// Returns the invoice as it is now and whether this call paid it.
#[allow(clippy::too_many_arguments)]
async fn collect_if_covered(
    tx: &Tx,
    ctx: &Ctx,
    org: &organizations::Model,
    account: &mut billing_accounts::Model,
    invoice: invoices::Model,
    author: String,
    request_id: &str,
    now: i64,
) -> Result<(invoices::Model, bool)> {
    if !can_pay_from_credits(ctx, account, &invoice) {
        return Ok((invoice, false));
    }
    let paid = pay_from_credits(tx, ctx, org, account, &invoice, author, request_id, now).await?;
    Ok((paid.invoice, true))
}

/// Issues an invoice on the locked account ([`super::issue`]) and applies the prepaid
/// rule ([`collect_if_covered`]): the invoice as it is now, with its lines, and whether
/// this call paid it from credits.
#[allow(clippy::too_many_arguments)]
pub async fn issue_and_collect(
    tx: &Tx,
    ctx: &Ctx,
    org: &organizations::Model,
    account: &mut billing_accounts::Model,
    draft: super::NewInvoice,
    author: String,
    request_id: &str,
    now: i64,
) -> Result<(super::Issued, bool)> {
    let issued = super::issue(tx, ctx, org, account, draft, request_id, now).await?;
    let (invoice, paid) = collect_if_covered(
        tx,
        ctx,
        org,
        account,
        issued.invoice,
        author,
        request_id,
        now,
    )
    .await?;
    Ok((
        super::Issued {
            invoice,
            lines: issued.lines,
        },
        paid,
    ))
}

/// FAILED_PRECONDITION `INVOICE_NOT_OPEN` with the invoice's status.
pub(super) fn not_open(invoice: &invoices::Model) -> Error {
    Error::precondition(
        "INVOICE_NOT_OPEN",
        format!("invoice {} is {}", invoice.number, invoice.status),
    )
    .with("status", &invoice.status)
}

/// Applies `change` to an invoice read under its lock, bumping the version; ABORTED if
/// the row changed after it was read.
pub(super) async fn save(
    tx: &Tx,
    current: &invoices::Model,
    mut change: invoices::ActiveModel,
    now: i64,
) -> Result<invoices::Model> {
    change.update_time = Set(now);
    change.version = Set(current.version + 1);
    let result = invoices::Entity::update_many()
        .set(change)
        .filter(invoices::Column::Id.eq(current.id))
        .filter(invoices::Column::Version.eq(current.version))
        .exec(&**tx)
        .await?;
    if result.rows_affected != 1 {
        return Err(Error::stale_etag());
    }
    super::find(&**tx, current.organization_id, current.id).await
}

/// The amount as shown in audit summaries.
pub(super) fn shown(currency: &str, micros: i64) -> String {
    Money::from_micros(currency.parse().unwrap_or(Currency::Usd), micros).amount_string()
}
