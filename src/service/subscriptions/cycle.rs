//! The renewal cycle: RunBillingCycle, the in-server interval job and `tenantry
//! billing-cycle` all call [`run`].
//!
//! A run as of instant `at` closes, in order, every period of every subscription that
//! is not CANCELED and whose `current_period_end` ≤ `at` (one transaction per period:
//! see [`close`]), then moves subscriptions with an overdue OPEN invoice to PAST_DUE and
//! PAST_DUE ones without one back to ACTIVE ([`past_due`]), then deletes the data of
//! cancelled accounts whose deletion date has come (unscoped runs only: a run for one
//! organization never touches the others).
//!
//! Several replicas may run it at once. On PostgreSQL each period's transaction claims
//! the organization row and then the subscription row with `SKIP LOCKED` (the lock order
//! of every writer: organization → subscription → billing account → invoices) and
//! re-reads the period end under the lock; a row another writer holds is retried a few
//! times in the same run and else left to the next run. On SQLite the single writer
//! serializes them. Either way the `subscription_periods` primary key (subscription,
//! period end), inserted in the same transaction, refuses a second close of a period,
//! so no period is ever invoiced twice.
//!
//! Record times (invoice issue, audit) are the clock's now; `at` only selects what is
//! due. A failure on one subscription is logged and counted and the others go on.

mod billing;
mod claim;
mod close;
mod past_due;
mod summary;

use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use claim::{Claim, claim_org, claim_subscription};
pub use past_due::{overdue_cutoff, reactivate_if_settled};
pub use summary::Summary;

use crate::{
    auth::{Caller, Principal, denied},
    domain::{
        clock::from_micros,
        ids::{self, IdKind},
        subscription::SubStatus,
    },
    error::{Error, Result, Violations},
    grpc::{Ctx, convert::micros},
    proto,
    service::{
        billing::credits::purchase::system_principal, commit, idempotency_key, replayed, settle,
        subscriptions::account,
    },
    storage::{Tx, entities::subscriptions},
    telemetry::metrics::RenewalOutcome,
};

/// Principal subject of runs that no caller asked for (the interval job, the CLI).
pub const SYSTEM_SUBJECT: &str = "billing-cycle";
/// 2000-01-01T00:00:00Z: the earliest instant a run may be asked for.
const EARLIEST_AT: i64 = 946_684_800 * 1_000_000;
/// How far ahead of now a run may be asked for (20 years).
const LATEST_AHEAD: i64 = 20 * 366 * 24 * 3600 * 1_000_000;
/// Pauses before retrying subscriptions whose rows another writer held.
const RETRY_PAUSES_MS: [u64; 3] = [25, 100, 400];

/// Whether a run may be made as of `at`: from 2000-01-01 to 20 years after `now`.
pub fn at_in_bounds(at: i64, now: i64) -> bool {
    (EARLIEST_AT..=now.saturating_add(LATEST_AHEAD)).contains(&at)
}

/// RunBillingCycle (operators): runs the cycle as of `at` (default now) for one
/// organization or, with an empty `organization_id`, for all. With a `request_id` a
/// retry returns the first run's summary. Fails INTERNAL when a subscription could not
/// be renewed (the others were; the log says why, and a new run retries it).
pub async fn run_billing_cycle(
    ctx: Ctx,
    caller: Caller,
    req: proto::RunBillingCycleRequest,
) -> Result<proto::RunBillingCycleResponse> {
    let principal = caller.principal()?.clone();
    let org = if req.organization_id.is_empty() {
        if !principal.role.is_operator() {
            return Err(denied());
        }
        None
    } else {
        let access = caller
            .authorize(&ctx.store, "organization_id", &req.organization_id)
            .await?;
        Some(access.org().id)
    };
    let now = ctx.store.now();
    let mut v = Violations::new();
    let at = match &req.at {
        None => now,
        Some(ts) => match micros(ts) {
            Some(at) if at_in_bounds(at, now) => at,
            _ => {
                v.add(
                    "at",
                    "must be a valid instant from 2000-01-01 to 20 years from now",
                );
                now
            }
        },
    };
    let key = match idempotency_key(&principal, "RunBillingCycle", &req.request_id, &req) {
        Ok(key) => key,
        Err(Error::InvalidArgument(bad)) => {
            for violation in bad {
                v.add(violation.field, violation.description);
            }
            None
        }
        Err(other) => return Err(other),
    };
    v.finish()?;
    if let Some(key) = &key
        && let Some(done) = crate::storage::idempotency::replay(ctx.store.db(), key).await?
    {
        return Ok(done);
    }
    let request_id = key
        .as_ref()
        .map_or(caller.trace_id.as_str(), |k| k.request_id())
        .to_owned();
    let result = async {
        let summary = run_as(&ctx, at, org, &principal, &request_id).await?;
        if summary.failed > 0 {
            return Err(Error::Internal(format!(
                "{} subscription(s) could not be renewed as of {at}",
                summary.failed
            )));
        }
        let response = summary.to_proto();
        let Some(key) = key.as_ref() else {
            return Ok(response);
        };
        let tx: Tx = ctx.store.write().await?;
        if let Some(done) = replayed(&tx, Some(key)).await? {
            return Ok(done);
        }
        commit(&ctx, tx, Some(key), response).await
    }
    .await;
    settle(&ctx, key.as_ref(), result).await
}

/// Runs the cycle as of `at` for one organization or all, as `principal`; see the
/// module notes. Fails only when the due subscriptions cannot be listed.
pub async fn run(ctx: &Ctx, at: i64, org: Option<Uuid>, principal: &Principal) -> Result<Summary> {
    let request_id = format!("billing-cycle:{}", from_micros(at).to_rfc3339());
    run_as(ctx, at, org, principal, &request_id).await
}

/// [`run`] with the caller's name for the run in audit entries and ledger entries;
/// counted in the renewal metrics.
pub async fn run_as(
    ctx: &Ctx,
    at: i64,
    org: Option<Uuid>,
    principal: &Principal,
    request_id: &str,
) -> Result<Summary> {
    let result = run_uncounted(ctx, at, org, principal, request_id).await;
    let (outcome, closed, failed) = match &result {
        Ok(summary) if summary.failed > 0 => (
            RenewalOutcome::Partial,
            summary.periods_closed,
            summary.failed,
        ),
        Ok(summary) => (RenewalOutcome::Ok, summary.periods_closed, 0),
        Err(_) => (RenewalOutcome::Error, 0, 0),
    };
    ctx.metrics.renewal_run(outcome, closed, failed);
    result
}

async fn run_uncounted(
    ctx: &Ctx,
    at: i64,
    org: Option<Uuid>,
    principal: &Principal,
    request_id: &str,
) -> Result<Summary> {
    let mut summary = Summary {
        at,
        ..Summary::default()
    };
    let run = Run {
        ctx,
        principal,
        request_id,
        at,
    };
    let mut pending = due(ctx, at, org).await?;
    for pause in RETRY_PAUSES_MS.iter().copied().map(Some).chain([None]) {
        let mut locked = Vec::new();
        for (sub_id, org_id) in pending {
            if !run.renew(sub_id, org_id, &mut summary).await {
                locked.push((sub_id, org_id));
            }
        }
        pending = locked;
        match pause {
            Some(ms) if !pending.is_empty() => tokio::time::sleep(Duration::from_millis(ms)).await,
            _ => break,
        }
    }
    if !pending.is_empty() {
        tracing::info!(
            count = pending.len(),
            "subscriptions held by another writer are left to the next billing cycle"
        );
        summary.deferred = u32::try_from(pending.len()).unwrap_or(u32::MAX);
    }
    past_due::run(&run, org, &mut summary).await?;
    if org.is_none() {
        match account::delete_due_accounts(ctx, at).await {
            Ok(deleted) => summary.accounts_deleted = deleted,
            Err(error) => {
                tracing::warn!(%error, "deleting the data of cancelled accounts failed");
                summary.failed += 1;
            }
        }
    }
    Ok(summary)
}

/// Runs the cycle as of now for every organization, as the system (the interval job);
/// failures are logged, never fatal.
pub async fn run_scheduled(ctx: &Ctx) {
    let principal = system_principal(SYSTEM_SUBJECT);
    let at = ctx.store.now();
    match run(ctx, at, None, &principal).await {
        Ok(summary)
            if summary
                == Summary {
                    at,
                    ..Summary::default()
                } =>
        {
            tracing::debug!("billing cycle: nothing due");
        }
        Ok(summary) => tracing::info!(summary = %summary.to_json(), "billing cycle ran"),
        Err(error) => tracing::warn!(%error, "billing cycle failed"),
    }
}

/// One run's fixed inputs.
struct Run<'a> {
    ctx: &'a Ctx,
    principal: &'a Principal,
    request_id: &'a str,
    at: i64,
}

impl Run<'_> {
    /// Closes the due periods of one subscription, one transaction each, in order;
    /// `false` when its rows were held by another writer before it was done.
    async fn renew(&self, sub_id: Uuid, org_id: Uuid, summary: &mut Summary) -> bool {
        loop {
            match close::close_next(self, sub_id, org_id).await {
                Ok(close::Outcome::Closed(closed)) => {
                    summary.periods_closed += 1;
                    summary.scheduled_changes_applied += u32::from(closed.scheduled_change_applied);
                    summary.subscriptions_canceled += u32::from(closed.canceled);
                    if let Some((invoice_id, paid)) = closed.invoice {
                        summary.invoice_ids.push(invoice_id);
                        summary.invoices_paid += u32::from(paid);
                    }
                    if closed.canceled {
                        return true;
                    }
                }
                Ok(close::Outcome::NotDue) => return true,
                Ok(close::Outcome::Locked) => return false,
                Err(error) => {
                    tracing::warn!(
                        subscription = %ids::encode(IdKind::Subscription, sub_id),
                        %error,
                        "renewing a subscription failed"
                    );
                    summary.failed += 1;
                    return true;
                }
            }
        }
    }
}

/// Subscriptions (id, organization) with a period to close as of `at`, the oldest
/// period end first (served by `ix_subscriptions_due`).
async fn due(ctx: &Ctx, at: i64, org: Option<Uuid>) -> Result<Vec<(Uuid, Uuid)>> {
    let mut query = subscriptions::Entity::find()
        .select_only()
        .column(subscriptions::Column::Id)
        .column(subscriptions::Column::OrganizationId)
        .filter(subscriptions::Column::Status.ne(SubStatus::Canceled.as_str()))
        .filter(subscriptions::Column::CurrentPeriodEnd.lte(at))
        .order_by_asc(subscriptions::Column::CurrentPeriodEnd)
        .order_by_asc(subscriptions::Column::Id);
    if let Some(org) = org {
        query = query.filter(subscriptions::Column::OrganizationId.eq(org));
    }
    Ok(query.into_tuple().all(ctx.store.db()).await?)
}
