//! Shared by the test crates that run the real `tenantry` binary as a child process
//! (`tests/cli.rs`, `tests/otlp.rs`, and `tests/api/{replicas,crash}.rs`): loopback
//! ports, a `tenantry` command with no configuration inherited from the developer's or
//! CI's environment, the common `serve` flags, waiting until a server is up (failing at
//! once when it exits instead), reading its output so it never blocks on a full pipe,
//! stopping it with SIGTERM, and tokens it trusts. What only one test needs (dev-mode
//! token scraping, OTel settings, replica flags, SIGKILL checks) stays in that test.
//!
//! Included with `#[path]` by each of those crates, so it is compiled once per crate.
//! Each crate uses a different subset (the api crate has its own `authed` and never
//! stops a server gracefully, cli mints no tokens, otlp runs no short-lived commands),
//! so what one crate leaves unused is not dead code; hence, for this file only:
#![allow(dead_code)]

use std::{
    future::Future,
    net::TcpListener,
    path::Path,
    process::{Output, Stdio},
    time::Duration,
};

use tenantry::{
    auth::jwt::{self, MintClaims},
    proto::{CreateOrganizationRequest, Organization},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    task::JoinHandle,
    time::{sleep, timeout},
};
use tonic::{Request, transport::Channel};

/// The `tenantry` binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_tenantry");

/// Environment variables `tenantry` reads as configuration: none may leak into a test's
/// child from the shell that runs the tests.
const CONFIGURATION: [&str; 15] = [
    "DATABASE_URL",
    "TENANTRY_JWT_SECRET",
    "TENANTRY_JWT_PUBLIC_KEYS",
    "TENANTRY_JWKS_FILE",
    "TENANTRY_NO_MIGRATE",
    "TENANTRY_CATALOGUE",
    "TENANTRY_DATA_DIR",
    "STRIPE_SECRET_KEY",
    "STRIPE_API_BASE",
    "STRIPE_WEBHOOK_SECRET",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
];

/// Polls of a starting server, 100 ms apart: a minute, for a loaded 2-core machine.
const START_POLLS: usize = 600;
const POLL: Duration = Duration::from_millis(100);
/// The longest a short-lived command (`migrate`, `token`, `billing-cycle` …) may run.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// A loopback port that was free a moment ago (another process may still take it before
/// the server binds it; tests that start many servers retry on fresh ports).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `sqlite://<dir>/t.db`: a test's own SQLite database.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("t.db").display())
}

/// A `tenantry` command with no configuration inherited from the environment, stdin
/// closed, stdout and stderr piped, killed when dropped (a failing test leaves no
/// server behind).
pub fn tenantry() -> Command {
    let mut command = Command::new(BIN);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in CONFIGURATION {
        command.env_remove(name);
    }
    command
}

/// `tenantry serve` on 127.0.0.1 ports `grpc` and `http`, on `database_url`, with its
/// data dir `dir` and no drain wait at shutdown; other flags are the caller's.
pub fn serve(grpc: u16, http: u16, database_url: &str, dir: &Path) -> Command {
    let mut command = tenantry();
    command
        .arg("serve")
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--database-url", database_url])
        .args(["--data-dir", &dir.display().to_string()])
        .args(["--drain-seconds", "0"]);
    command
}

/// Runs a short-lived command to completion with its output captured; panics naming its
/// arguments when it cannot run or does not finish in time.
pub async fn output(command: &mut Command) -> Output {
    let args = args_of(command);
    timeout(RUN_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("tenantry {args:?} did not finish in time"))
        .unwrap_or_else(|e| panic!("tenantry {args:?} did not run: {e}"))
}

/// The stdout of a short-lived command that must succeed (its stderr in the panic).
pub async fn stdout_of(command: &mut Command) -> String {
    let args = args_of(command);
    let output = output(command).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tenantry {args:?}: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The arguments of `command`, for failure messages.
fn args_of(command: &Command) -> Vec<String> {
    let args = command.as_std().get_args();
    args.map(|a| a.to_string_lossy().into_owned()).collect()
}

/// Polls `probe` until it gives a value; an error when `child` exits first or the
/// server is not up within a minute.
async fn wait_for<T, P, F>(child: &mut Child, mut probe: P) -> Result<T, String>
where
    P: FnMut() -> F,
    F: Future<Output = Option<T>>,
{
    for _ in 0..START_POLLS {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}"));
        }
        if let Some(value) = probe().await {
            return Ok(value);
        }
        sleep(POLL).await;
    }
    Err(format!("not up within {:?}", POLL * START_POLLS as u32))
}

/// A channel to the server `child` on `grpc`, once it accepts connections.
pub async fn connect(child: &mut Child, grpc: u16) -> Result<Channel, String> {
    let endpoint = Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2));
    wait_for(child, || {
        let endpoint = endpoint.clone();
        async move { endpoint.connect().await.ok() }
    })
    .await
}

/// Waits until the server `child` answers `/readyz` on `http` (its database reachable
/// and migrated), which accepting gRPC connections alone does not say.
pub async fn ready(child: &mut Child, http: u16) -> Result<(), String> {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{http}/readyz");
    wait_for(child, || {
        let probe = client.get(&url).timeout(Duration::from_secs(2)).send();
        async move {
            probe
                .await
                .is_ok_and(|r| r.status().is_success())
                .then_some(())
        }
    })
    .await
}

/// Reads the child's piped stdout and stderr line by line until they close, handing each
/// line to `line`, so the child never blocks on a full pipe; returns the reader tasks.
pub fn drain<L>(child: &mut Child, line: L) -> Vec<JoinHandle<()>>
where
    L: FnMut(String) + Clone + Send + 'static,
{
    fn read<L>(out: impl AsyncRead + Unpin + Send + 'static, mut line: L) -> JoinHandle<()>
    where
        L: FnMut(String) + Send + 'static,
    {
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(text)) = lines.next_line().await {
                line(text);
            }
        })
    }
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(read(stdout, line.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(read(stderr, line));
    }
    readers
}

/// Sends SIGTERM and asserts a graceful (zero) exit within `within`.
pub async fn terminate(child: &mut Child, within: Duration) {
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
}

/// A token signed with `secret` for `role` in `org` (id or slug) with subject `sub`,
/// valid for an hour.
pub fn mint_token(secret: &[u8], role: &str, org: &str, sub: &str) -> String {
    mint_token_for(secret, role, org, sub, None)
}

/// [`mint_token`] with an email claim; an empty `role` mints a token with no roles.
pub fn mint_token_for(
    secret: &[u8],
    role: &str,
    org: &str,
    sub: &str,
    email: Option<&str>,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = MintClaims {
        sub: sub.to_owned(),
        org: org.to_owned(),
        roles: if role.is_empty() {
            vec![]
        } else {
            vec![role.to_owned()]
        },
        iss: "tenantry".into(),
        aud: "tenantry".into(),
        exp: now + 3600,
        iat: now,
        email: email.map(str::to_owned),
    };
    jwt::mint(secret, &claims).expect("mint token")
}

/// `message` with `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().expect("header value");
    request.metadata_mut().insert("authorization", value);
    request
}

/// CreateOrganization of an organization named `name`, all else left to the server.
pub fn create_organization(name: &str) -> CreateOrganizationRequest {
    CreateOrganizationRequest {
        organization: Some(Organization {
            name: name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}
