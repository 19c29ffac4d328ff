//! Invoices (SPEC §5, seed 003): list, get, PDF, one-off creation, payment from credits,
//! void and uncollectible.
//!
//! Decisions where the issue is silent (after Stripe Billing):
//! - Invoices are issued OPEN at once (no DRAFT stage is exposed yet); a zero total is
//!   PAID at issue with no ledger entry. A negative total is refused: a credit to the
//!   organization is an `AddCredit`, not an invoice.
//! - Numbers come from a per-organization sequence kept on the billing account row, so
//!   numbering shares the ledger's lock: `INV-000001`, `INV-000002`…
//! - Every line is `quantity × unit_amount` rounded half-up to the minor unit; the
//!   subtotal and total are the sum of the rounded lines (no tax).
//! - Status changes happen under the invoice's row lock, bump `version` (the etag) and
//!   write an audit entry in the same transaction. Paying locks the organization and its
//!   billing account first, then the invoice, so concurrent payments of one invoice
//!   debit once and the others see it PAID (`INVOICE_NOT_OPEN`).
//! - `pdf_url` stays empty: the document is served by `GetInvoicePdf` only, and is
//!   rendered on demand from the stored rows, so it always matches the invoice.
//! - An invoice id of another organization than the request's is `NOT_FOUND`.

mod convert;
mod create;
mod events;
mod issue;
mod list;
mod pay;
mod pdf;
mod read;
mod status;
mod text;

pub use convert::{line_kind, status as invoice_status, to_proto};
pub use create::create_invoice;
pub use issue::{Issued, MAX_TOTAL_MICROS, NewInvoice, NewLine, issue, line_amount};
pub use list::list_invoices;
pub use pay::{Paid, can_pay_from_credits, issue_and_collect, pay_from_credits};
pub use read::{get_invoice, get_invoice_pdf};
pub use status::{mark_uncollectible, pay_invoice, void_invoice};

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::LockType,
};
use uuid::Uuid;

use crate::{
    domain::ids::{self, IdKind},
    error::{Error, Result, Violations},
    storage::{
        Tx,
        entities::{invoice_lines, invoices},
    },
};

/// Parses a request's `invoice_id`, reporting a bad one in `v`.
fn parse_id(v: &mut Violations, text: &str) -> Option<Uuid> {
    if text.is_empty() {
        v.add("invoice_id", "is required");
        return None;
    }
    v.check("invoice_id", ids::decode(IdKind::Invoice, text))
}

fn not_found(id: Uuid) -> Error {
    Error::not_found("invoice", &ids::encode(IdKind::Invoice, id))
}

/// Reads an invoice of `org_id` (NOT_FOUND when it belongs to another organization).
pub async fn find<C: ConnectionTrait>(db: &C, org_id: Uuid, id: Uuid) -> Result<invoices::Model> {
    invoices::Entity::find_by_id(id)
        .filter(invoices::Column::OrganizationId.eq(org_id))
        .one(db)
        .await?
        .ok_or_else(|| not_found(id))
}

/// Reads and locks an invoice of `org_id` until commit (PostgreSQL `FOR UPDATE`; on
/// SQLite the single writer already excludes every other writer).
pub async fn lock(tx: &Tx, org_id: Uuid, id: Uuid) -> Result<invoices::Model> {
    invoices::Entity::find_by_id(id)
        .filter(invoices::Column::OrganizationId.eq(org_id))
        .lock(LockType::Update)
        .one(&**tx)
        .await?
        .ok_or_else(|| not_found(id))
}

/// The lines of some invoices, in position order.
pub async fn lines_of<C: ConnectionTrait>(
    db: &C,
    invoice_ids: Vec<Uuid>,
) -> Result<Vec<invoice_lines::Model>> {
    if invoice_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(invoice_lines::Entity::find()
        .filter(invoice_lines::Column::InvoiceId.is_in(invoice_ids))
        .order_by_asc(invoice_lines::Column::InvoiceId)
        .order_by_asc(invoice_lines::Column::Position)
        .all(db)
        .await?)
}
