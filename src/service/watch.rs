//! WatchEvents: an organization's events, live, resuming after a cursor.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::Status;

use crate::{
    auth::Caller,
    error::Result,
    grpc::{Ctx, pending},
    proto,
};

/// The stream WatchEvents answers with.
pub type EventStream =
    Pin<Box<dyn Stream<Item = std::result::Result<proto::WatchEventsResponse, Status>> + Send>>;

/// WatchEvents (not built yet).
pub async fn watch(
    ctx: Ctx,
    caller: Caller,
    req: proto::WatchEventsRequest,
) -> Result<EventStream> {
    pending(
        &ctx,
        &caller,
        &[("organization_id", req.organization_id.as_str())],
        "event streams",
    )
    .await
}
