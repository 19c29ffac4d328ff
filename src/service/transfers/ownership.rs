//! Ownership transfers and owner email changes.

use crate::{
    auth::Caller,
    error::Result,
    grpc::{Ctx, pending},
    proto,
};

const CAPABILITY: &str = "ownership transfers";

/// TransferOwnershipRequest (not built yet).
pub async fn transfer_ownership(
    ctx: Ctx,
    caller: Caller,
    req: proto::TransferOwnershipRequest,
) -> Result<proto::TransferOwnershipResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}

/// ChangeOwnerEmailRequest (not built yet).
pub async fn change_owner_email(
    ctx: Ctx,
    caller: Caller,
    req: proto::ChangeOwnerEmailRequest,
) -> Result<proto::ChangeOwnerEmailResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}
