//! GetAgent and ListAgents.

use crate::service::paging::Page;
use sea_orm::{ColumnTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect};

use crate::{
    auth::Caller,
    domain::{
        filter::{self, Op},
        org::AgentStatus,
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
    let terms = v
        .check("filter", filter::parse(&req.filter, AGENT_FILTER))
        .unwrap_or_default();
    let page = Page::parse(
        &mut v,
        req.page_size,
        &req.page_token,
        &[&access.org().id.to_string(), "agents", &req.filter],
    );
    let mut query =
        agents::Entity::find().filter(agents::Column::OrganizationId.eq(access.org().id));
    for term in &terms {
        match term.value.parse::<AgentStatus>() {
            Ok(status) => query = query.filter(agents::Column::Status.eq(status.as_str())),
            Err(_) => v.add("filter", "status must be ACTIVE or SUSPENDED"),
        }
    }
    v.finish()?;
    if let Some(after) = page.after {
        query = query.filter(agents::Column::Id.gt(after));
    }
    let mut rows = query
        .order_by(agents::Column::Id, Order::Asc)
        .limit(page.limit())
        .all(ctx.store.db())
        .await?;
    let next_page_token = page.finish(&mut rows, |a| a.id);
    Ok(proto::ListAgentsResponse {
        agents: rows
            .iter()
            .map(|a| convert::agent(a, access.org()))
            .collect(),
        next_page_token,
    })
}
