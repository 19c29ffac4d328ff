//! Webhook delivery: signed JSON POSTs to an organization's endpoints, retried with
//! exponential backoff and dead-lettered after the last attempt.
//!
//! # What a receiver gets
//!
//! One `POST` per event and endpoint, body `application/json`:
//!
//! ```json
//! {"id": "evt_…", "type": "organization.updated", "organization_id": "org_…",
//!  "agency_id": "org_…" | null, "create_time": "2026-01-01T00:00:00.000000Z",
//!  "request_id": "…", "position": 42, "data": {…}}
//! ```
//!
//! with these headers:
//!
//! | header | value |
//! | --- | --- |
//! | `content-type` | `application/json` |
//! | `user-agent` | `tenantry-webhooks/1` |
//! | `tenantry-event-id` | `evt_…`, the same on every retry |
//! | `tenantry-event-type` | e.g. `organization.updated` |
//! | `tenantry-delivery-id` | `whd_…`, one per event and endpoint |
//! | `tenantry-delivery-attempt` | `1`, `2`, … |
//! | `tenantry-timestamp` | unix seconds when this attempt was signed |
//! | `tenantry-signature` | `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>` |
//!
//! Any `2xx` answer within the timeout (`--webhook-timeout-seconds`, 10 s by default)
//! acknowledges the delivery. Anything else (another status, redirects included, a
//! timeout, a refused connection) is retried after 30 s, 60 s, 120 s … (doubling, at most
//! an hour; `--webhook-retry-base-ms`) until `--webhook-max-attempts` (8) attempts have
//! failed; the delivery is then kept as `DEAD`. Deleting the endpoint cancels its
//! pending deliveries.
//!
//! # How a receiver verifies a delivery
//!
//! 1. Take `t` and `v1` from `tenantry-signature`.
//! 2. Compute `hex(HMAC-SHA256(secret, t + "." + raw_body))` over the raw request
//!    bytes (before any JSON parsing), with the `whsec_…` secret returned by
//!    CreateWebhookEndpoint used as is (its UTF-8 bytes) as the key.
//! 3. Compare it with `v1` in constant time; reject on mismatch.
//! 4. Reject if `t` is too far from the receiver's clock (e.g. more than 5 minutes), so
//!    a captured request cannot be replayed later.
//! 5. Delivery is at least once: deduplicate by `tenantry-event-id` (a retry after a
//!    lost acknowledgement carries the same event id).
//!
//! Events of one organization are numbered (`position`) in the order of its changes, but
//! deliveries run concurrently and retries overtake nothing: order by `position` if it
//! matters.

use std::sync::LazyLock;

use hmac::{Hmac, Mac};
use sea_orm::{EntityTrait, sea_query::Expr};
use sha2::Sha256;
use uuid::Uuid;

use crate::{
    domain::{
        events::DeliveryStatus,
        ids::{self, IdKind},
    },
    error::{Error, Result},
    events::{
        lease::{self, Claimed, MAX_ERROR_LEN},
        outbox,
    },
    grpc::Ctx,
    storage::entities::{outbox_events, webhook_deliveries, webhook_endpoints},
};

/// Deliveries attempted at the same time.
const CONCURRENCY: usize = 8;

/// The `user-agent` of deliveries.
pub const USER_AGENT: &str = "tenantry-webhooks/1";

/// One client for every delivery: pooled connections, no redirects (a redirect is a
/// failed delivery, so a receiver cannot bounce signed payloads elsewhere).
static CLIENT: LazyLock<std::result::Result<reqwest::Client, String>> = LazyLock::new(|| {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| e.to_string())
});

fn client() -> Result<&'static reqwest::Client> {
    CLIENT
        .as_ref()
        .map_err(|e| Error::Internal(format!("building the webhook HTTP client failed: {e}")))
}

/// The `tenantry-signature` value for `body` signed at `timestamp` (unix seconds):
/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> Result<String> {
    // HMAC takes keys of any length; the error cannot happen.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .map_err(|e| Error::Internal(format!("webhook signing key refused: {e}")))?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// Attempts the due deliveries. Returns how many were attempted.
pub async fn deliver_due(ctx: &Ctx) -> Result<usize> {
    let due = lease::due_ids::<webhook_deliveries::Entity>(&ctx.store, ctx.store.now()).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let client = client()?;
    Ok(
        lease::run_claimed(due, CONCURRENCY, "a webhook delivery", |id| {
            attempt(ctx, client, id)
        })
        .await,
    )
}

/// What one attempt came to.
enum Outcome {
    /// 2xx.
    Delivered(u16),
    /// Anything else: the status code if there was an answer, and a short reason.
    Failed(Option<u16>, String),
    /// The endpoint was deleted meanwhile.
    Canceled,
}

/// Claims, sends and records one delivery. False when another dispatcher had it.
async fn attempt(ctx: &Ctx, client: &reqwest::Client, id: Uuid) -> Result<bool> {
    let timeout = ctx.settings.events.webhook_timeout;
    let Some(Claimed {
        row: delivery,
        lease_until,
    }) = lease::claim::<webhook_deliveries::Entity>(&ctx.store, id, timeout).await?
    else {
        return Ok(false);
    };
    let db = ctx.store.db();
    let endpoint = webhook_endpoints::Entity::find_by_id(delivery.endpoint_id)
        .one(db)
        .await?;
    let attempt_number = delivery.attempts.saturating_add(1);
    let outcome = match endpoint {
        None => Outcome::Canceled,
        // Outbox rows are never deleted; should one vanish, the delivery fails its
        // attempts and is dead-lettered rather than retried forever.
        Some(endpoint) => match outbox_events::Entity::find_by_id(delivery.event_id)
            .one(db)
            .await?
        {
            Some(event) => send(ctx, client, &endpoint, &event, &delivery, attempt_number).await,
            None => Outcome::Failed(None, "the event no longer exists".into()),
        },
    };
    record(ctx, &delivery, lease_until, attempt_number, outcome).await?;
    Ok(true)
}

/// POSTs the signed envelope of `event` to `endpoint`.
async fn send(
    ctx: &Ctx,
    client: &reqwest::Client,
    endpoint: &webhook_endpoints::Model,
    event: &outbox_events::Model,
    delivery: &webhook_deliveries::Model,
    attempt_number: i64,
) -> Outcome {
    let body = outbox::envelope(event).to_string().into_bytes();
    let timestamp = ctx.store.now().div_euclid(1_000_000);
    let signature = match signature(&endpoint.secret, timestamp, &body) {
        Ok(signature) => signature,
        Err(e) => return Outcome::Failed(None, e.to_string()),
    };
    let request = client
        .post(&endpoint.url)
        .timeout(ctx.settings.events.webhook_timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("tenantry-event-id", ids::encode(IdKind::Event, event.id))
        .header("tenantry-event-type", event.event_type.as_str())
        .header(
            "tenantry-delivery-id",
            ids::encode(IdKind::WebhookDelivery, delivery.id),
        )
        .header("tenantry-delivery-attempt", attempt_number.to_string())
        .header("tenantry-timestamp", timestamp.to_string())
        .header("tenantry-signature", signature)
        .body(body);
    match request.send().await {
        Ok(response) if response.status().is_success() => {
            Outcome::Delivered(response.status().as_u16())
        }
        Ok(response) => {
            let status = response.status();
            Outcome::Failed(Some(status.as_u16()), format!("answered http {status}"))
        }
        Err(e) => Outcome::Failed(None, describe(e)),
    }
}

/// A short description of a transport failure with its causes, without the URL (it may
/// carry a receiver's token in its query).
fn describe(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let error = error.without_url();
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(MAX_ERROR_LEN).collect()
}

/// Writes the outcome of an attempt, if this dispatcher's claim still holds (the
/// endpoint's deletion may have cancelled the delivery meanwhile).
async fn record(
    ctx: &Ctx,
    delivery: &webhook_deliveries::Model,
    lease_until: i64,
    attempt_number: i64,
    outcome: Outcome,
) -> Result<()> {
    use webhook_deliveries::Column as D;
    let now = ctx.store.now();
    let update = lease::settle::<webhook_deliveries::Entity>(delivery.id, lease_until, now);
    let update = match outcome {
        Outcome::Delivered(code) => update
            .col_expr(D::Status, Expr::value(DeliveryStatus::Delivered.as_str()))
            .col_expr(D::Attempts, Expr::value(attempt_number))
            .col_expr(D::LastStatusCode, Expr::value(Some(i64::from(code))))
            .col_expr(D::LastError, Expr::value(""))
            .col_expr(D::DeliverTime, Expr::value(Some(now))),
        Outcome::Canceled => {
            update.col_expr(D::Status, Expr::value(DeliveryStatus::Canceled.as_str()))
        }
        Outcome::Failed(code, error) => {
            let update = update
                .col_expr(D::Attempts, Expr::value(attempt_number))
                .col_expr(D::LastStatusCode, Expr::value(code.map(i64::from)))
                .col_expr(D::LastError, Expr::value(error.clone()));
            match lease::after_failure(&ctx.settings.events, attempt_number, now) {
                None => {
                    tracing::warn!(
                        delivery_id = %ids::encode(IdKind::WebhookDelivery, delivery.id),
                        endpoint_id = %ids::encode(IdKind::WebhookEndpoint, delivery.endpoint_id),
                        event_id = %ids::encode(IdKind::Event, delivery.event_id),
                        attempts = attempt_number,
                        error = %error,
                        "webhook delivery dead-lettered after its last attempt"
                    );
                    update.col_expr(D::Status, Expr::value(DeliveryStatus::Dead.as_str()))
                }
                Some(next) => {
                    tracing::info!(
                        delivery_id = %ids::encode(IdKind::WebhookDelivery, delivery.id),
                        attempts = attempt_number,
                        error = %error,
                        retry_in_ms = (next - now) / 1_000,
                        "webhook delivery failed; retrying"
                    );
                    update.col_expr(D::NextAttemptTime, Expr::value(next))
                }
            }
        }
    };
    let tx = ctx.store.write().await?;
    update.exec(&*tx).await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_the_timestamp_and_the_body() {
        let sign = |secret: &str, t: i64, body: &[u8]| signature(secret, t, body).unwrap();
        let a = sign("whsec_x", 1_700_000_000, b"{}");
        assert!(a.starts_with("t=1700000000,v1="));
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, sign("whsec_x", 1_700_000_001, b"{}"));
        assert_ne!(a, sign("whsec_x", 1_700_000_000, b"{ }"));
        assert_ne!(a, sign("whsec_y", 1_700_000_000, b"{}"));
    }
}
