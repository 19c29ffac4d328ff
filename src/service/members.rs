//! Members and invitations: inviting by email with a hashed, expiring token, accepting
//! (which creates the membership and, for an owner invitation, the owner), listing,
//! role changes and removal.
//!
//! Member roles are data for the identity provider that mints tokens; a caller can
//! neither grant nor change a role more powerful than its own.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, EntityTrait, ExprTrait, Order,
    QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

use crate::{
    auth::{Actor, Caller, OrgAccess, Principal, api_key, policy::CallerRole},
    domain::{
        ids::{self, IdKind, new_id},
        org::{InvitationStatus, MemberRole, OrgKind},
        paging, text,
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::{audit, audit_request_id, check_etag, commit, idempotency_key, replayed, settle},
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{invitations, members, organizations},
    },
};

/// Prefix of invitation tokens.
const TOKEN_PREFIX: &str = "ivt_tok_";
/// Longest token accepted (generated ones are 51 characters).
const MAX_TOKEN_LEN: usize = 256;
/// Longest member or invitee name.
const MAX_NAME_LEN: usize = 200;

/// Page size and keyset position of a list ordered by id, parsed from a request.
pub(crate) struct Page {
    /// Rows per page.
    pub size: u64,
    /// Id of the last row of the previous page.
    pub after: Option<Uuid>,
    fingerprint: String,
}

impl Page {
    /// Parses `page_size` and `page_token` of a query described by `query`, recording
    /// bad values in `v`.
    pub(crate) fn parse(
        v: &mut Violations,
        page_size: i32,
        page_token: &str,
        query: &[&str],
    ) -> Page {
        let size = v
            .check("page_size", paging::page_size(page_size))
            .unwrap_or(paging::DEFAULT_PAGE_SIZE);
        let fingerprint = paging::fingerprint(query);
        let cursor = v
            .check("page_token", paging::decode(page_token, &fingerprint))
            .flatten();
        let after = cursor.and_then(|c| match Uuid::parse_str(&c.id) {
            Ok(id) => Some(id),
            Err(_) => {
                v.add("page_token", "is not a page token issued by this service");
                None
            }
        });
        Page {
            size,
            after,
            fingerprint,
        }
    }

    /// Rows to fetch: one more than a page, to learn whether another page follows.
    pub(crate) fn limit(&self) -> u64 {
        self.size + 1
    }

    /// Cuts `rows` (fetched with [`Page::limit`]) to the page; returns the next token.
    pub(crate) fn finish<T>(&self, rows: &mut Vec<T>, id: impl Fn(&T) -> Uuid) -> String {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        let more = rows.len() > size;
        rows.truncate(size);
        match rows.last() {
            Some(last) if more => paging::encode(&paging::Cursor {
                q: self.fingerprint.clone(),
                k: None,
                id: id(last).to_string(),
            }),
            _ => String::new(),
        }
    }
}

/// The caller role that corresponds to a member role, to compare powers.
fn power(role: MemberRole) -> CallerRole {
    match role {
        MemberRole::Member => CallerRole::Member,
        MemberRole::ConfigAdmin => CallerRole::ConfigAdmin,
        MemberRole::AgencyAdmin => CallerRole::AgencyAdmin,
        MemberRole::RootPowerUser => CallerRole::RootPowerUser,
        MemberRole::RootAdmin => CallerRole::RootAdmin,
    }
}

/// Refuses granting or touching a role more powerful than the caller's own.
fn check_power(principal: &Principal, role: MemberRole) -> Result<()> {
    if principal.role >= power(role) {
        Ok(())
    } else {
        Err(Error::PermissionDenied(format!(
            "a {} may not grant or change the role {role}",
            principal.role.as_str()
        )))
    }
}

/// Parses a requested role: set, and valid in an organization of `kind`.
fn parse_role(v: &mut Violations, field: &str, value: i32, kind: OrgKind) -> Option<MemberRole> {
    match convert::member_role_from(value) {
        None => {
            v.add(
                field,
                "must be MEMBER, CONFIG_ADMIN, AGENCY_ADMIN, ROOT_POWER_USER or ROOT_ADMIN",
            );
            None
        }
        Some(role) if !role.fits(kind) => {
            v.add(
                field,
                format!("{role} is not a role of a {kind} organization"),
            );
            None
        }
        Some(role) => Some(role),
    }
}

fn org_kind(org: &organizations::Model) -> OrgKind {
    org.kind.parse().unwrap_or(OrgKind::Tenant)
}

fn ttl_micros(ctx: &Ctx) -> i64 {
    i64::try_from(ctx.settings.invitation_ttl.as_micros()).unwrap_or(i64::MAX / 2)
}

/// The refusal for an invitation that is no longer pending, if it is not.
fn not_pending(invitation: &invitations::Model, now: i64) -> Option<Error> {
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

fn member_exists(email: &str) -> Error {
    Error::rejected(
        Code::AlreadyExists,
        "MEMBER_EXISTS",
        "this user is already a member of the organization",
    )
    .with("email", email)
}

/// InviteMember: invites `email` with `role`. A pending invitation for the same email is
/// revoked and replaced (a replaced owner invitation stays an owner invitation while the
/// organization has no owner, so a lost owner token can be re-issued).
///
/// The team size will be limited by the plan's `max_team_members` (members plus pending
/// invitations); that check arrives with the plan catalogue in the subscriptions issue.
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
        let org = lock_org(&tx, &access).await?;
        let existing = members::Entity::find()
            .filter(members::Column::OrganizationId.eq(org.id))
            .filter(members::Column::Email.eq(email.as_str()))
            .one(&*tx)
            .await?;
        if existing.is_some() {
            return Err(member_exists(&email));
        }
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
        let now = ctx.store.now();
        let token = api_key::random_token(TOKEN_PREFIX);
        let id = new_id();
        let row = invitations::ActiveModel {
            id: Set(id),
            organization_id: Set(org.id),
            email: Set(email.clone()),
            name: Set(name.clone()),
            role: Set(role.as_str().to_owned()),
            is_owner: Set(owner),
            token_hash: Set(api_key::hash(&token)),
            status: Set(InvitationStatus::Pending.as_str().to_owned()),
            inviter: Set(principal.actor_id().to_owned()),
            create_time: Set(now),
            expire_time: Set(now.saturating_add(ttl_micros(&ctx))),
            accept_time: Set(None),
        }
        .insert(&*tx)
        .await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "InviteMember",
                target_type: "invitation",
                target_id: ids::encode(IdKind::Invitation, id),
                request_id: audit_request_id(&caller, key.as_ref()),
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

/// Re-reads the organization inside `tx`, locking its row on PostgreSQL so concurrent
/// writers of its members and invitations serialize (SQLite has one writer anyway).
async fn lock_org(tx: &Tx, access: &OrgAccess) -> Result<organizations::Model> {
    organizations::Entity::find_by_id(access.org().id)
        .filter(organizations::Column::DeleteTime.is_null())
        .lock_exclusive()
        .one(&**tx)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                "organization",
                &ids::encode(IdKind::Organization, access.org().id),
            )
        })
}

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
    let org = organizations::Entity::find_by_id(invitation.organization_id)
        .filter(organizations::Column::DeleteTime.is_null())
        .one(&*tx)
        .await?
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
    if invitation.is_owner {
        // One owner per organization: the invitation names the new one.
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
                "invitation_id": ids::encode(IdKind::Invitation, invitation.id),
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
