//! Service agreements: GetAgreement, AcceptAgreement, ListAgreements, RevokeAgreement.

use crate::{
    auth::Caller,
    error::{Error, Result},
    grpc::Ctx,
    proto,
};

/// GetAgreement.
pub async fn get_agreement(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::GetAgreementRequest,
) -> Result<proto::GetAgreementResponse> {
    Err(Error::Unimplemented("GetAgreement"))
}

/// AcceptAgreement.
pub async fn accept_agreement(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::AcceptAgreementRequest,
) -> Result<proto::AcceptAgreementResponse> {
    Err(Error::Unimplemented("AcceptAgreement"))
}

/// ListAgreements.
pub async fn list_agreements(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::ListAgreementsRequest,
) -> Result<proto::ListAgreementsResponse> {
    Err(Error::Unimplemented("ListAgreements"))
}

/// RevokeAgreement.
pub async fn revoke_agreement(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::RevokeAgreementRequest,
) -> Result<proto::RevokeAgreementResponse> {
    Err(Error::Unimplemented("RevokeAgreement"))
}
