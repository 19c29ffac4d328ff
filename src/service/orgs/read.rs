//! GetOrganization and ListOrganizations: reads with agent counts, filtering,
//! ordering and keyset pagination over the organizations the caller may see.

use sea_orm::{
    ColumnTrait, Condition, ExprTrait, Order, QueryFilter, QueryOrder,
    sea_query::{Expr, Func, LikeExpr},
};
use uuid::Uuid;

use crate::{
    auth::{Caller, OrgRow, live_orgs, policy::CallerRole},
    domain::{
        filter::{self, Op},
        ids::{self, IdKind},
        org::{OrgKind, OrgStatus},
        paging,
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::first_rows,
    storage::entities::organizations,
};

/// GetOrganization.
pub async fn get(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetOrganizationRequest,
) -> Result<proto::GetOrganizationResponse> {
    // One query: the row and its agent count together (for the caller's own
    // organization both came with the auth layer's read of its home row).
    let (access, count) = caller
        .authorize_with_agent_count(&ctx.store, "organization_id", &req.organization_id)
        .await?;
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
    // One query per page: the rows with their agent counts as a scalar sub-select.
    let mut query = live_orgs(true);
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
                        .add(sort_key(false).like(LikeExpr::new(pattern.clone()).escape('\\')))
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
        let bad_token =
            || Error::invalid("page_token", "is not a page token issued by this service");
        let last_id = Uuid::parse_str(&cursor.id).map_err(|_| bad_token())?;
        let key = cursor.k.clone().unwrap_or_default();
        // Rows after the last one in (key, id) order: a row-value comparison, plus the
        // bound on the key alone that SQLite needs to start a range of an expression
        // index (it does not range-scan on a row value over `lower(name)`).
        let last_key = if by_time {
            Expr::val(key.parse::<i64>().map_err(|_| bad_token())?)
        } else {
            // Names sort case-insensitively, as the database lowercases them, so the
            // key is lowercased by the database too.
            Func::lower(Expr::val(key)).into()
        };
        let row_key = Expr::tuple([sort_key(by_time), Expr::col(organizations::Column::Id)]);
        let last = Expr::tuple([last_key.clone(), Expr::val(last_id)]);
        query = query.filter(if descending {
            sort_key(by_time).lte(last_key).and(row_key.lt(last))
        } else {
            sort_key(by_time).gte(last_key).and(row_key.gt(last))
        });
    }
    let query = query
        .order_by(sort_key(by_time), order.clone())
        .order_by(organizations::Column::Id, order);
    let mut rows: Vec<OrgRow> = first_rows(ctx.store.db(), query, size + 1).await?;
    let more = rows.len() as u64 > size;
    rows.truncate(size as usize);
    let next_page_token = match rows.last().map(|last| &last.row) {
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
                    &r.row,
                    r.agent_count.unwrap_or_default(),
                )
            })
            .collect(),
        next_page_token,
    })
}

/// The sort key of the page order before the id: the creation time, or the name
/// lowercased, so "acme" and "Zeta" sort alphabetically on every backend. Written
/// exactly as `ix_organizations_name_order` indexes it (`lower(name)`), which SQLite
/// needs to use the index.
fn sort_key(by_time: bool) -> Expr {
    if by_time {
        Expr::col(organizations::Column::CreateTime)
    } else {
        Func::lower(Expr::col(organizations::Column::Name)).into()
    }
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
