//! RegisterAgent: a new agent in an organization (the root when none is given), within
//! the organization's agent limit.

use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use serde_json::json;

use crate::{
    auth::Caller,
    domain::{
        events::types,
        ids::{self, IdKind, new_id},
        text,
    },
    error::{Error, Result, Violations},
    events::outbox,
    grpc::{Ctx, convert},
    proto,
    service::{audit, audit_request_id, commit, idempotency_key, orgs::root_org, replayed, settle},
    storage::{audit::AuditRecord, entities::agents},
};

use crate::service::orgs::lock_live;

use super::{check_capacity, initial_status, open_assignment, rate_micros};

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
        let org = &lock_live(&tx, access.org()).await?;
        if let Some(done) = replayed(&tx, key.as_ref()).await? {
            return Ok(done);
        }
        check_capacity(&ctx, &tx, org).await?;
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
        let request_id = audit_request_id(&caller, key.as_ref());
        let data = json!({
            "agent_id": ids::encode(IdKind::Agent, id),
            "organization_id": ids::encode(IdKind::Organization, org.id),
            "name": name,
            "status": status.as_str(),
        });
        outbox::emit(&tx, now, org, types::AGENT_REGISTERED, request_id, data).await?;
        audit(
            &tx,
            &ctx,
            &principal,
            AuditRecord {
                organization_id: org.id,
                action: "RegisterAgent",
                target_type: "agent",
                target_id: ids::encode(IdKind::Agent, id),
                request_id,
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
