//! The Stripe gateway over its REST API.

use crate::{
    config::Secret,
    error::{Error, Result},
};

use super::{CreateIntent, Intent, PaymentGateway};

/// The Stripe gateway.
#[derive(Debug, Clone)]
pub struct Stripe {
    #[allow(dead_code)]
    base: String,
    #[allow(dead_code)]
    key: Secret,
}

impl Stripe {
    /// A client of the API at `base` with secret key `key`.
    pub fn new(base: &str, key: Secret) -> Self {
        Stripe {
            base: base.to_owned(),
            key,
        }
    }
}

#[async_trait::async_trait]
impl PaymentGateway for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create_intent(&self, _request: CreateIntent) -> Result<Intent> {
        Err(Error::Unimplemented("stripe payment intents"))
    }

    async fn retrieve_intent(&self, _id: &str) -> Result<Intent> {
        Err(Error::Unimplemented("stripe payment intents"))
    }
}
