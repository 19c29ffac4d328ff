//! Payment gateways: the [`PaymentGateway`] trait with a Stripe implementation over its
//! REST API and a `manual` one for the embedded default, whose intents an operator
//! confirms (ConfirmManualPayment or `tenantry payments confirm`).

pub mod manual;
pub mod stripe;
pub mod webhook;

use std::{collections::BTreeMap, sync::Arc};

use uuid::Uuid;

use crate::{
    config::BillingSettings,
    domain::money::Currency,
    error::{Error, Result},
    storage::Store,
};

/// What to create an intent for.
#[derive(Debug, Clone)]
pub struct CreateIntent {
    /// The paying organization.
    pub organization_id: Uuid,
    /// Amount in micro-units; a whole number of minor units.
    pub amount_micros: i64,
    /// Currency.
    pub currency: Currency,
    /// Sent as the gateway's idempotency key: the same key returns the same intent.
    pub idempotency_key: String,
    /// The gateway's payment method, e.g. `pm_card_visa` (optional).
    pub payment_method_id: Option<String>,
    /// Shown to the payer.
    pub description: String,
    /// Attached to the intent (e.g. `organization_id`, `purpose`).
    pub metadata: BTreeMap<String, String>,
}

/// Where an intent stands, reduced to what tenantry acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentState {
    /// Not paid yet (needs confirmation, action, or is processing).
    Pending,
    /// Paid.
    Succeeded,
    /// The payment failed; the reason as reported.
    Failed(String),
    /// Cancelled before payment.
    Canceled,
}

/// A payment intent as the gateway reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The gateway's id, e.g. `pi_...`.
    pub id: String,
    /// Secret for client-side confirmation.
    pub client_secret: String,
    /// Amount in micro-units.
    pub amount_micros: i64,
    /// Currency code (upper case).
    pub currency: String,
    /// State.
    pub state: IntentState,
    /// Metadata attached at creation.
    pub metadata: BTreeMap<String, String>,
}

/// A payment gateway.
#[async_trait::async_trait]
pub trait PaymentGateway: Send + Sync + std::fmt::Debug {
    /// `stripe` or `manual`.
    fn name(&self) -> &'static str;
    /// Creates (or, for a repeated idempotency key, returns) an intent.
    async fn create_intent(&self, request: CreateIntent) -> Result<Intent>;
    /// Reads an intent's current state.
    async fn retrieve_intent(&self, id: &str) -> Result<Intent>;
    /// Cancels an intent that has not succeeded, so a purchase marked FAILED can no
    /// longer be paid through it; a succeeded intent is returned unchanged.
    async fn cancel_intent(&self, id: &str) -> Result<Intent>;
}

/// The configured gateways.
#[derive(Debug, Clone)]
pub struct Payments {
    default: String,
    manual: Arc<manual::Manual>,
    stripe: Option<Arc<stripe::Stripe>>,
}

impl Payments {
    /// The gateways of `settings`: `manual` always, `stripe` when a secret key is set.
    pub fn new(store: Store, settings: &BillingSettings) -> Self {
        Payments {
            default: settings.payment_gateway.clone(),
            manual: Arc::new(manual::Manual::new(store)),
            stripe: settings
                .stripe_secret_key
                .as_ref()
                .map(|key| Arc::new(stripe::Stripe::new(&settings.stripe_api_base, key.clone()))),
        }
    }

    /// The gateway called `name` (empty = the default). `field` names the request field
    /// for errors.
    pub fn get(&self, field: &str, name: &str) -> Result<Arc<dyn PaymentGateway>> {
        let name = if name.is_empty() { &self.default } else { name };
        match name {
            "manual" => Ok(self.manual.clone()),
            "stripe" => match &self.stripe {
                Some(stripe) => Ok(stripe.clone()),
                None => Err(Error::precondition(
                    "GATEWAY_NOT_CONFIGURED",
                    "the stripe gateway is not configured on this server",
                )),
            },
            _ => Err(Error::invalid(field, "must be `stripe` or `manual`")),
        }
    }

    /// The `manual` gateway.
    pub fn manual(&self) -> &manual::Manual {
        &self.manual
    }
}
