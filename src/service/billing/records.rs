//! Billing records (one per organization, agent and month) and monthly summaries.

super::unbuilt! {
    list_records(ListBillingRecordsRequest -> ListBillingRecordsResponse);
    summary(GetBillingSummaryRequest -> GetBillingSummaryResponse);
}
