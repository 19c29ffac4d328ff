//! RegenerateApiKey: a new organization API key replaces the previous one at once.

use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr,
};
use serde_json::json;

use crate::{
    auth::{Caller, api_key},
    domain::ids::{self, IdKind, new_id},
    error::Result,
    grpc::{Ctx, convert},
    proto,
    service::audit,
    storage::{audit::AuditRecord, entities::api_keys},
};

/// RegenerateApiKey: issues a new key and revokes the previous one in the same
/// transaction, so the old key stops working at once.
pub async fn regenerate_api_key(
    ctx: Ctx,
    caller: Caller,
    req: proto::RegenerateApiKeyRequest,
) -> Result<proto::RegenerateApiKeyResponse> {
    let access = caller
        .authorize(&ctx.store, "organization_id", &req.organization_id)
        .await?;
    let org_id = access.org().id;
    let key = api_key::generate();
    let now = ctx.store.now();
    let tx = ctx.store.write().await?;
    let revoked = api_keys::Entity::update_many()
        .col_expr(api_keys::Column::RevokeTime, Expr::value(now))
        .filter(api_keys::Column::OrganizationId.eq(org_id))
        .filter(api_keys::Column::RevokeTime.is_null())
        .exec(&*tx)
        .await?
        .rows_affected;
    let id = new_id();
    api_keys::ActiveModel {
        id: Set(id),
        organization_id: Set(org_id),
        key_hash: Set(key.hash.clone()),
        prefix: Set(key.prefix.clone()),
        create_time: Set(now),
        revoke_time: Set(None),
    }
    .insert(&*tx)
    .await?;
    audit(
        &tx,
        &ctx,
        access.principal(),
        AuditRecord {
            organization_id: org_id,
            action: "RegenerateApiKey",
            target_type: "api_key",
            target_id: ids::encode(IdKind::ApiKey, id),
            request_id: &caller.trace_id,
            summary: json!({ "prefix": key.prefix, "revoked_keys": revoked }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(proto::RegenerateApiKeyResponse {
        api_key: key.secret,
        api_key_prefix: key.prefix,
        create_time: convert::timestamp(now),
    })
}
