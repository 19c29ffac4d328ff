//! Invitation states and the ListInvitations and RevokeInvitation use cases.

use sea_orm::{
    ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use serde_json::json;

use crate::{
    auth::Caller,
    domain::{
        ids::{self, IdKind},
        org::InvitationStatus,
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::{audit, paging::Page},
    storage::{audit::AuditRecord, entities::invitations},
};

/// The refusal for an invitation that is no longer pending, if it is not.
pub(super) fn not_pending(invitation: &invitations::Model, now: i64) -> Option<Error> {
    let status = invitation
        .status
        .parse()
        .unwrap_or(InvitationStatus::Expired);
    match status {
        InvitationStatus::Accepted => Some(Error::precondition(
            "INVITATION_ALREADY_ACCEPTED",
            "the invitation was already accepted",
        )),
        InvitationStatus::Revoked => Some(Error::precondition(
            "INVITATION_REVOKED",
            "the invitation was revoked",
        )),
        InvitationStatus::Expired => Some(expired()),
        InvitationStatus::Pending if invitation.expire_time <= now => Some(expired()),
        InvitationStatus::Pending => None,
    }
}

fn expired() -> Error {
    Error::precondition(
        "INVITATION_EXPIRED",
        "the invitation has expired; ask for a new one",
    )
}

/// ListInvitations: every invitation of the organization, newest first.
pub async fn list_invitations(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListInvitationsRequest,
) -> Result<proto::ListInvitationsResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let page = Page::parse(
        &mut v,
        req.page_size,
        &req.page_token,
        &[&access.org().id.to_string(), "invitations"],
    );
    v.finish()?;
    let mut query =
        invitations::Entity::find().filter(invitations::Column::OrganizationId.eq(access.org().id));
    if let Some(after) = page.after {
        query = query.filter(invitations::Column::Id.lt(after));
    }
    let mut rows = query
        .order_by(invitations::Column::Id, Order::Desc)
        .limit(page.limit())
        .all(ctx.store.db())
        .await?;
    let next_page_token = page.finish(&mut rows, |r| r.id);
    let now = ctx.store.now();
    Ok(proto::ListInvitationsResponse {
        invitations: rows.iter().map(|r| convert::invitation(r, now)).collect(),
        next_page_token,
    })
}

/// RevokeInvitation: a pending invitation stops working at once.
pub async fn revoke_invitation(
    ctx: Ctx,
    caller: Caller,
    req: proto::RevokeInvitationRequest,
) -> Result<proto::RevokeInvitationResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let id = ids::decode(IdKind::Invitation, &req.invitation_id)
        .map_err(|e| Error::invalid("invitation_id", e.to_string()))?;
    let invitation = invitations::Entity::find_by_id(id)
        .filter(invitations::Column::OrganizationId.eq(access.org().id))
        .one(ctx.store.db())
        .await?
        .ok_or_else(|| Error::not_found("invitation", &req.invitation_id))?;
    let now = ctx.store.now();
    if let Some(refusal) = not_pending(&invitation, now) {
        return Err(refusal);
    }
    let tx = ctx.store.write().await?;
    let revoked = invitations::Entity::update_many()
        .col_expr(
            invitations::Column::Status,
            Expr::value(InvitationStatus::Revoked.as_str()),
        )
        .filter(invitations::Column::Id.eq(id))
        .filter(invitations::Column::Status.eq(InvitationStatus::Pending.as_str()))
        .exec(&*tx)
        .await?
        .rows_affected;
    let current = invitations::Entity::find_by_id(id)
        .one(&*tx)
        .await?
        .ok_or_else(|| Error::not_found("invitation", &req.invitation_id))?;
    if revoked != 1 {
        return Err(not_pending(&current, now).unwrap_or_else(|| {
            Error::precondition("INVITATION_REVOKED", "the invitation was revoked")
        }));
    }
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: invitation.organization_id,
            action: "RevokeInvitation",
            target_type: "invitation",
            target_id: ids::encode(IdKind::Invitation, id),
            request_id: &caller.trace_id,
            summary: json!({ "email": invitation.email, "role": invitation.role }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::RevokeInvitationResponse {
        invitation: Some(convert::invitation(&current, now)),
    })
}
