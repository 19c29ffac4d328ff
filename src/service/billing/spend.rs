//! The monthly spend limit and its alerts: SetSpendLimit and GetSpendStatus.

super::unbuilt! {
    set_spend_limit(SetSpendLimitRequest -> SetSpendLimitResponse);
    get_spend_status(GetSpendStatusRequest -> GetSpendStatusResponse);
}
