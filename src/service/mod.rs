//! Use cases behind the gRPC adapters: each takes the caller and the request message,
//! validates every field at once, authorizes through [`crate::auth::Caller`], performs
//! its writes in one transaction together with the audit entry and the idempotency
//! record, and returns the response message.

pub mod agents;
pub mod audit_log;
pub mod billing;
pub mod filtering;
pub mod members;
pub mod orgs;
mod paging;
pub mod profile;
pub mod signups;
pub mod subscriptions;
pub mod transfers;
pub mod watch;
pub mod webhooks;

use prost::Message;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter,
    QueryTrait,
};
use uuid::Uuid;

use crate::{
    auth::{Caller, Principal},
    error::{Error, Result},
    grpc::{Ctx, convert},
    storage::{
        Tx,
        audit::{self, AuditRecord},
        entities::agents as agent_rows,
        idempotency::{self, Key},
    },
};

/// The idempotency key of a request, scoped to its principal.
pub fn idempotency_key<M: Message>(
    principal: &Principal,
    method: &'static str,
    request_id: &str,
    request: &M,
) -> Result<Option<Key>> {
    Key::new(principal.idempotency_scope(), method, request_id, request)
}

/// The stored response of an earlier identical request, looked up inside `tx` (after the
/// SQLite writer lock, so serialized retries see each other).
pub async fn replayed<R: Message + Default>(tx: &Tx, key: Option<&Key>) -> Result<Option<R>> {
    match key {
        Some(key) => idempotency::replay(&**tx, key).await,
        None => Ok(None),
    }
}

/// Stores the response under `key` (if any) and commits.
pub async fn commit<R: Message>(ctx: &Ctx, tx: Tx, key: Option<&Key>, response: R) -> Result<R> {
    if let Some(key) = key {
        idempotency::save(&tx, key, ctx.store.now(), &response).await?;
    }
    tx.commit().await?;
    Ok(response)
}

/// Like [`commit`], but stores the response with its secrets removed by `redact`
/// (secrets are shown once and never kept in clear): a retry gets the redacted copy.
pub async fn commit_redacted<R: Message + Clone>(
    ctx: &Ctx,
    tx: Tx,
    key: Option<&Key>,
    response: R,
    redact: impl FnOnce(&mut R),
) -> Result<R> {
    if let Some(key) = key {
        let mut stored = response.clone();
        redact(&mut stored);
        idempotency::save(&tx, key, ctx.store.now(), &stored).await?;
    }
    tx.commit().await?;
    Ok(response)
}

/// Resolves a failed idempotent write: a concurrent twin that committed first wins and
/// its response is returned; any other failure passes through.
pub async fn settle<R: Message + Default>(
    ctx: &Ctx,
    key: Option<&Key>,
    result: Result<R>,
) -> Result<R> {
    match result {
        Ok(response) => Ok(response),
        Err(error) => idempotency::settle(&ctx.store, key, error).await,
    }
}

/// The request id recorded in audit entries: the client's idempotency key, else the
/// call's trace id.
pub fn audit_request_id<'a>(caller: &'a Caller, key: Option<&'a Key>) -> &'a str {
    key.map(Key::request_id).unwrap_or(&caller.trace_id)
}

/// Writes an audit entry.
pub async fn audit(
    tx: &Tx,
    ctx: &Ctx,
    principal: &Principal,
    entry: AuditRecord<'_>,
) -> Result<()> {
    audit::record(tx, principal, ctx.store.now(), entry).await
}

/// Checks a client etag (quoted or bare) against a row version; empty skips the check.
pub fn check_etag(given: &str, version: i64) -> Result<()> {
    if given.is_empty() {
        return Ok(());
    }
    let bare = given.trim_matches('"');
    if bare == version.to_string() || given == convert::etag(version) {
        Ok(())
    } else {
        Err(Error::stale_etag())
    }
}

/// Number of agents currently assigned to an organization.
pub async fn agent_count<C: sea_orm::ConnectionTrait>(db: &C, org_id: Uuid) -> Result<u64> {
    Ok(agent_rows::Entity::find()
        .filter(agent_rows::Column::OrganizationId.eq(org_id))
        .count(db)
        .await?)
}

/// The first `limit` rows of `query` (which must not set a limit itself), as `M`.
///
/// The limit is written into the SQL as a number instead of a bound parameter: SQLite
/// (the bundled 3.51) treats a LIMIT parameter as one the plan depends on, so binding
/// it expires the cached statement and every execution would parse and plan the query
/// again. A page size is a small validated integer, so the few distinct statements
/// stay cached.
pub async fn first_rows<M, Q, C>(db: &C, query: Q, limit: u64) -> Result<Vec<M>>
where
    M: FromQueryResult,
    Q: QueryTrait,
    C: ConnectionTrait,
{
    let mut statement = query.build(db.get_database_backend());
    statement.sql.push_str(&format!(" LIMIT {limit}"));
    Ok(M::find_by_statement(statement).all(db).await?)
}
