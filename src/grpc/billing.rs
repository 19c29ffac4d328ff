//! BillingService adapter. Usage metering, billing records, credits, payments, invoices
//! and analytics arrive with the billing issue; until then every RPC checks its caller
//! and answers UNIMPLEMENTED.

use tonic::{Request, Response, Status, Streaming};

use crate::{
    grpc::{Ctx, caller_of, pending, pending_rpcs},
    proto::{self, billing_service_server::BillingService},
};

const CAPABILITY: &str = "billing (usage metering, credits, payments, invoices, analytics)";

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
    pending_rpcs! { CAPABILITY;
        record_usage(RecordUsageRequest -> RecordUsageResponse) [organization_id];
        record_usage_batch(RecordUsageBatchRequest -> RecordUsageBatchResponse) [organization_id];
        list_billing_records(ListBillingRecordsRequest -> ListBillingRecordsResponse) [organization_id];
        get_billing_summary(GetBillingSummaryRequest -> GetBillingSummaryResponse) [organization_id];
        get_usage(GetUsageRequest -> GetUsageResponse) [organization_id];
        set_spend_limit(SetSpendLimitRequest -> SetSpendLimitResponse) [organization_id];
        get_spend_status(GetSpendStatusRequest -> GetSpendStatusResponse) [organization_id];
        get_balance(GetBalanceRequest -> GetBalanceResponse) [organization_id];
        list_transactions(ListTransactionsRequest -> ListTransactionsResponse) [organization_id];
        get_transaction(GetTransactionRequest -> GetTransactionResponse) [organization_id];
        gift_credits(GiftCreditsRequest -> GiftCreditsResponse) [organization_id];
        add_credit(AddCreditRequest -> AddCreditResponse) [organization_id];
        buy_credits(BuyCreditsRequest -> BuyCreditsResponse) [organization_id];
        complete_payment(CompletePaymentRequest -> CompletePaymentResponse) [organization_id];
        confirm_manual_payment(ConfirmManualPaymentRequest -> ConfirmManualPaymentResponse) [organization_id];
        list_invoices(ListInvoicesRequest -> ListInvoicesResponse) [organization_id];
        get_invoice(GetInvoiceRequest -> GetInvoiceResponse) [organization_id];
        get_invoice_pdf(GetInvoicePdfRequest -> GetInvoicePdfResponse) [organization_id];
        create_invoice(CreateInvoiceRequest -> CreateInvoiceResponse) [organization_id];
        pay_invoice(PayInvoiceRequest -> PayInvoiceResponse) [organization_id];
        void_invoice(VoidInvoiceRequest -> VoidInvoiceResponse) [organization_id];
        mark_invoice_uncollectible(MarkInvoiceUncollectibleRequest -> MarkInvoiceUncollectibleResponse) [organization_id];
        get_tenant_analytics(GetTenantAnalyticsRequest -> GetTenantAnalyticsResponse) [organization_id];
        get_agency_analytics(GetAgencyAnalyticsRequest -> GetAgencyAnalyticsResponse) [organization_id];
    }

    async fn stream_usage(
        &self,
        request: Request<Streaming<proto::StreamUsageRequest>>,
    ) -> Result<Response<proto::StreamUsageResponse>, Status> {
        let caller = caller_of(&request)?;
        let mut stream = request.into_inner();
        let first = stream.message().await?.unwrap_or_default();
        pending(
            &self.ctx,
            &caller,
            &[("organization_id", &first.organization_id)],
            CAPABILITY,
        )
        .await
        .map_err(Status::from)
    }
}
