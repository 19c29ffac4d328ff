//! Credit purchases through the `manual` gateway and through Stripe (a local fake):
//! BuyCredits, exactly-once completion by CompletePayment, ConfirmManualPayment and
//! the signed webhook, also all at once, declines, and gateway errors.

use futures::future::join_all;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use tenantry::{
    config::Secret,
    proto,
    storage::entities::{outbox_events, stripe_events},
};
use tonic::{Code, Status};

use crate::{
    credits::{all_transactions, balance, balance_amount},
    fake_stripe::{FakeStripe, SECRET_KEY, WEBHOOK_SECRET, event, sign},
    helpers::{Backend, TestApp, authed, metadata, reason, violations},
    on_both_backends,
    organizations::{audit_actions, org_uuid, tenant, usd},
};

async fn buy_as(
    app: &TestApp,
    token: &str,
    org_id: &str,
    amount: proto::Money,
    gateway: &str,
    request_id: &str,
) -> Result<proto::BuyCreditsResponse, Status> {
    let request = proto::BuyCreditsRequest {
        organization_id: org_id.into(),
        amount: Some(amount),
        gateway: gateway.into(),
        payment_method_id: if gateway == "stripe" {
            "pm_card_visa".into()
        } else {
            String::new()
        },
        request_id: request_id.into(),
    };
    app.billing()
        .buy_credits(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

async fn buy(
    app: &TestApp,
    org_id: &str,
    amount: &str,
    gateway: &str,
) -> proto::BuyCreditsResponse {
    let request_id = uuid::Uuid::now_v7().to_string();
    buy_as(app, &app.root(), org_id, usd(amount), gateway, &request_id)
        .await
        .expect("buy credits")
}

async fn complete_as(
    app: &TestApp,
    token: &str,
    org_id: &str,
    bought: &proto::BuyCreditsResponse,
    request_id: &str,
) -> Result<proto::CompletePaymentResponse, Status> {
    let request = proto::CompletePaymentRequest {
        organization_id: org_id.into(),
        transaction_id: bought.transaction_id.clone(),
        payment_intent_id: bought.payment_intent_id.clone(),
        request_id: request_id.into(),
    };
    app.billing()
        .complete_payment(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

async fn complete(
    app: &TestApp,
    org_id: &str,
    bought: &proto::BuyCreditsResponse,
) -> proto::CompletePaymentResponse {
    complete_as(app, &app.root(), org_id, bought, "")
        .await
        .expect("complete payment")
}

async fn confirm_as(
    app: &TestApp,
    token: &str,
    org_id: &str,
    intent_id: &str,
    request_id: &str,
) -> Result<proto::ConfirmManualPaymentResponse, Status> {
    let request = proto::ConfirmManualPaymentRequest {
        organization_id: org_id.into(),
        payment_intent_id: intent_id.into(),
        note: "wire received".into(),
        request_id: request_id.into(),
    };
    app.billing()
        .confirm_manual_payment(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

fn status_of(transaction: &Option<proto::CreditTransaction>) -> proto::CreditTransactionStatus {
    proto::CreditTransactionStatus::try_from(transaction.as_ref().expect("transaction").status)
        .expect("status")
}

/// A server whose Stripe gateway talks to `fake`, with webhooks enabled.
async fn stripe_app(backend: Backend, fake: &FakeStripe) -> Option<TestApp> {
    let url = fake.url();
    TestApp::spawn_with(backend, move |s| {
        s.billing.stripe_secret_key = Some(Secret::new(SECRET_KEY));
        s.billing.stripe_api_base = url;
        s.billing.stripe_webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
    })
    .await
}

/// POSTs a webhook body with a signature header; returns the HTTP status.
async fn deliver(app: &TestApp, body: &str, signature: &str) -> u16 {
    reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/webhooks/stripe",
            app.http_port
        ))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .expect("webhook delivered")
        .status()
        .as_u16()
}

/// Delivers `body` signed now with the configured secret.
async fn deliver_signed(app: &TestApp, body: &str) -> u16 {
    let t = chrono::Utc::now().timestamp();
    deliver(app, body, &sign(WEBHOOK_SECRET, t, body)).await
}

async fn stripe_event_count(app: &TestApp) -> u64 {
    stripe_events::Entity::find()
        .count(app.store.db())
        .await
        .expect("count events")
}

async fn manual_purchases_credit_once_however_often_they_complete(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let bought = buy_as(&app, &admin, &acme.id, usd("25.00"), "", "buy-1")
        .await
        .expect("buy");
    assert_eq!(bought.gateway, "manual");
    assert!(bought.payment_intent_id.starts_with("pi_manual_"));
    assert!(
        bought
            .client_secret
            .starts_with(&format!("{}_secret_", bought.payment_intent_id))
    );
    assert_eq!(
        status_of(&bought.transaction),
        proto::CreditTransactionStatus::Pending
    );
    // A retry answers the same purchase and intent.
    let again = buy_as(&app, &admin, &acme.id, usd("25.00"), "", "buy-1")
        .await
        .expect("retry");
    assert_eq!(again, bought);
    let pending = balance(&app, &acme.id).await;
    assert_eq!(pending.balance.expect("balance").amount, "0.00");
    assert_eq!(pending.pending.expect("pending").amount, "25.00");

    // Before the operator confirms, completion reports PENDING and credits nothing.
    let early = complete_as(&app, &admin, &acme.id, &bought, "")
        .await
        .expect("early");
    assert_eq!(
        status_of(&early.transaction),
        proto::CreditTransactionStatus::Pending
    );
    assert!(!early.newly_credited);

    // Sixteen operators confirm at once: one credit.
    let root = app.root();
    let request_ids: Vec<String> = (0..16).map(|i| format!("confirm-{i}")).collect();
    let confirmations = join_all(
        request_ids
            .iter()
            .map(|id| confirm_as(&app, &root, &acme.id, &bought.payment_intent_id, id)),
    )
    .await;
    for done in &confirmations {
        let done = done.as_ref().expect("confirm");
        assert_eq!(
            status_of(&done.transaction),
            proto::CreditTransactionStatus::Succeeded
        );
        assert!(done.service_purchase_id.is_empty());
    }
    for _ in 0..2 {
        let done = complete_as(&app, &admin, &acme.id, &bought, "")
            .await
            .expect("complete");
        assert!(!done.newly_credited);
        assert_eq!(done.balance.expect("balance").amount, "25.00");
    }
    let now = balance(&app, &acme.id).await;
    assert_eq!(now.balance.expect("balance").amount, "25.00");
    assert_eq!(now.pending.expect("pending").amount, "0.00");
    assert_eq!(
        audit_actions(&app, &bought.transaction_id).await,
        ["BuyCredits", "ConfirmManualPayment"]
    );
    let transactions = all_transactions(&app, &acme.id).await;
    assert_eq!(transactions.len(), 1);
    assert_eq!(
        transactions[0]
            .balance_after
            .as_ref()
            .expect("after")
            .amount,
        "25.00"
    );
    app.stop().await;
}

async fn buy_credits_checks_its_input_and_its_callers(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let root = app.root();
    let eur = proto::Money {
        currency_code: "EUR".into(),
        amount: "10.00".into(),
    };
    let cases = [
        (usd("10.001"), "", "b1", "amount.amount"),
        (usd("0"), "", "b2", "amount.amount"),
        (eur, "", "b3", "amount.currency_code"),
        (usd("10.00"), "paypal", "b4", "gateway"),
        (usd("10.00"), "", "", "request_id"),
    ];
    for (amount, gateway, request_id, field) in cases {
        let status = buy_as(&app, &root, &acme.id, amount, gateway, request_id)
            .await
            .expect_err("bad input");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violations(&status), vec![field.to_owned()]);
    }
    let status = buy_as(&app, &root, &acme.id, usd("10.00"), "stripe", "b5")
        .await
        .expect_err("stripe is not configured here");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "GATEWAY_NOT_CONFIGURED");
    let status = buy_as(
        &app,
        &app.token("MEMBER", &acme.id),
        &acme.id,
        usd("1"),
        "",
        "b6",
    )
    .await
    .expect_err("members do not buy");
    assert_eq!(status.code(), Code::PermissionDenied);
    let other = tenant(&app, "Other", "").await;
    let status = buy_as(
        &app,
        &app.token("CONFIG_ADMIN", &other.id),
        &acme.id,
        usd("1"),
        "",
        "b7",
    )
    .await
    .expect_err("foreign admin");
    assert_eq!(status.code(), Code::PermissionDenied);

    buy_as(&app, &root, &acme.id, usd("10.00"), "manual", "b8")
        .await
        .expect("buy");
    let status = buy_as(&app, &root, &acme.id, usd("11.00"), "manual", "b8")
        .await
        .expect_err("same request id, other amount");
    assert_eq!(violations(&status), vec!["request_id".to_owned()]);
    assert_eq!(all_transactions(&app, &acme.id).await.len(), 1);
    assert_eq!(
        balance(&app, &acme.id)
            .await
            .pending
            .expect("pending")
            .amount,
        "10.00"
    );
    app.stop().await;
}

async fn stripe_purchases_send_form_requests_with_idempotency_keys(backend: Backend) {
    let fake = FakeStripe::start().await;
    let Some(app) = stripe_app(backend, &fake).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let bought = buy_as(&app, &admin, &acme.id, usd("19.99"), "stripe", "buy-s1")
        .await
        .expect("buy");
    assert_eq!(bought.gateway, "stripe");
    assert!(bought.payment_intent_id.starts_with("pi_fake"));
    let intent = fake.intent(&bought.payment_intent_id);
    assert_eq!(bought.client_secret, intent["client_secret"]);
    let creates = fake.creates();
    assert_eq!(creates.len(), 1);
    let call = &creates[0];
    assert_eq!(call.field("amount"), Some("1999"));
    assert_eq!(call.field("currency"), Some("usd"));
    assert_eq!(call.field("payment_method"), Some("pm_card_visa"));
    assert_eq!(
        call.field("metadata[organization_id]"),
        Some(acme.id.as_str())
    );
    assert_eq!(call.field("metadata[request_id]"), Some("buy-s1"));
    let key = call.idempotency_key.clone().expect("idempotency key");

    // A retry is answered from tenantry's own record, before Stripe is called again.
    let again = buy_as(&app, &admin, &acme.id, usd("19.99"), "stripe", "buy-s1")
        .await
        .expect("retry");
    assert_eq!(again, bought);
    assert_eq!(fake.creates().len(), 1);
    // Another request id is another intent with another key.
    let second = buy_as(&app, &admin, &acme.id, usd("5.00"), "stripe", "buy-s2")
        .await
        .expect("second");
    assert_ne!(second.payment_intent_id, bought.payment_intent_id);
    assert_ne!(
        fake.creates()[1].idempotency_key.as_deref(),
        Some(key.as_str())
    );

    let early = complete_as(&app, &admin, &acme.id, &bought, "")
        .await
        .expect("early");
    assert_eq!(
        status_of(&early.transaction),
        proto::CreditTransactionStatus::Pending
    );
    fake.succeed(&bought.payment_intent_id);
    let first = complete_as(&app, &admin, &acme.id, &bought, "c-1")
        .await
        .expect("complete");
    assert!(first.newly_credited);
    assert_eq!(first.balance.as_ref().expect("balance").amount, "19.99");
    // The same request id replays the first answer; any other call credits nothing.
    let replay = complete_as(&app, &admin, &acme.id, &bought, "c-1")
        .await
        .expect("replay");
    assert_eq!(replay, first);
    let later = complete_as(&app, &admin, &acme.id, &bought, "c-2")
        .await
        .expect("again");
    assert!(!later.newly_credited);
    assert_eq!(balance_amount(&app, &acme.id).await, "19.99");

    // The intent id must be the transaction's.
    let mismatched = proto::BuyCreditsResponse {
        payment_intent_id: second.payment_intent_id.clone(),
        ..bought.clone()
    };
    let status = complete_as(&app, &admin, &acme.id, &mismatched, "")
        .await
        .expect_err("other intent");
    assert_eq!(violations(&status), vec!["payment_intent_id".to_owned()]);
    let status = complete_as(&app, &app.token("MEMBER", &acme.id), &acme.id, &bought, "")
        .await
        .expect_err("members do not complete");
    assert_eq!(status.code(), Code::PermissionDenied);
    app.stop().await;
}

async fn sixteen_concurrent_completions_credit_once(backend: Backend) {
    let fake = FakeStripe::start().await;
    let Some(app) = stripe_app(backend, &fake).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let bought = buy(&app, &acme.id, "42.00", "stripe").await;
    fake.succeed(&bought.payment_intent_id);
    let results = join_all((0..16).map(|_| complete(&app, &acme.id, &bought))).await;
    let credited = results.iter().filter(|r| r.newly_credited).count();
    assert_eq!(credited, 1, "exactly one call applies the credit");
    for r in &results {
        assert_eq!(
            status_of(&r.transaction),
            proto::CreditTransactionStatus::Succeeded
        );
    }
    assert_eq!(balance_amount(&app, &acme.id).await, "42.00");
    assert_eq!(
        audit_actions(&app, &bought.transaction_id).await,
        ["BuyCredits", "CompletePayment"]
    );
    app.stop().await;
}

async fn the_rpc_and_the_webhook_at_once_credit_once(backend: Backend) {
    let fake = FakeStripe::start().await;
    let Some(app) = stripe_app(backend, &fake).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let bought = buy(&app, &acme.id, "30.00", "stripe").await;
    let intent = fake.succeed(&bought.payment_intent_id);
    // Eight RPC completions race eight deliveries: four of one event (redeliveries)
    // and four distinct events for the same intent.
    let same = event("evt_same", "payment_intent.succeeded", &intent);
    let bodies: Vec<String> = (0..8)
        .map(|i| {
            if i < 4 {
                same.clone()
            } else {
                event(&format!("evt_{i}"), "payment_intent.succeeded", &intent)
            }
        })
        .collect();
    let rpcs = join_all((0..8).map(|_| complete(&app, &acme.id, &bought)));
    let hooks = join_all(bodies.iter().map(|b| deliver_signed(&app, b)));
    let (rpcs, hooks) = tokio::join!(rpcs, hooks);
    assert!(hooks.iter().all(|s| *s == 200), "{hooks:?}");
    assert!(rpcs.iter().filter(|r| r.newly_credited).count() <= 1);
    assert_eq!(balance_amount(&app, &acme.id).await, "30.00");
    let actions = audit_actions(&app, &bought.transaction_id).await;
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(actions[0], "BuyCredits");
    assert_eq!(stripe_event_count(&app).await, 5);
    app.stop().await;
}

async fn webhooks_refuse_bad_signatures_and_stale_timestamps_and_ignore_replays(backend: Backend) {
    let fake = FakeStripe::start().await;
    let Some(app) = stripe_app(backend, &fake).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let bought = buy(&app, &acme.id, "12.00", "stripe").await;
    let intent = fake.succeed(&bought.payment_intent_id);
    let body = event("evt_1", "payment_intent.succeeded", &intent);
    let now = chrono::Utc::now().timestamp();
    let refused = [
        String::new(),
        format!("t={now}"),
        sign("whsec_wrong", now, &body),
        sign(WEBHOOK_SECRET, now, &format!("{body} ")),
        sign(WEBHOOK_SECRET, now - 301, &body),
        sign(WEBHOOK_SECRET, now + 301, &body),
    ];
    for signature in &refused {
        assert_eq!(deliver(&app, &body, signature).await, 400, "{signature}");
    }
    assert_eq!(
        deliver(&app, "not json", &sign(WEBHOOK_SECRET, now, "not json")).await,
        400
    );
    assert_eq!(balance_amount(&app, &acme.id).await, "0.00");
    assert_eq!(stripe_event_count(&app).await, 0);

    // Several v1 signatures (a rolled secret): one valid one suffices.
    let good = sign(WEBHOOK_SECRET, now, &body);
    let rolled = format!(
        "{},v1={}",
        sign("whsec_old", now, &body),
        &good[good.find("v1=").unwrap() + 3..]
    );
    assert_eq!(deliver(&app, &body, &rolled).await, 200);
    assert_eq!(balance_amount(&app, &acme.id).await, "12.00");
    let transaction = complete(&app, &acme.id, &bought).await;
    assert!(!transaction.newly_credited);
    assert_eq!(
        status_of(&transaction.transaction),
        proto::CreditTransactionStatus::Succeeded
    );

    // A replayed delivery is acknowledged and changes nothing; so is a late failure.
    assert_eq!(deliver_signed(&app, &body).await, 200);
    let late = event(
        "evt_2",
        "payment_intent.payment_failed",
        &fake.decline(&bought.payment_intent_id),
    );
    assert_eq!(deliver_signed(&app, &late).await, 200);
    assert_eq!(balance_amount(&app, &acme.id).await, "12.00");
    assert_eq!(
        audit_actions(&app, &bought.transaction_id).await,
        ["BuyCredits", "StripeWebhook"]
    );
    // Events tenantry does not act on, or about intents it does not know, are ignored.
    let other = event(
        "evt_3",
        "customer.created",
        &serde_json::json!({"id": "cus_1"}),
    );
    assert_eq!(deliver_signed(&app, &other).await, 200);
    let stranger = serde_json::json!({"id": "pi_unknown", "amount": 100, "currency": "usd", "status": "succeeded"});
    let foreign = event("evt_4", "payment_intent.succeeded", &stranger);
    assert_eq!(deliver_signed(&app, &foreign).await, 200);
    assert_eq!(stripe_event_count(&app).await, 2);
    app.stop().await;
}

async fn declined_payments_fail_the_purchase_and_never_credit(backend: Backend) {
    let fake = FakeStripe::start().await;
    let Some(app) = stripe_app(backend, &fake).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    // Through the webhook.
    let first = buy(&app, &acme.id, "8.00", "stripe").await;
    let declined = fake.decline(&first.payment_intent_id);
    let body = event("evt_f1", "payment_intent.payment_failed", &declined);
    assert_eq!(deliver_signed(&app, &body).await, 200);
    let done = complete(&app, &acme.id, &first).await;
    assert_eq!(
        status_of(&done.transaction),
        proto::CreditTransactionStatus::Failed
    );
    assert_eq!(
        done.transaction.as_ref().unwrap().failure_reason,
        "your card was declined"
    );
    assert!(!done.newly_credited);
    assert_eq!(
        fake.intent(&first.payment_intent_id)["status"],
        "canceled",
        "the failed intent is cancelled so it cannot be paid later"
    );
    // A later success event for the cancelled purchase credits nothing.
    let late = event(
        "evt_f2",
        "payment_intent.succeeded",
        &fake.succeed(&first.payment_intent_id),
    );
    assert_eq!(deliver_signed(&app, &late).await, 200);

    // Through CompletePayment.
    let second = buy(&app, &acme.id, "9.00", "stripe").await;
    fake.decline(&second.payment_intent_id);
    let done = complete(&app, &acme.id, &second).await;
    assert_eq!(
        status_of(&done.transaction),
        proto::CreditTransactionStatus::Failed
    );
    let again = complete(&app, &acme.id, &second).await;
    assert_eq!(
        status_of(&again.transaction),
        proto::CreditTransactionStatus::Failed
    );

    let now = balance(&app, &acme.id).await;
    assert_eq!(now.balance.expect("balance").amount, "0.00");
    assert_eq!(now.pending.expect("pending").amount, "0.00");
    let failed: Vec<_> = all_transactions(&app, &acme.id)
        .await
        .into_iter()
        .filter(|t| t.status == proto::CreditTransactionStatus::Failed as i32)
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|t| t.balance_after.is_none()));

    // Each failed purchase emitted payment.failed once; nothing succeeded.
    let events = outbox_events::Entity::find()
        .filter(outbox_events::Column::OrganizationId.eq(org_uuid(&acme.id)))
        .filter(outbox_events::Column::EventType.starts_with("payment."))
        .order_by_asc(outbox_events::Column::Id)
        .all(app.store.db())
        .await
        .expect("read outbox");
    assert_eq!(
        events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        vec!["payment.failed", "payment.failed"],
        "neither the repeated completion nor the late success emits"
    );
    let data: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.payload).expect("payload"))
        .collect();
    for (data, (bought, amount)) in data.iter().zip([(&first, "8.00"), (&second, "9.00")]) {
        assert_eq!(data["organization_id"], acme.id.as_str());
        assert_eq!(data["purpose"], "credits");
        assert_eq!(data["transaction_id"], bought.transaction_id.as_str());
        assert_eq!(data["payment_intent_id"], bought.payment_intent_id.as_str());
        assert_eq!(data["amount"], amount);
        assert_eq!(data["currency"], "USD");
        assert_eq!(data["gateway"], "stripe");
        assert_eq!(data["failure_reason"], "your card was declined");
    }
    app.stop().await;
}

async fn gateway_errors_map_to_clear_reasons(backend: Backend) {
    let fake = FakeStripe::start().await;
    let Some(app) = stripe_app(backend, &fake).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let root = app.root();
    let status = buy_as(&app, &root, &acme.id, usd("0.10"), "stripe", "small")
        .await
        .expect_err("below Stripe's minimum");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(violations(&status), vec!["amount.amount".to_owned()]);
    fake.set_down(true);
    let status = buy_as(&app, &root, &acme.id, usd("10.00"), "stripe", "down")
        .await
        .expect_err("stripe is down");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason(&status), "GATEWAY_UNAVAILABLE");
    fake.set_down(false);
    // The retry after the outage goes through, and nothing was left behind.
    buy_as(&app, &root, &acme.id, usd("10.00"), "stripe", "down")
        .await
        .expect("retry after the outage");
    assert_eq!(all_transactions(&app, &acme.id).await.len(), 1);
    app.stop().await;

    // A wrong secret key is the server's fault: INTERNAL, and the key never shows.
    let url = fake.url();
    let Some(app) = TestApp::spawn_with(backend, move |s| {
        s.billing.stripe_secret_key = Some(Secret::new("sk_test_wrong_key_9876"));
        s.billing.stripe_api_base = url;
    })
    .await
    else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let status = buy_as(&app, &app.root(), &acme.id, usd("10.00"), "stripe", "k")
        .await
        .expect_err("bad key");
    assert_eq!(status.code(), Code::Internal);
    assert!(
        !status.message().contains("sk_test"),
        "{}",
        status.message()
    );
    assert_eq!(metadata(&status, "gateway_code"), None);
    // Webhooks are off without a signing secret.
    let body = event("evt_x", "payment_intent.succeeded", &serde_json::json!({}));
    let t = chrono::Utc::now().timestamp();
    assert_eq!(
        deliver(&app, &body, &sign(WEBHOOK_SECRET, t, &body)).await,
        404
    );
    app.stop().await;
}

async fn manual_confirmation_is_for_operators_within_the_intents_organization(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let other = tenant(&app, "Other", "").await;
    let bought = buy(&app, &acme.id, "15.00", "manual").await;
    let intent = bought.payment_intent_id.clone();
    let status = confirm_as(
        &app,
        &app.token("CONFIG_ADMIN", &acme.id),
        &acme.id,
        &intent,
        "x1",
    )
    .await
    .expect_err("admins do not confirm");
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = confirm_as(&app, &app.root(), &other.id, &intent, "x2")
        .await
        .expect_err("another organization's intent");
    assert_eq!(status.code(), Code::NotFound);
    let status = confirm_as(&app, &app.root(), &acme.id, "pi_123", "x3")
        .await
        .expect_err("not a manual intent");
    assert_eq!(violations(&status), vec!["payment_intent_id".to_owned()]);
    let status = confirm_as(&app, &app.root(), &acme.id, &intent, "")
        .await
        .expect_err("request id required");
    assert_eq!(violations(&status), vec!["request_id".to_owned()]);
    assert_eq!(balance_amount(&app, &acme.id).await, "0.00");

    let system = app.token("SYSTEM", "internal");
    let done = confirm_as(&app, &system, &acme.id, &intent, "x4")
        .await
        .expect("confirm");
    assert_eq!(done.payment_intent_id, intent);
    assert_eq!(
        status_of(&done.transaction),
        proto::CreditTransactionStatus::Succeeded
    );
    let replay = confirm_as(&app, &system, &acme.id, &intent, "x4")
        .await
        .expect("replay");
    assert_eq!(replay, done);
    assert_eq!(balance_amount(&app, &acme.id).await, "15.00");
    app.stop().await;
}

on_both_backends!(
    manual_purchases_credit_once_however_often_they_complete,
    buy_credits_checks_its_input_and_its_callers,
    stripe_purchases_send_form_requests_with_idempotency_keys,
    sixteen_concurrent_completions_credit_once,
    the_rpc_and_the_webhook_at_once_credit_once,
    webhooks_refuse_bad_signatures_and_stale_timestamps_and_ignore_replays,
    declined_payments_fail_the_purchase_and_never_credit,
    gateway_errors_map_to_clear_reasons,
    manual_confirmation_is_for_operators_within_the_intents_organization,
);
