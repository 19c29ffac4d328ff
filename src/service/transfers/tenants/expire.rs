//! Expiry of undecided transfers, and the one conditional write that ends a PENDING
//! transfer (shared with accept, reject and cancel).

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    domain::{
        events::{TenantTransferStatus, types},
        ids::{self, IdKind},
    },
    error::Result,
    grpc::Ctx,
    service::{audit, billing::credits::purchase::system_principal, orgs},
    storage::{
        Tx,
        audit::{AuditRecord, record as record_audit},
        entities::{organizations, tenant_transfers as transfers},
    },
};

use super::{emit, event_data, rfc3339};

/// The internal principal expiries are recorded under.
const EXPIRY_PRINCIPAL: &str = "tenant-transfer-expiry";

/// The internal principal cancellations by an organization's deletion are recorded
/// under.
const DELETION_PRINCIPAL: &str = "organization-deletion";

/// The decision note of a transfer canceled because a party was deleted.
const DELETED_NOTE: &str = "the organization was deleted";

/// Transfers expired per transaction round of [`expire_due`].
const BATCH: u64 = 200;

/// Ends a PENDING transfer with `status` if it is still PENDING at `row.version`
/// (`WHERE status = 'PENDING' AND version = v`); `None` when another change won.
pub(super) async fn finish(
    tx: &Tx,
    row: &transfers::Model,
    status: TenantTransferStatus,
    decided_by: String,
    decision_note: String,
    decide_time: i64,
    now: i64,
) -> Result<Option<transfers::Model>> {
    let mut change = row.clone().into_active_model();
    change.status = Set(status.as_str().to_owned());
    change.decided_by = Set(decided_by);
    change.decision_note = Set(decision_note);
    change.decide_time = Set(Some(decide_time));
    change.update_time = Set(now);
    change.version = Set(row.version + 1);
    let result = transfers::Entity::update_many()
        .set(change)
        .filter(transfers::Column::Id.eq(row.id))
        .filter(transfers::Column::Status.eq(TenantTransferStatus::Pending.as_str()))
        .filter(transfers::Column::Version.eq(row.version))
        .exec(&**tx)
        .await?;
    if result.rows_affected != 1 {
        return Ok(None);
    }
    Ok(transfers::Entity::find_by_id(row.id).one(&**tx).await?)
}

/// Writes a PENDING transfer past its expiry as EXPIRED (decided at its expire time,
/// by nobody), audited under the internal expiry principal with the triggering call's
/// `request_id`, and emits `transfer.expired` for the tenant and the target agency.
/// The caller holds the tenant's row lock. `None` when it was no longer pending.
pub(super) async fn expire_row(
    tx: &Tx,
    ctx: &Ctx,
    tenant: &organizations::Model,
    row: &transfers::Model,
    now: i64,
    request_id: &str,
) -> Result<Option<transfers::Model>> {
    let decide_time = row.expire_time.min(now);
    let Some(expired) = finish(
        tx,
        row,
        TenantTransferStatus::Expired,
        String::new(),
        String::new(),
        decide_time,
        now,
    )
    .await?
    else {
        return Ok(None);
    };
    let principal = system_principal(EXPIRY_PRINCIPAL);
    audit(
        tx,
        ctx,
        &principal,
        AuditRecord {
            organization_id: tenant.id,
            action: "ExpireTenantTransfer",
            target_type: "tenant_transfer",
            target_id: ids::encode(IdKind::TenantTransfer, row.id),
            request_id,
            summary: json!({
                "status": expired.status,
                "expire_time": rfc3339(expired.expire_time),
            }),
        },
    )
    .await?;
    let data = event_data(&expired, tenant);
    emit(
        tx,
        now,
        tenant,
        expired.target_agency_id,
        types::TRANSFER_EXPIRED,
        request_id,
        data,
    )
    .await?;
    Ok(Some(expired))
}

/// Expires every PENDING transfer whose `expire_time` has passed, one short transaction
/// each (under the tenant's row lock, re-checked there, so a concurrent decision wins
/// or loses cleanly). Run by the dispatcher every round. A failure on one transfer is
/// logged and the others go on; the error is returned only when nothing expired.
pub async fn expire_due(ctx: &Ctx) -> Result<usize> {
    let now = ctx.store.now();
    let due: Vec<(Uuid, Uuid)> = transfers::Entity::find()
        .select_only()
        .column(transfers::Column::Id)
        .column(transfers::Column::TenantOrganizationId)
        .filter(transfers::Column::Status.eq(TenantTransferStatus::Pending.as_str()))
        .filter(transfers::Column::ExpireTime.lte(now))
        .order_by_asc(transfers::Column::ExpireTime)
        .limit(BATCH)
        .into_tuple()
        .all(ctx.store.db())
        .await?;
    let mut expired = 0;
    let mut first_error = None;
    for (id, tenant_id) in due {
        match expire_one(ctx, id, tenant_id).await {
            Ok(true) => expired += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(transfer = %id, %error, "expiring a tenant transfer failed");
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) if expired == 0 => Err(error),
        _ => Ok(expired),
    }
}

/// Expires one transfer of `tenant_id` if it is still PENDING and due under the
/// tenant's row lock.
async fn expire_one(ctx: &Ctx, id: Uuid, tenant_id: Uuid) -> Result<bool> {
    let tx = ctx.store.write().await?;
    let Some(tenant) = orgs::lock_org(&tx, tenant_id).await? else {
        return Ok(false);
    };
    // Read under the lock: a decision may have committed since the sweep's query.
    let Some(row) = transfers::Entity::find_by_id(id).one(&*tx).await? else {
        return Ok(false);
    };
    let now = ctx.store.now();
    if row.status != TenantTransferStatus::Pending.as_str() || row.expire_time > now {
        return Ok(false);
    }
    let request_id = format!(
        "tenant-transfer-expiry-{}",
        ids::encode(IdKind::TenantTransfer, id)
    );
    let done = expire_row(&tx, ctx, &tenant, &row, now, &request_id)
        .await?
        .is_some();
    tx.commit().await?;
    Ok(done)
}

/// Cancels the PENDING transfers an organization being deleted takes part in (as the
/// tenant or as the target agency): each ends CANCELED through [`finish`] with the
/// decision note "the organization was deleted", is audited in the tenant under the
/// internal principal `system:organization-deletion` with the deletion's
/// `request_id`, and emits `transfer.canceled` for the tenant and the target agency.
/// The caller holds the organization's row lock (not the other tenants'; the
/// conditional write decides a race with a concurrent decision). Returns how many
/// were canceled.
pub async fn cancel_pending_of(
    tx: &Tx,
    org: &organizations::Model,
    now: i64,
    request_id: &str,
) -> Result<u64> {
    let pending = transfers::Entity::find()
        .filter(transfers::Column::Status.eq(TenantTransferStatus::Pending.as_str()))
        .filter(
            Condition::any()
                .add(transfers::Column::TenantOrganizationId.eq(org.id))
                .add(transfers::Column::TargetAgencyId.eq(org.id)),
        )
        .order_by_asc(transfers::Column::Id)
        .all(&**tx)
        .await?;
    let principal = system_principal(DELETION_PRINCIPAL);
    let mut canceled = 0;
    for row in pending {
        let tenant = if row.tenant_organization_id == org.id {
            Some(org.clone())
        } else {
            organizations::Entity::find_by_id(row.tenant_organization_id)
                .one(&**tx)
                .await?
        };
        let Some(tenant) = tenant else {
            continue;
        };
        let Some(done) = finish(
            tx,
            &row,
            TenantTransferStatus::Canceled,
            String::new(),
            DELETED_NOTE.to_owned(),
            now,
            now,
        )
        .await?
        else {
            continue;
        };
        canceled += 1;
        record_audit(
            tx,
            &principal,
            now,
            AuditRecord {
                organization_id: tenant.id,
                action: "CancelTenantTransfer",
                target_type: "tenant_transfer",
                target_id: ids::encode(IdKind::TenantTransfer, done.id),
                request_id,
                summary: json!({
                    "status": done.status,
                    "decision_note": done.decision_note,
                    "deleted_organization_id": ids::encode(IdKind::Organization, org.id),
                    "source_agency_id": done.source_agency_id.map(|a| ids::encode(IdKind::Organization, a)),
                    "target_agency_id": done.target_agency_id.map(|a| ids::encode(IdKind::Organization, a)),
                    "to_self_managed": done.to_self_managed,
                }),
            },
        )
        .await?;
        let data = event_data(&done, &tenant);
        emit(
            tx,
            now,
            &tenant,
            done.target_agency_id,
            types::TRANSFER_CANCELED,
            request_id,
            data,
        )
        .await?;
    }
    Ok(canceled)
}
