//! Tenant transfers between agencies (seed 004).

use crate::{
    auth::Caller,
    error::Result,
    grpc::{Ctx, pending},
    proto,
};

const CAPABILITY: &str = "tenant transfers";

/// RequestTenantTransferRequest (not built yet).
pub async fn request(
    ctx: Ctx,
    caller: Caller,
    req: proto::RequestTenantTransferRequest,
) -> Result<proto::RequestTenantTransferResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}

/// AcceptTenantTransferRequest (not built yet).
pub async fn accept(
    ctx: Ctx,
    caller: Caller,
    req: proto::AcceptTenantTransferRequest,
) -> Result<proto::AcceptTenantTransferResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}

/// RejectTenantTransferRequest (not built yet).
pub async fn reject(
    ctx: Ctx,
    caller: Caller,
    req: proto::RejectTenantTransferRequest,
) -> Result<proto::RejectTenantTransferResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}

/// CancelTenantTransferRequest (not built yet).
pub async fn cancel(
    ctx: Ctx,
    caller: Caller,
    req: proto::CancelTenantTransferRequest,
) -> Result<proto::CancelTenantTransferResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}

/// GetTenantTransferRequest (not built yet).
pub async fn get(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetTenantTransferRequest,
) -> Result<proto::GetTenantTransferResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}

/// ListTenantTransfersRequest (not built yet).
pub async fn list(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListTenantTransfersRequest,
) -> Result<proto::ListTenantTransfersResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}

/// Expires pending transfers whose time has passed (run by the dispatcher).
pub async fn expire_due(ctx: &Ctx) -> Result<usize> {
    let _ = ctx;
    Ok(0)
}
