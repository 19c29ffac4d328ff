//! BillingService adapter: every handler extracts the caller and delegates.

use tonic::{Request, Response, Status, Streaming};

use crate::{
    grpc::{Ctx, caller_of, delegate},
    proto::{self, billing_service_server::BillingService},
    service::billing::{analytics, credits, invoices, quotas, records, spend, usage},
};

/// The BillingService.
#[derive(Debug, Clone)]
pub struct Billing {
    ctx: Ctx,
}

impl Billing {
    /// A service over `ctx`.
    pub fn new(ctx: Ctx) -> Self {
        Billing { ctx }
    }
}

#[tonic::async_trait]
impl BillingService for Billing {
    delegate! {
        record_usage(RecordUsageRequest -> RecordUsageResponse) => usage::record;
        record_usage_batch(RecordUsageBatchRequest -> RecordUsageBatchResponse) => usage::record_batch;
        list_billing_records(ListBillingRecordsRequest -> ListBillingRecordsResponse) => records::list_records;
        get_billing_summary(GetBillingSummaryRequest -> GetBillingSummaryResponse) => records::summary;
        get_usage(GetUsageRequest -> GetUsageResponse) => quotas::get_usage;
        set_spend_limit(SetSpendLimitRequest -> SetSpendLimitResponse) => spend::set_spend_limit;
        get_spend_status(GetSpendStatusRequest -> GetSpendStatusResponse) => spend::get_spend_status;
        get_balance(GetBalanceRequest -> GetBalanceResponse) => credits::get_balance;
        list_transactions(ListTransactionsRequest -> ListTransactionsResponse) => credits::list_transactions;
        get_transaction(GetTransactionRequest -> GetTransactionResponse) => credits::get_transaction;
        gift_credits(GiftCreditsRequest -> GiftCreditsResponse) => credits::gift_credits;
        add_credit(AddCreditRequest -> AddCreditResponse) => credits::add_credit;
        buy_credits(BuyCreditsRequest -> BuyCreditsResponse) => credits::buy_credits;
        complete_payment(CompletePaymentRequest -> CompletePaymentResponse) => credits::complete_payment;
        confirm_manual_payment(ConfirmManualPaymentRequest -> ConfirmManualPaymentResponse) => credits::confirm_manual_payment;
        list_invoices(ListInvoicesRequest -> ListInvoicesResponse) => invoices::list_invoices;
        get_invoice(GetInvoiceRequest -> GetInvoiceResponse) => invoices::get_invoice;
        get_invoice_pdf(GetInvoicePdfRequest -> GetInvoicePdfResponse) => invoices::get_invoice_pdf;
        create_invoice(CreateInvoiceRequest -> CreateInvoiceResponse) => invoices::create_invoice;
        pay_invoice(PayInvoiceRequest -> PayInvoiceResponse) => invoices::pay_invoice;
        void_invoice(VoidInvoiceRequest -> VoidInvoiceResponse) => invoices::void_invoice;
        mark_invoice_uncollectible(MarkInvoiceUncollectibleRequest -> MarkInvoiceUncollectibleResponse) => invoices::mark_uncollectible;
        get_tenant_analytics(GetTenantAnalyticsRequest -> GetTenantAnalyticsResponse) => analytics::tenant;
        get_agency_analytics(GetAgencyAnalyticsRequest -> GetAgencyAnalyticsResponse) => analytics::agency;
    }

    async fn stream_usage(
        &self,
        request: Request<Streaming<proto::StreamUsageRequest>>,
    ) -> Result<Response<proto::StreamUsageResponse>, Status> {
        let caller = caller_of(&request)?;
        usage::stream(self.ctx.clone(), caller, request.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::from)
    }
}
