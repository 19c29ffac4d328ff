//! OpenTelemetry export of the real `tenantry` binary: a local OTLP trace receiver (the
//! collector's TraceService) gets each call's server span, joined to the caller's W3C
//! trace, with the resource from the environment and nothing secret or SQL in it; the
//! JSON logs carry the same trace and span ids; without an endpoint (or with an
//! unreachable one) the server serves and stops normally.

#[path = "support/process.rs"]
mod process;

use std::{
    net::TcpListener,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind},
};
use process::{
    bearer, connect, create_organization, drain, free_port, mint_token, sqlite_url, terminate,
};
use tenantry::proto::{Organization, organization_service_client::OrganizationServiceClient};
use tokio::{
    process::{Child, Command},
    task::JoinHandle,
    time::timeout,
};
use tonic::{Code, Request, Response, Status, transport::Channel};

const SECRET: &str = "otlp-test-signing-secret-0123456789abcdef";

type Exports = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// Stores every export it receives.
#[derive(Clone, Default)]
struct Receiver(Exports);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.lock().expect("lock").push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts a receiver on 127.0.0.1; returns its port and what it receives.
async fn spawn_receiver() -> (u16, Exports) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let port = listener.local_addr().expect("addr").port();
    let receiver = Receiver::default();
    let exports = receiver.0.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (port, exports)
}

/// `tenantry serve` with JSON logs, debug RPC logs and no OTel settings inherited.
fn serve(dir: &Path, grpc: u16) -> Command {
    let mut command = process::serve(grpc, free_port(), &sqlite_url(dir), dir);
    command
        .args(["--jwt-secret", SECRET, "--log-format", "json"])
        .env("RUST_LOG", "info,tenantry::rpc=debug");
    command
}

/// `serve` exporting its spans to the OTLP collector on `collector`.
fn serve_exporting(dir: &Path, grpc: u16, collector: u16) -> Command {
    let mut command = serve(dir, grpc);
    let endpoint = format!("http://127.0.0.1:{collector}");
    command.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    command
}

/// Collects the child's stdout and stderr lines until it exits.
fn capture(child: &mut Child) -> (Arc<Mutex<Vec<String>>>, Vec<JoinHandle<()>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let readers = drain(child, {
        let lines = lines.clone();
        move |line| lines.lock().expect("lock").push(line)
    });
    (lines, readers)
}

/// An OrganizationService client of the server `child` on `grpc`, once it is up.
async fn orgs_of(child: &mut Child, grpc: u16) -> OrganizationServiceClient<Channel> {
    let channel = connect(child, grpc)
        .await
        .expect("server accepts connections");
    OrganizationServiceClient::new(channel)
}

fn root_admin_token() -> String {
    mint_token(SECRET.as_bytes(), "ROOT_ADMIN", "internal", "otlp-test")
}

/// A random W3C parent: (trace id, span id) in lowercase hex.
fn parent() -> (String, String) {
    (
        format!("{:032x}", rand::random::<u128>() | 1),
        format!("{:016x}", rand::random::<u64>() | 1),
    )
}

/// CreateOrganization `name` under the W3C parent `(trace, span)`, with `token` if any.
async fn create(
    orgs: &mut OrganizationServiceClient<Channel>,
    token: Option<&str>,
    name: &str,
    (trace, span): &(String, String),
) -> Result<Organization, Status> {
    let message = create_organization(name);
    let mut request = match token {
        Some(token) => bearer(message, token),
        None => Request::new(message),
    };
    let traceparent = format!("00-{trace}-{span}-01");
    let traceparent = traceparent.parse().expect("traceparent");
    request.metadata_mut().insert("traceparent", traceparent);
    let response = orgs.create_organization(request).await?.into_inner();
    Ok(response.organization.expect("organization"))
}

/// SIGTERM, then a graceful exit within `within`; waits for the output readers too.
async fn stop(mut child: Child, readers: Vec<JoinHandle<()>>, within: Duration) {
    terminate(&mut child, within).await;
    for reader in readers {
        timeout(Duration::from_secs(10), reader)
            .await
            .expect("output closed")
            .expect("reader");
    }
}

/// The JSON log lines whose top-level `trace_id` is `trace`.
fn log_lines_of(lines: &Mutex<Vec<String>>, trace: &str) -> Vec<serde_json::Value> {
    let lines = lines.lock().expect("lock");
    lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["trace_id"] == trace)
        .collect()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text(attributes: &[KeyValue], key: &str) -> String {
    match attribute(attributes, key) {
        Some(Value::StringValue(s)) => s.clone(),
        other => panic!("{key} is not a string: {other:?}"),
    }
}

/// The exported span of trace `trace`, checked against the contract's common fields.
fn server_span<'a>(spans: &[&'a Span], (trace, span): &(String, String)) -> &'a Span {
    let trace_bytes = hex::decode(trace).expect("hex");
    let found = spans
        .iter()
        .find(|s| s.trace_id == trace_bytes)
        .unwrap_or_else(|| panic!("no span of trace {trace} among {spans:#?}"));
    assert_eq!(found.parent_span_id, hex::decode(span).expect("hex"));
    assert_eq!(
        found.name,
        "tenantry.v1.OrganizationService/CreateOrganization"
    );
    assert_eq!(found.kind, SpanKind::Server as i32);
    let attributes = &found.attributes;
    assert_eq!(text(attributes, "rpc.system"), "grpc");
    assert_eq!(
        text(attributes, "rpc.service"),
        "tenantry.v1.OrganizationService"
    );
    assert_eq!(text(attributes, "rpc.method"), "CreateOrganization");
    found
}

#[tokio::test]
async fn a_call_span_reaches_the_collector_in_the_callers_trace_and_the_logs_carry_its_ids() {
    let (receiver, exports) = spawn_receiver().await;
    let dir = tempfile::tempdir().expect("dir");
    let grpc = free_port();
    let mut child = serve_exporting(dir.path(), grpc, receiver)
        .env("OTEL_SERVICE_NAME", "tenantry-test")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        // Only the flush at shutdown can deliver the spans.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .spawn()
        .expect("spawn");
    let (lines, readers) = capture(&mut child);
    let mut orgs = orgs_of(&mut child, grpc).await;
    let token = root_admin_token();
    let (created_in, refused_in) = (parent(), parent());
    let org = create(&mut orgs, Some(&token), "Traced Corp", &created_in)
        .await
        .expect("create organization");
    assert!(org.id.starts_with("org_"));
    let refused = create(&mut orgs, None, "Nobody Corp", &refused_in)
        .await
        .expect_err("no credentials");
    assert_eq!(refused.code(), Code::Unauthenticated);
    stop(child, readers, Duration::from_secs(30)).await;

    let exports = exports.lock().expect("lock").clone();
    let resources: Vec<_> = exports.iter().flat_map(|e| &e.resource_spans).collect();
    assert!(!resources.is_empty(), "spans were flushed at shutdown");
    let spans: Vec<&Span> = resources
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    for resource in &resources {
        let attributes = &resource.resource.as_ref().expect("resource").attributes;
        assert_eq!(text(attributes, "service.name"), "tenantry-test");
        assert_eq!(text(attributes, "deployment.environment"), "test");
        assert_eq!(
            text(attributes, "service.version"),
            env!("CARGO_PKG_VERSION")
        );
    }
    for span in &spans {
        assert!(
            text(&span.attributes, "target").starts_with("tenantry"),
            "only tenantry spans are exported: {span:#?}"
        );
    }
    let dump = format!("{exports:?}");
    for secret in [
        token.as_str(),
        SECRET,
        "Bearer",
        "SELECT ",
        "INSERT INTO",
        "UPDATE ",
    ] {
        assert!(!dump.contains(secret), "{secret:?} in the exported spans");
    }

    let created = server_span(&spans, &created_in);
    let attributes = &created.attributes;
    assert_eq!(text(attributes, "tenantry.caller"), "ROOT_ADMIN");
    assert!(text(attributes, "tenantry.org").starts_with("org_"));
    assert_eq!(
        attribute(attributes, "rpc.grpc.status_code"),
        Some(&Value::IntValue(0))
    );
    let refused = server_span(&spans, &refused_in);
    assert_eq!(
        attribute(&refused.attributes, "rpc.grpc.status_code"),
        Some(&Value::IntValue(Code::Unauthenticated as i64))
    );

    let logged = log_lines_of(&lines, &created_in.0);
    assert!(
        logged
            .iter()
            .any(|line| line["fields"]["message"] == "rpc finished"
                && line["span_id"] == hex::encode(&created.span_id)),
        "a JSON log line carries the call's trace and span ids: {logged:#?}"
    );
    assert!(!log_lines_of(&lines, &refused_in.0).is_empty());
}

#[tokio::test]
async fn without_an_endpoint_the_server_serves_and_still_logs_the_callers_trace_id() {
    let dir = tempfile::tempdir().expect("dir");
    let grpc = free_port();
    let mut child = serve(dir.path(), grpc).spawn().expect("spawn");
    let (lines, readers) = capture(&mut child);
    let mut orgs = orgs_of(&mut child, grpc).await;
    let caller = parent();
    create(&mut orgs, Some(&root_admin_token()), "Quiet Corp", &caller)
        .await
        .expect("create organization");
    let started = Instant::now();
    stop(child, readers, Duration::from_secs(30)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no exporter to wait for"
    );
    let logged = log_lines_of(&lines, &caller.0);
    assert!(
        logged
            .iter()
            .any(|line| line["fields"]["message"] == "rpc finished"),
        "{:#?}",
        lines.lock().expect("lock")
    );
    let lines = lines.lock().expect("lock");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("\"level\":\"ERROR\"") || l.contains("flush")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn a_collector_that_never_answers_delays_the_shutdown_only_a_few_seconds() {
    // Accepts connections (the kernel's backlog) but never speaks HTTP/2.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let collector = silent.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("dir");
    let grpc = free_port();
    let mut child = serve_exporting(dir.path(), grpc, collector)
        .spawn()
        .expect("spawn");
    let (lines, readers) = capture(&mut child);
    let mut orgs = orgs_of(&mut child, grpc).await;
    create(
        &mut orgs,
        Some(&root_admin_token()),
        "Lonely Corp",
        &parent(),
    )
    .await
    .expect("calls are served while the collector is silent");
    stop(child, readers, Duration::from_secs(20)).await;
    let lines = lines.lock().expect("lock");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("spans") && l.contains("WARN")),
        "the failed flush is logged: {lines:#?}"
    );
    drop(silent);
}
