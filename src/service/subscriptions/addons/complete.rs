//! The one exactly-once path that settles a gateway-paid add-on purchase from its
//! payment intent, used by CompleteServicePurchase, ConfirmManualPayment (and
//! `tenantry payments confirm`) and the Stripe webhook.
//!
//! Under the organization's row lock the PENDING purchase changes once: the first
//! caller to see a succeeded intent activates it; a failed or cancelled intent marks it
//! FAILED (then the intent is cancelled at the gateway, best effort, so it can no
//! longer be paid). Every later or concurrent caller, on any replica, re-reads the row
//! after locking, finds it no longer PENDING and changes nothing.

use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        events::types,
        ids::{self, IdKind},
        money::{Currency, Money},
        subscription::{PaymentSource, PurchaseStatus},
    },
    error::{Error, Result, Violations},
    events::outbox,
    grpc::Ctx,
    payments::{Intent, IntentState},
    proto,
    service::{
        audit, audit_request_id,
        billing::credits::{
            completion::{By, IntentSource},
            purchase::check_gateway_id,
        },
        commit, idempotency_key,
        orgs::lock_org,
        replayed, settle,
    },
    storage::{
        Tx,
        audit::AuditRecord,
        entities::service_purchases,
        idempotency::{self, Key},
    },
};

use super::to_proto;

/// The purchase paid with `gateway`'s intent `intent_id`, if any.
pub async fn purchase_paid_by<C: ConnectionTrait>(
    db: &C,
    gateway: &str,
    intent_id: &str,
) -> Result<Option<service_purchases::Model>> {
    Ok(service_purchases::Entity::find()
        .filter(service_purchases::Column::PaymentIntentId.eq(intent_id))
        .filter(service_purchases::Column::Gateway.eq(gateway))
        .one(db)
        .await?)
}

async fn reload(tx: &Tx, id: Uuid) -> Result<service_purchases::Model> {
    service_purchases::Entity::find_by_id(id)
        .one(&**tx)
        .await?
        .ok_or_else(|| Error::not_found("purchase", &ids::encode(IdKind::ServicePurchase, id)))
}

fn mismatch(row: &service_purchases::Model, intent: &Intent) -> Option<Error> {
    if row.payment_intent_id.as_deref() != Some(intent.id.as_str()) {
        return Some(Error::invalid(
            "payment_intent_id",
            "does not match the purchase's payment intent",
        ));
    }
    if intent.amount_micros != row.amount_micros || intent.currency != row.currency {
        tracing::error!(
            intent = %intent.id,
            "payment intent amount or currency differs from its service purchase; not activated"
        );
        return Some(Error::precondition(
            "PAYMENT_MISMATCH",
            "the payment intent's amount or currency differs from the purchase",
        ));
    }
    None
}

/// The data of the `payment.succeeded` / `payment.failed` event of an add-on purchase.
pub(super) fn payment_data(row: &service_purchases::Model) -> serde_json::Value {
    let currency = row.currency.parse().unwrap_or(Currency::Usd);
    json!({
        "organization_id": ids::encode(IdKind::Organization, row.organization_id),
        "purpose": "service_purchase",
        "purchase_id": ids::encode(IdKind::ServicePurchase, row.id),
        "service_id": row.service_id,
        "amount": Money::from_micros(currency, row.amount_micros).amount_string(),
        "currency": row.currency,
        "payment_source": row.payment_source,
        "gateway": row.gateway,
        "payment_intent_id": row.payment_intent_id,
        "failure_reason": row.failure_reason,
    })
}

/// The status a PENDING purchase moves to for `state`, with the failure reason.
fn next_status(state: &IntentState) -> Option<(PurchaseStatus, &str)> {
    match state {
        IntentState::Pending => None,
        IntentState::Succeeded => Some((PurchaseStatus::Active, "")),
        IntentState::Failed(reason) => Some((PurchaseStatus::Failed, reason.as_str())),
        IntentState::Canceled => Some((PurchaseStatus::Failed, "the payment was canceled")),
    }
}

/// Applies the intent's state to the gateway purchase `purchase_id` exactly once and
/// answers `respond(&purchase)`. With an idempotency `key`, a retry gets the first
/// stored answer; the answer is stored only when this call changed the purchase, so a
/// retry after a PENDING answer looks again.
pub async fn complete_with_intent<R: prost::Message + Default>(
    ctx: &Ctx,
    by: By<'_>,
    purchase_id: Uuid,
    intent: IntentSource<'_>,
    key: Option<&Key>,
    respond: impl FnOnce(&service_purchases::Model) -> R,
) -> Result<R> {
    let tx = ctx.store.write().await?;
    if let Some(done) = replayed::<R>(&tx, key).await? {
        return Ok(done);
    }
    let found = reload(&tx, purchase_id).await?;
    let org = lock_org(&tx, found.organization_id)
        .await?
        .ok_or_else(|| Error::Internal("a service purchase without its organization".into()))?;
    let now = ctx.store.now();
    let current = reload(&tx, purchase_id).await?;
    let intent = intent.resolve(&*tx, now).await?;
    let intent = intent.as_ref();
    let fresh_event = match by.stripe_event {
        Some(event) => {
            crate::service::billing::credits::completion::record_event(&tx, event, &intent.id, now)
                .await?
        }
        None => true,
    };
    if let Some(error) = mismatch(&current, intent) {
        return Err(error);
    }
    let pending = current.status == PurchaseStatus::Pending.as_str();
    let change = next_status(&intent.state).filter(|_| pending && fresh_event);
    if !pending
        && intent.state == IntentState::Succeeded
        && current.status == PurchaseStatus::Failed.as_str()
    {
        tracing::error!(
            intent = %intent.id,
            purchase = %ids::encode(IdKind::ServicePurchase, current.id),
            "a payment intent succeeded after its service purchase was marked FAILED; refund it or activate it by hand"
        );
    }
    let Some((status, failure_reason)) = change else {
        let response = respond(&current);
        tx.commit().await?;
        return Ok(response);
    };
    // The row as it is once updated (the update below is conditional on the version it
    // was read at, so nothing else changed it).
    let row = service_purchases::Model {
        status: status.as_str().to_owned(),
        failure_reason: failure_reason.to_owned(),
        activate_time: (status == PurchaseStatus::Active).then_some(now),
        update_time: now,
        version: current.version + 1,
        ..current.clone()
    };
    let update = service_purchases::ActiveModel {
        status: Set(row.status.clone()),
        failure_reason: Set(row.failure_reason.clone()),
        activate_time: Set(row.activate_time),
        update_time: Set(now),
        version: Set(row.version),
        ..Default::default()
    };
    let updated = service_purchases::Entity::update_many()
        .set(update)
        .filter(service_purchases::Column::Id.eq(current.id))
        .filter(service_purchases::Column::Version.eq(current.version))
        .filter(service_purchases::Column::Status.eq(PurchaseStatus::Pending.as_str()))
        .exec(&*tx)
        .await?;
    if updated.rows_affected != 1 {
        return Err(Error::Internal(
            "a service purchase changed under its organization's lock".into(),
        ));
    }
    let currency = row.currency.parse().unwrap_or(Currency::Usd);
    let event_type = if status == PurchaseStatus::Active {
        types::PAYMENT_SUCCEEDED
    } else {
        types::PAYMENT_FAILED
    };
    outbox::emit(
        &tx,
        now,
        &org,
        event_type,
        by.request_id,
        payment_data(&row),
    )
    .await?;
    audit(
        &tx,
        ctx,
        by.principal,
        AuditRecord {
            organization_id: row.organization_id,
            action: by.action,
            target_type: "service_purchase",
            target_id: ids::encode(IdKind::ServicePurchase, row.id),
            request_id: by.request_id,
            summary: json!({
                "status": row.status,
                "service_id": row.service_id,
                "amount": Money::from_micros(currency, row.amount_micros).amount_string(),
                "currency": row.currency,
                "gateway": row.gateway,
                "payment_intent_id": intent.id,
                "failure_reason": row.failure_reason,
                "note": by.note,
                "stripe_event_id": by.stripe_event.map(|(id, _)| id).unwrap_or_default(),
            }),
        },
    )
    .await?;
    let response = respond(&row);
    let response = commit(ctx, tx, key, response).await?;
    if matches!(intent.state, IntentState::Failed(_))
        && let Ok(gateway) = ctx.payments.get("gateway", &row.gateway)
        && let Err(error) = gateway.cancel_intent(&intent.id).await
    {
        tracing::warn!(intent = %intent.id, %error, "cancelling a failed payment intent failed");
    }
    Ok(response)
}

/// CompleteServicePurchase: verifies the purchase's intent with its gateway and
/// activates the purchase exactly once (FAILED when the payment failed; unchanged while
/// it is processing). A purchase paid from credits, or no longer PENDING, is answered
/// as it is.
pub async fn complete_service_purchase(
    ctx: Ctx,
    caller: Caller,
    req: proto::CompleteServicePurchaseRequest,
) -> Result<proto::CompleteServicePurchaseResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let id = v.check(
        "purchase_id",
        ids::decode(IdKind::ServicePurchase, &req.purchase_id),
    );
    check_gateway_id(&mut v, "payment_intent_id", &req.payment_intent_id, true);
    v.finish()?;
    let principal = access.principal();
    let key = idempotency_key(principal, "CompleteServicePurchase", &req.request_id, &req)?;
    if let Some(key) = &key
        && let Some(done) = idempotency::replay(ctx.store.db(), key).await?
    {
        return Ok(done);
    }
    let id = id.unwrap_or_default();
    let row = service_purchases::Entity::find_by_id(id)
        .filter(service_purchases::Column::OrganizationId.eq(access.org().id))
        .one(ctx.store.db())
        .await?
        .ok_or_else(|| Error::not_found("purchase", &req.purchase_id))?;
    let respond = |row: &service_purchases::Model| proto::CompleteServicePurchaseResponse {
        purchase: Some(to_proto(row)),
    };
    if row.payment_source == PaymentSource::Credits.as_str() {
        return Ok(respond(&row));
    }
    if row.payment_intent_id.as_deref() != Some(req.payment_intent_id.as_str()) {
        return Err(Error::invalid(
            "payment_intent_id",
            "does not match the purchase's payment intent",
        ));
    }
    if row.status != PurchaseStatus::Pending.as_str() {
        // Settled before: nothing to ask the gateway.
        return Ok(respond(&row));
    }
    let gateway = ctx.payments.get("gateway", &row.gateway)?;
    let intent = gateway.retrieve_intent(&req.payment_intent_id).await?;
    let by = By {
        principal,
        action: "CompleteServicePurchase",
        request_id: audit_request_id(&caller, key.as_ref()),
        note: "",
        stripe_event: None,
    };
    let source = IntentSource::Known(&intent);
    let result = complete_with_intent(&ctx, by, row.id, source, key.as_ref(), respond).await;
    settle(&ctx, key.as_ref(), result).await
}
