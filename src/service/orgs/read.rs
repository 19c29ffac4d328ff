//! GetOrganization and ListOrganizations: reads with agent counts, filtering,
//! ordering and keyset pagination over the organizations the caller may see.

use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, Condition, EntityTrait, ExprTrait, FromQueryResult, Order, QueryFilter,
    QueryOrder, QuerySelect,
    sea_query::{Expr, Func, LikeExpr},
};
use uuid::Uuid;

use crate::{
    auth::{Caller, policy::CallerRole},
    domain::{
        filter::{self, Op},
        ids::{self, IdKind},
        org::{OrgKind, OrgStatus},
        paging,
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::agent_count,
    storage::entities::{agents, organizations},
};

/// GetOrganization.
pub async fn get(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetOrganizationRequest,
) -> Result<proto::GetOrganizationResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let count = agent_count(ctx.store.db(), access.org().id).await?;
    Ok(proto::GetOrganizationResponse {
        organization: Some(convert::organization(
            &ctx.settings.billing.catalogue,
            access.org(),
            count,
        )),
    })
}

const LIST_FIELDS: &[(&str, &[Op])] = &[
    ("status", &[Op::Eq]),
    ("kind", &[Op::Eq]),
    ("parent_id", &[Op::Eq]),
    ("prefix", &[Op::Eq]),
];

#[derive(Debug, FromQueryResult)]
struct AgentCount {
    organization_id: Uuid,
    count: i64,
}

/// ListOrganizations: the organizations the caller may see, filtered and ordered.
pub async fn list(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListOrganizationsRequest,
) -> Result<proto::ListOrganizationsResponse> {
    let principal = caller.principal()?.clone();
    let mut v = Violations::new();
    let size = v.check("page_size", paging::page_size(req.page_size));
    let terms = v
        .check("filter", filter::parse(&req.filter, LIST_FIELDS))
        .unwrap_or_default();
    let (by_time, descending) = match req.order_by.trim() {
        "" | "name" | "name asc" => (false, false),
        "name desc" => (false, true),
        "create_time" | "create_time asc" => (true, false),
        "create_time desc" => (true, true),
        _ => {
            v.add(
                "order_by",
                "must be `name` or `create_time`, optionally followed by `desc`",
            );
            (false, false)
        }
    };
    let fingerprint = paging::fingerprint(&[&req.filter, &req.order_by]);
    let cursor = v
        .check("page_token", paging::decode(&req.page_token, &fingerprint))
        .flatten();
    let mut query =
        organizations::Entity::find().filter(organizations::Column::DeleteTime.is_null());
    for term in &terms {
        query = match term.field.as_str() {
            "status" => match term.value.parse::<OrgStatus>() {
                Ok(s) => query.filter(organizations::Column::Status.eq(s.as_str())),
                Err(_) => {
                    v.add("filter", "status must be ACTIVE, INACTIVE or CANCELLED");
                    query
                }
            },
            "kind" => match term.value.parse::<OrgKind>() {
                Ok(k) => query.filter(organizations::Column::Kind.eq(k.as_str())),
                Err(_) => {
                    v.add("filter", "kind must be ROOT, AGENCY or TENANT");
                    query
                }
            },
            "parent_id" => match ids::decode(IdKind::Organization, &term.value) {
                Ok(p) => query.filter(organizations::Column::ParentId.eq(p)),
                Err(e) => {
                    v.add("filter", format!("parent_id {e}"));
                    query
                }
            },
            _ => {
                let pattern = format!("{}%", escape_like(&term.value.to_lowercase()));
                query.filter(
                    Condition::any()
                        .add(
                            Expr::expr(Func::lower(Expr::col(organizations::Column::Name)))
                                .like(LikeExpr::new(pattern.clone()).escape('\\')),
                        )
                        .add(
                            Expr::col(organizations::Column::Slug)
                                .like(LikeExpr::new(pattern).escape('\\')),
                        ),
                )
            }
        };
    }
    v.finish()?;
    let size = size.unwrap_or(paging::DEFAULT_PAGE_SIZE);
    // Visibility: operators see everything; an agency admin its agency and tenants;
    // everyone else their own organization.
    if !principal.role.is_operator() {
        let Some(home) = principal.org_id() else {
            return Ok(proto::ListOrganizationsResponse::default());
        };
        query = if principal.role == CallerRole::AgencyAdmin {
            query.filter(
                Condition::any()
                    .add(organizations::Column::Id.eq(home))
                    .add(organizations::Column::ParentId.eq(home)),
            )
        } else {
            query.filter(organizations::Column::Id.eq(home))
        };
    }
    let order = if descending { Order::Desc } else { Order::Asc };
    if let Some(cursor) = &cursor {
        let last_id = Uuid::parse_str(&cursor.id).map_err(|_| {
            Error::invalid("page_token", "is not a page token issued by this service")
        })?;
        let key = cursor.k.clone().unwrap_or_default();
        let (after_key, same_key) = if by_time {
            let t: i64 = key.parse().map_err(|_| {
                Error::invalid("page_token", "is not a page token issued by this service")
            })?;
            if descending {
                (
                    organizations::Column::CreateTime.lt(t),
                    organizations::Column::CreateTime.eq(t),
                )
            } else {
                (
                    organizations::Column::CreateTime.gt(t),
                    organizations::Column::CreateTime.eq(t),
                )
            }
        } else {
            // Names sort case-insensitively, as the database lowercases them, so the
            // key is lowercased by the database too.
            let last_key = || Func::lower(Expr::val(key.clone()));
            let same = folded_name().eq(last_key());
            if descending {
                (folded_name().lt(last_key()), same)
            } else {
                (folded_name().gt(last_key()), same)
            }
        };
        let after_id = if descending {
            organizations::Column::Id.lt(last_id)
        } else {
            organizations::Column::Id.gt(last_id)
        };
        query = query.filter(
            Condition::any()
                .add(after_key)
                .add(Condition::all().add(same_key).add(after_id)),
        );
    }
    query = if by_time {
        query.order_by(organizations::Column::CreateTime, order.clone())
    } else {
        query.order_by(folded_name(), order.clone())
    };
    let mut rows = query
        .order_by(organizations::Column::Id, order)
        .limit(size + 1)
        .all(ctx.store.db())
        .await?;
    let more = rows.len() as u64 > size;
    rows.truncate(size as usize);
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let counts: HashMap<Uuid, i64> = agents::Entity::find()
        .select_only()
        .column(agents::Column::OrganizationId)
        .column_as(agents::Column::Id.count(), "count")
        .filter(agents::Column::OrganizationId.is_in(ids))
        .group_by(agents::Column::OrganizationId)
        .into_model::<AgentCount>()
        .all(ctx.store.db())
        .await?
        .into_iter()
        .map(|c| (c.organization_id, c.count))
        .collect();
    let next_page_token = match rows.last() {
        Some(last) if more => paging::encode(&paging::Cursor {
            q: fingerprint,
            k: Some(if by_time {
                last.create_time.to_string()
            } else {
                last.name.clone()
            }),
            id: last.id.to_string(),
        }),
        _ => String::new(),
    };
    Ok(proto::ListOrganizationsResponse {
        organizations: rows
            .iter()
            .map(|r| {
                convert::organization(
                    &ctx.settings.billing.catalogue,
                    r,
                    u64::try_from(counts.get(&r.id).copied().unwrap_or(0)).unwrap_or(0),
                )
            })
            .collect(),
        next_page_token,
    })
}

/// The sort key of names: lowercased, so "acme" and "Zeta" sort alphabetically on
/// every backend.
fn folded_name() -> Expr {
    Expr::expr(Func::lower(Expr::col(organizations::Column::Name)))
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `\` as the escape character.
pub fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
