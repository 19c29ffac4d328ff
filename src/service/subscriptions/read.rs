//! GetSubscription: the subscription, plan, limits, usage and effective features (the
//! shape of seed 003's "current plan").

use crate::{
    auth::Caller,
    error::Result,
    grpc::{Ctx, convert::effective_features},
    proto,
    service::billing::quotas::effective_limits,
};

use super::{current, limits_proto, plan_proto, to_proto, usage};

/// GetSubscription: an organization without a live subscription is on the free plan and
/// gets no `subscription`. `limits` are the limits in force (the plan's, capped by the
/// organization's own agent limit); `usage` counts what those limits measure.
pub async fn get_subscription(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetSubscriptionRequest,
) -> Result<proto::GetSubscriptionResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org = access.org();
    let db = ctx.store.db();
    let catalogue = &ctx.settings.billing.catalogue;
    let plan = catalogue.plan_or_free(&org.plan);
    let subscription = current(db, org.id).await?;
    let currency = org.currency.parse().ok();
    Ok(proto::GetSubscriptionResponse {
        subscription: subscription.as_ref().map(to_proto),
        plan: Some(plan_proto(plan, currency)),
        limits: Some(limits_proto(&effective_limits(catalogue, org))),
        usage: Some(usage(db, org, ctx.store.now()).await?),
        effective_features: effective_features(catalogue, org),
    })
}
