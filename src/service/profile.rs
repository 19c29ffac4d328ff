//! Profile and addresses. (Being written.)

use crate::{auth::Caller, error::{Error, Result}, grpc::Ctx, proto};

/// GetOrganizationProfile.
pub async fn get_profile(_ctx: Ctx, _caller: Caller, _req: proto::GetOrganizationProfileRequest) -> Result<proto::GetOrganizationProfileResponse> { Err(Error::Unimplemented("profile")) }
/// UpdateOrganizationProfile.
pub async fn update_profile(_ctx: Ctx, _caller: Caller, _req: proto::UpdateOrganizationProfileRequest) -> Result<proto::UpdateOrganizationProfileResponse> { Err(Error::Unimplemented("profile")) }
/// UpdateOwnerProfile.
pub async fn update_owner(_ctx: Ctx, _caller: Caller, _req: proto::UpdateOwnerProfileRequest) -> Result<proto::UpdateOwnerProfileResponse> { Err(Error::Unimplemented("profile")) }
/// ListAddresses.
pub async fn list_addresses(_ctx: Ctx, _caller: Caller, _req: proto::ListAddressesRequest) -> Result<proto::ListAddressesResponse> { Err(Error::Unimplemented("profile")) }
/// CreateAddress.
pub async fn create_address(_ctx: Ctx, _caller: Caller, _req: proto::CreateAddressRequest) -> Result<proto::CreateAddressResponse> { Err(Error::Unimplemented("profile")) }
/// UpdateAddress.
pub async fn update_address(_ctx: Ctx, _caller: Caller, _req: proto::UpdateAddressRequest) -> Result<proto::UpdateAddressResponse> { Err(Error::Unimplemented("profile")) }
/// DeleteAddress.
pub async fn delete_address(_ctx: Ctx, _caller: Caller, _req: proto::DeleteAddressRequest) -> Result<proto::DeleteAddressResponse> { Err(Error::Unimplemented("profile")) }
