//! The pure computation of a plan change, shared by PreviewPlanChange and ChangePlan:
//! its kind (by tier rank only), whether it applies at once or at the period end, the
//! proration lines and their amounts.

use std::cmp::Ordering;

use crate::{
    domain::{
        billing::LineKind,
        clock::from_micros,
        money::Currency,
        plans::{Interval, Plan},
        subscription::{add_months, prorate, to_second},
    },
    error::{Error, Result},
    proto::PlanChangeKind,
    service::billing::invoices::NewLine,
};

/// The subscription being changed, as far as the computation needs it.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    /// The current plan.
    pub plan: &'a Plan,
    /// The current interval.
    pub interval: Interval,
    /// The recurring price actually charged for the current period.
    pub price_micros: i64,
    /// In a free trial: changes apply at once without money.
    pub trialing: bool,
    /// Start of the current period.
    pub period_start: i64,
    /// End of the current period (exclusive).
    pub period_end: i64,
    /// Whether a change is scheduled for the period end.
    pub has_scheduled: bool,
}

/// What the organization asks for.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The plan after the change.
    pub plan: &'a Plan,
    /// The interval after the change.
    pub interval: Interval,
    /// The target plan's catalogue price for the org's currency and `interval`.
    pub price_micros: i64,
}

/// A new period started by an interval reset: `[anchor, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    /// The new anchor and period start (the change instant, to the second).
    pub anchor: i64,
    /// The new period end.
    pub end: i64,
}

/// How the change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Now; `reset` when the period restarts at the change instant.
    Immediate {
        /// The new period, when the interval changes with an immediate change.
        reset: Option<Reset>,
    },
    /// At the current period end.
    Scheduled,
    /// Asking for the current plan and interval drops the scheduled change.
    Unscheduled,
}

/// The computed change.
#[derive(Debug, Clone)]
pub struct Computed {
    /// Upgrade, downgrade, interval change; UNSPECIFIED when a scheduled change is
    /// dropped.
    pub kind: PlanChangeKind,
    /// Now, at the period end, or dropping the scheduled change.
    pub effect: Effect,
    /// When it takes effect.
    pub effective_time: i64,
    /// Proration lines (zero amounts omitted) and, when the net is negative, the
    /// ONE_OFF line that brings the invoice total to zero.
    pub lines: Vec<NewLine>,
    /// Sum of the credit lines, positive.
    pub credit_micros: i64,
    /// Sum of the charge lines.
    pub charge_micros: i64,
    /// The recurring price after the change.
    pub new_price_micros: i64,
    /// Start of the invoiced span (the change instant).
    pub invoice_start: i64,
    /// End of the invoiced span (the period end after the change).
    pub invoice_end: i64,
}

impl Computed {
    /// Charge minus credit; negative means money back to the credit balance.
    pub fn net_micros(&self) -> i64 {
        self.charge_micros - self.credit_micros
    }

    /// Whether the change waits for the period end.
    pub fn scheduled(&self) -> bool {
        self.effect == Effect::Scheduled
    }
}

fn instant(at: i64) -> String {
    from_micros(at).format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn line(kind: LineKind, description: String, amount: i64, span: (i64, i64), plan: &str) -> NewLine {
    NewLine {
        description,
        kind,
        quantity: 1,
        unit_amount_micros: amount,
        period_start: span.0,
        period_end: span.1,
        plan_id: plan.to_owned(),
        agent_id: None,
        service_id: String::new(),
    }
}

/// Computes a plan change at `now` (see the module notes of `change`); fails
/// FAILED_PRECONDITION `SAME_PLAN` when nothing would change.
pub fn compute(
    current: &Current<'_>,
    target: &Target<'_>,
    currency: Currency,
    now: i64,
) -> Result<Computed> {
    let now_s = to_second(now);
    let nothing = |kind, effect, effective_time, new_price_micros| Computed {
        kind,
        effect,
        effective_time,
        lines: Vec::new(),
        credit_micros: 0,
        charge_micros: 0,
        new_price_micros,
        invoice_start: now_s,
        invoice_end: current.period_end,
    };
    if current.plan.id == target.plan.id && current.interval == target.interval {
        if current.has_scheduled {
            return Ok(nothing(
                PlanChangeKind::Unspecified,
                Effect::Unscheduled,
                now_s,
                current.price_micros,
            ));
        }
        return Err(Error::precondition(
            "SAME_PLAN",
            format!(
                "the subscription is already on the {} plan, {}",
                current.plan.id,
                current.interval.adjective()
            ),
        ));
    }
    let kind = match target.plan.tier_rank.cmp(&current.plan.tier_rank) {
        Ordering::Greater => PlanChangeKind::Upgrade,
        Ordering::Less => PlanChangeKind::Downgrade,
        Ordering::Equal => PlanChangeKind::IntervalChange,
    };
    if current.trialing {
        // No money changes hands during a trial: the change applies at once and the
        // trial (the current period) is kept.
        return Ok(nothing(
            kind,
            Effect::Immediate { reset: None },
            now_s,
            target.price_micros,
        ));
    }
    let immediate = match kind {
        PlanChangeKind::Upgrade => true,
        PlanChangeKind::IntervalChange => target.interval == Interval::Year,
        _ => false,
    };
    if !immediate {
        return Ok(nothing(
            kind,
            Effect::Scheduled,
            current.period_end,
            target.price_micros,
        ));
    }
    let (start, end) = (current.period_start, current.period_end);
    let at = now_s.clamp(start, end.max(start));
    let credit = prorate(current.price_micros, start, end, now, currency);
    let reset = if current.interval == target.interval {
        None
    } else {
        let end = add_months(now_s, target.interval.months())
            .ok_or_else(|| Error::Internal("period end beyond the calendar".into()))?;
        Some(Reset { anchor: now_s, end })
    };
    let (charge, charge_span, charge_text) = match reset {
        None => (
            prorate(target.price_micros, start, end, now, currency),
            (at, end),
            format!(
                "Remaining time on {} ({}) from {}",
                target.plan.name,
                target.interval.adjective(),
                instant(at)
            ),
        ),
        Some(reset) => (
            target.price_micros,
            (reset.anchor, reset.end),
            format!(
                "{} ({}) from {} to {}",
                target.plan.name,
                target.interval.adjective(),
                instant(reset.anchor),
                instant(reset.end)
            ),
        ),
    };
    let mut lines = Vec::new();
    if credit != 0 {
        lines.push(line(
            LineKind::ProrationCredit,
            format!(
                "Unused time on {} ({}) after {}",
                current.plan.name,
                current.interval.adjective(),
                instant(at)
            ),
            -credit,
            (at, end),
            &current.plan.id,
        ));
    }
    if charge != 0 {
        lines.push(line(
            LineKind::ProrationCharge,
            charge_text,
            charge,
            charge_span,
            &target.plan.id,
        ));
    }
    let invoice_end = reset.map_or(end, |r| r.end);
    let invoice_start = now_s.min(invoice_end);
    if charge < credit {
        // The invoice cannot be negative: the difference goes to the credit balance
        // (as Stripe's customer balance does) and this line brings the total to zero.
        lines.push(line(
            LineKind::OneOff,
            "Credited to your balance".to_owned(),
            credit - charge,
            (invoice_start, invoice_end),
            "",
        ));
    }
    Ok(Computed {
        kind,
        effect: Effect::Immediate { reset },
        effective_time: now_s,
        lines,
        credit_micros: credit,
        charge_micros: charge,
        new_price_micros: target.price_micros,
        invoice_start,
        invoice_end,
    })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{plans::Catalogue, subscription::SECOND};

    fn at(y: i32, m: u32, d: u32, h: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
            .single()
            .map(|t| t.timestamp_micros())
            .unwrap_or_default()
    }

    fn current<'a>(plan: &'a Plan, interval: Interval, start: i64, end: i64) -> Current<'a> {
        Current {
            plan,
            interval,
            price_micros: plan.price(Currency::Usd, interval).unwrap_or(0),
            trialing: false,
            period_start: start,
            period_end: end,
            has_scheduled: false,
        }
    }

    fn target(plan: &Plan, interval: Interval) -> Target<'_> {
        Target {
            plan,
            interval,
            price_micros: plan.price(Currency::Usd, interval).unwrap_or(0),
        }
    }

    #[test]
    fn an_upgrade_mid_period_prorates_both_prices() {
        let c = Catalogue::builtin();
        let (pro, business) = (c.plan("pro").unwrap(), c.plan("business").unwrap());
        let (start, end) = (at(2026, 11, 1, 0), at(2026, 12, 1, 0));
        let now = at(2026, 11, 16, 0) + 250_000;
        let from = current(pro, Interval::Month, start, end);
        let done = compute(
            &from,
            &target(business, Interval::Month),
            Currency::Usd,
            now,
        )
        .unwrap();
        assert_eq!(done.kind, PlanChangeKind::Upgrade);
        assert_eq!(done.effect, Effect::Immediate { reset: None });
        // Half of November: 29.00 / 2 and 149.00 / 2 (business is 149.00).
        let business_month = business.price(Currency::Usd, Interval::Month).unwrap();
        assert_eq!(done.credit_micros, 14_500_000);
        assert_eq!(
            done.charge_micros,
            prorate(business_month, start, end, now, Currency::Usd)
        );
        assert_eq!(done.lines.len(), 2);
        assert_eq!(done.lines[0].unit_amount_micros, -14_500_000);
        assert_eq!(
            done.lines[0].description,
            "Unused time on Pro (monthly) after 2026-11-16 00:00:00 UTC"
        );
        assert_eq!(done.effective_time, at(2026, 11, 16, 0));
        assert_eq!(
            (done.invoice_start, done.invoice_end),
            (at(2026, 11, 16, 0), end)
        );
    }

    #[test]
    fn kinds_follow_tier_rank_and_interval() {
        let c = Catalogue::builtin();
        let (basic, pro) = (c.plan("basic").unwrap(), c.plan("pro").unwrap());
        let (start, end) = (at(2026, 11, 1, 0), at(2027, 11, 1, 0));
        let now = at(2027, 2, 1, 0);
        // Annual pro → monthly basic is a downgrade even though it is cheaper per
        // period; scheduled.
        let annual = current(pro, Interval::Year, start, end);
        let down = compute(&annual, &target(basic, Interval::Month), Currency::Usd, now).unwrap();
        assert_eq!(down.kind, PlanChangeKind::Downgrade);
        assert!(down.scheduled());
        assert_eq!(down.effective_time, end);
        assert!(down.lines.is_empty());
        // Annual → monthly on the same plan: scheduled interval change.
        let to_month = compute(&annual, &target(pro, Interval::Month), Currency::Usd, now).unwrap();
        assert_eq!(to_month.kind, PlanChangeKind::IntervalChange);
        assert!(to_month.scheduled());
        // Monthly → annual on the same plan: at once, the period resets.
        let monthly = current(pro, Interval::Month, at(2027, 1, 15, 0), at(2027, 2, 15, 0));
        let to_year = compute(&monthly, &target(pro, Interval::Year), Currency::Usd, now).unwrap();
        assert_eq!(to_year.kind, PlanChangeKind::IntervalChange);
        assert_eq!(
            to_year.effect,
            Effect::Immediate {
                reset: Some(Reset {
                    anchor: now,
                    end: at(2028, 2, 1, 0)
                })
            }
        );
        assert_eq!(to_year.charge_micros, 290_000_000);
        // Same plan and interval: refused, unless it drops a scheduled change.
        let same = compute(&monthly, &target(pro, Interval::Month), Currency::Usd, now);
        assert_eq!(same.err().map(|e| e.reason()), Some("SAME_PLAN"));
        let scheduled = Current {
            has_scheduled: true,
            ..monthly
        };
        let drop = compute(
            &scheduled,
            &target(pro, Interval::Month),
            Currency::Usd,
            now,
        )
        .unwrap();
        assert_eq!(drop.effect, Effect::Unscheduled);
        assert_eq!(drop.kind, PlanChangeKind::Unspecified);
    }

    #[test]
    fn a_large_credit_goes_to_the_balance_through_a_one_off_line() {
        let c = Catalogue::builtin();
        let (pro, team) = (c.plan("pro").unwrap(), c.plan("team").unwrap());
        let (start, end) = (at(2026, 1, 1, 0), at(2027, 1, 1, 0));
        let annual = current(pro, Interval::Year, start, end);
        let now = at(2026, 1, 2, 0);
        let done = compute(&annual, &target(team, Interval::Month), Currency::Usd, now).unwrap();
        assert_eq!(done.kind, PlanChangeKind::Upgrade);
        assert!(done.net_micros() < 0);
        let total: i64 = done.lines.iter().map(|l| l.unit_amount_micros).sum();
        assert_eq!(total, 0);
        assert_eq!(done.lines.last().map(|l| l.kind), Some(LineKind::OneOff));
    }

    #[test]
    fn a_trial_changes_without_money_and_nothing_is_left_after_the_end() {
        let c = Catalogue::builtin();
        let (pro, basic) = (c.plan("pro").unwrap(), c.plan("basic").unwrap());
        let (start, end) = (at(2026, 11, 1, 0), at(2026, 11, 15, 0));
        let trial = Current {
            trialing: true,
            ..current(pro, Interval::Month, start, end)
        };
        let down = compute(&trial, &target(basic, Interval::Year), Currency::Usd, start).unwrap();
        assert_eq!(down.effect, Effect::Immediate { reset: None });
        assert!(down.lines.is_empty());
        assert_eq!(down.new_price_micros, 90_000_000);
        // Past the period end (the cycle has not run yet): nothing left to prorate.
        let team = c.plan("team").unwrap();
        let late = current(pro, Interval::Month, start, end);
        let up = compute(
            &late,
            &target(team, Interval::Month),
            Currency::Usd,
            end + SECOND,
        )
        .unwrap();
        assert!(up.lines.is_empty());
        assert_eq!((up.credit_micros, up.charge_micros), (0, 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every immediate change's lines sum to max(net, 0), and no line is zero.
        #[test]
        fn lines_sum_to_the_invoice_total(
            from_month in 0i64..100_000,
            to_month in 0i64..100_000,
            offset in 0i64..(31 * 24 * 3600),
            micros in 0i64..SECOND,
        ) {
            let c = Catalogue::builtin();
            let (mut from, mut to) = (c.plan("pro").unwrap().clone(), c.plan("team").unwrap().clone());
            from.prices = vec![crate::domain::plans::PlanPrice { currency: Currency::Usd, interval: Interval::Month, micros: from_month * 10_000 }];
            to.prices = vec![crate::domain::plans::PlanPrice { currency: Currency::Usd, interval: Interval::Month, micros: to_month * 10_000 }];
            let (start, end) = (at(2026, 1, 31, 0), at(2026, 2, 28, 0));
            let now = start + offset * SECOND + micros;
            let done = compute(&current(&from, Interval::Month, start, end), &target(&to, Interval::Month), Currency::Usd, now).unwrap();
            let total: i64 = done.lines.iter().map(|l| l.unit_amount_micros).sum();
            prop_assert_eq!(total, done.net_micros().max(0));
            prop_assert!(done.lines.iter().all(|l| l.unit_amount_micros != 0 && l.unit_amount_micros % 10_000 == 0));
            prop_assert!(done.credit_micros <= from_month * 10_000);
        }
    }
}
