//! The one exactly-once path that settles a credit purchase from its payment intent,
//! used by CompletePayment, ConfirmManualPayment, `tenantry payments confirm` and the
//! Stripe webhook.
//!
//! Under the organization's billing-account lock the PENDING entry settles once: the
//! first caller to see a succeeded intent credits the balance, every later or
//! concurrent caller (on any replica) finds the entry no longer PENDING and changes
//! nothing. A failed or cancelled intent marks the entry FAILED the same way, after
//! which the intent is cancelled at the gateway (best effort) so it can no longer be
//! paid: a declined payment ends the purchase, and the client buys again with a new
//! `request_id`.

use std::borrow::Cow;

use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, TryInsertResult};
use serde_json::json;
use uuid::Uuid;

use crate::{
    auth::Principal,
    domain::{
        billing::TxnStatus,
        events::types,
        ids::{self, IdKind},
        money::{Currency, Money},
    },
    error::{Error, Result},
    events::outbox,
    grpc::Ctx,
    payments::{Intent, IntentState, manual},
    service::{audit, commit},
    storage::{
        audit::AuditRecord,
        entities::{credit_transactions, organizations, stripe_events},
        idempotency::Key,
    },
};

use super::super::ledger;

/// Who completes a purchase, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct By<'a> {
    /// The caller (a SYSTEM principal for webhooks and the CLI).
    pub principal: &'a Principal,
    /// Audit action, e.g. `CompletePayment`.
    pub action: &'static str,
    /// Audit request id.
    pub request_id: &'a str,
    /// Operator note (ConfirmManualPayment).
    pub note: &'a str,
    /// The Stripe webhook event being handled: `(id, type)`, recorded once; a
    /// redelivered event changes nothing.
    pub stripe_event: Option<(&'a str, &'a str)>,
}

/// Where a purchase stands after a completion attempt.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The entry as it is now.
    pub transaction: credit_transactions::Model,
    /// The organization's balance now, in micro-units.
    pub balance_micros: i64,
    /// Whether this attempt applied the credit.
    pub newly_credited: bool,
}

impl Completion {
    /// The balance as proto Money in the entry's currency.
    pub fn balance(&self) -> crate::proto::Money {
        let currency = self.transaction.currency.parse().unwrap_or(Currency::Usd);
        crate::grpc::convert::money(Money::from_micros(currency, self.balance_micros))
    }
}

fn mismatch(row: &credit_transactions::Model, intent: &Intent) -> Option<Error> {
    let expected = row.payment_intent_id.as_deref().unwrap_or_default();
    if intent.id != expected {
        return Some(Error::invalid(
            "payment_intent_id",
            "does not match the transaction's payment intent",
        ));
    }
    if intent.amount_micros != row.amount_micros || intent.currency != row.currency {
        tracing::error!(
            intent = %intent.id,
            "payment intent amount or currency differs from its purchase; not credited"
        );
        return Some(Error::precondition(
            "PAYMENT_MISMATCH",
            "the payment intent's amount or currency differs from the purchase",
        ));
    }
    None
}

/// Records a Stripe webhook event once; `false` when it was recorded before (a
/// redelivery, which must change nothing).
pub(crate) async fn record_event(
    tx: &crate::storage::Tx,
    (id, kind): (&str, &str),
    intent_id: &str,
    now: i64,
) -> Result<bool> {
    let inserted = stripe_events::Entity::insert(stripe_events::ActiveModel {
        id: Set(id.to_owned()),
        kind: Set(kind.to_owned()),
        payment_intent_id: Set(intent_id.to_owned()),
        receive_time: Set(now),
    })
    .on_conflict_do_nothing_on([stripe_events::Column::Id])
    .exec(&**tx)
    .await?;
    Ok(!matches!(inserted, TryInsertResult::Conflicted))
}

/// Applies the intent's state to the PURCHASE entry `transaction_id` exactly once and
/// answers `respond(&completion)`. With an idempotency `key`, a retry gets the first
/// stored answer; the answer is stored only when this call changed the entry, so a
/// retry after a PENDING answer looks again.
pub async fn complete<R: prost::Message + Default>(
    ctx: &Ctx,
    by: By<'_>,
    transaction_id: Uuid,
    intent: &Intent,
    key: Option<&Key>,
    respond: impl FnOnce(&Completion) -> R,
) -> Result<R> {
    complete_from(
        ctx,
        by,
        transaction_id,
        IntentSource::Known(intent),
        key,
        respond,
    )
    .await
}

/// Like [`complete`] for a `manual` intent that the operator confirms now: the intent
/// turns SUCCEEDED in the same transaction that credits the purchase, so a crash
/// leaves both or neither.
pub async fn confirm_manual_and_complete<R: prost::Message + Default>(
    ctx: &Ctx,
    by: By<'_>,
    transaction_id: Uuid,
    intent_id: &str,
    key: Option<&Key>,
    respond: impl FnOnce(&Completion) -> R,
) -> Result<R> {
    let source = IntentSource::ConfirmManual(intent_id);
    complete_from(ctx, by, transaction_id, source, key, respond).await
}

/// Where a completion takes the intent's state from.
#[derive(Debug, Clone, Copy)]
pub enum IntentSource<'a> {
    /// Read from the gateway before the transaction.
    Known(&'a Intent),
    /// The id of a manual intent the operator confirms: confirmed inside the
    /// completion's transaction, so the payment and what it pays for commit together.
    ConfirmManual(&'a str),
}

impl<'a> IntentSource<'a> {
    /// The intent, confirming a manual one on `conn` (the completion's transaction).
    pub async fn resolve(self, conn: &impl ConnectionTrait, now: i64) -> Result<Cow<'a, Intent>> {
        Ok(match self {
            IntentSource::Known(intent) => Cow::Borrowed(intent),
            IntentSource::ConfirmManual(id) => Cow::Owned(manual::confirm_on(conn, id, now).await?),
        })
    }
}

async fn complete_from<R: prost::Message + Default>(
    ctx: &Ctx,
    by: By<'_>,
    transaction_id: Uuid,
    source: IntentSource<'_>,
    key: Option<&Key>,
    respond: impl FnOnce(&Completion) -> R,
) -> Result<R> {
    let tx = ctx.store.write().await?;
    if let Some(done) = crate::service::replayed::<R>(&tx, key).await? {
        return Ok(done);
    }
    let found = ledger::reload(&tx, transaction_id).await?;
    let org = organizations::Entity::find_by_id(found.organization_id)
        .one(&*tx)
        .await?
        .ok_or_else(|| Error::Internal("a ledger entry without its organization".into()))?;
    let now = ctx.store.now();
    let mut account = ledger::lock_account(&tx, &org, now).await?;
    let current = ledger::reload(&tx, transaction_id).await?;
    let intent = source.resolve(&*tx, now).await?;
    let intent = intent.as_ref();
    let fresh_event = match by.stripe_event {
        Some(event) => record_event(&tx, event, &intent.id, now).await?,
        None => true,
    };
    if let Some(error) = mismatch(&current, intent) {
        return Err(error);
    }
    let settled = match (&intent.state, fresh_event) {
        (_, false) | (IntentState::Pending, _) => None,
        (IntentState::Succeeded, true) => {
            ledger::settle(&tx, &mut account, current.id, now).await?
        }
        (IntentState::Failed(reason), true) => ledger::fail(&tx, current.id, reason, now).await?,
        (IntentState::Canceled, true) => {
            ledger::fail(&tx, current.id, "the payment was canceled", now).await?
        }
    };
    if settled.is_none()
        && intent.state == IntentState::Succeeded
        && current.status == TxnStatus::Failed.as_str()
    {
        tracing::error!(
            intent = %intent.id,
            transaction = %ids::encode(IdKind::Transaction, current.id),
            "a payment intent succeeded after its purchase was marked FAILED; refund it or credit it by hand"
        );
    }
    let changed = settled.is_some();
    let newly_failed = changed && !matches!(intent.state, IntentState::Succeeded);
    let completion = Completion {
        transaction: settled.clone().unwrap_or(current),
        balance_micros: account.balance_micros,
        newly_credited: changed && intent.state == IntentState::Succeeded,
    };
    if let Some(row) = &settled {
        let currency = row.currency.parse().unwrap_or(Currency::Usd);
        let shown = |m| Money::from_micros(currency, m).amount_string();
        let event_type = if completion.newly_credited {
            types::PAYMENT_SUCCEEDED
        } else {
            types::PAYMENT_FAILED
        };
        let data = json!({
            "organization_id": ids::encode(IdKind::Organization, row.organization_id),
            "purpose": "credits",
            "transaction_id": ids::encode(IdKind::Transaction, row.id),
            "amount": shown(row.amount_micros),
            "currency": row.currency,
            "gateway": row.gateway,
            "payment_intent_id": intent.id,
            "failure_reason": row.failure_reason,
        });
        outbox::emit(&tx, now, &org, event_type, by.request_id, data).await?;
        audit(
            &tx,
            ctx,
            by.principal,
            AuditRecord {
                organization_id: row.organization_id,
                action: by.action,
                target_type: "credit_transaction",
                target_id: ids::encode(IdKind::Transaction, row.id),
                request_id: by.request_id,
                summary: json!({
                    "status": row.status,
                    "amount": shown(row.amount_micros),
                    "currency": row.currency,
                    "gateway": row.gateway,
                    "payment_intent_id": intent.id,
                    "failure_reason": row.failure_reason,
                    "balance_after": shown(account.balance_micros),
                    "note": by.note,
                    "stripe_event_id": by.stripe_event.map(|(id, _)| id).unwrap_or_default(),
                }),
            },
        )
        .await?;
    }
    let gateway = completion.transaction.gateway.clone();
    let response = respond(&completion);
    let response = if changed {
        commit(ctx, tx, key, response).await?
    } else {
        tx.commit().await?;
        response
    };
    if newly_failed
        && matches!(intent.state, IntentState::Failed(_))
        && let Ok(gateway) = ctx.payments.get("gateway", &gateway)
        && let Err(error) = gateway.cancel_intent(&intent.id).await
    {
        tracing::warn!(intent = %intent.id, %error, "cancelling a failed payment intent failed");
    }
    Ok(response)
}
