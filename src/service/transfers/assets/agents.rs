//! AGENTS: moved one by one exactly as AssignAgent moves them (history kept, clean
//! billing cut-over, custom rate cleared), each checked against the target's
//! `max_agents`, so the total cannot pass it. Copying an agent is not supported.

use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::LockType,
};

use crate::{
    domain::ids::{self, IdKind},
    error::{Error, Result},
    proto::TransferMode,
    service::agents::{MovedBy, move_agent},
    storage::entities::agents,
};

use super::{
    apply::{Report, Run, mode_not_supported, requested},
    request::Item,
};

/// Moves the item's agents (every agent of the source when no ids are given).
pub(super) async fn apply(run: &Run<'_>, item: &Item, report: &mut Report) -> Result<()> {
    if item.mode != TransferMode::Move {
        return report.refuse(item, "", mode_not_supported(item));
    }
    let mut query = agents::Entity::find()
        .filter(agents::Column::OrganizationId.eq(run.source.id))
        .order_by_asc(agents::Column::Id);
    if !item.ids.is_empty() {
        query = query.filter(agents::Column::Id.is_in(item.ids.iter().filter_map(|n| n.uuid)));
    }
    // Locked so the versions read here are the ones the moves write over.
    let rows = query.lock(LockType::NoKeyUpdate).all(&**run.tx).await?;
    let by = MovedBy {
        principal: run.principal,
        action: run.action,
        request_id: run.request_id,
        reason: run.reason,
    };
    for (given, agent) in requested(&item.ids, &rows, |n, a| n.uuid == Some(a.id)) {
        let Some(agent) = agent else {
            let error = Error::not_found("agent", &given).with(
                "organization_id",
                ids::encode(IdKind::Organization, run.source.id),
            );
            report.refuse(item, &given, error)?;
            continue;
        };
        let id = ids::encode(IdKind::Agent, agent.id);
        match move_agent(run.ctx, run.tx, &by, run.source.id, &run.target, agent).await {
            Ok(_) => report.done(item, &id, &id),
            Err(error) => report.refuse(item, &id, error)?,
        }
    }
    Ok(())
}
