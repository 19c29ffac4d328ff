//! GetInvoice and GetInvoicePdf.

use crate::{
    auth::Caller,
    error::{Error, Result, Violations},
    grpc::Ctx,
    proto,
    storage::entities::{invoice_lines, invoices, organizations},
};

/// An invoice with its organization and lines.
type Loaded = (
    organizations::Model,
    invoices::Model,
    Vec<invoice_lines::Model>,
);

/// Reads the invoice named by a request, with its lines, after authorizing the
/// organization.
async fn load(
    ctx: &Ctx,
    caller: &Caller,
    organization_id: &str,
    invoice_id: &str,
) -> Result<Loaded> {
    let access = caller
        .authorize(&ctx.store, "organization_id", organization_id)
        .await?;
    let mut v = Violations::new();
    let id = super::parse_id(&mut v, invoice_id);
    v.finish()?;
    let id = id.ok_or_else(|| Error::invalid("invoice_id", "is required"))?;
    let db = ctx.store.db();
    let invoice = super::find(db, access.org().id, id).await?;
    let lines = super::lines_of(db, vec![id]).await?;
    Ok((access.org().clone(), invoice, lines))
}

/// GetInvoice: one invoice with its lines.
pub async fn get_invoice(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetInvoiceRequest,
) -> Result<proto::GetInvoiceResponse> {
    let (_, invoice, lines) = load(&ctx, &caller, &req.organization_id, &req.invoice_id).await?;
    Ok(proto::GetInvoiceResponse {
        invoice: Some(super::to_proto(&invoice, &lines)),
    })
}

/// GetInvoicePdf: the invoice rendered as a PDF from the stored rows.
pub async fn get_invoice_pdf(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetInvoicePdfRequest,
) -> Result<proto::GetInvoicePdfResponse> {
    let (org, invoice, lines) = load(&ctx, &caller, &req.organization_id, &req.invoice_id).await?;
    Ok(proto::GetInvoicePdfResponse {
        content: super::pdf::render(&org, &invoice, &lines),
        content_type: "application/pdf".into(),
        filename: format!("{}.pdf", invoice.number),
    })
}
