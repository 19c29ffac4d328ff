//! Feature flags: SetFeatureFlag and ClearFeatureFlag (per-organization overrides over the plan's defaults).

use crate::{
    auth::Caller,
    error::{Error, Result},
    grpc::Ctx,
    proto,
};

/// SetFeatureFlag.
pub async fn set_feature_flag(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::SetFeatureFlagRequest,
) -> Result<proto::SetFeatureFlagResponse> {
    Err(Error::Unimplemented("SetFeatureFlag"))
}

/// ClearFeatureFlag.
pub async fn clear_feature_flag(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::ClearFeatureFlagRequest,
) -> Result<proto::ClearFeatureFlagResponse> {
    Err(Error::Unimplemented("ClearFeatureFlag"))
}
