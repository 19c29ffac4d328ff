//! Serving: gRPC health, reflection v1 and v1alpha, the HTTP probes, and the drain on
//! shutdown.

use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;
use tenantry::proto;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    helpers::{Backend, TestApp, authed},
    on_both_backends,
};

const TENANTRY_SERVICES: [&str; 4] = [
    "tenantry.v1.OrganizationService",
    "tenantry.v1.BillingService",
    "tenantry.v1.SubscriptionService",
    "tenantry.v1.TenantTransferService",
];

async fn health(channel: &Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    let response = HealthClient::new(channel.clone())
        .check(request)
        .await?
        .into_inner();
    Ok(ServingStatus::try_from(response.status).expect("known serving status"))
}

/// A raw HTTP/1.1 GET on the HTTP port: the status code and the body.
async fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the HTTP port");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
        .await
        .expect("HTTP response in time")
        .expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Services listed by one reflection version, and whether it describes the
/// OrganizationService's file.
macro_rules! reflect {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let ask = |message| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message),
        };
        let requests = vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "tenantry.v1.OrganizationService".into(),
            )),
        ];
        let mut client = ServerReflectionClient::new($channel.clone());
        let mut responses = client
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .expect("reflection call")
            .into_inner();
        let mut services = Vec::new();
        let mut described = false;
        while let Some(response) = responses.message().await.expect("reflection response") {
            match response.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    services.extend(list.service.into_iter().map(|s| s.name));
                }
                Some(MessageResponse::FileDescriptorResponse(files)) => {
                    described = !files.file_descriptor_proto.is_empty();
                }
                other => panic!("unexpected reflection answer {other:?}"),
            }
        }
        (services, described)
    }};
}

on_both_backends!(
    health_reports_serving,
    reflection_v1_lists_the_services,
    reflection_v1alpha_lists_the_services,
    http_probes_answer_ok,
    health_turns_not_serving_while_draining,
    postgres_connections_send_without_delay,
    http_calls_past_the_request_timeout_answer_unavailable,
);

async fn health_reports_serving(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    assert_eq!(
        health(&app.channel, "").await.expect("overall health"),
        ServingStatus::Serving
    );
    for service in TENANTRY_SERVICES {
        assert_eq!(
            health(&app.channel, service).await.expect("service health"),
            ServingStatus::Serving,
            "{service}"
        );
    }
    let unknown = health(&app.channel, "no.such.Service")
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), Code::NotFound);
    app.stop().await;
}

async fn reflection_v1_lists_the_services(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (services, described) = reflect!(v1, app.channel);
    for service in TENANTRY_SERVICES.iter().chain(&["grpc.health.v1.Health"]) {
        assert!(
            services.iter().any(|s| s == service),
            "{service} missing from {services:?}"
        );
    }
    assert!(described, "no descriptor for the OrganizationService");
    app.stop().await;
}

async fn reflection_v1alpha_lists_the_services(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let (services, described) = reflect!(v1alpha, app.channel);
    for service in TENANTRY_SERVICES.iter().chain(&["grpc.health.v1.Health"]) {
        assert!(
            services.iter().any(|s| s == service),
            "{service} missing from {services:?}"
        );
    }
    assert!(described, "no descriptor for the OrganizationService");
    app.stop().await;
}

async fn http_probes_answer_ok(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    assert_eq!(http_get(app.http_port, "/healthz").await.0, 200);
    let (status, body) = http_get(app.http_port, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(http_get(app.http_port, "/no-such-page").await.0, 404);
    app.stop().await;
}

async fn health_turns_not_serving_while_draining(backend: Backend) {
    let drain = Duration::from_millis(1500);
    let Some(app) = TestApp::spawn_with(backend, |s| s.drain = drain).await else {
        return;
    };
    let channel = app.channel.clone();
    let http_port = app.http_port;
    let root = app.root();
    assert_eq!(
        health(&channel, "").await.expect("health"),
        ServingStatus::Serving
    );
    let started = Instant::now();
    let stopping = tokio::spawn(app.stop());
    let deadline = started + Duration::from_secs(5);
    loop {
        let status = health(&channel, "").await.expect("health during the drain");
        if status == ServingStatus::NotServing {
            break;
        }
        assert!(Instant::now() < deadline, "health never turned NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() < drain,
        "NOT_SERVING came only after the drain"
    );
    for service in TENANTRY_SERVICES {
        assert_eq!(
            health(&channel, service).await.expect("service health"),
            ServingStatus::NotServing,
            "{service}"
        );
    }
    // Still answering while draining: readiness says go away, calls are still served.
    assert_eq!(http_get(http_port, "/readyz").await.0, 503);
    assert_eq!(http_get(http_port, "/healthz").await.0, 200);
    let request = authed(
        proto::GetOrganizationRequest {
            organization_id: "internal".into(),
        },
        &root,
    );
    let served =
        proto::organization_service_client::OrganizationServiceClient::new(channel.clone())
            .get_organization(request)
            .await;
    assert!(served.is_ok(), "a call during the drain failed: {served:?}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stops after the drain")
        .expect("stop task");
    assert!(started.elapsed() >= drain, "stopped before the drain ended");
    assert!(
        TcpStream::connect(("127.0.0.1", http_port)).await.is_err(),
        "HTTP still listening"
    );
    assert!(
        health(&channel, "").await.is_err(),
        "gRPC still answering after stop"
    );
}

/// The server's PostgreSQL sockets have `TCP_NODELAY` (vendor/sqlx-core: sqlx 0.9.0 no
/// longer sets it, and a statement over one TLS record then waited ~40 ms for the
/// server's delayed ACK). The test process's own sockets to the database port are
/// inspected: every one belongs to a sqlx pool of this process.
async fn postgres_connections_send_without_delay(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    if backend == Backend::Postgres {
        let url = crate::helpers::postgres_url().expect("postgres url");
        let Some(port) = tcp_port(&url) else {
            eprintln!("postgres_connections_send_without_delay: {url} is not a TCP URL, skipped");
            app.stop().await;
            return;
        };
        // Hold connections open while the sockets are read.
        let held = app.store.write().await.expect("a pooled connection");
        let mut seen = 0;
        for entry in std::fs::read_dir("/proc/self/fd").expect("fd list") {
            let Some(fd) = entry
                .ok()
                .and_then(|e| e.file_name().to_str()?.parse::<i32>().ok())
            else {
                continue;
            };
            // SAFETY: the descriptor is only borrowed for two getsockopt calls; if another
            // test closes it meanwhile they fail with EBADF and it is skipped.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let socket = socket2::SockRef::from(&fd);
            let Some(peer) = socket.peer_addr().ok().and_then(|a| a.as_socket()) else {
                continue;
            };
            if peer.port() != port {
                continue;
            }
            let Ok(nodelay) = socket.tcp_nodelay() else {
                continue;
            };
            assert!(nodelay, "a connection to {peer} has Nagle's algorithm on");
            seen += 1;
        }
        assert!(seen > 0, "no connection to the database port was found");
        drop(held);
    }
    app.stop().await;
}

/// The port of a `postgres://user@host:port/db` URL (5432 if absent); `None` for a
/// Unix-socket URL.
fn tcp_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit('@').next()?;
    if host_port.is_empty() || url.contains("host=/") {
        return None;
    }
    match host_port.rsplit_once(':') {
        Some((_, port)) => port.parse().ok(),
        None => Some(5432),
    }
}

/// The HTTP port shares the request timeout: a scrape stuck behind a lock answers 503
/// and the next one, once the lock is gone, 200. Only PostgreSQL can make a read wait
/// (SQLite readers never wait for a writer in WAL mode).
async fn http_calls_past_the_request_timeout_answer_unavailable(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |settings| {
        settings.limits.request_timeout = Duration::from_millis(500);
    })
    .await
    else {
        return;
    };
    if backend == Backend::Postgres {
        let lock = app.store.write().await.expect("transaction");
        lock.execute_unprepared("LOCK TABLE email_messages IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock the table the scrape counts");
        let (status, body) = http_get(app.http_port, "/metrics").await;
        assert_eq!((status, body.as_str()), (503, "request timed out"));
        drop(lock);
    }
    let (status, body) = http_get(app.http_port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("tenantry_outbox_backlog"), "{body}");
    app.stop().await;
}
