//! The move itself of an accepted transfer: the tenant's parent changes, after the
//! target agency is checked to still be a live, active agency with room for it.

use sea_orm::{ActiveValue::Set, IntoActiveModel};
use uuid::Uuid;

use crate::{
    domain::org::{OrgKind, OrgStatus},
    error::{Error, Result},
    grpc::Ctx,
    service::orgs::{check_agency_room, lock_org, save_versioned},
    storage::{
        Tx,
        entities::{organizations, tenant_transfers as transfers},
    },
};

use super::org_id;

/// Moves the (locked) tenant under the transfer's target, or makes it self-managed;
/// returns the tenant row as it is now.
pub(super) async fn move_tenant(
    ctx: &Ctx,
    tx: &Tx,
    tenant: &organizations::Model,
    row: &transfers::Model,
    now: i64,
) -> Result<organizations::Model> {
    if tenant.kind != OrgKind::Tenant.as_str() {
        return Err(Error::precondition(
            "NOT_A_TENANT",
            "only a tenant organization can be transferred between agencies",
        ));
    }
    match row.target_agency_id {
        Some(target) => {
            check_target(tx, target).await?;
            if tenant.parent_id == Some(target) {
                return Err(Error::precondition(
                    "SAME_AGENCY",
                    "the tenant already belongs to this agency",
                ));
            }
            check_agency_room(ctx, tx, target).await?;
        }
        None if tenant.parent_id.is_none() => {
            return Err(Error::precondition(
                "ALREADY_SELF_MANAGED",
                "the tenant is self-managed already",
            ));
        }
        None => {}
    }
    let mut change = tenant.clone().into_active_model();
    change.parent_id = Set(row.target_agency_id);
    change.update_time = Set(now);
    change.version = Set(tenant.version + 1);
    save_versioned(tx, change, tenant.id, tenant.version).await
}

/// The target must still be a live, active agency.
async fn check_target(tx: &Tx, target: Uuid) -> Result<()> {
    // Locked (after the tenant), so a concurrent deletion or deactivation of the agency
    // either sees the tenant arrive or is seen here; neither leaves the tenant under a
    // deleted agency.
    let agency = lock_org(tx, target)
        .await?
        .filter(|o| o.delete_time.is_none() && o.kind == OrgKind::Agency.as_str())
        .ok_or_else(|| {
            Error::precondition(
                "TARGET_AGENCY_UNAVAILABLE",
                "the target agency no longer exists",
            )
            .with("target_agency_id", org_id(target))
        })?;
    if agency.status != OrgStatus::Active.as_str() {
        return Err(Error::precondition(
            "TARGET_AGENCY_INACTIVE",
            "the target agency is not active; reactivate it first",
        )
        .with("target_agency_id", org_id(target)));
    }
    Ok(())
}
