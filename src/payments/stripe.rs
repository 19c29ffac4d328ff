//! The Stripe gateway over its REST API: form-encoded PaymentIntent create, retrieve and
//! cancel, with `Authorization: Bearer sk_…` and an `Idempotency-Key` on create.
//!
//! Stripe's answers become tenantry errors: a `card_error` is `FAILED_PRECONDITION`
//! (`PAYMENT_FAILED`), an `idempotency_error` an invalid `request_id`, a bad amount an
//! invalid `amount`, an unknown intent `NOT_FOUND`, a 429, 5xx, timeout or connection
//! failure `UNAVAILABLE` (`GATEWAY_UNAVAILABLE`), and a refused API key an internal
//! error (logged without the key, never shown to the client).

use std::{collections::BTreeMap, time::Duration};

use reqwest::{StatusCode, header};
use serde::Deserialize;
use serde_json::Value;
use tonic::Code;

use crate::{
    config::Secret,
    domain::{
        billing::to_minor_units,
        money::{Currency, MICROS_PER_UNIT},
    },
    error::{Error, Result},
};

use super::{CreateIntent, Intent, IntentState, PaymentGateway};

/// Time allowed to connect to Stripe.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole Stripe call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The Stripe gateway.
#[derive(Clone)]
pub struct Stripe {
    base: String,
    key: Secret,
    http: reqwest::Client,
}

impl std::fmt::Debug for Stripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stripe")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: StripeError,
}

#[derive(Debug, Default, Deserialize)]
struct StripeError {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    param: Option<String>,
}

/// `GATEWAY_UNAVAILABLE`: Stripe could not be reached or asked us to come back later.
fn unavailable(detail: impl std::fmt::Display) -> Error {
    tracing::warn!(%detail, "stripe is unavailable");
    Error::rejected(
        Code::Unavailable,
        "GATEWAY_UNAVAILABLE",
        "the payment gateway is unavailable; retry later",
    )
}

/// A Stripe message in tenantry's style: lowercase start, no trailing period.
fn tidy(message: &str) -> String {
    let trimmed = message.trim().trim_end_matches('.');
    let mut chars = trimmed.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Maps a Stripe error answer for the intent `id` (empty on create) to an error.
fn gateway_error(status: StatusCode, body: &[u8], id: &str) -> Error {
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return unavailable(format!("stripe answered {status}"));
    }
    let error = serde_json::from_slice::<ErrorBody>(body)
        .unwrap_or_default()
        .error;
    let message = tidy(error.message.as_deref().unwrap_or("no message"));
    let code = error.code.clone().unwrap_or_default();
    if status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || error.kind == "authentication_error"
    {
        // Stripe's message echoes part of the key; keep it out of logs and answers.
        return Error::Internal(format!(
            "stripe refused the configured secret key ({status}, {})",
            error.kind
        ));
    }
    match error.kind.as_str() {
        "card_error" => {
            Error::precondition("PAYMENT_FAILED", format!("the payment failed: {message}"))
                .with("gateway_code", code)
                .with("decline_code", error.decline_code.unwrap_or_default())
        }
        "idempotency_error" => {
            Error::invalid("request_id", "was already used with different arguments")
        }
        _ if code == "resource_missing" || status == StatusCode::NOT_FOUND => {
            Error::not_found("payment intent", id)
        }
        "invalid_request_error" if error.param.as_deref() == Some("amount") => {
            Error::invalid("amount.amount", message)
        }
        "invalid_request_error" => Error::precondition(
            "GATEWAY_REJECTED",
            format!("the payment gateway refused the request: {message}"),
        )
        .with("gateway_code", code),
        _ => Error::Internal(format!(
            "stripe answered {status} with error type {:?} code {code:?}",
            error.kind
        )),
    }
}

/// Reads a PaymentIntent object (from an API answer or a webhook event) into an
/// [`Intent`]. `succeeded` → Succeeded; `canceled` → Canceled;
/// `requires_payment_method` after a failed attempt (`last_payment_error` set) →
/// Failed with Stripe's message; every other status (confirmation, action,
/// processing, capture) → Pending.
pub fn intent_from_json(value: &Value) -> Result<Intent> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default();
    let id = text("id");
    let amount = value.get("amount").and_then(Value::as_i64);
    let (Some(amount), false) = (amount, id.is_empty()) else {
        return Err(Error::Internal(
            "stripe sent a payment intent without id or amount".into(),
        ));
    };
    let currency = text("currency").to_uppercase();
    let minor_digits = currency
        .parse::<Currency>()
        .map(Currency::minor_digits)
        .unwrap_or(2);
    let per_minor = MICROS_PER_UNIT / 10_i64.pow(minor_digits);
    let failure = value
        .get("last_payment_error")
        .filter(|e| !e.is_null())
        .map(|e| {
            tidy(
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the payment failed"),
            )
        });
    let state = match (text("status"), failure) {
        ("succeeded", _) => IntentState::Succeeded,
        ("canceled", _) => IntentState::Canceled,
        ("requires_payment_method", Some(reason)) => IntentState::Failed(reason),
        _ => IntentState::Pending,
    };
    let metadata: BTreeMap<String, String> = value
        .get("metadata")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    Ok(Intent {
        id: id.to_owned(),
        client_secret: text("client_secret").to_owned(),
        amount_micros: amount.saturating_mul(per_minor),
        currency,
        state,
        metadata,
    })
}

/// Whether `id` may be put into a URL path (Stripe ids are `[A-Za-z0-9_]`).
fn safe_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Stripe {
    /// A client of the API at `base` (no trailing slash) with secret key `key`.
    pub fn new(base: &str, key: Secret) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Stripe {
            base: base.trim_end_matches('/').to_owned(),
            key,
            http,
        }
    }

    fn authorization(&self) -> Result<header::HeaderValue> {
        let mut value = header::HeaderValue::from_str(&format!(
            "Bearer {}",
            String::from_utf8_lossy(self.key.expose())
        ))
        .map_err(|_| Error::Internal("the stripe secret key is not a valid header".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Sends a request and reads the intent it answers with.
    async fn call(&self, request: reqwest::RequestBuilder, id: &str) -> Result<Intent> {
        let response = request
            .header(header::AUTHORIZATION, self.authorization()?)
            .send()
            .await
            .map_err(|e| unavailable(e.without_url()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(e.without_url()))?;
        if !status.is_success() {
            return Err(gateway_error(status, &body, id));
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| Error::Internal(format!("stripe sent an unreadable answer: {e}")))?;
        intent_from_json(&value)
    }

    fn intent_url(&self, id: &str) -> Result<String> {
        if !safe_id(id) {
            return Err(Error::not_found("payment intent", id));
        }
        Ok(format!("{}/v1/payment_intents/{id}", self.base))
    }
}

/// The form fields of a PaymentIntent create call.
fn create_form(request: &CreateIntent) -> Vec<(String, String)> {
    let mut form = vec![
        (
            "amount".to_owned(),
            to_minor_units(request.amount_micros, request.currency).to_string(),
        ),
        (
            "currency".to_owned(),
            request.currency.code().to_lowercase(),
        ),
        ("description".to_owned(), request.description.clone()),
        // The client confirms with the client secret (Stripe.js); Stripe picks the
        // methods enabled in the dashboard.
        (
            "automatic_payment_methods[enabled]".to_owned(),
            "true".to_owned(),
        ),
    ];
    if let Some(method) = &request.payment_method_id {
        form.push(("payment_method".to_owned(), method.clone()));
    }
    for (key, value) in &request.metadata {
        form.push((format!("metadata[{key}]"), value.clone()));
    }
    form
}

#[async_trait::async_trait]
impl PaymentGateway for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create_intent(&self, request: CreateIntent) -> Result<Intent> {
        let body = serde_urlencoded::to_string(create_form(&request))
            .map_err(|e| Error::Internal(format!("cannot encode a stripe form: {e}")))?;
        let call = self
            .http
            .post(format!("{}/v1/payment_intents", self.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("Idempotency-Key", request.idempotency_key.as_str())
            .body(body);
        self.call(call, "").await
    }

    async fn retrieve_intent(&self, id: &str) -> Result<Intent> {
        let call = self.http.get(self.intent_url(id)?);
        self.call(call, id).await
    }

    async fn cancel_intent(&self, id: &str) -> Result<Intent> {
        let current = self.retrieve_intent(id).await?;
        if matches!(
            current.state,
            IntentState::Succeeded | IntentState::Canceled
        ) {
            return Ok(current);
        }
        let call = self
            .http
            .post(format!("{}/cancel", self.intent_url(id)?))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("cancellation_reason=abandoned");
        match self.call(call, id).await {
            Ok(intent) => Ok(intent),
            // It moved on meanwhile (e.g. succeeded): report where it stands now.
            Err(Error::Rejected { .. }) => self.retrieve_intent(id).await,
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intents_map_statuses_and_minor_units() {
        let failed = serde_json::json!({
            "id": "pi_1", "amount": 1050, "currency": "eur",
            "status": "requires_payment_method",
            "last_payment_error": {"message": "Your card was declined."},
            "metadata": {"organization_id": "org_x"}
        });
        let intent = intent_from_json(&failed).unwrap();
        assert_eq!(intent.amount_micros, 10_500_000);
        assert_eq!(intent.currency, "EUR");
        assert_eq!(
            intent.state,
            IntentState::Failed("your card was declined".into())
        );
        assert_eq!(intent.metadata["organization_id"], "org_x");
        let fresh = serde_json::json!({
            "id": "pi_2", "amount": 50, "currency": "usd",
            "status": "requires_payment_method", "last_payment_error": null
        });
        assert_eq!(
            intent_from_json(&fresh).unwrap().state,
            IntentState::Pending
        );
    }

    #[test]
    fn errors_map_to_stable_reasons() {
        let card = br#"{"error":{"type":"card_error","code":"card_declined","message":"Your card was declined."}}"#;
        let e = gateway_error(StatusCode::PAYMENT_REQUIRED, card, "");
        assert_eq!(e.reason(), "PAYMENT_FAILED");
        assert_eq!(
            gateway_error(StatusCode::BAD_GATEWAY, b"", "").reason(),
            "GATEWAY_UNAVAILABLE"
        );
        let missing = br#"{"error":{"type":"invalid_request_error","code":"resource_missing"}}"#;
        assert_eq!(
            gateway_error(StatusCode::NOT_FOUND, missing, "pi_x").reason(),
            "NOT_FOUND"
        );
        let key = br#"{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: sk_test_****abcd"}}"#;
        let e = gateway_error(StatusCode::UNAUTHORIZED, key, "");
        assert!(!e.to_string().contains("sk_test"));
    }
}
