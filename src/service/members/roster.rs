//! The roster: ListMembers, UpdateMemberRole and RemoveMember.

use sea_orm::{
    ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use serde_json::json;
use tonic::Code;

use crate::{
    auth::{Caller, OrgAccess},
    domain::{
        events::types,
        ids::{self, IdKind},
        org::MemberRole,
    },
    error::{Error, Result, Violations},
    events::outbox,
    grpc::{Ctx, convert},
    proto,
    service::{audit, check_etag, paging::Page},
    storage::{audit::AuditRecord, entities::members},
};

use super::{check_power, org_kind, parse_role};

/// ListMembers: the organization's members in id (join) order.
pub async fn list_members(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListMembersRequest,
) -> Result<proto::ListMembersResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let page = Page::parse(
        &mut v,
        req.page_size,
        &req.page_token,
        &[&access.org().id.to_string(), "members"],
    );
    v.finish()?;
    let mut query =
        members::Entity::find().filter(members::Column::OrganizationId.eq(access.org().id));
    if let Some(after) = page.after {
        query = query.filter(members::Column::Id.gt(after));
    }
    let mut rows = query
        .order_by(members::Column::Id, Order::Asc)
        .limit(page.limit())
        .all(ctx.store.db())
        .await?;
    let next_page_token = page.finish(&mut rows, |r| r.id);
    Ok(proto::ListMembersResponse {
        members: rows.iter().map(convert::member).collect(),
        next_page_token,
    })
}

/// Loads a member of the authorized organization; members of other organizations are
/// NOT_FOUND.
async fn find_member(ctx: &Ctx, access: &OrgAccess, member_id: &str) -> Result<members::Model> {
    let id = ids::decode(IdKind::Member, member_id)
        .map_err(|e| Error::invalid("member_id", e.to_string()))?;
    members::Entity::find_by_id(id)
        .filter(members::Column::OrganizationId.eq(access.org().id))
        .one(ctx.store.db())
        .await?
        .ok_or_else(|| Error::not_found("member", member_id))
}

/// UpdateMemberRole: the owner stays at least CONFIG_ADMIN.
pub async fn update_role(
    ctx: Ctx,
    caller: Caller,
    req: proto::UpdateMemberRoleRequest,
) -> Result<proto::UpdateMemberRoleResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    if let Err(e) = ids::decode(IdKind::Member, &req.member_id) {
        v.add("member_id", e.to_string());
    }
    let role = parse_role(&mut v, "role", req.role, org_kind(access.org()));
    v.finish()?;
    let Some(role) = role else {
        return Err(Error::Internal("validated role missing".into()));
    };
    let member = find_member(&ctx, &access, &req.member_id).await?;
    let current: MemberRole = member.role.parse().unwrap_or(MemberRole::Member);
    check_power(access.principal(), current)?;
    check_power(access.principal(), role)?;
    if member.is_owner && role < MemberRole::ConfigAdmin {
        return Err(Error::precondition(
            "OWNER_MUST_BE_ADMIN",
            "the owner must stay at least CONFIG_ADMIN; transfer ownership first",
        ));
    }
    check_etag(&req.etag, member.version)?;
    if role == current {
        return Ok(proto::UpdateMemberRoleResponse {
            member: Some(convert::member(&member)),
        });
    }
    let now = ctx.store.now();
    let tx = ctx.store.write().await?;
    let updated = members::Entity::update_many()
        .col_expr(members::Column::Role, Expr::value(role.as_str()))
        .col_expr(members::Column::UpdateTime, Expr::value(now))
        .col_expr(members::Column::Version, Expr::value(member.version + 1))
        .filter(members::Column::Id.eq(member.id))
        .filter(members::Column::Version.eq(member.version))
        .exec(&*tx)
        .await?
        .rows_affected;
    if updated != 1 {
        return Err(Error::stale_etag());
    }
    let saved = members::Entity::find_by_id(member.id)
        .one(&*tx)
        .await?
        .ok_or_else(|| Error::not_found("member", &req.member_id))?;
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: member.organization_id,
            action: "UpdateMemberRole",
            target_type: "member",
            target_id: ids::encode(IdKind::Member, member.id),
            request_id: &caller.trace_id,
            summary: json!({ "from": current.as_str(), "to": role.as_str() }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::UpdateMemberRoleResponse {
        member: Some(convert::member(&saved)),
    })
}

/// RemoveMember: anyone but the owner.
pub async fn remove(
    ctx: Ctx,
    caller: Caller,
    req: proto::RemoveMemberRequest,
) -> Result<proto::RemoveMemberResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let member = find_member(&ctx, &access, &req.member_id).await?;
    if member.is_owner {
        return Err(Error::precondition(
            "OWNER_CANNOT_BE_REMOVED",
            "the owner cannot be removed; transfer ownership first",
        ));
    }
    check_power(
        access.principal(),
        member.role.parse().unwrap_or(MemberRole::Member),
    )?;
    let tx = ctx.store.write().await?;
    let removed = members::Entity::delete_many()
        .filter(members::Column::Id.eq(member.id))
        .filter(members::Column::IsOwner.eq(false))
        .exec(&*tx)
        .await?
        .rows_affected;
    if removed != 1 {
        return Err(Error::rejected(
            Code::Aborted,
            "CONCURRENT_CHANGE",
            "the member changed concurrently; retry",
        ));
    }
    let data = json!({
        "organization_id": ids::encode(IdKind::Organization, member.organization_id),
        "member_id": ids::encode(IdKind::Member, member.id),
        "email": member.email,
        "role": member.role,
    });
    outbox::emit(
        &tx,
        ctx.store.now(),
        access.org(),
        types::MEMBER_REMOVED,
        &caller.trace_id,
        data,
    )
    .await?;
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: member.organization_id,
            action: "RemoveMember",
            target_type: "member",
            target_id: ids::encode(IdKind::Member, member.id),
            request_id: &caller.trace_id,
            summary: json!({ "email": member.email, "role": member.role }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::RemoveMemberResponse {})
}
