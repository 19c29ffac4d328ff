//! Telemetry: a span and metrics for every RPC ([`rpc`]), the OpenTelemetry pipeline
//! and log output ([`otel`]), and the Prometheus registry behind `GET /metrics`
//! ([`metrics`]).

pub mod metrics;
pub mod otel;
pub mod rpc;
