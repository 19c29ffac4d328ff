//! The `manual` gateway: intents kept in `payment_intents`, confirmed by an operator.

use crate::{
    error::{Error, Result},
    storage::Store,
};

use super::{CreateIntent, Intent, PaymentGateway};

/// The `manual` gateway.
#[derive(Debug, Clone)]
pub struct Manual {
    #[allow(dead_code)]
    store: Store,
}

impl Manual {
    /// A gateway storing its intents in `store`.
    pub fn new(store: Store) -> Self {
        Manual { store }
    }
}

#[async_trait::async_trait]
impl PaymentGateway for Manual {
    fn name(&self) -> &'static str {
        "manual"
    }

    async fn create_intent(&self, _request: CreateIntent) -> Result<Intent> {
        Err(Error::Unimplemented("manual payment intents"))
    }

    async fn retrieve_intent(&self, _id: &str) -> Result<Intent> {
        Err(Error::Unimplemented("manual payment intents"))
    }
}
