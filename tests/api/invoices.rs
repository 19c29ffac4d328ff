//! Invoices: one-off creation with per-organization numbering and half-up rounding,
//! payment from credits (idempotent, atomic, exactly once under races), void and
//! uncollectible transitions, lists, the PDF, and who may do what.

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tenantry::{
    domain::ids::{self, IdKind},
    proto::{self, billing_service_client::BillingServiceClient},
    storage::entities::{audit_entries, credit_transactions, invoice_lines, invoices},
};
use tonic::{Code, Status, transport::Channel};

use crate::{
    helpers::{Backend, TestApp, authed, reason, violations},
    on_both_backends,
    organizations::{agency, org_uuid, tenant, usd},
};

on_both_backends!(
    one_off_invoices_are_numbered_per_organization,
    line_amounts_round_half_up_to_the_minor_unit,
    paying_from_credits_debits_the_ledger_once,
    paying_without_enough_credits_fails_and_writes_nothing,
    create_invoice_pays_from_credits_only_when_the_balance_covers_it,
    create_invoice_retries_return_the_same_invoice,
    concurrent_payments_of_one_invoice_debit_once,
    void_and_uncollectible_follow_the_state_machine,
    zero_total_invoices_are_paid_at_issue,
    bad_input_is_rejected_field_by_field,
    list_pages_filters_and_orders,
    the_pdf_has_the_number_lines_and_totals,
    long_invoices_continue_over_several_pdf_pages,
    invoices_of_another_organization_are_not_found,
    only_managers_issue_and_only_operators_close_invoices,
);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn line(description: &str, quantity: i64, unit: &str) -> proto::CreateInvoiceLine {
    proto::CreateInvoiceLine {
        description: description.into(),
        quantity,
        unit_amount: Some(usd(unit)),
    }
}

fn create_request(
    org_id: &str,
    lines: Vec<proto::CreateInvoiceLine>,
    request_id: &str,
) -> proto::CreateInvoiceRequest {
    proto::CreateInvoiceRequest {
        organization_id: org_id.into(),
        lines,
        memo: String::new(),
        due_date: String::new(),
        pay_from_credits: false,
        request_id: request_id.into(),
    }
}

async fn try_create_invoice(
    app: &TestApp,
    token: &str,
    request: proto::CreateInvoiceRequest,
) -> Result<proto::Invoice, Status> {
    app.billing()
        .create_invoice(authed(request, token))
        .await
        .map(|r| r.into_inner().invoice.expect("invoice"))
}

/// A one-off invoice of one line `1 × amount`, issued by the root admin.
async fn invoice_for(app: &TestApp, org_id: &str, amount: &str, pay: bool) -> proto::Invoice {
    let request = proto::CreateInvoiceRequest {
        pay_from_credits: pay,
        ..create_request(
            org_id,
            vec![line("Setup fee", 1, amount)],
            &uuid::Uuid::now_v7().to_string(),
        )
    };
    try_create_invoice(app, &app.root(), request)
        .await
        .expect("create invoice")
}

/// Gifts credits to an organization as the root admin.
async fn fund(app: &TestApp, org_id: &str, amount: &str) {
    let request = proto::GiftCreditsRequest {
        organization_id: org_id.into(),
        amount: Some(usd(amount)),
        reason: "test funds".into(),
        request_id: uuid::Uuid::now_v7().to_string(),
    };
    app.billing()
        .gift_credits(authed(request, &app.root()))
        .await
        .expect("gift credits");
}

async fn balance(app: &TestApp, org_id: &str) -> String {
    let request = proto::GetBalanceRequest {
        organization_id: org_id.into(),
    };
    app.billing()
        .get_balance(authed(request, &app.root()))
        .await
        .expect("get balance")
        .into_inner()
        .balance
        .expect("balance")
        .amount
}

async fn pay_with(
    client: &mut BillingServiceClient<Channel>,
    token: &str,
    org_id: &str,
    invoice_id: &str,
    request_id: &str,
) -> Result<proto::PayInvoiceResponse, Status> {
    let request = proto::PayInvoiceRequest {
        organization_id: org_id.into(),
        invoice_id: invoice_id.into(),
        request_id: request_id.into(),
    };
    client
        .pay_invoice(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

async fn pay(
    app: &TestApp,
    org_id: &str,
    invoice_id: &str,
    request_id: &str,
) -> Result<proto::PayInvoiceResponse, Status> {
    let admin = app.token("CONFIG_ADMIN", org_id);
    pay_with(&mut app.billing(), &admin, org_id, invoice_id, request_id).await
}

async fn get_invoice(app: &TestApp, org_id: &str, invoice_id: &str) -> proto::Invoice {
    let request = proto::GetInvoiceRequest {
        organization_id: org_id.into(),
        invoice_id: invoice_id.into(),
    };
    app.billing()
        .get_invoice(authed(request, &app.root()))
        .await
        .expect("get invoice")
        .into_inner()
        .invoice
        .expect("invoice")
}

async fn void(
    app: &TestApp,
    org_id: &str,
    invoice_id: &str,
    etag: &str,
) -> Result<proto::Invoice, Status> {
    let request = proto::VoidInvoiceRequest {
        organization_id: org_id.into(),
        invoice_id: invoice_id.into(),
        reason: "issued by mistake".into(),
        etag: etag.into(),
    };
    app.billing()
        .void_invoice(authed(request, &app.root()))
        .await
        .map(|r| r.into_inner().invoice.expect("invoice"))
}

async fn uncollectible(
    app: &TestApp,
    org_id: &str,
    invoice_id: &str,
    etag: &str,
) -> Result<proto::Invoice, Status> {
    let request = proto::MarkInvoiceUncollectibleRequest {
        organization_id: org_id.into(),
        invoice_id: invoice_id.into(),
        reason: "customer gone".into(),
        etag: etag.into(),
    };
    app.billing()
        .mark_invoice_uncollectible(authed(request, &app.root()))
        .await
        .map(|r| r.into_inner().invoice.expect("invoice"))
}

/// Ledger entries of an organization, oldest first.
async fn ledger(app: &TestApp, org_id: &str) -> Vec<credit_transactions::Model> {
    let mut rows = credit_transactions::Entity::find()
        .filter(credit_transactions::Column::OrganizationId.eq(org_uuid(org_id)))
        .all(app.store.db())
        .await
        .expect("read ledger");
    rows.sort_by_key(|r| r.id);
    rows
}

pub(crate) async fn invoice_count(app: &TestApp, org_id: &str) -> u64 {
    invoices::Entity::find()
        .filter(invoices::Column::OrganizationId.eq(org_uuid(org_id)))
        .count(app.store.db())
        .await
        .expect("count invoices")
}

async fn audits(app: &TestApp, invoice_id: &str) -> Vec<audit_entries::Model> {
    let mut rows = audit_entries::Entity::find()
        .filter(audit_entries::Column::TargetId.eq(invoice_id))
        .all(app.store.db())
        .await
        .expect("read audit");
    rows.sort_by_key(|r| r.id);
    rows
}

fn amount(money: &Option<proto::Money>) -> &str {
    money
        .as_ref()
        .map(|m| m.amount.as_str())
        .unwrap_or_default()
}

fn status_of(invoice: &proto::Invoice) -> proto::InvoiceStatus {
    proto::InvoiceStatus::try_from(invoice.status).expect("status")
}

// ---------------------------------------------------------------------------
// Issuing
// ---------------------------------------------------------------------------

async fn one_off_invoices_are_numbered_per_organization(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let beta = tenant(&app, "Beta", "").await;
    let first = invoice_for(&app, &acme.id, "10.00", false).await;
    let other = invoice_for(&app, &beta.id, "5.00", false).await;
    let second = invoice_for(&app, &acme.id, "12.00", false).await;
    assert_eq!(first.number, "INV-000001");
    assert_eq!(second.number, "INV-000002");
    assert_eq!(
        other.number, "INV-000001",
        "each organization has its own sequence"
    );
    assert!(first.id.starts_with("inv_"));
    assert_eq!(first.organization_id, acme.id);
    assert_eq!(status_of(&first), proto::InvoiceStatus::Open);
    assert_eq!(first.currency, "USD");
    assert_eq!(first.lines.len(), 1);
    assert_eq!(first.lines[0].kind, proto::InvoiceLineKind::OneOff as i32);
    assert_eq!(first.lines[0].description, "Setup fee");
    assert_eq!(amount(&first.total), "10.00");
    assert_eq!(amount(&first.amount_due), "10.00");
    assert_eq!(amount(&first.amount_paid), "0.00");
    assert_eq!(first.etag, "\"1\"");
    let issued = first.issue_time.expect("issue time").seconds;
    let due = first.due_time.expect("due time").seconds;
    assert_eq!(
        due - issued,
        30 * 24 * 3600,
        "default payment terms are 30 days"
    );
    assert!(first.payment_transaction_id.is_empty());
    assert_eq!(
        first.period_start, first.period_end,
        "a one-off covers an instant"
    );
    let actions: Vec<String> = audits(&app, &first.id)
        .await
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(actions, ["CreateInvoice"]);
    app.stop().await;
}

async fn line_amounts_round_half_up_to_the_minor_unit(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let lines = vec![
        line("Thirds", 3, "0.3333"),
        line("Half a cent", 1, "0.005"),
        line("Seats", 2, "10.00"),
        line("Loyalty discount", 1, "-1.005"),
    ];
    let due_date = (chrono::Utc::now() + chrono::Duration::days(45))
        .format("%Y-%m-%d")
        .to_string();
    let request = proto::CreateInvoiceRequest {
        memo: "Thank you".into(),
        due_date: due_date.clone(),
        ..create_request(&acme.id, lines, "round-1")
    };
    let invoice = try_create_invoice(&app, &app.root(), request)
        .await
        .expect("create invoice");
    let amounts: Vec<&str> = invoice.lines.iter().map(|l| amount(&l.amount)).collect();
    assert_eq!(amounts, ["1.00", "0.01", "20.00", "-1.01"]);
    let units: Vec<&str> = invoice
        .lines
        .iter()
        .map(|l| amount(&l.unit_amount))
        .collect();
    assert_eq!(units, ["0.3333", "0.005", "10.00", "-1.005"]);
    assert_eq!(invoice.lines[0].quantity, 3);
    assert_eq!(amount(&invoice.subtotal), "20.00");
    assert_eq!(amount(&invoice.total), "20.00");
    assert_eq!(invoice.total_minor_units, 2000);
    assert_eq!(invoice.memo, "Thank you");
    let due = chrono::DateTime::from_timestamp(invoice.due_time.expect("due").seconds, 0)
        .expect("due time");
    assert_eq!(due.format("%Y-%m-%d").to_string(), due_date);
    let stored = invoice_lines::Entity::find()
        .filter(
            invoice_lines::Column::InvoiceId.eq(ids::decode(IdKind::Invoice, &invoice.id).unwrap()),
        )
        .all(app.store.db())
        .await
        .unwrap();
    let mut stored: Vec<(i32, i64)> = stored
        .iter()
        .map(|l| (l.position, l.amount_micros))
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        [
            (1, 1_000_000),
            (2, 10_000),
            (3, 20_000_000),
            (4, -1_010_000)
        ]
    );
    app.stop().await;
}

async fn zero_total_invoices_are_paid_at_issue(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let lines = vec![line("Onboarding", 1, "50.00"), line("Waived", 1, "-50.00")];
    let invoice = try_create_invoice(&app, &app.root(), create_request(&acme.id, lines, "zero"))
        .await
        .expect("create invoice");
    assert_eq!(status_of(&invoice), proto::InvoiceStatus::Paid);
    assert_eq!(amount(&invoice.total), "0.00");
    assert_eq!(amount(&invoice.amount_due), "0.00");
    assert!(invoice.paid_time.is_some());
    assert!(invoice.payment_transaction_id.is_empty());
    assert!(
        ledger(&app, &acme.id).await.is_empty(),
        "nothing is debited"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Paying from credits
// ---------------------------------------------------------------------------

async fn paying_from_credits_debits_the_ledger_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    fund(&app, &acme.id, "50.00").await;
    let invoice = invoice_for(&app, &acme.id, "20.00", false).await;
    let paid = pay(&app, &acme.id, &invoice.id, "pay-1")
        .await
        .expect("pay");
    let paid_invoice = paid.invoice.clone().expect("invoice");
    let txn = paid.transaction.clone().expect("transaction");
    assert_eq!(status_of(&paid_invoice), proto::InvoiceStatus::Paid);
    assert_eq!(amount(&paid_invoice.amount_paid), "20.00");
    assert_eq!(amount(&paid_invoice.amount_due), "0.00");
    assert!(paid_invoice.paid_time.is_some());
    assert_eq!(paid_invoice.payment_transaction_id, txn.id);
    assert_eq!(paid_invoice.etag, "\"2\"");
    assert_eq!(paid_invoice.lines.len(), 1);
    assert_eq!(
        txn.r#type,
        proto::CreditTransactionType::InvoicePayment as i32
    );
    assert_eq!(txn.status, proto::CreditTransactionStatus::Succeeded as i32);
    assert_eq!(amount(&txn.amount), "-20.00");
    assert_eq!(amount(&txn.balance_after), "30.00");
    assert_eq!(txn.invoice_id, invoice.id);
    assert_eq!(txn.request_id, "pay-1");
    assert_eq!(txn.author, "user:config_admin-user");
    assert_eq!(balance(&app, &acme.id).await, "30.00");

    // A retry returns the first result and debits nothing more.
    let again = pay(&app, &acme.id, &invoice.id, "pay-1")
        .await
        .expect("retry");
    assert_eq!(again, paid);
    let entries = ledger(&app, &acme.id).await;
    assert_eq!(entries.len(), 2, "the gift and one payment");
    assert_eq!(entries[1].kind, "INVOICE_PAYMENT");
    assert_eq!(entries[1].amount_micros, -20_000_000);
    assert_eq!(
        entries[1].invoice_id,
        Some(ids::decode(IdKind::Invoice, &invoice.id).unwrap())
    );
    assert_eq!(balance(&app, &acme.id).await, "30.00");

    // A new payment of a paid invoice is refused.
    let err = pay(&app, &acme.id, &invoice.id, "pay-2").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "INVOICE_NOT_OPEN");
    assert_eq!(ledger(&app, &acme.id).await.len(), 2);
    let actions: Vec<String> = audits(&app, &invoice.id)
        .await
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(actions, ["CreateInvoice", "PayInvoice"]);
    let summary = &audits(&app, &invoice.id).await[1].summary;
    assert!(summary.contains("\"amount\":\"20.00\""), "{summary}");
    assert!(summary.contains("\"balance_after\":\"30.00\""), "{summary}");
    app.stop().await;
}

async fn paying_without_enough_credits_fails_and_writes_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    fund(&app, &acme.id, "5.00").await;
    let invoice = invoice_for(&app, &acme.id, "20.00", false).await;
    let err = pay(&app, &acme.id, &invoice.id, "pay-short")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "INSUFFICIENT_CREDITS");
    let unchanged = get_invoice(&app, &acme.id, &invoice.id).await;
    assert_eq!(unchanged, invoice, "the invoice is untouched");
    assert_eq!(ledger(&app, &acme.id).await.len(), 1);
    assert_eq!(balance(&app, &acme.id).await, "5.00");
    assert_eq!(audits(&app, &invoice.id).await.len(), 1);

    // A refusal is not remembered: once funded, the same request id pays.
    fund(&app, &acme.id, "15.00").await;
    let paid = pay(&app, &acme.id, &invoice.id, "pay-short")
        .await
        .expect("pay");
    assert_eq!(
        amount(&paid.transaction.expect("txn").balance_after),
        "0.00"
    );
    assert_eq!(balance(&app, &acme.id).await, "0.00");
    app.stop().await;
}

async fn create_invoice_pays_from_credits_only_when_the_balance_covers_it(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    fund(&app, &acme.id, "30.00").await;
    let paid = invoice_for(&app, &acme.id, "20.00", true).await;
    assert_eq!(status_of(&paid), proto::InvoiceStatus::Paid);
    assert!(paid.payment_transaction_id.starts_with("txn_"));
    assert_eq!(amount(&paid.amount_due), "0.00");
    assert_eq!(balance(&app, &acme.id).await, "10.00");
    let open = invoice_for(&app, &acme.id, "20.00", true).await;
    assert_eq!(
        status_of(&open),
        proto::InvoiceStatus::Open,
        "not covered: left open"
    );
    assert!(open.payment_transaction_id.is_empty());
    assert_eq!(balance(&app, &acme.id).await, "10.00");
    let entries = ledger(&app, &acme.id).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(
        ids::encode(IdKind::Transaction, entries[1].id),
        paid.payment_transaction_id
    );
    app.stop().await;
}

async fn create_invoice_retries_return_the_same_invoice(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    fund(&app, &acme.id, "100.00").await;
    let request = proto::CreateInvoiceRequest {
        pay_from_credits: true,
        ..create_request(&acme.id, vec![line("Consulting", 2, "7.50")], "create-1")
    };
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let mut client = BillingServiceClient::new(
            Channel::from_shared(format!("http://127.0.0.1:{}", app.grpc_port))
                .unwrap()
                .connect_lazy(),
        );
        let request = authed(request.clone(), &app.root());
        tasks.push(tokio::spawn(async move {
            client.create_invoice(request).await.map(|r| r.into_inner())
        }));
    }
    let mut ids_seen = std::collections::HashSet::new();
    for task in tasks {
        let invoice = task
            .await
            .unwrap()
            .expect("create")
            .invoice
            .expect("invoice");
        assert_eq!(status_of(&invoice), proto::InvoiceStatus::Paid);
        ids_seen.insert(invoice.id);
    }
    assert_eq!(ids_seen.len(), 1, "every twin gets the same invoice");
    let retry = try_create_invoice(&app, &app.root(), request.clone())
        .await
        .unwrap();
    assert!(ids_seen.contains(&retry.id));
    assert_eq!(invoice_count(&app, &acme.id).await, 1);
    assert_eq!(ledger(&app, &acme.id).await.len(), 2, "one gift, one debit");
    assert_eq!(balance(&app, &acme.id).await, "85.00");
    let changed = proto::CreateInvoiceRequest {
        memo: "different".into(),
        ..request
    };
    let err = try_create_invoice(&app, &app.root(), changed)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["request_id"]);
    app.stop().await;
}

async fn concurrent_payments_of_one_invoice_debit_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    fund(&app, &acme.id, "100.00").await;
    let invoice = invoice_for(&app, &acme.id, "20.00", false).await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut client = BillingServiceClient::new(
            Channel::from_shared(format!("http://127.0.0.1:{}", app.grpc_port))
                .unwrap()
                .connect_lazy(),
        );
        let (admin, org, id) = (admin.clone(), acme.id.clone(), invoice.id.clone());
        tasks.push(tokio::spawn(async move {
            pay_with(&mut client, &admin, &org, &id, &format!("race-{i}")).await
        }));
    }
    let mut paid = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(response) => {
                paid += 1;
                assert_eq!(amount(&response.transaction.unwrap().amount), "-20.00");
            }
            Err(err) => {
                assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
                assert_eq!(reason(&err), "INVOICE_NOT_OPEN");
            }
        }
    }
    assert_eq!(paid, 1, "exactly one payment wins");
    let payments: Vec<_> = ledger(&app, &acme.id)
        .await
        .into_iter()
        .filter(|t| t.kind == "INVOICE_PAYMENT")
        .collect();
    assert_eq!(payments.len(), 1);
    assert_eq!(balance(&app, &acme.id).await, "80.00");
    let stored = get_invoice(&app, &acme.id, &invoice.id).await;
    assert_eq!(status_of(&stored), proto::InvoiceStatus::Paid);
    assert_eq!(
        stored.payment_transaction_id,
        ids::encode(IdKind::Transaction, payments[0].id)
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Void and uncollectible
// ---------------------------------------------------------------------------

async fn void_and_uncollectible_follow_the_state_machine(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    fund(&app, &acme.id, "100.00").await;
    let a = invoice_for(&app, &acme.id, "10.00", false).await;
    let b = invoice_for(&app, &acme.id, "11.00", false).await;
    let c = invoice_for(&app, &acme.id, "12.00", true).await;

    let err = void(&app, &acme.id, &a.id, "\"7\"").await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "a stale etag");
    let voided = void(&app, &acme.id, &a.id, &a.etag).await.expect("void");
    assert_eq!(status_of(&voided), proto::InvoiceStatus::Void);
    assert!(voided.void_time.is_some());
    assert_eq!(voided.etag, "\"2\"");
    for err in [
        void(&app, &acme.id, &a.id, "").await.unwrap_err(),
        uncollectible(&app, &acme.id, &a.id, "").await.unwrap_err(),
        pay(&app, &acme.id, &a.id, "pay-void").await.unwrap_err(),
    ] {
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(reason(&err), "INVOICE_NOT_OPEN");
    }

    let err = uncollectible(&app, &acme.id, &b.id, "\"2\"")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    let written_off = uncollectible(&app, &acme.id, &b.id, "")
        .await
        .expect("mark");
    assert_eq!(status_of(&written_off), proto::InvoiceStatus::Uncollectible);
    assert_eq!(amount(&written_off.amount_due), "11.00");
    let err = void(&app, &acme.id, &b.id, "").await.unwrap_err();
    assert_eq!(reason(&err), "INVOICE_NOT_OPEN");

    assert_eq!(status_of(&c), proto::InvoiceStatus::Paid);
    for err in [
        void(&app, &acme.id, &c.id, "").await.unwrap_err(),
        uncollectible(&app, &acme.id, &c.id, "").await.unwrap_err(),
    ] {
        assert_eq!(err.code(), Code::FailedPrecondition);
    }

    let request = proto::VoidInvoiceRequest {
        organization_id: acme.id.clone(),
        invoice_id: b.id.clone(),
        reason: "  ".into(),
        etag: String::new(),
    };
    let err = app
        .billing()
        .void_invoice(authed(request, &app.root()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations(&err), ["reason"]);

    let actions = |rows: Vec<audit_entries::Model>| -> Vec<String> {
        rows.into_iter().map(|r| r.action).collect()
    };
    assert_eq!(
        actions(audits(&app, &a.id).await),
        ["CreateInvoice", "VoidInvoice"]
    );
    assert_eq!(
        actions(audits(&app, &b.id).await),
        ["CreateInvoice", "MarkInvoiceUncollectible"]
    );
    let summary = &audits(&app, &a.id).await[1].summary;
    assert!(summary.contains("issued by mistake") && summary.contains("\"total\":\"10.00\""));
    assert_eq!(
        balance(&app, &acme.id).await,
        "88.00",
        "only the paid invoice debited"
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

async fn bad_input_is_rejected_field_by_field(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let root = app.root();
    let create = |request| try_create_invoice(&app, &root, request);
    let mut bad_lines = vec![
        line("", 1, "1.00"),
        line("Zero", 0, "1.00"),
        line("Garbage", 1, "abc"),
        line("Too precise", 1, "1.0000001"),
        proto::CreateInvoiceLine {
            unit_amount: Some(proto::Money {
                currency_code: "EUR".into(),
                amount: "1.00".into(),
            }),
            ..line("Euro", 1, "")
        },
    ];
    bad_lines.push(line("Control\u{7}", 1, "1.00"));
    let request = proto::CreateInvoiceRequest {
        due_date: "2001-01-01".into(),
        memo: "m".repeat(1001),
        ..create_request(&acme.id, bad_lines, "")
    };
    let err = create(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violations(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "due_date",
            "lines[0].description",
            "lines[1].quantity",
            "lines[2].unit_amount.amount",
            "lines[3].unit_amount.amount",
            "lines[4].unit_amount.currency_code",
            "lines[5].description",
            "memo",
            "request_id",
        ]
    );

    let negative = vec![line("Credit", 1, "-5.00"), line("Fee", 1, "1.00")];
    let err = create(create_request(&acme.id, negative, "neg"))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["lines"]);
    let err = create(create_request(&acme.id, vec![], "none"))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["lines"]);
    let many = (0..101)
        .map(|i| line(&format!("Line {i}"), 1, "1.00"))
        .collect();
    let err = create(create_request(&acme.id, many, "many"))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["lines"]);
    let huge = vec![line("Huge", 1_000_000_000, "999999999999.00")];
    let err = create(create_request(&acme.id, huge, "huge"))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["lines[0]"]);
    let err = create(proto::CreateInvoiceRequest {
        due_date: "2026-02-30".into(),
        ..create_request(&acme.id, vec![line("Fee", 1, "1.00")], "date")
    })
    .await
    .unwrap_err();
    assert_eq!(violations(&err), ["due_date"]);
    assert_eq!(
        invoice_count(&app, &acme.id).await,
        0,
        "nothing was written"
    );

    let request = proto::PayInvoiceRequest {
        organization_id: acme.id.clone(),
        invoice_id: "org_nope".into(),
        request_id: String::new(),
    };
    let err = app
        .billing()
        .pay_invoice(authed(request, &app.root()))
        .await
        .unwrap_err();
    let mut fields = violations(&err);
    fields.sort();
    assert_eq!(fields, ["invoice_id", "request_id"]);
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

async fn list(
    app: &TestApp,
    token: &str,
    request: proto::ListInvoicesRequest,
) -> Result<proto::ListInvoicesResponse, Status> {
    app.billing()
        .list_invoices(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

/// Every number listed for `filter` / `order_by`, walking pages of `page_size`.
async fn numbers(
    app: &TestApp,
    org_id: &str,
    filter: &str,
    order_by: &str,
    page_size: i32,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = proto::ListInvoicesRequest {
            organization_id: org_id.into(),
            page_size,
            page_token: page_token.clone(),
            filter: filter.into(),
            order_by: order_by.into(),
        };
        let page = list(app, &app.root(), request).await.expect("list");
        assert!(page.invoices.len() <= page_size as usize);
        out.extend(page.invoices.iter().map(|i| i.number.clone()));
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

async fn list_pages_filters_and_orders(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let beta = tenant(&app, "Beta", "").await;
    fund(&app, &acme.id, "100.00").await;
    let mut made = Vec::new();
    for (i, pay_now) in [false, true, false, true, false].into_iter().enumerate() {
        made.push(invoice_for(&app, &acme.id, &format!("{}.00", i + 1), pay_now).await);
    }
    invoice_for(&app, &beta.id, "9.00", false).await;
    void(&app, &acme.id, &made[4].id, "").await.expect("void");
    let n =
        |list: &[&str]| -> Vec<String> { list.iter().map(|s| format!("INV-00000{s}")).collect() };

    assert_eq!(
        numbers(&app, &acme.id, "", "", 2).await,
        n(&["5", "4", "3", "2", "1"])
    );
    assert_eq!(
        numbers(&app, &acme.id, "", "number", 2).await,
        n(&["1", "2", "3", "4", "5"])
    );
    assert_eq!(
        numbers(&app, &acme.id, "", "number desc", 3).await,
        n(&["5", "4", "3", "2", "1"])
    );
    assert_eq!(
        numbers(&app, &acme.id, "", "issue_time asc", 1).await,
        n(&["1", "2", "3", "4", "5"])
    );
    assert_eq!(
        numbers(&app, &acme.id, "", "create_time", 50).await,
        n(&["1", "2", "3", "4", "5"])
    );
    assert_eq!(
        numbers(&app, &acme.id, "status = PAID", "number", 1).await,
        n(&["2", "4"])
    );
    assert_eq!(
        numbers(&app, &acme.id, "status = INVOICE_STATUS_OPEN", "number", 10).await,
        n(&["1", "3"])
    );
    assert_eq!(
        numbers(&app, &acme.id, "status = VOID", "", 10).await,
        n(&["5"])
    );
    assert_eq!(
        numbers(&app, &acme.id, "status != OPEN", "number", 10).await,
        n(&["2", "4", "5"])
    );
    assert_eq!(
        numbers(
            &app,
            &acme.id,
            "subscription_id != sub_01jd8x0000000000000000000a",
            "number",
            10
        )
        .await,
        n(&["1", "2", "3", "4", "5"]),
        "one-off invoices belong to no subscription"
    );
    let third = made[2].issue_time.expect("issue time");
    let at = chrono::DateTime::from_timestamp(third.seconds, third.nanos as u32)
        .expect("time")
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!(
        numbers(
            &app,
            &acme.id,
            &format!("issue_time >= \"{at}\""),
            "number",
            10
        )
        .await,
        n(&["3", "4", "5"])
    );
    assert_eq!(
        numbers(
            &app,
            &acme.id,
            &format!("issue_time > \"{at}\""),
            "number",
            10
        )
        .await,
        n(&["4", "5"])
    );
    assert_eq!(
        numbers(
            &app,
            &acme.id,
            &format!("period_start < \"{at}\" AND status = OPEN"),
            "number",
            10
        )
        .await,
        n(&["1"])
    );
    assert!(
        numbers(
            &app,
            &acme.id,
            "subscription_id = sub_01jd8x0000000000000000000a",
            "",
            10
        )
        .await
        .is_empty()
    );

    let listed = list(
        &app,
        &app.root(),
        proto::ListInvoicesRequest {
            organization_id: acme.id.clone(),
            order_by: "number".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        listed.invoices[1], made[1],
        "list items are whole invoices with lines"
    );
    assert_eq!(listed.invoices[0].lines.len(), 1);

    for (filter, order_by, field) in [
        ("state = OPEN", "", "filter"),
        ("status = LATE", "", "filter"),
        ("issue_time >= yesterday", "", "filter"),
        ("subscription_id = inv_123", "", "filter"),
        ("", "amount", "order_by"),
        ("", "number sideways", "order_by"),
    ] {
        let err = list(
            &app,
            &app.root(),
            proto::ListInvoicesRequest {
                organization_id: acme.id.clone(),
                filter: filter.into(),
                order_by: order_by.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{filter} {order_by}");
        assert_eq!(violations(&err), [field], "{filter} {order_by}");
    }
    let first = list(
        &app,
        &app.root(),
        proto::ListInvoicesRequest {
            organization_id: acme.id.clone(),
            page_size: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = list(
        &app,
        &app.root(),
        proto::ListInvoicesRequest {
            organization_id: acme.id.clone(),
            page_size: 1,
            page_token: first.next_page_token,
            order_by: "number".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        violations(&err),
        ["page_token"],
        "a token is bound to its query"
    );
    app.stop().await;
}

async fn invoices_of_another_organization_are_not_found(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let beta = tenant(&app, "Beta", "").await;
    let invoice = invoice_for(&app, &acme.id, "10.00", false).await;
    let beta_admin = app.token("CONFIG_ADMIN", &beta.id);
    for token in [app.root(), beta_admin.clone()] {
        let request = proto::GetInvoiceRequest {
            organization_id: beta.id.clone(),
            invoice_id: invoice.id.clone(),
        };
        let err = app
            .billing()
            .get_invoice(authed(request, &token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    let err = pay_with(&mut app.billing(), &beta_admin, &beta.id, &invoice.id, "x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = void(&app, &beta.id, &invoice.id, "").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Naming the right organization is refused to a foreign caller.
    let request = proto::GetInvoiceRequest {
        organization_id: acme.id.clone(),
        invoice_id: invoice.id.clone(),
    };
    let err = app
        .billing()
        .get_invoice(authed(request, &beta_admin))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let listed = numbers(&app, &beta.id, "", "", 10).await;
    assert!(listed.is_empty());
    app.stop().await;
}

// ---------------------------------------------------------------------------
// PDF
// ---------------------------------------------------------------------------

async fn pdf(
    app: &TestApp,
    token: &str,
    org_id: &str,
    invoice_id: &str,
) -> proto::GetInvoicePdfResponse {
    let request = proto::GetInvoicePdfRequest {
        organization_id: org_id.into(),
        invoice_id: invoice_id.into(),
    };
    app.billing()
        .get_invoice_pdf(authed(request, token))
        .await
        .expect("get pdf")
        .into_inner()
}

/// The text of every page of a PDF, and the page count.
fn pdf_text(content: &[u8]) -> (String, usize) {
    let document = lopdf::Document::load_mem(content).expect("a parseable PDF");
    let pages: Vec<u32> = document.get_pages().keys().copied().collect();
    let text = document.extract_text(&pages).expect("extract text");
    (text, pages.len())
}

async fn the_pdf_has_the_number_lines_and_totals(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Café Ünïcode 東京 (Acme)", "").await;
    fund(&app, &acme.id, "5.00").await;
    let lines = vec![
        line("Consulting (March)", 3, "0.3333"),
        line("Implementation package", 2, "12.50"),
        line("Discount \\ promo", 1, "-0.50"),
    ];
    let request = proto::CreateInvoiceRequest {
        memo: "Thanks for your business — see you soon".into(),
        ..create_request(&acme.id, lines, "pdf-1")
    };
    let invoice = try_create_invoice(&app, &app.root(), request)
        .await
        .unwrap();
    pay(&app, &acme.id, &invoice.id, "pdf-pay")
        .await
        .unwrap_err();
    let member = app.token("MEMBER", &acme.id);
    let response = pdf(&app, &member, &acme.id, &invoice.id).await;
    assert_eq!(response.content_type, "application/pdf");
    assert_eq!(response.filename, "INV-000001.pdf");
    assert!(response.content.starts_with(b"%PDF-"));
    let (text, pages) = pdf_text(&response.content);
    assert_eq!(pages, 1);
    for expected in [
        "INVOICE",
        "INV-000001",
        "OPEN",
        "Consulting (March)",
        "Implementation package",
        "Discount \\ promo",
        "0.3333",
        "1.00",
        "25.00",
        "-0.50",
        "Total",
        "25.50 USD",
        "Amount due",
        "Amount paid",
        "0.00 USD",
        "Thanks for your business",
        "Acme",
        "Caf",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
    assert!(!text.contains("東"), "non-Latin-1 text is transliterated");

    // The document follows the invoice's state.
    void(&app, &acme.id, &invoice.id, "").await.unwrap();
    let (text, _) = pdf_text(&pdf(&app, &app.root(), &acme.id, &invoice.id).await.content);
    assert!(
        text.contains("VOID") && text.contains("issued by mistake"),
        "{text}"
    );
    app.stop().await;
}

async fn long_invoices_continue_over_several_pdf_pages(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let long = "A very long description that wraps over several lines of the table ".repeat(6);
    let lines: Vec<_> = (1..=100)
        .map(|i| {
            line(
                &format!(
                    "Item-{i:03} {}",
                    if i % 10 == 0 { long.as_str() } else { "" }
                ),
                i,
                "1.00",
            )
        })
        .collect();
    let invoice = try_create_invoice(&app, &app.root(), create_request(&acme.id, lines, "long"))
        .await
        .unwrap();
    assert_eq!(amount(&invoice.total), "5050.00");
    let (text, pages) = pdf_text(&pdf(&app, &app.root(), &acme.id, &invoice.id).await.content);
    assert!(pages >= 3, "{pages} pages");
    for i in 1..=100 {
        assert!(text.contains(&format!("Item-{i:03}")), "line {i} missing");
    }
    assert!(text.contains("5050.00 USD"));
    assert!(text.contains(&format!("page {pages} of {pages}")));
    app.stop().await;
}

// ---------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------

async fn only_managers_issue_and_only_operators_close_invoices(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let reseller = agency(&app, "Reseller").await;
    let acme = tenant(&app, "Acme", &reseller.id).await;
    let fee = || vec![line("Fee", 1, "3.00")];
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let member = app.token("MEMBER", &acme.id);
    let err = try_create_invoice(&app, &admin, create_request(&acme.id, fee(), "r1"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "a tenant does not invoice itself"
    );
    let by_agency = try_create_invoice(
        &app,
        &app.token("AGENCY_ADMIN", &reseller.id),
        create_request(&acme.id, fee(), "r2"),
    )
    .await
    .expect("the agency invoices its tenant");
    let by_operator = try_create_invoice(
        &app,
        &app.token("ROOT_POWER_USER", "internal"),
        create_request(&acme.id, fee(), "r3"),
    )
    .await
    .expect("an operator invoices anyone");
    assert_eq!(by_operator.number, "INV-000002");
    let by_system = try_create_invoice(
        &app,
        &app.token("SYSTEM", "internal"),
        create_request(&acme.id, fee(), "r4"),
    )
    .await
    .expect("a service invoices anyone");
    assert_eq!(by_system.number, "INV-000003");

    // Members read, admins pay, operators close.
    assert_eq!(numbers(&app, &acme.id, "", "", 10).await.len(), 3);
    let listed = list(
        &app,
        &member,
        proto::ListInvoicesRequest {
            organization_id: acme.id.clone(),
            ..Default::default()
        },
    )
    .await
    .expect("a member lists");
    assert_eq!(listed.invoices.len(), 3);
    fund(&app, &acme.id, "10.00").await;
    let err = pay_with(&mut app.billing(), &member, &acme.id, &by_agency.id, "m")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    pay_with(&mut app.billing(), &admin, &acme.id, &by_agency.id, "a")
        .await
        .expect("the admin pays");
    for token in [&admin, &app.token("AGENCY_ADMIN", &reseller.id)] {
        let request = proto::VoidInvoiceRequest {
            organization_id: acme.id.clone(),
            invoice_id: by_operator.id.clone(),
            reason: "no".into(),
            etag: String::new(),
        };
        let err = app
            .billing()
            .void_invoice(authed(request, token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
    let by_power_user = proto::MarkInvoiceUncollectibleRequest {
        organization_id: acme.id.clone(),
        invoice_id: by_operator.id.clone(),
        reason: "gone".into(),
        etag: String::new(),
    };
    app.billing()
        .mark_invoice_uncollectible(authed(
            by_power_user,
            &app.token("ROOT_POWER_USER", "internal"),
        ))
        .await
        .expect("an operator closes");
    let audit = &audits(&app, &by_agency.id).await[0];
    assert_eq!(audit.actor_id, "agency_admin-user");
    app.stop().await;
}
