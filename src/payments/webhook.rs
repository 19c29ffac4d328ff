//! `POST /webhooks/stripe` on the HTTP port.
//!
//! The raw body is checked against `Stripe-Signature` (`t=<unix seconds>,v1=<hex>,…`):
//! HMAC-SHA256 of `"{t}.{body}"` keyed with the webhook secret must equal one of the
//! `v1` signatures (compared in constant time; several are allowed while Stripe rolls
//! a secret), and `t` must be within 300 seconds of now (either side).
//!
//! Answers: 404 when no webhook secret is configured (the endpoint is off, as for
//! `--stripe-webhook-secret` unset); 400 for a missing or bad signature, a stale
//! timestamp or an unreadable event; 200 once handled, for a redelivered event (its id
//! is stored once in `stripe_events`), for event types tenantry does not act on, for
//! intents no purchase uses, and for refusals a retry cannot fix (logged); 500 for
//! failures worth Stripe's retry (database, internal).
//!
//! `payment_intent.succeeded` settles the purchase through the same exactly-once path as
//! CompletePayment (an add-on service purchase through CompleteServicePurchase's);
//! `payment_intent.payment_failed` and `payment_intent.canceled` mark it FAILED with
//! Stripe's message.

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::{MethodRouter, post},
};
use hmac::{Hmac, Mac};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::Value;
use sha2::Sha256;
use tonic::Code;

use crate::{
    error::{Error, Result},
    grpc::Ctx,
    payments::{IntentState, stripe},
    service::{
        billing::credits::{
            completion::{self, By, IntentSource},
            purchase::system_principal,
        },
        subscriptions::addons,
    },
    storage::entities::credit_transactions as txns,
};

/// Largest accepted distance between the signature's timestamp and now.
pub const TOLERANCE_SECONDS: i64 = 300;

/// The route, with its own state, for any router.
pub fn route<S: Clone + Send + Sync + 'static>(ctx: Ctx) -> MethodRouter<S> {
    post(receive).with_state(ctx)
}

/// Why a signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No `t=` or no `v1=` element.
    Malformed,
    /// `t` is more than the tolerance away from now.
    Stale,
    /// No `v1` signature matches.
    Mismatch,
}

impl SignatureError {
    fn message(self) -> &'static str {
        match self {
            SignatureError::Malformed => "missing or malformed Stripe-Signature header",
            SignatureError::Stale => "the signature timestamp is outside the tolerance",
            SignatureError::Mismatch => "no signature matches the payload",
        }
    }
}

/// Checks a `Stripe-Signature` header for `body` at `now` (unix seconds).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = Some(value),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return Err(SignatureError::Malformed);
    };
    let seconds: i64 = timestamp.parse().map_err(|_| SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let matched = signatures.iter().any(|signature| {
        hex::decode(signature).is_ok_and(|bytes| mac.clone().verify_slice(&bytes).is_ok())
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    if now.abs_diff(seconds) > TOLERANCE_SECONDS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

async fn receive(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let Some(secret) = &ctx.settings.billing.stripe_webhook_secret else {
        return (StatusCode::NOT_FOUND, "stripe webhooks are not configured");
    };
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = ctx.store.now().div_euclid(1_000_000);
    if let Err(error) = verify(secret.expose(), header, &body, now) {
        tracing::warn!(?error, "refused a stripe webhook");
        return (StatusCode::BAD_REQUEST, error.message());
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "the event is not JSON");
    };
    let id = event.get("id").and_then(Value::as_str).unwrap_or_default();
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let object = event.pointer("/data/object");
    let (false, false, Some(object)) = (id.is_empty(), kind.is_empty(), object) else {
        return (
            StatusCode::BAD_REQUEST,
            "the event lacks id, type or data.object",
        );
    };
    match handle(&ctx, id, kind, object).await {
        Ok(outcome) => (StatusCode::OK, outcome),
        Err(error @ (Error::Database(_) | Error::Internal(_))) => {
            tracing::error!(event = id, %error, "handling a stripe webhook failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
        Err(
            error @ Error::Rejected {
                code: Code::Unavailable,
                ..
            },
        ) => {
            tracing::warn!(event = id, %error, "handling a stripe webhook failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "temporarily unavailable")
        }
        Err(error) => {
            tracing::error!(event = id, %error, "a stripe webhook was refused; not retryable");
            (StatusCode::OK, "refused")
        }
    }
}

async fn handle(ctx: &Ctx, id: &str, kind: &str, object: &Value) -> Result<&'static str> {
    let failed = match kind {
        "payment_intent.succeeded" => false,
        "payment_intent.payment_failed" | "payment_intent.canceled" => true,
        _ => return Ok("ignored"),
    };
    let mut intent = stripe::intent_from_json(object)?;
    if failed && intent.state == IntentState::Pending {
        intent.state = IntentState::Failed("the payment failed".into());
    }
    let Some(purchase) = txns::Entity::find()
        .filter(txns::Column::PaymentIntentId.eq(intent.id.as_str()))
        .filter(txns::Column::Gateway.eq("stripe"))
        .one(ctx.store.db())
        .await?
    else {
        // An add-on service purchase settles through its own exactly-once path.
        if let Some(service) =
            addons::purchase_paid_by(ctx.store.db(), "stripe", &intent.id).await?
        {
            let principal = system_principal("stripe-webhook");
            let by = By {
                principal: &principal,
                action: "StripeWebhook",
                request_id: id,
                note: "",
                stripe_event: Some((id, kind)),
            };
            addons::complete_with_intent(
                ctx,
                by,
                service.id,
                IntentSource::Known(&intent),
                None,
                |_| crate::proto::CompleteServicePurchaseResponse::default(),
            )
            .await?;
            return Ok("ok");
        }
        // Not ours (another system on the same Stripe account), or not recorded yet:
        // do not remember the event, so a redelivery is handled afresh.
        return Ok("ignored: no purchase uses this payment intent");
    };
    let principal = system_principal("stripe-webhook");
    let by = By {
        principal: &principal,
        action: "StripeWebhook",
        request_id: id,
        note: "",
        stripe_event: Some((id, kind)),
    };
    completion::complete(ctx, by, purchase.id, &intent, None, |_| {
        crate::proto::CompletePaymentResponse::default()
    })
    .await?;
    Ok("ok")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signatures_follow_stripes_scheme() {
        let secret = b"whsec_test";
        let body = br#"{"id":"evt_1"}"#;
        let good = sign(secret, 1_000, body);
        let header = format!("t=1000,v1={},v1={good},v0=abc", "00".repeat(32));
        assert_eq!(verify(secret, &header, body, 1_100), Ok(()));
        assert_eq!(
            verify(secret, &header, body, 1_301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"other", &header, body, 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(secret, &header, b"{}", 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(secret, "v1=abc", body, 1_000),
            Err(SignatureError::Malformed)
        );
    }
}
