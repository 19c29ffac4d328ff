//! OpenTelemetry export of the real `tenantry` binary: a local OTLP trace receiver (the
//! collector's TraceService) gets each call's server span, joined to the caller's W3C
//! trace, with the resource from the environment and nothing secret or SQL in it; the
//! JSON logs carry the same trace and span ids; without an endpoint (or with an
//! unreachable one) the server serves and stops normally.

use std::{
    net::TcpListener,
    path::Path,
    process::Stdio,
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
use tenantry::{
    auth::jwt::{self, MintClaims},
    proto::{
        CreateOrganizationRequest, Organization,
        organization_service_client::OrganizationServiceClient,
    },
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    task::JoinHandle,
    time::timeout,
};
use tonic::{Code, Request, Response, Status, transport::Channel};

const BIN: &str = env!("CARGO_BIN_EXE_tenantry");
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `tenantry serve` with JSON logs, debug RPC logs and no OTel settings inherited.
fn serve(dir: &Path, grpc: u16) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args([
            "--database-url",
            &format!("sqlite://{}", dir.join("t.db").display()),
        ])
        .args(["--data-dir", &dir.display().to_string()])
        .args(["--jwt-secret", SECRET, "--log-format", "json"])
        .args(["--drain-seconds", "0"])
        .env("RUST_LOG", "info,tenantry::rpc=debug")
        .env_remove("TENANTRY_JWT_SECRET")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_TRACES_SAMPLER",
    ] {
        command.env_remove(name);
    }
    command
}

/// Collects the child's stdout and stderr lines until it exits.
fn capture(child: &mut Child) -> (Arc<Mutex<Vec<String>>>, Vec<JoinHandle<()>>) {
    fn read(
        out: impl AsyncRead + Unpin + Send + 'static,
        lines: Arc<Mutex<Vec<String>>>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut reader = BufReader::new(out).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().expect("lock").push(line);
            }
        })
    }
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = read(child.stdout.take().expect("stdout"), lines.clone());
    let stderr = read(child.stderr.take().expect("stderr"), lines.clone());
    (lines, vec![stdout, stderr])
}

async fn connect(grpc: u16) -> OrganizationServiceClient<Channel> {
    for _ in 0..300 {
        if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
            .expect("endpoint")
            .connect()
            .await
        {
            return OrganizationServiceClient::new(channel);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server did not accept connections");
}

fn root_admin_token() -> String {
    let now = chrono::Utc::now().timestamp();
    jwt::mint(
        SECRET.as_bytes(),
        &MintClaims {
            sub: "otlp-test".into(),
            org: "internal".into(),
            roles: vec!["ROOT_ADMIN".into()],
            iss: "tenantry".into(),
            aud: "tenantry".into(),
            exp: now + 600,
            iat: now,
            email: None,
        },
    )
    .expect("mint")
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
    let mut request = Request::new(CreateOrganizationRequest {
        organization: Some(Organization {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let metadata = request.metadata_mut();
    let traceparent = format!("00-{trace}-{span}-01");
    metadata.insert("traceparent", traceparent.parse().expect("traceparent"));
    if let Some(token) = token {
        let bearer = format!("Bearer {token}");
        metadata.insert("authorization", bearer.parse().expect("header"));
    }
    let response = orgs.create_organization(request).await?.into_inner();
    Ok(response.organization.expect("organization"))
}

/// SIGTERM, then a graceful exit within `within`; waits for the output readers too.
async fn terminate(mut child: Child, readers: Vec<JoinHandle<()>>, within: Duration) {
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = timeout(within, child.wait())
        .await
        .expect("exits in time after SIGTERM")
        .expect("wait");
    assert!(exit.success(), "graceful exit after SIGTERM, got {exit:?}");
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
    let mut child = serve(dir.path(), grpc)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{receiver}"),
        )
        .env("OTEL_SERVICE_NAME", "tenantry-test")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
        // Only the flush at shutdown can deliver the spans.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .spawn()
        .expect("spawn");
    let (lines, readers) = capture(&mut child);
    let mut orgs = connect(grpc).await;
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
    terminate(child, readers, Duration::from_secs(30)).await;

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
    let mut orgs = connect(grpc).await;
    let caller = parent();
    create(&mut orgs, Some(&root_admin_token()), "Quiet Corp", &caller)
        .await
        .expect("create organization");
    let started = Instant::now();
    terminate(child, readers, Duration::from_secs(30)).await;
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
    let mut child = serve(dir.path(), grpc)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{collector}"),
        )
        .spawn()
        .expect("spawn");
    let (lines, readers) = capture(&mut child);
    let mut orgs = connect(grpc).await;
    create(
        &mut orgs,
        Some(&root_admin_token()),
        "Lonely Corp",
        &parent(),
    )
    .await
    .expect("calls are served while the collector is silent");
    terminate(child, readers, Duration::from_secs(20)).await;
    let lines = lines.lock().expect("lock");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("spans") && l.contains("WARN")),
        "the failed flush is logged: {lines:#?}"
    );
    drop(silent);
}
