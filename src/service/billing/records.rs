//! Billing records (one per organization, agent and month) and monthly summaries.
//!
//! Records are written by the usage recorder (`usage.rs`); this module only reads them.
//! Sums are computed by the database (`GROUP BY month`), never by loading rows.

use sea_orm::{
    ColumnTrait, Condition, EntityTrait, FromQueryResult, Order, QueryFilter, QueryOrder,
    QuerySelect, Value,
    sea_query::{Alias, Expr, Func, IntoColumnRef},
};
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        billing::Month,
        filter::{self, Op},
        ids::{self, IdKind},
        money::{Currency, Money},
        paging,
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::{filtering::compare, paging::finish_keyed},
    storage::entities::billing_records::{self, Column},
};

/// `CAST(COALESCE(SUM(col), 0) AS BIGINT)`: a sum that is 0 over no rows and decodes as
/// `i64` on every backend (PostgreSQL sums BIGINT into NUMERIC).
pub(super) fn sum_i64(col: impl IntoColumnRef) -> Expr {
    Func::cast_as(
        Func::coalesce([Func::sum(Expr::col(col)).into(), Expr::value(0_i64)]),
        Alias::new("BIGINT"),
    )
    .into()
}

/// `CAST(COUNT(DISTINCT col) AS BIGINT)`.
pub(super) fn count_distinct_i64(col: impl IntoColumnRef) -> Expr {
    Func::cast_as(Func::count_distinct(Expr::col(col)), Alias::new("BIGINT")).into()
}

/// Money in the organization's currency from micro-units, in proto form.
fn money(currency: Currency, micros: i64) -> Option<proto::Money> {
    Some(convert::money(Money::from_micros(currency, micros)))
}

/// A stored record in proto form; margin = revenue − cost.
fn to_proto(row: &billing_records::Model, currency: Currency) -> proto::BillingRecord {
    proto::BillingRecord {
        id: ids::encode(IdKind::BillingRecord, row.id),
        organization_id: ids::encode(IdKind::Organization, row.organization_id),
        agent_id: ids::encode(IdKind::Agent, row.agent_id),
        agent_name: row.agent_name.clone(),
        month: row.month.clone(),
        tokens: row.tokens,
        cost: money(currency, row.cost_micros),
        revenue: money(currency, row.revenue_micros),
        margin: money(currency, row.revenue_micros.saturating_sub(row.cost_micros)),
        custom_rate: row.custom_rate,
        create_time: convert::timestamp(row.create_time),
        update_time: convert::timestamp(row.update_time),
    }
}

/// Parses an optional `YYYY-MM` field.
fn optional_month(v: &mut Violations, field: &str, text: &str) -> Option<Month> {
    if text.is_empty() {
        return None;
    }
    v.check(field, text.parse::<Month>())
}

/// Checks that `from` is not after `to`.
fn check_range(v: &mut Violations, from: Option<Month>, to: Option<Month>) {
    if let (Some(from), Some(to)) = (from, to)
        && from > to
    {
        v.add("from_month", "must not be after to_month");
    }
}

const RECORD_FILTER: &[(&str, &[Op])] =
    &[("month", filter::ORDERED), ("agent_id", filter::EQUALITY)];

/// What ListBillingRecords sorts by (then by id in the same direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    Month,
    AgentId,
    Revenue,
    Cost,
    Tokens,
}

impl SortKey {
    /// Parses `order_by`: a field, optionally followed by `asc` or `desc`. The default
    /// is `month desc` (newest first); an explicit field defaults to ascending.
    fn parse(text: &str) -> Option<(SortKey, bool)> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (field, descending) = match words.as_slice() {
            [] => return Some((SortKey::Month, true)),
            [field] => (*field, false),
            [field, dir] if dir.eq_ignore_ascii_case("asc") => (*field, false),
            [field, dir] if dir.eq_ignore_ascii_case("desc") => (*field, true),
            _ => return None,
        };
        let key = match field {
            "month" => SortKey::Month,
            "agent_id" => SortKey::AgentId,
            "revenue" => SortKey::Revenue,
            "cost" => SortKey::Cost,
            "tokens" => SortKey::Tokens,
            _ => return None,
        };
        Some((key, descending))
    }

    fn column(self) -> Column {
        match self {
            SortKey::Month => Column::Month,
            SortKey::AgentId => Column::AgentId,
            SortKey::Revenue => Column::RevenueMicros,
            SortKey::Cost => Column::CostMicros,
            SortKey::Tokens => Column::Tokens,
        }
    }

    /// The row's sort key in page-token form.
    fn key_of(self, row: &billing_records::Model) -> String {
        match self {
            SortKey::Month => row.month.clone(),
            SortKey::AgentId => row.agent_id.to_string(),
            SortKey::Revenue => row.revenue_micros.to_string(),
            SortKey::Cost => row.cost_micros.to_string(),
            SortKey::Tokens => row.tokens.to_string(),
        }
    }

    /// A page-token key back as a database value.
    fn value_of(self, key: &str) -> Option<Value> {
        match self {
            SortKey::Month => key.parse::<Month>().ok().map(|m| m.to_string().into()),
            SortKey::AgentId => Uuid::parse_str(key).ok().map(Into::into),
            SortKey::Revenue | SortKey::Cost | SortKey::Tokens => {
                key.parse::<i64>().ok().map(Into::into)
            }
        }
    }
}

fn bad_token() -> Error {
    Error::invalid("page_token", "is not a page token issued by this service")
}

/// ListBillingRecords: the organization's records, `month desc` by default, filtered by
/// the typed fields (`from_month`, `to_month`, `agent_id`) and `filter` (`month` with
/// `=`, `>=`, `<`; `agent_id =`), all combined with AND. Records of agents that have
/// since left the organization stay listed: they were billed to it.
pub async fn list_records(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListBillingRecordsRequest,
) -> Result<proto::ListBillingRecordsResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org = access.org();
    let currency = convert::org_currency(org);
    let mut v = Violations::new();
    let size = v.check("page_size", paging::page_size(req.page_size));
    let from = optional_month(&mut v, "from_month", &req.from_month);
    let to = optional_month(&mut v, "to_month", &req.to_month);
    check_range(&mut v, from, to);
    let agent = if req.agent_id.is_empty() {
        None
    } else {
        v.check("agent_id", ids::decode(IdKind::Agent, &req.agent_id))
    };
    let terms = v
        .check("filter", filter::parse(&req.filter, RECORD_FILTER))
        .unwrap_or_default();
    let order = SortKey::parse(&req.order_by);
    if order.is_none() {
        v.add(
            "order_by",
            "must be one of month, agent_id, revenue, cost, tokens, optionally followed by `asc` or `desc`",
        );
    }
    let (key, descending) = order.unwrap_or((SortKey::Month, true));
    let org_key = org.id.to_string();
    let fingerprint = paging::fingerprint(&[
        &org_key,
        "billing_records",
        &req.from_month,
        &req.to_month,
        &req.agent_id,
        &req.filter,
        &req.order_by,
    ]);
    let cursor = v
        .check("page_token", paging::decode(&req.page_token, &fingerprint))
        .flatten();

    let mut query = billing_records::Entity::find().filter(Column::OrganizationId.eq(org.id));
    if let Some(from) = from {
        query = query.filter(Column::Month.gte(from.to_string()));
    }
    if let Some(to) = to {
        query = query.filter(Column::Month.lte(to.to_string()));
    }
    if let Some(agent) = agent {
        query = query.filter(Column::AgentId.eq(agent));
    }
    for term in &terms {
        query = match term.field.as_str() {
            "month" => match term.value.parse::<Month>() {
                Ok(m) => {
                    let m = m.to_string();
                    query.filter(compare(Column::Month, term.op, m))
                }
                Err(e) => {
                    v.add("filter", format!("month {e}"));
                    query
                }
            },
            _ => match ids::decode(IdKind::Agent, &term.value) {
                Ok(a) => query.filter(compare(Column::AgentId, term.op, a)),
                Err(e) => {
                    v.add("filter", format!("agent_id {e}"));
                    query
                }
            },
        };
    }
    v.finish()?;
    let size = size.unwrap_or(paging::DEFAULT_PAGE_SIZE);

    let column = key.column();
    if let Some(cursor) = &cursor {
        let last_id = Uuid::parse_str(&cursor.id).map_err(|_| bad_token())?;
        let last_key = cursor
            .k
            .as_deref()
            .and_then(|k| key.value_of(k))
            .ok_or_else(bad_token)?;
        let (after_key, after_id) = if descending {
            (column.lt(last_key.clone()), Column::Id.lt(last_id))
        } else {
            (column.gt(last_key.clone()), Column::Id.gt(last_id))
        };
        query = query.filter(
            Condition::any()
                .add(after_key)
                .add(Condition::all().add(column.eq(last_key)).add(after_id)),
        );
    }
    let direction = if descending { Order::Desc } else { Order::Asc };
    let mut rows = query
        .order_by(column, direction.clone())
        .order_by(Column::Id, direction)
        .limit(size + 1)
        .all(ctx.store.db())
        .await?;
    let next_page_token = finish_keyed(&mut rows, size, &fingerprint, |last| {
        (key.key_of(last), last.id)
    });
    Ok(proto::ListBillingRecordsResponse {
        billing_records: rows.iter().map(|r| to_proto(r, currency)).collect(),
        next_page_token,
    })
}

#[derive(Debug, FromQueryResult)]
struct MonthTotals {
    month: String,
    revenue: i64,
    cost: i64,
    tokens: i64,
    agents: i64,
}

fn summary_of(
    month: String,
    revenue: i64,
    cost: i64,
    tokens: i64,
    agents: i64,
    currency: Currency,
) -> proto::MonthlyBillingSummary {
    proto::MonthlyBillingSummary {
        month,
        revenue: money(currency, revenue),
        cost: money(currency, cost),
        margin: money(currency, revenue.saturating_sub(cost)),
        tokens,
        agents_billed: i32::try_from(agents).unwrap_or(i32::MAX),
    }
}

/// GetBillingSummary: per-month sums over `from_month..=to_month` (default: the 12 months
/// ending with the current one), newest first; only months with records appear. The
/// total's `agents_billed` counts distinct agents over the whole range (an agent billed
/// in three months is one agent), like Stripe's "unique customers" rather than a sum.
pub async fn summary(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetBillingSummaryRequest,
) -> Result<proto::GetBillingSummaryResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org = access.org();
    let currency = convert::org_currency(org);
    let mut v = Violations::new();
    let from = optional_month(&mut v, "from_month", &req.from_month);
    let to = optional_month(&mut v, "to_month", &req.to_month);
    check_range(&mut v, from, to);
    v.finish()?;
    let to = to.unwrap_or_else(|| Month::of(ctx.store.now()));
    let from = from.unwrap_or_else(|| to.minus(11));

    let in_range = || {
        billing_records::Entity::find()
            .select_only()
            .filter(Column::OrganizationId.eq(org.id))
            .filter(Column::Month.gte(from.to_string()))
            .filter(Column::Month.lte(to.to_string()))
    };
    let months = in_range()
        .column(Column::Month)
        .expr_as(sum_i64(Column::RevenueMicros), "revenue")
        .expr_as(sum_i64(Column::CostMicros), "cost")
        .expr_as(sum_i64(Column::Tokens), "tokens")
        .expr_as(count_distinct_i64(Column::AgentId), "agents")
        .group_by(Column::Month)
        .order_by(Column::Month, Order::Desc)
        .into_model::<MonthTotals>()
        .all(ctx.store.db())
        .await?;
    let agents_in_range: Option<i64> = in_range()
        .expr_as(count_distinct_i64(Column::AgentId), "agents")
        .into_tuple()
        .one(ctx.store.db())
        .await?;

    let (mut revenue, mut cost, mut tokens) = (0_i64, 0_i64, 0_i64);
    for m in &months {
        revenue = revenue.saturating_add(m.revenue);
        cost = cost.saturating_add(m.cost);
        tokens = tokens.saturating_add(m.tokens);
    }
    let total = summary_of(
        String::new(),
        revenue,
        cost,
        tokens,
        agents_in_range.unwrap_or(0),
        currency,
    );
    Ok(proto::GetBillingSummaryResponse {
        months: months
            .into_iter()
            .map(|m| summary_of(m.month, m.revenue, m.cost, m.tokens, m.agents, currency))
            .collect(),
        total: Some(total),
        currency: currency.code().to_owned(),
    })
}
