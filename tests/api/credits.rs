//! The credits ledger: balances, gifts and credits (operators only), exact sums of tiny
//! amounts, request-id retries, listing and paging, and the overdraft bound. The
//! helpers at the top are shared with the payments suite.

use std::collections::HashSet;

use futures::{StreamExt, stream};
use rust_decimal::Decimal;
use tenantry::{
    domain::billing::TxnKind,
    proto,
    service::billing::ledger::{self, Entry},
};
use tonic::{Code, Status};

use crate::{
    helpers::{Backend, TestApp, authed, violations},
    on_both_backends,
    organizations::{agency, org_row, tenant, usd},
};

/// GiftCredits as `token`.
pub(crate) async fn try_gift(
    app: &TestApp,
    token: &str,
    org_id: &str,
    amount: &str,
    request_id: &str,
) -> Result<proto::GiftCreditsResponse, Status> {
    let request = proto::GiftCreditsRequest {
        organization_id: org_id.into(),
        amount: Some(usd(amount)),
        reason: "welcome bonus".into(),
        request_id: request_id.into(),
    };
    app.billing()
        .gift_credits(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

/// GiftCredits as the root admin, expected to succeed.
pub(crate) async fn gift(app: &TestApp, org_id: &str, amount: &str) -> proto::GiftCreditsResponse {
    try_gift(
        app,
        &app.root(),
        org_id,
        amount,
        &uuid::Uuid::now_v7().to_string(),
    )
    .await
    .expect("gift credits")
}

/// GetBalance as the root admin.
pub(crate) async fn balance(app: &TestApp, org_id: &str) -> proto::GetBalanceResponse {
    let request = proto::GetBalanceRequest {
        organization_id: org_id.into(),
    };
    app.billing()
        .get_balance(authed(request, &app.root()))
        .await
        .expect("get balance")
        .into_inner()
}

/// The balance amount string.
pub(crate) async fn balance_amount(app: &TestApp, org_id: &str) -> String {
    balance(app, org_id).await.balance.expect("balance").amount
}

/// Every transaction of the organization, newest first, read page by page.
pub(crate) async fn all_transactions(app: &TestApp, org_id: &str) -> Vec<proto::CreditTransaction> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let request = proto::ListTransactionsRequest {
            organization_id: org_id.into(),
            page_size: 100,
            page_token: token.clone(),
            ..Default::default()
        };
        let page = app
            .billing()
            .list_transactions(authed(request, &app.root()))
            .await
            .expect("list transactions")
            .into_inner();
        out.extend(page.transactions);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

fn dec(text: &str) -> Decimal {
    text.parse().expect("decimal")
}

/// Sum of the SUCCEEDED entries, exactly.
pub(crate) fn succeeded_sum(transactions: &[proto::CreditTransaction]) -> Decimal {
    transactions
        .iter()
        .filter(|t| t.status == proto::CreditTransactionStatus::Succeeded as i32)
        .map(|t| dec(&t.amount.as_ref().expect("amount").amount))
        .sum()
}

async fn gifts_and_credits_are_for_the_root_admin_only(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let beta = agency(&app, "Beta Agency").await;
    let acme = tenant(&app, "Acme", &beta.id).await;
    let refused = [
        app.token("ROOT_POWER_USER", "internal"),
        app.token("SYSTEM", "internal"),
        app.token("AGENCY_ADMIN", &beta.id),
        app.token("CONFIG_ADMIN", &acme.id),
        app.token("MEMBER", &acme.id),
    ];
    for (i, token) in refused.iter().enumerate() {
        let status = try_gift(&app, token, &acme.id, "5.00", &format!("g{i}"))
            .await
            .expect_err("only ROOT_ADMIN gifts");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let request = proto::AddCreditRequest {
            organization_id: acme.id.clone(),
            amount: Some(usd("5.00")),
            reason: "goodwill".into(),
            request_id: format!("c{i}"),
            ..Default::default()
        };
        let status = app
            .billing()
            .add_credit(authed(request, token))
            .await
            .expect_err("only ROOT_ADMIN credits");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    assert_eq!(balance_amount(&app, &acme.id).await, "0.00");

    // The reason is required; the amount must be positive.
    let request = proto::GiftCreditsRequest {
        organization_id: acme.id.clone(),
        amount: Some(usd("-1")),
        reason: "  ".into(),
        request_id: "bad".into(),
    };
    let status = app
        .billing()
        .gift_credits(authed(request, &app.root()))
        .await
        .expect_err("bad gift");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = violations(&status);
    assert!(fields.contains(&"reason".to_owned()), "{fields:?}");
    assert!(fields.contains(&"amount.amount".to_owned()), "{fields:?}");

    let done = gift(&app, &acme.id, "12.50").await;
    let entry = done.transaction.expect("entry");
    assert_eq!(entry.r#type, proto::CreditTransactionType::Gift as i32);
    assert_eq!(entry.author, "user:root_admin-user");
    assert_eq!(done.balance.expect("balance").amount, "12.50");
    let request = proto::AddCreditRequest {
        organization_id: acme.id.clone(),
        amount: Some(usd("2.25")),
        reason: "double charge".into(),
        r#type: proto::CreditTransactionType::Refund as i32,
        refunded_reference_id: "inv_123".into(),
        request_id: "refund-1".into(),
    };
    let refund = app
        .billing()
        .add_credit(authed(request, &app.root()))
        .await
        .expect("refund")
        .into_inner();
    assert_eq!(
        refund.transaction.expect("entry").r#type,
        proto::CreditTransactionType::Refund as i32
    );
    assert_eq!(balance_amount(&app, &acme.id).await, "14.75");
    app.stop().await;
}

async fn tiny_amounts_sum_exactly(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    // 250 gifts of one micro-unit (bounded to stay fast) plus the classic float traps.
    let results: Vec<_> = stream::iter(0..250)
        .map(|_| gift(&app, &acme.id, "0.000001"))
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(results.len(), 250);
    gift(&app, &acme.id, "0.1").await;
    gift(&app, &acme.id, "0.2").await;
    assert_eq!(balance_amount(&app, &acme.id).await, "0.30025");
    gift(&app, &acme.id, "999999.69975").await;
    assert_eq!(balance_amount(&app, &acme.id).await, "1000000.00");
    let transactions = all_transactions(&app, &acme.id).await;
    assert_eq!(transactions.len(), 253);
    assert_eq!(succeeded_sum(&transactions), dec("1000000"));
    // Every balance_after is distinct: the entries were applied one at a time.
    let after: HashSet<String> = transactions
        .iter()
        .map(|t| {
            t.balance_after
                .as_ref()
                .expect("balance_after")
                .amount
                .clone()
        })
        .collect();
    assert_eq!(after.len(), 253);
    app.stop().await;
}

async fn retries_with_the_same_request_id_return_the_first_result(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let first = try_gift(&app, &app.root(), &acme.id, "7.00", "promo-1")
        .await
        .expect("gift");
    let again = try_gift(&app, &app.root(), &acme.id, "7.00", "promo-1")
        .await
        .expect("retry");
    assert_eq!(first, again, "a retry answers the first result");
    let root = app.root();
    let concurrent: Vec<_> = futures::future::join_all(
        (0..8).map(|_| try_gift(&app, &root, &acme.id, "1.00", "promo-2")),
    )
    .await;
    let ids: HashSet<String> = concurrent
        .into_iter()
        .map(|r| r.expect("gift").transaction.expect("entry").id)
        .collect();
    assert_eq!(ids.len(), 1, "concurrent retries share one entry");
    let status = try_gift(&app, &app.root(), &acme.id, "8.00", "promo-1")
        .await
        .expect_err("same id, other amount");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violations(&status), vec!["request_id".to_owned()]);
    assert_eq!(balance_amount(&app, &acme.id).await, "8.00");
    assert_eq!(all_transactions(&app, &acme.id).await.len(), 2);
    app.stop().await;
}

async fn the_balance_is_the_sum_of_ledger_entries(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    for amount in ["10.00", "0.333333", "4.666667", "100"] {
        gift(&app, &acme.id, amount).await;
    }
    // A pending purchase is reported apart and never counted in the balance.
    let request = proto::BuyCreditsRequest {
        organization_id: acme.id.clone(),
        amount: Some(usd("40.00")),
        request_id: "buy-1".into(),
        ..Default::default()
    };
    app.billing()
        .buy_credits(authed(request, &app.root()))
        .await
        .expect("buy");
    let now = balance(&app, &acme.id).await;
    assert_eq!(now.balance.expect("balance").amount, "115.00");
    assert_eq!(now.pending.expect("pending").amount, "40.00");
    assert_eq!(now.overdraft_limit.expect("overdraft").amount, "0.00");
    let transactions = all_transactions(&app, &acme.id).await;
    assert_eq!(transactions.len(), 5);
    assert_eq!(succeeded_sum(&transactions), dec("115"));
    // Oldest first, each balance_after is the running sum.
    let mut running = Decimal::ZERO;
    for t in transactions.iter().rev() {
        if t.status != proto::CreditTransactionStatus::Succeeded as i32 {
            assert!(t.balance_after.is_none());
            continue;
        }
        running += dec(&t.amount.as_ref().expect("amount").amount);
        assert_eq!(
            dec(&t.balance_after.as_ref().expect("after").amount),
            running
        );
    }
    app.stop().await;
}

async fn list(
    app: &TestApp,
    org_id: &str,
    filter: &str,
    order_by: &str,
    page_size: i32,
    page_token: &str,
) -> Result<proto::ListTransactionsResponse, Status> {
    let request = proto::ListTransactionsRequest {
        organization_id: org_id.into(),
        page_size,
        page_token: page_token.into(),
        filter: filter.into(),
        order_by: order_by.into(),
    };
    app.billing()
        .list_transactions(authed(request, &app.root()))
        .await
        .map(|r| r.into_inner())
}

fn amounts(page: &proto::ListTransactionsResponse) -> Vec<String> {
    page.transactions
        .iter()
        .map(|t| t.amount.as_ref().expect("amount").amount.clone())
        .collect()
}

async fn transactions_page_filter_and_order(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let other = tenant(&app, "Other", "").await;
    gift(&app, &other.id, "99.00").await;
    for i in 1..=7 {
        gift(&app, &acme.id, &format!("{i}.00")).await;
    }
    let request = proto::AddCreditRequest {
        organization_id: acme.id.clone(),
        amount: Some(usd("0.50")),
        reason: "sorry".into(),
        request_id: "credit-x".into(),
        ..Default::default()
    };
    app.billing()
        .add_credit(authed(request, &app.root()))
        .await
        .expect("credit");

    // Newest first by default, three at a time, every entry once.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = list(&app, &acme.id, "", "", 3, &token).await.expect("page");
        pages += 1;
        seen.extend(amounts(&page));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        [
            "0.50", "7.00", "6.00", "5.00", "4.00", "3.00", "2.00", "1.00"
        ]
    );
    let page = list(&app, &acme.id, "", "create_time", 2, "")
        .await
        .expect("asc");
    assert_eq!(amounts(&page), ["1.00", "2.00"]);
    let next = list(&app, &acme.id, "", "create_time", 2, &page.next_page_token)
        .await
        .expect("asc page 2");
    assert_eq!(amounts(&next), ["3.00", "4.00"]);

    let gifts = list(&app, &acme.id, "type = GIFT", "", 50, "")
        .await
        .expect("gifts");
    assert_eq!(gifts.transactions.len(), 7);
    let credits = list(
        &app,
        &acme.id,
        "type = CREDIT_TRANSACTION_TYPE_CREDIT",
        "",
        50,
        "",
    )
    .await
    .expect("credits");
    assert_eq!(amounts(&credits), ["0.50"]);
    let by_request = list(
        &app,
        &acme.id,
        "request_id = credit-x AND status = SUCCEEDED",
        "",
        50,
        "",
    )
    .await
    .expect("by request id");
    assert_eq!(amounts(&by_request), ["0.50"]);
    let pending = list(&app, &acme.id, "status = PENDING", "", 50, "")
        .await
        .expect("pending");
    assert!(pending.transactions.is_empty());
    let future = list(
        &app,
        &acme.id,
        "create_time >= 2999-01-01T00:00:00Z",
        "",
        50,
        "",
    )
    .await
    .expect("future");
    assert!(future.transactions.is_empty());
    let past = list(
        &app,
        &acme.id,
        "create_time >= 2000-01-01T00:00:00Z",
        "",
        50,
        "",
    )
    .await
    .expect("past");
    assert_eq!(past.transactions.len(), 8);

    for (filter, order_by) in [
        ("amount = 5", ""),
        ("type = NOPE", ""),
        ("create_time >= yesterday", ""),
        ("", "amount desc"),
    ] {
        let status = list(&app, &acme.id, filter, order_by, 0, "")
            .await
            .expect_err("bad query");
        assert_eq!(status.code(), Code::InvalidArgument, "{filter} {order_by}");
    }
    let status = list(
        &app,
        &acme.id,
        "type = GIFT",
        "",
        3,
        &token_of(&app, &acme.id).await,
    )
    .await
    .expect_err("a token of another query");
    assert_eq!(violations(&status), vec!["page_token".to_owned()]);
    app.stop().await;
}

async fn token_of(app: &TestApp, org_id: &str) -> String {
    list(app, org_id, "", "", 1, "")
        .await
        .expect("page")
        .next_page_token
}

async fn transactions_are_read_within_their_organization(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let other = tenant(&app, "Other", "").await;
    let entry = gift(&app, &acme.id, "3.00")
        .await
        .transaction
        .expect("entry");
    let get = |org: &str, token: String| {
        let request = proto::GetTransactionRequest {
            organization_id: org.into(),
            transaction_id: entry.id.clone(),
        };
        let mut client = app.billing();
        async move {
            client
                .get_transaction(authed(request, &token))
                .await
                .map(|r| r.into_inner().transaction.expect("transaction"))
        }
    };
    let member = get(&acme.id, app.token("MEMBER", &acme.id))
        .await
        .expect("own");
    assert_eq!(member, entry);
    let status = get(&other.id, app.root()).await.expect_err("other org");
    assert_eq!(status.code(), Code::NotFound);
    let status = get(&acme.id, app.token("CONFIG_ADMIN", &other.id))
        .await
        .expect_err("foreign admin");
    assert_eq!(status.code(), Code::PermissionDenied);
    let request = proto::GetTransactionRequest {
        organization_id: acme.id.clone(),
        transaction_id: "inv_nope".into(),
    };
    let status = app
        .billing()
        .get_transaction(authed(request, &app.root()))
        .await
        .expect_err("bad id");
    assert_eq!(violations(&status), vec!["transaction_id".to_owned()]);
    app.stop().await;
}

/// Posts a debit straight through the ledger core (no RPC debits credits yet outside
/// invoices and transfers).
async fn debit(app: &TestApp, org_id: &str, micros: i64, overdraft: i64) -> Result<i64, String> {
    let org = org_row(app, org_id).await;
    let tx = app.store.write().await.expect("tx");
    let now = app.store.now();
    let mut account = ledger::lock_account(&tx, &org, now).await.expect("lock");
    let entry = Entry {
        kind: Some(TxnKind::Debit),
        amount_micros: -micros,
        reason: "test debit".into(),
        request_id: "debit".into(),
        author: "system:test".into(),
        ..Entry::default()
    };
    match ledger::post(&tx, &mut account, entry, overdraft, now).await {
        Ok(_) => {
            tx.commit().await.expect("commit");
            Ok(account.balance_micros)
        }
        Err(e) => Err(e.reason().to_owned()),
    }
}

async fn the_overdraft_setting_bounds_debits(backend: Backend) {
    let Some(app) = TestApp::spawn_with(backend, |s| {
        s.billing.credit_overdraft_micros = 50_000_000;
    })
    .await
    else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    gift(&app, &acme.id, "20.00").await;
    let limit = balance(&app, &acme.id)
        .await
        .overdraft_limit
        .expect("limit");
    assert_eq!(limit.amount, "50.00");
    assert_eq!(
        debit(&app, &acme.id, 60_000_000, 50_000_000).await,
        Ok(-40_000_000)
    );
    assert_eq!(
        debit(&app, &acme.id, 10_000_001, 50_000_000).await,
        Err("INSUFFICIENT_CREDITS".to_owned())
    );
    assert_eq!(
        debit(&app, &acme.id, 10_000_000, 50_000_000).await,
        Ok(-50_000_000)
    );
    assert_eq!(balance_amount(&app, &acme.id).await, "-50.00");
    // Without an overdraft the balance never goes below zero.
    let other = tenant(&app, "Other", "").await;
    gift(&app, &other.id, "1.00").await;
    assert_eq!(
        debit(&app, &other.id, 1_000_001, 0).await,
        Err("INSUFFICIENT_CREDITS".to_owned())
    );
    assert_eq!(balance_amount(&app, &other.id).await, "1.00");
    let transactions = all_transactions(&app, &acme.id).await;
    assert_eq!(succeeded_sum(&transactions), dec("-50"));
    let status = try_gift(&app, &app.token("MEMBER", &acme.id), &acme.id, "1.00", "m")
        .await
        .expect_err("members do not gift");
    assert_eq!(status.code(), Code::PermissionDenied);
    // A gift still lands on an overdrawn balance.
    gift(&app, &acme.id, "60.00").await;
    assert_eq!(balance_amount(&app, &acme.id).await, "10.00");
    app.stop().await;
}

on_both_backends!(
    gifts_and_credits_are_for_the_root_admin_only,
    tiny_amounts_sum_exactly,
    retries_with_the_same_request_id_return_the_first_result,
    the_balance_is_the_sum_of_ledger_entries,
    transactions_page_filter_and_order,
    transactions_are_read_within_their_organization,
    the_overdraft_setting_bounds_debits,
);
