//! The bounded closed-loop driver: `concurrency` callers each issue one call after the
//! other until the call budget or the deadline is spent, whichever comes first, and
//! every call's latency is kept for the percentiles.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tonic::{Code, Status};

/// One call in flight.
pub type CallFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// What one call did.
#[derive(Debug)]
pub enum Outcome {
    /// Succeeded, carrying `units` (events or rows; 1 for a plain call).
    Ok(u64),
    /// Refused in a way the scenario expects under contention (counted apart).
    Refused(Code),
    /// Failed.
    Failed(Status),
}

impl Outcome {
    /// A plain call's result: one unit when it succeeded.
    pub fn of<T>(result: Result<T, Status>) -> Outcome {
        match result {
            Ok(_) => Outcome::Ok(1),
            Err(status) => Outcome::Failed(status),
        }
    }
}

/// How far a run may go.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// No call starts after this instant.
    pub deadline: Instant,
    /// No more calls than this, over all callers.
    pub max_calls: u64,
}

/// What a run measured.
#[derive(Debug, Default, Clone)]
pub struct Measured {
    /// Calls made (each has a latency).
    pub calls: u64,
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls refused as the scenario expects.
    pub refused: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Units (events, rows) of the successful calls.
    pub units: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latencies in microseconds, sorted once the run is over.
    pub latencies_us: Vec<u64>,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Refusals by gRPC code.
    pub refusals: BTreeMap<String, u64>,
}

impl Measured {
    /// `n` per second of this run's wall time.
    pub fn per_second(&self, n: u64) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    }

    /// Calls per second.
    pub fn calls_per_second(&self) -> f64 {
        self.per_second(self.calls)
    }

    /// The `per_mille`-th latency in microseconds (500 = median), nearest rank.
    pub fn percentile_us(&self, per_mille: u64) -> u64 {
        let n = self.latencies_us.len() as u64;
        if n == 0 {
            return 0;
        }
        let rank = (n * per_mille).div_ceil(1000).clamp(1, n);
        self.latencies_us[(rank - 1) as usize]
    }

    /// Adds another run's figures (times add up: used for runs done one after the other).
    pub fn absorb(&mut self, other: Measured) {
        self.calls += other.calls;
        self.ok += other.ok;
        self.refused += other.refused;
        self.failed += other.failed;
        self.units += other.units;
        self.elapsed += other.elapsed;
        self.latencies_us.extend(other.latencies_us);
        self.latencies_us.sort_unstable();
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        for (code, n) in other.refusals {
            *self.refusals.entry(code).or_default() += n;
        }
    }
}

/// Runs `concurrency` callers; caller `i` gets the call maker `make(i)`, which is
/// handed the call's global sequence number.
pub async fn drive<F>(
    concurrency: usize,
    bounds: Bounds,
    make: impl Fn(usize) -> F,
) -> anyhow::Result<Measured>
where
    F: FnMut(u64) -> CallFuture + Send + 'static,
{
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let issued = issued.clone();
        let mut call = make(i);
        workers.push(tokio::spawn(async move {
            let mut own = Measured::default();
            while Instant::now() < bounds.deadline {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= bounds.max_calls {
                    break;
                }
                let t = Instant::now();
                let outcome = call(n).await;
                own.latencies_us.push(t.elapsed().as_micros() as u64);
                own.calls += 1;
                match outcome {
                    Outcome::Ok(units) => {
                        own.ok += 1;
                        own.units += units;
                    }
                    Outcome::Refused(code) => {
                        own.refused += 1;
                        *own.refusals.entry(format!("{code:?}")).or_default() += 1;
                    }
                    Outcome::Failed(status) => {
                        own.failed += 1;
                        if own.first_error.is_none() {
                            own.first_error =
                                Some(format!("{:?}: {}", status.code(), status.message()));
                        }
                    }
                }
            }
            own
        }));
    }
    let mut total = Measured::default();
    for worker in workers {
        total.absorb(worker.await?);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let m = Measured {
            latencies_us: (1..=100).collect(),
            ..Default::default()
        };
        assert_eq!(m.percentile_us(500), 50);
        assert_eq!(m.percentile_us(900), 90);
        assert_eq!(m.percentile_us(990), 99);
        assert_eq!(m.percentile_us(1000), 100);
        assert_eq!(Measured::default().percentile_us(990), 0);
    }

    #[tokio::test]
    async fn the_call_budget_bounds_a_run() {
        let bounds = Bounds {
            deadline: Instant::now() + Duration::from_secs(10),
            max_calls: 25,
        };
        let m = drive(4, bounds, |_| {
            |_n: u64| -> CallFuture { Box::pin(async { Outcome::Ok(2) }) }
        })
        .await
        .expect("drive");
        assert_eq!((m.calls, m.ok, m.units), (25, 25, 50));
    }
}
