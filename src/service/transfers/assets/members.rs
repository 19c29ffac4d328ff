//! MEMBERS: named by user id. A copy adds the membership to the target (same user,
//! email and name; a role the target's kind cannot hold becomes CONFIG_ADMIN; never
//! the owner), a move takes it out of the source. The owner is never moved. The
//! target's `max_team_members` counts members plus pending invitations, as
//! InviteMember does.

use std::str::FromStr;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, sea_query::Expr,
};

use crate::{
    domain::{
        ids::{self, IdKind, new_id},
        org::{InvitationStatus, MemberRole, OrgKind},
    },
    error::{Error, Result},
    proto::TransferMode,
    service::members::check_team_room,
    storage::entities::{invitations, members},
};

use super::apply::{ALREADY_PRESENT, Report, Run, requested};
use super::request::Item;

/// Stable reason of the owner left in place.
const OWNER_NOT_MOVABLE: &str = "OWNER_NOT_MOVABLE";

async fn roster(run: &Run<'_>, org_id: uuid::Uuid) -> Result<Vec<members::Model>> {
    Ok(members::Entity::find()
        .filter(members::Column::OrganizationId.eq(org_id))
        .order_by_asc(members::Column::CreateTime)
        .order_by_asc(members::Column::Id)
        .all(&**run.tx)
        .await?)
}

/// Copies or moves the item's members (every member of the source when no ids; a move
/// then skips the owner).
pub(super) async fn apply(run: &Run<'_>, item: &Item, report: &mut Report) -> Result<()> {
    let rows = roster(run, run.source.id).await?;
    let mut target_roster = roster(run, run.target.id).await?;
    let moving = item.mode == TransferMode::Move;
    for (given, member) in requested(&item.ids, &rows, |n, m| n.given == m.user_id) {
        let Some(member) = member else {
            report.refuse(item, &given, Error::not_found("member", &given))?;
            continue;
        };
        let id = ids::encode(IdKind::Member, member.id);
        if moving && member.is_owner {
            if given.is_empty() {
                report.skipped(item, &id, "", OWNER_NOT_MOVABLE, "the owner is never moved");
            } else {
                let error = Error::precondition(
                    OWNER_NOT_MOVABLE,
                    "the owner is never moved; transfer the ownership first",
                );
                report.refuse(item, &id, error)?;
            }
            continue;
        }
        let present = target_roster
            .iter()
            .find(|t| t.user_id == member.user_id || t.email.eq_ignore_ascii_case(&member.email));
        if let Some(present) = present {
            let present = ids::encode(IdKind::Member, present.id);
            report.skipped(
                item,
                &id,
                &present,
                ALREADY_PRESENT,
                "the user is already a member of the target",
            );
            continue;
        }
        if let Err(error) =
            check_team_room(run.ctx, run.tx, &run.target, &member.email, run.now).await
        {
            report.refuse(item, &id, error)?;
            continue;
        }
        let placed = place(run, member, moving).await?;
        report.done(item, &id, &ids::encode(IdKind::Member, placed.id));
        target_roster.push(placed);
    }
    Ok(())
}

/// The member's role in the target: the same when the target's kind can hold it, else
/// CONFIG_ADMIN (e.g. an AGENCY_ADMIN copied into a tenant).
fn fitted_role(role: &str, target_kind: OrgKind) -> MemberRole {
    match MemberRole::from_str(role) {
        Ok(role) if role.fits(target_kind) => role,
        Ok(_) => MemberRole::ConfigAdmin,
        Err(_) => MemberRole::Member,
    }
}

/// Adds the membership to the target (a copy) or moves the row there, and revokes the
/// target's pending invitations of the same email (an owner invitation stays).
async fn place(run: &Run<'_>, member: &members::Model, moving: bool) -> Result<members::Model> {
    let kind = run.target.kind.parse().unwrap_or(OrgKind::Tenant);
    let role = fitted_role(&member.role, kind);
    invitations::Entity::update_many()
        .col_expr(
            invitations::Column::Status,
            Expr::value(InvitationStatus::Revoked.as_str()),
        )
        .filter(invitations::Column::OrganizationId.eq(run.target.id))
        .filter(invitations::Column::Email.eq(member.email.as_str()))
        .filter(invitations::Column::Status.eq(InvitationStatus::Pending.as_str()))
        .filter(invitations::Column::IsOwner.eq(false))
        .exec(&**run.tx)
        .await?;
    if !moving {
        let row = members::ActiveModel {
            id: Set(new_id()),
            organization_id: Set(run.target.id),
            user_id: Set(member.user_id.clone()),
            email: Set(member.email.clone()),
            name: Set(member.name.clone()),
            role: Set(role.as_str().to_owned()),
            is_owner: Set(false),
            create_time: Set(run.now),
            update_time: Set(run.now),
            version: Set(1),
        };
        return Ok(row.insert(&**run.tx).await?);
    }
    let mut row = member.clone().into_active_model();
    row.organization_id = Set(run.target.id);
    row.role = Set(role.as_str().to_owned());
    row.is_owner = Set(false);
    row.update_time = Set(run.now);
    row.version = Set(member.version + 1);
    let moved = members::Entity::update_many()
        .set(row)
        .filter(members::Column::Id.eq(member.id))
        .filter(members::Column::Version.eq(member.version))
        .exec(&**run.tx)
        .await?;
    if moved.rows_affected != 1 {
        return Err(Error::stale_etag());
    }
    Ok(members::Model {
        organization_id: run.target.id,
        role: role.as_str().to_owned(),
        is_owner: false,
        update_time: run.now,
        version: member.version + 1,
        ..member.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_the_target_cannot_hold_become_config_admin() {
        assert_eq!(
            fitted_role("AGENCY_ADMIN", OrgKind::Tenant),
            MemberRole::ConfigAdmin
        );
        assert_eq!(
            fitted_role("AGENCY_ADMIN", OrgKind::Agency),
            MemberRole::AgencyAdmin
        );
        assert_eq!(
            fitted_role("ROOT_ADMIN", OrgKind::Agency),
            MemberRole::ConfigAdmin
        );
        assert_eq!(fitted_role("MEMBER", OrgKind::Tenant), MemberRole::Member);
    }
}
