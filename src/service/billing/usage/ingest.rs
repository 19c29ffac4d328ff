//! The ingestion transaction of one or more callers' batches (see the parent module for
//! the rules and the order of the statements).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use uuid::Uuid;

use crate::{
    auth::OrgAccess,
    domain::{
        billing::Metric,
        org::{AgentStatus, OrgStatus},
    },
    error::{Error, Result, db_code, is_unique_violation},
    grpc::Ctx,
    service::{
        billing::{quotas::effective_limits, spend::SpendRules},
        subscriptions::limit_reached,
    },
    storage::entities::usage_counters,
};

use super::{
    Outcome, Refusal, Valid,
    alerts::{self, Crossing},
    reads::Reads,
    writes::{self, CounterKey, Pending, apply},
};

const ATTEMPTS: usize = 3;

/// One caller's checked events for the organization it is authorized on.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The caller's access, with the organization row the auth layer read.
    pub access: OrgAccess,
    /// Its valid events, each event id once.
    pub valid: Vec<Valid>,
    /// The instant the caller checked them at (the rows' create time).
    pub now: i64,
}

impl Member {
    /// The organization's id.
    pub fn org_id(&self) -> Uuid {
        self.access.org().id
    }
}

/// The outcome of each of a member's events, by the event's index in its request.
pub(crate) type Decided = Vec<(usize, Outcome)>;

/// Ingests one member alone, retrying when a concurrent batch won a unique key or the
/// database picked this transaction as a deadlock victim; counts the accepted events.
pub(super) async fn with_retries(ctx: &Ctx, member: &Member) -> Result<Decided> {
    let mut attempt = 1;
    loop {
        match ingest(ctx, std::slice::from_ref(member)).await {
            Err(e) if attempt < ATTEMPTS && retryable(&e) => attempt += 1,
            Ok(mut decided) => {
                let decided = decided.pop().unwrap_or_default();
                ctx.metrics.usage_events_ingested(accepted(&decided));
                return Ok(decided);
            }
            Err(e) => return Err(e),
        }
    }
}

/// How many of `decided` were accepted.
pub(super) fn accepted(decided: &Decided) -> u64 {
    decided
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Outcome::Accepted))
        .count() as u64
}

/// Whether an attempt failed in a way the next attempt can get past: a unique key a
/// concurrent batch won (the retry sees a duplicate), or PostgreSQL aborting the
/// transaction as a deadlock victim (SQLSTATE `40P01`) or for a serialization failure
/// (`40001`). Decided by SQLSTATE, not by message text, which follows the server's
/// `lc_messages`. SQLite's busy and locked results were never retried here (its
/// writers queue on the store's writer lock and the busy timeout) and still are not.
fn retryable(error: &Error) -> bool {
    match error {
        Error::Database(e) => {
            is_unique_violation(e) || db_code(e).is_some_and(|code| retryable_code(&code))
        }
        _ => false,
    }
}

/// The PostgreSQL SQLSTATEs after which a transaction may simply run again.
fn retryable_code(code: &str) -> bool {
    const DEADLOCK_DETECTED: &str = "40P01";
    const SERIALIZATION_FAILURE: &str = "40001";
    matches!(code, DEADLOCK_DETECTED | SERIALIZATION_FAILURE)
}

/// The organization's terms a member's events are decided under.
struct Terms {
    live: bool,
    rules: SpendRules,
    max_logs: Option<i64>,
}

impl Terms {
    fn of(ctx: &Ctx, member: &Member) -> Terms {
        let org = member.access.org();
        Terms {
            live: org.delete_time.is_none() && org.status == OrgStatus::Active.as_str(),
            rules: SpendRules::of(org),
            max_logs: effective_limits(&ctx.settings.billing.catalogue, org).max_logs_per_month,
        }
    }
}

/// Whether the agent belonged to the organization at `at` (assignments are
/// half-open: `[assign_time, unassign_time)`).
fn belonged(reads: &Reads, org_id: Uuid, agent_id: Uuid, at: i64) -> bool {
    reads
        .assignments
        .get(&(org_id, agent_id))
        .is_some_and(|list| {
            list.iter()
                .any(|a| a.assign_time <= at && a.unassign_time.is_none_or(|end| at < end))
        })
}

/// The decision that needs no counter: a duplicate of a recorded event, or a refusal
/// for the organization or the agent. `None`: the event may be accepted.
fn screen(reads: &Reads, member: &Member, terms: &Terms, v: &Valid) -> Option<Outcome> {
    let org_id = member.org_id();
    if reads
        .recorded
        .get(&org_id)
        .is_some_and(|ids| ids.contains(&v.event_id))
    {
        return Some(Outcome::Duplicate);
    }
    let refuse =
        |reason: &'static str, message: &str| Some(Outcome::Refused(Refusal::new(reason, message)));
    if !terms.live {
        return refuse("ORG_INACTIVE", "the organization is not active");
    }
    let unknown = "the agent did not belong to this organization at occurred_at";
    let Some(agent) = reads.agents.get(&v.agent_id) else {
        return refuse("UNKNOWN_AGENT", unknown);
    };
    if !belonged(reads, org_id, v.agent_id, v.occurred_at) {
        return refuse("UNKNOWN_AGENT", unknown);
    }
    if agent.organization_id == org_id && agent.status == AgentStatus::Suspended.as_str() {
        return refuse("AGENT_SUSPENDED", "the agent is suspended");
    }
    None
}

/// Refuses a LOGS event that would take its month past the plan's
/// `max_logs_per_month` (the counter read under its lock, with the accepted events
/// before it applied). Other metrics have no plan limit.
fn check_logs(
    member: &Member,
    terms: &Terms,
    counter: &usage_counters::Model,
    v: &Valid,
) -> Result<(), Refusal> {
    let Some(allowed) = terms.max_logs.filter(|_| v.metric == Metric::Logs) else {
        return Ok(());
    };
    let used = counter.logs;
    if used.saturating_add(v.quantity) <= allowed {
        return Ok(());
    }
    let error = limit_reached(member.access.org(), "max_logs_per_month", used, allowed)
        .with("month", v.month)
        .with("requested", v.quantity);
    Err(Refusal::from_error(error))
}

/// The decision under the counter locks, in arrival order: a repeat of an event this
/// transaction accepted is a duplicate; then the screen; then the spend cap and the
/// logs limit against the locked totals with the events before applied.
fn decide(
    state: &Locked,
    reads: &Reads,
    member: &Member,
    terms: &Terms,
    v: &Valid,
) -> Result<Outcome> {
    let org_id = member.org_id();
    if state.accepted.contains(&(org_id, v.event_id.as_str())) {
        return Ok(Outcome::Duplicate);
    }
    if let Some(outcome) = screen(reads, member, terms, v) {
        return Ok(outcome);
    }
    // Every event the screen passes had its counter locked.
    let counter = state
        .counters
        .get(&(org_id, v.month))
        .ok_or_else(|| Error::Internal("an event's usage counter was not locked".into()))?;
    if terms.rules.blocks(counter.cost_micros) {
        return Ok(Outcome::Refused(Refusal::new(
            "SPEND_LIMIT_REACHED",
            format!("the monthly spend limit is reached for {}", v.month),
        )));
    }
    Ok(match check_logs(member, terms, counter, v) {
        Ok(()) => Outcome::Accepted,
        Err(refusal) => Outcome::Refused(refusal),
    })
}

/// The state under the counter locks.
struct Locked<'a> {
    counters: BTreeMap<CounterKey, usage_counters::Model>,
    accepted: HashSet<(Uuid, &'a str)>,
}

/// One attempt at ingesting `members` together: the reads, then (unless no event can
/// be accepted) one transaction that locks the counters, decides every event in
/// order, writes, and commits. Returns each member's outcomes; counts nothing.
pub(super) async fn ingest(ctx: &Ctx, members: &[Member]) -> Result<Vec<Decided>> {
    let mut reads = Reads::load(ctx.store.db(), members).await?;
    let terms: Vec<Terms> = members.iter().map(|m| Terms::of(ctx, m)).collect();
    let mut keys = BTreeSet::new();
    let mut screened = Vec::with_capacity(members.len());
    for (member, terms) in members.iter().zip(&terms) {
        let mut decided = Vec::with_capacity(member.valid.len());
        for v in &member.valid {
            let outcome = screen(&reads, member, terms, v);
            if outcome.is_none() {
                keys.insert((member.org_id(), v.month));
            }
            decided.push((v.index, outcome.unwrap_or(Outcome::Accepted)));
        }
        screened.push(decided);
    }
    if keys.is_empty() {
        // Duplicates and refusals only: nothing to write, nothing to lock.
        return Ok(screened);
    }
    let now = members.iter().map(|m| m.now).max().unwrap_or_default();
    let tx = ctx.store.write().await?;
    let mut state = Locked {
        counters: writes::lock_counters(&tx, &keys, now).await?,
        accepted: HashSet::new(),
    };
    let mut fired = std::mem::take(&mut reads.fired);
    let mut pending = Pending::default();
    let mut crossings = Vec::new();
    let mut all = Vec::with_capacity(members.len());
    for (member, terms) in members.iter().zip(&terms) {
        let recorded_by = member.access.principal().author();
        let mut decided = Vec::with_capacity(member.valid.len());
        for v in &member.valid {
            let outcome = decide(&state, &reads, member, terms, v)?;
            if matches!(outcome, Outcome::Accepted) {
                let key = (member.org_id(), v.month);
                state.accepted.insert((key.0, v.event_id.as_str()));
                if let Some(counter) = state.counters.get_mut(&key) {
                    apply(counter, v);
                    let fired = fired.entry(key).or_default();
                    for threshold in terms.rules.newly_crossed(counter.cost_micros, fired) {
                        fired.push(threshold);
                        let crossing = Crossing {
                            month: v.month,
                            threshold,
                            mtd: counter.cost_micros,
                            limit: terms.rules.limit_micros.unwrap_or_default(),
                        };
                        crossings.push((&member.access, crossing));
                    }
                }
                pending.add(&reads, member, v, &recorded_by);
            }
            decided.push((v.index, outcome));
        }
        all.push(decided);
    }
    pending.write(&tx).await?;
    alerts::record(ctx, &tx, &crossings, now).await?;
    tx.commit().await?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use std::{borrow::Cow, sync::Arc};

    use sea_orm::{
        DbErr, RuntimeErr,
        sqlx::{self, error::ErrorKind},
    };

    use super::*;

    /// A database error carrying only a code, as the drivers report one.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            // Deliberately not PostgreSQL's English text: the code alone must decide.
            write!(f, "erreur {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "erreur"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn failed(code: &'static str) -> Error {
        let e = sqlx::Error::Database(Box::new(Coded(code)));
        Error::Database(DbErr::Exec(RuntimeErr::SqlxError(Arc::new(e))))
    }

    /// (A unique violation is recognized by SeaORM only on the drivers' own error
    /// types; the concurrent tests in `tests/api/usage_grouping.rs` cover its retry.)
    #[test]
    fn deadlocks_and_serialization_failures_are_retried() {
        assert!(retryable(&failed("40P01")));
        assert!(retryable(&failed("40001")));
    }

    #[test]
    fn other_failures_are_not_retried() {
        // A check violation, SQLite's SQLITE_BUSY, a lost connection, a domain error.
        assert!(!retryable(&failed("23514")));
        assert!(!retryable(&failed("5")));
        let gone = DbErr::Conn(RuntimeErr::SqlxError(Arc::new(sqlx::Error::PoolClosed)));
        assert!(!retryable(&Error::Database(gone)));
        assert!(!retryable(&Error::Internal("deadlock detected".into())));
    }
}
