//! The `subscription.changed` event, emitted by every subscription transition in the
//! transaction that makes it.

use serde_json::json;
use uuid::Uuid;

use crate::{
    domain::{
        clock::from_micros,
        events::types,
        ids::{self, IdKind},
        money::{Currency, Money},
    },
    error::Result,
    events::outbox,
    storage::{
        Tx,
        entities::{organizations, subscriptions},
    },
};

/// Emits `subscription.changed` for `sub` as it is after the change; `change` says
/// what happened (`created`, `plan_changed`, `canceled`, `cancel_scheduled`, `resumed`,
/// `admin_updated`, `renewed`, `past_due`, `recovered`, …).
pub async fn changed(
    tx: &Tx,
    now: i64,
    org: &organizations::Model,
    sub: &subscriptions::Model,
    change: &str,
    request_id: &str,
) -> Result<Uuid> {
    let currency: Currency = sub.currency.parse().unwrap_or(Currency::Usd);
    let time = |t: i64| from_micros(t).to_rfc3339();
    let data = json!({
        "organization_id": ids::encode(IdKind::Organization, sub.organization_id),
        "subscription_id": ids::encode(IdKind::Subscription, sub.id),
        "change": change,
        "plan_id": sub.plan_id,
        "interval": sub.interval,
        "status": sub.status,
        "price": Money::from_micros(currency, sub.price_micros).amount_string(),
        "currency": currency.code(),
        "cancel_at_period_end": sub.cancel_at_period_end,
        "scheduled_plan_id": sub.scheduled_plan_id,
        "current_period_start": time(sub.current_period_start),
        "current_period_end": time(sub.current_period_end),
        "end_time": sub.end_time.map(time),
    });
    outbox::emit(tx, now, org, types::SUBSCRIPTION_CHANGED, request_id, data).await
}
