//! Account lifecycle: CancelAccount and ReactivateAccount.

use crate::{
    auth::Caller,
    error::{Error, Result},
    grpc::Ctx,
    proto,
};

/// CancelAccount.
pub async fn cancel_account(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::CancelAccountRequest,
) -> Result<proto::CancelAccountResponse> {
    Err(Error::Unimplemented("CancelAccount"))
}

/// ReactivateAccount.
pub async fn reactivate_account(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::ReactivateAccountRequest,
) -> Result<proto::ReactivateAccountResponse> {
    Err(Error::Unimplemented("ReactivateAccount"))
}
