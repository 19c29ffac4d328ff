//! Agents: registration, reads, updates, and assignment between organizations with a
//! kept history. A move is a clean cut-over: the old assignment ends and the new one
//! starts at the same instant, so usage is attributed by `occurred_at` (billing issue).
//!
//! Moving an agent clears its custom billing rate: the rate was agreed with the old
//! organization (possibly in another currency), and after the move the new
//! organization's rate applies until its manager sets a custom one.

use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, EntityTrait, IntoActiveModel, Order, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, LockType},
};
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

use crate::{
    auth::{Caller, OrgAccess},
    domain::{
        filter::{self, Op},
        ids::{self, IdKind, new_id},
        money,
        org::{AgentStatus, OrgStatus},
        paging, text,
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert},
    proto,
    service::{
        audit, audit_request_id, check_etag, commit, idempotency_key,
        orgs::{lock_org, root_org},
        replayed, settle,
    },
    storage::{
        Tx,
        audit::AuditRecord,
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

/// Refuses a new agent beyond the organization's `max_agents` (0 = no limit here; plan
/// limits arrive with subscriptions). The root organization has no limit.
///
/// The caller holds the organization's row lock ([`lock_live_org`]), so concurrent
/// registrations and moves into one organization count one at a time and cannot
/// overrun the limit together.
async fn check_capacity(tx: &Tx, org: &organizations::Model) -> Result<()> {
    if org.max_agents <= 0 || org.kind == "ROOT" {
        return Ok(());
    }
    let current = agents::Entity::find()
        .filter(agents::Column::OrganizationId.eq(org.id))
        .count(&**tx)
        .await?;
    if current >= org.max_agents as u64 {
        return Err(Error::rejected(
            Code::ResourceExhausted,
            "PLAN_LIMIT_REACHED",
            format!(
                "the organization already has {current} of {} agents",
                org.max_agents
            ),
        )
        .with("current", current)
        .with("limit", org.max_agents));
    }
    Ok(())
}

/// Locks a live organization's row until commit and returns it as it is now (its status
/// and limits may have changed since authorization).
async fn lock_live_org(tx: &Tx, org: &organizations::Model) -> Result<organizations::Model> {
    lock_org(tx, org.id)
        .await?
        .filter(|o| o.delete_time.is_none())
        .ok_or_else(|| Error::not_found("organization", &ids::encode(IdKind::Organization, org.id)))
}

fn initial_status(org: &organizations::Model) -> (AgentStatus, bool) {
    if org.status == OrgStatus::Active.as_str() {
        (AgentStatus::Active, false)
    } else {
        (AgentStatus::Suspended, true)
    }
}

/// RegisterAgent.
pub async fn register(
    ctx: Ctx,
    caller: Caller,
    req: proto::RegisterAgentRequest,
) -> Result<proto::RegisterAgentResponse> {
    let principal = caller.principal()?.clone();
    let access = if req.organization_id.is_empty() {
        caller.authorize_row(root_org(ctx.store.db()).await?)?
    } else {
        caller
            .authorize(&ctx.store, "organization_id", &req.organization_id)
            .await?
    };
    let agent_in = req.agent.clone().unwrap_or_default();
    let mut v = Violations::new();
    let name = v.check("agent.name", text::name(&agent_in.name, 100));
    let rate = agent_in
        .billing_rate
        .as_ref()
        .and_then(|r| rate_micros(&mut v, "agent.billing_rate", r, access.org()));
    v.finish()?;
    if agent_in.billing_rate.is_some() && !access.manages() {
        return Err(Error::PermissionDenied(
            "a custom billing rate is set by the organization's agency or an operator".into(),
        ));
    }
    let name = name.unwrap_or_default();
    let key = idempotency_key(&principal, "RegisterAgent", &req.request_id, &req)?;
    let result = async {
        let tx = ctx.store.write().await?;
        // Lock before looking for an earlier result: a concurrent twin holding the lock
        // has committed its result by the time the lock is ours.
        let org = &lock_live_org(&tx, access.org()).await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        check_capacity(&tx, org).await?;
        let now = ctx.store.now();
        let id = new_id();
        let (status, by_org) = initial_status(org);
        let row = agents::ActiveModel {
            id: Set(id),
            organization_id: Set(org.id),
            name: Set(name.clone()),
            status: Set(status.as_str().to_owned()),
            suspended_by_org: Set(by_org),
            billing_rate_micros: Set(rate),
            create_time: Set(now),
            update_time: Set(now),
            version: Set(1),
        }
        .insert(&*tx)
        .await?;
        open_assignment(&tx, id, org.id, now).await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "RegisterAgent",
                target_type: "agent",
                target_id: ids::encode(IdKind::Agent, id),
                request_id: audit_request_id(&caller, key.as_ref()),
                summary: json!({ "name": name, "billing_rate_micros": rate }),
            },
        )
        .await?;
        let response = proto::RegisterAgentResponse {
            agent: Some(convert::agent(&row, org)),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
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

/// GetAgent.
pub async fn get(
    ctx: Ctx,
    caller: Caller,
    req: proto::GetAgentRequest,
) -> Result<proto::GetAgentResponse> {
    let (agent, access) = authorize_agent(&ctx, &caller, "agent_id", &req.agent_id).await?;
    Ok(proto::GetAgentResponse {
        agent: Some(convert::agent(&agent, access.org())),
    })
}

const AGENT_FILTER: &[(&str, &[Op])] = &[("status", &[Op::Eq])];

/// ListAgents.
pub async fn list(
    ctx: Ctx,
    caller: Caller,
    req: proto::ListAgentsRequest,
) -> Result<proto::ListAgentsResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let mut v = Violations::new();
    let size = v
        .check("page_size", paging::page_size(req.page_size))
        .unwrap_or(paging::DEFAULT_PAGE_SIZE);
    let terms = v
        .check("filter", filter::parse(&req.filter, AGENT_FILTER))
        .unwrap_or_default();
    let fingerprint = paging::fingerprint(&[&req.organization_id, &req.filter]);
    let cursor = v
        .check("page_token", paging::decode(&req.page_token, &fingerprint))
        .flatten();
    let mut query =
        agents::Entity::find().filter(agents::Column::OrganizationId.eq(access.org().id));
    for term in &terms {
        match term.value.parse::<AgentStatus>() {
            Ok(status) => query = query.filter(agents::Column::Status.eq(status.as_str())),
            Err(_) => v.add("filter", "status must be ACTIVE or SUSPENDED"),
        }
    }
    if let Some(cursor) = &cursor {
        match Uuid::parse_str(&cursor.id) {
            Ok(last) => query = query.filter(agents::Column::Id.gt(last)),
            Err(_) => v.add("page_token", "is not a page token issued by this service"),
        }
    }
    v.finish()?;
    let mut rows = query
        .order_by(agents::Column::Id, Order::Asc)
        .limit(size + 1)
        .all(ctx.store.db())
        .await?;
    let more = rows.len() as u64 > size;
    rows.truncate(size as usize);
    let next_page_token = match rows.last() {
        Some(last) if more => paging::encode(&paging::Cursor {
            q: fingerprint,
            k: None,
            id: last.id.to_string(),
        }),
        _ => String::new(),
    };
    Ok(proto::ListAgentsResponse {
        agents: rows
            .iter()
            .map(|a| convert::agent(a, access.org()))
            .collect(),
        next_page_token,
    })
}

/// UpdateAgent: name (admins) and custom billing rate (managers; unset clears it).
pub async fn update(
    ctx: Ctx,
    caller: Caller,
    req: proto::UpdateAgentRequest,
) -> Result<proto::UpdateAgentResponse> {
    let agent_in = req.agent.unwrap_or_default();
    let (agent, access) = authorize_agent(&ctx, &caller, "agent.id", &agent_in.id).await?;
    let paths: Vec<String> = req.update_mask.map(|m| m.paths).unwrap_or_default();
    let mut v = Violations::new();
    if paths.is_empty() {
        v.add("update_mask", "must name at least one field to update");
    }
    let mut row = agent.clone().into_active_model();
    let mut changed = serde_json::Map::new();
    for path in &paths {
        match path.as_str() {
            "name" => {
                if let Some(name) = v.check("agent.name", text::name(&agent_in.name, 100)) {
                    changed.insert("name".into(), json!(name));
                    row.name = Set(name);
                }
            }
            "billing_rate" => {
                let rate = match &agent_in.billing_rate {
                    Some(r) => rate_micros(&mut v, "agent.billing_rate", r, access.org()),
                    None => None,
                };
                changed.insert("billing_rate_micros".into(), json!(rate));
                row.billing_rate_micros = Set(rate);
            }
            other => v.add(
                "update_mask",
                format!("{other:?} cannot be updated; updatable: name, billing_rate"),
            ),
        }
    }
    v.finish()?;
    if paths.iter().any(|p| p == "billing_rate") && !access.manages() {
        return Err(Error::PermissionDenied(
            "a custom billing rate is set by the organization's agency or an operator".into(),
        ));
    }
    let now = ctx.store.now();
    let tx = ctx.store.write().await?;
    // The etag is checked against the row as it is under the lock; without an etag the
    // update applies on top of concurrent updates. A concurrent move aborts it, since
    // the caller was authorized on the old organization.
    lock_agent(&tx, &agent).await?;
    let locked = reload(&tx, &agent).await?;
    check_etag(&agent_in.etag, locked.version)?;
    row.update_time = Set(now);
    row.version = Set(locked.version + 1);
    let updated = save_agent(&tx, row, agent.id, locked.version).await?;
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: agent.organization_id,
            action: "UpdateAgent",
            target_type: "agent",
            target_id: ids::encode(IdKind::Agent, agent.id),
            request_id: &caller.trace_id,
            summary: serde_json::Value::Object(changed),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::UpdateAgentResponse {
        agent: Some(convert::agent(&updated, access.org())),
    })
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

/// Moves an agent to `target` inside `tx`: ends the current assignment, opens the new
/// one, clears the custom rate, fits the agent's status to the target, and audits the
/// move in both organizations. Returns the agent and the target as it is now.
async fn move_agent(
    ctx: &Ctx,
    tx: &Tx,
    source: &OrgAccess,
    target: &organizations::Model,
    agent: &agents::Model,
    action: &'static str,
    request_id: &str,
) -> Result<(agents::Model, organizations::Model)> {
    // The root organization is always active and unlimited: no lock needed.
    let target = if target.kind == "ROOT" {
        target.clone()
    } else {
        lock_live_org(tx, target).await?
    };
    let target = &target;
    check_capacity(tx, target).await?;
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
    let from = ids::encode(IdKind::Organization, source.org().id);
    let to = ids::encode(IdKind::Organization, target.id);
    for org_id in [source.org().id, target.id] {
        audit(
            tx,
            ctx,
            source.principal(),
            AuditRecord {
                organization_id: org_id,
                action,
                target_type: "agent",
                target_id: ids::encode(IdKind::Agent, agent.id),
                request_id,
                summary: json!({ "from": from, "to": to, "status": status.as_str() }),
            },
        )
        .await?;
    }
    Ok((moved, target.clone()))
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
    let result = async {
        let tx = ctx.store.write().await?;
        // Lock before looking for an earlier result: a concurrent twin holding the lock
        // has committed its result by the time the lock is ours.
        lock_agent(&tx, &agent).await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let agent = reload(&tx, &agent).await?;
        let (moved, target_now) = if agent.organization_id == target.org().id {
            (agent, target.org().clone())
        } else {
            let request_id = audit_request_id(&caller, key.as_ref()).to_owned();
            move_agent(
                &ctx,
                &tx,
                &source,
                target.org(),
                &agent,
                "AssignAgent",
                &request_id,
            )
            .await?
        };
        let response = proto::AssignAgentResponse {
            agent: Some(convert::agent(&moved, &target_now)),
            previous_organization_id: previous.clone(),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
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
    let result = async {
        let tx = ctx.store.write().await?;
        // Lock before looking for an earlier result: a concurrent twin holding the lock
        // has committed its result by the time the lock is ours.
        lock_agent(&tx, &agent).await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        let agent = reload(&tx, &agent).await?;
        let moved = if agent.organization_id == root.id {
            agent
        } else {
            let request_id = audit_request_id(&caller, key.as_ref()).to_owned();
            move_agent(
                &ctx,
                &tx,
                &source,
                &root,
                &agent,
                "UnassignAgent",
                &request_id,
            )
            .await?
            .0
        };
        let response = proto::UnassignAgentResponse {
            agent: Some(convert::agent(&moved, &root)),
            previous_organization_id: previous.clone(),
        };
        commit(&ctx, tx, key.as_ref(), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
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
