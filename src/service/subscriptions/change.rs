//! PreviewPlanChange and ChangePlan: upgrades with exact proration, scheduled downgrades.

use crate::{
    auth::Caller,
    error::{Error, Result},
    grpc::Ctx,
    proto,
};

/// PreviewPlanChange.
pub async fn preview_plan_change(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::PreviewPlanChangeRequest,
) -> Result<proto::PreviewPlanChangeResponse> {
    Err(Error::Unimplemented("PreviewPlanChange"))
}

/// ChangePlan.
pub async fn change_plan(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::ChangePlanRequest,
) -> Result<proto::ChangePlanResponse> {
    Err(Error::Unimplemented("ChangePlan"))
}
