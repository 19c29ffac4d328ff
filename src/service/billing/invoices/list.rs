//! ListInvoices: filtered, ordered, keyset-paged.

use std::collections::HashMap;

use chrono::DateTime;
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, ExprTrait, Order, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, Func},
};
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        billing::InvoiceStatus,
        filter::{self, Op},
        ids::{self, IdKind},
        paging,
    },
    error::{Result, Violations},
    grpc::Ctx,
    proto,
    service::{filtering::compare, paging::finish_keyed},
    storage::entities::{invoice_lines, invoices},
};

const FILTER_FIELDS: &[(&str, &[Op])] = &[
    ("status", filter::EQUALITY),
    ("subscription_id", filter::EQUALITY),
    ("issue_time", filter::ORDERED),
    ("period_start", filter::ORDERED),
];

const BAD_TOKEN: &str = "is not a page token issued by this service";

/// The sort key of a list order; every key is an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    CreateTime,
    /// An invoice not issued yet sorts as issued at 0.
    IssueTime,
    Number,
}

impl SortKey {
    fn expr(self) -> Expr {
        match self {
            SortKey::CreateTime => Expr::col(invoices::Column::CreateTime),
            SortKey::IssueTime => Expr::expr(Func::coalesce([
                Expr::col(invoices::Column::IssueTime),
                Expr::val(0_i64),
            ])),
            SortKey::Number => Expr::col(invoices::Column::Seq),
        }
    }

    fn of(self, row: &invoices::Model) -> i64 {
        match self {
            SortKey::CreateTime => row.create_time,
            SortKey::IssueTime => row.issue_time.unwrap_or(0),
            SortKey::Number => row.seq,
        }
    }
}

/// Applies the filter terms to `query`, reporting bad values in `v`.
fn apply_filter(
    v: &mut Violations,
    mut query: sea_orm::Select<invoices::Entity>,
    terms: &[filter::Term],
) -> sea_orm::Select<invoices::Entity> {
    for term in terms {
        let value = term.value.as_str();
        query = match term.field.as_str() {
            "status" => {
                match value
                    .strip_prefix("INVOICE_STATUS_")
                    .unwrap_or(value)
                    .parse::<InvoiceStatus>()
                {
                    Ok(s) => query.filter(compare(invoices::Column::Status, term.op, s.as_str())),
                    Err(_) => {
                        v.add(
                            "filter",
                            "status must be DRAFT, OPEN, PAID, VOID or UNCOLLECTIBLE",
                        );
                        query
                    }
                }
            }
            "subscription_id" => match ids::decode(IdKind::Subscription, value) {
                Ok(id) if term.op == Op::Eq => {
                    query.filter(invoices::Column::SubscriptionId.eq(id))
                }
                // One-off invoices (no subscription) are not that subscription's either.
                Ok(id) => query.filter(
                    Condition::any()
                        .add(invoices::Column::SubscriptionId.ne(id))
                        .add(invoices::Column::SubscriptionId.is_null()),
                ),
                Err(e) => {
                    v.add("filter", format!("subscription_id {e}"));
                    query
                }
            },
            field => {
                let column = if field == "issue_time" {
                    invoices::Column::IssueTime
                } else {
                    invoices::Column::PeriodStart
                };
                match DateTime::parse_from_rfc3339(value) {
                    Ok(at) => query.filter(compare(column, term.op, at.timestamp_micros())),
                    Err(_) => {
                        v.add(
                            "filter",
                            format!("{field} must be an RFC 3339 time like 2026-01-01T00:00:00Z"),
                        );
                        query
                    }
                }
            }
        };
    }
    query
}

/// ListInvoices: the organization's invoices with their lines.
pub async fn list_invoices(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListInvoicesRequest,
) -> Result<proto::ListInvoicesResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org_id = access.org().id;
    let mut v = Violations::new();
    let size = v
        .check("page_size", paging::page_size(req.page_size))
        .unwrap_or(paging::DEFAULT_PAGE_SIZE);
    let terms = v
        .check("filter", filter::parse(&req.filter, FILTER_FIELDS))
        .unwrap_or_default();
    let (key, descending) = crate::service::paging::parse_order(
        &mut v,
        &req.order_by,
        &[
            ("create_time", SortKey::CreateTime),
            ("issue_time", SortKey::IssueTime),
            ("number", SortKey::Number),
        ],
        (SortKey::CreateTime, true),
    );
    let fingerprint = paging::fingerprint(&[&org_id.to_string(), &req.filter, &req.order_by]);
    let cursor = v
        .check("page_token", paging::decode(&req.page_token, &fingerprint))
        .flatten();
    let after = cursor.and_then(|c| {
        let id = Uuid::parse_str(&c.id).ok();
        let k = c.k.and_then(|k| k.parse::<i64>().ok());
        let position = id.zip(k);
        if position.is_none() {
            v.add("page_token", BAD_TOKEN);
        }
        position
    });
    let query = invoices::Entity::find().filter(invoices::Column::OrganizationId.eq(org_id));
    let mut query = apply_filter(&mut v, query, &terms);
    v.finish()?;
    if let Some((last_id, last_key)) = after {
        let (beyond, beyond_id) = if descending {
            (key.expr().lt(last_key), invoices::Column::Id.lt(last_id))
        } else {
            (key.expr().gt(last_key), invoices::Column::Id.gt(last_id))
        };
        query = query.filter(
            Condition::any()
                .add(beyond)
                .add(Condition::all().add(key.expr().eq(last_key)).add(beyond_id)),
        );
    }
    let order = if descending { Order::Desc } else { Order::Asc };
    let mut rows = query
        .order_by(key.expr(), order.clone())
        .order_by(invoices::Column::Id, order)
        .limit(size + 1)
        .all(ctx.store.db())
        .await?;
    let next_page_token = finish_keyed(&mut rows, size, &fingerprint, |last| {
        (key.of(last).to_string(), last.id)
    });
    let mut lines: HashMap<Uuid, Vec<invoice_lines::Model>> = HashMap::new();
    for line in super::lines_of(ctx.store.db(), rows.iter().map(|r| r.id).collect()).await? {
        lines.entry(line.invoice_id).or_default().push(line);
    }
    Ok(proto::ListInvoicesResponse {
        invoices: rows
            .iter()
            .map(|r| super::to_proto(r, lines.get(&r.id).map_or(&[], Vec::as_slice)))
            .collect(),
        next_page_token,
    })
}
