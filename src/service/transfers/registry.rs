//! The registry of external assets other services own (knowledge bases, phone numbers,
//! sites...): registered per organization so that they can be listed and transferred.

use std::collections::BTreeMap;

use chrono::DateTime;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, EntityTrait, Order, QueryFilter,
    QueryOrder, QuerySelect, sea_query::SimpleExpr,
};
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        filter::{self, Op},
        ids::{self, IdKind, new_id},
        paging, text,
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::{
        audit, audit_request_id,
        billing::require_request_id,
        check_etag, commit,
        filtering::compare,
        idempotency_key,
        paging::{finish_keyed, parse_order},
        replayed, settle,
    },
    storage::{audit::AuditRecord, entities::external_assets as assets},
};

/// Longest external type.
pub(crate) const MAX_TYPE_LEN: usize = 64;
/// Longest external id.
pub(crate) const MAX_EXTERNAL_ID_LEN: usize = 256;
/// Longest display name.
const MAX_DISPLAY_NAME_LEN: usize = 200;
/// Most attributes per asset.
const MAX_ATTRIBUTES: usize = 32;
/// Longest attribute key.
const MAX_ATTRIBUTE_KEY_LEN: usize = 64;
/// Longest attribute value.
const MAX_ATTRIBUTE_VALUE_LEN: usize = 1024;

/// Checks an external type: lower_snake_case (a lowercase letter, then lowercase
/// letters, digits and single underscores), 1 to 64 characters.
pub(crate) fn external_type(text: &str) -> std::result::Result<&str, String> {
    let shape = "must be lower_snake_case like knowledge_base";
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.len() > MAX_TYPE_LEN {
        return Err(format!("must be at most {MAX_TYPE_LEN} characters"));
    }
    let starts_with_letter = text.starts_with(|c: char| c.is_ascii_lowercase());
    let charset = text
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !starts_with_letter || !charset || text.ends_with('_') || text.contains("__") {
        return Err(shape.into());
    }
    Ok(text)
}

/// Checks an external id: 1 to 256 characters, no control characters.
pub(crate) fn external_id(text: &str) -> std::result::Result<&str, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.chars().count() > MAX_EXTERNAL_ID_LEN {
        return Err(format!("must be at most {MAX_EXTERNAL_ID_LEN} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(text)
}

/// Checks attributes: at most 32 entries, keys 1 to 64 characters, values at most
/// 1,024, no control characters in keys.
fn check_attributes(v: &mut Violations, attributes: &BTreeMap<String, String>) {
    if attributes.len() > MAX_ATTRIBUTES {
        v.add(
            "attributes",
            format!("must have at most {MAX_ATTRIBUTES} entries"),
        );
    }
    for (key, value) in attributes {
        let key_len = key.chars().count();
        if key_len == 0 || key_len > MAX_ATTRIBUTE_KEY_LEN || key.chars().any(char::is_control) {
            v.add(
                "attributes",
                format!(
                    "keys must be 1 to {MAX_ATTRIBUTE_KEY_LEN} characters without control characters"
                ),
            );
        }
        if value.chars().count() > MAX_ATTRIBUTE_VALUE_LEN {
            let shown: String = key.chars().take(MAX_ATTRIBUTE_KEY_LEN).collect();
            v.add(
                format!("attributes[{shown}]"),
                format!("must be at most {MAX_ATTRIBUTE_VALUE_LEN} characters"),
            );
        }
    }
}

/// A registry row in proto form.
pub fn to_proto(row: &assets::Model) -> proto::ExternalAsset {
    proto::ExternalAsset {
        id: ids::encode(IdKind::ExternalAsset, row.id),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        external_type: row.external_type.clone(),
        external_id: row.external_id.clone(),
        display_name: row.display_name.clone(),
        attributes: serde_json::from_str(&row.attributes).unwrap_or_default(),
        registered_by: row.registered_by.clone(),
        create_time: convert::timestamp(row.create_time),
        update_time: convert::timestamp(row.update_time),
        etag: convert::etag(row.version),
    }
}

fn already_registered(external_type: &str, external_id: &str) -> Error {
    Error::rejected(
        Code::AlreadyExists,
        "ASSET_ALREADY_REGISTERED",
        "an asset with this external type and id is already registered for the organization",
    )
    .with("external_type", external_type)
    .with("external_id", external_id)
}

/// RegisterAsset: records an asset another service owns for an organization.
/// `(organization, external_type, external_id)` is unique (ALREADY_EXISTS).
pub async fn register(
    ctx: Ctx,
    caller: Caller,
    req: proto::RegisterAssetRequest,
) -> Result<proto::RegisterAssetResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let principal = access.principal().clone();
    let mut v = Violations::new();
    v.check("external_type", external_type(&req.external_type));
    v.check("external_id", external_id(&req.external_id));
    let display_name = v
        .check(
            "display_name",
            text::bounded(req.display_name.trim(), MAX_DISPLAY_NAME_LEN).map(str::to_owned),
        )
        .unwrap_or_default();
    check_attributes(&mut v, &req.attributes);
    require_request_id(&mut v, &req.request_id);
    v.finish()?;
    let key = idempotency_key(&principal, "RegisterAsset", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let org = access.org();
        // `(organization, external_type, external_id)` is unique: a duplicate fails the
        // insert.
        let now = ctx.store.now();
        let id = new_id();
        let row = assets::ActiveModel {
            id: Set(id),
            organization_id: Set(org.id),
            external_type: Set(req.external_type.clone()),
            external_id: Set(req.external_id.clone()),
            display_name: Set(display_name.clone()),
            attributes: Set(json!(req.attributes).to_string()),
            registered_by: Set(principal.author().chars().take(256).collect()),
            create_time: Set(now),
            update_time: Set(now),
            version: Set(1),
        }
        .insert(&*tx)
        .await
        .map_err(|e| {
            let e = Error::from(e);
            if e.is_unique_violation() {
                already_registered(&req.external_type, &req.external_id)
            } else {
                e
            }
        })?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "RegisterAsset",
                target_type: "external_asset",
                target_id: ids::encode(IdKind::ExternalAsset, id),
                request_id: audit_request_id(&caller, key.as_ref()),
                summary: json!({
                    "external_type": row.external_type,
                    "external_id": row.external_id,
                    "display_name": row.display_name,
                    "attributes": req.attributes.keys().collect::<Vec<_>>(),
                }),
            },
        )
        .await?;
        let response = proto::RegisterAssetResponse {
            asset: Some(to_proto(&row)),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}

const FILTER_FIELDS: &[(&str, &[Op])] = &[
    ("external_type", filter::EQUALITY),
    ("external_id", filter::EQUALITY),
    ("create_time", filter::ORDERED),
];

/// The sort key of a list order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    CreateTime,
    ExternalType,
    DisplayName,
}

/// A position in the list: the last row's sort key value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    Time(i64),
    Text(String),
}

impl SortKey {
    fn column(self) -> assets::Column {
        match self {
            SortKey::CreateTime => assets::Column::CreateTime,
            SortKey::ExternalType => assets::Column::ExternalType,
            SortKey::DisplayName => assets::Column::DisplayName,
        }
    }

    fn of(self, row: &assets::Model) -> String {
        match self {
            SortKey::CreateTime => row.create_time.to_string(),
            SortKey::ExternalType => row.external_type.clone(),
            SortKey::DisplayName => row.display_name.clone(),
        }
    }

    fn parse(self, text: String) -> Option<Position> {
        match self {
            SortKey::CreateTime => text.parse().ok().map(Position::Time),
            SortKey::ExternalType | SortKey::DisplayName => Some(Position::Text(text)),
        }
    }

    /// `column OP position`.
    fn compare(self, op: Op, position: &Position) -> SimpleExpr {
        match position {
            Position::Time(t) => compare(self.column(), op, *t),
            Position::Text(s) => compare(self.column(), op, s.as_str()),
        }
    }
}

fn apply_filter(
    v: &mut Violations,
    mut query: sea_orm::Select<assets::Entity>,
    terms: &[filter::Term],
) -> sea_orm::Select<assets::Entity> {
    for term in terms {
        let value = term.value.as_str();
        query = match term.field.as_str() {
            "external_type" => query.filter(compare(assets::Column::ExternalType, term.op, value)),
            "external_id" => query.filter(compare(assets::Column::ExternalId, term.op, value)),
            _ => match DateTime::parse_from_rfc3339(value) {
                Ok(at) => query.filter(compare(
                    assets::Column::CreateTime,
                    term.op,
                    at.timestamp_micros(),
                )),
                Err(_) => {
                    v.add(
                        "filter",
                        "create_time must be an RFC 3339 time like 2026-01-01T00:00:00Z",
                    );
                    query
                }
            },
        };
    }
    query
}

/// ListAssets: the organization's registered assets, newest first by default.
pub async fn list(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListAssetsRequest,
) -> Result<proto::ListAssetsResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org_id = access.org().id;
    let mut v = Violations::new();
    if !req.external_type.is_empty() {
        v.check("external_type", external_type(&req.external_type));
    }
    let size = v
        .check("page_size", paging::page_size(req.page_size))
        .unwrap_or(paging::DEFAULT_PAGE_SIZE);
    let terms = v
        .check("filter", filter::parse(&req.filter, FILTER_FIELDS))
        .unwrap_or_default();
    let (key, descending) = parse_order(
        &mut v,
        &req.order_by,
        &[
            ("create_time", SortKey::CreateTime),
            ("external_type", SortKey::ExternalType),
            ("display_name", SortKey::DisplayName),
        ],
        (SortKey::CreateTime, true),
    );
    let fingerprint = paging::fingerprint(&[
        &org_id.to_string(),
        &req.external_type,
        &req.filter,
        &req.order_by,
    ]);
    let cursor = v
        .check("page_token", paging::decode(&req.page_token, &fingerprint))
        .flatten();
    let after = cursor.and_then(|c| {
        let position = Uuid::parse_str(&c.id)
            .ok()
            .zip(c.k.and_then(|k| key.parse(k)));
        if position.is_none() {
            v.add("page_token", "is not a page token issued by this service");
        }
        position
    });
    let mut query = assets::Entity::find().filter(assets::Column::OrganizationId.eq(org_id));
    if !req.external_type.is_empty() {
        query = query.filter(assets::Column::ExternalType.eq(req.external_type.as_str()));
    }
    let mut query = apply_filter(&mut v, query, &terms);
    v.finish()?;
    if let Some((last_id, last)) = after {
        let (beyond, beyond_id) = if descending {
            (key.compare(Op::Lt, &last), assets::Column::Id.lt(last_id))
        } else {
            (key.compare(Op::Gt, &last), assets::Column::Id.gt(last_id))
        };
        query = query.filter(
            Condition::any().add(beyond).add(
                Condition::all()
                    .add(key.compare(Op::Eq, &last))
                    .add(beyond_id),
            ),
        );
    }
    let order = if descending { Order::Desc } else { Order::Asc };
    let mut rows = query
        .order_by(key.column(), order.clone())
        .order_by(assets::Column::Id, order)
        .limit(size + 1)
        .all(ctx.store.db())
        .await?;
    let next_page_token = finish_keyed(&mut rows, size, &fingerprint, |last| {
        (key.of(last), last.id)
    });
    Ok(proto::ListAssetsResponse {
        assets: rows.iter().map(to_proto).collect(),
        next_page_token,
    })
}

/// DeregisterAsset: removes an asset of the organization from the registry (the owning
/// service keeps the asset itself).
pub async fn deregister(
    ctx: Ctx,
    caller: Caller,
    req: proto::DeregisterAssetRequest,
) -> Result<proto::DeregisterAssetResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let id = ids::decode(IdKind::ExternalAsset, &req.asset_id)
        .map_err(|e| Error::invalid("asset_id", e.to_string()))?;
    let org = access.org();
    let tx = ctx.store.write().await?;
    let row = assets::Entity::find_by_id(id)
        .filter(assets::Column::OrganizationId.eq(org.id))
        .one(&*tx)
        .await?
        .ok_or_else(|| Error::not_found("external asset", &req.asset_id))?;
    check_etag(&req.etag, row.version)?;
    let deleted = assets::Entity::delete_many()
        .filter(assets::Column::Id.eq(row.id))
        .filter(assets::Column::Version.eq(row.version))
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
            organization_id: org.id,
            action: "DeregisterAsset",
            target_type: "external_asset",
            target_id: ids::encode(IdKind::ExternalAsset, row.id),
            request_id: &caller.trace_id,
            summary: json!({
                "external_type": row.external_type,
                "external_id": row.external_id,
                "display_name": row.display_name,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::DeregisterAssetResponse {})
}
