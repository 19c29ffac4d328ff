//! Who may see and decide a tenant transfer.
//!
//! The tenant's side is anyone `Caller::authorize` admits on the tenant (its admins, its
//! current agency's admin, operators). The agencies on the other side are not in the
//! tenant's scope, so a caller refused there is admitted when it is an admin whose home
//! organization is the transfer's target agency (or, for reading, its source agency,
//! which stays a party after the tenant left it). The transfer is looked up only after
//! that refusal, and any failure of the lookup answers the same PERMISSION_DENIED, so
//! ids cannot be probed; callers in the tenant's scope get INVALID_ARGUMENT or
//! NOT_FOUND for a bad or unknown transfer id.

use std::sync::Arc;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::{
    auth::{self, Caller, CallerRole, OrgRef, Principal, find_org},
    error::{Error, Result, Violations},
    grpc::Ctx,
    storage::entities::{organizations, tenant_transfers as transfers},
};

use super::parse_transfer_id;

/// Which agencies outside the tenant's scope are admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// The target agency only (accept, reject).
    Target,
    /// The target and the source agency (get).
    Parties,
}

/// A caller admitted to a transfer, with what was read to decide it.
pub(super) struct Admitted {
    /// The caller.
    pub principal: Arc<Principal>,
    /// The tenant, as read during authorization.
    pub tenant: organizations::Model,
    /// The transfer, as read during authorization.
    pub transfer: transfers::Model,
}

/// The transfer `id` of `tenant_id`, if any.
async fn load(ctx: &Ctx, tenant_id: Uuid, id: Uuid) -> Result<Option<transfers::Model>> {
    Ok(transfers::Entity::find_by_id(id)
        .filter(transfers::Column::TenantOrganizationId.eq(tenant_id))
        .one(ctx.store.db())
        .await?)
}

/// Whether `principal` is an admin of the organization `agency`.
fn admin_of(principal: &Principal, agency: Option<Uuid>) -> bool {
    matches!(
        principal.role,
        CallerRole::AgencyAdmin | CallerRole::ConfigAdmin
    ) && agency.is_some_and(|a| principal.org_id() == Some(a))
}

/// Authorizes the caller on the transfer `transfer_id` of the tenant named by
/// `organization_id`; `v` holds the request's other violations, reported once the
/// caller is admitted.
pub(super) async fn authorize(
    ctx: &Ctx,
    caller: &Caller,
    organization_id: &str,
    transfer_id: &str,
    mut v: Violations,
    admit: Admit,
) -> Result<Admitted> {
    match caller
        .authorize(&ctx.store, "organization_id", organization_id)
        .await
    {
        Ok(access) => {
            let id = v.check("transfer_id", parse_transfer_id(transfer_id));
            v.finish()?;
            let Some(id) = id else {
                return Err(Error::invalid("transfer_id", "is required"));
            };
            let tenant = access.org().clone();
            let transfer = load(ctx, tenant.id, id)
                .await?
                .ok_or_else(|| Error::not_found("tenant transfer", transfer_id))?;
            Ok(Admitted {
                principal: caller.principal()?.clone(),
                tenant,
                transfer,
            })
        }
        Err(Error::PermissionDenied(_)) => {
            let admitted = outside(ctx, caller, organization_id, transfer_id, admit)
                .await?
                .ok_or_else(auth::denied)?;
            v.finish()?;
            Ok(admitted)
        }
        Err(other) => Err(other),
    }
}

/// A caller outside the tenant's scope: admitted only as an admin of an agency on the
/// other side of an existing transfer.
async fn outside(
    ctx: &Ctx,
    caller: &Caller,
    organization_id: &str,
    transfer_id: &str,
    admit: Admit,
) -> Result<Option<Admitted>> {
    let principal = caller.principal()?.clone();
    if !matches!(
        principal.role,
        CallerRole::AgencyAdmin | CallerRole::ConfigAdmin
    ) {
        return Ok(None);
    }
    let (Ok(id), Some(reference)) = (
        parse_transfer_id(transfer_id),
        OrgRef::parse(organization_id),
    ) else {
        return Ok(None);
    };
    let Some(tenant) = find_org(&ctx.store, &reference).await? else {
        return Ok(None);
    };
    let Some(transfer) = load(ctx, tenant.id, id).await? else {
        return Ok(None);
    };
    let admitted = admin_of(&principal, transfer.target_agency_id)
        || (admit == Admit::Parties && admin_of(&principal, transfer.source_agency_id));
    Ok(admitted.then_some(Admitted {
        principal,
        tenant,
        transfer,
    }))
}

/// Refuses a decision (accept, reject) by anyone but the target agency's admin or a
/// root admin; a transfer to self-managed is decided by a root admin only.
pub(super) fn may_decide(admitted: &Admitted, verb: &str) -> Result<()> {
    let role = admitted.principal.role;
    let allowed = role == CallerRole::RootAdmin
        || (role == CallerRole::AgencyAdmin
            && admin_of(&admitted.principal, admitted.transfer.target_agency_id));
    if allowed {
        return Ok(());
    }
    Err(Error::PermissionDenied(
        if admitted.transfer.to_self_managed {
            format!("only a root admin may {verb} a transfer to self-managed")
        } else {
            format!("only the target agency may {verb} the transfer")
        },
    ))
}
