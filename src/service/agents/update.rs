//! UpdateAgent: name and custom billing rate, checked against the locked row's etag.

use sea_orm::{ActiveValue::Set, IntoActiveModel};
use serde_json::json;

use crate::{
    auth::Caller,
    domain::{
        ids::{self, IdKind},
        text,
    },
    error::{Error, Result, Violations, quoted},
    grpc::{Ctx, convert},
    proto,
    service::{audit, check_etag},
    storage::audit::AuditRecord,
};

use super::{authorize_agent, lock_agent, rate_micros, reload, save_agent};

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
                format!(
                    "{} cannot be updated; updatable: name, billing_rate",
                    quoted(other)
                ),
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
