//! Profile and addresses: the company record (name, description, contact, interests),
//! the owner, and an address book of billing, shipping and mailing addresses.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, ExprTrait, IntoActiveModel,
    Order, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::{
    auth::{Caller, OrgAccess},
    domain::{
        ids::{self, IdKind, new_id},
        text,
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::{
        audit, audit_request_id, check_etag, commit, idempotency_key, orgs::save_versioned,
        replayed, settle,
    },
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{addresses, members, organizations},
    },
};

/// Most addresses one organization may keep.
const MAX_ADDRESSES: u64 = 50;
/// Most interest tags, and the longest tag.
const MAX_INTERESTS: usize = 20;
const MAX_INTEREST_LEN: usize = 50;
const PROFILE_FIELDS: &[&str] = &[
    "display_name",
    "description",
    "contact_name",
    "contact_email",
    "interests",
];
const ADDRESS_FIELDS: &[&str] = &[
    "type",
    "line1",
    "line2",
    "city",
    "region",
    "postal_code",
    "country",
];

fn company(org: &organizations::Model) -> proto::CompanyProfile {
    proto::CompanyProfile {
        display_name: org.name.clone(),
        description: org.description.clone(),
        contact_name: org.contact_name.clone(),
        contact_email: org.contact_email.clone(),
        interests: serde_json::from_str(&org.interests).unwrap_or_default(),
    }
}

async fn org_addresses<C: sea_orm::ConnectionTrait>(
    db: &C,
    org_id: Uuid,
) -> Result<Vec<addresses::Model>> {
    Ok(addresses::Entity::find()
        .filter(addresses::Column::OrganizationId.eq(org_id))
        .order_by(addresses::Column::Id, Order::Asc)
        .limit(MAX_ADDRESSES)
        .all(db)
        .await?)
}

/// GetOrganizationProfile.
pub async fn get_profile(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetOrganizationProfileRequest,
) -> Result<proto::GetOrganizationProfileResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org = access.org();
    let rows = org_addresses(ctx.store.db(), org.id).await?;
    Ok(proto::GetOrganizationProfileResponse {
        company: Some(company(org)),
        owner: Some(convert::owner(org)),
        addresses: rows.iter().map(convert::address).collect(),
        etag: convert::etag(org.version),
    })
}

/// Checks interest tags: at most 20, each 1–50 characters; duplicates are dropped.
fn parse_interests(v: &mut Violations, field: &str, tags: &[String]) -> Vec<String> {
    if tags.len() > MAX_INTERESTS {
        v.add(field, format!("must have at most {MAX_INTERESTS} entries"));
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for (i, tag) in tags.iter().enumerate() {
        if let Some(tag) = v.check(&format!("{field}[{i}]"), text::name(tag, MAX_INTEREST_LEN))
            && !out.contains(&tag)
        {
            out.push(tag);
        }
    }
    out
}

fn mask_paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

/// UpdateOrganizationProfile: the company fields named by the mask.
pub async fn update_profile(
    ctx: Ctx,
    caller: Caller,
    req: proto::UpdateOrganizationProfileRequest,
) -> Result<proto::UpdateOrganizationProfileResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let input = req.company.unwrap_or_default();
    let paths = mask_paths(req.update_mask);
    let current = access.org().clone();
    let mut row = current.clone().into_active_model();
    let mut changed = Map::new();
    let mut v = Violations::new();
    if paths.is_empty() {
        v.add("update_mask", "must name at least one field to update");
    }
    for path in &paths {
        match path.as_str() {
            "display_name" => {
                if let Some(name) =
                    v.check("company.display_name", text::name(&input.display_name, 100))
                {
                    changed.insert("display_name".into(), json!(name));
                    row.name = Set(name);
                }
            }
            "description" => {
                if let Some(value) = v.check(
                    "company.description",
                    text::bounded(&input.description, 1000),
                ) {
                    changed.insert("description".into(), json!(value));
                    row.description = Set(value.to_owned());
                }
            }
            "contact_name" => {
                if let Some(value) = v.check(
                    "company.contact_name",
                    text::bounded(input.contact_name.trim(), 200),
                ) {
                    changed.insert("contact_name".into(), json!(value));
                    row.contact_name = Set(value.to_owned());
                }
            }
            "contact_email" => {
                if let Some(value) = v.check(
                    "company.contact_email",
                    text::optional_email(&input.contact_email),
                ) {
                    changed.insert("contact_email".into(), json!(value));
                    row.contact_email = Set(value);
                }
            }
            "interests" => {
                let tags = parse_interests(&mut v, "company.interests", &input.interests);
                changed.insert("interests".into(), json!(tags));
                row.interests = Set(json!(tags).to_string());
            }
            other => v.add(
                "update_mask",
                format!(
                    "{other:?} cannot be updated; updatable: {}",
                    PROFILE_FIELDS.join(", ")
                ),
            ),
        }
    }
    v.finish()?;
    check_etag(&req.etag, current.version)?;
    let now = ctx.store.now();
    row.update_time = Set(now);
    row.version = Set(current.version + 1);
    let tx = ctx.store.write().await?;
    let updated = save_versioned(&tx, row, current.id, current.version).await?;
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: current.id,
            action: "UpdateOrganizationProfile",
            target_type: "organization",
            target_id: ids::encode(IdKind::Organization, current.id),
            request_id: &caller.trace_id,
            summary: Value::Object(changed),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::UpdateOrganizationProfileResponse {
        company: Some(company(&updated)),
        etag: convert::etag(updated.version),
    })
}

/// UpdateOwnerProfile: the owner's name, on the organization and the owner's membership.
pub async fn update_owner(
    ctx: Ctx,
    caller: Caller,
    req: proto::UpdateOwnerProfileRequest,
) -> Result<proto::UpdateOwnerProfileResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let name = v.check("name", text::name(&req.name, 200));
    v.finish()?;
    let name = name.unwrap_or_default();
    let org = access.org();
    if org.owner_user_id.is_empty() && org.owner_email.is_empty() {
        return Err(Error::precondition(
            "OWNER_MISSING",
            "the organization has no owner yet",
        ));
    }
    let now = ctx.store.now();
    let tx = ctx.store.write().await?;
    organizations::Entity::update_many()
        .col_expr(organizations::Column::OwnerName, Expr::value(name.as_str()))
        .col_expr(organizations::Column::UpdateTime, Expr::value(now))
        .col_expr(
            organizations::Column::Version,
            Expr::col(organizations::Column::Version).add(1),
        )
        .filter(organizations::Column::Id.eq(org.id))
        .exec(&*tx)
        .await?;
    members::Entity::update_many()
        .col_expr(members::Column::Name, Expr::value(name.as_str()))
        .col_expr(members::Column::UpdateTime, Expr::value(now))
        .col_expr(
            members::Column::Version,
            Expr::col(members::Column::Version).add(1),
        )
        .filter(members::Column::OrganizationId.eq(org.id))
        .filter(members::Column::IsOwner.eq(true))
        .exec(&*tx)
        .await?;
    let updated = organizations::Entity::find_by_id(org.id)
        .one(&*tx)
        .await?
        .ok_or_else(|| Error::not_found("organization", &req.organization_id))?;
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: org.id,
            action: "UpdateOwnerProfile",
            target_type: "organization",
            target_id: ids::encode(IdKind::Organization, org.id),
            request_id: &caller.trace_id,
            summary: json!({ "owner_name": name }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::UpdateOwnerProfileResponse {
        owner: Some(convert::owner(&updated)),
    })
}

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

/// Checks one field of an address (`path` as in the update mask) and sets it on `row`.
fn apply_field(
    v: &mut Violations,
    path: &str,
    input: &proto::Address,
    row: &mut addresses::ActiveModel,
    changed: &mut Map<String, Value>,
) {
    let field = format!("address.{path}");
    let value = match path {
        "type" => match convert::address_kind_from(input.r#type) {
            Some(kind) => {
                row.kind = Set(kind.as_str().to_owned());
                Some(kind.as_str().to_owned())
            }
            None => {
                v.add(field, "must be BILLING, SHIPPING or MAILING");
                None
            }
        },
        "line1" => v
            .check(&field, text::name(&input.line1, 200))
            .inspect(|s| row.line1 = Set(s.clone())),
        "line2" => v
            .check(&field, optional(&input.line2, 200))
            .inspect(|s| row.line2 = Set(s.clone())),
        "city" => v
            .check(&field, text::name(&input.city, 100))
            .inspect(|s| row.city = Set(s.clone())),
        "region" => v
            .check(&field, optional(&input.region, 100))
            .inspect(|s| row.region = Set(s.clone())),
        "postal_code" => v
            .check(&field, optional(&input.postal_code, 20))
            .inspect(|s| row.postal_code = Set(s.clone())),
        "country" => v
            .check(&field, country(&input.country))
            .inspect(|s| row.country = Set(s.clone())),
        other => {
            v.add(
                "update_mask",
                format!(
                    "{other:?} cannot be updated; updatable: {}",
                    ADDRESS_FIELDS.join(", ")
                ),
            );
            None
        }
    };
    if let Some(value) = value {
        changed.insert(path.to_owned(), json!(value));
    }
}

fn optional(text: &str, max: usize) -> Result<String, String> {
    text::bounded(text.trim(), max).map(str::to_owned)
}

/// An ISO 3166-1 alpha-2 code: two uppercase ASCII letters.
fn country(code: &str) -> Result<String, String> {
    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(code.to_owned())
    } else {
        Err("must be an ISO 3166-1 alpha-2 code: two uppercase letters like NG".into())
    }
}

/// Re-reads the organization inside `tx`, locking its row on PostgreSQL so concurrent
/// address creations count each other (SQLite has one writer anyway).
async fn lock_org(tx: &Tx, access: &OrgAccess) -> Result<()> {
    organizations::Entity::find_by_id(access.org().id)
        .lock_exclusive()
        .one(&**tx)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                "organization",
                &ids::encode(IdKind::Organization, access.org().id),
            )
        })?;
    Ok(())
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
        lock_org(&tx, &access).await?;
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
