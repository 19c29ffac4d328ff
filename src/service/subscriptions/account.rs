//! Account lifecycle: CancelAccount, ReactivateAccount and the scheduled deletion of a
//! cancelled account's data ([`delete_due_accounts`]).
//!
//! Cancelling an account, in one transaction under the organization's row lock (then
//! the subscription's): the organization becomes CANCELLED with the reason, every
//! active agent is suspended and marked as suspended by its organization (exactly as
//! DeactivateOrganization does), the current subscription ends at once without refund
//! (the organization is back on the free plan), and an optional deletion date is kept
//! as its first instant (UTC) in `data_deletion_time`. The auth layer then refuses the
//! organization's API keys and its members' calls (FAILED_PRECONDITION `ORG_INACTIVE`)
//! except reading its own status; operators still reach it.
//!
//! Reactivation (ROOT_ADMIN) makes the organization ACTIVE again, restores the agents
//! its cancellation (or an earlier deactivation) suspended, and drops the scheduled
//! deletion. The ended subscription stays CANCELED: the organization is on the free
//! plan until it subscribes again with CreateSubscription.
//!
//! The deletion itself is run by the renewal cycle job, which calls
//! [`delete_due_accounts`]: every CANCELLED organization whose `data_deletion_time` has
//! passed has its agents returned to the root organization (as UnassignAgent does) and
//! is soft-deleted (as DeleteOrganization does: gone from reads and lists, API keys
//! revoked, financial records kept), audited by a SYSTEM principal.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::{
    auth::{Caller, Principal},
    domain::{
        billing::{date_start, parse_date},
        clock::from_micros,
        events::types,
        ids::{self, IdKind},
        org::{OrgKind, OrgStatus},
    },
    error::{Error, Result, Violations},
    events::outbox,
    grpc::{Ctx, convert},
    proto,
    service::{
        agent_count,
        agents::{MovedBy, move_agent},
        audit, audit_request_id,
        billing::credits::purchase::system_principal,
        commit, idempotency_key,
        orgs::{
            self,
            activation::{reason_of, write_status},
        },
        replayed, settle,
    },
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{agents, organizations},
    },
};

use super::{cycle::SYSTEM_SUBJECT, end, events, lock_current};

/// The first instant (UTC) of `YYYY-MM-DD`, which must not be before today.
fn deletion_time(v: &mut Violations, text: &str, now: i64) -> Option<i64> {
    if text.is_empty() {
        return None;
    }
    let date = v.check("delete_data_on", parse_date(text))?;
    let today = from_micros(now).date_naive();
    if date < today {
        v.add(
            "delete_data_on",
            format!("must be today ({today}) or later"),
        );
        return None;
    }
    Some(date_start(date))
}

fn refuse_root(org: &organizations::Model) -> Result<()> {
    if org.kind == OrgKind::Root.as_str() {
        return Err(Error::precondition(
            "ROOT_ORGANIZATION",
            "the root organization's account cannot be cancelled",
        ));
    }
    Ok(())
}

async fn org_proto(ctx: &Ctx, tx: &Tx, org: &organizations::Model) -> Result<proto::Organization> {
    Ok(convert::organization(
        &ctx.settings.billing.catalogue,
        org,
        agent_count(&**tx, org.id).await?,
    ))
}

/// CancelAccount: cancels the organization's account (see the module documentation).
/// Idempotent by `request_id`; an account already cancelled fails FAILED_PRECONDITION
/// `ACCOUNT_CANCELLED`.
pub async fn cancel_account(
    ctx: Ctx,
    caller: Caller,
    req: proto::CancelAccountRequest,
) -> Result<proto::CancelAccountResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let principal = access.principal().clone();
    let mut v = Violations::new();
    let reason = reason_of(&mut v, &req.reason, false);
    let delete_at = deletion_time(&mut v, &req.delete_data_on, ctx.store.now());
    let key = match idempotency_key(&principal, "CancelAccount", &req.request_id, &req) {
        Ok(key) => key,
        Err(Error::InvalidArgument(bad)) => {
            for field in bad {
                v.add(field.field, field.description);
            }
            None
        }
        Err(other) => return Err(other),
    };
    v.finish()?;
    refuse_root(access.org())?;
    let result = async {
        let tx = ctx.store.write().await?;
        // Lock before looking for an earlier result: a concurrent twin holding the lock
        // has committed its result by the time the lock is ours.
        let org = orgs::lock_live(&tx, access.org()).await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        if org.status == OrgStatus::Cancelled.as_str() {
            return Err(Error::precondition(
                "ACCOUNT_CANCELLED",
                "the account is already cancelled",
            ));
        }
        let now = ctx.store.now();
        let (mut cancelled, suspended) =
            write_status(&tx, &org, OrgStatus::Cancelled, &reason, delete_at, now).await?;
        let request_id = audit_request_id(&caller, key.as_ref());
        let ended = match lock_current(&tx, org.id).await? {
            Some(sub) => {
                let (after, sub) = end(&tx, &cancelled, &sub, &reason, now, now).await?;
                cancelled = after;
                events::changed(&tx, now, &cancelled, &sub, "canceled", request_id).await?;
                Some(ids::encode(IdKind::Subscription, sub.id))
            }
            None => None,
        };
        let data = json!({
            "organization_id": ids::encode(IdKind::Organization, org.id),
            "reason": reason,
            "delete_data_on": req.delete_data_on,
            "suspended_agents": suspended,
            "ended_subscription_id": ended,
        });
        outbox::emit(
            &tx,
            now,
            &cancelled,
            types::ACCOUNT_CANCELED,
            request_id,
            data,
        )
        .await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "CancelAccount",
                target_type: "organization",
                target_id: ids::encode(IdKind::Organization, org.id),
                request_id,
                summary: json!({
                    "status": OrgStatus::Cancelled.as_str(),
                    "previous_status": org.status,
                    "reason": reason,
                    "delete_data_on": req.delete_data_on,
                    "suspended_agents": suspended,
                    "ended_subscription_id": ended,
                }),
            },
        )
        .await?;
        let response = proto::CancelAccountResponse {
            organization: Some(org_proto(&ctx, &tx, &cancelled).await?),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}

/// ReactivateAccount (ROOT_ADMIN): a CANCELLED organization becomes ACTIVE again with
/// the agents its cancellation suspended, and its scheduled data deletion is dropped.
/// The subscription ended by the cancellation stays CANCELED: the organization is on
/// the free plan until it subscribes again. An organization that is not cancelled
/// fails FAILED_PRECONDITION `ACCOUNT_NOT_CANCELLED`.
pub async fn reactivate_account(
    ctx: Ctx,
    caller: Caller,
    req: proto::ReactivateAccountRequest,
) -> Result<proto::ReactivateAccountResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let reason = reason_of(&mut v, &req.reason, false);
    v.finish()?;
    let tx = ctx.store.write().await?;
    let org = orgs::lock_live(&tx, access.org()).await?;
    if org.status != OrgStatus::Cancelled.as_str() {
        return Err(Error::precondition(
            "ACCOUNT_NOT_CANCELLED",
            format!("the account is {}, not cancelled", org.status),
        )
        .with("status", &org.status));
    }
    let now = ctx.store.now();
    let (active, restored) = write_status(&tx, &org, OrgStatus::Active, "", None, now).await?;
    let data = json!({
        "organization_id": ids::encode(IdKind::Organization, org.id),
        "reason": reason,
        "restored_agents": restored,
    });
    outbox::emit(
        &tx,
        now,
        &active,
        types::ACCOUNT_REACTIVATED,
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
            action: "ReactivateAccount",
            target_type: "organization",
            target_id: ids::encode(IdKind::Organization, org.id),
            request_id: &caller.trace_id,
            summary: json!({
                "status": OrgStatus::Active.as_str(),
                "reason": reason,
                "cancellation_reason": org.deactivation_reason,
                "dropped_data_deletion_time": org.data_deletion_time.map(|t| from_micros(t).to_rfc3339()),
                "restored_agents": restored,
            }),
        },
    )
    .await?;
    let organization = org_proto(&ctx, &tx, &active).await?;
    tx.commit().await?;
    Ok(proto::ReactivateAccountResponse {
        organization: Some(organization),
    })
}

/// Deletes the data of every CANCELLED organization whose `data_deletion_time` is at or
/// before `at`, one transaction per organization; returns how many were deleted. Called
/// by the renewal cycle; safe to run concurrently (each organization is re-checked
/// under its row lock). An agency that still has live tenants is skipped (logged) until
/// they are moved or deleted, as DeleteOrganization requires. A failure on one
/// organization is logged and the others go on; the error is returned only when
/// nothing could be deleted. Record times are the clock's now (`at` only selects).
pub async fn delete_due_accounts(ctx: &Ctx, at: i64) -> Result<u32> {
    let due = organizations::Entity::find()
        .filter(organizations::Column::Status.eq(OrgStatus::Cancelled.as_str()))
        .filter(organizations::Column::DataDeletionTime.lte(at))
        .filter(organizations::Column::DeleteTime.is_null())
        .all(ctx.store.db())
        .await?;
    let principal = system_principal(SYSTEM_SUBJECT);
    let mut deleted = 0;
    let mut first_error = None;
    for org in due {
        // One organization's failure (e.g. an agent moved concurrently) must not hold
        // back the others; it is retried on the next run.
        match delete_account(ctx, &principal, org.id, at).await {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(organization = %org.slug, %error, "scheduled data deletion failed");
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) if deleted == 0 => Err(error),
        _ => Ok(deleted),
    }
}

/// Deletes one due account; `false` when it is no longer due or must wait.
async fn delete_account(ctx: &Ctx, principal: &Principal, org_id: Uuid, at: i64) -> Result<bool> {
    let tx = ctx.store.write().await?;
    let Some(org) = orgs::lock_org(&tx, org_id).await? else {
        return Ok(false);
    };
    let due = org.delete_time.is_none()
        && org.status == OrgStatus::Cancelled.as_str()
        && org.data_deletion_time.is_some_and(|t| t <= at);
    if !due {
        return Ok(false);
    }
    let tenants = orgs::live_tenants(&tx, org.id).await?;
    if tenants > 0 {
        tracing::warn!(
            organization = %org.slug,
            tenants,
            "scheduled data deletion waits: the agency still has tenants"
        );
        return Ok(false);
    }
    let now = ctx.store.now();
    let request_id = format!(
        "data-deletion-{}",
        ids::encode(IdKind::Organization, org.id)
    );
    let root = orgs::root_org(&*tx).await?;
    let moved = return_agents_to_root(ctx, &tx, principal, &org, &root, &request_id).await?;
    orgs::soft_delete(&tx, &org, now, &request_id).await?;
    audit(
        &tx,
        ctx,
        principal,
        AuditRecord {
            organization_id: org.id,
            action: "DeleteOrganization",
            target_type: "organization",
            target_id: ids::encode(IdKind::Organization, org.id),
            request_id: &request_id,
            summary: json!({
                "slug": org.slug,
                "soft_delete": true,
                "reason": "scheduled data deletion of a cancelled account",
                "data_deletion_time": org.data_deletion_time.map(|t| from_micros(t).to_rfc3339()),
                "agents_returned_to_root": moved,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Moves every agent of `org` to the root organization as UnassignAgent does (the
/// same move, audited in both organizations with the deletion as the reason).
async fn return_agents_to_root(
    ctx: &Ctx,
    tx: &Tx,
    principal: &Principal,
    org: &organizations::Model,
    root: &organizations::Model,
    request_id: &str,
) -> Result<u64> {
    let rows = agents::Entity::find()
        .filter(agents::Column::OrganizationId.eq(org.id))
        .all(&**tx)
        .await?;
    let by = MovedBy {
        principal,
        action: "UnassignAgent",
        request_id,
        reason: "scheduled data deletion of a cancelled account",
    };
    for agent in &rows {
        move_agent(ctx, tx, &by, org.id, root, agent).await?;
    }
    Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX))
}
