//! ListAgreements: filtered by service and status, ordered by acceptance time or
//! service id, keyset-paged.

use sea_orm::{
    ColumnTrait, Condition, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect,
    sea_query::SimpleExpr,
};
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        filter::{self, Op},
        paging,
        subscription::AgreementStatus,
    },
    error::{Result, Violations},
    grpc::Ctx,
    proto,
    service::{filtering::compare, paging::finish_keyed},
    storage::entities::service_agreements as agreements,
};

use super::to_proto;

const FILTER_FIELDS: &[(&str, &[Op])] = &[
    ("service_id", filter::EQUALITY),
    ("status", filter::EQUALITY),
];

/// The sort key of a list order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    AcceptTime,
    ServiceId,
}

/// A position in the list: the last row's sort key value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Position {
    Time(i64),
    Text(String),
}

impl SortKey {
    fn column(self) -> agreements::Column {
        match self {
            SortKey::AcceptTime => agreements::Column::AcceptTime,
            SortKey::ServiceId => agreements::Column::ServiceId,
        }
    }

    fn of(self, row: &agreements::Model) -> String {
        match self {
            SortKey::AcceptTime => row.accept_time.to_string(),
            SortKey::ServiceId => row.service_id.clone(),
        }
    }

    fn parse(self, text: String) -> Option<Position> {
        match self {
            SortKey::AcceptTime => text.parse().ok().map(Position::Time),
            SortKey::ServiceId => Some(Position::Text(text)),
        }
    }

    /// `column OP position`.
    fn compare(self, op: Op, position: &Position) -> SimpleExpr {
        match position {
            Position::Time(t) => compare(self.column(), op, *t),
            Position::Text(s) => compare(self.column(), op, s.as_str()),
        }
    }
}

fn apply_filter(
    v: &mut Violations,
    mut query: sea_orm::Select<agreements::Entity>,
    terms: &[filter::Term],
) -> sea_orm::Select<agreements::Entity> {
    for term in terms {
        let value = term.value.as_str();
        query = if term.field == "service_id" {
            query.filter(compare(agreements::Column::ServiceId, term.op, value))
        } else {
            match value
                .strip_prefix("SERVICE_AGREEMENT_STATUS_")
                .unwrap_or(value)
                .parse::<AgreementStatus>()
            {
                Ok(status) => query.filter(compare(
                    agreements::Column::Status,
                    term.op,
                    status.as_str(),
                )),
                Err(_) => {
                    v.add("filter", "status must be ACTIVE, REVOKED or SUPERSEDED");
                    query
                }
            }
        };
    }
    query
}

/// ListAgreements: the organization's agreements, newest acceptance first by default.
pub async fn list_agreements(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListAgreementsRequest,
) -> Result<proto::ListAgreementsResponse> {
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
            ("accept_time", SortKey::AcceptTime),
            ("service_id", SortKey::ServiceId),
        ],
        (SortKey::AcceptTime, true),
    );
    let fingerprint = paging::fingerprint(&[&org_id.to_string(), &req.filter, &req.order_by]);
    let cursor = v
        .check("page_token", paging::decode(&req.page_token, &fingerprint))
        .flatten();
    let after = cursor.and_then(|c| {
        let position = Uuid::parse_str(&c.id)
            .ok()
            .zip(c.k.and_then(|k| key.parse(k)));
        if position.is_none() {
            v.add("page_token", "is not a page token issued by this service");
        }
        position
    });
    let query = agreements::Entity::find().filter(agreements::Column::OrganizationId.eq(org_id));
    let mut query = apply_filter(&mut v, query, &terms);
    v.finish()?;
    if let Some((last_id, last)) = after {
        let (beyond, beyond_id) = if descending {
            (
                key.compare(Op::Lt, &last),
                agreements::Column::Id.lt(last_id),
            )
        } else {
            (
                key.compare(Op::Gt, &last),
                agreements::Column::Id.gt(last_id),
            )
        };
        query = query.filter(
            Condition::any().add(beyond).add(
                Condition::all()
                    .add(key.compare(Op::Eq, &last))
                    .add(beyond_id),
            ),
        );
    }
    let order = if descending { Order::Desc } else { Order::Asc };
    let mut rows = query
        .order_by(key.column(), order.clone())
        .order_by(agreements::Column::Id, order)
        .limit(size + 1)
        .all(ctx.store.db())
        .await?;
    let next_page_token = finish_keyed(&mut rows, size, &fingerprint, |last| {
        (key.of(last), last.id)
    });
    let catalogue = &ctx.settings.billing.catalogue;
    Ok(proto::ListAgreementsResponse {
        agreements: rows.iter().map(|r| to_proto(r, catalogue)).collect(),
        next_page_token,
    })
}
