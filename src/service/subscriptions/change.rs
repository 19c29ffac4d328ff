//! PreviewPlanChange and ChangePlan: upgrades with exact proration, scheduled downgrades.
//!
//! Both RPCs run the same computation ([`compute::compute`]); the preview reads, the
//! change writes under the organization → subscription → billing account locks.
//!
//! Decisions:
//! - The kind is decided by tier rank only: a higher rank is an UPGRADE, a lower one a
//!   DOWNGRADE, the same plan with the other interval an INTERVAL_CHANGE. Prices are
//!   never compared (annual vs monthly of one plan is not an upgrade).
//! - An upgrade applies at once. With the same interval the period is kept and two
//!   lines are invoiced: PRORATION_CREDIT = −(price paid × unused fraction) and
//!   PRORATION_CHARGE = new price × remaining fraction, fractions in whole seconds and
//!   each amount rounded half-up to the minor unit. The credit uses the price stored on
//!   the subscription (what was paid), the charge the catalogue price. When the interval
//!   changes too, the period restarts at the change instant (to the second): the old
//!   period's unused part is credited and the whole new period charged.
//! - Monthly → annual of the same plan applies at once with that reset; annual →
//!   monthly waits for the period end.
//! - A downgrade waits for the period end (`scheduled_plan_id` / `scheduled_interval`;
//!   the renewal cycle applies it). A later scheduled change replaces an earlier one; a
//!   change applied at once clears it.
//! - Asking for the current plan and interval drops a scheduled change (kind
//!   UNSPECIFIED, not scheduled, no lines, effective now); without one it fails
//!   `SAME_PLAN`.
//! - While TRIALING every change applies at once without lines or invoice (no money
//!   during a trial) and the trial's period is kept.
//! - Zero-amount lines are omitted; an immediate change whose lines are all zero (e.g.
//!   at or after the period end, before the cycle ran) issues no invoice.
//! - The proration invoice (period: the change instant to the period end) is paid from
//!   credits at once when the balance covers it ("prepaid"), else it stays OPEN (the
//!   renewal cycle's past-due rule watches every OPEN invoice of the subscription). A
//!   negative net (possible when an upgrade also shortens the interval) cannot be an
//!   invoice total: a ONE_OFF line "Credited to your balance" brings the total to zero
//!   (PAID at issue) and a CREDIT ledger entry of the difference, linked to the invoice,
//!   adds it to the balance — as Stripe does with the customer balance.
//! - A change to another plan is refused `PLAN_LIMITS_EXCEEDED` (FAILED_PRECONDITION,
//!   with the numbers) when current usage exceeds any of the target plan's limits,
//!   whatever its kind; the preview returns those violations instead of failing. For
//!   `max_organizations` of an organization that is not an agency, the limit is the
//!   account's after the change (the highest among the owner's organizations, this
//!   one on the target plan), as RegisterOrganization counts it.
//! - A cancellation scheduled for the period end is left as it is.

mod apply;
mod compute;

pub use apply::change_plan;

use compute::{Computed, Current, Target};

use sea_orm::ConnectionTrait;

use crate::{
    auth::Caller,
    domain::{
        money::{Currency, Money},
        plans::{Interval, Plan},
        subscription::SubStatus,
    },
    error::{Error, Result, Violations},
    grpc::{
        Ctx,
        convert::{money, org_currency, timestamp},
    },
    proto,
    service::billing::invoices::{self, NewLine},
    storage::entities::{organizations, subscriptions},
};

use super::{
    current, exceeded, interval_of, interval_proto,
    lifecycle::{parse_plan, price_for},
    no_subscription, org_limit_on, usage,
};

/// The validated target of a request.
struct Wanted<'a> {
    plan: &'a Plan,
    /// `None` keeps the current interval.
    interval: Option<Interval>,
}

/// Checks `plan_id` and `interval`, adding violations to `v`.
fn wanted<'a>(
    ctx: &'a Ctx,
    v: &mut Violations,
    plan_id: &str,
    interval: i32,
) -> Option<Wanted<'a>> {
    let plan = parse_plan(ctx, v, "plan_id", plan_id);
    let parsed = interval_of(interval);
    if interval != 0 && parsed.is_none() {
        v.add(
            "interval",
            "must be BILLING_INTERVAL_MONTH, BILLING_INTERVAL_YEAR or unspecified (keep)",
        );
    }
    Some(Wanted {
        plan: plan?,
        interval: parsed,
    })
}

/// A computed change with what it was computed from.
struct Prepared<'a> {
    from: &'a Plan,
    from_interval: Interval,
    to: &'a Plan,
    to_interval: Interval,
    currency: Currency,
    computed: Computed,
}

/// Resolves both plans and prices and computes the change at `now`.
fn prepare<'a>(
    ctx: &'a Ctx,
    org: &organizations::Model,
    sub: &subscriptions::Model,
    wanted: &Wanted<'a>,
    now: i64,
) -> Result<Prepared<'a>> {
    let from = ctx
        .settings
        .billing
        .catalogue
        .plan(&sub.plan_id)
        .ok_or_else(|| {
            Error::precondition(
                "PLAN_NOT_AVAILABLE",
                format!(
                    "the current plan {:?} is no longer in the catalogue; an operator must \
                     change it with AdminUpdateSubscription",
                    sub.plan_id
                ),
            )
            .with("plan_id", &sub.plan_id)
        })?;
    let from_interval: Interval = sub
        .interval
        .parse()
        .map_err(|_| Error::Internal(format!("stored interval {:?}", sub.interval)))?;
    let to_interval = wanted.interval.unwrap_or(from_interval);
    let currency = org_currency(org);
    let same = from.id == wanted.plan.id && from_interval == to_interval;
    // Dropping a scheduled change needs no price (e.g. a custom-priced current plan).
    let price_micros = if same {
        sub.price_micros
    } else {
        price_for(wanted.plan, org, to_interval)?
    };
    let current = Current {
        plan: from,
        interval: from_interval,
        price_micros: sub.price_micros,
        trialing: sub.status == SubStatus::Trialing.as_str(),
        period_start: sub.current_period_start,
        period_end: sub.current_period_end,
        has_scheduled: sub.scheduled_plan_id.is_some() || sub.scheduled_interval.is_some(),
    };
    let target = Target {
        plan: wanted.plan,
        interval: to_interval,
        price_micros,
    };
    Ok(Prepared {
        from,
        from_interval,
        to: wanted.plan,
        to_interval,
        currency,
        computed: compute::compute(&current, &target, currency, now)?,
    })
}

/// A line to invoice in proto form (as `invoices::to_proto` shows stored lines).
fn line_proto(line: &NewLine, currency: Currency) -> proto::InvoiceLine {
    let amount = invoices::line_amount(line.quantity, line.unit_amount_micros, currency)
        .unwrap_or(line.unit_amount_micros);
    let shown = |m| Some(money(Money::from_micros(currency, m)));
    proto::InvoiceLine {
        description: line.description.clone(),
        kind: invoices::line_kind(line.kind) as i32,
        quantity: line.quantity,
        unit_amount: shown(line.unit_amount_micros),
        amount: shown(amount),
        period_start: timestamp(line.period_start),
        period_end: timestamp(line.period_end),
        plan_id: line.plan_id.clone(),
        agent_id: String::new(),
        service_id: line.service_id.clone(),
    }
}

impl Prepared<'_> {
    fn proto(&self) -> proto::PlanChange {
        let c = &self.computed;
        let shown = |m| Some(money(Money::from_micros(self.currency, m)));
        proto::PlanChange {
            from_plan_id: self.from.id.clone(),
            from_interval: interval_proto(self.from_interval) as i32,
            to_plan_id: self.to.id.clone(),
            to_interval: interval_proto(self.to_interval) as i32,
            kind: c.kind as i32,
            scheduled: c.scheduled(),
            effective_time: timestamp(c.effective_time),
            lines: c
                .lines
                .iter()
                .map(|l| line_proto(l, self.currency))
                .collect(),
            credit_amount: shown(c.credit_micros),
            charge_amount: shown(c.charge_micros),
            net_amount: shown(c.net_micros()),
            new_price: shown(c.new_price_micros),
        }
    }

    /// The target plan's limits that current usage exceeds (none when the plan stays):
    /// `max_organizations` as [`org_limit_on`] has it for the target plan.
    async fn violations<C: ConnectionTrait>(
        &self,
        ctx: &Ctx,
        db: &C,
        org: &organizations::Model,
        now: i64,
    ) -> Result<Vec<proto::PlanLimitViolation>> {
        if self.from.id == self.to.id {
            return Ok(Vec::new());
        }
        let mut limits = self.to.limits;
        limits.max_organizations =
            org_limit_on(db, &ctx.settings.billing.catalogue, org, self.to).await?;
        Ok(exceeded(&limits, &usage(db, org, now).await?))
    }

    fn amount(&self, micros: i64) -> String {
        Money::from_micros(self.currency, micros).amount_string()
    }
}

/// FAILED_PRECONDITION `PLAN_LIMITS_EXCEEDED` with every exceeded limit.
fn limits_exceeded(plan: &Plan, found: &[proto::PlanLimitViolation]) -> Error {
    let text: Vec<String> = found
        .iter()
        .map(|v| {
            format!(
                "{}: {} in use, {} allows {}",
                v.limit, v.current, plan.id, v.allowed
            )
        })
        .collect();
    let mut error = Error::precondition(
        "PLAN_LIMITS_EXCEEDED",
        format!(
            "current usage exceeds the {} plan's limits ({}); reduce it first",
            plan.id,
            text.join("; ")
        ),
    )
    .with("plan_id", &plan.id)
    .with(
        "violations",
        found
            .iter()
            .map(|v| format!("{}={}/{}", v.limit, v.current, v.allowed))
            .collect::<Vec<_>>()
            .join(","),
    );
    if let Some(first) = found.first() {
        error = error
            .with("limit", &first.limit)
            .with("current", first.current)
            .with("allowed", first.allowed);
    }
    error
}

/// PreviewPlanChange: what ChangePlan would do now, and the limits current usage
/// exceeds; changes nothing.
pub async fn preview_plan_change(
    ctx: Ctx,
    caller: Caller,
    req: proto::PreviewPlanChangeRequest,
) -> Result<proto::PreviewPlanChangeResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let wanted = wanted(&ctx, &mut v, &req.plan_id, req.interval);
    v.finish()?;
    let wanted = wanted.ok_or_else(|| Error::Internal("validated fields missing".into()))?;
    let org = access.org();
    let db = ctx.store.db();
    let now = ctx.store.now();
    let sub = current(db, org.id)
        .await?
        .ok_or_else(|| no_subscription(org))?;
    let prepared = prepare(&ctx, org, &sub, &wanted, now)?;
    let violations = prepared.violations(&ctx, db, org, now).await?;
    Ok(proto::PreviewPlanChangeResponse {
        change: Some(prepared.proto()),
        violations,
    })
}
