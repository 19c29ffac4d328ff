//! `request_id` idempotency: the first result of a request is stored with a hash of its
//! arguments in the same transaction as its effects; a retry with the same id and
//! arguments gets that result back, different arguments get INVALID_ARGUMENT.
//! Records are kept for at least 24 hours (purged after [`RETENTION_MICROS`]).

use prost::Message;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter,
};
use sha2::{Digest, Sha256};

use crate::{
    domain::ids::new_id,
    error::{Error, Result},
    storage::{Store, Tx, entities::idempotency_records},
};

/// How long records are kept: 48 hours.
pub const RETENTION_MICROS: i64 = 48 * 3600 * 1_000_000;

/// Longest accepted request id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The identity of one idempotent request.
#[derive(Debug, Clone)]
pub struct Key {
    scope: String,
    request_id: String,
    method: &'static str,
    hash: String,
}

impl Key {
    /// The key of `request` sent with `request_id` by a principal with `scope`; `None`
    /// when the request carries no request id. Fails on an over-long id.
    pub fn new<M: Message>(
        scope: String,
        method: &'static str,
        request_id: &str,
        request: &M,
    ) -> Result<Option<Key>> {
        if request_id.is_empty() {
            return Ok(None);
        }
        if request_id.len() > MAX_REQUEST_ID_LEN || request_id.chars().any(char::is_control) {
            return Err(Error::invalid(
                "request_id",
                format!("must be at most {MAX_REQUEST_ID_LEN} printable characters"),
            ));
        }
        Ok(Some(Key {
            scope,
            request_id: request_id.to_owned(),
            method,
            hash: hex::encode(Sha256::digest(request.encode_to_vec())),
        }))
    }

    /// The client's request id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }
}

/// The stored response for `key`, if the request was already served.
pub async fn replay<R: Message + Default, C: ConnectionTrait>(
    db: &C,
    key: &Key,
) -> Result<Option<R>> {
    let found = idempotency_records::Entity::find()
        .filter(idempotency_records::Column::Scope.eq(key.scope.as_str()))
        .filter(idempotency_records::Column::RequestId.eq(key.request_id.as_str()))
        .one(db)
        .await?;
    let Some(record) = found else {
        return Ok(None);
    };
    if record.method != key.method || record.request_hash != key.hash {
        return Err(Error::invalid(
            "request_id",
            "was already used with different arguments",
        ));
    }
    R::decode(record.response.as_slice())
        .map(Some)
        .map_err(|e| Error::Internal(format!("stored response does not decode: {e}")))
}

/// Stores the response of `key` inside `tx`.
pub async fn save<R: Message>(tx: &Tx, key: &Key, now: i64, response: &R) -> Result<()> {
    idempotency_records::ActiveModel {
        id: Set(new_id()),
        scope: Set(key.scope.clone()),
        request_id: Set(key.request_id.clone()),
        method: Set(key.method.to_owned()),
        request_hash: Set(key.hash.clone()),
        response: Set(response.encode_to_vec()),
        create_time: Set(now),
    }
    .insert(&**tx)
    .await?;
    Ok(())
}

/// After a failed commit: when a concurrent request with the same key won the race,
/// returns its stored response; otherwise gives the original error back.
pub async fn settle<R: Message + Default>(
    store: &Store,
    key: Option<&Key>,
    error: Error,
) -> Result<R> {
    if let Some(key) = key
        && error.is_unique_violation()
        && let Some(stored) = replay::<R, _>(store.db(), key).await?
    {
        return Ok(stored);
    }
    Err(error)
}

/// Deletes records older than the retention period (through the write path, so on
/// SQLite it takes the single-writer lock like every other write).
pub async fn purge(store: &Store) -> Result<u64> {
    let cutoff = store.now() - RETENTION_MICROS;
    let tx = store.write().await?;
    let result = idempotency_records::Entity::delete_many()
        .filter(idempotency_records::Column::CreateTime.lt(cutoff))
        .exec(&*tx)
        .await?;
    tx.commit().await?;
    Ok(result.rows_affected)
}
