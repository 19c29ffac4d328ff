//! Ownership transfers and owner email changes.
//!
//! An organization has at most one owner: the member row flagged `is_owner`, mirrored
//! on the organization as `owner_user_id` / `owner_email` / `owner_name`. While an
//! owner invitation is pending, the organization names the invitee's email and name
//! and has no `owner_user_id`; AcceptInvitation completes the handover.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr,
};
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        events::types,
        ids::{self, IdKind},
        org::{InvitationStatus, MemberRole},
        text,
    },
    error::{Error, Result, Violations},
    events::outbox,
    grpc::{Ctx, convert},
    proto,
    service::{
        audit, audit_request_id,
        billing::require_request_id,
        check_etag, commit, idempotency_key,
        members::{MAX_NAME_LEN, NewInvitation, check_team_room, issue_invitation},
        orgs::{lock_live, save_versioned},
        replayed, settle,
    },
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{invitations, members, organizations},
    },
};

fn role_of(member: &members::Model) -> MemberRole {
    member.role.parse().unwrap_or(MemberRole::Member)
}

/// The member rows flagged as owner (one, normally).
async fn owner_rows(tx: &Tx, org_id: Uuid) -> Result<Vec<members::Model>> {
    Ok(members::Entity::find()
        .filter(members::Column::OrganizationId.eq(org_id))
        .filter(members::Column::IsOwner.eq(true))
        .all(&**tx)
        .await?)
}

/// Revokes the pending invitations of `org_id` that are owner invitations or are
/// addressed to `email`: a transfer names the one owner, and replaces any pending
/// invitation of the new owner (as InviteMember does). Returns the revoked ids.
async fn revoke_superseded(tx: &Tx, org_id: Uuid, email: &str) -> Result<Vec<Uuid>> {
    let superseded: Vec<Uuid> = invitations::Entity::find()
        .filter(invitations::Column::OrganizationId.eq(org_id))
        .filter(invitations::Column::Status.eq(InvitationStatus::Pending.as_str()))
        .filter(
            sea_orm::Condition::any()
                .add(invitations::Column::IsOwner.eq(true))
                .add(invitations::Column::Email.eq(email)),
        )
        .all(&**tx)
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
    if !superseded.is_empty() {
        invitations::Entity::update_many()
            .col_expr(
                invitations::Column::Status,
                Expr::value(InvitationStatus::Revoked.as_str()),
            )
            .filter(invitations::Column::Id.is_in(superseded.clone()))
            .exec(&**tx)
            .await?;
    }
    Ok(superseded)
}

/// Writes the organization's owner fields and bumps its version (the caller holds the
/// row lock and checked the etag against `org.version`).
async fn set_owner(
    tx: &Tx,
    org: &organizations::Model,
    now: i64,
    user_id: &str,
    email: &str,
    name: &str,
) -> Result<organizations::Model> {
    let row = organizations::ActiveModel {
        owner_user_id: Set(user_id.to_owned()),
        owner_email: Set(email.to_owned()),
        owner_name: Set(name.to_owned()),
        update_time: Set(now),
        version: Set(org.version + 1),
        ..Default::default()
    };
    save_versioned(tx, row, org.id, org.version).await
}

/// Where the ownership went.
struct NewOwner {
    user_id: String,
    email: String,
    name: String,
    invitation: Option<invitations::Model>,
}

/// TransferOwnership: makes `new_owner_email` the owner. A member with that email is
/// promoted (at least CONFIG_ADMIN, owner); anyone else gets an owner invitation by
/// email and becomes the owner on accepting it. The previous owner stays a member (at
/// least CONFIG_ADMIN) unless `remove_previous_owner`. Pending owner invitations are
/// revoked: the transfer names the one owner.
pub async fn transfer_ownership(
    ctx: Ctx,
    caller: Caller,
    req: proto::TransferOwnershipRequest,
) -> Result<proto::TransferOwnershipResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let principal = access.principal().clone();
    let mut v = Violations::new();
    let email = v.check("new_owner_email", text::email(&req.new_owner_email));
    let name = v
        .check(
            "new_owner_name",
            text::bounded(req.new_owner_name.trim(), MAX_NAME_LEN).map(str::to_owned),
        )
        .unwrap_or_default();
    require_request_id(&mut v, &req.request_id);
    v.finish()?;
    let Some(email) = email else {
        return Err(Error::Internal("validated email missing".into()));
    };
    let key = idempotency_key(&principal, "TransferOwnership", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let org = lock_live(&tx, access.org()).await?;
        check_etag(&req.etag, org.version)?;
        let now = ctx.store.now();
        let request_id = audit_request_id(&caller, key.as_ref());
        let previous = owner_rows(&tx, org.id).await?;
        if org.owner_email == email || previous.iter().any(|p| p.email == email) {
            return Err(Error::precondition(
                "ALREADY_OWNER",
                "this person already owns the organization",
            )
            .with("email", &email));
        }
        let previous_user_id = if org.owner_user_id.is_empty() {
            previous
                .first()
                .map(|p| p.user_id.clone())
                .unwrap_or_default()
        } else {
            org.owner_user_id.clone()
        };
        let revoked = revoke_superseded(&tx, org.id, &email).await?;

        // The previous owner steps down: removed, or kept as (at least) CONFIG_ADMIN.
        let mut previous_removed = false;
        for row in &previous {
            if req.remove_previous_owner {
                members::Entity::delete_by_id(row.id).exec(&*tx).await?;
                previous_removed = true;
                outbox::emit(&tx, now, &org, types::MEMBER_REMOVED, request_id, json!({
                    "organization_id": ids::encode(IdKind::Organization, org.id),
                    "member_id": ids::encode(IdKind::Member, row.id),
                    "user_id": row.user_id, "email": row.email, "role": row.role,
                    "cause": "ownership_transferred",
                }))
                .await?;
            } else {
                members::ActiveModel {
                    id: Set(row.id),
                    role: Set(role_of(row).max(MemberRole::ConfigAdmin).as_str().to_owned()),
                    is_owner: Set(false),
                    update_time: Set(now),
                    version: Set(row.version + 1),
                    ..Default::default()
                }
                .update(&*tx)
                .await?;
            }
        }

        let target = members::Entity::find()
            .filter(members::Column::OrganizationId.eq(org.id))
            .filter(members::Column::Email.eq(email.as_str()))
            .one(&*tx)
            .await?;
        let new_owner = match target {
            Some(member) => {
                // An existing member: promoted in place.
                let name = if member.name.is_empty() { name.clone() } else { member.name.clone() };
                members::ActiveModel {
                    id: Set(member.id),
                    role: Set(role_of(&member).max(MemberRole::ConfigAdmin).as_str().to_owned()),
                    name: Set(name.clone()),
                    is_owner: Set(true),
                    update_time: Set(now),
                    version: Set(member.version + 1),
                    ..Default::default()
                }
                .update(&*tx)
                .await?;
                NewOwner { user_id: member.user_id, email: member.email, name, invitation: None }
            }
            None => {
                // Someone new: an owner invitation, sent by email.
                check_team_room(&ctx, &tx, &org, &email, now).await?;
                let owner = NewInvitation {
                    email: &email,
                    name: &name,
                    role: MemberRole::ConfigAdmin,
                    owner: true,
                    inviter: principal.actor_id(),
                };
                // The token goes by email only.
                let (invitation, _token) =
                    issue_invitation(&ctx, &tx, &org, now, owner, request_id).await?;
                NewOwner { user_id: String::new(), email: email.clone(), name: name.clone(), invitation: Some(invitation) }
            }
        };
        let updated = set_owner(&tx, &org, now, &new_owner.user_id, &new_owner.email, &new_owner.name).await?;
        let org_id = ids::encode(IdKind::Organization, org.id);
        let invitation_id = new_owner
            .invitation
            .as_ref()
            .map(|i| ids::encode(IdKind::Invitation, i.id))
            .unwrap_or_default();
        let invited = new_owner.invitation.is_some();
        outbox::emit(&tx, now, &org, types::OWNERSHIP_TRANSFERRED, request_id, json!({
            "organization_id": org_id,
            "previous_owner_user_id": previous_user_id,
            "previous_owner_email": org.owner_email,
            "new_owner_user_id": new_owner.user_id,
            "new_owner_email": new_owner.email,
            "new_owner_invited": invited,
            "invitation_id": invitation_id,
            "previous_owner_removed": previous_removed,
        }))
        .await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "TransferOwnership",
                target_type: "organization",
                target_id: org_id.clone(),
                request_id,
                summary: json!({
                    "previous_owner_user_id": previous_user_id,
                    "previous_owner_email": org.owner_email,
                    "new_owner_user_id": new_owner.user_id,
                    "new_owner_email": new_owner.email,
                    "new_owner_invited": invited,
                    "invitation_id": invitation_id,
                    "previous_owner_removed": previous_removed,
                    "revoked_invitations": revoked.iter().map(|i| ids::encode(IdKind::Invitation, *i)).collect::<Vec<_>>(),
                }),
            },
        )
        .await?;
        // The invitation token went by email only: nothing secret is in the response
        // kept for retries.
        let response = proto::TransferOwnershipResponse {
            organization_id: org_id,
            previous_owner_user_id: previous_user_id,
            new_owner_user_id: new_owner.user_id,
            new_owner_email: new_owner.email,
            new_owner_invited: invited,
            invitation_id,
            previous_owner_removed: previous_removed,
            etag: convert::etag(updated.version),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}

/// ChangeOwnerEmail: the owner's email on the organization and on the owner's
/// membership (or, while the owner has not accepted yet, on the pending owner
/// invitation). Another member using the email → ALREADY_EXISTS.
pub async fn change_owner_email(
    ctx: Ctx,
    caller: Caller,
    req: proto::ChangeOwnerEmailRequest,
) -> Result<proto::ChangeOwnerEmailResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let principal = access.principal().clone();
    let mut v = Violations::new();
    let email = v.check("new_email", text::email(&req.new_email));
    v.finish()?;
    let Some(email) = email else {
        return Err(Error::Internal("validated email missing".into()));
    };
    let tx = ctx.store.write().await?;
    let org = lock_live(&tx, access.org()).await?;
    check_etag(&req.etag, org.version)?;
    if org.owner_user_id.is_empty() && org.owner_email.is_empty() {
        return Err(Error::precondition(
            "OWNER_MISSING",
            "the organization has no owner yet",
        ));
    }
    let org_id = ids::encode(IdKind::Organization, org.id);
    let previous_email = org.owner_email.clone();
    if previous_email == email {
        // Nothing changes.
        return Ok(proto::ChangeOwnerEmailResponse {
            organization_id: org_id,
            owner_user_id: org.owner_user_id.clone(),
            previous_email,
            new_email: email,
            etag: convert::etag(org.version),
        });
    }
    let owner = owner_rows(&tx, org.id).await?;
    let taken = members::Entity::find()
        .filter(members::Column::OrganizationId.eq(org.id))
        .filter(members::Column::Email.eq(email.as_str()))
        .filter(members::Column::IsOwner.eq(false))
        .one(&*tx)
        .await?;
    let email_taken = || {
        Error::rejected(
            Code::AlreadyExists,
            "EMAIL_TAKEN",
            "another member of the organization uses this email",
        )
        .with("email", &email)
    };
    if taken.is_some() {
        return Err(email_taken());
    }
    let now = ctx.store.now();
    let mut moved_invitations = Vec::new();
    if owner.is_empty() {
        // The owner has not accepted yet: the pending owner invitation follows the
        // email, and replaces any other pending invitation of the new address.
        let pending: Vec<invitations::Model> = invitations::Entity::find()
            .filter(invitations::Column::OrganizationId.eq(org.id))
            .filter(invitations::Column::Status.eq(InvitationStatus::Pending.as_str()))
            .filter(invitations::Column::IsOwner.eq(true))
            .all(&*tx)
            .await?;
        if !pending.is_empty() {
            invitations::Entity::update_many()
                .col_expr(
                    invitations::Column::Status,
                    Expr::value(InvitationStatus::Revoked.as_str()),
                )
                .filter(invitations::Column::OrganizationId.eq(org.id))
                .filter(invitations::Column::Status.eq(InvitationStatus::Pending.as_str()))
                .filter(invitations::Column::IsOwner.eq(false))
                .filter(invitations::Column::Email.eq(email.as_str()))
                .exec(&*tx)
                .await?;
            moved_invitations = pending.iter().map(|i| i.id).collect();
            invitations::Entity::update_many()
                .col_expr(invitations::Column::Email, Expr::value(email.as_str()))
                .filter(invitations::Column::Id.is_in(moved_invitations.clone()))
                .exec(&*tx)
                .await?;
        }
    } else {
        for row in &owner {
            members::ActiveModel {
                id: Set(row.id),
                email: Set(email.clone()),
                update_time: Set(now),
                version: Set(row.version + 1),
                ..Default::default()
            }
            .update(&*tx)
            .await
            .map_err(|e| {
                let e = Error::from(e);
                if e.is_unique_violation() {
                    email_taken()
                } else {
                    e
                }
            })?;
        }
    }
    let updated = set_owner(&tx, &org, now, &org.owner_user_id, &email, &org.owner_name).await?;
    outbox::emit(
        &tx,
        now,
        &updated,
        types::ORGANIZATION_UPDATED,
        &caller.trace_id,
        json!({
            "organization_id": org_id,
            "changed_fields": ["owner_email"],
            "changes": { "owner_email": email },
        }),
    )
    .await?;
    audit(
        &tx,
        &ctx,
        &principal,
        AuditRecord {
            organization_id: org.id,
            action: "ChangeOwnerEmail",
            target_type: "organization",
            target_id: org_id.clone(),
            request_id: &caller.trace_id,
            summary: json!({
                "previous_email": previous_email,
                "new_email": email,
                "owner_user_id": org.owner_user_id,
                "owner_invitations": moved_invitations
                    .iter()
                    .map(|i| ids::encode(IdKind::Invitation, *i))
                    .collect::<Vec<_>>(),
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::ChangeOwnerEmailResponse {
        organization_id: org_id,
        owner_user_id: updated.owner_user_id.clone(),
        previous_email,
        new_email: email,
        etag: convert::etag(updated.version),
    })
}
