//! The lines and the invoice of a closed period: the MONTHLY add-ons for the next
//! period, the agent fees owed in arrears, and the invoice itself (paid from credits
//! when the balance covers it).

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use uuid::Uuid;

use crate::{
    domain::{
        billing::{LineKind, Month},
        clock::from_micros,
        money::Currency,
        plans::{ChargeType, Interval},
        subscription::PurchaseStatus,
    },
    error::{Error, Result},
    service::billing::{
        invoices::{self, NewInvoice, NewLine},
        ledger,
    },
    storage::{
        Tx,
        entities::{
            billing_records, invoices as invoice_rows, organizations, service_purchases,
            subscription_periods, subscriptions,
        },
    },
};

use super::Run;

/// The MONTHLY add-ons the organization holds ACTIVE since before `start`, charged for
/// the months of `[start, end)`.
pub(super) async fn addon_lines(
    tx: &Tx,
    org_id: Uuid,
    currency: Currency,
    interval: Interval,
    (start, end): (i64, i64),
) -> Result<Vec<NewLine>> {
    let purchases = service_purchases::Entity::find()
        .filter(service_purchases::Column::OrganizationId.eq(org_id))
        .filter(service_purchases::Column::Status.eq(PurchaseStatus::Active.as_str()))
        .filter(service_purchases::Column::ChargeType.eq(ChargeType::Monthly.as_str()))
        .filter(service_purchases::Column::ActivateTime.lt(start))
        .order_by_asc(service_purchases::Column::CreateTime)
        .order_by_asc(service_purchases::Column::Id)
        .all(&**tx)
        .await?;
    let months = i64::from(interval.months());
    let mut lines = Vec::new();
    for purchase in purchases {
        if purchase.currency != currency.code() || purchase.unit_amount_micros <= 0 {
            tracing::warn!(purchase = %purchase.id, "add-on not renewable in the organization's currency");
            continue;
        }
        let quantity = purchase
            .quantity
            .checked_mul(months)
            .ok_or_else(|| Error::Internal("add-on quantity overflows".into()))?;
        lines.push(NewLine {
            description: format!(
                "{} × {}, {} month{}: {} – {}",
                purchase.service_name,
                purchase.quantity,
                months,
                if months == 1 { "" } else { "s" },
                day(start),
                day(end)
            ),
            kind: LineKind::Addon,
            quantity,
            unit_amount_micros: purchase.unit_amount_micros,
            period_start: start,
            period_end: end,
            plan_id: String::new(),
            agent_id: None,
            service_id: purchase.service_id.clone(),
        });
    }
    Ok(lines)
}

/// One AGENT_FEE line per billing record of the organization not billed yet whose
/// month ended by `end`, with the records. A `last` bill (the subscription ends at
/// `end`, no renewal follows) also takes the month that contains `end`: an agent's fee
/// is a monthly rate owed for any month it worked in.
pub(super) async fn agent_fees(
    tx: &Tx,
    org_id: Uuid,
    end: i64,
    last: bool,
) -> Result<(Vec<NewLine>, Vec<billing_records::Model>)> {
    // A month ended by `end` ⇔ it is before the month containing `end`; a month begun
    // before `end` ⇔ it is not after the month containing `end`'s previous instant.
    let months = if last {
        billing_records::Column::Month.lte(Month::of(end - 1).to_string())
    } else {
        billing_records::Column::Month.lt(Month::of(end).to_string())
    };
    let records = billing_records::Entity::find()
        .filter(billing_records::Column::OrganizationId.eq(org_id))
        .filter(billing_records::Column::InvoiceId.is_null())
        .filter(billing_records::Column::RevenueMicros.gt(0))
        .filter(months)
        .order_by_asc(billing_records::Column::Month)
        .order_by_asc(billing_records::Column::AgentName)
        .order_by_asc(billing_records::Column::Id)
        .all(&**tx)
        .await?;
    let lines = records
        .iter()
        .map(|record| {
            let month: Option<Month> = record.month.parse().ok();
            NewLine {
                description: format!("Agent {} — {}", record.agent_name, record.month),
                kind: LineKind::AgentFee,
                quantity: 1,
                unit_amount_micros: record.revenue_micros,
                period_start: month.map_or(end, Month::start),
                period_end: month.map_or(end, Month::end),
                plan_id: String::new(),
                agent_id: Some(record.agent_id),
                service_id: String::new(),
            }
        })
        .collect();
    Ok((lines, records))
}

/// Issues the period's invoice (none without lines), pays it from credits when the
/// balance covers it, marks the billed agent-fee records and links the closed period.
#[allow(clippy::too_many_arguments)]
pub(super) async fn bill(
    run: &Run<'_>,
    tx: &Tx,
    org: &organizations::Model,
    sub: &subscriptions::Model,
    (start, end): (i64, i64),
    lines: Vec<NewLine>,
    records: &[billing_records::Model],
    now: i64,
) -> Result<Option<(invoice_rows::Model, bool)>> {
    if lines.is_empty() {
        return Ok(None);
    }
    let ctx = run.ctx;
    let mut account = ledger::lock_account(tx, org, now).await?;
    let (issued, paid) = invoices::issue_and_collect(
        tx,
        ctx,
        org,
        &mut account,
        NewInvoice {
            subscription_id: Some(sub.id),
            period_start: start,
            period_end: end,
            lines,
            memo: format!("Renewal at {}", day(sub.current_period_end)),
            due_time: None,
        },
        run.principal.author(),
        run.request_id,
        now,
    )
    .await?;
    let invoice = issued.invoice;
    if !records.is_empty() {
        let ids: Vec<Uuid> = records.iter().map(|r| r.id).collect();
        let marked = billing_records::Entity::update_many()
            .col_expr(
                billing_records::Column::InvoiceId,
                sea_orm::sea_query::Expr::value(Some(invoice.id)),
            )
            .filter(billing_records::Column::Id.is_in(ids.clone()))
            .filter(billing_records::Column::InvoiceId.is_null())
            .exec(&**tx)
            .await?;
        if marked.rows_affected != ids.len() as u64 {
            return Err(Error::Internal(
                "billing records were billed concurrently".into(),
            ));
        }
    }
    subscription_periods::Entity::update_many()
        .col_expr(
            subscription_periods::Column::InvoiceId,
            sea_orm::sea_query::Expr::value(Some(invoice.id)),
        )
        .filter(subscription_periods::Column::SubscriptionId.eq(sub.id))
        .filter(subscription_periods::Column::PeriodEnd.eq(sub.current_period_end))
        .exec(&**tx)
        .await?;
    Ok(Some((invoice, paid)))
}

/// `YYYY-MM-DD` of an instant.
fn day(at: i64) -> String {
    from_micros(at).format("%Y-%m-%d").to_string()
}
