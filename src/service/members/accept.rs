//! AcceptInvitation: the calling user joins the invitation's organization, becoming its
//! owner if the invitation says so, while the plan's `max_team_members` has room.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, EntityTrait, ExprTrait,
    PaginatorTrait, QueryFilter, sea_query::Expr,
};
use serde_json::json;
use tonic::Code;

use crate::{
    auth::{Actor, Caller, api_key},
    domain::{
        events::types,
        ids::{self, IdKind, new_id},
        org::{InvitationStatus, MemberRole},
        text,
    },
    error::{Error, Result, Violations},
    events::outbox,
    grpc::{Ctx, convert},
    proto,
    service::{
        audit, billing::quotas::effective_limits, orgs::lock_org, subscriptions::limit_reached,
    },
    storage::{
        audit::AuditRecord,
        entities::{invitations, members, organizations},
    },
};

use super::{MAX_NAME_LEN, invitations::not_pending, member_exists};

/// Longest token accepted (generated ones are 51 characters).
const MAX_TOKEN_LEN: usize = 256;

/// AcceptInvitation: the calling user (JWT) joins the invitation's organization. Two
/// concurrent accepts of one token create one member: the invitation leaves PENDING
/// with a conditional update, and only the winner inserts.
pub async fn accept(
    ctx: Ctx,
    caller: Caller,
    req: proto::AcceptInvitationRequest,
) -> Result<proto::AcceptInvitationResponse> {
    let principal = caller.principal()?.clone();
    let Actor::User {
        sub,
        email: claimed,
    } = &principal.actor
    else {
        return Err(Error::PermissionDenied(
            "only a user can accept an invitation".into(),
        ));
    };
    let mut v = Violations::new();
    let token = req.token.trim();
    if token.is_empty() {
        v.add("token", "must not be empty");
    } else if token.len() > MAX_TOKEN_LEN {
        v.add(
            "token",
            format!("must be at most {MAX_TOKEN_LEN} characters"),
        );
    }
    let name = v
        .check(
            "name",
            text::bounded(req.name.trim(), MAX_NAME_LEN).map(str::to_owned),
        )
        .unwrap_or_default();
    v.finish()?;
    let not_found = || {
        Error::rejected(
            Code::NotFound,
            "INVITATION_NOT_FOUND",
            "no invitation has this token",
        )
    };
    let invitation = invitations::Entity::find()
        .filter(invitations::Column::TokenHash.eq(api_key::hash(token)))
        .one(ctx.store.db())
        .await?
        .ok_or_else(not_found)?;
    if let Some(claimed) = claimed
        && claimed.trim().to_lowercase() != invitation.email
    {
        return Err(Error::PermissionDenied(
            "the invitation was sent to another email address".into(),
        ));
    }
    let now = ctx.store.now();
    if let Some(refusal) = not_pending(&invitation, now) {
        return Err(refusal);
    }
    let name = if name.is_empty() {
        invitation.name.clone()
    } else {
        name
    };
    let role: MemberRole = invitation.role.parse().unwrap_or(MemberRole::Member);
    let tx = ctx.store.write().await?;
    // Lock the organization so concurrent accepts into it count members one at a time.
    let org = lock_org(&tx, invitation.organization_id)
        .await?
        .filter(|o| o.delete_time.is_none())
        .ok_or_else(not_found)?;
    let taken = invitations::Entity::update_many()
        .col_expr(
            invitations::Column::Status,
            Expr::value(InvitationStatus::Accepted.as_str()),
        )
        .col_expr(invitations::Column::AcceptTime, Expr::value(now))
        .filter(invitations::Column::Id.eq(invitation.id))
        .filter(invitations::Column::Status.eq(InvitationStatus::Pending.as_str()))
        .filter(invitations::Column::ExpireTime.gt(now))
        .exec(&*tx)
        .await?
        .rows_affected;
    if taken != 1 {
        let current = invitations::Entity::find_by_id(invitation.id)
            .one(&*tx)
            .await?;
        return Err(current
            .and_then(|c| not_pending(&c, now))
            .unwrap_or_else(|| {
                Error::precondition(
                    "INVITATION_ALREADY_ACCEPTED",
                    "the invitation was already accepted",
                )
            }));
    }
    let already = members::Entity::find()
        .filter(members::Column::OrganizationId.eq(org.id))
        .filter(
            Condition::any()
                .add(members::Column::Email.eq(invitation.email.as_str()))
                .add(members::Column::UserId.eq(sub.as_str())),
        )
        .one(&*tx)
        .await?;
    if already.is_some() {
        return Err(member_exists(&invitation.email));
    }
    // The invitation was counted when it was sent, but the plan may have changed since.
    if let Some(allowed) = effective_limits(&ctx.settings.billing.catalogue, &org).max_team_members
    {
        let team = members::Entity::find()
            .filter(members::Column::OrganizationId.eq(org.id))
            .count(&*tx)
            .await?;
        let current = i64::try_from(team).unwrap_or(i64::MAX);
        if current >= allowed {
            return Err(limit_reached(&org, "max_team_members", current, allowed));
        }
    }
    // A pending owner invitation exists only while the organization has no owner
    // (CreateOrganization with an owner, TransferOwnership to someone new: both leave
    // `owner_user_id` empty and no member flagged), so this names the previous owner
    // only for the record.
    let previous_owner_user_id = org.owner_user_id.clone();
    if invitation.is_owner {
        // One owner per organization: the invitation names the new one; should a member
        // still be flagged, it loses the flag and keeps its role.
        members::Entity::update_many()
            .col_expr(members::Column::IsOwner, Expr::value(false))
            .col_expr(members::Column::UpdateTime, Expr::value(now))
            .col_expr(
                members::Column::Version,
                Expr::col(members::Column::Version).add(1),
            )
            .filter(members::Column::OrganizationId.eq(org.id))
            .filter(members::Column::IsOwner.eq(true))
            .exec(&*tx)
            .await?;
        organizations::Entity::update_many()
            .col_expr(
                organizations::Column::OwnerUserId,
                Expr::value(sub.as_str()),
            )
            .col_expr(
                organizations::Column::OwnerEmail,
                Expr::value(invitation.email.as_str()),
            )
            .col_expr(organizations::Column::OwnerName, Expr::value(name.as_str()))
            .col_expr(organizations::Column::UpdateTime, Expr::value(now))
            .col_expr(
                organizations::Column::Version,
                Expr::col(organizations::Column::Version).add(1),
            )
            .filter(organizations::Column::Id.eq(org.id))
            .exec(&*tx)
            .await?;
    }
    let id = new_id();
    let member = members::ActiveModel {
        id: Set(id),
        organization_id: Set(org.id),
        user_id: Set(sub.clone()),
        email: Set(invitation.email.clone()),
        name: Set(name),
        role: Set(role.as_str().to_owned()),
        is_owner: Set(invitation.is_owner),
        create_time: Set(now),
        update_time: Set(now),
        version: Set(1),
    }
    .insert(&*tx)
    .await
    .map_err(|e| {
        let e = Error::from(e);
        if e.is_unique_violation() {
            member_exists(&invitation.email)
        } else {
            e
        }
    })?;
    let org_id = ids::encode(IdKind::Organization, org.id);
    let invitation_id = ids::encode(IdKind::Invitation, invitation.id);
    outbox::emit(
        &tx,
        now,
        &org,
        types::MEMBER_JOINED,
        &caller.trace_id,
        json!({
            "organization_id": org_id,
            "member_id": ids::encode(IdKind::Member, id),
            "invitation_id": invitation_id,
            "user_id": member.user_id, "email": member.email, "role": member.role,
            "owner": member.is_owner,
        }),
    )
    .await?;
    if invitation.is_owner {
        outbox::emit(
            &tx,
            now,
            &org,
            types::OWNERSHIP_TRANSFERRED,
            &caller.trace_id,
            json!({
                "organization_id": org_id,
                "previous_owner_user_id": previous_owner_user_id,
                "new_owner_user_id": member.user_id,
                "new_owner_email": member.email,
                "invitation_id": invitation_id,
                "invitation_accepted": true,
            }),
        )
        .await?;
    }
    audit(
        &tx,
        &ctx,
        &principal,
        AuditRecord {
            organization_id: org.id,
            action: "AcceptInvitation",
            target_type: "member",
            target_id: ids::encode(IdKind::Member, id),
            request_id: &caller.trace_id,
            summary: json!({
                "invitation_id": invitation_id,
                "email": invitation.email, "role": role.as_str(), "owner": invitation.is_owner,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::AcceptInvitationResponse {
        member: Some(convert::member(&member)),
    })
}
