//! UpdateOrganization: the fields named by the update mask, billing terms only by the
//! organization's managers, checked against the locked row's etag. The plan is not
//! updated here: it mirrors the subscription (SubscriptionService).

use sea_orm::{ActiveValue::Set, IntoActiveModel};
use serde_json::json;

use crate::{
    auth::Caller,
    domain::{
        events::types,
        ids::{self, IdKind},
        money::{Currency, Money},
        text,
    },
    error::{Error, Result, Violations, quoted},
    events::outbox,
    grpc::{Ctx, convert},
    proto,
    service::{agent_count, audit, check_etag},
    storage::audit::AuditRecord,
};

use super::{
    lock_live, save_versioned,
    validation::{parse_alerts, parse_limits, parse_rate},
};

/// Fields of UpdateOrganization's mask that only the organization's managers may set.
const MANAGER_FIELDS: &[&str] = &["billing_rate_per_agent", "currency", "plan", "usage_limits"];
const UPDATABLE: &[&str] = &[
    "name",
    "contact_name",
    "contact_email",
    "description",
    "billing_rate_per_agent",
    "currency",
    "plan",
    "usage_limits",
    "billing_alerts",
];

/// UpdateOrganization.
pub async fn update(
    ctx: Ctx,
    caller: Caller,
    req: proto::UpdateOrganizationRequest,
) -> Result<proto::UpdateOrganizationResponse> {
    let org_in = req.organization.unwrap_or_default();
    let access = caller
        .authorize(&ctx.store, "organization.id", &org_in.id)
        .await?;
    let paths: Vec<String> = req.update_mask.map(|m| m.paths).unwrap_or_default();
    let mut v = Violations::new();
    if paths.is_empty() {
        v.add("update_mask", "must name at least one field to update");
    }
    for path in &paths {
        if path == "slug" {
            v.add("update_mask", "slug is immutable after creation");
        } else if !UPDATABLE.contains(&path.as_str()) {
            v.add(
                "update_mask",
                format!(
                    "{} cannot be updated; updatable: {}",
                    quoted(path),
                    UPDATABLE.join(", ")
                ),
            );
        }
    }
    v.finish()?;
    if !access.manages() && paths.iter().any(|p| MANAGER_FIELDS.contains(&p.as_str())) {
        return Err(Error::PermissionDenied(
            "billing terms (rate, currency, plan, usage limits) are set by the organization's agency or an operator".into(),
        ));
    }
    let current = access.org().clone();
    let has = |f: &str| paths.iter().any(|p| p == f);
    let mut v = Violations::new();
    let currency = if has("currency") {
        v.check("organization.currency", org_in.currency.parse::<Currency>())
    } else {
        Some(convert::org_currency(&current))
    }
    .unwrap_or(Currency::Usd);
    let mut row = current.clone().into_active_model();
    let mut changed = serde_json::Map::new();
    if has("name")
        && let Some(name) = v.check("organization.name", text::name(&org_in.name, 100))
    {
        changed.insert("name".into(), json!(name));
        row.name = Set(name);
    }
    if has("contact_name")
        && let Some(value) = v.check(
            "organization.contact_name",
            text::bounded(&org_in.contact_name, 200),
        )
    {
        changed.insert("contact_name".into(), json!(value.trim()));
        row.contact_name = Set(value.trim().to_owned());
    }
    if has("contact_email")
        && let Some(value) = v.check(
            "organization.contact_email",
            text::optional_email(&org_in.contact_email),
        )
    {
        changed.insert("contact_email".into(), json!(value));
        row.contact_email = Set(value);
    }
    if has("description")
        && let Some(value) = v.check(
            "organization.description",
            text::bounded(&org_in.description, 1000),
        )
    {
        changed.insert("description".into(), json!(value));
        row.description = Set(value.to_owned());
    }
    if has("currency") {
        changed.insert("currency".into(), json!(currency.code()));
        row.currency = Set(currency.code().to_owned());
    }
    if has("billing_rate_per_agent") {
        let rate = org_in.billing_rate_per_agent.clone().unwrap_or_default();
        if let Some(micros) = parse_rate(
            &mut v,
            "organization.billing_rate_per_agent",
            &rate,
            currency,
        ) {
            changed.insert("billing_rate_micros".into(), json!(micros));
            row.billing_rate_micros = Set(micros);
        }
    }
    // The plan mirrors the subscription: it changes only through the SubscriptionService.
    // Naming it in the mask with the current value is allowed (a read-modify-write of
    // the whole organization) and changes nothing.
    if has("plan") && org_in.plan != current.plan {
        v.add(
            "organization.plan",
            "the plan follows the subscription; change it with ChangePlan \
             (or AdminUpdateSubscription for operators)",
        );
    }
    if has("usage_limits") {
        let limits = parse_limits(
            &mut v,
            "organization.usage_limits",
            &org_in.usage_limits.clone().unwrap_or_default(),
            currency,
        );
        changed.insert("usage_limits".into(), json!({
            "spend_limit_micros": limits.spend_limit_micros, "max_agents": limits.max_agents,
            "max_phone_numbers": limits.max_phone_numbers, "max_concurrent_calls": limits.max_concurrent_calls,
        }));
        row.spend_limit_micros = Set(limits.spend_limit_micros);
        row.max_agents = Set(limits.max_agents);
        row.max_phone_numbers = Set(limits.max_phone_numbers);
        row.max_concurrent_calls = Set(limits.max_concurrent_calls);
    }
    if has("billing_alerts") {
        let alerts = parse_alerts(
            &mut v,
            "organization.billing_alerts",
            &org_in.billing_alerts.clone().unwrap_or_default(),
        );
        changed.insert("billing_alerts".into(), json!({
            "thresholds": alerts.thresholds, "emails": alerts.emails, "action": alerts.action.as_str(),
        }));
        row.alert_thresholds = Set(json!(alerts.thresholds).to_string());
        row.alert_emails = Set(json!(alerts.emails).to_string());
        row.alert_action = Set(alerts.action.as_str().to_owned());
    }
    v.finish()?;
    let now = ctx.store.now();
    let tx = ctx.store.write().await?;
    // The etag is checked against the row as it is under the lock; without an etag the
    // update applies on top of whatever concurrent updates committed first. Only the
    // fields in the mask are written.
    let locked = lock_live(&tx, &current).await?;
    check_etag(&org_in.etag, locked.version)?;
    row.update_time = Set(now);
    row.version = Set(locked.version + 1);
    let updated = save_versioned(&tx, row, current.id, locked.version).await?;
    let data = event_data(&updated, currency, &changed);
    outbox::emit(
        &tx,
        now,
        &updated,
        types::ORGANIZATION_UPDATED,
        &caller.trace_id,
        data,
    )
    .await?;
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: current.id,
            action: "UpdateOrganization",
            target_type: "organization",
            target_id: ids::encode(IdKind::Organization, current.id),
            request_id: &caller.trace_id,
            summary: serde_json::Value::Object(changed),
        },
    )
    .await?;
    tx.commit().await?;
    let count = agent_count(ctx.store.db(), current.id).await?;
    Ok(proto::UpdateOrganizationResponse {
        organization: Some(convert::organization(
            &ctx.settings.billing.catalogue,
            &updated,
            count,
        )),
    })
}

/// The organization.updated data: the changed fields with their new values, amounts as
/// decimal strings with the currency.
fn event_data(
    updated: &crate::storage::entities::organizations::Model,
    currency: Currency,
    changed: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let amount = |micros: i64| Money::from_micros(currency, micros).amount_string();
    let mut fields = changed.clone();
    if fields.remove("billing_rate_micros").is_some() {
        fields.insert(
            "billing_rate_per_agent".into(),
            json!({ "amount": amount(updated.billing_rate_micros), "currency": currency.code() }),
        );
    }
    if let Some(limits) = fields
        .get_mut("usage_limits")
        .and_then(|l| l.as_object_mut())
        && limits.remove("spend_limit_micros").is_some()
    {
        limits.insert(
            "spend_limit".into(),
            json!(updated.spend_limit_micros.map(amount)),
        );
        limits.insert("currency".into(), json!(currency.code()));
    }
    json!({
        "organization_id": ids::encode(IdKind::Organization, updated.id),
        "changed_fields": changed.keys().map(|k| if k == "billing_rate_micros" { "billing_rate_per_agent" } else { k.as_str() }).collect::<Vec<_>>(),
        "changes": fields,
    })
}
