//! ListTransactions and GetTransaction: reads of the ledger, newest first by default,
//! with keyset pagination on `(create_time, id)`.

use chrono::DateTime;
use sea_orm::{ColumnTrait, Condition, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        billing::{TxnKind, TxnStatus},
        filter::{self, Op},
        ids::{self, IdKind},
        paging,
    },
    error::{Error, Result, Violations},
    grpc::Ctx,
    proto,
    service::{filtering::compare, paging::finish_keyed},
    storage::entities::credit_transactions as txns,
};

use super::super::ledger;

const FILTER_FIELDS: &[(&str, &[Op])] = &[
    ("type", filter::EQUALITY),
    ("status", filter::EQUALITY),
    ("create_time", filter::ORDERED),
    ("request_id", filter::EQUALITY),
];

/// Parses `PURCHASE` or `CREDIT_TRANSACTION_TYPE_PURCHASE`.
fn parse_kind(value: &str) -> Option<TxnKind> {
    value
        .strip_prefix("CREDIT_TRANSACTION_TYPE_")
        .unwrap_or(value)
        .parse()
        .ok()
}

/// Parses `PENDING` or `CREDIT_TRANSACTION_STATUS_PENDING`.
fn parse_status(value: &str) -> Option<TxnStatus> {
    value
        .strip_prefix("CREDIT_TRANSACTION_STATUS_")
        .unwrap_or(value)
        .parse()
        .ok()
}

/// ListTransactions: filter over type, status, create_time and request_id; order by
/// `create_time` (default `create_time desc`).
pub async fn list_transactions(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListTransactionsRequest,
) -> Result<proto::ListTransactionsResponse> {
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
    let descending = match req.order_by.trim() {
        "" | "create_time desc" => true,
        "create_time" | "create_time asc" => false,
        _ => {
            v.add(
                "order_by",
                "must be `create_time`, optionally followed by `desc` or `asc`",
            );
            true
        }
    };
    let fingerprint = paging::fingerprint(&[&org_id.to_string(), &req.filter, &req.order_by]);
    let cursor = v
        .check("page_token", paging::decode(&req.page_token, &fingerprint))
        .flatten();
    let after = cursor.and_then(|c| {
        let id = Uuid::parse_str(&c.id).ok();
        let time = c.k.as_deref().and_then(|k| k.parse::<i64>().ok());
        let pair = id.zip(time);
        if pair.is_none() {
            v.add("page_token", "is not a page token issued by this service");
        }
        pair
    });
    let mut query = txns::Entity::find().filter(txns::Column::OrganizationId.eq(org_id));
    for term in &terms {
        let value = term.value.as_str();
        query = match (term.field.as_str(), term.op) {
            ("type", op) => match parse_kind(value) {
                Some(kind) => query.filter(compare(txns::Column::Kind, op, kind.as_str())),
                None => {
                    v.add(
                        "filter",
                        format!("type {value:?} is not a transaction type"),
                    );
                    query
                }
            },
            ("status", op) => match parse_status(value) {
                Some(status) => query.filter(compare(txns::Column::Status, op, status.as_str())),
                None => {
                    v.add("filter", "status must be PENDING, SUCCEEDED or FAILED");
                    query
                }
            },
            ("request_id", op) => query.filter(compare(txns::Column::RequestId, op, value)),
            (_, op) => match DateTime::parse_from_rfc3339(value) {
                Ok(at) => {
                    query.filter(compare(txns::Column::CreateTime, op, at.timestamp_micros()))
                }
                Err(_) => {
                    v.add(
                        "filter",
                        "create_time must be an RFC 3339 time like 2026-01-01T00:00:00Z",
                    );
                    query
                }
            },
        };
    }
    v.finish()?;
    if let Some((last_id, last_time)) = after {
        let (later, same_later) = if descending {
            (
                txns::Column::CreateTime.lt(last_time),
                txns::Column::Id.lt(last_id),
            )
        } else {
            (
                txns::Column::CreateTime.gt(last_time),
                txns::Column::Id.gt(last_id),
            )
        };
        query = query.filter(
            Condition::any().add(later).add(
                Condition::all()
                    .add(txns::Column::CreateTime.eq(last_time))
                    .add(same_later),
            ),
        );
    }
    let order = if descending { Order::Desc } else { Order::Asc };
    let mut rows = query
        .order_by(txns::Column::CreateTime, order.clone())
        .order_by(txns::Column::Id, order)
        .limit(size + 1)
        .all(ctx.store.db())
        .await?;
    let next_page_token = finish_keyed(&mut rows, size, &fingerprint, |last| {
        (last.create_time.to_string(), last.id)
    });
    Ok(proto::ListTransactionsResponse {
        transactions: rows.iter().map(ledger::to_proto).collect(),
        next_page_token,
    })
}

/// Loads an entry of the organization `org_id`; NOT_FOUND when it belongs elsewhere.
pub async fn find(ctx: &Ctx, org_id: Uuid, id: Uuid) -> Result<txns::Model> {
    txns::Entity::find_by_id(id)
        .filter(txns::Column::OrganizationId.eq(org_id))
        .one(ctx.store.db())
        .await?
        .ok_or_else(|| Error::not_found("transaction", &ids::encode(IdKind::Transaction, id)))
}

/// GetTransaction: one entry of the organization's ledger.
pub async fn get_transaction(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetTransactionRequest,
) -> Result<proto::GetTransactionResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let id = ids::decode(IdKind::Transaction, &req.transaction_id)
        .map_err(|e| Error::invalid("transaction_id", e.to_string()))?;
    let row = find(&ctx, access.org().id, id).await?;
    Ok(proto::GetTransactionResponse {
        transaction: Some(ledger::to_proto(&row)),
    })
}
