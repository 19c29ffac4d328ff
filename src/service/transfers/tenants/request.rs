//! RequestTenantTransfer: opens a PENDING transfer of a tenant to another agency or to
//! self-managed.

use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

use crate::{
    auth::{Caller, OrgRef, find_org},
    domain::{
        events::{TenantTransferStatus, types},
        ids::{self, IdKind, new_id},
        org::OrgKind,
    },
    error::{Error, Result, Violations},
    grpc::Ctx,
    proto,
    service::{
        audit, audit_request_id, billing::require_request_id, commit, idempotency_key,
        orgs::lock_live, replayed, settle,
    },
    storage::{
        audit::AuditRecord,
        entities::{organizations, tenant_transfers as transfers},
    },
};

use super::{
    already_pending, emit, event_data, expire::expire_row, note_of, principal_name, to_proto,
};

/// RequestTenantTransfer. Who may ask: the tenant's side (its CONFIG_ADMIN, its agency's
/// admin, operators). The target must be a live agency: a missing organization or one
/// that is not an agency is NOT_FOUND for everyone but operators (who get
/// INVALID_ARGUMENT for a non-agency), so nothing beyond an agency's existence can be
/// learned. The target's status is not checked here (a deactivated agency cannot
/// accept until it is reactivated, and the request expires otherwise). A retry with the
/// same `request_id` answers the first result.
pub async fn request(
    ctx: Ctx,
    caller: Caller,
    req: proto::RequestTenantTransferRequest,
) -> Result<proto::RequestTenantTransferResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let target = req.target_agency_id.trim();
    let target_ref = match (target.is_empty(), req.to_self_managed) {
        (true, false) => {
            v.add(
                "target_agency_id",
                "is required unless to_self_managed is set",
            );
            None
        }
        (false, true) => {
            v.add(
                "target_agency_id",
                "must be empty when to_self_managed is set",
            );
            None
        }
        (true, true) => None,
        (false, false) => {
            let parsed = OrgRef::parse(target);
            if parsed.is_none() {
                v.add(
                    "target_agency_id",
                    "must be an organization id (org_…) or slug",
                );
            }
            parsed
        }
    };
    let note = note_of(&mut v, "note", &req.note);
    require_request_id(&mut v, &req.request_id);
    v.finish()?;
    if access.org().kind != OrgKind::Tenant.as_str() {
        return Err(Error::precondition(
            "NOT_A_TENANT",
            "only a tenant organization can be transferred between agencies",
        ));
    }
    // The target agency; `None` for self-managed.
    let target_id = match target_ref {
        Some(reference) => Some(resolve_target(&ctx, &caller, &reference, target).await?.id),
        None => None,
    };
    let principal = caller.principal()?.clone();
    let key = idempotency_key(&principal, "RequestTenantTransfer", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let tenant = lock_live(&tx, access.org()).await?;
        match target_id {
            Some(agency) if tenant.parent_id == Some(agency) => {
                return Err(Error::precondition(
                    "SAME_AGENCY",
                    "the tenant already belongs to this agency",
                ));
            }
            None if tenant.parent_id.is_none() => {
                return Err(Error::precondition(
                    "ALREADY_SELF_MANAGED",
                    "the tenant is self-managed already",
                ));
            }
            _ => {}
        }
        let now = ctx.store.now();
        let request_id = audit_request_id(&caller, key.as_ref());
        let pending = transfers::Entity::find()
            .filter(transfers::Column::TenantOrganizationId.eq(tenant.id))
            .filter(transfers::Column::Status.eq(TenantTransferStatus::Pending.as_str()))
            .one(&*tx)
            .await?;
        if let Some(pending) = pending {
            if pending.expire_time > now {
                return Err(already_pending(Some(pending.id)));
            }
            expire_row(&tx, &ctx, &tenant, &pending, now, request_id).await?;
        }
        let ttl = i64::try_from(ctx.settings.events.tenant_transfer_ttl.as_micros())
            .unwrap_or(i64::MAX / 4);
        let row = transfers::ActiveModel {
            id: Set(new_id()),
            tenant_organization_id: Set(tenant.id),
            source_agency_id: Set(tenant.parent_id),
            target_agency_id: Set(target_id),
            to_self_managed: Set(target_id.is_none()),
            status: Set(TenantTransferStatus::Pending.as_str().to_owned()),
            note: Set(note.clone()),
            requested_by: Set(principal_name(principal.author())),
            requester_organization_id: Set(principal.org_id()),
            decided_by: Set(String::new()),
            decision_note: Set(String::new()),
            expire_time: Set(now.saturating_add(ttl)),
            create_time: Set(now),
            decide_time: Set(None),
            update_time: Set(now),
            request_id: Set(request_id.chars().take(128).collect()),
            version: Set(1),
        }
        .insert(&*tx)
        .await
        .map_err(|e| {
            if crate::error::is_unique_violation(&e) {
                already_pending(None)
            } else {
                e.into()
            }
        })?;
        let transfer_id = ids::encode(IdKind::TenantTransfer, row.id);
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: tenant.id,
                action: "RequestTenantTransfer",
                target_type: "tenant_transfer",
                target_id: transfer_id,
                request_id,
                summary: json!({
                    "status": row.status,
                    "source_agency_id": row.source_agency_id.map(|a| ids::encode(IdKind::Organization, a)),
                    "target_agency_id": row.target_agency_id.map(|a| ids::encode(IdKind::Organization, a)),
                    "to_self_managed": row.to_self_managed,
                    "note": row.note,
                    "expire_time": row.expire_time,
                }),
            },
        )
        .await?;
        let data = event_data(&row, &tenant);
        emit(&tx, now, &tenant, target_id, types::TRANSFER_REQUESTED, request_id, data).await?;
        let response = proto::RequestTenantTransferResponse {
            transfer: Some(to_proto(&row, now)),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}

/// The target agency named by `reference` (see [`request`] for what is revealed).
async fn resolve_target(
    ctx: &Ctx,
    caller: &Caller,
    reference: &OrgRef,
    text: &str,
) -> Result<organizations::Model> {
    match find_org(&ctx.store, reference).await? {
        Some(org) if org.kind == OrgKind::Agency.as_str() => Ok(org),
        Some(_) if caller.is_operator() => Err(Error::invalid(
            "target_agency_id",
            "must name an agency organization",
        )),
        _ => Err(Error::not_found("agency", text)),
    }
}
