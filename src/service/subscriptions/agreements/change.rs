//! AcceptAgreement and RevokeAgreement, each under the organization's row lock.

use std::collections::BTreeMap;

use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        ids::{self, IdKind, new_id},
        subscription::AgreementStatus,
    },
    error::{Error, Result, Violations},
    grpc::Ctx,
    proto,
    service::{
        audit, audit_request_id,
        billing::require_request_id,
        check_etag, commit, idempotency_key,
        orgs::{activation::reason_of, lock_live},
        replayed, settle,
    },
    storage::{Tx, audit::AuditRecord, entities::service_agreements as agreements},
};

use super::{
    super::addons::{check_service_id, find_addon},
    active, to_proto,
};

/// Most metadata entries recorded with an acceptance.
const MAX_METADATA_ENTRIES: usize = 16;
/// Longest metadata key.
const MAX_METADATA_KEY_LEN: usize = 64;
/// Longest metadata value.
const MAX_METADATA_VALUE_LEN: usize = 512;
/// Longest terms version.
const MAX_VERSION_LEN: usize = 64;

/// Checks acceptance metadata: at most 16 entries, keys 1-64 and values up to 512
/// characters.
fn check_metadata(v: &mut Violations, metadata: &BTreeMap<String, String>) {
    if metadata.len() > MAX_METADATA_ENTRIES {
        v.add(
            "metadata",
            format!("must have at most {MAX_METADATA_ENTRIES} entries"),
        );
    }
    for key in metadata.keys() {
        let length = key.chars().count();
        if length == 0 || length > MAX_METADATA_KEY_LEN {
            v.add(
                "metadata",
                format!("keys must be 1 to {MAX_METADATA_KEY_LEN} characters"),
            );
        } else if metadata[key].chars().count() > MAX_METADATA_VALUE_LEN {
            v.add(
                format!("metadata[{key}]"),
                format!("must be at most {MAX_METADATA_VALUE_LEN} characters"),
            );
        }
    }
}

/// AcceptAgreement: records the acceptance of the service's current terms version (an
/// older ACTIVE agreement for the service becomes SUPERSEDED). Idempotent by
/// `request_id`.
pub async fn accept_agreement(
    ctx: Ctx,
    caller: Caller,
    req: proto::AcceptAgreementRequest,
) -> Result<proto::AcceptAgreementResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    check_service_id(&mut v, &req.service_id);
    if req.version.is_empty() {
        v.add("version", "is required");
    } else if req.version.chars().count() > MAX_VERSION_LEN {
        v.add(
            "version",
            format!("must be at most {MAX_VERSION_LEN} characters"),
        );
    }
    check_metadata(&mut v, &req.metadata);
    require_request_id(&mut v, &req.request_id);
    v.finish()?;
    let principal = access.principal();
    let key = idempotency_key(principal, "AcceptAgreement", &req.request_id, &req)?;
    if let Some(key) = &key
        && let Some(done) = crate::storage::idempotency::replay(ctx.store.db(), key).await?
    {
        return Ok(done);
    }
    let addon = find_addon(&ctx, &req.service_id)?;
    let Some(terms) = &addon.terms else {
        return Err(Error::precondition(
            "NO_TERMS",
            format!("{} has no terms to accept", addon.name),
        )
        .with("service_id", &addon.id));
    };
    if req.version != terms.version {
        return Err(Error::precondition(
            "TERMS_VERSION_MISMATCH",
            format!(
                "the current terms version of {} is {}",
                addon.name, terms.version
            ),
        )
        .with("service_id", &addon.id)
        .with("current_version", &terms.version)
        .with("version", &req.version));
    }
    let metadata = &req.metadata;
    let metadata = serde_json::to_string(&metadata)
        .map_err(|e| Error::Internal(format!("agreement metadata does not serialize: {e}")))?;
    let request_id = audit_request_id(&caller, key.as_ref()).to_owned();
    let result = async {
        let tx = ctx.store.write().await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let org = lock_live(&tx, access.org()).await?;
        let now = ctx.store.now();
        let superseded = end_active(&tx, org.id, &addon.id, now, |row| {
            row.status = Set(AgreementStatus::Superseded.as_str().to_owned());
        })
        .await?;
        let row = agreements::ActiveModel {
            id: Set(new_id()),
            organization_id: Set(org.id),
            service_id: Set(addon.id.clone()),
            terms_version: Set(terms.version.clone()),
            status: Set(AgreementStatus::Active.as_str().to_owned()),
            metadata: Set(metadata.clone()),
            accepted_by: Set(principal.author()),
            accept_time: Set(now),
            revoked_by: Set(String::new()),
            revoke_time: Set(None),
            revoke_reason: Set(String::new()),
            request_id: Set(request_id.clone()),
            update_time: Set(now),
            version: Set(1),
        }
        .insert(&*tx)
        .await?;
        audit(
            &tx,
            &ctx,
            principal,
            AuditRecord {
                organization_id: org.id,
                action: "AcceptAgreement",
                target_type: "service_agreement",
                target_id: ids::encode(IdKind::Agreement, row.id),
                request_id: &request_id,
                summary: json!({
                    "service_id": row.service_id,
                    "version": row.terms_version,
                    "superseded": superseded
                        .iter()
                        .map(|a| ids::encode(IdKind::Agreement, a.id))
                        .collect::<Vec<_>>(),
                }),
            },
        )
        .await?;
        let response = proto::AcceptAgreementResponse {
            agreement: Some(to_proto(&row, &ctx.settings.billing.catalogue)),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}

/// Ends the organization's ACTIVE agreements for a service (the caller holds the
/// organization's lock): `end` sets the new status and its fields; returns them as
/// they were.
async fn end_active(
    tx: &Tx,
    org_id: Uuid,
    service_id: &str,
    now: i64,
    end: impl Fn(&mut agreements::ActiveModel),
) -> Result<Vec<agreements::Model>> {
    let rows = agreements::Entity::find()
        .filter(agreements::Column::OrganizationId.eq(org_id))
        .filter(agreements::Column::ServiceId.eq(service_id))
        .filter(agreements::Column::Status.eq(AgreementStatus::Active.as_str()))
        .all(&**tx)
        .await?;
    for row in &rows {
        let mut change = agreements::ActiveModel {
            update_time: Set(now),
            version: Set(row.version + 1),
            ..Default::default()
        };
        end(&mut change);
        let result = agreements::Entity::update_many()
            .set(change)
            .filter(agreements::Column::Id.eq(row.id))
            .filter(agreements::Column::Version.eq(row.version))
            .exec(&**tx)
            .await?;
        if result.rows_affected != 1 {
            return Err(Error::stale_etag());
        }
    }
    Ok(rows)
}

/// RevokeAgreement: the organization's ACTIVE agreement for the service becomes
/// REVOKED; NOT_FOUND when there is none, ABORTED for a stale etag. Purchases made
/// under it stay ACTIVE; new purchases need a new acceptance.
pub async fn revoke_agreement(
    ctx: Ctx,
    caller: Caller,
    req: proto::RevokeAgreementRequest,
) -> Result<proto::RevokeAgreementResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    check_service_id(&mut v, &req.service_id);
    let reason = reason_of(&mut v, &req.reason, false);
    v.finish()?;
    let principal = access.principal();
    let tx = ctx.store.write().await?;
    let org = lock_live(&tx, access.org()).await?;
    let current = active(&*tx, org.id, &req.service_id)
        .await?
        .ok_or_else(|| Error::not_found("active agreement for service", &req.service_id))?;
    check_etag(&req.etag, current.version)?;
    let now = ctx.store.now();
    end_active(&tx, org.id, &req.service_id, now, |row| {
        row.status = Set(AgreementStatus::Revoked.as_str().to_owned());
        row.revoked_by = Set(principal.author());
        row.revoke_time = Set(Some(now));
        row.revoke_reason = Set(reason.clone());
    })
    .await?;
    let row = agreements::Entity::find_by_id(current.id)
        .one(&*tx)
        .await?
        .ok_or_else(|| Error::Internal("agreement vanished under its lock".into()))?;
    audit(
        &tx,
        &ctx,
        principal,
        AuditRecord {
            organization_id: org.id,
            action: "RevokeAgreement",
            target_type: "service_agreement",
            target_id: ids::encode(IdKind::Agreement, row.id),
            request_id: &caller.trace_id,
            summary: json!({
                "service_id": row.service_id,
                "version": row.terms_version,
                "reason": reason,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::RevokeAgreementResponse {
        agreement: Some(to_proto(&row, &ctx.settings.billing.catalogue)),
    })
}
