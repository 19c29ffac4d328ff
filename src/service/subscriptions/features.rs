//! Feature flags: SetFeatureFlag and ClearFeatureFlag (operators), per-organization
//! overrides over the plan's default flags.
//!
//! Overrides live in `organizations.feature_overrides` (JSON object flag → enabled) and
//! survive plan changes: the effective flags are always the current plan's defaults,
//! plus the overrides that add a flag, minus those that remove one. Setting a flag to
//! the override it already has, or clearing a flag without override, changes nothing
//! (no new version, no audit entry).

use sea_orm::ActiveValue::Set;
use serde_json::json;

use crate::{
    auth::{Caller, OrgAccess},
    domain::{
        ids::{self, IdKind},
        plans::{self, Overrides},
    },
    error::{Error, Result},
    grpc::Ctx,
    proto,
    service::{audit, orgs},
    storage::{audit::AuditRecord, entities::organizations},
};

/// Checks the flag name (after authorization).
fn check_flag(flag: &str) -> Result<()> {
    match plans::flag_problem(flag) {
        Some(problem) => Err(Error::invalid("flag", problem)),
        None => Ok(()),
    }
}

/// Applies `change` to the organization's overrides under its row lock; writes, bumps
/// the version and audits only when the overrides change. Returns the effective flags.
async fn update_overrides(
    ctx: &Ctx,
    caller: &Caller,
    access: &OrgAccess,
    action: &'static str,
    flag: &str,
    change: impl FnOnce(&mut Overrides),
) -> Result<Vec<String>> {
    let catalogue = &ctx.settings.billing.catalogue;
    let tx = ctx.store.write().await?;
    let org = orgs::lock_live(&tx, access.org()).await?;
    let before = plans::parse_overrides(&org.feature_overrides);
    let mut after = before.clone();
    change(&mut after);
    let features_after = catalogue.features(&org.plan, &after);
    if after == before {
        return Ok(features_after);
    }
    let features_before = catalogue.features(&org.plan, &before);
    let stored = serde_json::to_string(&after)
        .map_err(|e| Error::Internal(format!("feature overrides as JSON: {e}")))?;
    let now = ctx.store.now();
    let row = organizations::ActiveModel {
        feature_overrides: Set(stored),
        update_time: Set(now),
        version: Set(org.version + 1),
        ..Default::default()
    };
    orgs::save_versioned(&tx, row, org.id, org.version).await?;
    audit(
        &tx,
        ctx,
        access.principal(),
        AuditRecord {
            organization_id: org.id,
            action,
            target_type: "organization",
            target_id: ids::encode(IdKind::Organization, org.id),
            request_id: &caller.trace_id,
            summary: json!({
                "flag": flag,
                "enabled": after.get(flag),
                "override_before": before.get(flag),
                "features_before": features_before,
                "features_after": features_after,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(features_after)
}

/// SetFeatureFlag: overrides one flag of the organization (true adds it, false removes
/// it, whatever the plan grants).
pub async fn set_feature_flag(
    ctx: Ctx,
    caller: Caller,
    req: proto::SetFeatureFlagRequest,
) -> Result<proto::SetFeatureFlagResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    check_flag(&req.flag)?;
    let features = update_overrides(&ctx, &caller, &access, "SetFeatureFlag", &req.flag, |o| {
        o.insert(req.flag.clone(), req.enabled);
    })
    .await?;
    Ok(proto::SetFeatureFlagResponse { features })
}

/// ClearFeatureFlag: removes the organization's override of one flag, so the plan's
/// default applies again; a flag without override is left as it is.
pub async fn clear_feature_flag(
    ctx: Ctx,
    caller: Caller,
    req: proto::ClearFeatureFlagRequest,
) -> Result<proto::ClearFeatureFlagResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    check_flag(&req.flag)?;
    let features = update_overrides(&ctx, &caller, &access, "ClearFeatureFlag", &req.flag, |o| {
        o.remove(&req.flag);
    })
    .await?;
    Ok(proto::ClearFeatureFlagResponse { features })
}
