//! InviteMember: a new invitation replaces any pending one for the same email; its
//! token is shown once, stored only as a hash, and reissued on a retry.

use crate::service::orgs::lock_live;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
    sea_query::Expr,
};
use serde_json::json;

use crate::{
    auth::{Caller, OrgAccess, api_key},
    domain::{
        ids::{self, IdKind, new_id},
        org::{InvitationStatus, MemberRole},
        text,
    },
    error::{Error, Result, Violations},
    events::email,
    grpc::{Ctx, convert},
    proto,
    service::{
        audit, audit_request_id, billing::quotas::effective_limits, commit, idempotency_key,
        replayed, settle, subscriptions::limit_reached,
    },
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{invitations, members, organizations},
    },
};

use super::{MAX_NAME_LEN, check_power, emit_invited, member_exists, org_kind, parse_role};

/// Prefix of invitation tokens.
const TOKEN_PREFIX: &str = "ivt_tok_";

fn ttl_micros(ctx: &Ctx) -> i64 {
    i64::try_from(ctx.settings.invitation_ttl.as_micros()).unwrap_or(i64::MAX / 2)
}

/// InviteMember: invites `email` with `role`. A pending invitation for the same email is
/// revoked and replaced (a replaced owner invitation stays an owner invitation while the
/// organization has no owner, so a lost owner token can be re-issued).
///
/// The team is limited by the plan's `max_team_members`: members plus pending
/// invitations (unexpired; the one this call replaces does not count) may not reach
/// past it (RESOURCE_EXHAUSTED `PLAN_LIMIT_REACHED`).
///
/// The token is shown once and stored only as a hash, so the idempotency record keeps
/// the response without it; a retry with the same `request_id` gets the same invitation
/// with a freshly issued token (the earlier token stops working).
pub async fn invite(
    ctx: Ctx,
    caller: Caller,
    req: proto::InviteMemberRequest,
) -> Result<proto::InviteMemberResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let principal = access.principal().clone();
    let mut v = Violations::new();
    let email = v.check("email", text::email(&req.email));
    let role = parse_role(&mut v, "role", req.role, org_kind(access.org()));
    let name = v
        .check(
            "name",
            text::bounded(req.name.trim(), MAX_NAME_LEN).map(str::to_owned),
        )
        .unwrap_or_default();
    v.finish()?;
    let (Some(email), Some(role)) = (email, role) else {
        return Err(Error::Internal("validated fields missing".into()));
    };
    check_power(&principal, role)?;
    let key = idempotency_key(&principal, "InviteMember", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        // Lock the organization so concurrent writers of its members serialize.
        let org = lock_live(&tx, access.org()).await?;
        let existing = members::Entity::find()
            .filter(members::Column::OrganizationId.eq(org.id))
            .filter(members::Column::Email.eq(email.as_str()))
            .one(&*tx)
            .await?;
        if existing.is_some() {
            return Err(member_exists(&email));
        }
        let now = ctx.store.now();
        check_team_room(&ctx, &tx, &org, &email, now).await?;
        let pending = invitations::Entity::find()
            .filter(invitations::Column::OrganizationId.eq(org.id))
            .filter(invitations::Column::Email.eq(email.as_str()))
            .filter(invitations::Column::Status.eq(InvitationStatus::Pending.as_str()))
            .all(&*tx)
            .await?;
        let owner = org.owner_user_id.is_empty() && pending.iter().any(|i| i.is_owner);
        let role = if owner { role.max(MemberRole::ConfigAdmin) } else { role };
        invitations::Entity::update_many()
            .col_expr(invitations::Column::Status, Expr::value(InvitationStatus::Revoked.as_str()))
            .filter(invitations::Column::OrganizationId.eq(org.id))
            .filter(invitations::Column::Email.eq(email.as_str()))
            .filter(invitations::Column::Status.eq(InvitationStatus::Pending.as_str()))
            .exec(&*tx)
            .await?;
        let request_id = audit_request_id(&caller, key.as_ref());
        let invitation = NewInvitation {
            email: &email,
            name: &name,
            role,
            owner,
            inviter: principal.actor_id(),
        };
        let (row, token) = issue_invitation(&ctx, &tx, &org, now, invitation, request_id).await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "InviteMember",
                target_type: "invitation",
                target_id: ids::encode(IdKind::Invitation, row.id),
                request_id,
                summary: json!({
                    "email": email, "role": role.as_str(), "owner": owner,
                    "replaced_invitations": pending.iter().map(|i| ids::encode(IdKind::Invitation, i.id)).collect::<Vec<_>>(),
                }),
            },
        )
        .await?;
        let stored = proto::InviteMemberResponse {
            invitation: Some(convert::invitation(&row, now)),
            token: String::new(),
        };
        let stored = commit(&ctx, tx, key.as_ref(), stored).await?;
        Ok(proto::InviteMemberResponse { token, ..stored })
    }
    .await;
    let response = settle(&ctx, key.as_ref(), result).await?;
    if response.token.is_empty() {
        return reissue(
            &ctx,
            &caller,
            &access,
            key.as_ref().map(|k| k.request_id()),
            response,
        )
        .await;
    }
    Ok(response)
}

/// An invitation to issue.
pub(crate) struct NewInvitation<'a> {
    /// The invitee's email, already validated.
    pub email: &'a str,
    /// The invitee's name (may be empty).
    pub name: &'a str,
    pub role: MemberRole,
    /// Whether accepting it makes the invitee the owner.
    pub owner: bool,
    /// Who invites (the principal's actor id).
    pub inviter: &'a str,
}

/// Issues a PENDING invitation of `org` expiring after `settings.invitation_ttl`: its
/// token (returned, stored only as a hash), its `member.invited` / `owner.invited`
/// event and the email carrying the token. The caller holds the organization's row
/// lock, revoked what the invitation replaces and audits.
pub(crate) async fn issue_invitation(
    ctx: &Ctx,
    tx: &Tx,
    org: &organizations::Model,
    now: i64,
    new: NewInvitation<'_>,
    request_id: &str,
) -> Result<(invitations::Model, String)> {
    let token = api_key::random_token(TOKEN_PREFIX);
    let row = invitations::ActiveModel {
        id: Set(new_id()),
        organization_id: Set(org.id),
        email: Set(new.email.to_owned()),
        name: Set(new.name.to_owned()),
        role: Set(new.role.as_str().to_owned()),
        is_owner: Set(new.owner),
        token_hash: Set(api_key::hash(&token)),
        status: Set(InvitationStatus::Pending.as_str().to_owned()),
        inviter: Set(new.inviter.to_owned()),
        create_time: Set(now),
        expire_time: Set(now.saturating_add(ttl_micros(ctx))),
        accept_time: Set(None),
    }
    .insert(&**tx)
    .await?;
    let event = emit_invited(tx, now, org, &row, request_id).await?;
    email::queue_invitation(tx, now, org, Some(event), &row, &token).await?;
    Ok((row, token))
}

/// Refuses an invitation that would take the team past the plan's `max_team_members`:
/// members plus the pending, unexpired invitations of other emails (a re-invite of the
/// same email replaces its pending invitation, so it is not counted twice). The caller
/// holds the organization's row lock, so concurrent invitations count one at a time.
pub(crate) async fn check_team_room(
    ctx: &Ctx,
    tx: &Tx,
    org: &organizations::Model,
    email: &str,
    now: i64,
) -> Result<()> {
    let Some(allowed) = effective_limits(&ctx.settings.billing.catalogue, org).max_team_members
    else {
        return Ok(());
    };
    let team = members::Entity::find()
        .filter(members::Column::OrganizationId.eq(org.id))
        .count(&**tx)
        .await?;
    let invited = invitations::Entity::find()
        .filter(invitations::Column::OrganizationId.eq(org.id))
        .filter(invitations::Column::Email.ne(email))
        .filter(invitations::Column::Status.eq(InvitationStatus::Pending.as_str()))
        .filter(invitations::Column::ExpireTime.gt(now))
        .count(&**tx)
        .await?;
    let current = i64::try_from(team + invited).unwrap_or(i64::MAX);
    if current >= allowed {
        return Err(limit_reached(org, "max_team_members", current, allowed)
            .with("members", team)
            .with("pending_invitations", invited));
    }
    Ok(())
}

/// Issues a fresh token for the invitation of a replayed InviteMember response, if the
/// invitation is still pending; otherwise answers the replay without a token.
async fn reissue(
    ctx: &Ctx,
    caller: &Caller,
    access: &OrgAccess,
    request_id: Option<&str>,
    mut response: proto::InviteMemberResponse,
) -> Result<proto::InviteMemberResponse> {
    let Some(id) = response
        .invitation
        .as_ref()
        .and_then(|i| ids::decode(IdKind::Invitation, &i.id).ok())
    else {
        return Ok(response);
    };
    let now = ctx.store.now();
    let token = api_key::random_token(TOKEN_PREFIX);
    let tx = ctx.store.write().await?;
    let updated = invitations::Entity::update_many()
        .col_expr(
            invitations::Column::TokenHash,
            Expr::value(api_key::hash(&token)),
        )
        .filter(invitations::Column::Id.eq(id))
        .filter(invitations::Column::OrganizationId.eq(access.org().id))
        .filter(invitations::Column::Status.eq(InvitationStatus::Pending.as_str()))
        .filter(invitations::Column::ExpireTime.gt(now))
        .exec(&*tx)
        .await?
        .rows_affected;
    if updated != 1 {
        return Ok(response);
    }
    // The earlier email's token no longer works: send the new one.
    if let Some(invitation) = invitations::Entity::find_by_id(id).one(&*tx).await? {
        email::queue_invitation(&tx, now, access.org(), None, &invitation, &token).await?;
    }
    audit(
        &tx,
        ctx,
        access.principal(),
        AuditRecord {
            organization_id: access.org().id,
            action: "InviteMember",
            target_type: "invitation",
            target_id: ids::encode(IdKind::Invitation, id),
            request_id: request_id.unwrap_or(&caller.trace_id),
            summary: json!({ "token_reissued": true }),
        },
    )
    .await?;
    tx.commit().await?;
    response.token = token;
    Ok(response)
}
