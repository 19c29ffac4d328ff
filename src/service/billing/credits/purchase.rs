//! Credit purchases: BuyCredits opens a PENDING purchase with a gateway payment intent;
//! CompletePayment, ConfirmManualPayment (and `tenantry payments confirm`) settle it
//! through the one exactly-once path in [`super::completion`].

use std::{collections::BTreeMap, sync::Arc};

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{
    auth::{Actor, Caller, Principal, policy::CallerRole},
    domain::{
        billing::{TxnKind, TxnStatus},
        ids::{self, IdKind},
        money::Money,
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    payments::{CreateIntent, manual},
    proto,
    service::{
        audit, audit_request_id, commit, idempotency_key, orgs::lock_live, replayed, settle,
        subscriptions::addons,
    },
    storage::{audit::AuditRecord, entities::credit_transactions as txns, idempotency},
};

use super::{
    super::{
        Sign,
        ledger::{self, Entry},
        money_in, require_request_id,
    },
    completion::{self, By, Completion},
    read,
};

/// Longest gateway id accepted (payment intents and payment methods).
const MAX_GATEWAY_ID_LEN: usize = 255;

/// Checks an optional gateway object id such as `pm_card_visa` or `pi_123`.
pub(crate) fn check_gateway_id(v: &mut Violations, field: &str, value: &str, required: bool) {
    if value.is_empty() {
        if required {
            v.add(field, "is required");
        }
    } else if value.len() > MAX_GATEWAY_ID_LEN
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        v.add(
            field,
            format!("must be a gateway id of at most {MAX_GATEWAY_ID_LEN} letters, digits or `_`"),
        );
    }
}

/// The gateway idempotency key of a call that creates a payment intent (`purpose`, e.g.
/// `buy-credits`): the caller's idempotency scope and request id, hashed, so a retry
/// reaches the intent the first attempt created.
pub(crate) fn gateway_key(purpose: &str, principal: &Principal, request_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(principal.idempotency_scope().as_bytes());
    hasher.update([0]);
    hasher.update(request_id.as_bytes());
    format!("tenantry-{purpose}-{}", hex::encode(hasher.finalize()))
}

fn buy_response(row: &txns::Model, client_secret: &str) -> proto::BuyCreditsResponse {
    proto::BuyCreditsResponse {
        transaction_id: ids::encode(IdKind::Transaction, row.id),
        client_secret: client_secret.to_owned(),
        payment_intent_id: row.payment_intent_id.clone().unwrap_or_default(),
        gateway: row.gateway.clone(),
        transaction: Some(ledger::to_proto(row)),
    }
}

/// BuyCredits: validates the amount (positive, whole minor units, the organization's
/// currency), creates the payment intent with the gateway first (keyed by the caller's
/// request id, so a retry reuses it), then records the PENDING purchase. A retry with
/// the same request id answers the first result, client secret included.
pub async fn buy_credits(
    ctx: Ctx,
    caller: Caller,
    req: proto::BuyCreditsRequest,
) -> Result<proto::BuyCreditsResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org = access.org().clone();
    let currency = convert::org_currency(&org);
    let mut v = Violations::new();
    let amount = money_in(
        &mut v,
        "amount",
        req.amount.as_ref(),
        currency,
        2,
        Sign::Positive,
    );
    require_request_id(&mut v, &req.request_id);
    check_gateway_id(&mut v, "payment_method_id", &req.payment_method_id, false);
    let gateway = match ctx.payments.get("gateway", &req.gateway) {
        Ok(gateway) => Some(Ok(gateway)),
        Err(Error::InvalidArgument(found)) => {
            for f in found {
                v.add(f.field, f.description);
            }
            None
        }
        Err(other) => Some(Err(other)),
    };
    v.finish()?;
    let (Some(gateway), Some(amount)) = (gateway, amount) else {
        return Err(Error::Internal(
            "validated BuyCredits fields are missing".into(),
        ));
    };
    let gateway = gateway?;
    let principal = access.principal().clone();
    let key = idempotency_key(&principal, "BuyCredits", &req.request_id, &req)?;
    if let Some(key) = &key
        && let Some(done) = idempotency::replay(ctx.store.db(), key).await?
    {
        return Ok(done);
    }
    let org_id = ids::encode(IdKind::Organization, org.id);
    let intent = gateway
        .create_intent(CreateIntent {
            organization_id: org.id,
            amount_micros: amount,
            currency,
            idempotency_key: gateway_key("buy-credits", &principal, &req.request_id),
            payment_method_id: (!req.payment_method_id.is_empty())
                .then(|| req.payment_method_id.clone()),
            description: format!("Credits for {}", org.name),
            metadata: BTreeMap::from([
                ("organization_id".to_owned(), org_id),
                ("purpose".to_owned(), "credits".to_owned()),
                ("request_id".to_owned(), req.request_id.clone()),
            ]),
        })
        .await?;
    if intent.amount_micros != amount || intent.currency != currency.code() {
        return Err(Error::Internal(format!(
            "gateway intent {} does not carry the requested amount",
            intent.id
        )));
    }
    let result = async {
        let tx = ctx.store.write().await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        lock_live(&tx, &org).await?;
        let now = ctx.store.now();
        let account = ledger::lock_account(&tx, &org, now).await?;
        // The same intent already backs a purchase (its idempotency record expired):
        // answer that purchase instead of failing on the unique intent id.
        if let Some(existing) = txns::Entity::find()
            .filter(txns::Column::PaymentIntentId.eq(intent.id.as_str()))
            .one(&*tx)
            .await?
        {
            return Ok(buy_response(&existing, &intent.client_secret));
        }
        let request_id = audit_request_id(&caller, key.as_ref()).to_owned();
        let row = ledger::post_pending(
            &tx,
            &account,
            Entry {
                kind: Some(TxnKind::Purchase),
                amount_micros: amount,
                request_id: request_id.clone(),
                author: principal.author(),
                gateway: gateway.name().to_owned(),
                payment_intent_id: Some(intent.id.clone()),
                ..Entry::default()
            },
            now,
        )
        .await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "BuyCredits",
                target_type: "credit_transaction",
                target_id: ids::encode(IdKind::Transaction, row.id),
                request_id: &request_id,
                summary: json!({
                    "status": TxnStatus::Pending.as_str(),
                    "amount": Money::from_micros(currency, amount).amount_string(),
                    "currency": currency.code(),
                    "gateway": gateway.name(),
                    "payment_intent_id": intent.id,
                }),
            },
        )
        .await?;
        commit(
            &ctx,
            tx,
            key.as_ref(),
            buy_response(&row, &intent.client_secret),
        )
        .await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}

fn complete_response(done: &Completion) -> proto::CompletePaymentResponse {
    proto::CompletePaymentResponse {
        transaction: Some(ledger::to_proto(&done.transaction)),
        balance: Some(done.balance()),
        newly_credited: done.newly_credited,
    }
}

/// CompletePayment: verifies the intent with the gateway and settles the purchase
/// exactly once. `newly_credited` is true only in the answer of the call that applied
/// the credit (and in replays of that call's `request_id`).
pub async fn complete_payment(
    ctx: Ctx,
    caller: Caller,
    req: proto::CompletePaymentRequest,
) -> Result<proto::CompletePaymentResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let id = v.check(
        "transaction_id",
        ids::decode(IdKind::Transaction, &req.transaction_id),
    );
    check_gateway_id(&mut v, "payment_intent_id", &req.payment_intent_id, true);
    v.finish()?;
    let principal = access.principal().clone();
    let key = idempotency_key(&principal, "CompletePayment", &req.request_id, &req)?;
    if let Some(key) = &key
        && let Some(done) = idempotency::replay(ctx.store.db(), key).await?
    {
        return Ok(done);
    }
    let row = read::find(&ctx, access.org().id, id.unwrap_or_default()).await?;
    if row.kind != TxnKind::Purchase.as_str() {
        return Err(Error::precondition(
            "NOT_A_PURCHASE",
            "only PURCHASE transactions are completed with a payment",
        ));
    }
    if row.payment_intent_id.as_deref() != Some(req.payment_intent_id.as_str()) {
        return Err(Error::invalid(
            "payment_intent_id",
            "does not match the transaction's payment intent",
        ));
    }
    if row.status != TxnStatus::Pending.as_str() {
        // Settled before: nothing to ask the gateway.
        let balance_micros = ledger::balance_micros(ctx.store.db(), row.organization_id).await?;
        return Ok(complete_response(&Completion {
            transaction: row,
            balance_micros,
            newly_credited: false,
        }));
    }
    let gateway = ctx.payments.get("gateway", &row.gateway)?;
    let intent = gateway.retrieve_intent(&req.payment_intent_id).await?;
    let by = By {
        principal: &principal,
        action: "CompletePayment",
        request_id: audit_request_id(&caller, key.as_ref()),
        note: "",
        stripe_event: None,
    };
    let result =
        completion::complete(&ctx, by, row.id, &intent, key.as_ref(), complete_response).await;
    settle(&ctx, key.as_ref(), result).await
}

/// Confirms a `manual` intent and completes what it pays for: a credit purchase
/// (`transaction`) or an add-on service purchase (`service_purchase_id`). `org`
/// restricts the intent to one organization (NOT_FOUND otherwise).
pub async fn confirm_manual(
    ctx: &Ctx,
    by: By<'_>,
    org: Option<uuid::Uuid>,
    intent_id: &str,
    key: Option<&idempotency::Key>,
) -> Result<proto::ConfirmManualPaymentResponse> {
    let stored = ctx.payments.manual().find(intent_id).await?;
    if org.is_some_and(|org| org != stored.organization_id) {
        return Err(Error::not_found("payment intent", intent_id));
    }
    let purchase = txns::Entity::find()
        .filter(txns::Column::PaymentIntentId.eq(intent_id))
        .filter(txns::Column::Gateway.eq("manual"))
        .one(ctx.store.db())
        .await?;
    let Some(purchase) = purchase else {
        let service = addons::purchase_paid_by(ctx.store.db(), "manual", intent_id)
            .await?
            .ok_or_else(|| {
                Error::precondition(
                    "NOTHING_TO_COMPLETE",
                    format!("no purchase is paid with payment intent {intent_id}"),
                )
            })?;
        let source = completion::IntentSource::ConfirmManual(intent_id);
        let result = addons::complete_with_intent(ctx, by, service.id, source, key, |row| {
            proto::ConfirmManualPaymentResponse {
                payment_intent_id: intent_id.to_owned(),
                transaction: None,
                service_purchase_id: ids::encode(IdKind::ServicePurchase, row.id),
            }
        })
        .await;
        return settle(ctx, key, result).await;
    };
    let result =
        completion::confirm_manual_and_complete(ctx, by, purchase.id, intent_id, key, |done| {
            proto::ConfirmManualPaymentResponse {
                payment_intent_id: intent_id.to_owned(),
                transaction: Some(ledger::to_proto(&done.transaction)),
                service_purchase_id: String::new(),
            }
        })
        .await;
    settle(ctx, key, result).await
}

/// ConfirmManualPayment: an operator saw a manual payment arrive.
pub async fn confirm_manual_payment(
    ctx: Ctx,
    caller: Caller,
    req: proto::ConfirmManualPaymentRequest,
) -> Result<proto::ConfirmManualPaymentResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    check_gateway_id(&mut v, "payment_intent_id", &req.payment_intent_id, true);
    if !req.payment_intent_id.is_empty() && !req.payment_intent_id.starts_with(manual::ID_PREFIX) {
        v.add(
            "payment_intent_id",
            format!(
                "must be a manual payment intent id ({}…)",
                manual::ID_PREFIX
            ),
        );
    }
    if req.note.chars().count() > 500 {
        v.add("note", "must be at most 500 characters");
    }
    require_request_id(&mut v, &req.request_id);
    v.finish()?;
    let principal = access.principal().clone();
    let key = idempotency_key(&principal, "ConfirmManualPayment", &req.request_id, &req)?;
    if let Some(key) = &key
        && let Some(done) = idempotency::replay(ctx.store.db(), key).await?
    {
        return Ok(done);
    }
    let by = By {
        principal: &principal,
        action: "ConfirmManualPayment",
        request_id: audit_request_id(&caller, key.as_ref()),
        note: req.note.trim(),
        stripe_event: None,
    };
    confirm_manual(
        &ctx,
        by,
        Some(access.org().id),
        &req.payment_intent_id,
        key.as_ref(),
    )
    .await
}

/// A SYSTEM principal for work that arrives outside gRPC (webhooks, the CLI).
pub fn system_principal(sub: &str) -> Arc<Principal> {
    Arc::new(Principal {
        role: CallerRole::System,
        org: None,
        actor: Actor::System {
            sub: sub.to_owned(),
        },
    })
}
