//! Row claiming: the organization's and then the subscription's row locked for one
//! transaction, or skipped when another writer holds them (PostgreSQL `SKIP LOCKED`;
//! on SQLite the single writer already serializes, and the lock clauses are not
//! emitted).

use sea_orm::{
    EntityTrait, QuerySelect,
    sea_query::{LockBehavior, LockType},
};
use uuid::Uuid;

use crate::{
    error::Result,
    storage::{
        Tx,
        entities::{organizations, subscriptions},
    },
};

/// A row claimed for this transaction, or why not.
pub(super) enum Claim<T> {
    /// Locked until commit.
    Got(T),
    /// Another writer holds it (PostgreSQL `SKIP LOCKED`).
    Locked,
    /// It no longer exists (or the organization was deleted).
    Gone,
}

/// Locks a live organization row, skipping it when another writer holds it.
pub(super) async fn claim_org(tx: &Tx, id: Uuid) -> Result<Claim<organizations::Model>> {
    let row = organizations::Entity::find_by_id(id)
        .lock_with_behavior(LockType::NoKeyUpdate, LockBehavior::SkipLocked)
        .one(&**tx)
        .await?;
    Ok(match row {
        Some(org) if org.delete_time.is_none() => Claim::Got(org),
        Some(_) => Claim::Gone,
        None => match organizations::Entity::find_by_id(id).one(&**tx).await? {
            Some(org) if org.delete_time.is_none() => Claim::Locked,
            _ => Claim::Gone,
        },
    })
}

/// Locks a subscription row (after its organization's), skipping it when another
/// writer holds it.
pub(super) async fn claim_subscription(tx: &Tx, id: Uuid) -> Result<Claim<subscriptions::Model>> {
    let row = subscriptions::Entity::find_by_id(id)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .one(&**tx)
        .await?;
    Ok(match row {
        Some(sub) => Claim::Got(sub),
        None => match subscriptions::Entity::find_by_id(id).one(&**tx).await? {
            Some(_) => Claim::Locked,
            None => Claim::Gone,
        },
    })
}
