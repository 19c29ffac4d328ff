//! ListPlans, GetPlan and ListAddonServices: the catalogue, readable without authentication.

use crate::{
    auth::Caller,
    error::{Error, Result},
    grpc::Ctx,
    proto,
};

/// ListPlans.
pub async fn list_plans(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::ListPlansRequest,
) -> Result<proto::ListPlansResponse> {
    Err(Error::Unimplemented("ListPlans"))
}

/// GetPlan.
pub async fn get_plan(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::GetPlanRequest,
) -> Result<proto::GetPlanResponse> {
    Err(Error::Unimplemented("GetPlan"))
}

/// ListAddonServices.
pub async fn list_addon_services(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::ListAddonServicesRequest,
) -> Result<proto::ListAddonServicesResponse> {
    Err(Error::Unimplemented("ListAddonServices"))
}
