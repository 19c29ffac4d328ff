//! Spend thresholds crossed by an ingestion: the alert row, its outbox event, its
//! emails and its audit entry, once per (organization, month, threshold).

use sea_orm::{ActiveValue::Set, EntityTrait, TryInsertResult};
use serde_json::json;
use uuid::Uuid;

use crate::{
    auth::OrgAccess,
    domain::{
        billing::Month,
        events::{EmailKind, types},
        ids::{self, IdKind, new_id},
        money::Money,
    },
    error::Result,
    events::{email, outbox},
    grpc::{Ctx, convert},
    service::audit,
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{organizations, spend_alerts},
    },
};

/// A spend threshold crossed by an accepted event.
#[derive(Debug)]
pub(super) struct Crossing {
    pub month: Month,
    pub threshold: u32,
    /// The month-to-date cost right after the crossing event.
    pub mtd: i64,
    pub limit: i64,
}

/// Stores each crossed threshold with its outbox event, emails and audit entry (the
/// audit entry names the caller whose event crossed it). The alert's unique key
/// decides: a threshold another transaction fired after this one read the fired
/// alerts (it read them before locking the counter) is skipped, so each fires once.
pub(super) async fn record(
    ctx: &Ctx,
    tx: &Tx,
    crossings: &[(&OrgAccess, Crossing)],
    now: i64,
) -> Result<()> {
    for (access, c) in crossings {
        let org = access.org();
        let inserted = spend_alerts::Entity::insert(spend_alerts::ActiveModel {
            id: Set(new_id()),
            organization_id: Set(org.id),
            month: Set(c.month.to_string()),
            threshold: Set(c.threshold as i32),
            month_to_date_micros: Set(c.mtd),
            limit_micros: Set(c.limit),
            trigger_time: Set(now),
        })
        .on_conflict_do_nothing_on([
            spend_alerts::Column::OrganizationId,
            spend_alerts::Column::Month,
            spend_alerts::Column::Threshold,
        ])
        .exec_without_returning(&**tx)
        .await?;
        if !matches!(inserted, TryInsertResult::Inserted(n) if n > 0) {
            continue;
        }
        tracing::info!(
            organization = %ids::encode(IdKind::Organization, org.id),
            month = %c.month,
            threshold = c.threshold,
            "spend threshold crossed"
        );
        let currency = convert::org_currency(org);
        let show = |m| Money::from_micros(currency, m).amount_string();
        let data = json!({
            "organization_id": ids::encode(IdKind::Organization, org.id),
            "month": c.month.to_string(),
            "threshold": c.threshold,
            "month_to_date_cost": show(c.mtd),
            "monthly_spend_limit": show(c.limit),
            "currency": currency.code(),
        });
        let event = outbox::emit(
            tx,
            now,
            org,
            types::USAGE_THRESHOLD_CROSSED,
            "",
            data.clone(),
        )
        .await?;
        queue_emails(tx, now, org, event, c).await?;
        audit(
            tx,
            ctx,
            access.principal(),
            AuditRecord {
                organization_id: org.id,
                action: "SpendThresholdCrossed",
                target_type: "organization",
                target_id: ids::encode(IdKind::Organization, org.id),
                request_id: "",
                summary: data,
            },
        )
        .await?;
    }
    Ok(())
}

/// Emails a crossed threshold to the organization's alert addresses (the owner when it
/// set none).
async fn queue_emails(
    tx: &Tx,
    now: i64,
    org: &organizations::Model,
    event: Uuid,
    c: &Crossing,
) -> Result<()> {
    let mut to: Vec<String> = serde_json::from_str(&org.alert_emails).unwrap_or_default();
    if to.is_empty() && !org.owner_email.is_empty() {
        to.push(org.owner_email.clone());
    }
    let currency = convert::org_currency(org);
    let show = |m| Money::from_micros(currency, m).amount_string();
    for address in to {
        email::queue(
            tx,
            now,
            org,
            Some(event),
            email::Email {
                kind: EmailKind::BillingAlert,
                to: address,
                subject: format!(
                    "{}: {} % of the monthly spend limit reached",
                    org.name, c.threshold
                ),
                body: format!(
                    "Hello,\n\n{} ({}) has spent {} {} in {}, {} % of its monthly spend limit of {} {}.\n",
                    org.name,
                    org.slug,
                    show(c.mtd),
                    currency.code(),
                    c.month,
                    c.threshold,
                    show(c.limit),
                    currency.code()
                ),
            },
        )
        .await?;
    }
    Ok(())
}
