//! PurchaseService: from credits (ACTIVE at once) or through a gateway (PENDING).

use std::collections::BTreeMap;

use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;

use crate::{
    auth::{Caller, Principal},
    domain::{
        billing::TxnKind,
        events::types,
        ids::{self, IdKind, new_id},
        money::{Currency, Money},
        plans::Addon,
        subscription::{PaymentSource, PurchaseStatus},
    },
    error::{Error, Result, Violations},
    events::outbox,
    grpc::{Ctx, convert},
    payments::{CreateIntent, Intent, PaymentGateway},
    proto,
    service::{
        audit, audit_request_id,
        billing::{
            credits::purchase::{check_gateway_id, gateway_key},
            ledger::{self, Entry},
            require_request_id,
        },
        commit, idempotency_key,
        orgs::lock_live,
        replayed, settle,
    },
    storage::{
        Tx, audit::AuditRecord, entities::organizations, entities::service_purchases, idempotency,
    },
};

use super::{
    super::agreements, check_service_id, find_addon, payment_source_of, to_proto, unit_price,
};

/// Most units bought at once.
const MAX_QUANTITY: i32 = 1_000;

/// What a validated request buys.
struct Order<'a> {
    org: organizations::Model,
    addon: Addon,
    quantity: i64,
    currency: Currency,
    unit_micros: i64,
    total_micros: i64,
    principal: &'a Principal,
    request_id: String,
    key: Option<idempotency::Key>,
}

impl Order<'_> {
    /// The new purchase row (the caller sets status and payment fields).
    fn row(
        &self,
        source: PaymentSource,
        agreement_id: Option<uuid::Uuid>,
        now: i64,
    ) -> service_purchases::ActiveModel {
        service_purchases::ActiveModel {
            id: Set(new_id()),
            organization_id: Set(self.org.id),
            service_id: Set(self.addon.id.clone()),
            service_name: Set(self.addon.name.clone()),
            quantity: Set(self.quantity),
            unit_amount_micros: Set(self.unit_micros),
            amount_micros: Set(self.total_micros),
            currency: Set(self.currency.code().to_owned()),
            charge_type: Set(self.addon.charge_type.as_str().to_owned()),
            payment_source: Set(source.as_str().to_owned()),
            status: Set(PurchaseStatus::Pending.as_str().to_owned()),
            transaction_id: Set(None),
            gateway: Set(String::new()),
            payment_intent_id: Set(None),
            agreement_id: Set(agreement_id),
            request_id: Set(self.request_id.clone()),
            purchased_by: Set(self.principal.author()),
            failure_reason: Set(String::new()),
            activate_time: Set(None),
            cancel_time: Set(None),
            create_time: Set(now),
            update_time: Set(now),
            version: Set(1),
        }
    }

    fn shown(&self, micros: i64) -> String {
        Money::from_micros(self.currency, micros).amount_string()
    }

    async fn audit(&self, ctx: &Ctx, tx: &Tx, row: &service_purchases::Model) -> Result<()> {
        audit(
            tx,
            ctx,
            self.principal,
            AuditRecord {
                organization_id: row.organization_id,
                action: "PurchaseService",
                target_type: "service_purchase",
                target_id: ids::encode(IdKind::ServicePurchase, row.id),
                request_id: &self.request_id,
                summary: json!({
                    "service_id": row.service_id,
                    "quantity": row.quantity,
                    "amount": self.shown(row.amount_micros),
                    "currency": row.currency,
                    "payment_source": row.payment_source,
                    "status": row.status,
                    "gateway": row.gateway,
                    "payment_intent_id": row.payment_intent_id,
                    "transaction_id": row.transaction_id.map(|id| ids::encode(IdKind::Transaction, id)),
                    "agreement_id": row.agreement_id.map(|id| ids::encode(IdKind::Agreement, id)),
                }),
            },
        )
        .await
    }
}

/// PurchaseService: validates everything, checks the agreement, then pays from credits
/// (one SERVICE_PURCHASE debit, ACTIVE purchase) or opens a gateway payment intent
/// (PENDING purchase). Idempotent by `request_id`.
pub async fn purchase_service(
    ctx: Ctx,
    caller: Caller,
    req: proto::PurchaseServiceRequest,
) -> Result<proto::PurchaseServiceResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    check_service_id(&mut v, &req.service_id);
    let quantity = match req.quantity {
        0 => 1,
        q if (1..=MAX_QUANTITY).contains(&q) => q,
        _ => {
            v.add(
                "quantity",
                format!("must be between 1 and {MAX_QUANTITY} (0 means 1)"),
            );
            1
        }
    };
    let source = payment_source_of(req.payment_source);
    let mut gateway = None;
    match source {
        None => v.add("payment_source", "is required: CREDITS or GATEWAY"),
        Some(PaymentSource::Credits) => {
            for (field, value) in [
                ("gateway", &req.gateway),
                ("payment_method_id", &req.payment_method_id),
            ] {
                if !value.is_empty() {
                    v.add(field, "is only used with payment_source GATEWAY");
                }
            }
        }
        Some(PaymentSource::Gateway) => {
            check_gateway_id(&mut v, "payment_method_id", &req.payment_method_id, false);
            gateway = match ctx.payments.get("gateway", &req.gateway) {
                Ok(found) => Some(Ok(found)),
                Err(Error::InvalidArgument(found)) => {
                    for f in found {
                        v.add(f.field, f.description);
                    }
                    None
                }
                Err(other) => Some(Err(other)),
            };
        }
    }
    require_request_id(&mut v, &req.request_id);
    v.finish()?;
    let principal = access.principal();
    let key = idempotency_key(principal, "PurchaseService", &req.request_id, &req)?;
    if let Some(key) = &key
        && let Some(done) = idempotency::replay(ctx.store.db(), key).await?
    {
        return Ok(done);
    }
    let org = access.org().clone();
    let addon = find_addon(&ctx, &req.service_id)?;
    let currency = convert::org_currency(&org);
    let unit_micros = unit_price(&addon, currency)?;
    let quantity = i64::from(quantity);
    let total_micros = unit_micros
        .checked_mul(quantity)
        .ok_or_else(|| Error::invalid("quantity", "makes the amount too large"))?;
    let order = Order {
        org,
        addon,
        quantity,
        currency,
        unit_micros,
        total_micros,
        principal,
        request_id: audit_request_id(&caller, key.as_ref()).to_owned(),
        key,
    };
    let result = match gateway {
        None => from_credits(&ctx, &order).await,
        Some(gateway) => through_gateway(&ctx, &order, gateway?, &req.payment_method_id).await,
    };
    settle(&ctx, order.key.as_ref(), result).await
}

/// Pays from credits: under the organization's lock, the agreement check, the debit
/// (INSUFFICIENT_CREDITS writes nothing) and the ACTIVE purchase, in one transaction.
async fn from_credits(ctx: &Ctx, order: &Order<'_>) -> Result<proto::PurchaseServiceResponse> {
    let tx = ctx.store.write().await?;
    if let Some(done) = replayed(&tx, order.key.as_ref()).await? {
        return Ok(done);
    }
    let org = lock_live(&tx, &order.org).await?;
    let agreement_id = agreements::require(&*tx, org.id, &order.addon).await?;
    let now = ctx.store.now();
    let mut account = ledger::lock_account(&tx, &org, now).await?;
    let entry = ledger::post(
        &tx,
        &mut account,
        Entry {
            kind: Some(TxnKind::ServicePurchase),
            amount_micros: -order.total_micros,
            reason: format!("purchase of {} × {}", order.addon.name, order.quantity),
            request_id: order.request_id.clone(),
            author: order.principal.author(),
            ..Entry::default()
        },
        ctx.settings.billing.credit_overdraft_micros,
        now,
    )
    .await?;
    let mut row = order.row(PaymentSource::Credits, agreement_id, now);
    row.status = Set(PurchaseStatus::Active.as_str().to_owned());
    row.transaction_id = Set(Some(entry.id));
    row.activate_time = Set(Some(now));
    let row = row.insert(&*tx).await?;
    let data = super::complete::payment_data(&row);
    outbox::emit(
        &tx,
        now,
        &org,
        types::PAYMENT_SUCCEEDED,
        &order.request_id,
        data,
    )
    .await?;
    order.audit(ctx, &tx, &row).await?;
    let response = proto::PurchaseServiceResponse {
        purchase: Some(to_proto(&row)),
        client_secret: String::new(),
        payment_intent_id: String::new(),
    };
    commit(ctx, tx, order.key.as_ref(), response).await
}

/// Pays through a gateway: checks the agreement, creates the intent (keyed by the
/// caller's request id, so a retry reuses it), then records the PENDING purchase after
/// checking the agreement again under the organization's lock.
async fn through_gateway(
    ctx: &Ctx,
    order: &Order<'_>,
    gateway: std::sync::Arc<dyn PaymentGateway>,
    payment_method_id: &str,
) -> Result<proto::PurchaseServiceResponse> {
    // Refuse before asking the gateway for an intent that could never be used.
    agreements::require(ctx.store.db(), order.org.id, &order.addon).await?;
    let request_id = order
        .key
        .as_ref()
        .map(idempotency::Key::request_id)
        .unwrap_or_default();
    let intent = gateway
        .create_intent(CreateIntent {
            organization_id: order.org.id,
            amount_micros: order.total_micros,
            currency: order.currency,
            idempotency_key: gateway_key("purchase-service", order.principal, request_id),
            payment_method_id: (!payment_method_id.is_empty())
                .then(|| payment_method_id.to_owned()),
            description: format!(
                "{} × {} for {}",
                order.addon.name, order.quantity, order.org.name
            ),
            metadata: BTreeMap::from([
                (
                    "organization_id".to_owned(),
                    ids::encode(IdKind::Organization, order.org.id),
                ),
                ("purpose".to_owned(), "service".to_owned()),
                ("service_id".to_owned(), order.addon.id.clone()),
                ("quantity".to_owned(), order.quantity.to_string()),
                ("request_id".to_owned(), request_id.to_owned()),
            ]),
        })
        .await?;
    if intent.amount_micros != order.total_micros || intent.currency != order.currency.code() {
        return Err(Error::Internal(format!(
            "gateway intent {} does not carry the requested amount",
            intent.id
        )));
    }
    let tx = ctx.store.write().await?;
    if let Some(done) = replayed(&tx, order.key.as_ref()).await? {
        return Ok(done);
    }
    let org = lock_live(&tx, &order.org).await?;
    let agreement_id = agreements::require(&*tx, org.id, &order.addon).await?;
    // The same intent already backs a purchase (its idempotency record expired): answer
    // that purchase instead of failing on the unique intent id.
    if let Some(existing) = service_purchases::Entity::find()
        .filter(service_purchases::Column::PaymentIntentId.eq(intent.id.as_str()))
        .one(&*tx)
        .await?
    {
        return Ok(gateway_response(&existing, &intent));
    }
    let now = ctx.store.now();
    let mut row = order.row(PaymentSource::Gateway, agreement_id, now);
    row.gateway = Set(gateway.name().to_owned());
    row.payment_intent_id = Set(Some(intent.id.clone()));
    let row = row.insert(&*tx).await?;
    order.audit(ctx, &tx, &row).await?;
    commit(ctx, tx, order.key.as_ref(), gateway_response(&row, &intent)).await
}

fn gateway_response(
    row: &service_purchases::Model,
    intent: &Intent,
) -> proto::PurchaseServiceResponse {
    proto::PurchaseServiceResponse {
        purchase: Some(to_proto(row)),
        client_secret: intent.client_secret.clone(),
        payment_intent_id: intent.id.clone(),
    }
}
