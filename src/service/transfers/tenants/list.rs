//! ListTenantTransfers: a tenant's transfers, an agency's incoming and outgoing ones, or
//! (operators) all of them; filtered, ordered by create or expire time, keyset-paged.

use sea_orm::{ColumnTrait, Condition, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{filter, paging},
    error::{Result, Violations},
    grpc::Ctx,
    proto,
    service::paging::{finish_keyed, parse_order},
    storage::entities::tenant_transfers as transfers,
};

use super::{
    list_filter::{FILTER_FIELDS, parse_status, status_is, term_condition},
    to_proto,
};

const BAD_TOKEN: &str = "is not a page token issued by this service";

/// The sort key of a list order; both are instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    CreateTime,
    ExpireTime,
}

impl SortKey {
    fn column(self) -> transfers::Column {
        match self {
            SortKey::CreateTime => transfers::Column::CreateTime,
            SortKey::ExpireTime => transfers::Column::ExpireTime,
        }
    }

    fn of(self, row: &transfers::Model) -> i64 {
        match self {
            SortKey::CreateTime => row.create_time,
            SortKey::ExpireTime => row.expire_time,
        }
    }
}

/// Which transfers of organization `org` the direction selects.
fn scope_of(org: Uuid, direction: proto::TenantTransferDirection) -> Condition {
    let incoming = transfers::Column::TargetAgencyId.eq(org);
    let outgoing = Condition::any()
        .add(transfers::Column::TenantOrganizationId.eq(org))
        .add(transfers::Column::SourceAgencyId.eq(org));
    match direction {
        proto::TenantTransferDirection::Incoming => Condition::all().add(incoming),
        proto::TenantTransferDirection::Outgoing => outgoing,
        proto::TenantTransferDirection::Unspecified => outgoing.add(incoming),
    }
}

/// ListTenantTransfers. With a tenant: its transfers; with an agency: those where it is
/// the source or the target (`direction` INCOMING = target, OUTGOING = tenant or
/// source); operators may leave `organization_id` empty for all transfers (then
/// `direction` does not apply). Newest first by default.
pub async fn list(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListTenantTransfersRequest,
) -> Result<proto::ListTenantTransfersResponse> {
    let org = if req.organization_id.is_empty() && caller.is_operator() {
        None
    } else {
        let access = caller
            .authorize(&ctx.store, "organization_id", &req.organization_id)
            .await?;
        Some(access.org().id)
    };
    let now = ctx.store.now();
    let mut v = Violations::new();
    let status = match proto::TenantTransferStatus::try_from(req.status) {
        Ok(proto::TenantTransferStatus::Unspecified) => None,
        Ok(status) => parse_status(status.as_str_name()),
        Err(_) => {
            v.add("status", "is not a tenant transfer status");
            None
        }
    };
    let direction = proto::TenantTransferDirection::try_from(req.direction).unwrap_or_else(|_| {
        v.add("direction", "is not a tenant transfer direction");
        proto::TenantTransferDirection::Unspecified
    });
    if org.is_none() && direction != proto::TenantTransferDirection::Unspecified {
        v.add("direction", "requires organization_id");
    }
    let size = v
        .check("page_size", paging::page_size(req.page_size))
        .unwrap_or(paging::DEFAULT_PAGE_SIZE);
    let terms = v
        .check("filter", filter::parse(&req.filter, FILTER_FIELDS))
        .unwrap_or_default();
    let (key, descending) = parse_order(
        &mut v,
        &req.order_by,
        &[
            ("create_time", SortKey::CreateTime),
            ("expire_time", SortKey::ExpireTime),
        ],
        (SortKey::CreateTime, true),
    );
    let fingerprint = paging::fingerprint(&[
        &org.map(|o| o.to_string()).unwrap_or_default(),
        &req.status.to_string(),
        &req.direction.to_string(),
        &req.filter,
        &req.order_by,
    ]);
    let cursor = v
        .check("page_token", paging::decode(&req.page_token, &fingerprint))
        .flatten();
    let after = cursor.and_then(|c| {
        let position = Uuid::parse_str(&c.id)
            .ok()
            .zip(c.k.and_then(|k| k.parse::<i64>().ok()));
        if position.is_none() {
            v.add("page_token", BAD_TOKEN);
        }
        position
    });
    let mut condition = Condition::all();
    if let Some(org) = org {
        condition = condition.add(scope_of(org, direction));
    }
    if let Some(status) = status {
        condition = condition.add(status_is(status, now));
    }
    for term in &terms {
        if let Some(c) = term_condition(&mut v, term, now) {
            condition = condition.add(c);
        }
    }
    v.finish()?;
    if let Some((last_id, last)) = after {
        let column = key.column();
        let (beyond, beyond_id) = if descending {
            (column.lt(last), transfers::Column::Id.lt(last_id))
        } else {
            (column.gt(last), transfers::Column::Id.gt(last_id))
        };
        condition = condition.add(
            Condition::any()
                .add(beyond)
                .add(Condition::all().add(column.eq(last)).add(beyond_id)),
        );
    }
    let order = if descending { Order::Desc } else { Order::Asc };
    let mut rows = transfers::Entity::find()
        .filter(condition)
        .order_by(key.column(), order.clone())
        .order_by(transfers::Column::Id, order)
        .limit(size + 1)
        .all(ctx.store.db())
        .await?;
    let next_page_token = finish_keyed(&mut rows, size, &fingerprint, |last| {
        (key.of(last).to_string(), last.id)
    });
    Ok(proto::ListTenantTransfersResponse {
        transfers: rows.iter().map(|r| to_proto(r, now)).collect(),
        next_page_token,
    })
}
