//! Invoices: list, get, PDF, one-off creation, payment from credits, void and
//! uncollectible.

super::unbuilt! {
    list_invoices(ListInvoicesRequest -> ListInvoicesResponse);
    get_invoice(GetInvoiceRequest -> GetInvoiceResponse);
    get_invoice_pdf(GetInvoicePdfRequest -> GetInvoicePdfResponse);
    create_invoice(CreateInvoiceRequest -> CreateInvoiceResponse);
    pay_invoice(PayInvoiceRequest -> PayInvoiceResponse);
    void_invoice(VoidInvoiceRequest -> VoidInvoiceResponse);
    mark_uncollectible(MarkInvoiceUncollectibleRequest -> MarkInvoiceUncollectibleResponse);
}
