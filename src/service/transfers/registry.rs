//! The registry of external assets other services own.

use crate::{
    auth::Caller,
    error::Result,
    grpc::{Ctx, pending},
    proto,
};

const CAPABILITY: &str = "external asset registry";

/// RegisterAssetRequest (not built yet).
pub async fn register(
    ctx: Ctx,
    caller: Caller,
    req: proto::RegisterAssetRequest,
) -> Result<proto::RegisterAssetResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}

/// ListAssetsRequest (not built yet).
pub async fn list(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListAssetsRequest,
) -> Result<proto::ListAssetsResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}

/// DeregisterAssetRequest (not built yet).
pub async fn deregister(
    ctx: Ctx,
    caller: Caller,
    req: proto::DeregisterAssetRequest,
) -> Result<proto::DeregisterAssetResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}
