//! Test harness: `TestApp::spawn(backend)` starts tenantry with the production wiring on
//! loopback ports chosen by the OS, on a fresh SQLite file or a fresh PostgreSQL database.

#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use sea_orm::{ConnectionTrait, Database};
use tenantry::{
    config::Settings,
    domain::clock::{Clock, SystemClock},
    grpc::Ctx,
    proto::{
        billing_service_client::BillingServiceClient,
        organization_service_client::OrganizationServiceClient,
        subscription_service_client::SubscriptionServiceClient,
        tenant_transfer_service_client::TenantTransferServiceClient,
    },
    startup::Application,
    storage::Store,
};
use tokio::sync::oneshot;
use tonic::{Request, metadata::MetadataValue, transport::Channel};

/// Environment variable with the PostgreSQL server URL for tests.
pub const PG_URL_VAR: &str = "TENANTRY_TEST_DATABASE_URL";
/// The HS256 secret every test server trusts.
pub const SECRET: &[u8] = b"test-secret-of-at-least-32-bytes!!";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL URL, or `None` when the PostgreSQL tests must be skipped. In CI
/// (`CI=true`) a missing URL is a failure, never a skip.
pub fn postgres_url() -> Option<String> {
    match std::env::var(PG_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").map(|v| v != "true").unwrap_or(true),
                "{PG_URL_VAR} must be set in CI: the PostgreSQL suite may not be skipped"
            );
            // Written straight to the process's stderr so the test harness does not
            // swallow it: a skipped PostgreSQL test must be visible.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr().lock(),
                "SKIPPED: PostgreSQL variant (set {PG_URL_VAR} to run it)"
            );
            None
        }
    }
}

/// Creates a fresh database on the PostgreSQL server at `server_url`; returns its URL
/// and name.
pub async fn fresh_postgres_database_named(server_url: &str) -> (String, String) {
    let name = format!("tenantry_test_{}", uuid::Uuid::now_v7().simple());
    let admin = Database::connect(server_url)
        .await
        .expect("connect to the PostgreSQL test server");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    let _ = admin.close().await;
    let (base, _) = server_url
        .rsplit_once('/')
        .expect("database URL with a path");
    (format!("{base}/{name}"), name)
}

/// Drops a test database (best effort; `.ci/run` also clears leftovers).
pub async fn drop_postgres_database(server_url: &str, name: &str) {
    if let Ok(admin) = Database::connect(server_url).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
        let _ = admin.close().await;
    }
}

/// A running tenantry for one test.
pub struct TestApp {
    pub backend: Backend,
    pub grpc_port: u16,
    pub http_port: u16,
    pub store: Store,
    pub channel: Channel,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// PostgreSQL server URL and database name, dropped by `stop`.
    postgres: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts a server on `backend`; `None` when that backend is not available here.
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts a server with adjusted settings.
    pub async fn spawn_with(
        backend: Backend,
        adjust: impl FnOnce(&mut Settings),
    ) -> Option<TestApp> {
        Self::spawn_with_clock(backend, Arc::new(SystemClock), adjust).await
    }

    /// Starts a server on an injected clock (e.g. a `FixedClock`) with adjusted settings.
    pub async fn spawn_with_clock(
        backend: Backend,
        clock: Arc<dyn Clock>,
        adjust: impl FnOnce(&mut Settings),
    ) -> Option<TestApp> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, postgres) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("tenantry.db").display()),
                None,
            ),
            Backend::Postgres => {
                let server = postgres_url()?;
                let (url, name) = fresh_postgres_database_named(&server).await;
                (url, Some((server, name)))
            }
        };
        let mut settings = Settings::local(url, SECRET);
        adjust(&mut settings);
        let app = Application::build_with_clock(settings, clock)
            .await
            .expect("build application");
        let grpc_port = app.grpc_port();
        let http_port = app.http_port();
        let store = app.store().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect to the test server");
        Some(TestApp {
            backend,
            grpc_port,
            http_port,
            store,
            channel,
            shutdown: Some(tx),
            server: Some(server),
            postgres,
            _dir: dir,
        })
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Some((server_url, name)) = self.postgres.take() {
            drop_postgres_database(&server_url, &name).await;
        }
    }

    pub fn orgs(&self) -> OrganizationServiceClient<Channel> {
        OrganizationServiceClient::new(self.channel.clone())
    }

    pub fn billing(&self) -> BillingServiceClient<Channel> {
        BillingServiceClient::new(self.channel.clone())
    }

    pub fn subscriptions(&self) -> SubscriptionServiceClient<Channel> {
        SubscriptionServiceClient::new(self.channel.clone())
    }

    pub fn transfers(&self) -> TenantTransferServiceClient<Channel> {
        TenantTransferServiceClient::new(self.channel.clone())
    }

    /// A token for `role` in `org` (id or slug) with subject `sub`.
    pub fn token_for(&self, role: &str, org: &str, sub: &str, email: Option<&str>) -> String {
        crate::process::mint_token_for(SECRET, role, org, sub, email)
    }

    /// A token for `role` in `org`.
    pub fn token(&self, role: &str, org: &str) -> String {
        self.token_for(role, org, &format!("{}-user", role.to_lowercase()), None)
    }

    /// A root-admin token.
    pub fn root(&self) -> String {
        self.token("ROOT_ADMIN", "internal")
    }

    /// A context over this server's database with default settings, as another replica
    /// (or `tenantry billing-cycle`) builds one.
    pub fn replica_ctx(&self) -> Ctx {
        Ctx::new(self.store.clone(), Settings::local(String::new(), SECRET))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Wraps a message with a bearer credential (token or API key).
pub fn authed<T>(message: T, credential: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {credential}")
        .parse()
        .expect("header value");
    request.metadata_mut().insert("authorization", value);
    request
}

/// The `ErrorInfo.reason` of a status, if any.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// The `ErrorInfo.metadata` value for `key`.
pub fn metadata(status: &tonic::Status, key: &str) -> Option<String> {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .and_then(|i| i.metadata.get(key).cloned())
}

/// The fields named by `BadRequest` violations.
pub fn violations(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// Declares async test functions `fn(Backend)` and instantiates each on both backends:
/// `sqlite::name` always runs; `postgres::name` runs when the PostgreSQL URL is set.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::helpers::postgres_url().is_some() {
                        super::$name($crate::helpers::Backend::Postgres).await;
                    }
                }
            )*
        }
    };
}
