//! Webhook endpoints of an organization: where its events (and, for an agency, its
//! tenants' events) are POSTed, signed with the endpoint's secret (see
//! [`crate::events::webhooks`] for the delivery format).

mod create;

pub use create::create_endpoint;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, sea_query::Expr};
use serde_json::json;

use crate::{
    auth::Caller,
    domain::{
        events::DeliveryStatus,
        ids::{self, IdKind},
    },
    error::{Error, Result},
    grpc::{Ctx, convert},
    proto,
    service::{audit, audit_request_id},
    storage::{
        audit::AuditRecord,
        entities::{webhook_deliveries, webhook_endpoints},
    },
};

/// Most endpoints one organization may have.
const MAX_ENDPOINTS: u64 = 20;

/// The API form of an endpoint (never its secret).
fn endpoint_message(row: &webhook_endpoints::Model) -> proto::WebhookEndpoint {
    proto::WebhookEndpoint {
        id: ids::encode(IdKind::WebhookEndpoint, row.id),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        url: row.url.clone(),
        event_types: serde_json::from_str(&row.event_types).unwrap_or_default(),
        description: row.description.clone(),
        create_time: convert::timestamp(row.create_time),
    }
}

/// ListWebhookEndpoints: the organization's endpoints, oldest first, without secrets.
pub async fn list_endpoints(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListWebhookEndpointsRequest,
) -> Result<proto::ListWebhookEndpointsResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let rows = webhook_endpoints::Entity::find()
        .filter(webhook_endpoints::Column::OrganizationId.eq(access.org().id))
        .order_by_asc(webhook_endpoints::Column::CreateTime)
        .order_by_asc(webhook_endpoints::Column::Id)
        .all(ctx.store.db())
        .await?;
    Ok(proto::ListWebhookEndpointsResponse {
        endpoints: rows.iter().map(endpoint_message).collect(),
    })
}

/// DeleteWebhookEndpoint: removes an endpoint of the organization; its deliveries not
/// yet made are cancelled (a delivery already in flight may still arrive once).
pub async fn delete_endpoint(
    ctx: Ctx,
    caller: Caller,
    req: proto::DeleteWebhookEndpointRequest,
) -> Result<proto::DeleteWebhookEndpointResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let reference = req.endpoint_id.trim();
    if reference.is_empty() {
        return Err(Error::invalid("endpoint_id", "must not be empty"));
    }
    let id = ids::decode(IdKind::WebhookEndpoint, reference)
        .map_err(|_| Error::invalid("endpoint_id", "must be a webhook endpoint id (whe_…)"))?;
    let org = access.org();
    let tx = ctx.store.write().await?;
    let deleted = webhook_endpoints::Entity::delete_many()
        .filter(webhook_endpoints::Column::Id.eq(id))
        .filter(webhook_endpoints::Column::OrganizationId.eq(org.id))
        .exec(&*tx)
        .await?
        .rows_affected;
    if deleted != 1 {
        return Err(Error::not_found("webhook endpoint", reference));
    }
    let now = ctx.store.now();
    let canceled = webhook_deliveries::Entity::update_many()
        .col_expr(
            webhook_deliveries::Column::Status,
            Expr::value(DeliveryStatus::Canceled.as_str()),
        )
        .col_expr(
            webhook_deliveries::Column::LeaseUntil,
            Expr::value(Option::<i64>::None),
        )
        .col_expr(webhook_deliveries::Column::UpdateTime, Expr::value(now))
        .filter(webhook_deliveries::Column::EndpointId.eq(id))
        .filter(webhook_deliveries::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .exec(&*tx)
        .await?
        .rows_affected;
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: org.id,
            action: "DeleteWebhookEndpoint",
            target_type: "webhook_endpoint",
            target_id: ids::encode(IdKind::WebhookEndpoint, id),
            request_id: audit_request_id(&caller, None),
            summary: json!({ "canceled_deliveries": canceled }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::DeleteWebhookEndpointResponse {})
}
