//! Agents: registration, reads, updates, and assignment between organizations with a
//! kept history. A move is a clean cut-over: the old assignment ends and the new one
//! starts at the same instant, so usage is attributed by `occurred_at` (billing issue).
//!
//! Moving an agent clears its custom billing rate: the rate was agreed with the old
//! organization (possibly in another currency), and after the move the new
//! organization's rate applies until its manager sets a custom one.
//!
//! This module holds what the use cases share: loading an agent with authorization,
//! rate validation, capacity checks, row locks and versioned writes.

mod assignments;
mod read;
mod register;
mod update;

pub(crate) use assignments::{MovedBy, move_agent};
pub use assignments::{assign, list_assignments, unassign};
pub use read::{get, list};
pub use register::register;
pub use update::update;

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QuerySelect, sea_query::LockType,
};
use tonic::Code;
use uuid::Uuid;

use crate::{
    auth::{Caller, OrgAccess},
    domain::{
        ids::{self, IdKind, new_id},
        money,
        org::{AgentStatus, OrgStatus},
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::{billing::quotas::effective_limits, subscriptions::limit_reached},
    storage::{
        Tx,
        entities::{agent_assignments, agents, organizations},
    },
};

/// Loads an agent and authorizes the caller on its organization. Callers who may not
/// see every organization get PERMISSION_DENIED for unknown or malformed ids too.
pub async fn authorize_agent(
    ctx: &Ctx,
    caller: &Caller,
    field: &str,
    agent_id: &str,
) -> Result<(agents::Model, OrgAccess)> {
    let operator = caller.is_operator();
    let hidden = |e: Error| if operator { e } else { crate::auth::denied() };
    let id = ids::decode(IdKind::Agent, agent_id)
        .map_err(|e| hidden(Error::invalid(field, e.to_string())))?;
    let agent = agents::Entity::find_by_id(id)
        .one(ctx.store.db())
        .await?
        .ok_or_else(|| hidden(Error::not_found("agent", agent_id)))?;
    let org = organizations::Entity::find_by_id(agent.organization_id)
        .one(ctx.store.db())
        .await?
        .ok_or_else(|| Error::Internal("agent without organization".into()))?;
    let access = caller.authorize_row(org)?;
    Ok((agent, access))
}

fn rate_micros(
    v: &mut Violations,
    field: &str,
    rate: &proto::Money,
    org: &organizations::Model,
) -> Option<i64> {
    let currency = convert::org_currency(org);
    if !rate.currency_code.is_empty() && rate.currency_code != currency.code() {
        v.add(
            format!("{field}.currency_code"),
            format!("must be the organization's currency {currency}"),
        );
        return None;
    }
    v.check(
        &format!("{field}.amount"),
        money::parse_amount(&rate.amount, 2, false),
    )
    .map(money::to_micros)
}

/// Refuses a new agent beyond the organization's effective `max_agents`
/// ([`effective_limits`]: the plan's limit, capped by the organization's own usage
/// limit; the root organization has none) with RESOURCE_EXHAUSTED `PLAN_LIMIT_REACHED`.
///
/// The caller holds the organization's row lock ([`crate::service::orgs::lock_live`]),
/// so concurrent registrations and moves into one organization count one at a time and
/// cannot overrun the limit together.
pub(crate) async fn check_capacity(ctx: &Ctx, tx: &Tx, org: &organizations::Model) -> Result<()> {
    let Some(allowed) = effective_limits(&ctx.settings.billing.catalogue, org).max_agents else {
        return Ok(());
    };
    let current = agents::Entity::find()
        .filter(agents::Column::OrganizationId.eq(org.id))
        .count(&**tx)
        .await?;
    let current = i64::try_from(current).unwrap_or(i64::MAX);
    if current >= allowed {
        return Err(limit_reached(org, "max_agents", current, allowed));
    }
    Ok(())
}

fn initial_status(org: &organizations::Model) -> (AgentStatus, bool) {
    if org.status == OrgStatus::Active.as_str() {
        (AgentStatus::Active, false)
    } else {
        (AgentStatus::Suspended, true)
    }
}

async fn open_assignment(tx: &Tx, agent_id: Uuid, org_id: Uuid, now: i64) -> Result<()> {
    agent_assignments::ActiveModel {
        id: Set(new_id()),
        agent_id: Set(agent_id),
        organization_id: Set(org_id),
        assign_time: Set(now),
        unassign_time: Set(None),
    }
    .insert(&**tx)
    .await?;
    Ok(())
}

async fn save_agent(
    tx: &Tx,
    row: agents::ActiveModel,
    id: Uuid,
    version: i64,
) -> Result<agents::Model> {
    let result = agents::Entity::update_many()
        .set(row)
        .filter(agents::Column::Id.eq(id))
        .filter(agents::Column::Version.eq(version))
        .exec(&**tx)
        .await?;
    if result.rows_affected != 1 {
        return Err(Error::stale_etag());
    }
    agents::Entity::find_by_id(id)
        .one(&**tx)
        .await?
        .ok_or_else(|| Error::not_found("agent", &ids::encode(IdKind::Agent, id)))
}

/// Locks the agent's row for the rest of the transaction (PostgreSQL; SQLite has a single
/// writer), so moves of one agent run one after another.
async fn lock_agent(tx: &Tx, agent: &agents::Model) -> Result<()> {
    agents::Entity::find_by_id(agent.id)
        .lock(LockType::NoKeyUpdate)
        .one(&**tx)
        .await?;
    Ok(())
}

/// Re-reads the (locked) agent inside the transaction so a concurrent move is detected.
async fn reload(tx: &Tx, agent: &agents::Model) -> Result<agents::Model> {
    let current = agents::Entity::find_by_id(agent.id)
        .one(&**tx)
        .await?
        .ok_or_else(|| Error::not_found("agent", &ids::encode(IdKind::Agent, agent.id)))?;
    if current.organization_id != agent.organization_id {
        return Err(Error::rejected(
            Code::Aborted,
            "CONCURRENT_MOVE",
            "the agent was moved concurrently; retry",
        ));
    }
    Ok(current)
}
