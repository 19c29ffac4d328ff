//! The monthly spend limit and its alerts: SetSpendLimit, GetSpendStatus, and the rules
//! usage ingestion applies as it records cost.
//!
//! Decisions: the month is the UTC month of each event's `occurred_at`; a limit of zero
//! or less is no limit (SetSpendLimit only accepts positive limits); thresholds are
//! evaluated after each accepted event, so one event can cross several thresholds and
//! each threshold fires at most once per month (a unique key backs this up).

use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
};
use serde_json::json;

use crate::{
    auth::Caller,
    domain::{
        billing::{Month, percentage},
        events::types,
        ids::{self, IdKind},
        money::Money,
        org::SpendAction,
    },
    error::{Result, Violations},
    events::outbox,
    grpc::{Ctx, convert},
    proto,
    service::{
        audit, check_etag,
        orgs::{lock_live, parse_alerts, save_versioned},
    },
    storage::{
        audit::AuditRecord,
        entities::{organizations, spend_alerts, usage_counters},
    },
};

use super::{Sign, money_in};

/// The spend settings of an organization, as ingestion applies them.
#[derive(Debug, Clone)]
pub struct SpendRules {
    /// Monthly limit in micro-units; `None` = no limit.
    pub limit_micros: Option<i64>,
    /// Alert thresholds in percent, ascending.
    pub thresholds: Vec<u32>,
    /// Action at 100 %.
    pub action: SpendAction,
}

impl SpendRules {
    /// The rules of an organization row.
    pub fn of(org: &organizations::Model) -> SpendRules {
        let mut thresholds: Vec<u32> =
            serde_json::from_str(&org.alert_thresholds).unwrap_or_default();
        thresholds.sort_unstable();
        thresholds.dedup();
        SpendRules {
            limit_micros: org.spend_limit_micros.filter(|l| *l > 0),
            thresholds,
            action: org.alert_action.parse().unwrap_or(SpendAction::NotifyOnly),
        }
    }

    /// Whether usage is refused at month-to-date cost `mtd` (SUSPEND_USAGE at 100 %).
    pub fn blocks(&self, mtd: i64) -> bool {
        self.action == SpendAction::SuspendUsage && self.limit_micros.is_some_and(|l| mtd >= l)
    }

    /// Thresholds reached at `mtd` that are not in `fired`.
    pub fn newly_crossed(&self, mtd: i64, fired: &[u32]) -> Vec<u32> {
        let Some(limit) = self.limit_micros else {
            return Vec::new();
        };
        self.thresholds
            .iter()
            .copied()
            .filter(|t| !fired.contains(t))
            .filter(|t| i128::from(mtd) * 100 >= i128::from(limit) * i128::from(*t))
            .collect()
    }
}

/// SetSpendLimit: the monthly limit and the alert settings, replaced together.
pub async fn set_spend_limit(
    ctx: Ctx,
    caller: Caller,
    req: proto::SetSpendLimitRequest,
) -> Result<proto::SetSpendLimitResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org = access.org().clone();
    let currency = convert::org_currency(&org);
    let mut v = Violations::new();
    let limit = match &req.monthly_spend_limit {
        Some(m) => money_in(
            &mut v,
            "monthly_spend_limit",
            Some(m),
            currency,
            2,
            Sign::Positive,
        ),
        None => None,
    };
    let alerts = parse_alerts(
        &mut v,
        "billing_alerts",
        &req.billing_alerts.clone().unwrap_or_default(),
    );
    v.finish()?;
    let principal = access.principal().clone();
    let tx = ctx.store.write().await?;
    let locked = lock_live(&tx, &org).await?;
    check_etag(&req.etag, locked.version)?;
    let now = ctx.store.now();
    let mut row = locked.clone().into_active_model();
    row.spend_limit_micros = Set(limit);
    row.alert_thresholds = Set(json!(alerts.thresholds).to_string());
    row.alert_emails = Set(json!(alerts.emails).to_string());
    row.alert_action = Set(alerts.action.as_str().to_owned());
    row.update_time = Set(now);
    row.version = Set(locked.version + 1);
    let saved = save_versioned(&tx, row, org.id, locked.version).await?;
    let changes = json!({
        "monthly_spend_limit": limit.map(|m| Money::from_micros(currency, m).amount_string()),
        "currency": currency.code(),
        "alert_thresholds": alerts.thresholds,
        "alert_emails": alerts.emails,
        "action_at_100": alerts.action.as_str(),
    });
    let data = json!({
        "organization_id": ids::encode(IdKind::Organization, org.id),
        "changed_fields": ["usage_limits.monthly_spend_limit", "billing_alerts"],
        "changes": changes,
    });
    outbox::emit(
        &tx,
        now,
        &saved,
        types::ORGANIZATION_UPDATED,
        &caller.trace_id,
        data,
    )
    .await?;
    audit(
        &tx,
        &ctx,
        &principal,
        AuditRecord {
            organization_id: org.id,
            action: "SetSpendLimit",
            target_type: "organization",
            target_id: ids::encode(IdKind::Organization, org.id),
            request_id: &caller.trace_id,
            summary: changes,
        },
    )
    .await?;
    tx.commit().await?;
    let shown = convert::organization(&ctx.settings.billing.catalogue, &saved, 0);
    Ok(proto::SetSpendLimitResponse {
        monthly_spend_limit: shown.usage_limits.and_then(|l| l.monthly_spend_limit),
        billing_alerts: shown.billing_alerts,
        etag: shown.etag,
    })
}

/// GetSpendStatus: month-to-date cost against the limit, thresholds crossed, alerts.
pub async fn get_spend_status(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetSpendStatusRequest,
) -> Result<proto::GetSpendStatusResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let month = if req.month.is_empty() {
        Month::of(ctx.store.now())
    } else {
        req.month
            .parse::<Month>()
            .map_err(|e| crate::error::Error::invalid("month", e))?
    };
    let org = access.org();
    let currency = convert::org_currency(org);
    let db = ctx.store.db();
    let mtd = usage_counters::Entity::find_by_id((org.id, month.to_string()))
        .one(db)
        .await?
        .map(|c| c.cost_micros)
        .unwrap_or(0);
    let alerts = spend_alerts::Entity::find()
        .filter(spend_alerts::Column::OrganizationId.eq(org.id))
        .filter(spend_alerts::Column::Month.eq(month.to_string()))
        .order_by_asc(spend_alerts::Column::TriggerTime)
        .order_by_asc(spend_alerts::Column::Threshold)
        .all(db)
        .await?;
    let rules = SpendRules::of(org);
    let money = |m| convert::money(Money::from_micros(currency, m));
    let mut crossed: Vec<u32> = alerts.iter().map(|a| a.threshold as u32).collect();
    crossed.sort_unstable();
    let shown = convert::organization(&ctx.settings.billing.catalogue, org, 0);
    Ok(proto::GetSpendStatusResponse {
        month: month.to_string(),
        monthly_spend_limit: rules.limit_micros.map(money),
        billing_alerts: shown.billing_alerts,
        month_to_date_cost: Some(money(mtd)),
        percent_used: rules
            .limit_micros
            .map(|l| percentage(mtd, l, 2))
            .unwrap_or_default(),
        thresholds_crossed: crossed,
        alerts: alerts
            .iter()
            .map(|a| proto::SpendAlert {
                threshold: a.threshold as u32,
                month: a.month.clone(),
                month_to_date_cost: Some(money(a.month_to_date_micros)),
                monthly_spend_limit: Some(money(a.limit_micros)),
                trigger_time: convert::timestamp(a.trigger_time),
            })
            .collect(),
        usage_suspended: rules.blocks(mtd),
    })
}
