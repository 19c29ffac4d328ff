//! The address book: ListAddresses, CreateAddress, UpdateAddress and DeleteAddress.

use crate::service::orgs::lock_live;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::{
    auth::{Caller, OrgAccess},
    domain::ids::{self, IdKind, new_id},
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::{audit, audit_request_id, check_etag, commit, idempotency_key, replayed, settle},
    storage::{audit::AuditRecord, entities::addresses},
};

use super::{
    MAX_ADDRESSES,
    address_fields::{ADDRESS_FIELDS, apply_field},
    mask_paths, org_addresses,
};

/// ListAddresses: the address book, optionally of one type.
pub async fn list_addresses(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListAddressesRequest,
) -> Result<proto::ListAddressesResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let kind = match req.r#type {
        0 => None,
        other => Some(
            convert::address_kind_from(other)
                .ok_or_else(|| Error::invalid("type", "must be BILLING, SHIPPING or MAILING"))?,
        ),
    };
    let rows = org_addresses(ctx.store.db(), access.org().id).await?;
    Ok(proto::ListAddressesResponse {
        addresses: rows
            .iter()
            .filter(|r| kind.is_none_or(|k| r.kind == k.as_str()))
            .map(convert::address)
            .collect(),
    })
}

/// CreateAddress: at most 50 per organization.
pub async fn create_address(
    ctx: Ctx,
    caller: Caller,
    req: proto::CreateAddressRequest,
) -> Result<proto::CreateAddressResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let principal = access.principal().clone();
    let input = req.address.clone().unwrap_or_default();
    let mut row = <addresses::ActiveModel as Default>::default();
    let mut fields = Map::new();
    let mut v = Violations::new();
    for path in ADDRESS_FIELDS {
        apply_field(&mut v, path, &input, &mut row, &mut fields);
    }
    v.finish()?;
    let key = idempotency_key(&principal, "CreateAddress", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let org_id = access.org().id;
        // Lock the organization so concurrent creations count each other.
        lock_live(&tx, access.org()).await?;
        let count = addresses::Entity::find()
            .filter(addresses::Column::OrganizationId.eq(org_id))
            .count(&*tx)
            .await?;
        if count >= MAX_ADDRESSES {
            return Err(Error::precondition(
                "ADDRESS_LIMIT_REACHED",
                format!(
                    "an organization keeps at most {MAX_ADDRESSES} addresses; delete one first"
                ),
            )
            .with("limit", MAX_ADDRESSES));
        }
        let now = ctx.store.now();
        let id = new_id();
        let mut row = row.clone();
        row.id = Set(id);
        row.organization_id = Set(org_id);
        row.create_time = Set(now);
        row.update_time = Set(now);
        row.version = Set(1);
        let saved = row.insert(&*tx).await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org_id,
                action: "CreateAddress",
                target_type: "address",
                target_id: ids::encode(IdKind::Address, id),
                request_id: audit_request_id(&caller, key.as_ref()),
                summary: Value::Object(fields.clone()),
            },
        )
        .await?;
        let response = proto::CreateAddressResponse {
            address: Some(convert::address(&saved)),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}

async fn find_address(
    ctx: &Ctx,
    access: &OrgAccess,
    id: Uuid,
    shown: &str,
) -> Result<addresses::Model> {
    addresses::Entity::find_by_id(id)
        .filter(addresses::Column::OrganizationId.eq(access.org().id))
        .one(ctx.store.db())
        .await?
        .ok_or_else(|| Error::not_found("address", shown))
}

/// UpdateAddress: the fields named by the mask.
pub async fn update_address(
    ctx: Ctx,
    caller: Caller,
    req: proto::UpdateAddressRequest,
) -> Result<proto::UpdateAddressResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let input = req.address.unwrap_or_default();
    let paths = mask_paths(req.update_mask);
    let mut v = Violations::new();
    let id = v.check("address.id", ids::decode(IdKind::Address, &input.id));
    if paths.is_empty() {
        v.add("update_mask", "must name at least one field to update");
    }
    let mut row = <addresses::ActiveModel as Default>::default();
    let mut changed = Map::new();
    for path in &paths {
        apply_field(&mut v, path, &input, &mut row, &mut changed);
    }
    v.finish()?;
    let Some(id) = id else {
        return Err(Error::Internal("validated id missing".into()));
    };
    let current = find_address(&ctx, &access, id, &input.id).await?;
    check_etag(&input.etag, current.version)?;
    row.update_time = Set(ctx.store.now());
    row.version = Set(current.version + 1);
    let tx = ctx.store.write().await?;
    let updated = addresses::Entity::update_many()
        .set(row)
        .filter(addresses::Column::Id.eq(id))
        .filter(addresses::Column::Version.eq(current.version))
        .exec(&*tx)
        .await?
        .rows_affected;
    if updated != 1 {
        return Err(Error::stale_etag());
    }
    let saved = addresses::Entity::find_by_id(id)
        .one(&*tx)
        .await?
        .ok_or_else(|| Error::not_found("address", &input.id))?;
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: current.organization_id,
            action: "UpdateAddress",
            target_type: "address",
            target_id: ids::encode(IdKind::Address, id),
            request_id: &caller.trace_id,
            summary: Value::Object(changed),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::UpdateAddressResponse {
        address: Some(convert::address(&saved)),
    })
}

/// DeleteAddress: a hard delete; the etag is optional.
pub async fn delete_address(
    ctx: Ctx,
    caller: Caller,
    req: proto::DeleteAddressRequest,
) -> Result<proto::DeleteAddressResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let id = ids::decode(IdKind::Address, &req.address_id)
        .map_err(|e| Error::invalid("address_id", e.to_string()))?;
    let current = find_address(&ctx, &access, id, &req.address_id).await?;
    check_etag(&req.etag, current.version)?;
    let tx = ctx.store.write().await?;
    let deleted = addresses::Entity::delete_many()
        .filter(addresses::Column::Id.eq(id))
        .filter(addresses::Column::Version.eq(current.version))
        .exec(&*tx)
        .await?
        .rows_affected;
    if deleted != 1 {
        return Err(Error::stale_etag());
    }
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: current.organization_id,
            action: "DeleteAddress",
            target_type: "address",
            target_id: ids::encode(IdKind::Address, id),
            request_id: &caller.trace_id,
            summary: json!({ "type": current.kind, "country": current.country }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::DeleteAddressResponse {})
}
