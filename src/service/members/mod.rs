//! Members and invitations: inviting by email with a hashed, expiring token, accepting
//! (which creates the membership and, for an owner invitation, the owner), listing,
//! role changes and removal. This module holds the rules the use cases share.
//!
//! Member roles are data for the identity provider that mints tokens; a caller can
//! neither grant nor change a role more powerful than its own.

mod accept;
mod invitations;
mod invite;
mod roster;

pub use accept::accept;
pub use invitations::{list_invitations, revoke_invitation};
pub use invite::invite;
pub(crate) use invite::{NewInvitation, check_team_room, issue_invitation};
pub use roster::{list_members, remove, update_role};

use serde_json::json;
use tonic::Code;
use uuid::Uuid;

use crate::{
    auth::{Principal, policy::CallerRole},
    domain::{
        events::types,
        ids::{self, IdKind},
        org::{MemberRole, OrgKind},
    },
    error::{Error, Result, Violations},
    events::outbox,
    grpc::convert,
    storage::{
        Tx,
        entities::{invitations as invitation_rows, organizations},
    },
};

/// Longest member or invitee name.
pub(crate) const MAX_NAME_LEN: usize = 200;

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

fn member_exists(email: &str) -> Error {
    Error::rejected(
        Code::AlreadyExists,
        "MEMBER_EXISTS",
        "this user is already a member of the organization",
    )
    .with("email", email)
}

/// Emits `owner.invited` (an owner invitation) or `member.invited` for a new invitation
/// of `org`; returns the event id, for its email. The token is never in the event.
pub(crate) async fn emit_invited(
    tx: &Tx,
    now: i64,
    org: &organizations::Model,
    invitation: &invitation_rows::Model,
    request_id: &str,
) -> Result<Uuid> {
    let event_type = if invitation.is_owner {
        types::OWNER_INVITED
    } else {
        types::MEMBER_INVITED
    };
    let data = json!({
        "organization_id": ids::encode(IdKind::Organization, org.id),
        "invitation_id": ids::encode(IdKind::Invitation, invitation.id),
        "email": invitation.email,
        "role": invitation.role,
        "owner": invitation.is_owner,
    });
    outbox::emit(tx, now, org, event_type, request_id, data).await
}
