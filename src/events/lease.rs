//! What webhook deliveries and emails share: rows `PENDING` until handled, each claimed
//! by one dispatcher at a time through a lease taken by a conditional update, retried
//! with exponential backoff, dead-lettered after the last attempt.
//!
//! A round reads the due ids ([`due_ids`]), then attempts them a few at a time
//! ([`run_claimed`]); each attempt claims its row ([`claim`]) — skipped when another
//! dispatcher was faster — handles it, and writes the outcome through [`settle`], which
//! changes nothing once the claim is lost.

use std::{future::Future, time::Duration};

use futures::{StreamExt, stream};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect, UpdateMany,
    sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    config::EventSettings,
    domain::events::{DeliveryStatus, retry_delay_micros},
    error::{Error, Result},
    storage::{
        Store,
        entities::{email_messages, webhook_deliveries},
    },
};

/// Most rows one round attempts (the next round takes the rest).
const ROUND_LIMIT: u64 = 200;
/// Longest `last_error` kept.
pub(crate) const MAX_ERROR_LEN: usize = 300;

/// A table of leased rows: the columns the claim and its outcome use.
pub(crate) trait Leased: EntityTrait {
    /// The row's id (a UUID).
    const ID: Self::Column;
    /// `PENDING` until handled.
    const STATUS: Self::Column;
    /// When the row is due.
    const NEXT_ATTEMPT_TIME: Self::Column;
    /// The claim: no other dispatcher takes the row before this instant.
    const LEASE_UNTIL: Self::Column;
    /// Set with every outcome.
    const UPDATE_TIME: Self::Column;
}

impl Leased for webhook_deliveries::Entity {
    const ID: Self::Column = webhook_deliveries::Column::Id;
    const STATUS: Self::Column = webhook_deliveries::Column::Status;
    const NEXT_ATTEMPT_TIME: Self::Column = webhook_deliveries::Column::NextAttemptTime;
    const LEASE_UNTIL: Self::Column = webhook_deliveries::Column::LeaseUntil;
    const UPDATE_TIME: Self::Column = webhook_deliveries::Column::UpdateTime;
}

impl Leased for email_messages::Entity {
    const ID: Self::Column = email_messages::Column::Id;
    const STATUS: Self::Column = email_messages::Column::Status;
    const NEXT_ATTEMPT_TIME: Self::Column = email_messages::Column::NextAttemptTime;
    const LEASE_UNTIL: Self::Column = email_messages::Column::LeaseUntil;
    const UPDATE_TIME: Self::Column = email_messages::Column::UpdateTime;
}

/// A duration in stored micro-units.
pub(crate) fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX / 4)
}

/// How long a claim lasts: long enough for the attempt (at most `timeout`) and writing
/// its outcome, short enough that a crashed dispatcher's rows are soon taken over.
pub(crate) fn lease_micros(timeout: Duration) -> i64 {
    micros(
        timeout
            .saturating_mul(2)
            .saturating_add(Duration::from_secs(30)),
    )
}

/// Rows no dispatcher holds: never leased, or the lease ran out.
pub(crate) fn unleased<C: ColumnTrait>(lease_until: C, now: i64) -> Condition {
    Condition::any()
        .add(lease_until.is_null())
        .add(lease_until.lt(now))
}

/// Rows a dispatcher may take at `now`: pending, due, unleased.
fn claimable<E: Leased>(now: i64) -> Condition {
    Condition::all()
        .add(E::STATUS.eq(DeliveryStatus::Pending.as_str()))
        .add(E::NEXT_ATTEMPT_TIME.lte(now))
        .add(unleased(E::LEASE_UNTIL, now))
}

/// The ids of the rows claimable at `now`, longest due first, at most a round's worth.
pub(crate) async fn due_ids<E: Leased>(store: &Store, now: i64) -> Result<Vec<Uuid>> {
    Ok(E::find()
        .select_only()
        .column(E::ID)
        .filter(claimable::<E>(now))
        .order_by_asc(E::NEXT_ATTEMPT_TIME)
        .order_by_asc(E::ID)
        .limit(ROUND_LIMIT)
        .into_tuple()
        .all(store.db())
        .await?)
}

/// A row this dispatcher holds.
pub(crate) struct Claimed<M> {
    /// The row as read after the claim.
    pub row: M,
    /// The end of the lease, which [`settle`] checks.
    pub lease_until: i64,
}

/// Claims row `id` for an attempt that takes at most `timeout`: `None` when the
/// conditional update did not take it (handled, not due, or another dispatcher's lease
/// running).
pub(crate) async fn claim<E: Leased>(
    store: &Store,
    id: Uuid,
    timeout: Duration,
) -> Result<Option<Claimed<E::Model>>> {
    let now = store.now();
    let lease_until = now.saturating_add(lease_micros(timeout));
    let tx = store.write().await?;
    let claimed = E::update_many()
        .col_expr(E::LEASE_UNTIL, Expr::value(lease_until))
        .filter(E::ID.eq(id))
        .filter(claimable::<E>(now))
        .exec(&*tx)
        .await?
        .rows_affected;
    tx.commit().await?;
    if claimed != 1 {
        return Ok(None);
    }
    // Delivery and email rows are never deleted.
    let row = E::find()
        .filter(E::ID.eq(id))
        .one(store.db())
        .await?
        .ok_or_else(|| Error::Internal(format!("the claimed row {id} is gone")))?;
    Ok(Some(Claimed { row, lease_until }))
}

/// The update that writes an attempt's outcome (add its columns) and ends the lease. It
/// changes nothing when the claim no longer holds: the lease ran out and another
/// dispatcher took the row, or the row was cancelled meanwhile.
pub(crate) fn settle<E: Leased>(id: Uuid, lease_until: i64, now: i64) -> UpdateMany<E> {
    E::update_many()
        .col_expr(E::LEASE_UNTIL, Expr::value(Option::<i64>::None))
        .col_expr(E::UPDATE_TIME, Expr::value(now))
        .filter(E::ID.eq(id))
        .filter(E::STATUS.eq(DeliveryStatus::Pending.as_str()))
        .filter(E::LEASE_UNTIL.eq(lease_until))
}

/// When a row whose attempt number `attempts` failed at `now` is tried again: after the
/// backoff (`retry_base`, doubled per failure, at most an hour), or `None` when that was
/// the last attempt and the row is dead-lettered.
pub(crate) fn after_failure(settings: &EventSettings, attempts: i64, now: i64) -> Option<i64> {
    if attempts >= i64::from(settings.max_attempts) {
        return None;
    }
    let failures = u32::try_from(attempts).unwrap_or(u32::MAX);
    Some(now.saturating_add(retry_delay_micros(micros(settings.retry_base), failures)))
}

/// Runs `attempt` on each id, `concurrency` at a time. Returns how many were handled
/// (`Ok(true)`: claimed here); failures are logged as about `what`.
pub(crate) async fn run_claimed<F, Fut>(
    ids: Vec<Uuid>,
    concurrency: usize,
    what: &'static str,
    attempt: F,
) -> usize
where
    F: FnMut(Uuid) -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    stream::iter(ids)
        .map(attempt)
        .buffer_unordered(concurrency)
        .fold(0, |handled, outcome| async move {
            match outcome {
                Ok(true) => handled + 1,
                Ok(false) => handled,
                Err(error) => {
                    tracing::warn!(%error, "{what} failed to be handled");
                    handled
                }
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_retried_with_backoff_until_the_last_attempt() {
        let settings = EventSettings {
            max_attempts: 3,
            retry_base: Duration::from_secs(30),
            ..EventSettings::default()
        };
        let now = 1_000_000_000;
        assert_eq!(after_failure(&settings, 1, now), Some(now + 30_000_000));
        assert_eq!(after_failure(&settings, 2, now), Some(now + 60_000_000));
        assert_eq!(
            after_failure(&settings, 3, now),
            None,
            "dead after the third"
        );
        assert_eq!(after_failure(&settings, 4, now), None);
    }
}
