//! GetTenantAnalytics and GetAgencyAnalytics: SQL aggregates over usage events and
//! billing records.
//!
//! Every number is a `GROUP BY` / `SUM` computed by the database over the
//! `(organization_id, occurred_at)` index; no event row is loaded. A date range is
//! `from_date..=to_date` in UTC days, at most 366 days long.

use std::collections::{BTreeMap, HashMap};

use chrono::{Days, NaiveDate};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter,
    QuerySelect, QueryTrait,
};
use uuid::Uuid;

use super::records::{count_distinct_i64, sum_i64};
use crate::{
    auth::Caller,
    domain::{
        billing::{Metric, Month, date_start, parse_date},
        clock::{Micros, from_micros},
        ids::{self, IdKind},
        money::{Currency, Money},
        org::{OrgKind, OrgStatus},
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::agent_count,
    storage::entities::{agent_assignments, billing_records, organizations, usage_events},
};

/// The longest range, in days after `from_date`.
const MAX_RANGE_DAYS: i64 = 366;
/// Top tenants returned per ranking when `top_limit` is 0.
const DEFAULT_TOP: usize = 5;
/// Most top tenants returned per ranking (larger requests are clamped).
const MAX_TOP: usize = 50;

/// A validated date range.
struct Range {
    from: NaiveDate,
    to: NaiveDate,
    /// First instant included.
    start: Micros,
    /// First instant after the range.
    end: Micros,
}

impl Range {
    /// Parses `from_date` and `to_date` into `v`.
    fn parse(v: &mut Violations, from: &str, to: &str) -> Option<Range> {
        let from = v.check("from_date", parse_date(from));
        let to = v.check("to_date", parse_date(to));
        let (from, to) = (from?, to?);
        if from > to {
            v.add("to_date", "must not be before from_date");
            return None;
        }
        if (to - from).num_days() > MAX_RANGE_DAYS {
            v.add(
                "to_date",
                format!("must be at most {MAX_RANGE_DAYS} days after from_date"),
            );
            return None;
        }
        let end = to.checked_add_days(Days::new(1)).map(date_start);
        let Some(end) = end else {
            v.add("to_date", "is out of range");
            return None;
        };
        Some(Range {
            from,
            to,
            start: date_start(from),
            end,
        })
    }

    fn text(date: NaiveDate) -> String {
        date.format("%Y-%m-%d").to_string()
    }

    /// Billing months overlapping the range, as stored `YYYY-MM` bounds (inclusive).
    fn months(&self) -> (String, String) {
        (
            Month::of(self.start).to_string(),
            Month::of(self.end - 1).to_string(),
        )
    }
}

/// Sums of one metric.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    quantity: i64,
    cost: i64,
}

/// Usage of one organization in a range, per metric.
#[derive(Debug, Default, Clone)]
struct Usage(HashMap<String, Sums>);

impl Usage {
    fn add(&mut self, metric: String, quantity: i64, cost: i64) {
        let sums = self.0.entry(metric).or_default();
        sums.quantity = sums.quantity.saturating_add(quantity);
        sums.cost = sums.cost.saturating_add(cost);
    }

    fn of(&self, metric: Metric) -> i64 {
        self.0.get(metric.as_str()).map_or(0, |s| s.quantity)
    }

    fn cost(&self) -> i64 {
        self.0.values().fold(0, |acc, s| acc.saturating_add(s.cost))
    }
}

#[derive(Debug, FromQueryResult)]
struct OrgMetricRow {
    organization_id: Uuid,
    metric: String,
    quantity: i64,
    cost: i64,
}

/// Per-organization, per-metric sums of the events of `orgs` (a condition on
/// `usage_events.organization_id`) in the range.
async fn usage_by_org<C: ConnectionTrait>(
    db: &C,
    orgs: Condition,
    range: &Range,
) -> Result<HashMap<Uuid, Usage>> {
    use usage_events::Column as U;
    let rows = usage_events::Entity::find()
        .select_only()
        .column(U::OrganizationId)
        .column(U::Metric)
        .expr_as(sum_i64(U::Quantity), "quantity")
        .expr_as(sum_i64(U::CostMicros), "cost")
        .filter(orgs)
        .filter(U::OccurredAt.gte(range.start))
        .filter(U::OccurredAt.lt(range.end))
        .group_by(U::OrganizationId)
        .group_by(U::Metric)
        .into_model::<OrgMetricRow>()
        .all(db)
        .await?;
    let mut usage: HashMap<Uuid, Usage> = HashMap::new();
    for row in rows {
        usage
            .entry(row.organization_id)
            .or_default()
            .add(row.metric, row.quantity, row.cost);
    }
    Ok(usage)
}

fn money(currency: Currency, micros: i64) -> proto::Money {
    convert::money(Money::from_micros(currency, micros))
}

/// Agents assigned to `org` at the end of the range: the current assignment when the
/// range reaches today, otherwise the assignment history at the range's last instant.
async fn agents_at_end<C: ConnectionTrait>(
    db: &C,
    org_id: Uuid,
    range: &Range,
    now: Micros,
) -> Result<i64> {
    if range.to >= from_micros(now).date_naive() {
        return Ok(i64::try_from(agent_count(db, org_id).await?).unwrap_or(i64::MAX));
    }
    use agent_assignments::Column as A;
    let count: Option<i64> = agent_assignments::Entity::find()
        .select_only()
        .expr_as(count_distinct_i64(A::AgentId), "agents")
        .filter(A::OrganizationId.eq(org_id))
        .filter(A::AssignTime.lt(range.end))
        .filter(
            Condition::any()
                .add(A::UnassignTime.is_null())
                .add(A::UnassignTime.gte(range.end)),
        )
        .into_tuple()
        .one(db)
        .await?;
    Ok(count.unwrap_or(0))
}

/// GetTenantAnalytics: usage sums, cost, agents at the end of the range, agents with
/// usage in the range and conversations per channel of one organization.
pub async fn tenant(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetTenantAnalyticsRequest,
) -> Result<proto::GetTenantAnalyticsResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org = access.org();
    let mut v = Violations::new();
    let range = Range::parse(&mut v, &req.from_date, &req.to_date);
    v.finish()?;
    let Some(range) = range else {
        return Err(Error::invalid("from_date", "is required"));
    };
    let db = ctx.store.db();
    let currency = convert::org_currency(org);

    let usage = usage_by_org(
        db,
        Condition::all().add(usage_events::Column::OrganizationId.eq(org.id)),
        &range,
    )
    .await?
    .remove(&org.id)
    .unwrap_or_default();

    use usage_events::Column as U;
    let in_range = || {
        usage_events::Entity::find()
            .select_only()
            .filter(U::OrganizationId.eq(org.id))
            .filter(U::OccurredAt.gte(range.start))
            .filter(U::OccurredAt.lt(range.end))
    };
    let active: Option<i64> = in_range()
        .expr_as(count_distinct_i64(U::AgentId), "agents")
        .into_tuple()
        .one(db)
        .await?;
    let channels: Vec<(String, i64)> = in_range()
        .column(U::Channel)
        .expr_as(sum_i64(U::Quantity), "conversations")
        .filter(U::Metric.eq(Metric::Conversations.as_str()))
        .group_by(U::Channel)
        .into_tuple()
        .all(db)
        .await?;
    let mut channel_breakdown: BTreeMap<String, i64> = BTreeMap::new();
    for (channel, conversations) in channels {
        let channel = if channel.is_empty() {
            "unknown".to_owned()
        } else {
            channel
        };
        *channel_breakdown.entry(channel).or_default() += conversations;
    }
    let agent_count = agents_at_end(db, org.id, &range, ctx.store.now()).await?;

    Ok(proto::GetTenantAnalyticsResponse {
        organization_id: ids::encode(IdKind::Organization, org.id),
        from_date: Range::text(range.from),
        to_date: Range::text(range.to),
        conversations: usage.of(Metric::Conversations),
        total_minutes: usage.of(Metric::Minutes),
        messages: usage.of(Metric::Messages),
        tokens: usage.of(Metric::Tokens),
        total_cost: Some(money(currency, usage.cost())),
        agent_count: i32::try_from(agent_count).unwrap_or(i32::MAX),
        active_agents: i32::try_from(active.unwrap_or(0)).unwrap_or(i32::MAX),
        channel_breakdown,
    })
}

/// One tenant's numbers, before ranking.
struct TenantStats {
    org: organizations::Model,
    currency: Currency,
    conversations: i64,
    minutes: i64,
    cost: i64,
    revenue: i64,
}

impl TenantStats {
    fn to_proto(&self) -> proto::AgencyTenantStats {
        proto::AgencyTenantStats {
            organization_id: ids::encode(IdKind::Organization, self.org.id),
            name: self.org.name.clone(),
            conversations: self.conversations,
            revenue: Some(money(self.currency, self.revenue)),
            cost: Some(money(self.currency, self.cost)),
        }
    }
}

/// The first `limit` tenants with a positive `key`, by `key` descending, then by name
/// and id so that ties rank the same way every time.
fn top(
    stats: &[TenantStats],
    key: fn(&TenantStats) -> i64,
    limit: usize,
) -> Vec<proto::AgencyTenantStats> {
    let mut ranked: Vec<&TenantStats> = stats.iter().filter(|s| key(s) > 0).collect();
    ranked.sort_by(|a, b| {
        key(b)
            .cmp(&key(a))
            .then_with(|| a.org.name.cmp(&b.org.name))
            .then_with(|| a.org.id.cmp(&b.org.id))
    });
    ranked
        .into_iter()
        .take(limit)
        .map(TenantStats::to_proto)
        .collect()
}

/// Sums per currency, ordered by currency code; every tenant currency appears.
fn per_currency(stats: &[TenantStats], key: fn(&TenantStats) -> i64) -> Vec<proto::Money> {
    let mut sums: BTreeMap<&'static str, (Currency, i64)> = BTreeMap::new();
    for s in stats {
        let entry = sums.entry(s.currency.code()).or_insert((s.currency, 0));
        entry.1 = entry.1.saturating_add(key(s));
    }
    sums.into_values().map(|(c, m)| money(c, m)).collect()
}

/// GetAgencyAnalytics: totals over the agency's live (not deleted) tenants, with the
/// top tenants by conversations and by revenue.
///
/// Decisions where the contract is silent:
/// - Revenue is the billing-record revenue of the months overlapping the range (a
///   record is a whole month's fee).
/// - Amounts are never converted: totals are per currency, and the revenue ranking
///   compares amounts at face value across currencies.
/// - Rankings list only tenants with a positive value: an idle tenant is not "top".
/// - Called on an organization that is not an agency: FAILED_PRECONDITION
///   `NOT_AN_AGENCY` (after input validation).
pub async fn agency(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetAgencyAnalyticsRequest,
) -> Result<proto::GetAgencyAnalyticsResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let agency = access.org();
    let mut v = Violations::new();
    let range = Range::parse(&mut v, &req.from_date, &req.to_date);
    let limit = match usize::try_from(req.top_limit) {
        Ok(0) => DEFAULT_TOP,
        Ok(n) => n.min(MAX_TOP),
        Err(_) => {
            v.add("top_limit", "must not be negative");
            DEFAULT_TOP
        }
    };
    v.finish()?;
    let Some(range) = range else {
        return Err(Error::invalid("from_date", "is required"));
    };
    if agency.kind != OrgKind::Agency.as_str() {
        return Err(Error::precondition(
            "NOT_AN_AGENCY",
            "agency analytics are only available for agency organizations",
        )
        .with("kind", &agency.kind));
    }
    let db = ctx.store.db();

    let tenants = organizations::Entity::find()
        .filter(organizations::Column::ParentId.eq(agency.id))
        .filter(organizations::Column::DeleteTime.is_null())
        .all(db)
        .await?;
    let tenant_ids = || {
        organizations::Entity::find()
            .select_only()
            .column(organizations::Column::Id)
            .filter(organizations::Column::ParentId.eq(agency.id))
            .filter(organizations::Column::DeleteTime.is_null())
            .into_query()
    };
    let mut usage = usage_by_org(
        db,
        Condition::all().add(usage_events::Column::OrganizationId.in_subquery(tenant_ids())),
        &range,
    )
    .await?;
    let (first_month, last_month) = range.months();
    use billing_records::Column as R;
    let revenues: HashMap<Uuid, i64> = billing_records::Entity::find()
        .select_only()
        .column(R::OrganizationId)
        .expr_as(sum_i64(R::RevenueMicros), "revenue")
        .filter(R::OrganizationId.in_subquery(tenant_ids()))
        .filter(R::Month.gte(first_month))
        .filter(R::Month.lte(last_month))
        .group_by(R::OrganizationId)
        .into_tuple::<(Uuid, i64)>()
        .all(db)
        .await?
        .into_iter()
        .collect();

    let active_tenants = tenants
        .iter()
        .filter(|t| t.status == OrgStatus::Active.as_str())
        .count();
    let stats: Vec<TenantStats> = tenants
        .into_iter()
        .map(|org| {
            let used = usage.remove(&org.id).unwrap_or_default();
            TenantStats {
                currency: convert::org_currency(&org),
                conversations: used.of(Metric::Conversations),
                minutes: used.of(Metric::Minutes),
                cost: used.cost(),
                revenue: revenues.get(&org.id).copied().unwrap_or(0),
                org,
            }
        })
        .collect();
    let total = |key: fn(&TenantStats) -> i64| {
        stats
            .iter()
            .fold(0_i64, |acc, s| acc.saturating_add(key(s)))
    };

    Ok(proto::GetAgencyAnalyticsResponse {
        from_date: Range::text(range.from),
        to_date: Range::text(range.to),
        total_tenants: i32::try_from(stats.len()).unwrap_or(i32::MAX),
        active_tenants: i32::try_from(active_tenants).unwrap_or(i32::MAX),
        total_conversations: total(|s| s.conversations),
        total_minutes: total(|s| s.minutes),
        total_costs: per_currency(&stats, |s| s.cost),
        total_revenues: per_currency(&stats, |s| s.revenue),
        top_tenants_by_conversations: top(&stats, |s| s.conversations, limit),
        top_tenants_by_revenue: top(&stats, |s| s.revenue, limit),
    })
}
