//! Asset transfers between organizations.

use crate::{
    auth::Caller,
    error::Result,
    grpc::{Ctx, pending},
    proto,
};

const CAPABILITY: &str = "asset transfers";

/// TransferAssetsRequest (not built yet).
pub async fn transfer_assets(
    ctx: Ctx,
    caller: Caller,
    req: proto::TransferAssetsRequest,
) -> Result<proto::TransferAssetsResponse> {
    pending(
        &ctx,
        &caller,
        &[
            (
                "source_organization_id",
                req.source_organization_id.as_str(),
            ),
            (
                "target_organization_id",
                req.target_organization_id.as_str(),
            ),
        ],
        CAPABILITY,
    )
    .await
}

/// TransferAssetsBulkRequest (not built yet).
pub async fn transfer_assets_bulk(
    ctx: Ctx,
    caller: Caller,
    req: proto::TransferAssetsBulkRequest,
) -> Result<proto::TransferAssetsBulkResponse> {
    pending(
        &ctx,
        &caller,
        &[
            (
                "source_organization_id",
                req.source_organization_id.as_str(),
            ),
            (
                "target_organization_id",
                req.target_organization_id.as_str(),
            ),
        ],
        CAPABILITY,
    )
    .await
}
