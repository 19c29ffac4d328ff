//! The renewal cycle: RunBillingCycle, the in-server interval job and `tenantry billing-cycle`.

use crate::{
    auth::Caller,
    error::{Error, Result},
    grpc::Ctx,
    proto,
};

/// RunBillingCycle.
pub async fn run_billing_cycle(
    _ctx: Ctx,
    _caller: Caller,
    _req: proto::RunBillingCycleRequest,
) -> Result<proto::RunBillingCycleResponse> {
    Err(Error::Unimplemented("RunBillingCycle"))
}
