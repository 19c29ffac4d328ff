//! WatchEvents: an organization's events, live, resuming after a cursor.
//!
//! A stream reads the outbox by position: `position > cursor` for the organization
//! (and, for an agency read by its AGENCY_ADMIN or an operator, the events its tenants
//! emitted while under it, as the audit log does), in position order, 100 at a time;
//! caught up, it waits for this process's sequencer to hand out new positions, for the
//! poll interval (events sequenced by other replicas), or for shutdown (the stream
//! ends). It ends as well when the client goes away.
//!
//! Reading `position > cursor` never skips an event: positions are assigned by one
//! sequencer at a time under the `event_sequence` row lock, gap-free,
//! and each batch of positions becomes visible at once when the sequencer commits. So
//! once a reader has seen position N, every event that will ever get a position below
//! N is already visible with it; events not yet numbered get positions above every
//! visible one. An event's cursor is its position in decimal.

use std::pin::Pin;

use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::Status;
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        events::types,
        ids::{self, IdKind},
    },
    error::{Result, Violations},
    events::outbox,
    grpc::{Ctx, convert},
    proto,
    storage::entities::outbox_events,
};

/// The stream WatchEvents answers with.
pub type EventStream =
    Pin<Box<dyn Stream<Item = std::result::Result<proto::WatchEventsResponse, Status>> + Send>>;

/// Events read per query.
const BATCH: u64 = 100;
/// Events buffered for a slow client before the reader waits.
const BUFFER: usize = 64;

/// What one stream reads.
struct Scope {
    org_id: Uuid,
    with_tenants: bool,
    types: Vec<String>,
}

/// WatchEvents: authorizes the organization, validates the type filter and the cursor,
/// then streams the events after the cursor (after the current last position when
/// none is given).
pub async fn watch(
    ctx: Ctx,
    caller: Caller,
    req: proto::WatchEventsRequest,
) -> Result<EventStream> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    for (i, name) in req.types.iter().enumerate() {
        if !types::is_known(name) {
            v.add(
                format!("types[{i}]"),
                format!("unknown event type {name:?}"),
            );
        }
    }
    let cursor = if req.after_cursor.is_empty() {
        None
    } else {
        v.check("after_cursor", parse_cursor(&req.after_cursor))
    };
    v.finish()?;
    let cursor = match cursor {
        Some(cursor) => cursor,
        None => outbox::last_position(ctx.store.db()).await?,
    };
    let org = access.org();
    let scope = Scope {
        org_id: org.id,
        with_tenants: access.sees_tenants(),
        types: req.types,
    };
    let (sender, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(pump(ctx, scope, cursor, sender));
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// A cursor: the decimal position of an event.
fn parse_cursor(text: &str) -> std::result::Result<i64, String> {
    text.parse::<i64>()
        .ok()
        .filter(|p| *p >= 0 && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| "must be the cursor of an earlier event".to_owned())
}

type Sender = mpsc::Sender<std::result::Result<proto::WatchEventsResponse, Status>>;

/// Sends the scope's events after `cursor` until the client leaves or the server stops.
async fn pump(ctx: Ctx, scope: Scope, mut cursor: i64, sender: Sender) {
    let signals = ctx.store.signals().clone();
    let mut positions = signals.positions.subscribe();
    let mut stopping = signals.stopping.subscribe();
    let poll = ctx.settings.events.poll_interval;
    loop {
        if *stopping.borrow_and_update() {
            return;
        }
        // Marked seen before reading, so a position handed out meanwhile wakes the wait.
        positions.borrow_and_update();
        let batch = match read(&ctx, &scope, cursor).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "reading events for a watcher failed");
                let _ = sender.send(Err(Status::from(error))).await;
                return;
            }
        };
        let full = batch.len() as u64 == BATCH;
        for (position, event) in batch {
            cursor = position;
            let response = proto::WatchEventsResponse {
                event: Some(to_proto(&event, position)),
            };
            if sender.send(Ok(response)).await.is_err() {
                return;
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            Ok(()) = positions.changed() => {}
            () = tokio::time::sleep(poll) => {}
            _ = stopping.wait_for(|s| *s) => return,
            () = sender.closed() => return,
        }
    }
}

/// The next events of the scope after `cursor`, in position order, with their positions.
async fn read(ctx: &Ctx, scope: &Scope, cursor: i64) -> Result<Vec<(i64, outbox_events::Model)>> {
    let mut owner = Condition::any().add(outbox_events::Column::OrganizationId.eq(scope.org_id));
    if scope.with_tenants {
        owner = owner.add(outbox_events::Column::AgencyId.eq(scope.org_id));
    }
    let mut query = outbox_events::Entity::find()
        .filter(outbox_events::Column::Position.gt(cursor))
        .filter(owner);
    if !scope.types.is_empty() {
        query = query.filter(outbox_events::Column::EventType.is_in(scope.types.iter().cloned()));
    }
    let events = query
        .order_by_asc(outbox_events::Column::Position)
        .limit(BATCH)
        .all(ctx.store.db())
        .await?;
    // `position > cursor` selected numbered events only: every one has its position.
    Ok(events
        .into_iter()
        .filter_map(|event| Some((event.position?, event)))
        .collect())
}

fn to_proto(event: &outbox_events::Model, position: i64) -> proto::Event {
    proto::Event {
        id: ids::encode(IdKind::Event, event.id),
        r#type: event.event_type.clone(),
        organization_id: ids::encode(IdKind::Organization, event.organization_id),
        payload: event.payload.clone(),
        create_time: convert::timestamp(event.create_time),
        cursor: position.to_string(),
    }
}
