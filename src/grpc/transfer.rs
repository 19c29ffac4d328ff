//! TenantTransferService adapter: every handler extracts the caller and delegates.

use crate::{
    grpc::{Ctx, delegate},
    proto::tenant_transfer_service_server::TenantTransferService,
    service::transfers::{assets, ownership, registry, tenants},
};

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
    delegate! {
        transfer_ownership(TransferOwnershipRequest -> TransferOwnershipResponse) => ownership::transfer_ownership;
        change_owner_email(ChangeOwnerEmailRequest -> ChangeOwnerEmailResponse) => ownership::change_owner_email;
        transfer_assets(TransferAssetsRequest -> TransferAssetsResponse) => assets::transfer_assets;
        transfer_assets_bulk(TransferAssetsBulkRequest -> TransferAssetsBulkResponse) => assets::transfer_assets_bulk;
        register_asset(RegisterAssetRequest -> RegisterAssetResponse) => registry::register;
        list_assets(ListAssetsRequest -> ListAssetsResponse) => registry::list;
        deregister_asset(DeregisterAssetRequest -> DeregisterAssetResponse) => registry::deregister;
        request_tenant_transfer(RequestTenantTransferRequest -> RequestTenantTransferResponse) => tenants::request;
        accept_tenant_transfer(AcceptTenantTransferRequest -> AcceptTenantTransferResponse) => tenants::accept;
        reject_tenant_transfer(RejectTenantTransferRequest -> RejectTenantTransferResponse) => tenants::reject;
        cancel_tenant_transfer(CancelTenantTransferRequest -> CancelTenantTransferResponse) => tenants::cancel;
        get_tenant_transfer(GetTenantTransferRequest -> GetTenantTransferResponse) => tenants::get;
        list_tenant_transfers(ListTenantTransfersRequest -> ListTenantTransfersResponse) => tenants::list;
    }
}
