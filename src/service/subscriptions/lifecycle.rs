//! CreateSubscription, CancelSubscription, ResumeSubscription and AdminUpdateSubscription.

use crate::{
    auth::Caller,
    error::{Error, Result},
    grpc::Ctx,
    proto,
};

/// CreateSubscription.
pub async fn create_subscription(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::CreateSubscriptionRequest,
) -> Result<proto::CreateSubscriptionResponse> {
    Err(Error::Unimplemented("CreateSubscription"))
}

/// CancelSubscription.
pub async fn cancel_subscription(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::CancelSubscriptionRequest,
) -> Result<proto::CancelSubscriptionResponse> {
    Err(Error::Unimplemented("CancelSubscription"))
}

/// ResumeSubscription.
pub async fn resume_subscription(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::ResumeSubscriptionRequest,
) -> Result<proto::ResumeSubscriptionResponse> {
    Err(Error::Unimplemented("ResumeSubscription"))
}

/// AdminUpdateSubscription.
pub async fn admin_update_subscription(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::AdminUpdateSubscriptionRequest,
) -> Result<proto::AdminUpdateSubscriptionResponse> {
    Err(Error::Unimplemented("AdminUpdateSubscription"))
}
