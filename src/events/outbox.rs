//! The outbox: events written with their change, numbered later by the sequencer.

use chrono::SecondsFormat;
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, LockType},
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
pub(crate) const BATCH: usize = 500;
/// Deliveries written per INSERT (13 columns each, within every backend's bind limit).
const DELIVERY_INSERT_CHUNK: usize = 500;

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
    let agency_id = agency_of(org);
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

/// The agency that sees `org`'s events along with its own: a tenant's parent.
fn agency_of(org: &organizations::Model) -> Option<Uuid> {
    match org.kind.parse::<OrgKind>() {
        Ok(OrgKind::Tenant) => org.parent_id,
        _ => None,
    }
}

/// Emits one event for each of `parties` (e.g. the two sides of a transfer), except for
/// a party that is another party's agency: it sees that party's event already.
pub async fn emit_for_parties(
    tx: &Tx,
    now: i64,
    parties: &[&organizations::Model],
    event_type: &'static str,
    request_id: &str,
    data: Value,
) -> Result<()> {
    for party in parties {
        let seen_already = parties
            .iter()
            .any(|other| other.id != party.id && agency_of(other) == Some(party.id));
        if !seen_already {
            emit(tx, now, party, event_type, request_id, data.clone()).await?;
        }
    }
    Ok(())
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

/// An endpoint as the fan-out reads it: its filter parsed once per batch.
struct Subscriber {
    id: Uuid,
    organization_id: Uuid,
    include_tenants: bool,
    /// Event types delivered; empty = all.
    types: Vec<String>,
}

impl Subscriber {
    fn of(endpoint: webhook_endpoints::Model) -> Subscriber {
        Subscriber {
            types: serde_json::from_str(&endpoint.event_types).unwrap_or_default(),
            id: endpoint.id,
            organization_id: endpoint.organization_id,
            include_tenants: endpoint.include_tenants,
        }
    }

    /// Whether the endpoint receives `event`: the organization's own events, its
    /// tenants' when it includes them, of the types it filters on.
    fn wants(&self, event: &outbox_events::Model) -> bool {
        let owner = self.organization_id == event.organization_id
            || (self.include_tenants && Some(self.organization_id) == event.agency_id);
        owner && (self.types.is_empty() || self.types.contains(&event.event_type))
    }
}

/// Numbers events written since the last round (one organization's in the order of its
/// changes: by id, made under the change's locks) and creates their
/// webhook deliveries. Returns how many events were numbered (call again while it
/// returns a full batch).
pub async fn sequence(store: &Store) -> Result<usize> {
    // Most rounds find nothing: look before taking the sequence lock (and, on SQLite,
    // the single writer) for nothing.
    let waiting = outbox_events::Entity::find()
        .select_only()
        .column(outbox_events::Column::Id)
        .filter(outbox_events::Column::Position.is_null())
        .into_tuple::<Uuid>()
        .one(store.db())
        .await?;
    if waiting.is_none() {
        return Ok(0);
    }
    let tx = store.write().await?;
    let counter = event_sequence::Entity::find_by_id(1)
        .lock(LockType::Update)
        .one(&*tx)
        .await?
        .ok_or_else(|| Error::Internal("the event_sequence row is missing".into()))?;
    // Ids are UUID v7 made by `emit` under the change's locks, so one organization's
    // events are numbered in the order of its changes.
    let batch = outbox_events::Entity::find()
        .filter(outbox_events::Column::Position.is_null())
        .order_by_asc(outbox_events::Column::Id)
        .limit(BATCH as u64)
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
    let subscribers: Vec<Subscriber> = webhook_endpoints::Entity::find()
        .filter(webhook_endpoints::Column::OrganizationId.is_in(owners))
        .all(&*tx)
        .await?
        .into_iter()
        .map(Subscriber::of)
        .collect();
    let now = store.now();
    let mut position = counter.last_position;
    let mut deliveries = Vec::new();
    for event in &batch {
        position += 1;
        outbox_events::Entity::update_many()
            .col_expr(outbox_events::Column::Position, Expr::value(position))
            .filter(outbox_events::Column::Id.eq(event.id))
            .exec(&*tx)
            .await?;
        deliveries.extend(subscribers.iter().filter(|s| s.wants(event)).map(|s| {
            webhook_deliveries::ActiveModel {
                id: Set(new_id()),
                event_id: Set(event.id),
                endpoint_id: Set(s.id),
                organization_id: Set(s.organization_id),
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
        }));
    }
    for chunk in deliveries.chunks(DELIVERY_INSERT_CHUNK) {
        webhook_deliveries::Entity::insert_many(chunk.to_vec())
            .exec(&*tx)
            .await?;
    }
    event_sequence::Entity::update_many()
        .col_expr(event_sequence::Column::LastPosition, Expr::value(position))
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
