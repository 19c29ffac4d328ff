//! The `manual` gateway: intents kept in `payment_intents`, confirmed by an operator
//! (ConfirmManualPayment or `tenantry payments confirm`). It behaves like Stripe where
//! tenantry relies on it: an idempotency key returns the intent first created with it
//! (and refuses different parameters), and an intent moves from
//! `requires_confirmation` to `succeeded` or `canceled` at most once.

use std::collections::BTreeMap;

use rand::RngCore;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    QueryFilter, QuerySelect, TryInsertResult, sea_query::LockType,
};

use crate::{
    error::{Error, Result},
    storage::{Store, entities::payment_intents},
};

use super::{CreateIntent, Intent, IntentState, PaymentGateway};

/// Status of an intent waiting for the operator.
const REQUIRES_CONFIRMATION: &str = "requires_confirmation";
/// Status of a confirmed (paid) intent.
const SUCCEEDED: &str = "succeeded";
/// Status of a cancelled intent.
const CANCELED: &str = "canceled";
/// Status of an intent whose payment failed (set by operators' tools, never here).
const FAILED: &str = "failed";

/// Prefix of every manual intent id.
pub const ID_PREFIX: &str = "pi_manual_";

/// The `manual` gateway.
#[derive(Debug, Clone)]
pub struct Manual {
    store: Store,
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn to_intent(row: &payment_intents::Model) -> Intent {
    let state = match row.status.as_str() {
        SUCCEEDED => IntentState::Succeeded,
        CANCELED => IntentState::Canceled,
        FAILED => IntentState::Failed("the manual payment failed".into()),
        _ => IntentState::Pending,
    };
    Intent {
        id: row.id.clone(),
        client_secret: row.client_secret.clone(),
        amount_micros: row.amount_micros,
        currency: row.currency.clone(),
        state,
        metadata: serde_json::from_str(&row.metadata).unwrap_or_default(),
    }
}

impl Manual {
    /// A gateway storing its intents in `store`.
    pub fn new(store: Store) -> Self {
        Manual { store }
    }

    /// The stored intent `id` (NOT_FOUND when unknown), without its state mapped.
    pub async fn find(&self, id: &str) -> Result<payment_intents::Model> {
        payment_intents::Entity::find_by_id(id.to_owned())
            .one(self.store.db())
            .await?
            .ok_or_else(|| Error::not_found("payment intent", id))
    }

    /// Marks the intent succeeded (the operator saw the money arrive). Confirming a
    /// succeeded intent again returns it unchanged; a cancelled or failed one fails
    /// `FAILED_PRECONDITION` (`PAYMENT_INTENT_NOT_CONFIRMABLE`).
    pub async fn confirm(&self, id: &str) -> Result<Intent> {
        self.transition(id, SUCCEEDED).await
    }

    async fn transition(&self, id: &str, to: &str) -> Result<Intent> {
        let tx = self.store.write().await?;
        let intent = transition_on(&*tx, id, to, self.store.now()).await?;
        tx.commit().await?;
        Ok(intent)
    }
}

/// Confirms the manual intent `id` inside the caller's transaction `conn`, so that the
/// payment and what it pays for commit together (a crash between two transactions
/// would leave a paid intent next to an unpaid purchase).
pub async fn confirm_on(conn: &impl ConnectionTrait, id: &str, now: i64) -> Result<Intent> {
    transition_on(conn, id, SUCCEEDED, now).await
}

async fn transition_on(
    conn: &impl ConnectionTrait,
    id: &str,
    to: &str,
    now: i64,
) -> Result<Intent> {
    let row = payment_intents::Entity::find_by_id(id.to_owned())
        .lock(LockType::Update)
        .one(conn)
        .await?
        .ok_or_else(|| Error::not_found("payment intent", id))?;
    // Cancelling anything but a waiting intent, or repeating a transition, changes
    // nothing.
    if row.status == to || (to == CANCELED && row.status != REQUIRES_CONFIRMATION) {
        return Ok(to_intent(&row));
    }
    if row.status != REQUIRES_CONFIRMATION {
        return Err(Error::precondition(
            "PAYMENT_INTENT_NOT_CONFIRMABLE",
            format!("payment intent {id} is {}", row.status),
        )
        .with("status", &row.status));
    }
    let mut active = row.into_active_model();
    active.status = Set(to.to_owned());
    active.update_time = Set(now);
    let row = active.update(conn).await?;
    Ok(to_intent(&row))
}

#[async_trait::async_trait]
impl PaymentGateway for Manual {
    fn name(&self) -> &'static str {
        "manual"
    }

    async fn create_intent(&self, request: CreateIntent) -> Result<Intent> {
        let id = format!("{ID_PREFIX}{}", random_token(12));
        let metadata: BTreeMap<String, String> = request.metadata.clone();
        let now = self.store.now();
        let tx = self.store.write().await?;
        let inserted = payment_intents::Entity::insert(payment_intents::ActiveModel {
            id: Set(id.clone()),
            organization_id: Set(request.organization_id),
            amount_micros: Set(request.amount_micros),
            currency: Set(request.currency.code().to_owned()),
            status: Set(REQUIRES_CONFIRMATION.to_owned()),
            client_secret: Set(format!("{id}_secret_{}", random_token(12))),
            idempotency_key: Set(request.idempotency_key.clone()),
            metadata: Set(serde_json::to_string(&metadata).unwrap_or_else(|_| "{}".into())),
            create_time: Set(now),
            update_time: Set(now),
        })
        .on_conflict_do_nothing_on([payment_intents::Column::IdempotencyKey])
        .exec(&*tx)
        .await?;
        let row = payment_intents::Entity::find()
            .filter(payment_intents::Column::IdempotencyKey.eq(request.idempotency_key.as_str()))
            .one(&*tx)
            .await?
            .ok_or_else(|| Error::Internal("manual payment intent vanished".into()))?;
        tx.commit().await?;
        if matches!(inserted, TryInsertResult::Conflicted)
            && (row.organization_id != request.organization_id
                || row.amount_micros != request.amount_micros
                || row.currency != request.currency.code())
        {
            // Stripe answers `idempotency_error` for a key reused with other parameters.
            return Err(Error::invalid(
                "request_id",
                "was already used with different arguments",
            ));
        }
        Ok(to_intent(&row))
    }

    async fn retrieve_intent(&self, id: &str) -> Result<Intent> {
        Ok(to_intent(&self.find(id).await?))
    }

    async fn cancel_intent(&self, id: &str) -> Result<Intent> {
        self.transition(id, CANCELED).await
    }
}
