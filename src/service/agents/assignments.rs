//! Assignment: AssignAgent and UnassignAgent move an agent between organizations with a
//! clean cut-over; ListAgentAssignments shows the kept history.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, Order, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};
use serde_json::json;

use crate::{
    auth::{Caller, OrgAccess, Principal},
    domain::{
        events::types,
        ids::{self, IdKind},
        org::AgentStatus,
    },
    error::{Error, Result},
    events::outbox,
    grpc::{Ctx, convert},
    proto,
    service::{audit, audit_request_id, commit, idempotency_key, orgs::root_org, replayed, settle},
    storage::{
        Tx,
        audit::AuditRecord,
        entities::{agent_assignments, agents, organizations},
        idempotency::Key,
    },
};

use crate::service::orgs::lock_live;

use super::{
    authorize_agent, check_capacity, initial_status, lock_agent, open_assignment, reload,
    save_agent,
};

/// Who moves an agent, and why, for the audit entries of a move.
pub(crate) struct MovedBy<'a> {
    /// The caller (a SYSTEM principal for jobs).
    pub principal: &'a Principal,
    /// Audit action, e.g. `AssignAgent`.
    pub action: &'static str,
    /// Audit request id.
    pub request_id: &'a str,
    /// Why, when the move is a consequence of something else (empty otherwise).
    pub reason: &'a str,
}

/// Moves an agent (read under its lock, in organization `source_id`) to `target` inside
/// `tx`: ends the current assignment, opens the new one, clears the custom rate, fits
/// the agent's status to the target (a manual suspension stays), and audits the move in
/// both organizations (events: `agent.moved` for the source, `agent.assigned` for the
/// target). Returns the agent and the target as it is now.
pub(crate) async fn move_agent(
    ctx: &Ctx,
    tx: &Tx,
    by: &MovedBy<'_>,
    source_id: uuid::Uuid,
    target: &organizations::Model,
    agent: &agents::Model,
) -> Result<(agents::Model, organizations::Model)> {
    // The root organization is always active and unlimited: no lock needed.
    let target = if target.kind == "ROOT" {
        target.clone()
    } else {
        lock_live(tx, target).await?
    };
    let target = &target;
    check_capacity(ctx, tx, target).await?;
    let now = ctx.store.now();
    agent_assignments::Entity::update_many()
        .col_expr(agent_assignments::Column::UnassignTime, Expr::value(now))
        .filter(agent_assignments::Column::AgentId.eq(agent.id))
        .filter(agent_assignments::Column::UnassignTime.is_null())
        .exec(&**tx)
        .await?;
    open_assignment(tx, agent.id, target.id, now).await?;
    let manual_suspension =
        agent.status == AgentStatus::Suspended.as_str() && !agent.suspended_by_org;
    let (status, by_org) = if manual_suspension {
        (AgentStatus::Suspended, false)
    } else {
        initial_status(target)
    };
    let mut row = agent.clone().into_active_model();
    row.organization_id = Set(target.id);
    row.status = Set(status.as_str().to_owned());
    row.suspended_by_org = Set(by_org);
    row.billing_rate_micros = Set(None);
    row.update_time = Set(now);
    row.version = Set(agent.version + 1);
    let moved = save_agent(tx, row, agent.id, agent.version).await?;
    let from = ids::encode(IdKind::Organization, source_id);
    let to = ids::encode(IdKind::Organization, target.id);
    let mut summary = json!({ "from": from, "to": to, "status": status.as_str() });
    if !by.reason.is_empty() {
        summary["reason"] = json!(by.reason);
    }
    let source = organizations::Entity::find_by_id(source_id)
        .one(&**tx)
        .await?
        .ok_or_else(|| Error::not_found("organization", &from))?;
    let mut data = summary.clone();
    data["agent_id"] = json!(ids::encode(IdKind::Agent, agent.id));
    data["name"] = json!(agent.name);
    for (org, event_type) in [
        (&source, types::AGENT_MOVED),
        (target, types::AGENT_ASSIGNED),
    ] {
        data["organization_id"] = json!(ids::encode(IdKind::Organization, org.id));
        outbox::emit(tx, now, org, event_type, by.request_id, data.clone()).await?;
    }
    for org_id in [source_id, target.id] {
        audit(
            tx,
            ctx,
            by.principal,
            AuditRecord {
                organization_id: org_id,
                action: by.action,
                target_type: "agent",
                target_id: ids::encode(IdKind::Agent, agent.id),
                request_id: by.request_id,
                summary: summary.clone(),
            },
        )
        .await?;
    }
    Ok((moved, target.clone()))
}

/// What one assignment call moves: the agent, from where, to where, as which RPC.
struct Relocation<'a> {
    ctx: &'a Ctx,
    caller: &'a Caller,
    key: Option<&'a Key>,
    agent: agents::Model,
    source: OrgAccess,
    target: organizations::Model,
    action: &'static str,
}

impl Relocation<'_> {
    /// Runs the move idempotently: locks the agent, replays an earlier identical request,
    /// moves unless the agent is already in the target, and commits the response built
    /// by `respond` from the agent and its organization as they end up.
    async fn run<R: prost::Message + Default>(
        self,
        respond: impl FnOnce(&agents::Model, &organizations::Model) -> R,
    ) -> Result<R> {
        let Relocation {
            ctx,
            caller,
            key,
            agent,
            source,
            target,
            action,
        } = self;
        let result = async {
            let tx = ctx.store.write().await?;
            // The target organization first, then the agent: the order asset transfers
            // take them in (organizations, then their agents), so the two cannot
            // deadlock on PostgreSQL.
            if target.kind != "ROOT" {
                lock_live(&tx, &target).await?;
            }
            // Lock before looking for an earlier result: a concurrent twin holding the
            // lock has committed its result by the time the lock is ours.
            lock_agent(&tx, &agent).await?;
            if let Some(done) = replayed(&tx, key).await? {
                return Ok(done);
            }
            let agent = reload(&tx, &agent).await?;
            let (moved, target_now) = if agent.organization_id == target.id {
                (agent, target)
            } else {
                let by = MovedBy {
                    principal: source.principal(),
                    action,
                    request_id: audit_request_id(caller, key),
                    reason: "",
                };
                move_agent(ctx, &tx, &by, source.org().id, &target, &agent).await?
            };
            let response = respond(&moved, &target_now);
            commit(ctx, tx, key, response).await
        }
        .await;
        settle(ctx, key, result).await
    }
}

/// AssignAgent: moves the agent into `organization_id`; the caller needs access to both
/// the agent's current organization and the target.
pub async fn assign(
    ctx: Ctx,
    caller: Caller,
    req: proto::AssignAgentRequest,
) -> Result<proto::AssignAgentResponse> {
    let principal = caller.principal()?.clone();
    let (agent, source) = authorize_agent(&ctx, &caller, "agent_id", &req.agent_id).await?;
    let target = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let key = idempotency_key(&principal, "AssignAgent", &req.request_id, &req)?;
    let previous = ids::encode(IdKind::Organization, source.org().id);
    Relocation {
        ctx: &ctx,
        caller: &caller,
        key: key.as_ref(),
        agent,
        source,
        target: target.org().clone(),
        action: "AssignAgent",
    }
    .run(|moved, org| proto::AssignAgentResponse {
        agent: Some(convert::agent(moved, org)),
        previous_organization_id: previous,
    })
    .await
}

/// UnassignAgent: returns the agent to the root organization.
pub async fn unassign(
    ctx: Ctx,
    caller: Caller,
    req: proto::UnassignAgentRequest,
) -> Result<proto::UnassignAgentResponse> {
    let principal = caller.principal()?.clone();
    let (agent, source) = authorize_agent(&ctx, &caller, "agent_id", &req.agent_id).await?;
    let root = root_org(ctx.store.db()).await?;
    let key = idempotency_key(&principal, "UnassignAgent", &req.request_id, &req)?;
    let previous = ids::encode(IdKind::Organization, source.org().id);
    Relocation {
        ctx: &ctx,
        caller: &caller,
        key: key.as_ref(),
        agent,
        source,
        target: root,
        action: "UnassignAgent",
    }
    .run(|moved, org| proto::UnassignAgentResponse {
        agent: Some(convert::agent(moved, org)),
        previous_organization_id: previous,
    })
    .await
}

/// ListAgentAssignments: newest first.
pub async fn list_assignments(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListAgentAssignmentsRequest,
) -> Result<proto::ListAgentAssignmentsResponse> {
    let (agent, _access) = authorize_agent(&ctx, &caller, "agent_id", &req.agent_id).await?;
    let rows = agent_assignments::Entity::find()
        .filter(agent_assignments::Column::AgentId.eq(agent.id))
        .order_by(agent_assignments::Column::AssignTime, Order::Desc)
        .order_by(agent_assignments::Column::Id, Order::Desc)
        .limit(500)
        .all(ctx.store.db())
        .await?;
    Ok(proto::ListAgentAssignmentsResponse {
        assignments: rows.iter().map(convert::assignment).collect(),
    })
}
