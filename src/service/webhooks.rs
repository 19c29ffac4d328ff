//! Webhook endpoints of an organization.

use crate::{
    auth::Caller,
    error::Result,
    grpc::{Ctx, pending},
    proto,
};

const CAPABILITY: &str = "webhook endpoints";

/// CreateWebhookEndpointRequest (not built yet).
pub async fn create_endpoint(
    ctx: Ctx,
    caller: Caller,
    req: proto::CreateWebhookEndpointRequest,
) -> Result<proto::CreateWebhookEndpointResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}

/// ListWebhookEndpointsRequest (not built yet).
pub async fn list_endpoints(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListWebhookEndpointsRequest,
) -> Result<proto::ListWebhookEndpointsResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}

/// DeleteWebhookEndpointRequest (not built yet).
pub async fn delete_endpoint(
    ctx: Ctx,
    caller: Caller,
    req: proto::DeleteWebhookEndpointRequest,
) -> Result<proto::DeleteWebhookEndpointResponse> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        CAPABILITY,
    )
    .await
}
