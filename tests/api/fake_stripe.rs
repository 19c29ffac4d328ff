//! A local stand-in for Stripe's PaymentIntent API on 127.0.0.1, behaving like Stripe
//! where tenantry relies on it: Bearer secret keys (401 otherwise), form-encoded
//! create with `metadata[k]`, `Idempotency-Key` replay (same key and parameters →
//! the first answer again; other parameters → 400 `idempotency_error`), Stripe's error
//! bodies (`amount_too_small`, `resource_missing`, `payment_intent_unexpected_state`),
//! retrieve and cancel. Tests drive payments with [`FakeStripe::succeed`] and
//! [`FakeStripe::decline`], and sign webhook payloads with [`sign`].

#![allow(dead_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The secret key the fake accepts.
pub const SECRET_KEY: &str = "sk_test_tenantry_fake_key_123456";
/// The webhook signing secret tests configure.
pub const WEBHOOK_SECRET: &str = "whsec_tenantry_test_secret";

/// A stored idempotent answer: the form it was given for, its status and body.
type Replay = (Vec<(String, String)>, StatusCode, Value);

#[derive(Default)]
struct Inner {
    intents: HashMap<String, Value>,
    /// Idempotency key → (form, status, body).
    replays: HashMap<String, Replay>,
    /// Every create call, form included (replays too).
    creates: Vec<CreateCall>,
    next: u64,
    down: bool,
}

/// One create call as received.
#[derive(Debug, Clone)]
pub struct CreateCall {
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// Form fields in order.
    pub form: Vec<(String, String)>,
}

impl CreateCall {
    /// The value of a form field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running fake.
#[derive(Clone)]
pub struct FakeStripe {
    url: String,
    inner: Arc<Mutex<Inner>>,
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(json!({ "error": body }))).into_response()
}

/// The 401 answer for a request without the right secret key, if it lacks it.
fn unauthorized(headers: &HeaderMap) -> Option<Response> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if given == format!("Bearer {SECRET_KEY}") {
        return None;
    }
    let tail: String = given
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Some(error(
        StatusCode::UNAUTHORIZED,
        json!({
            "type": "invalid_request_error",
            "message": format!("Invalid API Key provided: sk_test_****{tail}"),
        }),
    ))
}

async fn create(State(fake): State<FakeStripe>, headers: HeaderMap, body: Bytes) -> Response {
    if fake.inner.lock().unwrap().down {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"type": "api_error", "message": "down"}),
        );
    }
    if let Some(refused) = unauthorized(&headers) {
        return refused;
    }
    let form: Vec<(String, String)> = match serde_urlencoded::from_bytes(&body) {
        Ok(form) => form,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({"type": "invalid_request_error", "message": "Invalid form body"}),
            );
        }
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut inner = fake.inner.lock().unwrap();
    inner.creates.push(CreateCall {
        idempotency_key: key.clone(),
        form: form.clone(),
    });
    if let Some(key) = &key
        && let Some((first_form, status, body)) = inner.replays.get(key)
    {
        if *first_form != form {
            return error(
                StatusCode::BAD_REQUEST,
                json!({
                    "type": "idempotency_error",
                    "message": "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                }),
            );
        }
        let mut response = (*status, axum::Json(body.clone())).into_response();
        response
            .headers_mut()
            .insert("idempotent-replayed", "true".parse().unwrap());
        return response;
    }
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (status, body) = match field("amount").and_then(|a| a.parse::<i64>().ok()) {
        None => (
            StatusCode::BAD_REQUEST,
            json!({"error": {"type": "invalid_request_error", "code": "parameter_missing",
                "param": "amount", "message": "Missing required param: amount."}}),
        ),
        Some(amount) if amount < 50 => (
            StatusCode::BAD_REQUEST,
            json!({"error": {"type": "invalid_request_error", "code": "amount_too_small",
                "param": "amount", "message": "Amount must be at least $0.50 usd"}}),
        ),
        Some(amount) => {
            inner.next += 1;
            let id = format!("pi_fake{:06}", inner.next);
            let metadata: serde_json::Map<String, Value> = form
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix("metadata[")
                        .and_then(|k| k.strip_suffix(']'))
                        .map(|k| (k.to_owned(), Value::String(v.clone())))
                })
                .collect();
            let intent = json!({
                "id": id,
                "object": "payment_intent",
                "amount": amount,
                "currency": field("currency").unwrap_or_default(),
                "status": if field("payment_method").is_some() {
                    "requires_confirmation"
                } else {
                    "requires_payment_method"
                },
                "client_secret": format!("{id}_secret_fake{}", inner.next),
                "payment_method": field("payment_method"),
                "description": field("description"),
                "metadata": metadata,
                "last_payment_error": null,
            });
            inner.intents.insert(id, intent.clone());
            (StatusCode::OK, intent)
        }
    };
    // Like Stripe, a request refused by validation saves no idempotent result.
    if let Some(key) = key
        && status == StatusCode::OK
    {
        inner.replays.insert(key, (form, status, body.clone()));
    }
    (status, axum::Json(body)).into_response()
}

fn missing(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        json!({"type": "invalid_request_error", "code": "resource_missing", "param": "intent",
            "message": format!("No such payment_intent: '{id}'")}),
    )
}

async fn retrieve(
    State(fake): State<FakeStripe>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = unauthorized(&headers) {
        return refused;
    }
    match fake.inner.lock().unwrap().intents.get(&id) {
        Some(intent) => axum::Json(intent.clone()).into_response(),
        None => missing(&id),
    }
}

async fn cancel(
    State(fake): State<FakeStripe>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = unauthorized(&headers) {
        return refused;
    }
    let mut inner = fake.inner.lock().unwrap();
    let Some(intent) = inner.intents.get_mut(&id) else {
        return missing(&id);
    };
    let status = intent["status"].as_str().unwrap_or_default().to_owned();
    if status == "succeeded" || status == "canceled" {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"type": "invalid_request_error", "code": "payment_intent_unexpected_state",
                "message": format!("You cannot cancel this PaymentIntent because it has a status of {status}.")}),
        );
    }
    intent["status"] = json!("canceled");
    axum::Json(intent.clone()).into_response()
}

impl FakeStripe {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> FakeStripe {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake stripe");
        let fake = FakeStripe {
            url: format!("http://{}", listener.local_addr().unwrap()),
            inner: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/payment_intents", post(create))
            .route("/v1/payment_intents/{id}", get(retrieve))
            .route("/v1/payment_intents/{id}/cancel", post(cancel))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    /// The base URL to configure as `stripe_api_base`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The intent as Stripe would return it.
    pub fn intent(&self, id: &str) -> Value {
        self.inner.lock().unwrap().intents[id].clone()
    }

    /// Number of intents created (replays excluded).
    pub fn intent_count(&self) -> usize {
        self.inner.lock().unwrap().intents.len()
    }

    /// Every create call received.
    pub fn creates(&self) -> Vec<CreateCall> {
        self.inner.lock().unwrap().creates.clone()
    }

    /// The payer confirmed and the charge went through.
    pub fn succeed(&self, id: &str) -> Value {
        let mut inner = self.inner.lock().unwrap();
        let intent = inner.intents.get_mut(id).expect("known intent");
        intent["status"] = json!("succeeded");
        intent["last_payment_error"] = Value::Null;
        intent.clone()
    }

    /// The payer confirmed and the card was declined.
    pub fn decline(&self, id: &str) -> Value {
        let mut inner = self.inner.lock().unwrap();
        let intent = inner.intents.get_mut(id).expect("known intent");
        intent["status"] = json!("requires_payment_method");
        intent["last_payment_error"] = json!({
            "type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
            "message": "Your card was declined.",
        });
        intent.clone()
    }

    /// Makes every create call answer 503 (or back to normal).
    pub fn set_down(&self, down: bool) {
        self.inner.lock().unwrap().down = down;
    }
}

/// A webhook event body of `kind` about `intent`.
pub fn event(id: &str, kind: &str, intent: &Value) -> String {
    json!({
        "id": id,
        "object": "event",
        "type": kind,
        "api_version": "2024-06-20",
        "created": chrono::Utc::now().timestamp(),
        "livemode": false,
        "data": { "object": intent },
    })
    .to_string()
}

/// The `Stripe-Signature` header Stripe would send for `body` signed at `t` with
/// `secret`.
pub fn sign(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}
