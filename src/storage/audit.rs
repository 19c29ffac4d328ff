//! Audit entries, written in the same transaction as the change they describe.

use sea_orm::{ActiveModelTrait, ActiveValue::Set};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    auth::Principal,
    domain::ids::new_id,
    error::Result,
    storage::{Tx, entities::audit_entries},
};

/// What one mutation did.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    /// The organization the change belongs to.
    pub organization_id: Uuid,
    /// The RPC.
    pub action: &'a str,
    /// Type of the target, e.g. `organization`.
    pub target_type: &'a str,
    /// Target id (TypeID).
    pub target_id: String,
    /// Request id: the idempotency key, or the call's trace id.
    pub request_id: &'a str,
    /// Summary of changed fields; never secrets.
    pub summary: Value,
}

/// Writes an audit entry inside `tx`.
pub async fn record(
    tx: &Tx,
    principal: &Principal,
    now: i64,
    entry: AuditRecord<'_>,
) -> Result<()> {
    audit_entries::ActiveModel {
        id: Set(new_id()),
        organization_id: Set(entry.organization_id),
        actor_kind: Set(principal.actor_kind().to_owned()),
        actor_id: Set(principal.actor_id().to_owned()),
        actor_organization_id: Set(principal.org_id()),
        action: Set(entry.action.to_owned()),
        target_type: Set(entry.target_type.to_owned()),
        target_id: Set(entry.target_id),
        request_id: Set(entry.request_id.to_owned()),
        summary: Set(entry.summary.to_string()),
        create_time: Set(now),
    }
    .insert(&**tx)
    .await?;
    Ok(())
}
