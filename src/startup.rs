//! Application wiring: `Application::build` binds the listeners (port 0 allowed) and
//! prepares everything; `run_until_stopped` serves until the shutdown signal. Tests use
//! exactly this wiring.
//!
//! The gRPC stack, outermost first: [`RpcLayer`] (span and metrics of every call, the
//! refused ones included), [`LimitLayer`] (message size, shedding, deadline), then
//! [`AuthLayer`] and the services. Per connection, HTTP/2 caps the open streams and the
//! size of a request's header block. The HTTP port (probes, metrics, webhooks) shares
//! the request timeout.

pub mod limits;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::{Server, server::TcpIncoming};

use crate::{
    auth::{
        jwt::{self, Verifier},
        layer::{AuthLayer, Authenticator},
    },
    config::Settings,
    domain::clock::{Clock, SystemClock},
    grpc::{
        Ctx, billing::Billing, organization::Organizations, subscription::Subscriptions,
        transfer::Transfers,
    },
    payments::webhook,
    proto::{
        self, billing_service_server::BillingServiceServer,
        organization_service_server::OrganizationServiceServer,
        subscription_service_server::SubscriptionServiceServer,
        tenant_transfer_service_server::TenantTransferServiceServer,
    },
    service::subscriptions::cycle,
    storage::{Store, idempotency},
    telemetry::{metrics::Metrics, rpc::RpcLayer},
};

use limits::LimitLayer;

/// Content type of the `/metrics` exposition.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Names the health service reports on, besides the overall "".
const SERVICE_NAMES: [&str; 4] = [
    "tenantry.v1.OrganizationService",
    "tenantry.v1.BillingService",
    "tenantry.v1.SubscriptionService",
    "tenantry.v1.TenantTransferService",
];

/// A built, not yet running, tenantry.
pub struct Application {
    grpc: TcpListener,
    http: TcpListener,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    ctx: Ctx,
    verifier: Verifier,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

/// Builds the token verifier from the settings; fails when no key is configured.
pub fn verifier(settings: &Settings) -> anyhow::Result<Verifier> {
    let mut keys = Vec::new();
    for spec in &settings.jwt_public_keys {
        let algorithm = jwt::parse_public_algorithm(&spec.algorithm).map_err(anyhow::Error::msg)?;
        let key = jwt::load_pem(algorithm, &spec.path).map_err(anyhow::Error::msg)?;
        keys.push((spec.kid.clone(), key));
    }
    if let Some(path) = &settings.jwks_file {
        keys.extend(jwt::load_jwks(path).map_err(anyhow::Error::msg)?);
    }
    let verifier = Verifier::new(
        settings.jwt_issuer.clone(),
        settings.jwt_audience.clone(),
        settings.jwt_secret.as_ref().map(|s| s.expose()),
        keys,
    );
    anyhow::ensure!(
        verifier.has_keys(),
        "no token verification key is configured: set TENANTRY_JWT_SECRET, --jwt-public-key or --jwks-file, or run `tenantry serve --dev` for local development"
    );
    Ok(verifier)
}

impl Application {
    /// Connects the database, migrates (unless disabled), and binds both listeners.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Like [`Application::build`] with an injected clock.
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let verifier = verifier(&settings)?;
        let store = Store::connect(&settings.database_url, settings.db_max_connections, clock)
            .await
            .context("cannot connect to the database")?;
        if settings.migrate {
            store.migrate_up().await.context("migrations failed")?;
        }
        let grpc = TcpListener::bind(settings.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.grpc_addr))?;
        let http = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.http_addr))?;
        Ok(Application {
            grpc_addr: grpc.local_addr()?,
            http_addr: http.local_addr()?,
            grpc,
            http,
            ctx: Ctx::new(store, settings),
            verifier,
        })
    }

    /// The bound gRPC port.
    pub fn grpc_port(&self) -> u16 {
        self.grpc_addr.port()
    }

    /// The bound HTTP port.
    pub fn http_port(&self) -> u16 {
        self.http_addr.port()
    }

    /// The store, for tests and one-off commands.
    pub fn store(&self) -> &Store {
        &self.ctx.store
    }

    /// Serves until `shutdown` completes: health turns NOT_SERVING and `/readyz` 503,
    /// the drain period passes, listeners close, and in-flight calls finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            grpc,
            http,
            ctx,
            verifier,
            ..
        } = self;
        let limits = ctx.settings.limits.clone();
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        for name in SERVICE_NAMES {
            health_reporter
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let authenticator = Arc::new(Authenticator::new(
            verifier,
            ctx.store.clone(),
            ctx.settings.public_rate_per_minute,
        ));

        let limit_layer = LimitLayer::new(&limits)?;

        let (draining_tx, draining_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let drain = ctx.settings.drain;
        let reporter = health_reporter.clone();
        let reporter_store = ctx.store.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown requested: draining");
            let _ = draining_tx.send(true);
            // Open event streams end now, so the drain is not held up by watchers.
            reporter_store.signals().stopping.send_replace(true);
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            for name in SERVICE_NAMES {
                reporter
                    .set_service_status(name, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            tokio::time::sleep(drain).await;
            let _ = stop_tx.send(true);
        });

        let maintenance_store = ctx.store.clone();
        let maintenance_auth = authenticator.clone();
        let mut maintenance_stop = stop_rx.clone();
        let maintenance = tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs(3600));
            let mut sweep = tokio::time::interval(Duration::from_secs(300));
            loop {
                tokio::select! {
                    _ = interval.tick() => {
                        if let Err(e) = idempotency::purge(&maintenance_store).await {
                            tracing::warn!(error = %e, "purging idempotency records failed");
                        }
                    }
                    _ = sweep.tick() => maintenance_auth.forget_idle_callers(),
                    _ = maintenance_stop.changed() => break,
                }
            }
        });

        // The renewal cycle on an interval (first run at start, to catch up after
        // downtime); stopped with the servers. A run that fails is logged and retried on
        // the next tick; several replicas may run it at once (see `cycle`).
        let every = ctx.settings.billing.billing_cycle_interval;
        let billing_cycle = every.filter(|e| !e.is_zero()).map(|every| {
            let cycle_ctx = ctx.clone();
            let mut cycle_stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(every);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = interval.tick() => {
                            tokio::select! {
                                _ = cycle::run_scheduled(&cycle_ctx) => {}
                                _ = cycle_stop.wait_for(|stop| *stop) => break,
                            }
                        }
                        _ = cycle_stop.changed() => break,
                    }
                }
            })
        });

        // The event dispatcher: sequencing, webhook and email delivery, transfer expiry.
        let dispatcher =
            ctx.settings.events.dispatcher.then(|| {
                tokio::spawn(crate::events::dispatcher::run(ctx.clone(), stop_rx.clone()))
            });

        let http_state = HttpState {
            store: ctx.store.clone(),
            draining: draining_rx,
            metrics: ctx.metrics.clone(),
        };
        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route(
                "/webhooks/stripe",
                webhook::route(ctx.clone())
                    .layer(DefaultBodyLimit::max(limits.max_webhook_body_bytes)),
            )
            .with_state(http_state)
            // The gRPC request timeout bounds the HTTP handlers too: a webhook or a scrape
            // stuck behind a lock answers 503 and its transaction rolls back (dropped).
            .layer(
                tower::ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
                        (StatusCode::SERVICE_UNAVAILABLE, "request timed out")
                    }))
                    .timeout(limits.request_timeout),
            );
        let mut http_stop = stop_rx.clone();
        let http_server = axum::serve(http, router).with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|stop| *stop).await;
        });

        let mut grpc_stop = stop_rx.clone();
        // tonic's own message limits stay as a backstop behind the limit layer's.
        let max = limits.max_message_bytes;
        macro_rules! sized {
            ($service:expr) => {
                $service
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max)
            };
        }
        // The first layer is the outermost: the RPC span and metrics cover the limit and
        // auth layers' refusals too.
        let grpc_server = Server::builder()
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_max_header_list_size(limits.max_header_list_bytes)
            .layer(RpcLayer::new(ctx.metrics.clone()))
            .layer(limit_layer)
            .layer(AuthLayer::new(authenticator))
            .add_service(sized!(health_service))
            .add_service(sized!(reflection_v1))
            .add_service(sized!(reflection_v1alpha))
            .add_service(sized!(OrganizationServiceServer::new(Organizations::new(
                ctx.clone()
            ))))
            .add_service(sized!(BillingServiceServer::new(Billing::new(ctx.clone()))))
            .add_service(sized!(SubscriptionServiceServer::new(Subscriptions::new(
                ctx.clone()
            ))))
            .add_service(sized!(TenantTransferServiceServer::new(Transfers::new(
                ctx.clone()
            ))))
            // TCP_NODELAY: without it a response written in several segments waits for
            // the peer's delayed ACK (~40 ms per call).
            .serve_with_incoming_shutdown(
                TcpIncoming::from(grpc).with_nodelay(Some(true)),
                async move {
                    let _ = grpc_stop.wait_for(|stop| *stop).await;
                },
            );

        let (grpc_result, http_result) = tokio::join!(grpc_server, async { http_server.await });
        maintenance.abort();
        if let Some(dispatcher) = dispatcher {
            let _ = dispatcher.await;
        }
        if let Some(billing_cycle) = billing_cycle {
            billing_cycle.abort();
            let _ = billing_cycle.await;
        }
        ctx.store.clone().close().await;
        grpc_result.context("gRPC server failed")?;
        http_result.context("HTTP server failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}

#[derive(Clone)]
struct HttpState {
    store: Store,
    draining: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
}

/// `GET /metrics`: the Prometheus (OpenMetrics text) exposition.
async fn metrics(State(state): State<HttpState>) -> Response {
    match state.metrics.render(&state.store).await {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(error) => {
            tracing::warn!(%error, "encoding the metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if *state.draining.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if state.store.ping().await {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    }
}
