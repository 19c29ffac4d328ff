//! Activation: SetOrganizationActive, ToggleOrganizationActive, DeactivateOrganization
//! and ReactivateOrganization, which suspend and restore the organization's agents.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, ExprTrait, IntoActiveModel, QueryFilter,
    sea_query::Expr,
};
use serde_json::json;

use crate::{
    auth::{Caller, OrgAccess},
    domain::events::{EmailKind, types},
    domain::{
        ids::{self, IdKind},
        org::{AgentStatus, OrgKind, OrgStatus},
        text,
    },
    error::{Error, Result, Violations},
    events::{email, outbox},
    grpc::{Ctx, convert},
    proto,
    service::{agent_count, audit},
    storage::{
        audit::AuditRecord,
        entities::{agents, organizations},
    },
};

use super::{lock_live, save_versioned};

/// Activates or deactivates an organization; returns the row and the agents changed.
async fn set_status(
    ctx: &Ctx,
    caller: &Caller,
    access: &OrgAccess,
    active: bool,
    reason: &str,
    notify_owner: bool,
    action: &'static str,
) -> Result<(organizations::Model, u64)> {
    if access.org().kind == OrgKind::Root.as_str() {
        return Err(Error::precondition(
            "ROOT_ORGANIZATION",
            "the root organization cannot be deactivated",
        ));
    }
    let tx = ctx.store.write().await?;
    // Decided on the row as it is under the lock, so concurrent switches apply one after
    // the other instead of failing on each other's version.
    let org = lock_live(&tx, access.org()).await?;
    let status: OrgStatus = org.status.parse().unwrap_or(OrgStatus::Inactive);
    if status == OrgStatus::Cancelled {
        return Err(Error::precondition(
            "ACCOUNT_CANCELLED",
            "the account is cancelled; reactivate it with ReactivateAccount",
        ));
    }
    let target = if active {
        OrgStatus::Active
    } else {
        OrgStatus::Inactive
    };
    if status == target {
        return Ok((org, 0));
    }
    let now = ctx.store.now();
    let (updated, changed) = write_status(&tx, &org, target, reason, None, now).await?;
    let (event_type, agents_key) = if active {
        (types::ORGANIZATION_REACTIVATED, "restored_agents")
    } else {
        (types::ORGANIZATION_DEACTIVATED, "suspended_agents")
    };
    let event = outbox::emit(
        &tx,
        now,
        &updated,
        event_type,
        &caller.trace_id,
        json!({
            "organization_id": ids::encode(IdKind::Organization, org.id),
            "status": target.as_str(),
            "reason": reason,
            "notify_owner": notify_owner,
            agents_key: changed,
        }),
    )
    .await?;
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
                "status": target.as_str(),
                "reason": reason,
                "notify_owner": notify_owner,
                agents_key: changed,
            }),
        },
    )
    .await?;
    if !active && notify_owner {
        queue_deactivation_notice(&tx, now, &updated, event, reason).await?;
    }
    tx.commit().await?;
    Ok((updated, changed))
}

/// Writes an organization's status (the caller holds its row lock): ACTIVE clears the
/// deactivation reason and restores the agents its suspension marked; INACTIVE or
/// CANCELLED keeps `reason` and suspends the active agents, marking them so that
/// reactivation restores exactly those and leaves agents suspended for other reasons
/// alone. `data_deletion_time` is the scheduled deletion kept with the new status (only
/// a cancelled account has one). Returns the saved row and the number of agents changed.
pub(crate) async fn write_status(
    tx: &crate::storage::Tx,
    org: &organizations::Model,
    target: OrgStatus,
    reason: &str,
    data_deletion_time: Option<i64>,
    now: i64,
) -> Result<(organizations::Model, u64)> {
    let active = target == OrgStatus::Active;
    let mut row = org.clone().into_active_model();
    row.status = Set(target.as_str().to_owned());
    row.deactivation_reason = Set(if active {
        String::new()
    } else {
        reason.to_owned()
    });
    row.data_deletion_time = Set(data_deletion_time);
    row.update_time = Set(now);
    row.version = Set(org.version + 1);
    let updated = save_versioned(tx, row, org.id, org.version).await?;
    let changed = if active {
        restore_agents(tx, org.id, now).await?
    } else {
        suspend_agents(tx, org.id, now).await?
    };
    Ok((updated, changed))
}

/// Tells the owner (or, before an owner exists, the contact) that the organization was
/// deactivated. Nobody to tell: nothing is queued.
async fn queue_deactivation_notice(
    tx: &crate::storage::Tx,
    now: i64,
    org: &organizations::Model,
    event: uuid::Uuid,
    reason: &str,
) -> Result<()> {
    let to = [&org.owner_email, &org.contact_email]
        .into_iter()
        .find(|e| !e.is_empty());
    let Some(to) = to else {
        return Ok(());
    };
    let why = if reason.is_empty() {
        String::new()
    } else {
        format!("\n\nReason: {reason}")
    };
    email::queue(
        tx,
        now,
        org,
        Some(event),
        email::Email {
            kind: EmailKind::DeactivationNotice,
            to: to.clone(),
            subject: format!("{} has been deactivated", org.name),
            body: format!(
                "Hello,\n\nThe organization {} ({}) has been deactivated: its agents are \
                 suspended and API access is refused until it is reactivated.{why}\n",
                org.name, org.slug
            ),
        },
    )
    .await?;
    Ok(())
}

async fn org_response(ctx: &Ctx, org: &organizations::Model) -> Result<proto::Organization> {
    Ok(convert::organization(
        &ctx.settings.billing.catalogue,
        org,
        agent_count(ctx.store.db(), org.id).await?,
    ))
}

/// Longest reason of a status change (deactivation, cancellation, …).
pub(crate) const MAX_REASON_LEN: usize = 500;

/// The request's `reason`, trimmed: at most [`MAX_REASON_LEN`] characters without
/// control characters, and not empty when `required`; problems go to `v`.
pub(crate) fn reason_of(v: &mut Violations, reason: &str, required: bool) -> String {
    let trimmed = reason.trim();
    if required && trimmed.is_empty() {
        v.add("reason", "must not be empty");
    }
    v.check(
        "reason",
        text::bounded(trimmed, MAX_REASON_LEN).map(str::to_owned),
    )
    .unwrap_or_default()
}

/// SetOrganizationActive.
pub async fn set_active(
    ctx: Ctx,
    caller: Caller,
    req: proto::SetOrganizationActiveRequest,
) -> Result<proto::SetOrganizationActiveResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let reason = reason_of(&mut v, &req.reason, false);
    v.finish()?;
    let (org, _) = set_status(
        &ctx,
        &caller,
        &access,
        req.active,
        &reason,
        false,
        "SetOrganizationActive",
    )
    .await?;
    Ok(proto::SetOrganizationActiveResponse {
        organization: Some(org_response(&ctx, &org).await?),
    })
}

/// ToggleOrganizationActive.
pub async fn toggle_active(
    ctx: Ctx,
    caller: Caller,
    req: proto::ToggleOrganizationActiveRequest,
) -> Result<proto::ToggleOrganizationActiveResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let active = access.org().status != OrgStatus::Active.as_str();
    let (org, _) = set_status(
        &ctx,
        &caller,
        &access,
        active,
        "",
        false,
        "ToggleOrganizationActive",
    )
    .await?;
    Ok(proto::ToggleOrganizationActiveResponse {
        organization: Some(org_response(&ctx, &org).await?),
    })
}

/// DeactivateOrganization.
pub async fn deactivate(
    ctx: Ctx,
    caller: Caller,
    req: proto::DeactivateOrganizationRequest,
) -> Result<proto::DeactivateOrganizationResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let reason = reason_of(&mut v, &req.reason, true);
    v.finish()?;
    let (org, suspended) = set_status(
        &ctx,
        &caller,
        &access,
        false,
        &reason,
        req.notify_owner,
        "DeactivateOrganization",
    )
    .await?;
    Ok(proto::DeactivateOrganizationResponse {
        organization: Some(org_response(&ctx, &org).await?),
        suspended_agents: i32::try_from(suspended).unwrap_or(i32::MAX),
    })
}

/// ReactivateOrganization.
pub async fn reactivate(
    ctx: Ctx,
    caller: Caller,
    req: proto::ReactivateOrganizationRequest,
) -> Result<proto::ReactivateOrganizationResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let (org, restored) = set_status(
        &ctx,
        &caller,
        &access,
        true,
        "",
        false,
        "ReactivateOrganization",
    )
    .await?;
    Ok(proto::ReactivateOrganizationResponse {
        organization: Some(org_response(&ctx, &org).await?),
        restored_agents: i32::try_from(restored).unwrap_or(i32::MAX),
    })
}

/// Suspends the organization's active agents, marking them as suspended by their
/// organization so reactivation restores exactly those (as DeactivateOrganization does).
pub(crate) async fn suspend_agents(
    tx: &crate::storage::Tx,
    org_id: uuid::Uuid,
    now: i64,
) -> Result<u64> {
    set_org_suspension(tx, org_id, true, now).await
}

/// Restores the agents suspended by their organization (as ReactivateOrganization does);
/// agents suspended for other reasons stay suspended.
pub(crate) async fn restore_agents(
    tx: &crate::storage::Tx,
    org_id: uuid::Uuid,
    now: i64,
) -> Result<u64> {
    set_org_suspension(tx, org_id, false, now).await
}

/// Suspends the organization's active agents (`suspend`) or reactivates the ones its
/// suspension marked; the number of agents changed.
async fn set_org_suspension(
    tx: &crate::storage::Tx,
    org_id: uuid::Uuid,
    suspend: bool,
    now: i64,
) -> Result<u64> {
    let (status, affected) = if suspend {
        (
            AgentStatus::Suspended,
            agents::Column::Status.eq(AgentStatus::Active.as_str()),
        )
    } else {
        (AgentStatus::Active, agents::Column::SuspendedByOrg.eq(true))
    };
    Ok(agents::Entity::update_many()
        .col_expr(agents::Column::Status, Expr::value(status.as_str()))
        .col_expr(agents::Column::SuspendedByOrg, Expr::value(suspend))
        .col_expr(agents::Column::UpdateTime, Expr::value(now))
        .col_expr(
            agents::Column::Version,
            Expr::col(agents::Column::Version).add(1),
        )
        .filter(agents::Column::OrganizationId.eq(org_id))
        .filter(affected)
        .exec(&**tx)
        .await?
        .rows_affected)
}
