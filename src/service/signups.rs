//! Pre-approved signups. (Being written.)

use sea_orm::ConnectionTrait;

use crate::{auth::Caller, error::{Error, Result}, grpc::Ctx, proto, storage::{Tx, entities::pre_approved_signups}};

/// CreatePreApprovedSignup.
pub async fn create(_ctx: Ctx, _caller: Caller, _req: proto::CreatePreApprovedSignupRequest) -> Result<proto::CreatePreApprovedSignupResponse> { Err(Error::Unimplemented("signups")) }
/// DeletePreApprovedSignup.
pub async fn delete(_ctx: Ctx, _caller: Caller, _req: proto::DeletePreApprovedSignupRequest) -> Result<proto::DeletePreApprovedSignupResponse> { Err(Error::Unimplemented("signups")) }
/// ListPreApprovedSignups.
pub async fn list(_ctx: Ctx, _caller: Caller, _req: proto::ListPreApprovedSignupsRequest) -> Result<proto::ListPreApprovedSignupsResponse> { Err(Error::Unimplemented("signups")) }
/// ValidateSignup.
pub async fn validate(_ctx: Ctx, _caller: Caller, _req: proto::ValidateSignupRequest) -> Result<proto::ValidateSignupResponse> { Err(Error::Unimplemented("signups")) }
/// The live pre-approval matching `email` (email-type) or `code` (code-type) that is not expired and has uses left.
pub async fn find_valid<C: ConnectionTrait>(_db: &C, _email: &str, _code: &str, _now: i64) -> Result<Option<pre_approved_signups::Model>> { Ok(None) }
/// Consumes one use of `approval` with a conditional update; fails if no use is left.
pub async fn consume(_tx: &Tx, _approval: &pre_approved_signups::Model) -> Result<()> { Ok(()) }
