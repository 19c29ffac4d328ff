//! UpdateOwnerProfile: the owner's name on the organization and on the membership.

use sea_orm::{ColumnTrait, EntityTrait, ExprTrait, QueryFilter, sea_query::Expr};
use serde_json::json;

use crate::{
    auth::Caller,
    domain::{
        events::types,
        ids::{self, IdKind},
        text,
    },
    error::{Error, Result, Violations},
    events::outbox,
    grpc::{Ctx, convert},
    proto,
    service::audit,
    storage::{
        audit::AuditRecord,
        entities::{members, organizations},
    },
};

/// UpdateOwnerProfile: the owner's name, on the organization and the owner's membership.
pub async fn update_owner(
    ctx: Ctx,
    caller: Caller,
    req: proto::UpdateOwnerProfileRequest,
) -> Result<proto::UpdateOwnerProfileResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let name = v.check("name", text::name(&req.name, 200));
    v.finish()?;
    let name = name.unwrap_or_default();
    let org = access.org();
    if org.owner_user_id.is_empty() && org.owner_email.is_empty() {
        return Err(Error::precondition(
            "OWNER_MISSING",
            "the organization has no owner yet",
        ));
    }
    let now = ctx.store.now();
    let tx = ctx.store.write().await?;
    organizations::Entity::update_many()
        .col_expr(organizations::Column::OwnerName, Expr::value(name.as_str()))
        .col_expr(organizations::Column::UpdateTime, Expr::value(now))
        .col_expr(
            organizations::Column::Version,
            Expr::col(organizations::Column::Version).add(1),
        )
        .filter(organizations::Column::Id.eq(org.id))
        .exec(&*tx)
        .await?;
    members::Entity::update_many()
        .col_expr(members::Column::Name, Expr::value(name.as_str()))
        .col_expr(members::Column::UpdateTime, Expr::value(now))
        .col_expr(
            members::Column::Version,
            Expr::col(members::Column::Version).add(1),
        )
        .filter(members::Column::OrganizationId.eq(org.id))
        .filter(members::Column::IsOwner.eq(true))
        .exec(&*tx)
        .await?;
    let updated = organizations::Entity::find_by_id(org.id)
        .one(&*tx)
        .await?
        .ok_or_else(|| Error::not_found("organization", &req.organization_id))?;
    let data = json!({
        "organization_id": ids::encode(IdKind::Organization, org.id),
        "changed_fields": ["owner_name"],
        "changes": { "owner_name": name },
    });
    outbox::emit(
        &tx,
        now,
        &updated,
        types::ORGANIZATION_UPDATED,
        &caller.trace_id,
        data,
    )
    .await?;
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: org.id,
            action: "UpdateOwnerProfile",
            target_type: "organization",
            target_id: ids::encode(IdKind::Organization, org.id),
            request_id: &caller.trace_id,
            summary: json!({ "owner_name": name }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::UpdateOwnerProfileResponse {
        owner: Some(convert::owner(&updated)),
    })
}
