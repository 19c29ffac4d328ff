//! The `tenantry` binary: refusing to start without keys, `serve --dev` (persisted
//! secret, printed token), `token`, `migrate status`, and graceful exit on SIGTERM.

use std::{net::TcpListener, path::Path, process::Stdio, time::Duration};

use tenantry::proto::{
    CreateOrganizationRequest, GetOrganizationRequest, Organization,
    organization_service_client::OrganizationServiceClient,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    time::timeout,
};
use tonic::{Request, transport::Channel};

const BIN: &str = env!("CARGO_BIN_EXE_tenantry");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn serve(dir: &Path, grpc: u16, http: u16, dev: bool) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args([
            "--database-url",
            &format!("sqlite://{}", dir.join("t.db").display()),
        ])
        .args(["--data-dir", &dir.display().to_string()])
        .args(["--drain-seconds", "0"])
        .env_remove("TENANTRY_JWT_SECRET")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if dev {
        command.arg("--dev");
    }
    command
}

/// Reads the child's stdout until the printed `export TOKEN=` line.
async fn printed_token(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let token = timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if let Some(token) = line.trim().strip_prefix("export TOKEN=") {
                return token.to_owned();
            }
        }
        panic!("the server exited without printing a token");
    })
    .await
    .expect("token printed in time");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    token
}

/// A channel to the server on `grpc`, waiting until it accepts connections.
async fn connect(grpc: u16) -> Channel {
    for _ in 0..100 {
        if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
            .expect("endpoint")
            .connect()
            .await
        {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server did not accept connections");
}

async fn client(grpc: u16) -> OrganizationServiceClient<Channel> {
    OrganizationServiceClient::new(connect(grpc).await)
}

/// CreateOrganization of `name` with `token`, expected to succeed.
async fn create_org(
    orgs: &mut OrganizationServiceClient<Channel>,
    token: &str,
    name: &str,
) -> Organization {
    orgs.create_organization(bearer(
        CreateOrganizationRequest {
            organization: Some(Organization {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        token,
    ))
    .await
    .expect("create organization")
    .into_inner()
    .organization
    .expect("organization")
}

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

async fn terminate(child: &mut Child) {
    let pid = child.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert!(exit.success(), "graceful exit after SIGTERM, got {exit:?}");
}

#[tokio::test]
async fn serve_without_keys_refuses_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("dir");
    let output = serve(dir.path(), free_port(), free_port(), false)
        .output()
        .await
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
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
    let (grpc, http) = (free_port(), free_port());
    let mut child = serve(dir.path(), grpc, http, true).spawn().expect("spawn");
    let token = printed_token(&mut child).await;
    let mut orgs = client(grpc).await;
    // Created with the printed token.
    let created = create_org(&mut orgs, &token, "Acme Corp").await;
    assert_eq!(created.slug, "acme-corp");
    terminate(&mut child).await;
    let secret =
        std::fs::read_to_string(dir.path().join("tenantry-dev-secret")).expect("secret persisted");

    // `tenantry token` signs with the persisted dev secret; a restarted dev server
    // (same secret, same database) accepts it.
    let minted = Command::new(BIN)
        .args([
            "token",
            "--role",
            "CONFIG_ADMIN",
            "--org",
            "acme-corp",
            "--sub",
            "ada",
        ])
        .args(["--data-dir", &dir.path().display().to_string()])
        .env_remove("TENANTRY_JWT_SECRET")
        .output()
        .await
        .expect("token");
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let minted = String::from_utf8(minted.stdout)
        .expect("utf8")
        .trim()
        .to_owned();

    let (grpc, http) = (free_port(), free_port());
    let mut child = serve(dir.path(), grpc, http, true)
        .spawn()
        .expect("spawn again");
    let _ = printed_token(&mut child).await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tenantry-dev-secret")).expect("secret"),
        secret,
        "the dev secret is reused, not regenerated"
    );
    let mut orgs = client(grpc).await;
    let fetched = orgs
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
    terminate(&mut child).await;

    let status = Command::new(BIN)
        .args([
            "migrate",
            "--database-url",
            &format!("sqlite://{}", dir.path().join("t.db").display()),
            "status",
        ])
        .output()
        .await
        .expect("migrate status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success());
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
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args(["serve", "--dev", "--drain-seconds", "0"])
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .env_remove("DATABASE_URL")
        .env_remove("TENANTRY_JWT_SECRET")
        .env_remove("TENANTRY_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
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
    terminate(&mut child).await;
}

#[tokio::test]
async fn payments_confirm_completes_a_manual_purchase_exactly_once() {
    use tenantry::proto::{
        BuyCreditsRequest, GetBalanceRequest, Money, billing_service_client::BillingServiceClient,
    };
    let dir = tempfile::tempdir().expect("dir");
    let (grpc, http) = (free_port(), free_port());
    let mut child = serve(dir.path(), grpc, http, true).spawn().expect("spawn");
    let token = printed_token(&mut child).await;
    let org = create_org(&mut client(grpc).await, &token, "Acme Corp").await;
    let mut billing = BillingServiceClient::new(connect(grpc).await);
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
            &token,
        ))
        .await
        .expect("buy credits")
        .into_inner();
    let database_url = format!("sqlite://{}", dir.path().join("t.db").display());
    for _ in 0..2 {
        let output = Command::new(BIN)
            .args(["payments", "--database-url", &database_url, "confirm"])
            .arg(&bought.payment_intent_id)
            .env_remove("DATABASE_URL")
            .output()
            .await
            .expect("payments confirm");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(&bought.transaction_id), "{stdout}");
        assert!(stdout.contains("SUCCEEDED, 25.00 USD"), "{stdout}");
        let balance = billing
            .get_balance(bearer(
                GetBalanceRequest {
                    organization_id: org.id.clone(),
                },
                &token,
            ))
            .await
            .expect("balance")
            .into_inner();
        assert_eq!(balance.balance.expect("balance").amount, "25.00");
    }
    let unknown = Command::new(BIN)
        .args([
            "payments",
            "--database-url",
            &database_url,
            "confirm",
            "pi_manual_nope",
        ])
        .env_remove("DATABASE_URL")
        .output()
        .await
        .expect("payments confirm");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not found"));
    terminate(&mut child).await;
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
    let output = timeout(
        Duration::from_secs(60),
        serve(dir.path(), free_port(), free_port(), true)
            .arg("--catalogue")
            .arg(&path)
            .output(),
    )
    .await
    .expect("exits at once")
    .expect("run");
    assert!(
        !output.status.success(),
        "a bad catalogue must stop the start"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "bad.toml",
        "plans[0].id",
        "plans[0].prices.USD.month",
        "needs a plan with id \"free\"",
    ] {
        assert!(stderr.contains(needle), "{needle} not in stderr: {stderr}");
    }
    let missing = serve(dir.path(), free_port(), free_port(), true)
        .arg("--catalogue")
        .arg(dir.path().join("nowhere.yaml"))
        .output()
        .await
        .expect("run");
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
    let (grpc, http) = (free_port(), free_port());
    let mut child = serve(dir.path(), grpc, http, true)
        .arg("--catalogue")
        .arg(&path)
        .spawn()
        .expect("spawn");
    let _ = printed_token(&mut child).await;
    let plans = SubscriptionServiceClient::new(connect(grpc).await)
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
    terminate(&mut child).await;
}

#[tokio::test]
async fn billing_cycle_closes_due_periods_once_and_prints_a_json_summary() {
    use tenantry::proto::{
        BillingInterval, CreateSubscriptionRequest,
        subscription_service_client::SubscriptionServiceClient,
    };
    let dir = tempfile::tempdir().expect("dir");
    let (grpc, http) = (free_port(), free_port());
    let mut child = serve(dir.path(), grpc, http, true).spawn().expect("spawn");
    let token = printed_token(&mut child).await;
    let org = create_org(&mut client(grpc).await, &token, "Cycle Corp").await;
    let created = SubscriptionServiceClient::new(connect(grpc).await)
        .create_subscription(bearer(
            CreateSubscriptionRequest {
                organization_id: org.id.clone(),
                plan_id: "pro".into(),
                interval: BillingInterval::Month as i32,
                trial_days: 0,
                request_id: "sub-1".into(),
            },
            &token,
        ))
        .await
        .expect("subscribe")
        .into_inner();
    assert!(created.invoice.is_some(), "the first period is invoiced");
    terminate(&mut child).await;

    let database_url = format!("sqlite://{}", dir.path().join("t.db").display());
    let at = (chrono::Utc::now() + chrono::Duration::days(40))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let run = |args: Vec<String>| {
        let database_url = database_url.clone();
        async move {
            Command::new(BIN)
                .args(["billing-cycle", "--database-url", &database_url])
                .args(args)
                .env_remove("DATABASE_URL")
                .output()
                .await
                .expect("billing-cycle")
        }
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
