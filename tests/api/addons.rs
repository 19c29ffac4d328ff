//! Add-on services: pricing in the organization's currency, purchases from credits
//! (exact debit, once per request id, never past the balance, also under concurrency),
//! gateway purchases through the manual gateway and (fake) Stripe completed exactly
//! once by CompleteServicePurchase, ConfirmManualPayment or the webhook, the purchased
//! list, input validation and tenancy. The helpers at the top are shared with the
//! agreements suite.

use futures::future::join_all;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tenantry::{
    config::Secret,
    payments::manual::Manual,
    proto,
    storage::entities::{audit_entries, payment_intents, service_purchases},
};
use tonic::{Code, Status};

use crate::{
    credits::{all_transactions, balance_amount, gift},
    fake_stripe::{FakeStripe, SECRET_KEY, WEBHOOK_SECRET, event, sign},
    helpers::{Backend, TestApp, authed, metadata, reason, violations},
    on_both_backends,
    organizations::{audit_actions, create, named, tenant},
};

pub(crate) const CREDITS: proto::ServicePaymentSource = proto::ServicePaymentSource::Credits;
pub(crate) const GATEWAY: proto::ServicePaymentSource = proto::ServicePaymentSource::Gateway;

/// A PurchaseService request paid from `source`.
pub(crate) fn order(
    org_id: &str,
    service_id: &str,
    quantity: i32,
    source: proto::ServicePaymentSource,
    request_id: &str,
) -> proto::PurchaseServiceRequest {
    proto::PurchaseServiceRequest {
        organization_id: org_id.into(),
        service_id: service_id.into(),
        quantity,
        payment_source: source as i32,
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// PurchaseService as `token`.
pub(crate) async fn try_purchase(
    app: &TestApp,
    token: &str,
    request: proto::PurchaseServiceRequest,
) -> Result<proto::PurchaseServiceResponse, Status> {
    app.subscriptions()
        .purchase_service(authed(request, token))
        .await
        .map(|r| r.into_inner())
}

/// PurchaseService as `token`, expected to succeed; the purchase.
pub(crate) async fn purchase(
    app: &TestApp,
    token: &str,
    request: proto::PurchaseServiceRequest,
) -> proto::PurchasedService {
    try_purchase(app, token, request)
        .await
        .expect("purchase service")
        .purchase
        .expect("purchase")
}

/// CompleteServicePurchase as `token`.
async fn try_complete(
    app: &TestApp,
    token: &str,
    org_id: &str,
    bought: &proto::PurchaseServiceResponse,
) -> Result<proto::PurchasedService, Status> {
    let purchase = bought.purchase.as_ref().expect("purchase");
    let request = proto::CompleteServicePurchaseRequest {
        organization_id: org_id.into(),
        purchase_id: purchase.id.clone(),
        payment_intent_id: bought.payment_intent_id.clone(),
        request_id: String::new(),
    };
    app.subscriptions()
        .complete_service_purchase(authed(request, token))
        .await
        .map(|r| r.into_inner().purchase.expect("purchase"))
}

/// ListPurchasedServices as the root admin.
async fn list(
    app: &TestApp,
    org_id: &str,
    filter: &str,
    order_by: &str,
    page_size: i32,
    page_token: &str,
) -> Result<proto::ListPurchasedServicesResponse, Status> {
    let request = proto::ListPurchasedServicesRequest {
        organization_id: org_id.into(),
        page_size,
        page_token: page_token.into(),
        filter: filter.into(),
        order_by: order_by.into(),
    };
    app.subscriptions()
        .list_purchased_services(authed(request, &app.root()))
        .await
        .map(|r| r.into_inner())
}

pub(crate) fn status(purchase: &proto::PurchasedService) -> proto::ServicePurchaseStatus {
    proto::ServicePurchaseStatus::try_from(purchase.status).expect("status")
}

fn amount(purchase: &proto::PurchasedService) -> String {
    purchase.amount.as_ref().expect("amount").amount.clone()
}

/// Stored purchase rows of every organization.
async fn purchase_rows(app: &TestApp) -> Vec<service_purchases::Model> {
    service_purchases::Entity::find()
        .all(app.store.db())
        .await
        .expect("read purchases")
}

/// The SERVICE_PURCHASE ledger entries of an organization.
pub(crate) async fn service_debits(app: &TestApp, org_id: &str) -> Vec<proto::CreditTransaction> {
    all_transactions(app, org_id)
        .await
        .into_iter()
        .filter(|t| t.r#type == proto::CreditTransactionType::ServicePurchase as i32)
        .collect()
}

/// Audit entries with `action` on a target.
async fn audits(app: &TestApp, target_id: &str, action: &str) -> u64 {
    audit_entries::Entity::find()
        .filter(audit_entries::Column::TargetId.eq(target_id))
        .filter(audit_entries::Column::Action.eq(action))
        .count(app.store.db())
        .await
        .expect("count audit entries")
}

async fn credit_purchases_debit_unit_times_quantity_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    gift(&app, &acme.id, "200.00").await;
    let request = order(&acme.id, "priority_support", 3, CREDITS, "buy-support");
    let first = try_purchase(&app, &admin, request.clone())
        .await
        .expect("purchase");
    let bought = first.purchase.clone().expect("purchase");
    assert!(bought.id.starts_with("svcp_"), "{}", bought.id);
    assert_eq!(status(&bought), proto::ServicePurchaseStatus::Active);
    assert_eq!(bought.service_id, "priority_support");
    assert_eq!(bought.service_name, "Priority support");
    assert_eq!(bought.quantity, 3);
    assert_eq!(amount(&bought), "147.00");
    assert_eq!(bought.amount.as_ref().unwrap().currency_code, "USD");
    assert_eq!(bought.payment_source, CREDITS as i32);
    assert!(bought.transaction_id.starts_with("txn_"));
    assert!(bought.activate_time.is_some());
    assert_eq!(bought.request_id, "buy-support");
    assert_eq!(bought.purchased_by, "user:config_admin-user");
    assert!(bought.agreement_id.is_empty());
    assert!(first.client_secret.is_empty() && first.payment_intent_id.is_empty());
    assert_eq!(balance_amount(&app, &acme.id).await, "53.00");

    // The same request id answers the first purchase and debits nothing more.
    let again = try_purchase(&app, &admin, request.clone())
        .await
        .expect("retry");
    assert_eq!(again, first);
    assert_eq!(balance_amount(&app, &acme.id).await, "53.00");
    let debits = service_debits(&app, &acme.id).await;
    assert_eq!(debits.len(), 1);
    assert_eq!(debits[0].id, bought.transaction_id);
    assert_eq!(debits[0].amount.as_ref().unwrap().amount, "-147.00");
    assert_eq!(debits[0].reason, "purchase of Priority support × 3");
    // …and with other arguments it is refused.
    let changed = proto::PurchaseServiceRequest {
        quantity: 2,
        ..request
    };
    let refused = try_purchase(&app, &admin, changed).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violations(&refused), ["request_id"]);

    // Quantity 0 means one unit.
    let one = purchase(
        &app,
        &admin,
        order(&acme.id, "premium_domain", 0, CREDITS, "buy-domain"),
    )
    .await;
    assert_eq!((one.quantity, amount(&one)), (1, "25.00".to_owned()));
    assert_eq!(balance_amount(&app, &acme.id).await, "28.00");
    assert_eq!(audit_actions(&app, &bought.id).await, ["PurchaseService"]);
    assert_eq!(purchase_rows(&app).await.len(), 2);
    app.stop().await;
}

async fn insufficient_credits_write_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    gift(&app, &acme.id, "48.99").await;
    let refused = try_purchase(
        &app,
        &admin,
        order(&acme.id, "priority_support", 1, CREDITS, "short"),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "INSUFFICIENT_CREDITS");
    assert_eq!(metadata(&refused, "required").as_deref(), Some("49.00"));
    assert_eq!(balance_amount(&app, &acme.id).await, "48.99");
    assert!(purchase_rows(&app).await.is_empty());
    assert!(service_debits(&app, &acme.id).await.is_empty());
    // Once the balance covers it, the same request id goes through.
    gift(&app, &acme.id, "0.01").await;
    let bought = purchase(
        &app,
        &admin,
        order(&acme.id, "priority_support", 1, CREDITS, "short"),
    )
    .await;
    assert_eq!(status(&bought), proto::ServicePurchaseStatus::Active);
    assert_eq!(balance_amount(&app, &acme.id).await, "0.00");
    app.stop().await;
}

async fn concurrent_credit_purchases_never_overdraw(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    // Exactly three domains at 25.00.
    gift(&app, &acme.id, "75.00").await;
    let answers = join_all((0..8).map(|i| {
        try_purchase(
            &app,
            &admin,
            order(
                &acme.id,
                "premium_domain",
                1,
                CREDITS,
                &format!("domain-{i}"),
            ),
        )
    }))
    .await;
    let bought: Vec<_> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert_eq!(bought.len(), 3, "{answers:?}");
    for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(reason(refused), "INSUFFICIENT_CREDITS", "{refused:?}");
    }
    assert_eq!(balance_amount(&app, &acme.id).await, "0.00");
    let rows = purchase_rows(&app).await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.status == "ACTIVE"));
    assert_eq!(service_debits(&app, &acme.id).await.len(), 3);
    app.stop().await;
}

async fn manual_gateway_purchases_activate_exactly_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let bought = try_purchase(
        &app,
        &admin,
        order(&acme.id, "extra_storage_100gb", 2, GATEWAY, "storage-1"),
    )
    .await
    .expect("purchase");
    let pending = bought.purchase.clone().expect("purchase");
    assert_eq!(status(&pending), proto::ServicePurchaseStatus::Pending);
    assert_eq!(pending.gateway, "manual");
    assert!(bought.payment_intent_id.starts_with("pi_manual_"));
    assert_eq!(pending.payment_intent_id, bought.payment_intent_id);
    assert!(
        bought
            .client_secret
            .starts_with(&format!("{}_secret_", bought.payment_intent_id))
    );
    assert!(pending.transaction_id.is_empty() && pending.activate_time.is_none());
    assert_eq!(amount(&pending), "20.00");
    let intent = payment_intents::Entity::find_by_id(bought.payment_intent_id.clone())
        .one(app.store.db())
        .await
        .unwrap()
        .expect("intent row");
    assert_eq!(intent.amount_micros, 20_000_000);
    // A retry answers the same purchase and intent.
    let again = try_purchase(
        &app,
        &admin,
        order(&acme.id, "extra_storage_100gb", 2, GATEWAY, "storage-1"),
    )
    .await
    .expect("retry");
    assert_eq!(again, bought);

    // Before the money arrives, completion leaves it PENDING.
    let early = try_complete(&app, &admin, &acme.id, &bought)
        .await
        .expect("early");
    assert_eq!(status(&early), proto::ServicePurchaseStatus::Pending);
    // The intent must be the purchase's.
    let wrong = proto::PurchaseServiceResponse {
        payment_intent_id: "pi_manual_other".into(),
        ..bought.clone()
    };
    let refused = try_complete(&app, &admin, &acme.id, &wrong)
        .await
        .unwrap_err();
    assert_eq!(violations(&refused), ["payment_intent_id"]);

    // The money arrived; sixteen completions at once activate it once.
    Manual::new(app.store.clone())
        .confirm(&bought.payment_intent_id)
        .await
        .expect("confirm intent");
    let done = join_all((0..16).map(|_| try_complete(&app, &admin, &acme.id, &bought))).await;
    let done: Vec<_> = done.into_iter().map(|d| d.expect("complete")).collect();
    for purchase in &done {
        assert_eq!(status(purchase), proto::ServicePurchaseStatus::Active);
        assert_eq!(purchase.activate_time, done[0].activate_time);
    }
    assert!(done[0].activate_time.is_some());
    assert_eq!(
        audits(&app, &pending.id, "CompleteServicePurchase").await,
        1
    );
    // No ledger entry: the gateway was paid, not the credits.
    assert!(all_transactions(&app, &acme.id).await.is_empty());

    // An operator's ConfirmManualPayment completes another purchase, once.
    let second = try_purchase(
        &app,
        &admin,
        order(&acme.id, "premium_domain", 1, GATEWAY, "domain-1"),
    )
    .await
    .expect("purchase");
    let second_id = second.purchase.as_ref().unwrap().id.clone();
    let root = app.root();
    let confirmations = join_all((0..8).map(|i| {
        let request = proto::ConfirmManualPaymentRequest {
            organization_id: acme.id.clone(),
            payment_intent_id: second.payment_intent_id.clone(),
            note: "wire received".into(),
            request_id: format!("confirm-{i}"),
        };
        let mut billing = app.billing();
        let root = root.clone();
        async move { billing.confirm_manual_payment(authed(request, &root)).await }
    }))
    .await;
    for confirmed in confirmations {
        let confirmed = confirmed.expect("confirm").into_inner();
        assert_eq!(confirmed.service_purchase_id, second_id);
        assert_eq!(confirmed.payment_intent_id, second.payment_intent_id);
        assert!(confirmed.transaction.is_none());
    }
    assert_eq!(audits(&app, &second_id, "ConfirmManualPayment").await, 1);
    let after = try_complete(&app, &admin, &acme.id, &second)
        .await
        .expect("complete");
    assert_eq!(status(&after), proto::ServicePurchaseStatus::Active);
    let active = list(&app, &acme.id, "status = ACTIVE", "", 0, "")
        .await
        .expect("list");
    assert_eq!(active.purchases.len(), 2);
    app.stop().await;
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

/// POSTs a webhook body signed now; returns the HTTP status.
async fn deliver_signed(app: &TestApp, body: &str) -> u16 {
    let signature = sign(WEBHOOK_SECRET, chrono::Utc::now().timestamp(), body);
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

async fn stripe_purchases_complete_by_webhook_or_by_call(backend: Backend) {
    let fake = FakeStripe::start().await;
    let Some(app) = stripe_app(backend, &fake).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    let stripe_order = |service: &str, request_id: &str| proto::PurchaseServiceRequest {
        gateway: "stripe".into(),
        payment_method_id: "pm_card_visa".into(),
        ..order(&acme.id, service, 1, GATEWAY, request_id)
    };
    let paid = try_purchase(&app, &admin, stripe_order("priority_support", "s-1"))
        .await
        .expect("purchase");
    assert!(paid.payment_intent_id.starts_with("pi_fake"));
    assert_eq!(paid.purchase.as_ref().unwrap().gateway, "stripe");
    let call = &fake.creates()[0];
    assert_eq!(call.field("amount"), Some("4900"));
    assert_eq!(call.field("currency"), Some("usd"));
    assert_eq!(call.field("metadata[purpose]"), Some("service"));
    assert_eq!(call.field("metadata[service_id]"), Some("priority_support"));
    let paid_id = paid.purchase.as_ref().unwrap().id.clone();

    // Stripe reports the payment; a redelivery changes nothing.
    let body = event(
        "evt_paid",
        "payment_intent.succeeded",
        &fake.succeed(&paid.payment_intent_id),
    );
    assert_eq!(deliver_signed(&app, &body).await, 200);
    assert_eq!(deliver_signed(&app, &body).await, 200);
    let rows = purchase_rows(&app).await;
    assert_eq!(rows[0].status, "ACTIVE");
    assert!(rows[0].activate_time.is_some());
    assert_eq!(audits(&app, &paid_id, "StripeWebhook").await, 1);
    let again = try_complete(&app, &admin, &acme.id, &paid)
        .await
        .expect("complete");
    assert_eq!(status(&again), proto::ServicePurchaseStatus::Active);
    assert_eq!(audits(&app, &paid_id, "CompleteServicePurchase").await, 0);

    // A declined card fails the purchase on completion and cancels the intent.
    let declined = try_purchase(&app, &admin, stripe_order("premium_domain", "s-2"))
        .await
        .expect("purchase");
    fake.decline(&declined.payment_intent_id);
    let failed = try_complete(&app, &admin, &acme.id, &declined)
        .await
        .expect("complete");
    assert_eq!(status(&failed), proto::ServicePurchaseStatus::Failed);
    assert!(failed.activate_time.is_none());
    assert_eq!(
        fake.intent(&declined.payment_intent_id)["status"],
        "canceled"
    );

    // A payment_failed webhook fails a purchase too.
    let third = try_purchase(&app, &admin, stripe_order("premium_domain", "s-3"))
        .await
        .expect("purchase");
    let body = event(
        "evt_failed",
        "payment_intent.payment_failed",
        &fake.decline(&third.payment_intent_id),
    );
    assert_eq!(deliver_signed(&app, &body).await, 200);
    let third_id = third.purchase.as_ref().unwrap().id.clone();
    let listed = list(&app, &acme.id, "status = FAILED", "create_time", 0, "")
        .await
        .expect("list");
    let ids: Vec<&str> = listed.purchases.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        [declined.purchase.as_ref().unwrap().id.as_str(), &third_id]
    );
    assert_eq!(audits(&app, &third_id, "StripeWebhook").await, 1);
    app.stop().await;
}

async fn purchased_services_filter_order_and_page(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let other = tenant(&app, "Other", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    gift(&app, &acme.id, "1000.00").await;
    gift(&app, &other.id, "100.00").await;
    let mut bought = Vec::new();
    for (i, service) in [
        "priority_support",
        "premium_domain",
        "priority_support",
        "extra_storage_100gb",
    ]
    .iter()
    .enumerate()
    {
        bought.push(
            purchase(
                &app,
                &admin,
                order(&acme.id, service, 1, CREDITS, &format!("p-{i}")),
            )
            .await,
        );
    }
    let pending = purchase(
        &app,
        &admin,
        order(&acme.id, "premium_domain", 1, GATEWAY, "p-gateway"),
    )
    .await;
    purchase(
        &app,
        &app.token("CONFIG_ADMIN", &other.id),
        order(&other.id, "premium_domain", 1, CREDITS, "p-other"),
    )
    .await;
    let ids = |page: &proto::ListPurchasedServicesResponse| -> Vec<String> {
        page.purchases.iter().map(|p| p.id.clone()).collect()
    };

    // Newest first by default; only this organization's.
    let all = list(&app, &acme.id, "", "", 0, "").await.expect("list");
    let mut expected: Vec<String> = bought.iter().map(|p| p.id.clone()).collect();
    expected.push(pending.id.clone());
    expected.reverse();
    assert_eq!(ids(&all), expected);
    let oldest = list(&app, &acme.id, "", "create_time asc", 0, "")
        .await
        .expect("list");
    assert_eq!(
        ids(&oldest),
        expected.iter().rev().cloned().collect::<Vec<_>>()
    );

    let support = list(&app, &acme.id, "service_id = priority_support", "", 0, "")
        .await
        .expect("list");
    assert_eq!(ids(&support), [bought[2].id.clone(), bought[0].id.clone()]);
    let pending_only = list(
        &app,
        &acme.id,
        "status = SERVICE_PURCHASE_STATUS_PENDING",
        "",
        0,
        "",
    )
    .await
    .expect("list");
    assert_eq!(ids(&pending_only), vec![pending.id.clone()]);
    let combined = list(
        &app,
        &acme.id,
        "status = ACTIVE AND service_id != priority_support",
        "create_time",
        0,
        "",
    )
    .await
    .expect("list");
    assert_eq!(ids(&combined), [bought[1].id.clone(), bought[3].id.clone()]);
    let future = list(
        &app,
        &acme.id,
        "create_time >= 2100-01-01T00:00:00Z",
        "",
        0,
        "",
    )
    .await
    .expect("list");
    assert!(future.purchases.is_empty());
    let past = list(
        &app,
        &acme.id,
        "create_time > 2000-01-01T00:00:00Z",
        "",
        0,
        "",
    )
    .await
    .expect("list");
    assert_eq!(past.purchases.len(), 5);

    // Pages of two cover everything once, in order.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(&app, &acme.id, "", "", 2, &token).await.expect("page");
        assert!(page.purchases.len() <= 2);
        seen.extend(ids(&page));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, expected);

    let bad = list(&app, &acme.id, "status = DONE", "price", 0, "")
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mut fields = violations(&bad);
    fields.sort();
    assert_eq!(fields, ["filter", "order_by"]);
    let bad = list(&app, &acme.id, "", "", 0, "garbage")
        .await
        .unwrap_err();
    assert_eq!(violations(&bad), ["page_token"]);
    app.stop().await;
}

async fn purchase_input_is_checked_all_at_once(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let admin = app.token("CONFIG_ADMIN", &acme.id);
    gift(&app, &acme.id, "100.00").await;
    let bad = proto::PurchaseServiceRequest {
        organization_id: acme.id.clone(),
        service_id: String::new(),
        quantity: 1001,
        payment_source: 0,
        ..Default::default()
    };
    let refused = try_purchase(&app, &admin, bad).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut fields = violations(&refused);
    fields.sort();
    assert_eq!(
        fields,
        ["payment_source", "quantity", "request_id", "service_id"]
    );
    let negative = order(&acme.id, "premium_domain", -1, CREDITS, "neg");
    let refused = try_purchase(&app, &admin, negative).await.unwrap_err();
    assert_eq!(violations(&refused), ["quantity"]);
    let credits_with_gateway = proto::PurchaseServiceRequest {
        gateway: "manual".into(),
        payment_method_id: "pm_x".into(),
        ..order(&acme.id, "premium_domain", 1, CREDITS, "cg")
    };
    let refused = try_purchase(&app, &admin, credits_with_gateway)
        .await
        .unwrap_err();
    assert_eq!(violations(&refused), ["gateway", "payment_method_id"]);
    let unknown_gateway = proto::PurchaseServiceRequest {
        gateway: "paypal".into(),
        payment_method_id: "pm/../x".into(),
        ..order(&acme.id, "premium_domain", 1, GATEWAY, "pg")
    };
    let refused = try_purchase(&app, &admin, unknown_gateway)
        .await
        .unwrap_err();
    let mut fields = violations(&refused);
    fields.sort();
    assert_eq!(fields, ["gateway", "payment_method_id"]);
    // Stripe is not configured on this server.
    let stripe = proto::PurchaseServiceRequest {
        gateway: "stripe".into(),
        ..order(&acme.id, "premium_domain", 1, GATEWAY, "ps")
    };
    let refused = try_purchase(&app, &admin, stripe).await.unwrap_err();
    assert_eq!(reason(&refused), "GATEWAY_NOT_CONFIGURED");
    let unknown = try_purchase(
        &app,
        &admin,
        order(&acme.id, "time_machine", 1, CREDITS, "tm"),
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let long = "x".repeat(65);
    let refused = try_purchase(&app, &admin, order(&acme.id, &long, 1, CREDITS, "long"))
        .await
        .unwrap_err();
    assert_eq!(violations(&refused), ["service_id"]);
    // A completion names a purchase id and an intent.
    let request = proto::CompleteServicePurchaseRequest {
        organization_id: acme.id.clone(),
        purchase_id: "sub_123".into(),
        ..Default::default()
    };
    let refused = app
        .subscriptions()
        .complete_service_purchase(authed(request, &admin))
        .await
        .unwrap_err();
    let mut fields = violations(&refused);
    fields.sort();
    assert_eq!(fields, ["payment_intent_id", "purchase_id"]);
    assert!(purchase_rows(&app).await.is_empty());
    assert_eq!(balance_amount(&app, &acme.id).await, "100.00");
    app.stop().await;
}

async fn pricing_is_in_the_organizations_currency(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let lagos = create(
        &app,
        &app.root(),
        proto::Organization {
            kind: proto::OrganizationKind::Tenant as i32,
            currency: "NGN".into(),
            ..named("Lagos Ltd")
        },
    )
    .await;
    let pricing = |org_id: &str, service_id: &str, token: &str| {
        let request = proto::GetServicePricingRequest {
            organization_id: org_id.into(),
            service_id: service_id.into(),
        };
        let mut client = app.subscriptions();
        let token = token.to_owned();
        async move {
            client
                .get_service_pricing(authed(request, &token))
                .await
                .map(|r| r.into_inner())
        }
    };
    let member = app.token("MEMBER", &acme.id);
    let ai = pricing(&acme.id, "premium_ai_models", &member)
        .await
        .expect("pricing");
    let unit = ai.unit_price.expect("unit price");
    assert_eq!(
        (unit.currency_code.as_str(), unit.amount.as_str()),
        ("USD", "99.00")
    );
    let service = ai.service.expect("service");
    assert_eq!(service.id, "premium_ai_models");
    assert_eq!(service.category, "ai_models");
    assert_eq!(service.charge_type, proto::AddonChargeType::Monthly as i32);
    assert!(service.requires_agreement);
    assert_eq!(service.agreement_version, "2026-01");
    assert_eq!(service.prices.len(), 6);
    let terms = ai.terms.expect("terms");
    assert_eq!(terms.version, "2026-01");
    assert_eq!(terms.service_id, "premium_ai_models");
    assert_eq!(
        terms.effective_time.expect("effective").seconds,
        1_767_225_600
    );
    assert!(!ai.agreement_accepted);

    let domain = pricing(&lagos.id, "premium_domain", &app.root())
        .await
        .expect("pricing");
    let unit = domain.unit_price.expect("unit price");
    assert_eq!(
        (unit.currency_code.as_str(), unit.amount.as_str()),
        ("NGN", "38000.00")
    );
    assert!(domain.terms.is_none());
    let service = domain.service.expect("service");
    assert!(!service.requires_agreement && service.agreement_version.is_empty());
    assert_eq!(service.charge_type, proto::AddonChargeType::OneTime as i32);

    // Not sold in naira: neither priced nor bought.
    let refused = pricing(&lagos.id, "dedicated_success_manager", &app.root())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "SERVICE_NOT_AVAILABLE");
    assert_eq!(metadata(&refused, "currency").as_deref(), Some("NGN"));
    let refused = try_purchase(
        &app,
        &app.root(),
        order(&lagos.id, "dedicated_success_manager", 1, GATEWAY, "dsm"),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&refused), "SERVICE_NOT_AVAILABLE");
    let unknown = pricing(&acme.id, "time_machine", &member)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let refused = pricing(&acme.id, "", &member).await.unwrap_err();
    assert_eq!(violations(&refused), ["service_id"]);
    app.stop().await;
}

async fn other_tenants_cannot_buy_or_complete(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let acme = tenant(&app, "Acme", "").await;
    let rival = tenant(&app, "Rival", "").await;
    let acme_admin = app.token("CONFIG_ADMIN", &acme.id);
    let rival_admin = app.token("CONFIG_ADMIN", &rival.id);
    gift(&app, &acme.id, "100.00").await;
    let refused = try_purchase(
        &app,
        &rival_admin,
        order(&acme.id, "premium_domain", 1, CREDITS, "steal"),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // Members read but do not buy.
    let refused = try_purchase(
        &app,
        &app.token("MEMBER", &acme.id),
        order(&acme.id, "premium_domain", 1, CREDITS, "member"),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let bought = try_purchase(
        &app,
        &acme_admin,
        order(&acme.id, "premium_domain", 1, GATEWAY, "mine"),
    )
    .await
    .expect("purchase");
    // Another organization's purchase id is not found within the rival.
    let request = proto::CompleteServicePurchaseRequest {
        organization_id: rival.id.clone(),
        purchase_id: bought.purchase.as_ref().unwrap().id.clone(),
        payment_intent_id: bought.payment_intent_id.clone(),
        request_id: String::new(),
    };
    let refused = app
        .subscriptions()
        .complete_service_purchase(authed(request, &rival_admin))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let refused = try_complete(&app, &rival_admin, &acme.id, &bought)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(balance_amount(&app, &acme.id).await, "100.00");
    app.stop().await;
}

on_both_backends!(
    credit_purchases_debit_unit_times_quantity_once,
    insufficient_credits_write_nothing,
    concurrent_credit_purchases_never_overdraw,
    manual_gateway_purchases_activate_exactly_once,
    stripe_purchases_complete_by_webhook_or_by_call,
    purchased_services_filter_order_and_page,
    purchase_input_is_checked_all_at_once,
    pricing_is_in_the_organizations_currency,
    other_tenants_cannot_buy_or_complete,
);
