//! Add-on services: GetServicePricing, PurchaseService, CompleteServicePurchase, ListPurchasedServices.

use crate::{
    auth::Caller,
    error::{Error, Result},
    grpc::Ctx,
    proto,
};

/// GetServicePricing.
pub async fn get_service_pricing(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::GetServicePricingRequest,
) -> Result<proto::GetServicePricingResponse> {
    Err(Error::Unimplemented("GetServicePricing"))
}

/// PurchaseService.
pub async fn purchase_service(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::PurchaseServiceRequest,
) -> Result<proto::PurchaseServiceResponse> {
    Err(Error::Unimplemented("PurchaseService"))
}

/// CompleteServicePurchase.
pub async fn complete_service_purchase(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::CompleteServicePurchaseRequest,
) -> Result<proto::CompleteServicePurchaseResponse> {
    Err(Error::Unimplemented("CompleteServicePurchase"))
}

/// ListPurchasedServices.
pub async fn list_purchased_services(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::ListPurchasedServicesRequest,
) -> Result<proto::ListPurchasedServicesResponse> {
    Err(Error::Unimplemented("ListPurchasedServices"))
}
