//! The outbox: events written with their change, numbered later in commit order.

use chrono::SecondsFormat;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::LockType,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    domain::{
        clock::from_micros,
        events::DeliveryStatus,
        ids::{self, IdKind, new_id},
        org::OrgKind,
    },
    error::{Error, Result},
    storage::{
        Store, Tx,
        entities::{
            event_sequence, organizations, outbox_events, webhook_deliveries, webhook_endpoints,
        },
    },
};

/// Events numbered per sequencer transaction.
const BATCH: u64 = 500;

/// Writes an event of `org` inside `tx` (so it exists exactly when the change commits).
/// A tenant's events are also visible to its agency at the time (its webhooks and
/// WatchEvents streams).
pub async fn emit(
    tx: &Tx,
    now: i64,
    org: &organizations::Model,
    event_type: &'static str,
    request_id: &str,
    data: Value,
) -> Result<Uuid> {
    let id = new_id();
    let agency_id = match org.kind.parse::<OrgKind>() {
        Ok(OrgKind::Tenant) => org.parent_id,
        _ => None,
    };
    outbox_events::ActiveModel {
        id: Set(id),
        position: Set(None),
        organization_id: Set(org.id),
        agency_id: Set(agency_id),
        event_type: Set(event_type.to_owned()),
        payload: Set(data.to_string()),
        request_id: Set(request_id.chars().take(128).collect()),
        create_time: Set(now),
    }
    .insert(&**tx)
    .await?;
    tx.note_event();
    Ok(id)
}

/// The JSON document a webhook receives for an event (its `data` is the stored payload).
pub fn envelope(event: &outbox_events::Model) -> Value {
    json!({
        "id": ids::encode(IdKind::Event, event.id),
        "type": event.event_type,
        "organization_id": ids::encode(IdKind::Organization, event.organization_id),
        "agency_id": event.agency_id.map(|a| ids::encode(IdKind::Organization, a)),
        "create_time": from_micros(event.create_time).to_rfc3339_opts(SecondsFormat::Micros, true),
        "request_id": event.request_id,
        "position": event.position,
        "data": serde_json::from_str::<Value>(&event.payload).unwrap_or(Value::Null),
    })
}

/// Whether an endpoint's filter (a JSON array; empty = all) admits `event_type`.
pub fn endpoint_wants(endpoint: &webhook_endpoints::Model, event_type: &str) -> bool {
    let types: Vec<String> = serde_json::from_str(&endpoint.event_types).unwrap_or_default();
    types.is_empty() || types.iter().any(|t| t == event_type)
}

/// Numbers events written since the last round, in commit order, and creates their
/// webhook deliveries. Returns how many events were numbered (call again while it
/// returns a full batch).
pub async fn sequence(store: &Store) -> Result<usize> {
    let tx = store.write().await?;
    let counter = event_sequence::Entity::find_by_id(1)
        .lock(LockType::Update)
        .one(&*tx)
        .await?
        .ok_or_else(|| Error::Internal("the event_sequence row is missing".into()))?;
    let batch = outbox_events::Entity::find()
        .filter(outbox_events::Column::Position.is_null())
        .order_by_asc(outbox_events::Column::CreateTime)
        .order_by_asc(outbox_events::Column::Id)
        .limit(BATCH)
        .all(&*tx)
        .await?;
    if batch.is_empty() {
        return Ok(0);
    }
    let mut owners: Vec<Uuid> = batch
        .iter()
        .flat_map(|e| [Some(e.organization_id), e.agency_id])
        .flatten()
        .collect();
    owners.sort_unstable();
    owners.dedup();
    let endpoints = webhook_endpoints::Entity::find()
        .filter(webhook_endpoints::Column::OrganizationId.is_in(owners))
        .all(&*tx)
        .await?;
    let now = store.now();
    let mut position = counter.last_position;
    for event in &batch {
        position += 1;
        outbox_events::Entity::update_many()
            .col_expr(
                outbox_events::Column::Position,
                sea_orm::sea_query::Expr::value(position),
            )
            .filter(outbox_events::Column::Id.eq(event.id))
            .exec(&*tx)
            .await?;
        for endpoint in endpoints.iter().filter(|w| {
            (w.organization_id == event.organization_id
                || Some(w.organization_id) == event.agency_id)
                && endpoint_wants(w, &event.event_type)
        }) {
            webhook_deliveries::ActiveModel {
                id: Set(new_id()),
                event_id: Set(event.id),
                endpoint_id: Set(endpoint.id),
                organization_id: Set(endpoint.organization_id),
                status: Set(DeliveryStatus::Pending.as_str().to_owned()),
                attempts: Set(0),
                next_attempt_time: Set(now),
                lease_until: Set(None),
                last_status_code: Set(None),
                last_error: Set(String::new()),
                create_time: Set(now),
                update_time: Set(now),
                deliver_time: Set(None),
            }
            .insert(&*tx)
            .await?;
        }
    }
    event_sequence::Entity::update_many()
        .col_expr(
            event_sequence::Column::LastPosition,
            sea_orm::sea_query::Expr::value(position),
        )
        .filter(event_sequence::Column::Id.eq(1))
        .exec(&*tx)
        .await?;
    tx.commit().await?;
    store.signals().positions.send_replace(position);
    Ok(batch.len())
}

/// The last position handed out (by any replica).
pub async fn last_position<C: sea_orm::ConnectionTrait>(db: &C) -> Result<i64> {
    Ok(event_sequence::Entity::find_by_id(1)
        .one(db)
        .await?
        .map(|row| row.last_position)
        .unwrap_or(0))
}
