//! AcceptTenantTransfer, RejectTenantTransfer and CancelTenantTransfer: the ends of a
//! PENDING transfer, each one transaction under the tenant's row lock.

use sea_orm::EntityTrait;
use serde_json::json;

use crate::{
    auth::Caller,
    domain::{
        events::{TenantTransferStatus, types},
        ids::{self, IdKind},
    },
    error::{Error, Result, Violations},
    grpc::Ctx,
    proto,
    service::{
        audit, check_etag,
        orgs::{lock_live, lock_slug_allocation},
    },
    storage::{audit::AuditRecord, entities::tenant_transfers as transfers},
};

use super::{
    access::{self, Admit, Admitted},
    emit, event_data, expire, expired, moving, not_pending, note_of, org_id, principal_name,
    to_proto,
};

/// AcceptTenantTransfer: the target agency's AGENCY_ADMIN or a root admin (a root admin
/// only for a transfer to self-managed). Under the tenant's row lock (after the
/// organization-creation lock, which serializes the target's tenant count with
/// creates): the transfer must still be PENDING (else `TRANSFER_NOT_PENDING`), match
/// the etag, and not be past its expiry (else it is written EXPIRED, committed, and
/// the call fails `TRANSFER_EXPIRED`); the target must still be a live, active agency
/// with room for one more tenant under its plan (`PLAN_LIMIT_REACHED`). Then the
/// tenant's parent changes and nothing else of it does.
pub async fn accept(
    ctx: Ctx,
    caller: Caller,
    req: proto::AcceptTenantTransferRequest,
) -> Result<proto::AcceptTenantTransferResponse> {
    let mut v = Violations::new();
    let note = note_of(&mut v, "note", &req.note);
    let admitted = access::authorize(
        &ctx,
        &caller,
        &req.organization_id,
        &req.transfer_id,
        v,
        Admit::Target,
    )
    .await?;
    access::may_decide(&admitted, "accept")?;
    let transfer = conclude(
        &ctx,
        &caller,
        &admitted,
        TenantTransferStatus::Accepted,
        note,
        &req.etag,
    )
    .await?;
    Ok(proto::AcceptTenantTransferResponse {
        transfer: Some(transfer),
    })
}

/// RejectTenantTransfer: the same callers as accept; the tenant stays where it is.
pub async fn reject(
    ctx: Ctx,
    caller: Caller,
    req: proto::RejectTenantTransferRequest,
) -> Result<proto::RejectTenantTransferResponse> {
    let mut v = Violations::new();
    let reason = note_of(&mut v, "reason", &req.reason);
    let admitted = access::authorize(
        &ctx,
        &caller,
        &req.organization_id,
        &req.transfer_id,
        v,
        Admit::Target,
    )
    .await?;
    access::may_decide(&admitted, "reject")?;
    let transfer = conclude(
        &ctx,
        &caller,
        &admitted,
        TenantTransferStatus::Rejected,
        reason,
        &req.etag,
    )
    .await?;
    Ok(proto::RejectTenantTransferResponse {
        transfer: Some(transfer),
    })
}

/// CancelTenantTransfer: the requester's side, i.e. whoever may act on the tenant (its
/// admins, its agency's admin, operators). The target agency rejects instead.
pub async fn cancel(
    ctx: Ctx,
    caller: Caller,
    req: proto::CancelTenantTransferRequest,
) -> Result<proto::CancelTenantTransferResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let reason = note_of(&mut v, "reason", &req.reason);
    let id = v.check("transfer_id", super::parse_transfer_id(&req.transfer_id));
    v.finish()?;
    let id = id.ok_or_else(|| Error::invalid("transfer_id", "is required"))?;
    let transfer = transfers::Entity::find_by_id(id)
        .one(ctx.store.db())
        .await?
        .filter(|t| t.tenant_organization_id == access.org().id)
        .ok_or_else(|| Error::not_found("tenant transfer", &req.transfer_id))?;
    let admitted = Admitted {
        principal: caller.principal()?.clone(),
        tenant: access.org().clone(),
        transfer,
    };
    let transfer = conclude(
        &ctx,
        &caller,
        &admitted,
        TenantTransferStatus::Canceled,
        reason,
        &req.etag,
    )
    .await?;
    Ok(proto::CancelTenantTransferResponse {
        transfer: Some(transfer),
    })
}

/// Ends the admitted transfer with `outcome` in one transaction (see [`accept`]).
async fn conclude(
    ctx: &Ctx,
    caller: &Caller,
    admitted: &Admitted,
    outcome: TenantTransferStatus,
    note: String,
    etag: &str,
) -> Result<proto::TenantTransfer> {
    let accepting = outcome == TenantTransferStatus::Accepted;
    let tx = ctx.store.write().await?;
    if accepting && admitted.transfer.target_agency_id.is_some() {
        lock_slug_allocation(&tx).await?;
    }
    let tenant = lock_live(&tx, &admitted.tenant).await?;
    let row = transfers::Entity::find_by_id(admitted.transfer.id)
        .one(&*tx)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                "tenant transfer",
                &ids::encode(IdKind::TenantTransfer, admitted.transfer.id),
            )
        })?;
    if row.status != TenantTransferStatus::Pending.as_str() {
        return Err(not_pending(&row));
    }
    check_etag(etag, row.version)?;
    let now = ctx.store.now();
    let request_id = caller.trace_id.as_str();
    if row.expire_time <= now {
        expire::expire_row(&tx, ctx, &tenant, &row, now, request_id).await?;
        tx.commit().await?;
        return Err(expired(&row));
    }
    let (tenant, former_agency) = if accepting {
        (
            moving::move_tenant(ctx, &tx, &tenant, &row, now).await?,
            tenant.parent_id,
        )
    } else {
        (tenant, None)
    };
    let principal = &admitted.principal;
    let decided_by = principal_name(principal.author());
    let done = expire::finish(&tx, &row, outcome, decided_by, note, now, now)
        .await?
        .ok_or_else(|| not_pending(&row))?;
    let (action, event_type, other_agency) = match outcome {
        TenantTransferStatus::Accepted => (
            "AcceptTenantTransfer",
            types::TRANSFER_ACCEPTED,
            former_agency,
        ),
        TenantTransferStatus::Rejected => (
            "RejectTenantTransfer",
            types::TRANSFER_REJECTED,
            done.target_agency_id,
        ),
        _ => (
            "CancelTenantTransfer",
            types::TRANSFER_CANCELED,
            done.target_agency_id,
        ),
    };
    audit(
        &tx,
        ctx,
        principal,
        AuditRecord {
            organization_id: tenant.id,
            action,
            target_type: "tenant_transfer",
            target_id: ids::encode(IdKind::TenantTransfer, done.id),
            request_id,
            summary: json!({
                "status": done.status,
                "decision_note": done.decision_note,
                "source_agency_id": done.source_agency_id.map(org_id),
                "target_agency_id": done.target_agency_id.map(org_id),
                "to_self_managed": done.to_self_managed,
                "parent_id": tenant.parent_id.map(org_id),
            }),
        },
    )
    .await?;
    let data = event_data(&done, &tenant);
    emit(
        &tx,
        now,
        &tenant,
        other_agency,
        event_type,
        request_id,
        data,
    )
    .await?;
    tx.commit().await?;
    Ok(to_proto(&done, now))
}
