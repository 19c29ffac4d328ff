//! The audit log: entries of an organization, newest first. Admins of an agency (and
//! operators reading an agency) also see the entries of the agency's tenants.

use chrono::DateTime;
use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::filter::{self, Op},
    error::{Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::{filtering::compare, paging::Page},
    storage::entities::{audit_entries, organizations},
};

const FILTER_FIELDS: &[(&str, &[Op])] = &[
    ("action", filter::EQUALITY),
    ("actor_id", filter::EQUALITY),
    ("target_type", filter::EQUALITY),
    ("target_id", filter::EQUALITY),
    ("request_id", filter::EQUALITY),
    ("create_time", filter::ORDERED),
];

/// ListAuditEvents.
pub async fn list(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListAuditEventsRequest,
) -> Result<proto::ListAuditEventsResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let terms = v
        .check("filter", filter::parse(&req.filter, FILTER_FIELDS))
        .unwrap_or_default();
    let page = Page::parse(
        &mut v,
        req.page_size,
        &req.page_token,
        &[&access.org().id.to_string(), &req.filter],
    );
    let mut query = audit_entries::Entity::find();
    for term in &terms {
        let value = term.value.as_str();
        query = match (term.field.as_str(), term.op) {
            ("action", op) => query.filter(compare(audit_entries::Column::Action, op, value)),
            ("actor_id", op) => query.filter(compare(audit_entries::Column::ActorId, op, value)),
            ("target_type", op) => {
                query.filter(compare(audit_entries::Column::TargetType, op, value))
            }
            ("target_id", op) => query.filter(compare(audit_entries::Column::TargetId, op, value)),
            ("request_id", op) => {
                query.filter(compare(audit_entries::Column::RequestId, op, value))
            }
            (_, op) => match DateTime::parse_from_rfc3339(value) {
                Ok(at) => query.filter(compare(
                    audit_entries::Column::CreateTime,
                    op,
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
    v.finish()?;
    let org = access.org();
    let mut scope: Vec<Uuid> = vec![org.id];
    if access.sees_tenants() {
        let tenants: Vec<Uuid> = organizations::Entity::find()
            .select_only()
            .column(organizations::Column::Id)
            .filter(organizations::Column::ParentId.eq(org.id))
            .into_tuple()
            .all(ctx.store.db())
            .await?;
        scope.extend(tenants);
    }
    query = query.filter(audit_entries::Column::OrganizationId.is_in(scope));
    if let Some(after) = page.after {
        query = query.filter(audit_entries::Column::Id.lt(after));
    }
    let mut rows = query
        .order_by(audit_entries::Column::Id, Order::Desc)
        .limit(page.limit())
        .all(ctx.store.db())
        .await?;
    let next_page_token = page.finish(&mut rows, |r| r.id);
    Ok(proto::ListAuditEventsResponse {
        audit_events: rows.iter().map(convert::audit_event).collect(),
        next_page_token,
    })
}
