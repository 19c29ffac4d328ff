//! Payment contention: rounds of `intents` fresh `manual` purchases (BuyCredits, not
//! timed), each raced by every caller at once with ConfirmManualPayment and
//! CompletePayment; afterwards the ledger must hold exactly one credit per confirmed
//! intent and nothing else.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use anyhow::Context;
use futures::future::try_join_all;
use rust_decimal::Decimal;
use tenantry::proto::{
    self, CreditTransactionStatus, billing_service_client::BillingServiceClient,
};
use tonic::{Code, transport::Channel};

use crate::{
    drive::{Bounds, CallFuture, Measured, Outcome, drive},
    scenarios::Run,
    setup::{authed, create_tenant},
};

/// Price of one purchase.
const AMOUNT: &str = "1.00";
/// Racing calls per caller and round.
const CALLS_PER_CALLER: u64 = 4;

/// What the contention run measured and found.
#[derive(Debug, Default)]
pub struct Contention {
    /// The racing calls only (purchases are made between rounds, untimed).
    pub measured: Measured,
    /// Intents bought.
    pub intents: u64,
    /// CompletePayment answers with `newly_credited`.
    pub credited_by_complete: u64,
    /// Whether every intent was credited at most once and every confirmed one exactly
    /// once, with the balance equal to the credited sum.
    pub exactly_once: bool,
    /// What the check found.
    pub check: String,
}

#[derive(Debug, Clone)]
struct Intent {
    transaction: String,
    intent: String,
}

fn refusal(code: Code) -> bool {
    matches!(
        code,
        Code::Aborted | Code::FailedPrecondition | Code::ResourceExhausted | Code::Unavailable
    )
}

async fn buy(
    client: BillingServiceClient<Channel>,
    org: &str,
    root: &str,
) -> anyhow::Result<Intent> {
    let request = proto::BuyCreditsRequest {
        organization_id: org.to_owned(),
        amount: Some(proto::Money {
            currency_code: "USD".into(),
            amount: AMOUNT.into(),
        }),
        gateway: "manual".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    };
    let bought = client
        .clone()
        .buy_credits(authed(request, root))
        .await?
        .into_inner();
    Ok(Intent {
        transaction: bought.transaction_id,
        intent: bought.payment_intent_id,
    })
}

/// One racing call: even rounds of the intent list confirm, odd ones complete.
fn race(
    client: &BillingServiceClient<Channel>,
    org: &str,
    root: &str,
    target: &Intent,
    confirm: bool,
    confirmed: Arc<Mutex<HashSet<String>>>,
    credited: Arc<AtomicU64>,
) -> CallFuture {
    let mut client = client.clone();
    let (org, target) = (org.to_owned(), target.clone());
    let root = root.to_owned();
    Box::pin(async move {
        let result = if confirm {
            let request = proto::ConfirmManualPaymentRequest {
                organization_id: org,
                payment_intent_id: target.intent.clone(),
                note: "load".into(),
                request_id: uuid::Uuid::now_v7().to_string(),
            };
            client
                .confirm_manual_payment(authed(request, &root))
                .await
                .map(|answer| {
                    let status = answer.into_inner().transaction.map(|t| t.status);
                    if status == Some(CreditTransactionStatus::Succeeded as i32)
                        && let Ok(mut set) = confirmed.lock()
                    {
                        set.insert(target.intent.clone());
                    }
                })
        } else {
            let request = proto::CompletePaymentRequest {
                organization_id: org,
                transaction_id: target.transaction,
                payment_intent_id: target.intent,
                request_id: String::new(),
            };
            client
                .complete_payment(authed(request, &root))
                .await
                .map(|answer| {
                    if answer.into_inner().newly_credited {
                        credited.fetch_add(1, Ordering::Relaxed);
                    }
                })
        };
        match result {
            Ok(()) => Outcome::Ok(1),
            Err(status) if refusal(status.code()) => Outcome::Refused(status.code()),
            Err(status) => Outcome::Failed(status),
        }
    })
}

/// Runs rounds of `intents` purchases raced by `run.concurrency` callers.
pub async fn contention(run: &Run, bounds: Bounds, intents: usize) -> anyhow::Result<Contention> {
    let root = run.fixture.root.clone();
    let org = create_tenant(
        run.channels[0].clone(),
        root.clone(),
        "Load Payments".into(),
    )
    .await?;
    let client = BillingServiceClient::new(run.channels[0].clone());
    let confirmed = Arc::new(Mutex::new(HashSet::new()));
    let credited = Arc::new(AtomicU64::new(0));
    let mut out = Contention::default();
    let per_round = run.concurrency as u64 * CALLS_PER_CALLER;
    while Instant::now() < bounds.deadline && out.measured.calls + per_round <= bounds.max_calls {
        let round: Vec<Intent> =
            try_join_all((0..intents.max(1)).map(|_| buy(client.clone(), &org, &root))).await?;
        out.intents += round.len() as u64;
        let round = Arc::new(round);
        let round_bounds = Bounds {
            deadline: bounds.deadline,
            max_calls: per_round,
        };
        let measured = drive(run.concurrency, round_bounds, |i| {
            let client = BillingServiceClient::new(run.channels[i % run.channels.len()].clone());
            let (org, root, round) = (org.clone(), root.clone(), round.clone());
            let (confirmed, credited) = (confirmed.clone(), credited.clone());
            move |n| {
                let target = &round[n as usize % round.len()];
                let confirm = (n / round.len() as u64).is_multiple_of(2);
                race(
                    &client,
                    &org,
                    &root,
                    target,
                    confirm,
                    confirmed.clone(),
                    credited.clone(),
                )
            }
        })
        .await?;
        out.measured.absorb(measured);
    }
    out.credited_by_complete = credited.load(Ordering::Relaxed);
    let confirmed = confirmed.lock().map(|s| s.clone()).unwrap_or_default();
    let (ok, check) = verify(&client, &org, &root, out.intents, &confirmed).await?;
    out.exactly_once = ok && out.credited_by_complete <= out.intents;
    out.check = check;
    Ok(out)
}

fn decimal(money: Option<&proto::Money>) -> anyhow::Result<Decimal> {
    let text = money.map(|m| m.amount.as_str()).unwrap_or("0");
    text.parse().with_context(|| format!("amount {text:?}"))
}

/// Reads the ledger back: one PURCHASE per intent bought, every confirmed one
/// SUCCEEDED, and the balance equal to the SUCCEEDED entries' sum.
async fn verify(
    client: &BillingServiceClient<Channel>,
    org: &str,
    root: &str,
    bought: u64,
    confirmed: &HashSet<String>,
) -> anyhow::Result<(bool, String)> {
    let mut transactions = Vec::new();
    let mut page_token = String::new();
    for _ in 0..10_000 {
        let request = proto::ListTransactionsRequest {
            organization_id: org.to_owned(),
            page_size: 500,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = client
            .clone()
            .list_transactions(authed(request, root))
            .await?
            .into_inner();
        transactions.extend(page.transactions);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let succeeded: Vec<&proto::CreditTransaction> = transactions
        .iter()
        .filter(|t| t.status == CreditTransactionStatus::Succeeded as i32)
        .collect();
    let mut sum = Decimal::ZERO;
    for t in &succeeded {
        sum += decimal(t.amount.as_ref())?;
    }
    let balance = client
        .clone()
        .get_balance(authed(
            proto::GetBalanceRequest {
                organization_id: org.to_owned(),
            },
            root,
        ))
        .await?
        .into_inner();
    let balance = decimal(balance.balance.as_ref())?;
    let credited: HashSet<&str> = succeeded
        .iter()
        .map(|t| t.payment_intent_id.as_str())
        .collect();
    let missing = confirmed
        .iter()
        .filter(|i| !credited.contains(i.as_str()))
        .count();
    let unit: Decimal = AMOUNT.parse()?;
    let ok = transactions.len() as u64 == bought
        && credited.len() == succeeded.len()
        && missing == 0
        && balance == sum
        && sum == unit * Decimal::from(succeeded.len() as u64);
    let check = format!(
        "{bought} intents, {} ledger entries, {} credited ({} distinct), {} confirmed, {missing} confirmed but not credited, balance {balance} = credited sum {sum}",
        transactions.len(),
        succeeded.len(),
        credited.len(),
        confirmed.len(),
    );
    Ok((ok, check))
}
