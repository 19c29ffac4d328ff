//! ListPurchasedServices: filtered by service, status and creation time, ordered by
//! creation time, keyset-paged.

use chrono::DateTime;
use sea_orm::{ColumnTrait, Condition, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        filter::{self, Op},
        paging,
        subscription::PurchaseStatus,
    },
    error::{Result, Violations},
    grpc::Ctx,
    proto,
    service::{filtering::compare, paging::finish_keyed},
    storage::entities::service_purchases as purchases,
};

use super::to_proto;

const FILTER_FIELDS: &[(&str, &[Op])] = &[
    ("service_id", filter::EQUALITY),
    ("status", filter::EQUALITY),
    ("create_time", filter::ORDERED),
];

fn apply_filter(
    v: &mut Violations,
    mut query: sea_orm::Select<purchases::Entity>,
    terms: &[filter::Term],
) -> sea_orm::Select<purchases::Entity> {
    for term in terms {
        let value = term.value.as_str();
        query = match term.field.as_str() {
            "service_id" => query.filter(compare(purchases::Column::ServiceId, term.op, value)),
            "status" => match value
                .strip_prefix("SERVICE_PURCHASE_STATUS_")
                .unwrap_or(value)
                .parse::<PurchaseStatus>()
            {
                Ok(status) => {
                    query.filter(compare(purchases::Column::Status, term.op, status.as_str()))
                }
                Err(_) => {
                    v.add(
                        "filter",
                        "status must be PENDING, ACTIVE, FAILED or CANCELED",
                    );
                    query
                }
            },
            _ => match DateTime::parse_from_rfc3339(value) {
                Ok(at) => query.filter(compare(
                    purchases::Column::CreateTime,
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

/// ListPurchasedServices: the organization's purchases, newest first by default.
pub async fn list_purchased_services(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListPurchasedServicesRequest,
) -> Result<proto::ListPurchasedServicesResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org_id = access.org().id;
    let mut v = Violations::new();
    let size = v
        .check("page_size", paging::page_size(req.page_size))
        .unwrap_or(paging::DEFAULT_PAGE_SIZE);
    let terms = v
        .check("filter", filter::parse(&req.filter, FILTER_FIELDS))
        .unwrap_or_default();
    let descending = crate::service::paging::parse_order(
        &mut v,
        &req.order_by,
        &[("create_time", ())],
        ((), true),
    )
    .1;
    let fingerprint = paging::fingerprint(&[&org_id.to_string(), &req.filter, &req.order_by]);
    let cursor = v
        .check("page_token", paging::decode(&req.page_token, &fingerprint))
        .flatten();
    let after = cursor.and_then(|c| {
        let position = Uuid::parse_str(&c.id)
            .ok()
            .zip(c.k.and_then(|k| k.parse::<i64>().ok()));
        if position.is_none() {
            v.add("page_token", "is not a page token issued by this service");
        }
        position
    });
    let query = purchases::Entity::find().filter(purchases::Column::OrganizationId.eq(org_id));
    let mut query = apply_filter(&mut v, query, &terms);
    v.finish()?;
    if let Some((last_id, last_time)) = after {
        let (beyond, beyond_id) = if descending {
            (
                purchases::Column::CreateTime.lt(last_time),
                purchases::Column::Id.lt(last_id),
            )
        } else {
            (
                purchases::Column::CreateTime.gt(last_time),
                purchases::Column::Id.gt(last_id),
            )
        };
        query = query.filter(
            Condition::any().add(beyond).add(
                Condition::all()
                    .add(purchases::Column::CreateTime.eq(last_time))
                    .add(beyond_id),
            ),
        );
    }
    let order = if descending { Order::Desc } else { Order::Asc };
    let mut rows = query
        .order_by(purchases::Column::CreateTime, order.clone())
        .order_by(purchases::Column::Id, order)
        .limit(size + 1)
        .all(ctx.store.db())
        .await?;
    let next_page_token = finish_keyed(&mut rows, size, &fingerprint, |last| {
        (last.create_time.to_string(), last.id)
    });
    Ok(proto::ListPurchasedServicesResponse {
        purchases: rows.iter().map(to_proto).collect(),
        next_page_token,
    })
}
