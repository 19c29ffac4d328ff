//! DeleteOrganization: soft delete of an organization without agents or tenants,
//! revoking its API keys, idempotent across concurrent retries.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    sea_query::Expr,
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        events::types,
        ids::{self, IdKind},
        org::OrgKind,
    },
    error::{Error, Result},
    events::outbox,
    grpc::{Ctx, convert},
    proto,
    service::{
        agent_count, audit, audit_request_id, check_etag, commit, idempotency_key, replayed,
        settle, transfers,
    },
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{api_keys, organizations},
    },
};

use super::{lock_org, save_versioned};

/// DeleteOrganization: soft delete of an organization without agents or tenants.
pub async fn delete(
    ctx: Ctx,
    caller: Caller,
    req: proto::DeleteOrganizationRequest,
) -> Result<proto::DeleteOrganizationResponse> {
    let principal = caller.principal()?.clone();
    let key = idempotency_key(&principal, "DeleteOrganization", &req.request_id, &req)?;
    if let Some(key) = &key
        && let Some(done) = crate::storage::idempotency::replay(ctx.store.db(), key).await?
    {
        return Ok(done);
    }
    let result = delete_once(&ctx, &caller, &principal, &req, key.as_ref()).await;
    // A retry that raced its twin sees the organization already gone (NOT_FOUND) or
    // changed; the twin's stored result is the answer then.
    match (result, &key) {
        (Err(error), Some(key)) => {
            match crate::storage::idempotency::replay(ctx.store.db(), key).await? {
                Some(done) => Ok(done),
                None => Err(error),
            }
        }
        (result, _) => result,
    }
}

async fn delete_once(
    ctx: &Ctx,
    caller: &Caller,
    principal: &crate::auth::Principal,
    req: &proto::DeleteOrganizationRequest,
    key: Option<&crate::storage::idempotency::Key>,
) -> Result<proto::DeleteOrganizationResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    if access.org().kind == OrgKind::Root.as_str() {
        return Err(Error::precondition(
            "ROOT_ORGANIZATION",
            "the root organization cannot be deleted",
        ));
    }
    let result = async {
        let tx = ctx.store.write().await?;
        // Lock before looking for an earlier result: a concurrent twin holding the lock
        // has committed its result by the time the lock is ours.
        let locked = lock_org(&tx, access.org().id).await?;
        if let Some(done) = replayed(&tx, key).await? {
            return Ok(done);
        }
        let org = locked
            .filter(|o| o.delete_time.is_none())
            .ok_or_else(|| Error::not_found("organization", &req.organization_id))?;
        check_etag(&req.etag, org.version)?;
        let agents_left = agent_count(&*tx, org.id).await?;
        if agents_left > 0 {
            return Err(Error::precondition(
                "ORG_HAS_AGENTS",
                format!("the organization has {agents_left} assigned agents; unassign them first"),
            )
            .with("agent_count", agents_left));
        }
        let tenants = live_tenants(&tx, org.id).await?;
        if tenants > 0 {
            return Err(Error::precondition(
                "ORG_HAS_TENANTS",
                format!("the agency has {tenants} tenants; move or delete them first"),
            )
            .with("tenant_count", tenants));
        }
        let request_id = audit_request_id(caller, key);
        let deleted = soft_delete(&tx, &org, ctx.store.now(), request_id).await?;
        audit(
            &tx,
            ctx,
            principal,
            AuditRecord {
                organization_id: org.id,
                action: "DeleteOrganization",
                target_type: "organization",
                target_id: ids::encode(IdKind::Organization, org.id),
                request_id,
                summary: json!({ "slug": org.slug, "soft_delete": true }),
            },
        )
        .await?;
        let response = proto::DeleteOrganizationResponse {
            organization: Some(convert::organization(
                &ctx.settings.billing.catalogue,
                &deleted,
                0,
            )),
        };
        commit(ctx, tx, key, response).await
    }
    .await;
    settle(ctx, key, result).await
}

/// Live tenants of an organization (an agency is deleted only without them).
pub(crate) async fn live_tenants(tx: &Tx, org_id: Uuid) -> Result<u64> {
    Ok(organizations::Entity::find()
        .filter(organizations::Column::ParentId.eq(org_id))
        .filter(organizations::Column::DeleteTime.is_null())
        .count(&**tx)
        .await?)
}

/// Soft-deletes a locked organization (gone from reads and lists, its slug never
/// reused, its financial records kept), revokes its API keys and emits
/// `organization.deleted`; the caller audits.
pub(crate) async fn soft_delete(
    tx: &Tx,
    org: &organizations::Model,
    now: i64,
    request_id: &str,
) -> Result<organizations::Model> {
    let mut row = org.clone().into_active_model();
    row.delete_time = Set(Some(now));
    row.update_time = Set(now);
    row.version = Set(org.version + 1);
    let deleted = save_versioned(tx, row, org.id, org.version).await?;
    api_keys::Entity::update_many()
        .col_expr(api_keys::Column::RevokeTime, Expr::value(now))
        .filter(api_keys::Column::OrganizationId.eq(org.id))
        .filter(api_keys::Column::RevokeTime.is_null())
        .exec(&**tx)
        .await?;
    // Pending tenant transfers of the organization (as the tenant or as the target
    // agency) cannot complete any more: they end CANCELED with the reason.
    let canceled_transfers =
        transfers::tenants::cancel_pending_of(tx, org, now, request_id).await?;
    let data = json!({
        "organization_id": ids::encode(IdKind::Organization, org.id),
        "slug": org.slug,
        "canceled_tenant_transfers": canceled_transfers,
    });
    outbox::emit(
        tx,
        now,
        &deleted,
        types::ORGANIZATION_DELETED,
        request_id,
        data,
    )
    .await?;
    Ok(deleted)
}
