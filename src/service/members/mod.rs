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
pub use roster::{list_members, remove, update_role};

use tonic::Code;

use crate::{
    auth::{Principal, policy::CallerRole},
    domain::org::{MemberRole, OrgKind},
    error::{Error, Result, Violations},
    grpc::convert,
    storage::entities::organizations,
};

/// Longest member or invitee name.
const MAX_NAME_LEN: usize = 200;

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
