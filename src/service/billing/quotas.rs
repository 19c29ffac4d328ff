//! GetUsage: quotas against plan limits, with warnings at 80 % and 100 %.

super::unbuilt! {
    get_usage(GetUsageRequest -> GetUsageResponse);
}
