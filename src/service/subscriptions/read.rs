//! GetSubscription: the subscription, plan, limits, usage and effective features.

use crate::{
    auth::Caller,
    error::{Error, Result},
    grpc::Ctx,
    proto,
};

/// GetSubscription.
pub async fn get_subscription(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::GetSubscriptionRequest,
) -> Result<proto::GetSubscriptionResponse> {
    Err(Error::Unimplemented("GetSubscription"))
}
