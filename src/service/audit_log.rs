//! The audit log. (Being written.)

use crate::{auth::Caller, error::{Error, Result}, grpc::Ctx, proto};

/// ListAuditEvents.
pub async fn list(_ctx: Ctx, _caller: Caller, _req: proto::ListAuditEventsRequest) -> Result<proto::ListAuditEventsResponse> { Err(Error::Unimplemented("audit")) }
