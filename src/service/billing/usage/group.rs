//! Group commit: callers that arrive while an ingestion transaction is in flight wait
//! in one queue (across organizations) and are ingested together in the next one.
//!
//! A caller queues its batch (one RecordUsage event, a RecordUsageBatch, a StreamUsage
//! message) and, when no drain runs, spawns one. The drain takes what queued (at most
//! [`MAX_GROUP_EVENTS`] events, at least one caller), ingests it in one transaction,
//! answers each caller with its own outcomes after the commit, and loops until the
//! queue is empty. Nothing waits on purpose: a lone caller is ingested at once, and a
//! group is whatever arrived while the previous commit ran. The drain is a task of its
//! own, so a caller that goes away (a cancelled call) does not stop it; its events are
//! committed and its retry finds them as duplicates.
//!
//! When a group's transaction fails for any reason — a unique key another transaction
//! won, a deadlock, anything one caller's batch caused — each caller's batch is then
//! ingested alone with the usual retries, so one caller's failure is only its own.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard},
};

use futures::future::join_all;
use tokio::sync::oneshot;

use crate::{
    error::{Error, Result},
    grpc::Ctx,
};

use super::ingest::{self, Decided, Member};

/// Events per group transaction (a full RecordUsageBatch goes alone).
const MAX_GROUP_EVENTS: usize = 1000;

/// Drains that may run at once. Two (the next group reading while one holds its
/// counter locks) measured no better than one on a two-core machine, where the
/// database, the server and the clients share the CPU, and split the groups.
/// Re-measured on PostgreSQL with the `jsonb` statements (16 callers, 10 s, 1 / 2 /
/// 1 / 2 lanes): usage-batch 25.1k / 19.4k / 22.4k / 19.3k events/s, usage-unary
/// 1,081 / 807 / 1,052 / 685 calls/s.
const LANES: usize = 1;

/// A queued caller and where its answer goes.
struct Waiter {
    member: Member,
    answer: oneshot::Sender<Result<Decided>>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiter>,
    /// Drains running (at most [`LANES`]).
    drains: usize,
}

/// The queue of callers waiting for the next group transaction (one per process,
/// shared by every organization).
#[derive(Default)]
pub struct GroupCommit {
    queue: Mutex<Queue>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue holds no invariant a panic could break halfway.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next group: the oldest callers up to the event bound; empty (and the drain
    /// marked as stopped) when nobody waits.
    fn next_group(&self) -> Vec<Waiter> {
        let mut queue = self.lock();
        let mut group = Vec::new();
        let mut events = 0;
        while let Some(first) = queue.waiting.front() {
            let size = first.member.valid.len();
            if !group.is_empty() && events + size > MAX_GROUP_EVENTS {
                break;
            }
            events += size;
            group.extend(queue.waiting.pop_front());
        }
        if group.is_empty() {
            queue.drains -= 1;
        }
        group
    }
}

/// Ingests `member` in the next group transaction; answers after its commit (or after
/// its own transaction, when the group's failed).
pub(super) async fn ingest(ctx: &Ctx, member: Member) -> Result<Decided> {
    let (answer, answered) = oneshot::channel();
    let start_drain = {
        let mut queue = ctx.usage_groups.lock();
        queue.waiting.push_back(Waiter { member, answer });
        let start = queue.drains < LANES;
        if start {
            queue.drains += 1;
        }
        start
    };
    if start_drain {
        tokio::spawn(drain(ctx.clone()));
    }
    answered
        .await
        .map_err(|_| Error::Internal("usage ingestion stopped before answering".into()))?
}

/// Keeps the queue served if a drain's task ends by a panic: another drain takes over
/// the callers still waiting (those of the failed group get an error).
struct DrainGuard(Ctx);

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tokio::spawn(drain(self.0.clone()));
        }
    }
}

async fn drain(ctx: Ctx) {
    let _guard = DrainGuard(ctx.clone());
    loop {
        let group = ctx.usage_groups.next_group();
        if group.is_empty() {
            return;
        }
        run(&ctx, group).await;
    }
}

/// Ingests a group and answers its callers.
async fn run(ctx: &Ctx, group: Vec<Waiter>) {
    let (members, answers): (Vec<Member>, Vec<_>) =
        group.into_iter().map(|w| (w.member, w.answer)).unzip();
    if members.len() > 1 {
        match ingest::ingest(ctx, &members).await {
            Ok(all) => {
                let accepted = all.iter().map(ingest::accepted).sum();
                ctx.metrics.usage_events_ingested(accepted);
                for (answer, decided) in answers.into_iter().zip(all) {
                    // A caller that went away finds its events recorded when it retries.
                    let _ = answer.send(Ok(decided));
                }
                return;
            }
            Err(error) => tracing::debug!(
                %error,
                callers = members.len(),
                "usage group failed; ingesting its batches one by one"
            ),
        }
    }
    join_all(
        members
            .iter()
            .zip(answers)
            .map(|(member, answer)| async move {
                let _ = answer.send(ingest::with_retries(ctx, member).await);
            }),
    )
    .await;
}
