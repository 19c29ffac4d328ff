//! GetAgent and ListAgents.

use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::{
    auth::Caller,
    domain::{
        filter::{self, Op},
        org::AgentStatus,
        paging,
    },
    error::{Result, Violations},
    grpc::{Ctx, convert},
    proto,
    storage::entities::agents,
};

use super::authorize_agent;

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
