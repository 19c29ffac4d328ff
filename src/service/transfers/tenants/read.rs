//! GetTenantTransfer.

use crate::{
    auth::Caller,
    error::{Result, Violations},
    grpc::Ctx,
    proto,
};

use super::{
    access::{self, Admit},
    to_proto,
};

/// GetTenantTransfer: the tenant's side (its admins, its current agency's admin),
/// operators, and the admins of the agencies on either end of the transfer (the source
/// agency keeps seeing a transfer that took the tenant away). A PENDING transfer past
/// its expiry shows as EXPIRED.
pub async fn get(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetTenantTransferRequest,
) -> Result<proto::GetTenantTransferResponse> {
    let admitted = access::authorize(
        &ctx,
        &caller,
        &req.organization_id,
        &req.transfer_id,
        Violations::new(),
        Admit::Parties,
    )
    .await?;
    Ok(proto::GetTenantTransferResponse {
        transfer: Some(to_proto(&admitted.transfer, ctx.store.now())),
    })
}
