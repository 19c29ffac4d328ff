//! GetTenantAnalytics and GetAgencyAnalytics: SQL aggregates over usage events and
//! billing records.

super::unbuilt! {
    tenant(GetTenantAnalyticsRequest -> GetTenantAnalyticsResponse);
    agency(GetAgencyAnalyticsRequest -> GetAgencyAnalyticsResponse);
}
