//! TenantTransferService adapter. Ownership, asset and agency transfers arrive with the
//! transfers issue; until then every RPC checks its caller and answers UNIMPLEMENTED.

use crate::{
    grpc::{Ctx, pending_rpcs},
    proto::tenant_transfer_service_server::TenantTransferService,
};

const CAPABILITY: &str = "transfers (ownership, assets, tenants between agencies)";

/// The TenantTransferService.
#[derive(Debug, Clone)]
pub struct Transfers {
    ctx: Ctx,
}

impl Transfers {
    /// A service over `ctx`.
    pub fn new(ctx: Ctx) -> Self {
        Transfers { ctx }
    }
}

#[tonic::async_trait]
impl TenantTransferService for Transfers {
    pending_rpcs! { CAPABILITY;
        transfer_ownership(TransferOwnershipRequest -> TransferOwnershipResponse) [organization_id];
        change_owner_email(ChangeOwnerEmailRequest -> ChangeOwnerEmailResponse) [organization_id];
        transfer_assets(TransferAssetsRequest -> TransferAssetsResponse) [source_organization_id, target_organization_id];
        transfer_assets_bulk(TransferAssetsBulkRequest -> TransferAssetsBulkResponse) [source_organization_id, target_organization_id];
        register_asset(RegisterAssetRequest -> RegisterAssetResponse) [organization_id];
        list_assets(ListAssetsRequest -> ListAssetsResponse) [organization_id];
        deregister_asset(DeregisterAssetRequest -> DeregisterAssetResponse) [organization_id];
        request_tenant_transfer(RequestTenantTransferRequest -> RequestTenantTransferResponse) [organization_id];
        accept_tenant_transfer(AcceptTenantTransferRequest -> AcceptTenantTransferResponse) [organization_id];
        reject_tenant_transfer(RejectTenantTransferRequest -> RejectTenantTransferResponse) [organization_id];
        cancel_tenant_transfer(CancelTenantTransferRequest -> CancelTenantTransferResponse) [organization_id];
        get_tenant_transfer(GetTenantTransferRequest -> GetTenantTransferResponse) [organization_id];
        list_tenant_transfers(ListTenantTransfersRequest -> ListTenantTransfersResponse) [organization_id];
    }
}
