//! The read and usage scenarios, each a call maker for [`drive`]: caller `i` uses
//! connection `i % connections` and (for usage) tenant `i % usage_orgs`.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tenantry::proto::{
    self, billing_service_client::BillingServiceClient,
    organization_service_client::OrganizationServiceClient,
};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{
    baseline,
    drive::{Bounds, CallFuture, Measured, Outcome, drive},
    setup::{Fixture, UsageOrg, authed},
};

/// Sequence of event ids, unique within a run (every run has a fresh database).
static NEXT_EVENT: AtomicU64 = AtomicU64::new(0);

/// What every scenario runs with.
#[derive(Clone)]
pub struct Run {
    /// Connections, shared round-robin by the callers.
    pub channels: Vec<Channel>,
    /// Concurrent callers.
    pub concurrency: usize,
    /// Events per RecordUsageBatch call and per StreamUsage message.
    pub batch: usize,
    /// Messages per StreamUsage call.
    pub stream_messages: usize,
    /// The data.
    pub fixture: Arc<Fixture>,
}

impl Run {
    fn channel(&self, caller: usize) -> Channel {
        self.channels[caller % self.channels.len()].clone()
    }

    fn usage_org(&self, caller: usize) -> UsageOrg {
        let orgs = &self.fixture.usage_orgs;
        orgs[caller % orgs.len()].clone()
    }
}

/// Health `Check` against the server behind `run`'s channels.
pub async fn health(run: &Run, bounds: Bounds) -> anyhow::Result<Measured> {
    drive(run.concurrency, bounds, |i| {
        let client = HealthClient::new(run.channel(i));
        move |_| -> CallFuture {
            let mut client = client.clone();
            Box::pin(async move { Outcome::of(client.check(HealthCheckRequest::default()).await) })
        }
    })
    .await
}

/// The baseline's recorded GetOrganization (`baseline::GET`) or ListOrganizations
/// (`baseline::LIST`) answer: tenantry's bytes served by bare tonic.
pub async fn replay(run: &Run, bounds: Bounds, path: &'static str) -> anyhow::Result<Measured> {
    drive(run.concurrency, bounds, |i| {
        let channel = run.channel(i);
        move |_| -> CallFuture {
            let channel = channel.clone();
            Box::pin(async move {
                let answer = if path == baseline::GET {
                    let request = proto::GetOrganizationRequest::default();
                    baseline::call::<_, proto::GetOrganizationResponse>(channel, path, request)
                        .await
                        .map(|_| ())
                } else {
                    let request = proto::ListOrganizationsRequest::default();
                    baseline::call::<_, proto::ListOrganizationsResponse>(channel, path, request)
                        .await
                        .map(|_| ())
                };
                Outcome::of(answer)
            })
        }
    })
    .await
}

/// GetOrganization of the read tenant with `credential` (a member's JWT or an API key).
pub async fn get_org(run: &Run, bounds: Bounds, credential: &str) -> anyhow::Result<Measured> {
    let org = run.fixture.read_org.clone();
    drive(run.concurrency, bounds, |i| {
        let client = OrganizationServiceClient::new(run.channel(i));
        let (org, credential) = (org.clone(), credential.to_owned());
        move |_| -> CallFuture {
            let mut client = client.clone();
            let request = proto::GetOrganizationRequest {
                organization_id: org.clone(),
            };
            let request = authed(request, &credential);
            Box::pin(async move { Outcome::of(client.get_organization(request).await) })
        }
    })
    .await
}

/// ListOrganizations, first page of 50, as the root admin (who sees every tenant).
pub async fn list_orgs(run: &Run, bounds: Bounds) -> anyhow::Result<Measured> {
    let root = run.fixture.root.clone();
    drive(run.concurrency, bounds, |i| {
        let client = OrganizationServiceClient::new(run.channel(i));
        let root = root.clone();
        move |_| -> CallFuture {
            let mut client = client.clone();
            let request = proto::ListOrganizationsRequest {
                page_size: 50,
                ..Default::default()
            };
            let request = authed(request, &root);
            Box::pin(async move {
                match client.list_organizations(request).await {
                    Ok(page) if page.get_ref().organizations.len() == 50 => Outcome::Ok(1),
                    Ok(page) => Outcome::Failed(tonic::Status::data_loss(format!(
                        "a page of {} organizations, not 50",
                        page.get_ref().organizations.len()
                    ))),
                    Err(status) => Outcome::Failed(status),
                }
            })
        }
    })
    .await
}

fn event(org: &UsageOrg, n: u64) -> proto::UsageEvent {
    let now = chrono::Utc::now();
    proto::UsageEvent {
        event_id: format!("load-{n}"),
        agent_id: org.agents[(n as usize) % org.agents.len()].clone(),
        metric: proto::UsageMetric::Tokens as i32,
        quantity: 100,
        cost: Some(proto::Money {
            currency_code: "USD".into(),
            amount: "0.000125".into(),
        }),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.timestamp(),
            nanos: now.timestamp_subsec_nanos() as i32,
        }),
        dimensions: [("channel".to_owned(), "webchat".to_owned())].into(),
    }
}

fn events(org: &UsageOrg, count: usize) -> Vec<proto::UsageEvent> {
    let first = NEXT_EVENT.fetch_add(count as u64, Ordering::Relaxed);
    (first..first + count as u64)
        .map(|n| event(org, n))
        .collect()
}

/// Counts a usage answer: all `expected` events must be accepted.
fn accepted(result: Result<u64, tonic::Status>, expected: u64) -> Outcome {
    match result {
        Ok(n) if n == expected => Outcome::Ok(n),
        Ok(n) => Outcome::Failed(tonic::Status::data_loss(format!(
            "{n} of {expected} events accepted"
        ))),
        Err(status) => Outcome::Failed(status),
    }
}

/// RecordUsage, one event per call, as SYSTEM.
pub async fn usage_unary(run: &Run, bounds: Bounds) -> anyhow::Result<Measured> {
    let system = run.fixture.system.clone();
    drive(run.concurrency, bounds, |i| {
        let client = BillingServiceClient::new(run.channel(i));
        let (org, system) = (run.usage_org(i), system.clone());
        move |_| -> CallFuture {
            let mut client = client.clone();
            let request = proto::RecordUsageRequest {
                organization_id: org.id.clone(),
                event: events(&org, 1).pop(),
            };
            let request = authed(request, &system);
            Box::pin(async move {
                let answer = client.record_usage(request).await;
                let result = answer.map(|a| {
                    u64::from(
                        a.into_inner()
                            .result
                            .is_some_and(|r| r.status == proto::UsageEventStatus::Accepted as i32),
                    )
                });
                accepted(result, 1)
            })
        }
    })
    .await
}

/// RecordUsageBatch of `run.batch` events per call, as SYSTEM.
pub async fn usage_batch(run: &Run, bounds: Bounds) -> anyhow::Result<Measured> {
    let (system, batch) = (run.fixture.system.clone(), run.batch);
    drive(run.concurrency, bounds, |i| {
        let client = BillingServiceClient::new(run.channel(i));
        let (org, system) = (run.usage_org(i), system.clone());
        move |_| -> CallFuture {
            let mut client = client.clone();
            let request = proto::RecordUsageBatchRequest {
                organization_id: org.id.clone(),
                events: events(&org, batch),
            };
            let request = authed(request, &system);
            Box::pin(async move {
                let answer = client.record_usage_batch(request).await;
                let result = answer.map(|a| u64::from(a.into_inner().accepted_count));
                accepted(result, batch as u64)
            })
        }
    })
    .await
}

/// StreamUsage: one call is a stream of `run.stream_messages` messages of `run.batch`
/// events, answered once the client closes it.
pub async fn usage_stream(run: &Run, bounds: Bounds) -> anyhow::Result<Measured> {
    let (system, batch, messages) = (run.fixture.system.clone(), run.batch, run.stream_messages);
    drive(run.concurrency, bounds, |i| {
        let client = BillingServiceClient::new(run.channel(i));
        let (org, system) = (run.usage_org(i), system.clone());
        move |_| -> CallFuture {
            let mut client = client.clone();
            let outbound: Vec<proto::StreamUsageRequest> = (0..messages)
                .map(|_| proto::StreamUsageRequest {
                    organization_id: org.id.clone(),
                    events: events(&org, batch),
                })
                .collect();
            let request = authed(tokio_stream::iter(outbound), &system);
            Box::pin(async move {
                let answer = client.stream_usage(request).await;
                let result = answer.map(|a| a.into_inner().accepted_count);
                accepted(result, (batch * messages) as u64)
            })
        }
    })
    .await
}
