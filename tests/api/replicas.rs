//! Three `tenantry serve` processes on one fresh PostgreSQL database (migrated once by
//! `tenantry migrate up`, as the chart's hook Job does, then served with
//! `--no-migrate`), driven through all three at once: 150 spenders on one
//! organization's credits, one payment completed through every replica and the Stripe
//! webhook together, usage recorded across a SUSPEND_USAGE spend cap, the renewal cycle
//! run by every replica and two `tenantry billing-cycle` processes as of one instant,
//! and tenant transfers accepted and cancelled from different replicas. Outcomes are
//! checked through the RPCs and straight in the database; afterwards every domain event
//! must be sequenced exactly once and no replica may have logged an error or a panic.
//! PostgreSQL only: skipped without `TENANTRY_TEST_DATABASE_URL` (a failure when
//! `CI=true`).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::{StreamExt, future::join_all, stream};
use sea_orm::{
    ColumnTrait, Database, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
};
use tenantry::{
    domain::{
        billing::{InvoiceStatus, TxnKind, TxnStatus},
        events::types,
        ids::{self, IdKind},
    },
    proto::{
        self, UsageEventStatus, UsageMetric, billing_service_client::BillingServiceClient,
        organization_service_client::OrganizationServiceClient,
        subscription_service_client::SubscriptionServiceClient,
        tenant_transfer_service_client::TenantTransferServiceClient,
    },
    storage::entities::{
        audit_entries, billing_accounts, credit_transactions, email_messages, event_sequence,
        invoices, organizations, outbox_events, spend_alerts, stripe_events, subscription_periods,
        subscriptions, tenant_transfers, usage_counters, usage_events,
    },
};
use tokio::{
    process::{Child, Command},
    time::timeout,
};
use tonic::{Code, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    fake_stripe::{FakeStripe, SECRET_KEY, WEBHOOK_SECRET, event, sign},
    helpers::{
        SECRET, authed, drop_postgres_database, fresh_postgres_database_named, postgres_url, reason,
    },
    organizations::{named, org_uuid, usd},
    process::{self, free_port, mint_token, ready, stdout_of},
};

const REPLICAS: usize = 3;
/// `--credit-overdraft` of every replica and `billing-cycle` run.
const OVERDRAFT: &str = "10.00";
const OVERDRAFT_MICROS: i64 = 10_000_000;
/// Pooled connections per process: 3 replicas stay far below PostgreSQL's 100.
const POOL: &str = "8";
/// The most one scenario may take on a loaded 2-core machine.
const SCENARIO_LIMIT: Duration = Duration::from_secs(240);
/// Lines of output kept per process for a failure report.
const KEPT_LINES: usize = 200;

// ---------------------------------------------------------------------------
// The cluster: processes, their output, the shared database
// ---------------------------------------------------------------------------

/// What a process wrote (the last lines), and every line that reports an error or a
/// panic.
#[derive(Clone, Default)]
struct Output {
    tail: Arc<Mutex<VecDeque<String>>>,
    alarms: Arc<Mutex<Vec<String>>>,
}

impl Output {
    /// Reads the child's stdout and stderr until it exits, so it never blocks on a pipe.
    fn drain(&self, child: &mut Child) {
        let output = self.clone();
        process::drain(child, move |line| output.push(line));
    }

    fn push(&self, line: String) {
        if line.contains("panicked") || line.contains("\"level\":\"ERROR\"") {
            let mut alarms = self.alarms.lock().expect("alarms lock");
            if alarms.len() < KEPT_LINES {
                alarms.push(line.clone());
            }
        }
        let mut tail = self.tail.lock().expect("tail lock");
        if tail.len() == KEPT_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }

    fn tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .expect("tail lock")
            .iter()
            .cloned()
            .collect()
    }

    fn alarms(&self) -> Vec<String> {
        self.alarms.lock().expect("alarms lock").clone()
    }
}

/// One `tenantry serve` process.
struct Replica {
    http: u16,
    channel: Channel,
    output: Output,
    /// Killed when dropped.
    _child: Child,
}

/// The fresh test database, dropped (connections forced closed) when this is dropped,
/// also when a scenario panicked.
struct TestDatabase {
    server: String,
    name: String,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(drop_postgres_database(&server, &name));
            }
        })
        .join();
    }
}

/// Three replicas on one database, a fake Stripe they all talk to, and a direct
/// connection for checks. Fields drop in order: processes first, the database last.
struct Cluster {
    replicas: Vec<Replica>,
    db: DatabaseConnection,
    url: String,
    fake: FakeStripe,
    _dir: tempfile::TempDir,
    _database: TestDatabase,
}

/// A `tenantry` command with no configuration inherited and only warnings logged.
fn tenantry() -> Command {
    let mut command = process::tenantry();
    command.env("RUST_LOG", "warn");
    command
}

/// One attempt at starting a replica on free loopback ports; `migrate` lets it migrate
/// the database at start (the default of `tenantry serve`) instead of `--no-migrate`.
async fn spawn_replica(
    url: &str,
    dir: &Path,
    fake: &FakeStripe,
    migrate: bool,
) -> Result<Replica, String> {
    let secret = std::str::from_utf8(SECRET).expect("ASCII secret");
    let (grpc, http) = (free_port(), free_port());
    let stripe_base = fake.url();
    let mut command = process::serve(grpc, http, url, dir);
    command.env("RUST_LOG", "warn").args([
        "--db-max-connections",
        POOL,
        "--jwt-secret",
        secret,
        "--log-format",
        "json",
        "--credit-overdraft",
        OVERDRAFT,
        "--billing-cycle-interval-seconds",
        "0",
        "--stripe-secret-key",
        SECRET_KEY,
        "--stripe-api-base",
        &stripe_base,
        "--stripe-webhook-secret",
        WEBHOOK_SECRET,
    ]);
    if !migrate {
        command.arg("--no-migrate");
    }
    let mut child = command.spawn().expect("spawn tenantry serve");
    let output = Output::default();
    output.drain(&mut child);
    if let Err(why) = ready(&mut child, http).await {
        let _ = child.kill().await;
        return Err(format!("{why}:\n{}", output.tail().join("\n")));
    }
    let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect_lazy();
    Ok(Replica {
        http,
        channel,
        output,
        _child: child,
    })
}

/// Starts one replica on a migrated database, retrying on fresh ports when another
/// process took one between the probe and the bind.
async fn start_replica(url: &str, dir: &Path, fake: &FakeStripe) -> Replica {
    let mut failures = Vec::new();
    for _ in 0..3 {
        match spawn_replica(url, dir, fake, false).await {
            Ok(replica) => return replica,
            Err(why) => failures.push(why),
        }
    }
    panic!("a replica did not start:\n{}", failures.join("\n"));
}

impl Cluster {
    /// A fresh database migrated once, then three replicas started side by side.
    async fn start(server: &str) -> Cluster {
        let (url, name) = fresh_postgres_database_named(server).await;
        let database = TestDatabase {
            server: server.to_owned(),
            name,
        };
        let migrate = [
            "migrate",
            "--database-url",
            &url,
            "--db-max-connections",
            "2",
            "up",
        ];
        stdout_of(tenantry().args(migrate)).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let fake = FakeStripe::start().await;
        let replicas =
            join_all((0..REPLICAS).map(|_| start_replica(&url, dir.path(), &fake))).await;
        let db = Database::connect(url.as_str())
            .await
            .expect("connect to the test database");
        Cluster {
            replicas,
            db,
            url,
            fake,
            _dir: dir,
            _database: database,
        }
    }

    fn channel(&self, replica: usize) -> Channel {
        self.replicas[replica % REPLICAS].channel.clone()
    }

    fn billing(&self, replica: usize) -> BillingServiceClient<Channel> {
        BillingServiceClient::new(self.channel(replica))
    }

    fn orgs(&self, replica: usize) -> OrganizationServiceClient<Channel> {
        OrganizationServiceClient::new(self.channel(replica))
    }

    fn subscriptions(&self, replica: usize) -> SubscriptionServiceClient<Channel> {
        SubscriptionServiceClient::new(self.channel(replica))
    }

    fn transfers(&self, replica: usize) -> TenantTransferServiceClient<Channel> {
        TenantTransferServiceClient::new(self.channel(replica))
    }

    /// Every replica's error and panic lines.
    fn alarms(&self) -> Vec<String> {
        self.replicas
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                r.output
                    .alarms()
                    .into_iter()
                    .map(move |l| format!("{i}: {l}"))
            })
            .collect()
    }

    /// Every replica's last lines.
    fn tails(&self) -> String {
        self.replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("--- replica {i}\n{}", r.output.tail().join("\n")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A token for `role` in `org`, trusted by every replica.
fn token(role: &str, org: &str) -> String {
    mint_token(SECRET, role, org, &format!("{}-user", role.to_lowercase()))
}

fn root() -> String {
    token("ROOT_ADMIN", "internal")
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

type Scenario = fn(Arc<Cluster>) -> futures::future::BoxFuture<'static, ()>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_database_keep_money_usage_renewals_and_transfers_exact() {
    let Some(server) = postgres_url() else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED: replicas (three server processes need a PostgreSQL database)"
        );
        return;
    };
    let cluster = Arc::new(Cluster::start(&server).await);
    let scenarios: [(&str, Scenario); 5] = [
        ("spenders", |c| {
            Box::pin(spenders_never_overdraw_and_the_ledger_adds_up(c))
        }),
        ("payment", |c| {
            Box::pin(a_payment_completed_everywhere_credits_once(c))
        }),
        ("spend cap", |c| {
            Box::pin(usage_stops_one_event_past_the_cap_and_alerts_once(c))
        }),
        ("renewals", |c| {
            Box::pin(simultaneous_renewal_cycles_invoice_each_period_once(c))
        }),
        ("transfers", |c| {
            Box::pin(transfer_decisions_on_different_replicas_have_one_winner(c))
        }),
    ];
    let running: Vec<_> = scenarios
        .iter()
        .map(|(name, scenario)| {
            let run = timeout(SCENARIO_LIMIT, scenario(cluster.clone()));
            (*name, tokio::spawn(run))
        })
        .collect();
    let mut failures = Vec::new();
    for (name, handle) in running {
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => failures.push(format!("{name}: not done within {SCENARIO_LIMIT:?}")),
            Err(error) => failures.push(format!("{name}: {}", panic_message(error))),
        }
    }
    if failures.is_empty()
        && let Err(error) = tokio::spawn(every_event_is_sequenced_once(cluster.clone())).await
    {
        failures.push(format!("sequencing: {}", panic_message(error)));
    }
    let alarms = cluster.alarms();
    if !alarms.is_empty() {
        failures.push(format!("replicas logged errors: {alarms:#?}"));
    }
    if !failures.is_empty() {
        eprintln!("{}", cluster.tails());
        panic!("{}", failures.join("\n"));
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".into()),
        Err(error) => error.to_string(),
    }
}

/// Three replicas started together on a fresh database, each migrating at start (the
/// default without `--no-migrate`, e.g. `docker compose up --scale tenantry=3` or a
/// rolling update with new migrations and the chart's hook Job off), all come up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_together_on_a_fresh_database_all_come_up() {
    let Some(server) = postgres_url() else {
        return;
    };
    let (url, name) = fresh_postgres_database_named(&server).await;
    let _database = TestDatabase { server, name };
    let dir = tempfile::tempdir().expect("temp dir");
    let fake = FakeStripe::start().await;
    let started =
        join_all((0..REPLICAS).map(|_| spawn_replica(&url, dir.path(), &fake, true))).await;
    let failed: Vec<&str> = started
        .iter()
        .filter_map(|r| r.as_ref().err().map(String::as_str))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {REPLICAS} replicas did not start:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Shared calls and reads
// ---------------------------------------------------------------------------

/// CreateOrganization through replica 0 as the root admin.
async fn create_org(c: &Cluster, organization: proto::Organization) -> proto::Organization {
    let request = proto::CreateOrganizationRequest {
        organization: Some(organization),
        ..Default::default()
    };
    c.orgs(0)
        .create_organization(authed(request, &root()))
        .await
        .expect("create organization")
        .into_inner()
        .organization
        .expect("organization")
}

fn tenant_named(name: &str, parent_id: &str) -> proto::Organization {
    proto::Organization {
        kind: proto::OrganizationKind::Tenant as i32,
        parent_id: parent_id.into(),
        ..named(name)
    }
}

async fn gift(c: &Cluster, org_id: &str, amount: &str) {
    let request = proto::GiftCreditsRequest {
        organization_id: org_id.into(),
        amount: Some(usd(amount)),
        reason: "starting funds".into(),
        request_id: Uuid::now_v7().to_string(),
    };
    c.billing(0)
        .gift_credits(authed(request, &root()))
        .await
        .expect("gift credits");
}

/// GetBalance through `replica`: (balance, pending).
async fn balance(c: &Cluster, replica: usize, org_id: &str) -> (String, String) {
    let request = proto::GetBalanceRequest {
        organization_id: org_id.into(),
    };
    let response = c
        .billing(replica)
        .get_balance(authed(request, &root()))
        .await
        .expect("get balance")
        .into_inner();
    let amount = |m: Option<proto::Money>| m.expect("money").amount;
    (amount(response.balance), amount(response.pending))
}

async fn account_balance(c: &Cluster, org: Uuid) -> i64 {
    billing_accounts::Entity::find_by_id(org)
        .one(&c.db)
        .await
        .expect("read account")
        .expect("account row")
        .balance_micros
}

async fn ledger(c: &Cluster, org: Uuid) -> Vec<credit_transactions::Model> {
    credit_transactions::Entity::find()
        .filter(credit_transactions::Column::OrganizationId.eq(org))
        .order_by_asc(credit_transactions::Column::Id)
        .all(&c.db)
        .await
        .expect("read ledger")
}

fn succeeded_sum(rows: &[credit_transactions::Model]) -> i64 {
    rows.iter()
        .filter(|t| t.status == TxnStatus::Succeeded.as_str())
        .map(|t| t.amount_micros)
        .sum()
}

/// The balance is the sum of the SUCCEEDED entries and never went below the overdraft.
async fn assert_ledger_consistent(c: &Cluster, org: Uuid) -> Vec<credit_transactions::Model> {
    let rows = ledger(c, org).await;
    let balance = account_balance(c, org).await;
    assert_eq!(succeeded_sum(&rows), balance, "ledger sum = balance");
    let lowest = rows.iter().filter_map(|t| t.balance_after_micros).min();
    assert!(
        lowest.unwrap_or(0) >= -OVERDRAFT_MICROS,
        "the balance went to {lowest:?}"
    );
    rows
}

async fn audit_actions(c: &Cluster, target_id: &str) -> Vec<String> {
    audit_entries::Entity::find()
        .filter(audit_entries::Column::TargetId.eq(target_id))
        .order_by_asc(audit_entries::Column::CreateTime)
        .order_by_asc(audit_entries::Column::Id)
        .all(&c.db)
        .await
        .expect("read audit")
        .into_iter()
        .map(|e| e.action)
        .collect()
}

async fn events_of_type(c: &Cluster, org: Uuid, event_type: &str) -> Vec<outbox_events::Model> {
    outbox_events::Entity::find()
        .filter(outbox_events::Column::OrganizationId.eq(org))
        .filter(outbox_events::Column::EventType.eq(event_type))
        .all(&c.db)
        .await
        .expect("read outbox")
}

// ---------------------------------------------------------------------------
// 1. Spenders
// ---------------------------------------------------------------------------

/// Spenders per replica.
const SPENDERS: usize = 50;
const FUNDS: &str = "100.00";
const FUNDS_MICROS: i64 = 100_000_000;
const SPEND: &str = "1.00";
const SPEND_MICROS: i64 = 1_000_000;

/// One spender: its request id, its replica and, for half of them, the OPEN invoice it
/// pays (the others issue an invoice paid from credits in the same call).
#[derive(Debug, Clone)]
struct Spender {
    request_id: String,
    replica: usize,
    pays: Option<String>,
}

/// What a spend did.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spent {
    Paid {
        invoice: String,
        transaction: String,
    },
    LeftOpen {
        invoice: String,
    },
    Refused,
}

/// A spend as one replica answered it.
type Attempt = Result<Spent, Status>;

async fn issue(
    c: &Cluster,
    replica: usize,
    org_id: &str,
    request_id: &str,
    pay_from_credits: bool,
) -> Result<proto::Invoice, Status> {
    let request = proto::CreateInvoiceRequest {
        organization_id: org_id.into(),
        lines: vec![proto::CreateInvoiceLine {
            description: "one unit of work".into(),
            quantity: 1,
            unit_amount: Some(usd(SPEND)),
        }],
        pay_from_credits,
        request_id: request_id.into(),
        ..Default::default()
    };
    c.billing(replica)
        .create_invoice(authed(request, &root()))
        .await
        .map(|r| r.into_inner().invoice.expect("invoice"))
}

async fn spend(c: &Cluster, replica: usize, org_id: &str, who: &Spender) -> Attempt {
    let Some(invoice_id) = &who.pays else {
        let invoice = issue(c, replica, org_id, &who.request_id, true).await?;
        return Ok(if invoice.status == proto::InvoiceStatus::Paid as i32 {
            Spent::Paid {
                invoice: invoice.id,
                transaction: invoice.payment_transaction_id,
            }
        } else {
            Spent::LeftOpen {
                invoice: invoice.id,
            }
        });
    };
    let request = proto::PayInvoiceRequest {
        organization_id: org_id.into(),
        invoice_id: invoice_id.clone(),
        request_id: who.request_id.clone(),
    };
    match c
        .billing(replica)
        .pay_invoice(authed(request, &root()))
        .await
    {
        Ok(response) => {
            let response = response.into_inner();
            Ok(Spent::Paid {
                invoice: response.invoice.expect("invoice").id,
                transaction: response.transaction.expect("transaction").id,
            })
        }
        Err(status)
            if status.code() == Code::FailedPrecondition
                && reason(&status) == "INSUFFICIENT_CREDITS" =>
        {
            Ok(Spent::Refused)
        }
        Err(status) => Err(status),
    }
}

/// 50 spenders per replica, each sending its spend through its replica and, at the same
/// time, the same request (same request id) through the next one: exactly the spends
/// the funds and the overdraft cover succeed, each once.
async fn spenders_never_overdraw_and_the_ledger_adds_up(c: Arc<Cluster>) {
    let org = create_org(&c, tenant_named("Spender Co", "")).await;
    let half = REPLICAS * SPENDERS / 2;
    let prepared: Vec<String> = stream::iter(0..half)
        .map(|k| {
            let (c, org_id) = (c.clone(), org.id.clone());
            async move {
                issue(&c, k, &org_id, &format!("prepared-{k}"), false)
                    .await
                    .expect("prepare an open invoice")
                    .id
            }
        })
        .buffered(6)
        .collect()
        .await;
    gift(&c, &org.id, FUNDS).await;
    let spenders: Vec<Spender> = (0..SPENDERS)
        .flat_map(|i| (0..REPLICAS).map(move |r| (r, i)))
        .map(|(r, i)| Spender {
            request_id: format!("spend-{r}-{i}"),
            replica: r,
            pays: (i % 2 == 1).then(|| prepared[r * SPENDERS / 2 + i / 2].clone()),
        })
        .collect();
    let outcomes: Vec<(Spender, Attempt, Attempt)> = stream::iter(spenders.clone())
        .map(|who| {
            let (c, org_id) = (c.clone(), org.id.clone());
            async move {
                let (first, twin) = tokio::join!(
                    spend(&c, who.replica, &org_id, &who),
                    spend(&c, who.replica + 1, &org_id, &who),
                );
                (who, first, twin)
            }
        })
        .buffer_unordered(12)
        .collect()
        .await;

    let capacity = ((FUNDS_MICROS + OVERDRAFT_MICROS) / SPEND_MICROS) as usize;
    let mut paid: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (who, first, twin) in &outcomes {
        let id = &who.request_id;
        let first = first.as_ref().unwrap_or_else(|e| panic!("{id}: {e:?}"));
        let twin = twin
            .as_ref()
            .unwrap_or_else(|e| panic!("{id} (twin): {e:?}"));
        assert_eq!(first, twin, "{id}: both replicas answer the same spend");
        if let Spent::Paid {
            invoice,
            transaction,
        } = first
        {
            paid.insert(id.clone(), (invoice.clone(), transaction.clone()));
        }
    }
    assert_eq!(paid.len(), capacity, "exactly the covered spends succeed");

    // The database: the balance, the ledger and one entry per accepted spend.
    let org_id = org_uuid(&org.id);
    let balance = account_balance(&c, org_id).await;
    assert_eq!(balance, FUNDS_MICROS - capacity as i64 * SPEND_MICROS);
    assert_eq!(balance, -OVERDRAFT_MICROS);
    let rows = assert_ledger_consistent(&c, org_id).await;
    let payments: Vec<&credit_transactions::Model> = rows
        .iter()
        .filter(|t| t.kind == TxnKind::InvoicePayment.as_str())
        .collect();
    let mut by_request: BTreeMap<String, Vec<&credit_transactions::Model>> = BTreeMap::new();
    for entry in &payments {
        by_request
            .entry(entry.request_id.clone())
            .or_default()
            .push(entry);
    }
    assert!(
        by_request.values().all(|e| e.len() == 1),
        "a request id twice in the ledger"
    );
    assert_eq!(
        by_request.keys().collect::<Vec<_>>(),
        paid.keys().collect::<Vec<_>>(),
        "the ledger holds exactly the accepted spends"
    );
    for (request_id, (invoice, transaction)) in &paid {
        let entry = by_request[request_id][0];
        assert_eq!(&ids::encode(IdKind::Transaction, entry.id), transaction);
        assert_eq!(
            entry
                .invoice_id
                .map(|i| ids::encode(IdKind::Invoice, i))
                .as_ref(),
            Some(invoice)
        );
        assert_eq!(entry.amount_micros, -SPEND_MICROS);
    }
    // Each debit saw the balance the previous one left: none lost, none applied twice.
    let afters: BTreeSet<i64> = payments
        .iter()
        .filter_map(|t| t.balance_after_micros)
        .collect();
    let expected: BTreeSet<i64> = (1..=capacity as i64)
        .map(|k| FUNDS_MICROS - k * SPEND_MICROS)
        .collect();
    assert_eq!(afters, expected);

    let stored = invoices::Entity::find()
        .filter(invoices::Column::OrganizationId.eq(org_id))
        .all(&c.db)
        .await
        .expect("read invoices");
    assert_eq!(stored.len(), 2 * half, "one invoice per issuing request");
    let paid_rows: Vec<_> = stored
        .iter()
        .filter(|i| i.status == InvoiceStatus::Paid.as_str())
        .collect();
    assert_eq!(paid_rows.len(), capacity);
    for invoice in &paid_rows {
        let payment = invoice.payment_transaction_id.expect("paid by an entry");
        let entry = payments
            .iter()
            .find(|t| t.id == payment)
            .expect("its entry");
        assert_eq!(entry.invoice_id, Some(invoice.id));
    }
    assert!(
        stored
            .iter()
            .filter(|i| i.status != InvoiceStatus::Paid.as_str())
            .all(|i| i.status == InvoiceStatus::Open.as_str() && i.payment_transaction_id.is_none())
    );
    let audits = audit_entries::Entity::find()
        .filter(audit_entries::Column::OrganizationId.eq(org_id))
        .filter(audit_entries::Column::RequestId.starts_with("spend-"))
        .all(&c.db)
        .await
        .expect("read audit");
    let mut audited: HashMap<&str, usize> = HashMap::new();
    for entry in &audits {
        *audited.entry(entry.request_id.as_str()).or_default() += 1;
    }
    for who in &spenders {
        let expected = usize::from(who.pays.is_none() || paid.contains_key(&who.request_id));
        let found = audited.get(who.request_id.as_str()).copied().unwrap_or(0);
        assert_eq!(found, expected, "audit entries of {}", who.request_id);
    }

    // Every replica reports the same.
    for replica in 0..REPLICAS {
        assert_eq!(balance_amount(&c, replica, &org.id).await, "-10.00");
    }
    let request = proto::ListTransactionsRequest {
        organization_id: org.id.clone(),
        page_size: 500,
        ..Default::default()
    };
    let listed = c
        .billing(2)
        .list_transactions(authed(request, &root()))
        .await
        .expect("list transactions")
        .into_inner();
    assert_eq!(listed.transactions.len(), rows.len());
}

async fn balance_amount(c: &Cluster, replica: usize, org_id: &str) -> String {
    balance(c, replica, org_id).await.0
}

// ---------------------------------------------------------------------------
// 2. One payment, completed everywhere
// ---------------------------------------------------------------------------

/// BuyCredits sent through every replica at once with one request id: all get the
/// same purchase (one PENDING entry, one gateway intent).
async fn buy(c: &Cluster, org_id: &str, amount: &str, gateway: &str) -> proto::BuyCreditsResponse {
    let request = proto::BuyCreditsRequest {
        organization_id: org_id.into(),
        amount: Some(usd(amount)),
        gateway: gateway.into(),
        payment_method_id: if gateway == "stripe" {
            "pm_card_visa".into()
        } else {
            String::new()
        },
        request_id: format!("buy-{gateway}"),
    };
    let answers = join_all((0..REPLICAS).map(|replica| {
        let (mut client, request) = (c.billing(replica), request.clone());
        async move {
            client
                .buy_credits(authed(request, &root()))
                .await
                .expect("buy credits")
                .into_inner()
        }
    }))
    .await;
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "one purchase for one request id: {answers:#?}"
    );
    answers[0].clone()
}

async fn complete(
    c: &Cluster,
    replica: usize,
    org_id: &str,
    bought: &proto::BuyCreditsResponse,
    request_id: String,
) -> Result<proto::CompletePaymentResponse, Status> {
    let request = proto::CompletePaymentRequest {
        organization_id: org_id.into(),
        transaction_id: bought.transaction_id.clone(),
        payment_intent_id: bought.payment_intent_id.clone(),
        request_id,
    };
    c.billing(replica)
        .complete_payment(authed(request, &root()))
        .await
        .map(|r| r.into_inner())
}

/// POSTs a Stripe event, signed now, to a replica's webhook; the HTTP status.
async fn deliver(c: &Cluster, replica: usize, body: String) -> u16 {
    let signature = sign(WEBHOOK_SECRET, Utc::now().timestamp(), &body);
    reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/webhooks/stripe",
            c.replicas[replica % REPLICAS].http
        ))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .timeout(Duration::from_secs(60))
        .body(body)
        .send()
        .await
        .expect("webhook delivered")
        .status()
        .as_u16()
}

fn txn_status(t: &Option<proto::CreditTransaction>) -> proto::CreditTransactionStatus {
    t.as_ref().expect("transaction").status()
}

/// A Stripe payment that succeeded is completed by two CompletePayment calls per
/// replica and two webhook deliveries per replica (one event redelivered to all, one
/// event of its own each), all at once; then a manual payment is confirmed and
/// completed on every replica at once. Each credits exactly once.
async fn a_payment_completed_everywhere_credits_once(c: Arc<Cluster>) {
    let org = create_org(&c, tenant_named("Payer Co", "")).await;
    let bought = buy(&c, &org.id, "30.00", "stripe").await;
    let intent = c.fake.succeed(&bought.payment_intent_id);
    let redelivered = event("evt_replicated", "payment_intent.succeeded", &intent);
    let bodies: Vec<(usize, String)> = (0..REPLICAS)
        .flat_map(|r| {
            let own = event(
                &format!("evt_replica_{r}"),
                "payment_intent.succeeded",
                &intent,
            );
            [(r, redelivered.clone()), (r, own)]
        })
        .collect();
    let completions = join_all((0..2 * REPLICAS).map(|k| {
        let request_id = if k < REPLICAS {
            String::new()
        } else {
            format!("complete-{k}")
        };
        complete(&c, k, &org.id, &bought, request_id)
    }));
    let hooks = join_all(bodies.into_iter().map(|(r, body)| deliver(&c, r, body)));
    let (completions, hooks) = tokio::join!(completions, hooks);
    assert!(hooks.iter().all(|s| *s == 200), "webhook answers {hooks:?}");
    let completions: Vec<_> = completions
        .into_iter()
        .map(|r| r.expect("complete payment"))
        .collect();
    assert!(
        completions
            .iter()
            .all(|r| txn_status(&r.transaction) == proto::CreditTransactionStatus::Succeeded)
    );
    assert!(completions.iter().filter(|r| r.newly_credited).count() <= 1);

    let manual = buy(&c, &org.id, "20.00", "manual").await;
    let confirmations = join_all((0..REPLICAS).map(|r| {
        let request = proto::ConfirmManualPaymentRequest {
            organization_id: org.id.clone(),
            payment_intent_id: manual.payment_intent_id.clone(),
            note: "wire received".into(),
            request_id: format!("confirm-{r}"),
        };
        let mut client = c.billing(r);
        async move {
            client
                .confirm_manual_payment(authed(request, &root()))
                .await
                .map(|r| r.into_inner())
        }
    }));
    let completions =
        join_all((0..REPLICAS).map(|r| complete(&c, r, &org.id, &manual, String::new())));
    let (confirmations, completions) = tokio::join!(confirmations, completions);
    for confirmed in confirmations {
        let confirmed = confirmed.expect("confirm manual payment");
        assert_eq!(
            txn_status(&confirmed.transaction),
            proto::CreditTransactionStatus::Succeeded
        );
    }
    let completions: Vec<_> = completions
        .into_iter()
        .map(|r| r.expect("complete manual payment"))
        .collect();
    assert!(completions.iter().all(|r| matches!(
        txn_status(&r.transaction),
        proto::CreditTransactionStatus::Succeeded | proto::CreditTransactionStatus::Pending
    )));
    assert!(completions.iter().filter(|r| r.newly_credited).count() <= 1);

    let org_id = org_uuid(&org.id);
    let rows = assert_ledger_consistent(&c, org_id).await;
    assert_eq!(rows.len(), 2, "two purchases, nothing else: {rows:#?}");
    assert!(
        rows.iter()
            .all(|t| t.kind == TxnKind::Purchase.as_str()
                && t.status == TxnStatus::Succeeded.as_str())
    );
    let afters: BTreeSet<_> = rows.iter().filter_map(|t| t.balance_after_micros).collect();
    assert_eq!(afters, BTreeSet::from([30_000_000, 50_000_000]));
    assert_eq!(
        c.fake.intent_count(),
        1,
        "one Stripe intent for the purchase"
    );
    assert_eq!(account_balance(&c, org_id).await, 50_000_000);
    for purchase in [&bought, &manual] {
        let actions = audit_actions(&c, &purchase.transaction_id).await;
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert_eq!(actions[0], "BuyCredits");
    }
    assert_eq!(
        events_of_type(&c, org_id, types::PAYMENT_SUCCEEDED)
            .await
            .len(),
        2
    );
    let recorded: BTreeSet<String> = stripe_events::Entity::find()
        .filter(stripe_events::Column::PaymentIntentId.eq(bought.payment_intent_id.as_str()))
        .all(&c.db)
        .await
        .expect("read stripe events")
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut expected: BTreeSet<String> =
        (0..REPLICAS).map(|r| format!("evt_replica_{r}")).collect();
    expected.insert("evt_replicated".into());
    assert_eq!(recorded, expected, "each event recorded once");
    for replica in 0..REPLICAS {
        assert_eq!(
            balance(&c, replica, &org.id).await,
            ("50.00".to_owned(), "0.00".to_owned())
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Usage across the spend cap
// ---------------------------------------------------------------------------

/// Recorders per replica, and the events each records one after the other.
const RECORDERS: usize = 4;
const EVENTS_PER_RECORDER: usize = 10;
const EVENT_COST: &str = "0.07";
const EVENT_COST_MICROS: i64 = 70_000;
const CAP_MICROS: i64 = 1_000_000;

async fn record(
    c: &Cluster,
    replica: usize,
    org_id: &str,
    usage: proto::UsageEvent,
) -> proto::UsageEventResult {
    let request = proto::RecordUsageBatchRequest {
        organization_id: org_id.into(),
        events: vec![usage],
    };
    let mut results = c
        .billing(replica)
        .record_usage_batch(authed(request, &token("SYSTEM", "internal")))
        .await
        .expect("record usage")
        .into_inner()
        .results;
    assert_eq!(results.len(), 1);
    results.remove(0)
}

/// Twelve recorders (four per replica) record 0.07 events against a 1.00 SUSPEND_USAGE
/// cap; every third event is also sent through the next replica at the same time.
/// Exactly the events before the cap is reached are accepted (the last one may cross
/// it), each once, and each alert threshold fires once: one alert row, one event, one
/// email (delivered once) and one audit entry.
async fn usage_stops_one_event_past_the_cap_and_alerts_once(c: Arc<Cluster>) {
    let org = create_org(&c, tenant_named("Capped Co", "")).await;
    let request = proto::RegisterAgentRequest {
        organization_id: org.id.clone(),
        agent: Some(proto::Agent {
            name: "Meter".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let agent = c
        .orgs(1)
        .register_agent(authed(request, &root()))
        .await
        .expect("register agent")
        .into_inner()
        .agent
        .expect("agent");
    let request = proto::SetSpendLimitRequest {
        organization_id: org.id.clone(),
        monthly_spend_limit: Some(usd("1.00")),
        billing_alerts: Some(proto::BillingAlerts {
            alert_thresholds: vec![50, 80, 100],
            alert_emails: vec!["billing@example.com".into()],
            action_at_100: proto::SpendLimitAction::SuspendUsage as i32,
        }),
        etag: String::new(),
    };
    c.billing(2)
        .set_spend_limit(authed(request, &root()))
        .await
        .expect("set spend limit");

    let results: Vec<Vec<proto::UsageEventResult>> = stream::iter(0..REPLICAS * RECORDERS)
        .map(|recorder| {
            let (c, org_id, agent_id) = (c.clone(), org.id.clone(), agent.id.clone());
            async move {
                let replica = recorder % REPLICAS;
                let mut results = Vec::new();
                for k in 0..EVENTS_PER_RECORDER {
                    let id = format!("u-{recorder}-{k}");
                    let usage =
                        crate::usage::event(&id, &agent_id, UsageMetric::Tokens, 10, EVENT_COST);
                    if k % 3 == 0 {
                        let (a, b) = tokio::join!(
                            record(&c, replica, &org_id, usage.clone()),
                            record(&c, replica + 1, &org_id, usage),
                        );
                        results.extend([a, b]);
                    } else {
                        results.push(record(&c, replica, &org_id, usage).await);
                    }
                }
                results
            }
        })
        .buffer_unordered(REPLICAS * RECORDERS)
        .collect()
        .await;
    let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
    let mut duplicates = Vec::new();
    for result in results.iter().flatten() {
        match result.status() {
            UsageEventStatus::Accepted => {
                *accepted.entry(result.event_id.clone()).or_default() += 1
            }
            UsageEventStatus::Duplicate => duplicates.push(result.event_id.clone()),
            UsageEventStatus::Refused => {
                assert_eq!(result.reason, "SPEND_LIMIT_REACHED", "{result:?}")
            }
            other => panic!("unexpected status {other:?}"),
        }
    }
    assert!(
        accepted.values().all(|n| *n == 1),
        "an event accepted twice"
    );
    assert!(duplicates.iter().all(|id| accepted.contains_key(id)));
    // The first total at or past the cap stops usage: ceil(1.00 / 0.07) = 15 events.
    let allowed = (CAP_MICROS + EVENT_COST_MICROS - 1) / EVENT_COST_MICROS;
    assert_eq!(accepted.len() as i64, allowed);

    let org_id = org_uuid(&org.id);
    let counters = usage_counters::Entity::find()
        .filter(usage_counters::Column::OrganizationId.eq(org_id))
        .all(&c.db)
        .await
        .expect("read counters");
    let cost: i64 = counters.iter().map(|r| r.cost_micros).sum();
    assert_eq!(cost, allowed * EVENT_COST_MICROS);
    assert!(
        cost - CAP_MICROS < EVENT_COST_MICROS,
        "overshoot of more than one event"
    );
    assert_eq!(counters.iter().map(|r| r.events).sum::<i64>(), allowed);
    let stored = usage_events::Entity::find()
        .filter(usage_events::Column::OrganizationId.eq(org_id))
        .all(&c.db)
        .await
        .expect("read usage events");
    let stored_ids: Vec<&String> = stored.iter().map(|e| &e.event_id).collect();
    assert_eq!(stored_ids.len(), accepted.len());
    assert_eq!(
        stored_ids.into_iter().collect::<BTreeSet<_>>(),
        accepted.keys().collect::<BTreeSet<_>>()
    );
    assert_eq!(stored.iter().map(|e| e.cost_micros).sum::<i64>(), cost);

    let alerts: Vec<(i32, i64)> = spend_alerts::Entity::find()
        .filter(spend_alerts::Column::OrganizationId.eq(org_id))
        .order_by_asc(spend_alerts::Column::Threshold)
        .all(&c.db)
        .await
        .expect("read alerts")
        .into_iter()
        .map(|a| (a.threshold, a.month_to_date_micros))
        .collect();
    assert_eq!(alerts, [(50, 560_000), (80, 840_000), (100, 1_050_000)]);
    let mut crossed: Vec<i64> = events_of_type(&c, org_id, types::USAGE_THRESHOLD_CROSSED)
        .await
        .iter()
        .map(|e| {
            let data: serde_json::Value = serde_json::from_str(&e.payload).expect("JSON payload");
            data["threshold"].as_i64().expect("threshold")
        })
        .collect();
    crossed.sort_unstable();
    assert_eq!(crossed, [50, 80, 100], "one event per threshold");
    let audited = audit_entries::Entity::find()
        .filter(audit_entries::Column::OrganizationId.eq(org_id))
        .filter(audit_entries::Column::Action.eq("SpendThresholdCrossed"))
        .count(&c.db)
        .await
        .expect("count audit");
    assert_eq!(audited, 3);
    let emails = alert_emails_once_delivered(&c, org_id).await;
    assert_eq!(emails.len(), 3, "one email per threshold: {emails:#?}");
    assert!(emails.iter().all(|e| e.to_address == "billing@example.com"));

    for replica in 0..REPLICAS {
        let request = proto::GetSpendStatusRequest {
            organization_id: org.id.clone(),
            month: String::new(),
        };
        let status = c
            .billing(replica)
            .get_spend_status(authed(request, &root()))
            .await
            .expect("spend status")
            .into_inner();
        assert_eq!(status.thresholds_crossed, [50, 80, 100]);
        assert!(status.usage_suspended);
        assert_eq!(status.month_to_date_cost.expect("cost").amount, "1.05");
    }
}

/// The organization's alert emails once every one was sent (bounded wait; without SMTP
/// "sent" means written to the log: LOGGED); each must have taken exactly one attempt,
/// whichever replica's dispatcher claimed it.
async fn alert_emails_once_delivered(c: &Cluster, org: Uuid) -> Vec<email_messages::Model> {
    let mut emails = Vec::new();
    for _ in 0..300 {
        emails = email_messages::Entity::find()
            .filter(email_messages::Column::OrganizationId.eq(org))
            .filter(email_messages::Column::Kind.eq("BILLING_ALERT"))
            .all(&c.db)
            .await
            .expect("read emails");
        if emails.iter().all(|e| e.status == "LOGGED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        emails
            .iter()
            .all(|e| e.status == "LOGGED" && e.attempts == 1),
        "{emails:#?}"
    );
    emails
}

// ---------------------------------------------------------------------------
// 4. Renewal cycles everywhere at once
// ---------------------------------------------------------------------------

const SUBSCRIBERS: usize = 6;
/// Renewals due per subscription at the instant the cycles run.
const RENEWALS: usize = 3;

/// What one run did: periods closed and invoices issued.
type RunSummary = (usize, Vec<String>);

async fn rpc_cycle(c: &Cluster, replica: usize, at: DateTime<Utc>) -> RunSummary {
    let request = proto::RunBillingCycleRequest {
        organization_id: String::new(),
        at: Some(prost_types::Timestamp {
            seconds: at.timestamp(),
            nanos: at.timestamp_subsec_nanos() as i32,
        }),
        request_id: String::new(),
    };
    let done = c
        .subscriptions(replica)
        .run_billing_cycle(authed(request, &root()))
        .await
        .unwrap_or_else(|e| panic!("RunBillingCycle on replica {replica}: {e:?}"))
        .into_inner();
    (done.periods_closed as usize, done.invoice_ids)
}

async fn cli_cycle(c: &Cluster, at: DateTime<Utc>) -> RunSummary {
    let at = at.to_rfc3339();
    let printed = stdout_of(tenantry().args([
        "billing-cycle",
        "--database-url",
        &c.url,
        "--db-max-connections",
        "2",
        "--credit-overdraft",
        OVERDRAFT,
        "--at",
        &at,
    ]))
    .await;
    let summary: serde_json::Value =
        serde_json::from_str(printed.trim()).unwrap_or_else(|_| panic!("JSON: {printed}"));
    assert_eq!(summary["failed"], 0, "{summary}");
    let invoices = summary["invoice_ids"]
        .as_array()
        .expect("invoice ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect();
    let closed = summary["periods_closed"].as_u64().expect("periods closed");
    (closed as usize, invoices)
}

/// RunBillingCycle on every replica and two `tenantry billing-cycle` processes, all as
/// of the same instant (three monthly periods due): every period is closed and invoiced
/// once, and the ledgers that paid them add up; a second such round does nothing.
async fn simultaneous_renewal_cycles_invoice_each_period_once(c: Arc<Cluster>) {
    let mut orgs = Vec::new();
    for i in 0..SUBSCRIBERS {
        let org = create_org(&c, tenant_named(&format!("Renewing {i}"), "")).await;
        gift(&c, &org.id, "200.00").await;
        let request = proto::CreateSubscriptionRequest {
            organization_id: org.id.clone(),
            plan_id: "pro".into(),
            interval: proto::BillingInterval::Month as i32,
            trial_days: 0,
            request_id: format!("subscribe-{i}"),
        };
        c.subscriptions(i)
            .create_subscription(authed(request, &token("CONFIG_ADMIN", &org.id)))
            .await
            .expect("subscribe");
        orgs.push(org);
    }
    // 100 days on: the periods ending one, two and three months after now are due.
    let at = Utc::now() + chrono::Duration::days(100);
    let runs = async {
        let (rpcs, clis) = tokio::join!(
            join_all((0..REPLICAS).map(|r| rpc_cycle(&c, r, at))),
            join_all((0..2).map(|_| cli_cycle(&c, at))),
        );
        rpcs.into_iter().chain(clis).collect::<Vec<RunSummary>>()
    };
    let summaries = runs.await;
    let closed: usize = summaries.iter().map(|s| s.0).sum();
    assert_eq!(closed, SUBSCRIBERS * RENEWALS, "{summaries:?}");
    let issued: Vec<&String> = summaries.iter().flat_map(|s| &s.1).collect();
    assert_eq!(issued.len(), SUBSCRIBERS * RENEWALS);
    assert_eq!(issued.iter().collect::<BTreeSet<_>>().len(), issued.len());

    let at_micros = at.timestamp_micros();
    for org in &orgs {
        let org_id = org_uuid(&org.id);
        let sub = subscriptions::Entity::find()
            .filter(subscriptions::Column::OrganizationId.eq(org_id))
            .one(&c.db)
            .await
            .expect("read subscription")
            .expect("subscription");
        assert!(sub.current_period_start <= at_micros && at_micros < sub.current_period_end);
        let rows = invoices::Entity::find()
            .filter(invoices::Column::SubscriptionId.eq(sub.id))
            .order_by_asc(invoices::Column::PeriodStart)
            .all(&c.db)
            .await
            .expect("read invoices");
        assert_eq!(
            rows.len(),
            RENEWALS + 1,
            "the first period and each renewal once"
        );
        for pair in rows.windows(2) {
            assert_eq!(
                pair[0].period_end, pair[1].period_start,
                "periods follow each other"
            );
        }
        let closed = subscription_periods::Entity::find()
            .filter(subscription_periods::Column::SubscriptionId.eq(sub.id))
            .count(&c.db)
            .await
            .expect("count periods");
        assert_eq!(closed as usize, RENEWALS);
        let ledger = assert_ledger_consistent(&c, org_id).await;
        let paid_by: Vec<Uuid> = ledger.iter().filter_map(|t| t.invoice_id).collect();
        assert_eq!(paid_by.iter().collect::<BTreeSet<_>>().len(), paid_by.len());
        let paid = rows
            .iter()
            .filter(|i| i.status == InvoiceStatus::Paid.as_str())
            .count();
        assert_eq!(paid_by.len(), paid, "one payment per paid invoice");
    }

    // Again, all at once: nothing is left to do.
    let (rpcs, clis) = tokio::join!(
        join_all((0..REPLICAS).map(|r| rpc_cycle(&c, r, at))),
        join_all((0..2).map(|_| cli_cycle(&c, at))),
    );
    assert!(rpcs.iter().chain(&clis).all(|s| s.0 == 0 && s.1.is_empty()));
}

// ---------------------------------------------------------------------------
// 5. Tenant transfer decisions on different replicas
// ---------------------------------------------------------------------------

const ROUNDS: usize = 6;

/// A decision call: accept as the target agency or cancel as the requesting one.
async fn decide(
    c: &Cluster,
    replica: usize,
    accept: bool,
    token: &str,
    tenant_id: &str,
    transfer_id: &str,
) -> Result<proto::TenantTransfer, Status> {
    let mut client = c.transfers(replica);
    let response = if accept {
        let request = proto::AcceptTenantTransferRequest {
            organization_id: tenant_id.into(),
            transfer_id: transfer_id.into(),
            note: "welcome".into(),
            ..Default::default()
        };
        client
            .accept_tenant_transfer(authed(request, token))
            .await
            .map(|r| r.into_inner().transfer)
    } else {
        let request = proto::CancelTenantTransferRequest {
            organization_id: tenant_id.into(),
            transfer_id: transfer_id.into(),
            reason: "changed our mind".into(),
            ..Default::default()
        };
        client
            .cancel_tenant_transfer(authed(request, token))
            .await
            .map(|r| r.into_inner().transfer)
    };
    response.map(|t| t.expect("transfer"))
}

/// One round: a tenant of A, a transfer to B, two accepts and two cancels on three
/// replicas at once. Returns (tenant, transfer, whether the accept won).
async fn race(c: Arc<Cluster>, round: usize, a: String, b: String) -> (String, String, bool) {
    let t = create_org(&c, tenant_named(&format!("Racer {round}"), &a)).await;
    let (a_admin, b_admin) = (token("AGENCY_ADMIN", &a), token("AGENCY_ADMIN", &b));
    let request = proto::RequestTenantTransferRequest {
        organization_id: t.id.clone(),
        target_agency_id: b.clone(),
        note: "moving".into(),
        request_id: format!("transfer-{round}"),
        ..Default::default()
    };
    let transfer = c
        .transfers(round)
        .request_tenant_transfer(authed(request, &a_admin))
        .await
        .expect("request transfer")
        .into_inner()
        .transfer
        .expect("transfer");
    let (t_id, x_id) = (t.id.as_str(), transfer.id.as_str());
    let decisions = tokio::join!(
        decide(&c, round, true, &b_admin, t_id, x_id),
        decide(&c, round + 1, true, &b_admin, t_id, x_id),
        decide(&c, round + 1, false, &a_admin, t_id, x_id),
        decide(&c, round + 2, false, &a_admin, t_id, x_id),
    );
    let decisions = [
        (true, decisions.0),
        (true, decisions.1),
        (false, decisions.2),
        (false, decisions.3),
    ];
    let winners: Vec<bool> = decisions
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(accept, _)| *accept)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "round {round}: one winner, got {decisions:#?}"
    );
    let lost = [
        Code::FailedPrecondition,
        Code::Aborted,
        Code::PermissionDenied,
    ];
    for (_, result) in &decisions {
        if let Err(status) = result {
            assert!(lost.contains(&status.code()), "round {round}: {status:?}");
        }
    }
    (t.id, transfer.id, winners[0])
}

/// Six transfers of a tenant from agency A to agency B, each raced by accepts and
/// cancels on different replicas: one decision wins, the losers are refused, and the
/// transfer, the tenant's parent, the audit log and the events agree with the winner.
async fn transfer_decisions_on_different_replicas_have_one_winner(c: Arc<Cluster>) {
    let agency = |name: &str| proto::Organization {
        kind: proto::OrganizationKind::Agency as i32,
        plan: "business".into(),
        ..named(name)
    };
    let a = create_org(&c, agency("Alpha Agency")).await;
    let b = create_org(&c, agency("Beta Agency")).await;
    let rounds: Vec<(String, String, bool)> = stream::iter(0..ROUNDS)
        .map(|round| race(c.clone(), round, a.id.clone(), b.id.clone()))
        .buffer_unordered(3)
        .collect()
        .await;
    for (tenant, transfer, accepted) in &rounds {
        let row = tenant_transfers::Entity::find_by_id(
            ids::decode(IdKind::TenantTransfer, transfer).expect("transfer id"),
        )
        .one(&c.db)
        .await
        .expect("read transfer")
        .expect("transfer row");
        let parent = organizations::Entity::find_by_id(org_uuid(tenant))
            .one(&c.db)
            .await
            .expect("read tenant")
            .expect("tenant row")
            .parent_id;
        let (status, action, event_type, agency) = if *accepted {
            (
                "ACCEPTED",
                "AcceptTenantTransfer",
                types::TRANSFER_ACCEPTED,
                &b,
            )
        } else {
            (
                "CANCELED",
                "CancelTenantTransfer",
                types::TRANSFER_CANCELED,
                &a,
            )
        };
        assert_eq!(
            (row.status.as_str(), row.version),
            (status, 2),
            "{transfer}"
        );
        assert_eq!(parent, Some(org_uuid(&agency.id)), "{transfer}");
        assert_eq!(
            audit_actions(&c, transfer).await,
            ["RequestTenantTransfer", action]
        );
        let decided: Vec<String> = outbox_events::Entity::find()
            .filter(outbox_events::Column::Payload.contains(transfer.as_str()))
            .all(&c.db)
            .await
            .expect("read events")
            .into_iter()
            .map(|e| e.event_type)
            .filter(|t| t != types::TRANSFER_REQUESTED)
            .collect();
        assert_eq!(
            decided,
            [event_type, event_type],
            "{transfer}: one decision's events"
        );
        for replica in 0..REPLICAS {
            let request = proto::GetTenantTransferRequest {
                organization_id: tenant.clone(),
                transfer_id: transfer.clone(),
            };
            let shown = c
                .transfers(replica)
                .get_tenant_transfer(authed(request, &root()))
                .await
                .expect("get transfer")
                .into_inner()
                .transfer
                .expect("transfer");
            assert_eq!(
                shown.status().as_str_name(),
                format!("TENANT_TRANSFER_STATUS_{status}")
            );
        }
    }
    let accepted = rounds.iter().filter(|r| r.2).count() as u64;
    for (agency, expected) in [(&a, ROUNDS as u64 - accepted), (&b, accepted)] {
        let children = organizations::Entity::find()
            .filter(organizations::Column::ParentId.eq(org_uuid(&agency.id)))
            .count(&c.db)
            .await
            .expect("count tenants");
        assert_eq!(children, expected, "tenants of {}", agency.name);
    }
}

// ---------------------------------------------------------------------------
// Afterwards: the outbox
// ---------------------------------------------------------------------------

/// Every event written by any replica gets exactly one position, gap-free from 1, and
/// the sequence row agrees (bounded wait for the dispatchers to catch up).
async fn every_event_is_sequenced_once(c: Arc<Cluster>) {
    let mut events = Vec::new();
    for _ in 0..300 {
        events = outbox_events::Entity::find()
            .all(&c.db)
            .await
            .expect("read outbox");
        if events.iter().all(|e| e.position.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut positions: Vec<i64> = events.iter().filter_map(|e| e.position).collect();
    assert_eq!(positions.len(), events.len(), "events left unsequenced");
    positions.sort_unstable();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(positions, expected, "positions are unique and gap-free");
    let last = event_sequence::Entity::find_by_id(1)
        .one(&c.db)
        .await
        .expect("read sequence")
        .expect("sequence row")
        .last_position;
    assert_eq!(last, events.len() as i64);
}
