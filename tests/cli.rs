//! The `tenantry` binary: refusing to start without keys, `serve --dev` (persisted
//! secret, printed token), `token`, `migrate status`, and graceful exit on SIGTERM.

#[path = "support/process.rs"]
mod process;

use std::{path::Path, time::Duration};

use process::{
    bearer, connect, create_organization, drain, free_port, output, sqlite_url, stdout_of,
    tenantry, terminate,
};
use tenantry::proto::{
    GetOrganizationRequest, Organization, organization_service_client::OrganizationServiceClient,
};
use tokio::{process::Child, sync::mpsc, time::timeout};
use tonic::{Request, transport::Channel};

/// `tenantry serve` on `dir`'s own SQLite database, in dev mode when `dev`.
fn serve(dir: &Path, grpc: u16, http: u16, dev: bool) -> tokio::process::Command {
    let mut command = process::serve(grpc, http, &sqlite_url(dir), dir);
    if dev {
        command.arg("--dev");
    }
    command
}

/// Reads the child's output until the printed `export TOKEN=` line; keeps draining it
/// afterwards so the child never blocks on a full pipe.
async fn printed_token(child: &mut Child) -> String {
    let (lines, mut received) = mpsc::unbounded_channel();
    drain(child, move |line| {
        // Nobody listens once the token is read: later lines are dropped.
        let _ = lines.send(line);
    });
    timeout(Duration::from_secs(60), async {
        while let Some(line) = received.recv().await {
            if let Some(token) = line.trim().strip_prefix("export TOKEN=") {
                return token.to_owned();
            }
        }
        panic!("the server exited without printing a token");
    })
    .await
    .expect("token printed in time")
}

/// A `tenantry serve --dev` process, its printed token and a channel to it.
struct DevServer {
    child: Child,
    token: String,
    channel: Channel,
}

/// Starts a dev-mode server on `dir`'s database (with `catalogue` if any) and waits
/// until it printed its token and accepts connections.
async fn start_dev(dir: &Path, catalogue: Option<&Path>) -> DevServer {
    let (grpc, http) = (free_port(), free_port());
    let mut command = serve(dir, grpc, http, true);
    if let Some(path) = catalogue {
        command.arg("--catalogue").arg(path);
    }
    let mut child = command.spawn().expect("spawn");
    let token = printed_token(&mut child).await;
    let channel = connect(&mut child, grpc)
        .await
        .expect("the server accepts connections");
    DevServer {
        child,
        token,
        channel,
    }
}

impl DevServer {
    /// CreateOrganization of `name` with the printed token, expected to succeed.
    async fn create_org(&self, name: &str) -> Organization {
        OrganizationServiceClient::new(self.channel.clone())
            .create_organization(bearer(create_organization(name), &self.token))
            .await
            .expect("create organization")
            .into_inner()
            .organization
            .expect("organization")
    }
}

/// How long a server may take to stop after SIGTERM.
const STOP: Duration = Duration::from_secs(30);

#[tokio::test]
async fn serve_without_keys_refuses_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("dir");
    let refused = output(&mut serve(dir.path(), free_port(), free_port(), false)).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("no token verification key"),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("--dev"),
        "the message says how to fix it: {stderr}"
    );
}

#[tokio::test]
async fn dev_mode_prints_a_working_token_persists_its_secret_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = start_dev(dir.path(), None).await;
    // Created with the printed token.
    let created = server.create_org("Acme Corp").await;
    assert_eq!(created.slug, "acme-corp");
    terminate(&mut server.child, STOP).await;
    let secret =
        std::fs::read_to_string(dir.path().join("tenantry-dev-secret")).expect("secret persisted");

    // `tenantry token` signs with the persisted dev secret; a restarted dev server
    // (same secret, same database) accepts it.
    let minted = stdout_of(
        tenantry()
            .args(["token", "--role", "CONFIG_ADMIN", "--org", "acme-corp"])
            .args(["--sub", "ada"])
            .args(["--data-dir", &dir.path().display().to_string()]),
    )
    .await
    .trim()
    .to_owned();

    let mut server = start_dev(dir.path(), None).await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tenantry-dev-secret")).expect("secret"),
        secret,
        "the dev secret is reused, not regenerated"
    );
    let fetched = OrganizationServiceClient::new(server.channel.clone())
        .get_organization(bearer(
            GetOrganizationRequest {
                organization_id: "acme-corp".into(),
            },
            &minted,
        ))
        .await
        .expect("the minted CONFIG_ADMIN token reads its organization")
        .into_inner();
    assert_eq!(fetched.organization.expect("org").id, created.id);
    terminate(&mut server.child, STOP).await;

    let database_url = sqlite_url(dir.path());
    let text =
        stdout_of(tenantry().args(["migrate", "--database-url", &database_url, "status"])).await;
    assert!(
        text.contains("applied  m20261123_000001_organizations"),
        "{text}"
    );
    assert!(!text.contains("pending"), "{text}");
}

#[tokio::test]
async fn the_default_database_is_tenantry_db_in_the_working_directory_in_wal_mode() {
    let dir = tempfile::tempdir().expect("dir");
    let (grpc, http) = (free_port(), free_port());
    // No --database-url and no --data-dir: the defaults are what this test is about.
    let mut child = tenantry()
        .current_dir(dir.path())
        .args(["serve", "--dev", "--drain-seconds", "0"])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .spawn()
        .expect("spawn");
    let _ = printed_token(&mut child).await;
    let db = dir.path().join("tenantry.db");
    assert!(
        db.exists(),
        "tenantry.db is created in the working directory"
    );
    let store = tenantry::storage::Store::connect(
        &format!("sqlite://{}", db.display()),
        1,
        std::sync::Arc::new(tenantry::domain::clock::SystemClock),
    )
    .await
    .expect("open");
    use sea_orm::ConnectionTrait;
    let row = store
        .db()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            "PRAGMA journal_mode",
        ))
        .await
        .expect("pragma")
        .expect("row");
    let mode: String = row.try_get_by_index(0).expect("mode");
    assert_eq!(mode.to_lowercase(), "wal");
    terminate(&mut child, STOP).await;
}

#[tokio::test]
async fn payments_confirm_completes_a_manual_purchase_exactly_once() {
    use tenantry::proto::{
        BuyCreditsRequest, GetBalanceRequest, Money, billing_service_client::BillingServiceClient,
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut server = start_dev(dir.path(), None).await;
    let (org, token) = (server.create_org("Acme Corp").await, &server.token);
    let mut billing = BillingServiceClient::new(server.channel.clone());
    let bought = billing
        .buy_credits(bearer(
            BuyCreditsRequest {
                organization_id: org.id.clone(),
                amount: Some(Money {
                    currency_code: "USD".into(),
                    amount: "25.00".into(),
                }),
                request_id: "buy-1".into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("buy credits")
        .into_inner();
    let database_url = sqlite_url(dir.path());
    let payments = || {
        let mut command = tenantry();
        command.args(["payments", "--database-url", &database_url, "confirm"]);
        command
    };
    for _ in 0..2 {
        let stdout = stdout_of(payments().arg(&bought.payment_intent_id)).await;
        assert!(stdout.contains(&bought.transaction_id), "{stdout}");
        assert!(stdout.contains("SUCCEEDED, 25.00 USD"), "{stdout}");
        let balance = billing
            .get_balance(bearer(
                GetBalanceRequest {
                    organization_id: org.id.clone(),
                },
                token,
            ))
            .await
            .expect("balance")
            .into_inner();
        assert_eq!(balance.balance.expect("balance").amount, "25.00");
    }
    let unknown = output(payments().arg("pi_manual_nope")).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not found"));
    terminate(&mut server.child, STOP).await;
}

#[tokio::test]
async fn serve_with_a_bad_catalogue_refuses_to_start_naming_each_problem() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[plans]]\nid = \"Pro\"\nname = \"Pro\"\ntier_rank = 1\nprices = { USD = { month = \"9.999\" } }\n",
    )
    .expect("write catalogue");
    // Bounded by `output`: a server that started anyway fails the test.
    let refused = output(
        serve(dir.path(), free_port(), free_port(), true)
            .arg("--catalogue")
            .arg(&path),
    )
    .await;
    assert!(
        !refused.status.success(),
        "a bad catalogue must stop the start"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for needle in [
        "bad.toml",
        "plans[0].id",
        "plans[0].prices.USD.month",
        "needs a plan with id \"free\"",
    ] {
        assert!(stderr.contains(needle), "{needle} not in stderr: {stderr}");
    }
    let missing = output(
        serve(dir.path(), free_port(), free_port(), true)
            .arg("--catalogue")
            .arg(dir.path().join("nowhere.yaml")),
    )
    .await;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nowhere.yaml"));
}

#[tokio::test]
async fn serve_with_a_yaml_catalogue_sells_its_plans() {
    use tenantry::proto::{
        ListPlansRequest, subscription_service_client::SubscriptionServiceClient,
    };
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("catalogue.yaml");
    std::fs::write(
        &path,
        "plans:\n  - id: free\n    name: Free\n    tier_rank: 0\n    prices: { USD: { month: \"0\" } }\n  - id: growth\n    name: Growth\n    tier_rank: 5\n    prices: { USD: { month: \"19.50\", year: \"195.00\" } }\n    limits: { max_agents: 7 }\naddons: []\n",
    )
    .expect("write catalogue");
    let mut server = start_dev(dir.path(), Some(&path)).await;
    let plans = SubscriptionServiceClient::new(server.channel.clone())
        .list_plans(Request::new(ListPlansRequest::default()))
        .await
        .expect("ListPlans needs no credentials")
        .into_inner()
        .plans;
    let ids: Vec<&str> = plans.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["free", "growth"]);
    let growth = &plans[1];
    assert_eq!(growth.limits.expect("limits").max_agents, Some(7));
    let amounts: Vec<&str> = growth
        .prices
        .iter()
        .map(|p| p.price.as_ref().expect("price").amount.as_str())
        .collect();
    assert_eq!(amounts, ["19.50", "195.00"]);
    terminate(&mut server.child, STOP).await;
}

#[tokio::test]
async fn billing_cycle_closes_due_periods_once_and_prints_a_json_summary() {
    use tenantry::proto::{
        BillingInterval, CreateSubscriptionRequest,
        subscription_service_client::SubscriptionServiceClient,
    };
    let dir = tempfile::tempdir().expect("dir");
    let mut server = start_dev(dir.path(), None).await;
    let (org, token) = (server.create_org("Cycle Corp").await, &server.token);
    let created = SubscriptionServiceClient::new(server.channel.clone())
        .create_subscription(bearer(
            CreateSubscriptionRequest {
                organization_id: org.id.clone(),
                plan_id: "pro".into(),
                interval: BillingInterval::Month as i32,
                trial_days: 0,
                request_id: "sub-1".into(),
            },
            token,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    assert!(created.invoice.is_some(), "the first period is invoiced");
    terminate(&mut server.child, STOP).await;

    let database_url = sqlite_url(dir.path());
    let at = (chrono::Utc::now() + chrono::Duration::days(40))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let run = |args: Vec<String>| {
        let mut command = tenantry();
        command
            .args(["billing-cycle", "--database-url", &database_url])
            .args(args);
        async move { output(&mut command).await }
    };
    let summary = |output: &std::process::Output| -> serde_json::Value {
        assert!(
            output.status.success(),
            "{} {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("stdout is the JSON summary")
    };
    let first = summary(&run(vec!["--at".into(), at.clone()]).await);
    assert_eq!(first["at"], at.as_str());
    assert_eq!(first["periods_closed"], 1);
    assert_eq!(first["invoice_ids"].as_array().map(Vec::len), Some(1));
    assert!(
        first["invoice_ids"][0]
            .as_str()
            .is_some_and(|id| id.starts_with("inv_"))
    );
    assert_eq!(
        first["invoices_paid"], 0,
        "no credits: the renewal stays OPEN"
    );
    assert_eq!(first["failed"], 0);

    // The same instant again, for the organization by slug: nothing left to close.
    let again = summary(
        &run(vec![
            "--at".into(),
            at.clone(),
            "--organization".into(),
            org.slug.clone(),
        ])
        .await,
    );
    assert_eq!(again["periods_closed"], 0);
    assert_eq!(again["invoice_ids"].as_array().map(Vec::len), Some(0));

    let bad = run(vec!["--at".into(), "yesterday".into()]).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));
    let too_early = run(vec!["--at".into(), "1990-01-01T00:00:00Z".into()]).await;
    assert!(!too_early.status.success());
    let stderr = String::from_utf8_lossy(&too_early.stderr);
    assert!(
        stderr.contains("--at must be from 2000-01-01 to 20 years from now"),
        "{stderr}"
    );
    let unknown = run(vec!["--organization".into(), "no-such-org".into()]).await;
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("organization no-such-org not found"),
        "{stderr}"
    );
}
